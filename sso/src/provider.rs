//! One identity provider, as the relay talks to it: discovery at start, the authorization code
//! flow with PKCE (S256), `state` and `nonce`, the code exchange, the provider's published keys,
//! and re-reading a person's groups from the userinfo endpoint.
//!
//! The HTTP client follows no redirects (a redirect from the provider's endpoints could point the
//! relay anywhere), gives each request 10 s, and trusts the web PKI plus the provider's `ca_file`.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, JsonWebKeySet, JsonWebKeySetUrl,
    LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, RefreshToken, Scope, StandardErrorResponse, StandardTokenResponse,
    SubjectIdentifier, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use crate::Refusal;
use crate::config::ProviderConfig;
use crate::logout::{LogoutOrder, verify_logout_token};
use crate::verify::{DirectoryClaims, DirectoryLogin, Expectations, asymmetric, groups_of, verify_id_token};

type DirectoryTokenResponse = StandardTokenResponse<
    IdTokenFields<
        DirectoryClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type DirectoryClient = Client<
    DirectoryClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    DirectoryTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Keys are fetched again for an unknown `kid` at most this often (forged tokens are cheap).
const KEY_REFETCH: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {provider:?}: {problem}")]
    Setup { provider: String, problem: String },
}

/// What the relay keeps between sending the browser to the provider and its return: the
/// `state` is the key it is stored under; the rest never leaves the relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What lets the relay ask the provider about the person later (their groups).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds); unknown: an hour after issue.
    pub expires_s: u64,
}

pub struct Provider {
    pub config: ProviderConfig,
    http: reqwest::Client,
    client: DirectoryClient,
    algorithms: Vec<CoreJwsSigningAlgorithm>,
    jwks_url: JsonWebKeySetUrl,
    keys: RwLock<JsonWebKeySet<CoreJsonWebKey>>,
    last_key_fetch: Mutex<Instant>,
    /// RP-initiated logout, when the provider offers it.
    end_session: Option<EndSessionUrl>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.config.name).field("issuer", &self.config.issuer).finish()
    }
}

