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
use crate::cluster::{CommandError, SessionAction};
use crate::state::AppState;

/// Sessions running on every live node (who, on what, under which ticket; never the screen: admins
/// do not view sessions).
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<sightline_proto::SessionSummary>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.cluster.view().sessions))
}

/// Carries an action on a session another node runs to that node (R43); `NotFound` when no live
/// node runs it.
async fn on_its_node(
    state: &AppState,
    id: &str,
    actor: &str,
    peer: SocketAddr,
    action: SessionAction,
) -> Result<(), IdentityError> {
    let view = state.cluster.view();
    let node = view.node_of_session(id).filter(|n| n.name != state.cluster.me()).ok_or(IdentityError::NotFound)?;
    state.cluster.ask(&node.name, id, actor, Some(peer.ip()), action).await.map_err(|e| match e {
        CommandError::Refused(why) => IdentityError::Conflict(why),
        e => IdentityError::Store(sightline_store::StoreError::Unavailable(e.to_string())),
    })
}
/// Ends a session at once (R22); recorded with the admin's name.
pub(super) async fn kill(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    match state.hub.session(&id) {
        Some(session) => {
            session.note_address(&auth.user.name, peer.ip());
            session.kill(&auth.user.name);
        }
        None => on_its_node(&state, &id, &auth.user.name, peer, SessionAction::Kill).await?,
    }
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
    let Some(session) = state.hub.session(&id).filter(|s| !s.is_ended()) else {
        // Another node runs it: checked here on its summary, applied there (R43).
        let view = state.cluster.view();
        let summary = view.sessions.iter().find(|s| s.session_id == id).ok_or(IdentityError::NotFound)?;
        if summary.operator == auth.user.name {
            return Err(IdentityError::Forbidden("the operator cannot approve their own elevation".into()).into());
        }
        if !auth.user.reaches(&summary.segment) {
            return Err(
                IdentityError::Forbidden("your directory groups do not reach this session's segment".into()).into()
            );
        }
        state.identity.require_step_up(&auth).await?;
        on_its_node(&state, &id, &auth.user.name, peer, SessionAction::Approve { levels: body.levels }).await?;
        return Ok(Json(json!({ "approved": id })));
    };
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
