//! Live sessions from outside their sockets: the admin's list and kill (R22), and a senior
//! operator's approval of a pending elevation (R7, R14).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use sightline_core::roles::Capability;
use sightline_identity::{AuthUser, IdentityError, require};

use super::error::ApiResult;
use crate::state::AppState;

/// Sessions running on this node (who, on what, under which ticket; never the screen: admins
/// do not view sessions).
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<sightline_proto::SessionSummary>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.hub.sessions()))
}
/// Ends a session at once (R22); recorded with the admin's name.
pub(super) async fn kill(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let session = state.hub.session(&id).ok_or(IdentityError::NotFound)?;
    session.note_address(&auth.user.name, peer.ip());
    session.kill(&auth.user.name);
    Ok(Json(json!({ "ended": id })))
}
#[derive(Deserialize)]
pub(super) struct Approval {
    /// The levels the senior operator saw pending: the approval applies to exactly those.
    levels: Vec<sightline_proto::Level>,
}
/// A senior operator approves a pending elevation in a segment that requires it (R7), with a
/// fresh passkey step-up (R14). Nobody approves their own session's elevation.
pub(super) async fn approve_elevation(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<Approval>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::ApproveElevation)?;
    let session = state.hub.session(&id).filter(|s| !s.is_ended()).ok_or(IdentityError::NotFound)?;
    if session.request.operator.name == auth.user.name {
        return Err(IdentityError::Forbidden("the operator cannot approve their own elevation".into()).into());
    }
    if !auth.user.reaches(&session.link.info.segment) {
        return Err(IdentityError::Forbidden("your directory groups do not reach this session's segment".into()).into());
    }
    let levels = body.levels.into_iter().collect();
    let conflict = |e: crate::session::SessionError| IdentityError::Conflict(e.to_string());
    // Checked before the step-up so a stale approval costs the senior no passkey prompt; checked
    // again when it is applied.
    session.check_approval(&levels).map_err(conflict)?;
    state.identity.require_step_up(&auth).await?;
    session.note_address(&auth.user.name, peer.ip());
    session.approve(&auth.user.name, &levels).map_err(conflict)?;
    Ok(Json(json!({ "approved": id })))
}
