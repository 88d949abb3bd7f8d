//! ID token validation, with no IO: the token, the provider's keys and the expectations in,
//! the directory identity or the reason for refusing out.
//!
//! `openidconnect` checks the signature against the provider's published keys, the issuer, the
//! audience (and `azp` when several audiences), the expiry and the nonce. On top of it: the
//! algorithm is pinned to the asymmetric ones the provider's metadata lists (never `none`, never
//! HMAC, so a provider's public key can never be used as a shared secret), and `auth_time` must
//! be present and no older than the provider's `max_age_s`, so that a week-old IdP session is
//! not a fresh sign-in.

use openidconnect::core::{
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenVerifier, IssuerUrl, JsonWebKeySet, Nonce,
    SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use crate::Refusal;

/// Claims beyond the standard ones, kept whole: the groups claim is named by configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirectoryClaims {
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for DirectoryClaims {}

pub type DirectoryIdToken =
    IdToken<DirectoryClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Who the directory says signed in, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryLogin {
    /// The configured provider's name.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// `preferred_username`, else `email`, else none: only a suggestion for the account's name.
    pub username: Option<String>,
    /// The groups claim's values (absent claim: none).
    pub groups: Vec<String>,
    pub auth_time_s: u64,
    /// The IdP's session id (`sid`), which back-channel logout may name instead of the subject.
    pub idp_session: Option<String>,
}

/// What a token must satisfy.
#[derive(Debug)]
pub struct Expectations<'a> {
    pub provider: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub keys: &'a JsonWebKeySet<CoreJsonWebKey>,
    /// The asymmetric algorithms the provider's metadata lists for ID tokens.
    pub algorithms: &'a [CoreJwsSigningAlgorithm],
    pub groups_claim: &'a str,
    pub max_age_s: u64,
    pub now_s: u64,
}

/// The algorithms a provider may sign ID tokens with: what its metadata lists, without `none`
/// and without HMAC (a shared secret, which a public key must never become).
pub fn asymmetric(listed: &[CoreJwsSigningAlgorithm]) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    listed.iter().filter(|a| !matches!(a, A::None | A::HmacSha256 | A::HmacSha384 | A::HmacSha512)).cloned().collect()
}

