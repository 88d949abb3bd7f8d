//! Sign-in through the organisation's identity providers (R12): the relay as an OpenID Connect
//! relying party.
//!
//! `config` reads and checks the SSO file (its role table is `sightline_core::role_mapping`);
//! `verify` checks ID tokens and `logout` back-channel logout tokens (both pure: token, keys and
//! expectations in, a decision out); `provider` is the IO: discovery, the authorization code
//! flow with PKCE, `state` and `nonce`, the code exchange, the provider's keys (fetched again
//! when a token names a key not yet seen, at most once a minute), and re-reading a person's
//! groups from the userinfo endpoint.
//!
//! The protocol is `openidconnect` (4.1, over reqwest with rustls/ring, redirects off);
//! back-channel logout tokens, for which it has no type, are checked with `jsonwebtoken`.
//!
//! Refuses to know: users, sessions, passkeys and the store (`sightline-identity` decides what a
//! verified directory sign-in may do), and HTTP routes (the relay's surface).

pub mod config;
pub mod logout;
pub mod provider;
pub mod verify;

pub use config::{LocalAccounts, ProviderConfig, SsoConfig};
pub use logout::LogoutOrder;
pub use provider::{Grant, PendingSignIn, Provider};
pub use sightline_core::role_mapping::RoleMapping;
pub use verify::DirectoryLogin;

/// Why a directory sign-in, a logout token or a groups re-read was refused. `code` is what the
/// audit record and the browser are told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the sign-in's state is unknown, used or expired")]
    BadState,
    #[error("the sign-in was started in another browser")]
    BrowserMismatch,
    #[error("the identity provider refused: {0}")]
    ProviderError(String),
    #[error("the identity provider cannot be reached or answered wrongly: {0}")]
    ProviderUnavailable(String),
    #[error("the ID token is for another audience: {0}")]
    WrongAudience(String),
    #[error("the token is from another issuer: {0}")]
    WrongIssuer(String),
    #[error("the token has expired: {0}")]
    Expired(String),
    #[error("the ID token's nonce is not this sign-in's (a replay): {0}")]
    NonceMismatch(String),
    #[error("the IdP sign-in is not fresh: {0}")]
    StaleSignIn(String),
    #[error("the token is not signed")]
    Unsigned,
    #[error("the token is signed with a key the provider does not publish")]
    UnknownKey,
    #[error("the token's signature is wrong: {0}")]
    BadSignature(String),
    #[error("the token's algorithm is not allowed: {0}")]
    AlgorithmNotAllowed(String),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("none of the person's groups maps to a role")]
    NoMappedGroup,
    #[error("this logout token was already used")]
    Replayed,
}

impl Refusal {
    /// A short stable name, for records and for the page the browser lands on.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadState => "bad_state",
            Refusal::BrowserMismatch => "browser_mismatch",
            Refusal::ProviderError(_) => "provider_error",
            Refusal::ProviderUnavailable(_) => "provider_unavailable",
            Refusal::WrongAudience(_) => "wrong_audience",
            Refusal::WrongIssuer(_) => "wrong_issuer",
            Refusal::Expired(_) => "expired",
            Refusal::NonceMismatch(_) => "nonce_replay",
            Refusal::StaleSignIn(_) => "stale_sign_in",
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            Refusal::Malformed(_) => "malformed",
            Refusal::NoMappedGroup => "no_mapped_group",
            Refusal::Replayed => "replayed",
        }
    }
}
