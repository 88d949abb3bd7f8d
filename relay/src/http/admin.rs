//! Running the service: users and invitations, role changes, passkey resets and the directory's
//! role tables under separation of duties, session revocation, locks, devices (their maintenance windows, new keys), agent
//! tokens, approvals of commands on a node's host.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use sightline_core::roles::{Capability, Role, RoleChange};
use sightline_identity::{AuthUser, IdentityError, require};

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
    let expires_ms = state.identity.now_ms() + sightline_identity::INVITE_TTL_MS;
    Ok(Json(json!({ "link": link, "expires_ms": expires_ms })))
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
pub(super) async fn passkey_resets(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<sightline_identity::PasskeyResetRequest>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.identity.passkey_resets().await?))
}
#[derive(Deserialize)]
pub(super) struct PasskeyResetBody {
    user_id: String,
}
pub(super) async fn request_passkey_reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<PasskeyResetBody>,
) -> ApiResult<Json<sightline_identity::PasskeyResetRequest>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.identity.request_passkey_reset(&auth, &body.user_id, Some(peer.ip())).await?))
}
pub(super) async fn approve_passkey_reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_passkey_reset(&auth, &id, true, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn refuse_passkey_reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_passkey_reset(&auth, &id, false, Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
/// Each provider's role table in force, this node's ceiling for it, and the changes waiting.
pub(super) async fn role_mappings(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let Some(sso) = state.sso.as_deref() else { return Ok(Json(json!({ "tables": [], "requests": [] }))) };
    let tables: Vec<serde_json::Value> = state
        .identity
        .role_mappings()
        .await?
        .into_iter()
        .filter_map(|table| {
            let limits = sso.limits(&table.provider)?;
            let mut view = serde_json::to_value(&table).ok()?;
            view["admin_from_directory"] = limits.admin_allowed.into();
            view["known_segments"] = serde_json::to_value(&limits.known_segments).ok()?;
            Some(view)
        })
        .collect();
    Ok(Json(json!({ "tables": tables, "requests": state.identity.mapping_requests().await? })))
}
#[derive(Deserialize)]
pub(super) struct MappingChangeBody {
    provider: String,
    groups: std::collections::BTreeMap<String, Vec<Role>>,
    /// Groups to the segments they reach; absent or null: groups do not narrow the segments.
    #[serde(default)]
    segments: Option<std::collections::BTreeMap<String, Vec<String>>>,
}
pub(super) async fn request_mapping_change(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<MappingChangeBody>,
) -> ApiResult<Json<sightline_identity::MappingRequest>> {
    require(&auth, Capability::Administer)?;
    let limits = state.sso.as_deref().and_then(|sso| sso.limits(&body.provider)).ok_or(IdentityError::NotFound)?;
    let request = state
        .identity
        .request_mapping_change(&auth, &body.provider, body.groups, body.segments, &limits, Some(peer.ip()))
        .await?;
    Ok(Json(request))
}
async fn decide_mapping_change(
    state: AppState,
    peer: SocketAddr,
    auth: AuthUser,
    id: String,
    approve: bool,
) -> ApiResult<StatusCode> {
    let sso = state.sso.as_deref().ok_or(IdentityError::NotFound)?;
    state.identity.decide_mapping_change(&auth, &id, approve, |p| sso.limits(p), Some(peer.ip())).await?;
    Ok(StatusCode::NO_CONTENT)
}
pub(super) async fn approve_mapping_change(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    decide_mapping_change(state, peer, auth, id, true).await
}
pub(super) async fn refuse_mapping_change(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    decide_mapping_change(state, peer, auth, id, false).await
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
    let now = state.identity.now_ms();
    let mut rows = Vec::new();
    // Every live node's agents and sessions (R43).
    let cluster = state.cluster.view();
    for device in state.identity.devices().await? {
        let node = cluster.node_of_agent(&device.id).map(|n| n.name.clone());
        let in_session =
            cluster.sessions.iter().any(|s| s.agent_id == device.id && s.phase != sightline_proto::SessionPhase::Ended);
        let window_until_ms = state.identity.window_until(&device.id, now).await?;
        let mut row = serde_json::to_value(&device).unwrap_or_default();
        row["online"] = json!(node.is_some());
        row["node"] = json!(node);
        row["in_session"] = json!(in_session);
        row["window_until_ms"] = json!(window_until_ms);
        rows.push(row);
    }
    Ok(Json(serde_json::Value::Array(rows)))
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
    let expires_ms = state.identity.now_ms() + sightline_identity::AGENT_TOKEN_TTL_MS;
    Ok(Json(json!({ "token": token, "expires_ms": expires_ms })))
}
/// Invitations and agent tokens not yet used (never the tokens themselves).
pub(super) async fn pending(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<sightline_identity::PendingEnrolment>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.identity.pending_enrolments().await?))
}

