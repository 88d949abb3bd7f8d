//! Running the service: users and invitations, role changes under separation of duties, session
//! revocation, locks, devices and their maintenance windows, agent tokens.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use sightline_core::roles::{Capability, Role, RoleChange};
use sightline_identity::{AuthUser, require};

use super::account::UserView;
use super::error::ApiResult;
use crate::state::AppState;

// ---------------------------------------------------------------- admin

pub(super) async fn users(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<UserView>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.identity.users().await?.iter().map(UserView::from).collect()))
}
#[derive(Deserialize)]
pub(super) struct Invite {
    name: String,
    role: Role,
}
pub(super) async fn invite(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Invite>,
) -> ApiResult<Json<serde_json::Value>> {
    let link = state.identity.invite(&auth, &body.name, body.role, Some(peer.ip())).await?;
    Ok(Json(json!({ "link": link })))
}
pub(super) async fn role_requests(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(serde_json::to_value(state.identity.role_requests().await?).unwrap_or_default()))
}
#[derive(Deserialize)]
pub(super) struct RoleChangeBody {
    user_id: String,
    change: RoleChange,
}
pub(super) async fn request_role_change(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<RoleChangeBody>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let request = state.identity.request_role_change(&auth, &body.user_id, body.change, Some(peer.ip())).await?;
    Ok(Json(serde_json::to_value(request).unwrap_or_default()))
}
pub(super) async fn approve(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_role_request(&auth, &id, true, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn refuse(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_role_request(&auth, &id, false, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn revoke_sessions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.revoke_sessions(&auth, &id, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn locks(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let locks: Vec<serde_json::Value> = state
        .identity
        .locked_subjects()
        .await?
        .into_iter()
        .map(|(key, a)| json!({ "key": key, "failures": a.failures, "last_failure_ms": a.last_failure_ms }))
        .collect();
    Ok(Json(json!(locks)))
}
#[derive(Deserialize)]
pub(super) struct Unlock {
    key: String,
}
pub(super) async fn unlock(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Unlock>,
) -> ApiResult<StatusCode> {
    state.identity.unlock(&auth, &body.key, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn devices(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(serde_json::to_value(state.identity.devices().await?).unwrap_or_default()))
}
pub(super) async fn revoke_device(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require(&auth, Capability::Administer)?;
    state.identity.revoke_device(&auth.user.name, &id, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
#[derive(Deserialize)]
pub(super) struct WindowBody {
    /// Unix milliseconds.
    start_ms: u64,
    end_ms: u64,
}
pub(super) async fn open_window(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
    Json(body): Json<WindowBody>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let window = state.identity.open_window(&id, body.start_ms, body.end_ms, &auth.user.name, Some(peer.ip())).await?;
    Ok(Json(serde_json::to_value(window).unwrap_or_default()))
}
pub(super) async fn close_window(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let closed = state.identity.close_windows(&id, &auth.user.name, Some(peer.ip())).await?;
    Ok(Json(json!({ "closed": closed })))
}
#[derive(Deserialize)]
pub(super) struct AgentToken {
    segment: String,
}
pub(super) async fn agent_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<AgentToken>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let token = state.identity.create_agent_token(&auth.user.name, &body.segment, Some(peer.ip())).await?;
    Ok(Json(json!({ "token": token })))
}
