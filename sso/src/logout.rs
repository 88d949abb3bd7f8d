//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, section 2.6), with no IO.
//!
//! The provider posts a signed `logout_token` naming a subject, an IdP session, or both; the
//! relay then revokes the person's sessions on every node. `openidconnect` has no type for these
//! tokens, so `jsonwebtoken` checks them, against the same published keys and the same
//! asymmetric algorithms as ID tokens: issuer, audience, `iat` within five minutes, `exp` when
//! present, the back-channel event, `sub` or `sid`, and no `nonce` (which would make it an ID
//! token). The caller keeps `jti`s seen, so a token works once.

use openidconnect::JsonWebKeySet;
use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
use serde::Deserialize;

use crate::Refusal;
use crate::verify::asymmetric;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token older than this (or this far in the future) is refused.
const IAT_WINDOW_S: u64 = 300;

/// Whom a verified logout token signs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutOrder {
    pub issuer: String,
    pub subject: Option<String>,
    pub idp_session: Option<String>,
    /// The token's id, for replay detection.
    pub jti: String,
}

#[derive(Deserialize)]
struct LogoutClaims {
    iss: String,
    iat: u64,
    jti: Option<String>,
    sub: Option<String>,
    sid: Option<String>,
    #[serde(default)]
    events: serde_json::Map<String, serde_json::Value>,
    nonce: Option<serde_json::Value>,
}

/// Verifies a logout token from the provider at `issuer` for `client_id`.
pub fn verify_logout_token(
    token: &str,
    issuer: &str,
    client_id: &str,
    keys: &JsonWebKeySet<CoreJsonWebKey>,
    algorithms: &[CoreJwsSigningAlgorithm],
    now_s: u64,
) -> Result<LogoutOrder, Refusal> {
    use base64::Engine;
    use jsonwebtoken::errors::ErrorKind;
    let malformed = |e: &dyn std::fmt::Display| Refusal::Malformed(format!("the logout token is not a JWT: {e}"));
    // The algorithm is read before anything else: `none` or HMAC is refused by name, whatever
    // else the token holds.
    let header_segment = token.split('.').next().unwrap_or_default();
    let raw_header: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_segment)
        .map_err(|e| malformed(&e))
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| malformed(&e)))?;
    let alg_name = raw_header.get("alg").and_then(|a| a.as_str()).unwrap_or_default().to_owned();
    let allowed = asymmetric(algorithms).iter().any(|a| {
        serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_owned)).as_deref() == Some(&alg_name)
    });
    if !allowed {
        return Err(Refusal::AlgorithmNotAllowed(alg_name));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| malformed(&e))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::to_value(keys)
        .and_then(serde_json::from_value)
        .map_err(|e| Refusal::Malformed(format!("the provider's keys: {e}")))?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid).ok_or(Refusal::UnknownKey)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return Err(Refusal::UnknownKey),
    };
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| Refusal::BadSignature(e.to_string()))?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["iss", "aud"]);
    validation.leeway = 60;
    let claims = jsonwebtoken::decode::<LogoutClaims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => Refusal::BadSignature(e.to_string()),
            ErrorKind::InvalidAudience => Refusal::WrongAudience(e.to_string()),
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer(e.to_string()),
            ErrorKind::ExpiredSignature => Refusal::Expired(e.to_string()),
            ErrorKind::InvalidAlgorithm => Refusal::AlgorithmNotAllowed(e.to_string()),
            _ => Refusal::Malformed(e.to_string()),
        })?
        .claims;
    if claims.iat + IAT_WINDOW_S < now_s || claims.iat > now_s + IAT_WINDOW_S {
        return Err(Refusal::Expired(format!("issued at {}, {} s from now", claims.iat, now_s.abs_diff(claims.iat))));
    }
    if !claims.events.get(EVENT).is_some_and(|v| v.is_object()) {
        return Err(Refusal::Malformed("no back-channel logout event".into()));
    }
    if claims.nonce.is_some() {
        return Err(Refusal::Malformed("a logout token carries no nonce".into()));
    }
    if claims.sub.is_none() && claims.sid.is_none() {
        return Err(Refusal::Malformed("the logout token names neither sub nor sid".into()));
    }
    let jti = claims.jti.filter(|j| !j.is_empty()).ok_or_else(|| Refusal::Malformed("no jti".into()))?;
    Ok(LogoutOrder { issuer: claims.iss, subject: claims.sub, idp_session: claims.sid, jti })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::verify::tests::{ISSUER, keys, sign};

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims() -> serde_json::Value {
        json!({ "iss": ISSUER, "aud": "sightline", "iat": now(), "jti": "j-1", "sub": "u-123", "sid": "s-9",
                "events": { EVENT: {} } })
    }

    fn check(token: &str) -> Result<LogoutOrder, Refusal> {
        verify_logout_token(token, ISSUER, "sightline", &keys(&[1]), &[CoreJwsSigningAlgorithm::EdDsa], now())
    }

    fn token(change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
        let mut c = claims();
        change(c.as_object_mut().unwrap());
        sign(json!({ "alg": "EdDSA", "kid": "1", "typ": "logout+jwt" }), &c, 1)
    }

    #[test]
    fn a_valid_logout_token_names_whom_to_sign_out() {
        let order = check(&token(|_| {})).unwrap();
        assert_eq!(order.subject.as_deref(), Some("u-123"));
        assert_eq!(order.idp_session.as_deref(), Some("s-9"));
        assert_eq!(order.jti, "j-1");
    }

    #[test]
    fn wrong_logout_tokens_are_refused_with_their_reason() {
        assert!(matches!(
            check(&token(|c| _ = c.insert("aud".into(), json!("other")))),
            Err(Refusal::WrongAudience(_))
        ));
        assert!(matches!(
            check(&token(|c| _ = c.insert("iss".into(), json!("https://x")))),
            Err(Refusal::WrongIssuer(_))
        ));
        assert!(matches!(check(&token(|c| _ = c.insert("iat".into(), json!(now() - 3600)))), Err(Refusal::Expired(_))));
        assert!(matches!(check(&token(|c| _ = c.remove("events"))), Err(Refusal::Malformed(_))));
        assert!(matches!(check(&token(|c| _ = c.insert("nonce".into(), json!("n")))), Err(Refusal::Malformed(_))));
        assert!(matches!(
            check(&token(|c| {
                c.remove("sub");
                c.remove("sid");
            })),
            Err(Refusal::Malformed(_))
        ));
        let foreign = sign(json!({ "alg": "EdDSA", "kid": "7" }), &claims(), 7);
        assert!(matches!(check(&foreign), Err(Refusal::UnknownKey)));
        let forged = sign(json!({ "alg": "EdDSA", "kid": "1" }), &claims(), 7);
        assert!(matches!(check(&forged), Err(Refusal::BadSignature(_))), "{:?}", check(&forged));
        let hmac = sign(json!({ "alg": "HS256", "kid": "1" }), &claims(), 1);
        assert!(matches!(check(&hmac), Err(Refusal::AlgorithmNotAllowed(_))), "{:?}", check(&hmac));
        use base64::Engine;
        let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let unsigned = format!("{}.{}.", b64(json!({ "alg": "none" })), b64(claims()));
        assert!(matches!(check(&unsigned), Err(Refusal::AlgorithmNotAllowed(_))), "{:?}", check(&unsigned));
        assert!(matches!(check("garbage"), Err(Refusal::Malformed(_))));
    }
}