/// A one-time token with which an enrolled device takes a new key (`agent enroll --token`), after
/// a step-up; the change itself is the device's `device.key_changed` record.
pub(super) async fn rekey_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let token = state.identity.create_rekey_token(&auth, &id, Some(peer.ip())).await?;
    let expires_ms = state.identity.now_ms() + sightline_identity::AGENT_TOKEN_TTL_MS;
    Ok(Json(json!({ "token": token, "expires_ms": expires_ms })))
}

#[derive(Deserialize)]
pub(super) struct CommandApprovalBody {
    command: String,
    target: String,
    reason: String,
    valid_minutes: u64,
}
/// An admin approves one command on a node's host (`sightline_core::command_approval`): after a
/// passkey step-up, the approval is written to the audit log (with the code's hash) before the
/// code is shown, once, to the admin alone.
pub(super) async fn approve_command(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<CommandApprovalBody>,
) -> ApiResult<Json<serde_json::Value>> {
    use sightline_audit::events::{EventKind, Outcome};
    use sightline_core::command_approval::{Approval, MAX_APPROVAL_MS, NodeCommand, digest};
    use sightline_identity::{IdentityError, random_bytes};
    require(&auth, Capability::Administer)?;
    let command = NodeCommand::parse(&body.command).ok_or_else(|| {
        let known: Vec<_> = NodeCommand::ALL.iter().map(|c| c.name()).collect();
        IdentityError::BadRequest(format!("unknown command {:?} (known: {})", body.command, known.join(", ")))
    })?;
    let printable = |s: &str, max: usize| !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control);
    let (target, reason) = (body.target.trim(), body.reason.trim());
    if !printable(target, 200) {
        return Err(IdentityError::BadRequest(
            "the target is required: a recording id, account:NAME or address:IP, or a segment (1-200 characters)"
                .into(),
        )
        .into());
    }
    if !printable(reason, 500) {
        return Err(IdentityError::BadRequest("a reason is required (1-500 characters)".into()).into());
    }
    let valid_ms = body.valid_minutes.saturating_mul(60_000);
    if valid_ms == 0 || valid_ms > MAX_APPROVAL_MS {
        return Err(IdentityError::BadRequest("an approval is valid for 1 minute to 24 hours".into()).into());
    }
    state.identity.require_step_up(&auth).await?;
    let code = hex::encode(random_bytes::<16>());
    let approval = Approval {
        id: format!("ap-{}", hex::encode(random_bytes::<6>())),
        command: command.name().to_owned(),
        target: target.to_owned(),
        reason: reason.to_owned(),
        expires_ms: state.identity.now_ms() + valid_ms,
        code_sha256: digest(&code),
    };
    state.identity.emit(
        EventKind::CommandApproved,
        Outcome::Success,
        &auth.user.name,
        Some(&format!("command:{} {target}", command.name())),
        Some(peer.ip()),
        serde_json::to_string(&approval).unwrap_or_default(),
    );
    // The code approves only what the log holds: no record, no code.
    state.identity.audit_committed().await?;
    // The code is good on this node only: its log holds the approval.
    let node = state.audit.as_ref().map(|a| a.node().to_owned());
    Ok(Json(json!({ "id": approval.id, "code": code, "expires_ms": approval.expires_ms, "node": node })))
}