/// Verifies `token` as the ID token answering the sign-in that sent `nonce`.
pub fn verify_id_token(token: &str, nonce: &str, expect: &Expectations<'_>) -> Result<DirectoryLogin, Refusal> {
    let token: DirectoryIdToken =
        token.parse().map_err(|e| Refusal::Malformed(format!("the ID token is not a JWT: {e}")))?;
    let issuer = IssuerUrl::new(expect.issuer.to_owned()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let now = chrono::DateTime::from_timestamp(expect.now_s as i64, 0).unwrap_or_default();
    let max_age = expect.max_age_s;
    let now_s = expect.now_s;
    let verifier =
        IdTokenVerifier::new_public_client(ClientId::new(expect.client_id.to_owned()), issuer, expect.keys.clone())
            .set_allowed_algs(asymmetric(expect.algorithms))
            .set_time_fn(move || now)
            .set_auth_time_verifier_fn(move |auth_time| {
                let at = auth_time.ok_or("the token has no auth_time")?.timestamp().max(0) as u64;
                let age = now_s.saturating_sub(at);
                if age > max_age {
                    Err(format!("the IdP sign-in is {age} s old; at most {max_age} s is fresh"))
                } else {
                    Ok(())
                }
            });
    let claims = token.claims(&verifier, &Nonce::new(nonce.to_owned())).map_err(refusal)?;
    let other = &claims.additional_claims().other;
    let groups = groups_of(other, expect.groups_claim)?;
    let username = claims
        .preferred_username()
        .map(|u| u.as_str().to_owned())
        .or_else(|| claims.email().map(|e| e.as_str().to_owned()));
    Ok(DirectoryLogin {
        provider: expect.provider.to_owned(),
        issuer: claims.issuer().as_str().to_owned(),
        subject: claims.subject().as_str().to_owned(),
        username,
        groups,
        auth_time_s: claims.auth_time().map_or(0, |t| t.timestamp().max(0) as u64),
        idp_session: other.get("sid").and_then(|s| s.as_str()).map(str::to_owned),
    })
}

/// The groups a claim lists, from an ID token or a userinfo answer alike: absent is none, one
/// string is one group, anything but strings is refused (a group silently dropped could be the
/// one that should have removed a role).
pub(crate) fn groups_of(
    claims: &serde_json::Map<String, serde_json::Value>,
    claim: &str,
) -> Result<Vec<String>, Refusal> {
    match claims.get(claim) {
        None => Ok(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Refusal::Malformed(format!("the {claim:?} claim holds something other than strings"))),
        Some(serde_json::Value::String(one)) => Ok(vec![one.clone()]),
        Some(_) => Err(Refusal::Malformed(format!("the {claim:?} claim is not a list of groups"))),
    }
}

/// Names what was wrong, in the words of `Refusal`.
fn refusal(e: ClaimsVerificationError) -> Refusal {
    use SignatureVerificationError as S;
    match e {
        ClaimsVerificationError::Expired(m) => Refusal::Expired(m),
        ClaimsVerificationError::InvalidAudience(m) => Refusal::WrongAudience(m),
        ClaimsVerificationError::InvalidIssuer(m) => Refusal::WrongIssuer(m),
        ClaimsVerificationError::InvalidNonce(m) => Refusal::NonceMismatch(m),
        ClaimsVerificationError::InvalidAuthTime(m) => Refusal::StaleSignIn(m),
        ClaimsVerificationError::SignatureVerification(S::NoSignature) => Refusal::Unsigned,
        ClaimsVerificationError::SignatureVerification(S::NoMatchingKey) => Refusal::UnknownKey,
        ClaimsVerificationError::SignatureVerification(S::DisallowedAlg(m) | S::UnsupportedAlg(m)) => {
            Refusal::AlgorithmNotAllowed(m)
        }
        ClaimsVerificationError::SignatureVerification(other) => Refusal::BadSignature(other.to_string()),
        other => Refusal::Malformed(other.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use ed25519_dalek::Signer;
    use serde_json::json;

    use super::*;

    pub const ISSUER: &str = "https://idp.example";
    pub const NOW: u64 = 1_800_000_000;

    /// The provider's key set: Ed25519 keys `kid` = seed byte.
    pub fn keys(seeds: &[u8]) -> JsonWebKeySet<CoreJsonWebKey> {
        let keys: Vec<serde_json::Value> = seeds
            .iter()
            .map(|s| {
                let public = ed25519_dalek::SigningKey::from_bytes(&[*s; 32]).verifying_key().to_bytes();
                json!({ "kty": "OKP", "crv": "Ed25519", "kid": s.to_string(), "use": "sig", "alg": "EdDSA", "x": B64.encode(public) })
            })
            .collect();
        serde_json::from_value(json!({ "keys": keys })).unwrap()
    }

    /// A JWT signed with key `seed` under `header` (alg and kid as given).
    pub fn sign(header: serde_json::Value, claims: &serde_json::Value, seed: u8) -> String {
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let signature = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).sign(input.as_bytes());
        format!("{input}.{}", B64.encode(signature.to_bytes()))
    }

    fn good_claims() -> serde_json::Value {
        json!({
            "iss": ISSUER, "aud": "sightline", "sub": "u-123", "exp": NOW + 300, "iat": NOW,
            "auth_time": NOW - 10, "nonce": "n-1", "preferred_username": "olga", "groups": ["ops", "all"],
            "sid": "idp-session-9",
        })
    }

    fn token(claims: &serde_json::Value) -> String {
        sign(json!({ "alg": "EdDSA", "kid": "1", "typ": "JWT" }), claims, 1)
    }

    fn check(token: &str, nonce: &str) -> Result<DirectoryLogin, Refusal> {
        let keys = keys(&[1, 2]);
        let expect = Expectations {
            provider: "corp",
            issuer: ISSUER,
            client_id: "sightline",
            keys: &keys,
            algorithms: &[
                CoreJwsSigningAlgorithm::EdDsa,
                CoreJwsSigningAlgorithm::HmacSha256,
                CoreJwsSigningAlgorithm::None,
            ],
            groups_claim: "groups",
            max_age_s: 600,
            now_s: NOW,
        };
        verify_id_token(token, nonce, &expect)
    }

    fn with(change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> serde_json::Value {
        let mut claims = good_claims();
        change(claims.as_object_mut().unwrap());
        claims
    }

    #[test]
    fn a_valid_token_names_the_subject_its_groups_and_the_idp_session() {
        let login = check(&token(&good_claims()), "n-1").unwrap();
        assert_eq!(login.subject, "u-123");
        assert_eq!(login.issuer, ISSUER);
        assert_eq!(login.groups, ["ops", "all"]);
        assert_eq!(login.username.as_deref(), Some("olga"));
        assert_eq!(login.idp_session.as_deref(), Some("idp-session-9"));
        assert_eq!(login.auth_time_s, NOW - 10);
    }

    /// Each way an ID token can be wrong is refused, and named (R12); `a_valid_token...` is the
    /// control that the same tokens pass when nothing is wrong.
    #[test]
    fn every_wrong_token_is_refused_with_its_reason() {
        let wrong_aud = token(&with(|c| _ = c.insert("aud".into(), json!("another-app"))));
        assert!(matches!(check(&wrong_aud, "n-1"), Err(Refusal::WrongAudience(_))), "{:?}", check(&wrong_aud, "n-1"));
        let expired = token(&with(|c| _ = c.insert("exp".into(), json!(NOW - 120))));
        assert!(matches!(check(&expired, "n-1"), Err(Refusal::Expired(_))));
        assert!(matches!(check(&token(&good_claims()), "n-other"), Err(Refusal::NonceMismatch(_))));
        let other_issuer = token(&with(|c| _ = c.insert("iss".into(), json!("https://evil.example"))));
        assert!(matches!(check(&other_issuer, "n-1"), Err(Refusal::WrongIssuer(_))));
        let stale = token(&with(|c| _ = c.insert("auth_time".into(), json!(NOW - 7 * 24 * 3600))));
        assert!(matches!(check(&stale, "n-1"), Err(Refusal::StaleSignIn(_))));
        let no_auth_time = token(&with(|c| _ = c.remove("auth_time")));
        assert!(matches!(check(&no_auth_time, "n-1"), Err(Refusal::StaleSignIn(_))));

        // Signed with a key the provider does not publish (kid 9), or claiming a published kid.
        let foreign = sign(json!({ "alg": "EdDSA", "kid": "9" }), &good_claims(), 9);
        assert!(matches!(check(&foreign, "n-1"), Err(Refusal::UnknownKey)), "{:?}", check(&foreign, "n-1"));
        let forged = sign(json!({ "alg": "EdDSA", "kid": "1" }), &good_claims(), 9);
        assert!(matches!(check(&forged, "n-1"), Err(Refusal::BadSignature(_))), "{:?}", check(&forged, "n-1"));
        // Unsigned, even though the metadata lists `none`.
        let body = B64.encode(good_claims().to_string());
        let unsigned = format!("{}.{body}.", B64.encode(json!({ "alg": "none" }).to_string()));
        assert!(matches!(check(&unsigned, "n-1"), Err(Refusal::Unsigned)), "{:?}", check(&unsigned, "n-1"));
        // HMAC, even though listed: the public key is not a shared secret.
        let hmac = sign(json!({ "alg": "HS256", "kid": "1" }), &good_claims(), 1);
        assert!(matches!(check(&hmac, "n-1"), Err(Refusal::AlgorithmNotAllowed(_))), "{:?}", check(&hmac, "n-1"));
        assert!(matches!(check("not-a-jwt", "n-1"), Err(Refusal::Malformed(_))));
        let bad_groups = token(&with(|c| _ = c.insert("groups".into(), json!({ "ops": true }))));
        assert!(matches!(check(&bad_groups, "n-1"), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn only_asymmetric_algorithms_are_ever_allowed() {
        use CoreJwsSigningAlgorithm as A;
        let listed = [A::RsaSsaPkcs1V15Sha256, A::None, A::HmacSha256, A::EcdsaP256Sha256, A::HmacSha512];
        assert_eq!(asymmetric(&listed), [A::RsaSsaPkcs1V15Sha256, A::EcdsaP256Sha256]);
    }
}
