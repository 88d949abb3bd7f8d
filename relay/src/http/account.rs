//! A person's own account: enrolment with a passkey, login, who am I, logout, token renewal,
//! step-up.

use std::net::SocketAddr;

use axum::extract::Path;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sightline_core::roles::{Capability, Role};
use sightline_identity::{AuthUser, PublicKeyCredential, RegisterPublicKeyCredential, User};

use super::auth::{clear_cookie, with_cookie};
use super::error::ApiResult;
use crate::state::AppState;

// ---------------------------------------------------------------- views of records

#[derive(Serialize)]
pub(super) struct UserView {
    id: String,
    name: String,
    roles: Vec<Role>,
    passkeys: usize,
    bootstrap: bool,
    /// The identity provider a directory account signs in through; none for a local account.
    directory: Option<String>,
}
impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            name: u.name.clone(),
            roles: u.roles.iter().copied().collect(),
            passkeys: u.passkeys.len(),
            bootstrap: u.bootstrap,
            directory: u.directory.as_ref().map(|d| d.provider.clone()),
        }
    }
}
// ---------------------------------------------------------------- public

#[derive(Deserialize)]
pub(super) struct EnrolStart {
    token: String,
    /// Only for the bootstrap link: the first admin chooses their name.
    name: Option<String>,
}
pub(super) async fn enrol_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<EnrolStart>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_enrolment(&body.token, body.name.as_deref(), peer.ip()).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}
#[derive(Deserialize)]
pub(super) struct EnrolFinish {
    token: String,
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
        state.identity.finish_enrolment(&body.token, &body.ceremony_id, &body.credential, Some(peer.ip())).await?;
    note_device(&state, &token, &headers).await;
    Ok(with_cookie(&token, Json(UserView::from(&user))))
}
#[derive(Deserialize)]
pub(super) struct LoginStart {
    name: String,
}
pub(super) async fn login_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<LoginStart>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_login(&body.name, peer.ip()).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}
#[derive(Deserialize)]
pub(super) struct Finish {
    ceremony_id: String,
    credential: PublicKeyCredential,
}
pub(super) async fn login_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Finish>,
) -> ApiResult<Response> {
    let (user, token) = state.identity.finish_login(&body.ceremony_id, &body.credential, peer.ip()).await?;
    note_device(&state, &token, &headers).await;
    Ok(with_cookie(&token, Json(UserView::from(&user))))
}

/// Remembers the browser a new session signed in from, for its owner's list of sessions. Only a
/// label: a failure to note it costs the label, not the sign-in.
pub(super) async fn note_device(state: &AppState, token: &str, headers: &HeaderMap) {
    let device = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown browser");
    if let Err(e) = state.identity.note_device(token, device).await {
        tracing::warn!(error = %e, "cannot note the device of a new session");
    }
}
// ---------------------------------------------------------------- signed in

pub(super) async fn me(State(state): State<AppState>, Extension(auth): Extension<AuthUser>) -> Json<serde_json::Value> {
    let capabilities: Vec<&str> = [
        (Capability::ViewSessions, "view_sessions"),
        (Capability::ObserveSessions, "observe_sessions"),
        (Capability::ApproveElevation, "approve_elevation"),
        (Capability::Administer, "administer"),
        (Capability::Audit, "audit"),
    ]
    .into_iter()
    .filter(|(c, _)| auth.allows(*c))
    .map(|(_, n)| n)
    .collect();
    Json(
        json!({ "user": UserView::from(&auth.user), "capabilities": capabilities, "session_expires": auth.claims.exp, "token_ttl_s": state.identity.settings.tokens.ttl_s }),
    )
}
pub(super) async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Response> {
    state.identity.logout(&auth, Some(peer.ip())).await?;
    // A directory account's browser goes on to the provider, whose session would otherwise sign
    // the next person at this browser straight back in as far as the passkey step.
    let provider_logout =
        auth.user.directory.as_ref().and_then(|link| state.sso.as_ref()?.end_session_url(&link.provider));
    let mut response = match provider_logout {
        Some(url) => Json(json!({ "continue_at": url.as_str() })).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    };
    response.headers_mut().append(header::SET_COOKIE, clear_cookie());
    Ok(response)
}
/// Called by the viewer while its user is active: renews the token (the middleware has already
/// recorded the activity).
/// The browser renews on a schedule derived from these two (`core::renewal`). When this request
/// renewed the token, the expiry is still the old one's: the browser then asks again sooner,
/// never later.
pub(super) async fn refresh(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> Json<serde_json::Value> {
    Json(json!({ "session_expires": auth.claims.exp, "token_ttl_s": state.identity.settings.tokens.ttl_s }))
}
/// The person's own sessions (ASVS 7.5.2).
pub(super) async fn own_sessions(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({ "sessions": state.identity.own_sessions(&auth).await? })))
}

pub(super) async fn end_own_session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let ended = state.identity.end_own_sessions(&auth, Some(&id), Some(peer.ip())).await?;
    Ok(Json(json!({ "ended": ended })))
}

pub(super) async fn end_other_sessions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    let ended = state.identity.end_own_sessions(&auth, None, Some(peer.ip())).await?;
    Ok(Json(json!({ "ended": ended })))
}

pub(super) async fn step_up_start(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_step_up(&auth).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}
pub(super) async fn step_up_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Finish>,
) -> ApiResult<StatusCode> {
    state.identity.finish_step_up(&auth, &body.ceremony_id, &body.credential, peer.ip()).await?;
    Ok(StatusCode::NO_CONTENT)
}
