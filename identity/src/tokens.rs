//! Session tokens: short-lived EdDSA JWTs with a key id, issuer and audience (R17).
//!
//! The clock is a parameter: `issue` and `verify` take `now` in Unix seconds, so expiry, the
//! 12-hour session ceiling and key rotation are tested with plain values. Expiry is checked here
//! rather than by jsonwebtoken, which would read the system clock.
//!
//! Only EdDSA is accepted, checked before any key is touched; `aud` and `iss` must match, and
//! 5 s of clock skew between nodes is tolerated. Signing keys live in the store, so every node
//! verifies every node's tokens: the newest key signs, a new one is made every 24 hours, and an
//! old one keeps verifying until no token it signed can be alive (one more session lifetime). A
//! node that meets an unknown `kid` reloads the keys from the store (`Identity::authenticate`,
//! at most every 10 s).

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sightline_core::roles::Role;

/// Longest a token lives: minutes, not hours (R17; NIST 800-63B AAL3 reauthentication).
pub const MAX_TOKEN_TTL_S: u64 = 10 * 60;
/// A session never outlives this since its passkey login, however often it is renewed.
pub const MAX_SESSION_S: u64 = 12 * 60 * 60;
/// Clock skew tolerated between relay nodes.
const LEEWAY_S: u64 = 5;

/// PKCS#8 v1 prefix of an Ed25519 private key: the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A signing key as stored (shared by all relay nodes through the store).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    pub kid: String,
    /// Ed25519 seed, hex.
    pub seed_hex: String,
    pub created_s: u64,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("kid", &self.kid).field("created_s", &self.created_s).finish_non_exhaustive()
    }
}

struct Key {
    kid: String,
    created_s: u64,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The keys a node signs and verifies with. The newest signs; all verify until they retire.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| &k.kid)).finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("token algorithm not allowed")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("token expired")]
    Expired,
    #[error("token lifetime exceeds the maximum")]
    TooLong,
    #[error("session exceeded its maximum duration")]
    SessionTooOld,
    #[error("no signing key")]
    NoKey,
}

/// What a session token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// User id.
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    /// Session id: logout revokes it.
    pub sid: String,
    /// When the passkey login happened (Unix seconds).
    pub auth_time: u64,
    pub name: String,
    pub roles: BTreeSet<Role>,
}

/// Who the tokens are for.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub ttl_s: u64,
}

impl StoredKey {
    /// A new key from 32 random bytes.
    pub fn new(kid: String, seed: [u8; 32], created_s: u64) -> StoredKey {
        StoredKey { kid, seed_hex: hex::encode(seed), created_s }
    }
}

