//! The audit page's records, each with its inclusion proof (R39): the browser verifies them.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::{Extension, Json};
use serde::Deserialize;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::{AuthUser, IdentityError};

use super::access::AUDIT_LOG;
use super::error::ApiResult;
use super::recordings::time;
use crate::state::AppState;

/// Filters of the audit page (all optional; times RFC 3339 or Unix ms).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    kind: Option<String>,
    session: Option<String>,
    ticket: Option<String>,
    operator: Option<String>,
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// The next page of an earlier answer (its `next_before`).
    before: Option<u64>,
    /// A kind counted per session instead of listed (`recording.chunk`).
    fold: Option<String>,
}
/// The newest audit records that match, each with its inclusion proof against the newest signed
/// checkpoint: the browser verifies them itself. Reading the log is itself an event.
pub(super) async fn records(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<sightline_audit::AuditPage>> {
    if !AUDIT_LOG.iter().any(|c| auth.allows(*c)) {
        return Err(IdentityError::Forbidden("your roles do not allow reading the audit log".into()).into());
    }
    let Some(audit) = state.audit.clone() else {
        return Err(IdentityError::NotFound.into());
    };
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filter = sightline_audit::commands::Filter {
        from_ms: time(&q.from)?,
        to_ms: time(&q.to)?,
        session: nonempty(q.session),
        ticket: nonempty(q.ticket),
        operator: nonempty(q.operator),
        device: nonempty(q.device),
        kind: nonempty(q.kind),
    };
    let page = sightline_audit::PageRequest {
        limit: q.limit.unwrap_or(200).clamp(1, 500),
        before: q.before,
        fold: nonempty(q.fold),
    };
    state.identity.emit(
        EventKind::AuditViewed,
        Outcome::Success,
        &auth.user.name,
        None,
        Some(peer.ip()),
        format!("searched {filter}"),
    );
    state.identity.audit_committed().await?;
    let page = tokio::task::spawn_blocking(move || audit.search(&filter, &page))
        .await
        .map_err(|e| IdentityError::BadRequest(format!("search failed: {e}")))?
        .map_err(|e| IdentityError::BadRequest(format!("search failed: {e:#}")))?;
    Ok(Json(page))
}
