//! Sign-in through an identity provider (R12), as the browser sees it.
//!
//! 1. `GET /api/sso/{provider}/start` keeps the sign-in's nonce and PKCE verifier under its
//!    `state` (10 minutes, one use), binds it to this browser with a random value in an
//!    `HttpOnly; SameSite=Lax` cookie scoped to `/api/sso` (Lax: the provider's redirect back is
//!    a cross-site navigation), and sends the browser to the provider.
//! 2. `GET /api/sso/{provider}/callback` takes the state (unknown, used or from another browser:
//!    refused), checks the provider's `iss` when it sends one (mix-up defence), exchanges the code
//!    and verifies the ID token (`sightline_sso`), maps the groups to roles, and hands
//!    `Identity::directory_sign_in`'s one-time ticket to the browser in an `HttpOnly;
//!    SameSite=Strict` cookie, never in a URL. Then it sends the browser to `/#/sso`; a refusal
//!    goes to `/#/sso/refused/<reason>`, and every refusal is an `auth.directory_refused` record.
//! 3. The page posts `/api/sso/continue` (the cookie spends the ticket) and gets a passkey
//!    ceremony: enrolment the first time (finished at `/api/sso/enrol/finish`), an assertion after
//!    (finished at `/api/login/finish`, like any passkey login). Only then is there a session.
//!
//! `POST /api/sso/{provider}/backchannel-logout` takes the provider's logout token and ends the
//! person's sessions on every node.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use sightline_identity::{DirectoryLink, DirectoryNext, DirectorySignIn, IdentityError, RegisterPublicKeyCredential};
use sightline_sso::{PendingSignIn, Refusal};

use super::auth::{cookie_named as cookie, with_cookie};
use super::error::{ApiError, ApiResult};
use crate::state::AppState;

const BINDING_COOKIE: &str = "sightline_sso_binding";
const TICKET_COOKIE: &str = "sightline_sso_ticket";
/// How long the provider may take to send the browser back.
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(serde::Serialize, Deserialize)]
struct Pending {
    sign_in: PendingSignIn,
    /// SHA-256 of the browser binding in the cookie.
    binding: String,
}

fn pending_key(state: &str) -> String {
    format!("sso-pending:{}", sightline_identity::token_hash(state))
}