impl Keyring {
    /// Builds a keyring from stored keys; unreadable keys are skipped and reported.
    pub fn new(stored: &[StoredKey]) -> (Keyring, Vec<String>) {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for s in stored {
            let seed: Option<[u8; 32]> = hex::decode(&s.seed_hex).ok().and_then(|b| b.try_into().ok());
            let Some(seed) = seed else {
                problems.push(format!("signing key {} is corrupt", s.kid));
                continue;
            };
            let mut der = ED25519_PKCS8_PREFIX.to_vec();
            der.extend_from_slice(&seed);
            let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
            keys.push(Key {
                kid: s.kid.clone(),
                created_s: s.created_s,
                encoding: EncodingKey::from_ed_der(&der),
                decoding: DecodingKey::from_ed_der(public.as_bytes()),
            });
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_s));
        (Keyring { keys }, problems)
    }

    /// The key that signs now (the newest).
    pub fn current(&self) -> Option<(&str, u64)> {
        self.keys.first().map(|k| (k.kid.as_str(), k.created_s))
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let key = self.keys.first().ok_or(TokenError::NoKey)?;
        let header = Header { alg: Algorithm::EdDSA, kid: Some(key.kid.clone()), ..Default::default() };
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| TokenError::NoKey)
    }

    /// Verifies signature, key id, algorithm, issuer, audience, expiry and session age.
    pub fn verify(&self, settings: &TokenSettings, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        // Only EdDSA is accepted: this refuses `none`, HS256 with the public key as secret, and
        // every algorithm confusion before any key is touched.
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = false; // checked below against the `now` we were given
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Issuer,
            jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Audience,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        let claims = data.claims;
        if claims.exp.saturating_add(LEEWAY_S) < now_s {
            return Err(TokenError::Expired);
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_TOKEN_TTL_S {
            return Err(TokenError::TooLong);
        }
        if claims.auth_time.saturating_add(MAX_SESSION_S) < now_s {
            return Err(TokenError::SessionTooOld);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn settings() -> TokenSettings {
        TokenSettings { issuer: "https://relay.test".into(), audience: "sightline".into(), ttl_s: 600 }
    }

    fn claims() -> Claims {
        Claims {
            iss: "https://relay.test".into(),
            aud: "sightline".into(),
            sub: "user-1".into(),
            exp: NOW + 600,
            iat: NOW,
            sid: "s1".into(),
            auth_time: NOW,
            name: "alice".into(),
            roles: [Role::Operator].into_iter().collect(),
        }
    }

    fn ring(keys: &[(&str, u8, u64)]) -> Keyring {
        let stored: Vec<StoredKey> =
            keys.iter().map(|(kid, b, t)| StoredKey::new((*kid).into(), [*b; 32], *t)).collect();
        Keyring::new(&stored).0
    }

    /// Re-signs `token`'s header and payload as given, with HMAC-SHA256 and `secret`.
    fn hs256(header: &str, payload: &str, secret: &[u8]) -> String {
        use hmac::Mac;
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn issues_and_verifies() {
        let k = ring(&[("k1", 1, NOW)]);
        let token = k.issue(&claims()).unwrap();
        assert_eq!(k.verify(&settings(), &token, NOW + 10).unwrap(), claims());
    }

    #[test]
    fn refuses_alg_none() {
        let k = ring(&[("k1", 1, NOW)]);
        let payload = serde_json::to_string(&claims()).unwrap();
        let token = format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#), B64.encode(payload));
        assert!(matches!(k.verify(&settings(), &token, NOW), Err(TokenError::Malformed | TokenError::Algorithm)));
    }

    #[test]
    fn refuses_hs256_signed_with_the_public_key() {
        let k = ring(&[("k1", 1, NOW)]);
        let public = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        let payload = serde_json::to_string(&claims()).unwrap();
        let token = hs256(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, &payload, public.as_bytes());
        assert_eq!(k.verify(&settings(), &token, NOW), Err(TokenError::Algorithm));
    }

    #[test]
    fn refuses_wrong_audience_and_issuer() {
        let k = ring(&[("k1", 1, NOW)]);
        let token = k.issue(&Claims { aud: "other".into(), ..claims() }).unwrap();
        assert_eq!(k.verify(&settings(), &token, NOW), Err(TokenError::Audience));
        let token = k.issue(&Claims { iss: "https://evil".into(), ..claims() }).unwrap();
        assert_eq!(k.verify(&settings(), &token, NOW), Err(TokenError::Issuer));
    }

    #[test]
    fn refuses_expired_overlong_and_too_old_sessions() {
        let k = ring(&[("k1", 1, NOW)]);
        let token = k.issue(&claims()).unwrap();
        assert_eq!(k.verify(&settings(), &token, NOW + 600 + 60), Err(TokenError::Expired));
        let long = k.issue(&Claims { exp: NOW + 3600, ..claims() }).unwrap();
        assert_eq!(k.verify(&settings(), &long, NOW), Err(TokenError::TooLong));
        let renewed_late = Claims { iat: NOW + MAX_SESSION_S, exp: NOW + MAX_SESSION_S + 600, ..claims() };
        let token = k.issue(&renewed_late).unwrap();
        assert_eq!(k.verify(&settings(), &token, NOW + MAX_SESSION_S + 10), Err(TokenError::SessionTooOld));
    }

    #[test]
    fn refuses_unknown_kid_and_tampered_payload() {
        let k1 = ring(&[("k1", 1, NOW)]);
        let other = ring(&[("k9", 9, NOW)]);
        let token = other.issue(&claims()).unwrap();
        assert_eq!(k1.verify(&settings(), &token, NOW), Err(TokenError::UnknownKey));

        let token = k1.issue(&claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let admin = Claims { roles: [Role::Admin].into_iter().collect(), ..claims() };
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_string(&admin).unwrap()), parts[2]);
        assert_eq!(k1.verify(&settings(), &tampered, NOW), Err(TokenError::Signature));
        assert_eq!(k1.verify(&settings(), "not.a.token", NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn rotation_signs_with_the_newest_and_still_verifies_older_keys() {
        let old = ring(&[("k1", 1, NOW)]);
        let old_token = old.issue(&claims()).unwrap();
        let rotated = ring(&[("k1", 1, NOW), ("k2", 2, NOW + 100)]);
        assert_eq!(rotated.current().unwrap().0, "k2");
        assert!(rotated.verify(&settings(), &old_token, NOW + 10).is_ok());
        let new_token = rotated.issue(&claims()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.as_deref(), Some("k2"));
        // A node that has not loaded k2 yet does not accept its tokens.
        assert_eq!(old.verify(&settings(), &new_token, NOW), Err(TokenError::UnknownKey));
    }
}