impl Provider {
    /// Reads the provider's metadata and keys; the relay does not start without them.
    pub async fn discover(config: ProviderConfig, redirect: url::Url) -> Result<Provider, ProviderError> {
        let setup = |problem: String| ProviderError::Setup { provider: config.name.clone(), problem };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5));
        if let Some(pem) = &config.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| setup(format!("ca_file: {e}")))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| setup(format!("HTTP client: {e}")))?;
        let issuer = IssuerUrl::new(config.issuer.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| setup(format!("issuer: {e}")))?;
        // Discovery checks that the metadata names the configured issuer exactly.
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &http)
            .await
            .map_err(|e| setup(format!("discovery at {}: {}", config.issuer, error_chain(&e))))?;
        let algorithms = asymmetric(metadata.id_token_signing_alg_values_supported());
        if algorithms.is_empty() {
            return Err(setup("its metadata lists no asymmetric ID token algorithm".into()));
        }
        if metadata.token_endpoint().is_none() {
            return Err(setup("its metadata names no token endpoint".into()));
        }
        let jwks_url = metadata.jwks_uri().clone();
        let keys = metadata.jwks().clone();
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(redirect.to_string()).map_err(|e| setup(format!("redirect URL: {e}")))?;
        let client = DirectoryClient::from_provider_metadata(
            metadata,
            ClientId::new(config.client_id.clone()),
            Some(ClientSecret::new(config.client_secret.clone())),
        )
        .set_redirect_uri(redirect);
        Ok(Provider {
            config,
            http,
            client,
            algorithms,
            jwks_url,
            keys: RwLock::new(keys),
            last_key_fetch: Mutex::new(Instant::now()),
            end_session,
        })
    }

    /// Whether the provider answers now: its keys (JWKS) are fetched within `within` (R43: the
    /// break-glass sign-in is for when it does not). The keys fetched are not taken: this only
    /// asks.
    pub async fn reachable(&self, within: Duration) -> Result<(), String> {
        let asked = self.http.get(self.jwks_url.url().clone()).timeout(within).send().await;
        match asked {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("provider {}: its keys answered {}", self.config.name, r.status())),
            Err(e) => Err(format!("provider {}: {}", self.config.name, error_chain(&e))),
        }
    }

    /// Where to send the browser after the person signs out of the relay, so that their session
    /// at the provider ends too (RP-initiated logout), and back to `return_to` after; none when
    /// the provider publishes no end-session endpoint. The client id rather than an ID token
    /// names the relay: the relay keeps no ID token, and the provider asks the person to confirm.
    pub fn end_session_url(&self, return_to: &url::Url) -> Option<url::Url> {
        let end_session = self.end_session.clone()?;
        let back = PostLogoutRedirectUrl::new(return_to.to_string()).ok()?;
        Some(
            LogoutRequest::from(end_session)
                .set_client_id(ClientId::new(self.config.client_id.clone()))
                .set_post_logout_redirect_uri(back)
                .http_get_url(),
        )
    }

    /// Where to send the browser, and what to keep under the returned `state`.
    pub fn begin(&self) -> (url::Url, String, PendingSignIn) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge)
            .set_max_age(Duration::from_secs(self.config.max_age_s));
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let pending = PendingSignIn {
            provider: self.config.name.clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        };
        (url, state.secret().clone(), pending)
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token against `pending`.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingSignIn,
        now_s: u64,
    ) -> Result<(DirectoryLogin, Grant), Refusal> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| Refusal::ProviderUnavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| Refusal::ProviderError(format!("code exchange: {}", error_chain(&e))))?;
        let id_token = response.id_token().ok_or_else(|| Refusal::Malformed("no ID token in the answer".into()))?;
        let token = id_token.to_string();
        let login = self.with_fresh_keys(|keys| self.verify(&token, &pending.nonce, keys, now_s)).await?;
        let grant = Grant {
            access_token: response.access_token().secret().clone(),
            refresh_token: response.refresh_token().map(|r| r.secret().clone()),
            expires_s: now_s + response.expires_in().map_or(3600, |d| d.as_secs()),
        };
        Ok((login, grant))
    }

    fn verify(
        &self,
        token: &str,
        nonce: &str,
        keys: &JsonWebKeySet<CoreJsonWebKey>,
        now_s: u64,
    ) -> Result<DirectoryLogin, Refusal> {
        let c = &self.config;
        let issuer = c.issuer.as_str().trim_end_matches('/');
        verify_id_token(
            token,
            nonce,
            &Expectations {
                provider: &c.name,
                issuer,
                client_id: &c.client_id,
                keys,
                algorithms: &self.algorithms,
                groups_claim: &c.groups_claim,
                max_age_s: c.max_age_s,
                now_s,
            },
        )
    }

    /// Verifies a back-channel logout token.
    pub async fn verify_logout(&self, token: &str, now_s: u64) -> Result<LogoutOrder, Refusal> {
        let issuer = self.config.issuer.as_str().trim_end_matches('/').to_owned();
        self.with_fresh_keys(|keys| {
            verify_logout_token(token, &issuer, &self.config.client_id, keys, &self.algorithms, now_s)
        })
        .await
    }

    /// Runs `check` with the keys held; when it names an unknown key, fetches the provider's
    /// keys again (at most once a minute) and runs it once more: providers rotate keys.
    async fn with_fresh_keys<T>(
        &self,
        check: impl Fn(&JsonWebKeySet<CoreJsonWebKey>) -> Result<T, Refusal>,
    ) -> Result<T, Refusal> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        match check(&keys) {
            Err(Refusal::UnknownKey) => {}
            other => return other,
        }
        {
            let mut last = self.last_key_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < KEY_REFETCH {
                return Err(Refusal::UnknownKey);
            }
            *last = Instant::now();
        }
        let fresh = JsonWebKeySet::fetch_async(&self.jwks_url, &self.http)
            .await
            .map_err(|e| Refusal::ProviderUnavailable(format!("keys: {}", error_chain(&e))))?;
        tracing::info!(provider = %self.config.name, keys = fresh.keys().len(), "fetched the provider's keys again");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        check(&fresh)
    }

    /// Re-reads the person's groups: refreshes the grant when it has expired and can be
    /// refreshed, then asks the userinfo endpoint, which must answer for `subject`. A refusal
    /// the provider itself answered (`ProviderError`, `Expired`, `Malformed`) is definite; only
    /// `ProviderUnavailable` may be an outage.
    pub async fn groups(&self, grant: &Grant, subject: &str, now_s: u64) -> Result<(Vec<String>, Grant), Refusal> {
        let mut grant = grant.clone();
        if grant.expires_s <= now_s + 30 {
            let refresh = grant
                .refresh_token
                .clone()
                .ok_or_else(|| Refusal::Expired("the access token expired and there is no refresh token".into()))?;
            let response = self
                .client
                .exchange_refresh_token(&RefreshToken::new(refresh))
                .map_err(|e| Refusal::ProviderUnavailable(e.to_string()))?
                .request_async(&self.http)
                .await
                .map_err(|e| match &e {
                    // The provider answered no (`invalid_grant`: the person was disabled or signed
                    // out there): definite.
                    openidconnect::RequestTokenError::ServerResponse(_) => {
                        Refusal::ProviderError(format!("refresh: {}", error_chain(&e)))
                    }
                    _ => Refusal::ProviderUnavailable(format!("refresh: {}", error_chain(&e))),
                })?;
            grant = Grant {
                access_token: response.access_token().secret().clone(),
                refresh_token: response.refresh_token().map(|r| r.secret().clone()).or(grant.refresh_token),
                expires_s: now_s + response.expires_in().map_or(3600, |d| d.as_secs()),
            };
        }
        let claims: UserInfoClaims<DirectoryClaims, CoreGenderClaim> = self
            .client
            .user_info(AccessToken::new(grant.access_token.clone()), Some(SubjectIdentifier::new(subject.to_owned())))
            .map_err(|e| Refusal::ProviderUnavailable(format!("userinfo: {e}")))?
            .request_async(&self.http)
            .await
            .map_err(|e| match &e {
                openidconnect::UserInfoError::Response(status, ..) if status.is_client_error() => {
                    Refusal::ProviderError(format!("userinfo: {}", error_chain(&e)))
                }
                openidconnect::UserInfoError::ClaimsVerification(_) => {
                    Refusal::ProviderError(format!("userinfo: {}", error_chain(&e)))
                }
                _ => Refusal::ProviderUnavailable(format!("userinfo: {}", error_chain(&e))),
            })?;
        let groups = groups_of(&claims.additional_claims().other, &self.config.groups_claim)?;
        Ok((groups, grant))
    }

    /// The provider's name and button label.
    pub fn describe(&self) -> (&str, &str) {
        (&self.config.name, &self.config.label)
    }
}

/// An error with its sources, for the records: the crates' top-level messages say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