fn set_cookie(response: &mut Response, text: String) {
    if let Ok(v) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn sso_of(state: &AppState) -> Result<&crate::sso::Sso, ApiError> {
    state.sso.as_deref().ok_or(ApiError(IdentityError::NotFound))
}

/// The providers to offer on the sign-in page, and whether a user name and passkey alone may
/// still sign in.
pub(super) async fn providers(State(state): State<AppState>) -> Json<serde_json::Value> {
    let providers: Vec<serde_json::Value> = state
        .sso
        .iter()
        .flat_map(|s| s.providers())
        .map(|p| {
            let (name, label) = p.describe();
            json!({ "name": name, "label": label })
        })
        .collect();
    Json(json!({ "providers": providers, "local_accounts": state.identity.local_accounts_allowed() }))
}

pub(super) async fn start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let provider = sso_of(&state)?.provider(&name).ok_or(ApiError(IdentityError::NotFound))?;
    state.identity.audit_available()?;
    state.identity.spend_ceremony_budget(peer.ip())?;
    let (url, csrf_state, sign_in) = provider.begin();
    let binding = sightline_identity::random_token();
    let pending = Pending { sign_in, binding: sightline_identity::token_hash(&binding) };
    state
        .identity
        .store()
        .put_ephemeral(&pending_key(&csrf_state), &pending, PENDING_TTL)
        .await
        .map_err(IdentityError::from)?;
    let mut response = redirect(url.as_str());
    set_cookie(
        &mut response,
        format!(
            "{BINDING_COOKIE}={binding}; HttpOnly; Secure; SameSite=Lax; Path=/api/sso; Max-Age={}",
            PENDING_TTL.as_secs()
        ),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub(super) async fn callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> ApiResult<Response> {
    let sso = sso_of(&state)?;
    let provider = sso.provider(&name).ok_or(ApiError(IdentityError::NotFound))?.clone();
    let identity = state.identity.clone();
    let outcome = async {
        let csrf_state = answer.state.as_deref().filter(|s| !s.is_empty()).ok_or(Refusal::BadState)?;
        let pending: Pending = identity
            .store()
            .take_ephemeral(&pending_key(csrf_state))
            .await
            .map_err(|e| Refusal::ProviderUnavailable(format!("state store: {e}")))?
            .ok_or(Refusal::BadState)?;
        let browser = cookie(&headers, BINDING_COOKIE).map(|b| sightline_identity::token_hash(&b));
        if pending.sign_in.provider != name || browser.as_deref() != Some(pending.binding.as_str()) {
            return Err(Refusal::BrowserMismatch);
        }
        if let Some(error) = &answer.error {
            return Err(Refusal::ProviderError(format!(
                "{error}: {}",
                answer.error_description.as_deref().unwrap_or("")
            )));
        }
        if let Some(iss) = &answer.iss
            && iss.trim_end_matches('/') != provider.config.issuer.as_str().trim_end_matches('/')
        {
            return Err(Refusal::WrongIssuer(format!("the answer names issuer {iss}")));
        }
        let code =
            answer.code.as_deref().filter(|c| !c.is_empty()).ok_or_else(|| Refusal::Malformed("no code".into()))?;
        provider.finish(code, &pending.sign_in, identity.now_ms() / 1000).await
    }
    .await;
    let mut response = match outcome {
        Ok((login, grant)) => {
            let access = sso.access_for(&identity, &name, &login.groups).await?;
            let sign_in = DirectorySignIn {
                link: DirectoryLink { provider: name.clone(), issuer: login.issuer, subject: login.subject },
                username: login.username,
                groups: login.groups,
                roles: access.roles,
                segments: access.segments,
                idp_session: login.idp_session,
                grant: serde_json::to_value(grant).unwrap_or_default(),
            };
            match identity.directory_sign_in(sign_in, peer.ip()).await {
                Ok(ticket) => {
                    let mut response = redirect("/#/sso");
                    set_cookie(
                        &mut response,
                        format!(
                            "{TICKET_COOKIE}={ticket}; HttpOnly; Secure; SameSite=Strict; Path=/api/sso; Max-Age=300"
                        ),
                    );
                    response
                }
                Err(IdentityError::Forbidden(_)) => redirect("/#/sso/refused/no_mapped_group"),
                Err(e) => return Err(ApiError(e)),
            }
        }
        Err(refusal) => {
            // Anyone can send a bad callback: each refusal costs the address a ceremony start, so
            // a flood is throttled before it fills the audit log.
            identity.spend_ceremony_budget(peer.ip())?;
            identity.directory_refused(&name, None, Some(peer.ip()), refusal.code(), &refusal.to_string());
            identity.audit_committed().await?;
            redirect(&format!("/#/sso/refused/{}", refusal.code()))
        }
    };
    // The binding has done its work either way.
    set_cookie(&mut response, format!("{BINDING_COOKIE}=; HttpOnly; Secure; SameSite=Lax; Path=/api/sso; Max-Age=0"));
    Ok(response)
}

/// Spends the ticket: the passkey ceremony that completes the sign-in.
pub(super) async fn continue_sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // No ticket: nothing to continue (a 400); a ticket unknown, used or expired: a 401.
    let ticket = cookie(&headers, TICKET_COOKIE).filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError(IdentityError::BadRequest(
            "no sign-in through an identity provider to continue: start it again".into(),
        ))
    })?;
    let next = state.identity.directory_continue(&ticket, peer.ip()).await?;
    let body = match next {
        DirectoryNext::Enrol { ceremony_id, options } => {
            json!({ "kind": "enrol", "ceremony_id": ceremony_id, "options": options })
        }
        DirectoryNext::Login { ceremony_id, options } => {
            json!({ "kind": "login", "ceremony_id": ceremony_id, "options": options })
        }
    };
    let mut response = Json(body).into_response();
    set_cookie(&mut response, format!("{TICKET_COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/api/sso; Max-Age=0"));
    Ok(response)
}

#[derive(Deserialize)]
pub(super) struct EnrolFinish {
    ceremony_id: String,
    credential: RegisterPublicKeyCredential,
}

pub(super) async fn enrol_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<EnrolFinish>,
) -> ApiResult<Response> {
    let (user, token) =
        state.identity.finish_directory_enrolment(&body.ceremony_id, &body.credential, peer.ip()).await?;
    super::account::note_device(&state, &token, &headers).await;
    Ok(with_cookie(&token, Json(json!({ "id": user.id, "name": user.name }))))
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    logout_token: String,
}

/// The provider's back-channel logout (server to server): 200 when the token is good (whether
/// or not it named anyone here), 400 otherwise, both with `Cache-Control: no-store`.
pub(super) async fn backchannel_logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    Form(form): Form<LogoutForm>,
) -> ApiResult<Response> {
    let provider = sso_of(&state)?.provider(&name).ok_or(ApiError(IdentityError::NotFound))?.clone();
    let identity = &state.identity;
    identity.audit_available()?;
    let answer = |status: StatusCode, body: serde_json::Value| {
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    };
    match provider.verify_logout(&form.logout_token, identity.now_ms() / 1000).await {
        Ok(order) => {
            match identity
                .directory_logout(
                    &name,
                    &order.issuer,
                    order.subject.as_deref(),
                    order.idp_session.as_deref(),
                    &order.jti,
                    peer.ip(),
                )
                .await
            {
                Ok(_) => Ok(answer(StatusCode::OK, json!({}))),
                Err(IdentityError::BadRequest(m)) => {
                    Ok(answer(StatusCode::BAD_REQUEST, json!({ "error": "invalid_request", "error_description": m })))
                }
                Err(e) => Err(ApiError(e)),
            }
        }
        Err(refusal) => {
            identity.spend_ceremony_budget(peer.ip())?;
            identity.directory_refused(
                &name,
                None,
                Some(peer.ip()),
                refusal.code(),
                &format!("logout token: {refusal}"),
            );
            identity.audit_committed().await?;
            Ok(answer(
                StatusCode::BAD_REQUEST,
                json!({ "error": "invalid_request", "error_description": refusal.to_string() }),
            ))
        }
    }
}
