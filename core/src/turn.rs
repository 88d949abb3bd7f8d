//! Short-lived TURN credentials in the TURN REST style (draft-uberti-behave-turn-rest-00), the
//! scheme coturn checks with `use-auth-secret`: the user name is `<expiry in unix seconds>:<who>`
//! and the password is base64(HMAC-SHA1(shared secret, user name)). The TURN server needs no
//! database and no call to the relay: it recomputes the password, and refuses a user name whose
//! expiry has passed.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// The longest a credential may live (issue 25: at most five minutes; the viewer renews them).
pub const MAX_TTL: Duration = Duration::from_secs(300);

/// The shortest shared secret accepted (coturn accepts any; a guessable one lets anyone relay).
pub const MIN_SECRET_BYTES: usize = 32;

/// One credential for one holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
    /// When the TURN server starts refusing it, in unix milliseconds.
    pub expires_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TurnError {
    #[error("the TURN shared secret has {0} bytes; at least {MIN_SECRET_BYTES} are needed")]
    WeakSecret(usize),
    #[error("TURN credentials may live at most 300 s, not {0} s")]
    TtlTooLong(u64),
    #[error("a TURN credential's holder cannot be empty or contain ':' ({0:?})")]
    BadHolder(String),
}

/// The shared secret, checked once.
#[derive(Clone)]
pub struct TurnSecret(Vec<u8>);

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

impl TurnSecret {
    pub fn new(secret: &[u8]) -> Result<TurnSecret, TurnError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(TurnError::WeakSecret(secret.len()));
        }
        Ok(TurnSecret(secret.to_vec()))
    }

    /// A credential for `holder` valid from `now_ms` for `ttl` (at most [`MAX_TTL`]).
    pub fn issue(&self, holder: &str, now_ms: u64, ttl: Duration) -> Result<TurnCredential, TurnError> {
        if ttl > MAX_TTL {
            return Err(TurnError::TtlTooLong(ttl.as_secs()));
        }
        if holder.is_empty() || holder.contains(':') {
            return Err(TurnError::BadHolder(holder.to_owned()));
        }
        // Whole seconds, rounded down: never later than promised.
        let expires_s = (now_ms + ttl.as_millis() as u64) / 1000;
        let username = format!("{expires_s}:{holder}");
        Ok(TurnCredential { credential: self.password(&username), username, expires_ms: expires_s * 1000 })
    }

    /// The password the TURN server computes for `username`.
    pub fn password(&self, username: &str) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"an example shared secret, 32+ bytes long";

    #[test]
    fn the_password_is_the_base64_hmac_sha1_of_the_user_name() {
        // Computed independently: printf '%s' '1700000300:op-1' | openssl dgst -sha1 -hmac "$SECRET" -binary | base64
        let secret = TurnSecret::new(SECRET).unwrap();
        assert_eq!(secret.password("1700000300:op-1"), "U3EcadgQx90OCaFOAbOVUCFnCfA=");
    }

    #[test]
    fn a_credential_expires_within_its_ttl_and_names_its_holder() {
        let secret = TurnSecret::new(SECRET).unwrap();
        let issued = secret.issue("op-1", 1_700_000_000_500, Duration::from_secs(300)).unwrap();
        assert_eq!(issued.username, "1700000300:op-1");
        assert_eq!(issued.expires_ms, 1_700_000_300_000);
        assert_eq!(issued.credential, secret.password("1700000300:op-1"));
    }

    #[test]
    fn long_lives_weak_secrets_and_ambiguous_holders_are_refused() {
        let secret = TurnSecret::new(SECRET).unwrap();
        assert_eq!(secret.issue("op-1", 0, Duration::from_secs(301)), Err(TurnError::TtlTooLong(301)));
        assert_eq!(secret.issue("a:b", 0, MAX_TTL), Err(TurnError::BadHolder("a:b".into())));
        assert_eq!(secret.issue("", 0, MAX_TTL), Err(TurnError::BadHolder(String::new())));
        assert_eq!(TurnSecret::new(b"short").unwrap_err(), TurnError::WeakSecret(5));
    }
}
