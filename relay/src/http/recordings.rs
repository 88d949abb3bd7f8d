//! The recordings' HTTP edge (R29, R30, R14): search by metadata for auditors (and operators,
//! who see only their own sessions' metadata), and, for auditors after a passkey step-up, the
//! verified recording: its report and timeline, and its video. Every view is an audit event,
//! on disk before anything is served. No route edits or deletes a recording.
//!
//! `GET /api/recordings` searches the recordings index (every node's recordings where the nodes
//! share Redis) by ticket, operator, device, endpoint account and start time, newest first.
//! `GET /api/recordings/{id}` (report and timeline) and `.../video` (the WebM) verify the
//! recording on each request; recordings stay on the node that made them, and a node asked for
//! another node's answers 409 naming the node that holds it. Deletion is the retention job's
//! alone (`sightline_recording::retention`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sightline_core::recording::{RecordingReport, Verified};
use sightline_core::roles::Capability;

use super::error::ApiError;
use crate::state::AppState;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::{AuthUser, IdentityError};
use sightline_recording::commands::{self, Listed};

/// Search fields (R30): each narrows the result; times are RFC 3339 or Unix ms.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    pub ticket: Option<String>,
    pub operator: Option<String>,
    /// Device name or id.
    pub device: Option<String>,
    /// The endpoint's account.
    pub user: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Most results one search returns (newest first).
const MAX_RESULTS: usize = 200;

/// An optional search time (RFC 3339 or Unix ms); blank counts as absent.
pub(crate) fn time(t: &Option<String>) -> Result<Option<u64>, IdentityError> {
    t.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| sightline_audit::commands::parse_time(t).map_err(|e| IdentityError::BadRequest(e.to_string())))
        .transpose()
}

/// Whether `found` matches `wanted` (absent or blank: anything), ignoring case.
fn matches(wanted: &Option<String>, found: &[&str]) -> bool {
    match wanted.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => true,
        Some(w) => found.iter().any(|f| f.eq_ignore_ascii_case(w)),
    }
}

/// `GET /api/recordings`: metadata of the recordings matching the search. Auditors see all;
/// operators only their own sessions'.
pub async fn search(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    Query(q): Query<Search>,
) -> Result<Json<Vec<Listed>>, ApiError> {
    let all = auth.allows(Capability::Audit);
    if !all && !auth.allows(Capability::ViewSessions) {
        return Err(IdentityError::Forbidden("your roles do not allow seeing recordings".into()).into());
    }
    let (from, to) = (time(&q.from)?, time(&q.to)?);
    // Every node's recordings: the index lives in the store the nodes share.
    let mut listed = state.recordings.indexed().await.map_err(IdentityError::from)?;
    listed.sort_by_key(|l| l.started_ms);
    let mut hits: Vec<Listed> = listed
        .into_iter()
        .filter(|r| all || r.operator == auth.user.name)
        .filter(|r| matches(&q.ticket, &[&r.ticket]))
        .filter(|r| matches(&q.operator, &[&r.operator]))
        .filter(|r| matches(&q.device, &[&r.device, &r.device_id]))
        .filter(|r| matches(&q.user, &[&r.endpoint_user]))
        .filter(|r| from.is_none_or(|f| r.started_ms >= f) && to.is_none_or(|t| r.started_ms < t))
        .collect();
    hits.reverse();
    hits.truncate(MAX_RESULTS);
    Ok(Json(hits))
}

/// A recording as the auditor's player gets it.
#[derive(Debug, Serialize)]
pub struct Opened {
    pub report: RecordingReport,
    /// The timeline, each entry with its place in the video (`video_ms`).
    pub timeline: Vec<serde_json::Value>,
}

/// Only hex ids name recordings: nothing else reaches the file system.
fn checked_id(id: &str) -> Result<&str, IdentityError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdentityError::NotFound);
    }
    Ok(id)
}

/// Verifies a recording for an auditor who stepped up, and records that they viewed it.
async fn view(state: &AppState, auth: &AuthUser, peer: SocketAddr, id: &str, what: &str) -> Result<Verified, ApiError> {
    if !auth.allows(Capability::Audit) {
        return Err(IdentityError::Forbidden("only auditors view recordings".into()).into());
    }
    // Whether it exists is no secret to an auditor (the search shows it); its contents need the step-up.
    let id = checked_id(id)?.to_owned();
    let recordings = state.recordings.clone();
    let dir = recordings.dir_of(&id);
    if !dir.join(sightline_recording::files::MANIFEST).is_file() {
        // Recordings stay on the node that made them; the index says which one.
        let elsewhere = recordings.indexed().await.map_err(IdentityError::from)?.into_iter().find(|l| l.id == id);
        return Err(match elsewhere {
            Some(l) => {
                IdentityError::Conflict(format!("recording {id} is held by relay node {}: open it there", l.node))
            }
            None => IdentityError::NotFound,
        }
        .into());
    }
    state.identity.require_step_up(auth).await?;
    // The relay checks its own recordings with its own key (an auditor's tools pin theirs).
    let trusted = sightline_audit::commands::TrustedKeys::new([recordings.verifier_key.clone()]);
    let asked = id.clone();
    let verified = tokio::task::spawn_blocking(move || {
        commands::verify_stored(&dir, &asked, recordings.key(), &trusted, Default::default())
    })
    .await
    .map_err(|e| IdentityError::BadRequest(format!("verification failed: {e}")))?
    .map_err(|e| IdentityError::Conflict(format!("recording {id} does not verify: {e:#}")))?;
    state.identity.emit_session(
        EventKind::RecordingViewed,
        Outcome::Success,
        &auth.user.name,
        verified.report.session.clone(),
        Some(peer.ip()),
        format!("recording {id}: {what}"),
    );
    state.identity.audit_committed().await?;
    Ok(verified)
}

/// `GET /api/recordings/{id}`: the verification report and the timeline.
pub async fn open(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<Opened>, ApiError> {
    let verified = view(&state, &auth, peer, &id, "report and timeline").await?;
    let timeline = sightline_recording::webm::timeline_jsonl(&verified.chunks)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(Json(Opened { report: verified.report, timeline }))
}

/// `GET /api/recordings/{id}/video`: the screen as WebM.
pub async fn video(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let verified = view(&state, &auth, peer, &id, "video").await?;
    let webm = tokio::task::spawn_blocking(move || sightline_recording::webm::webm(&verified.chunks))
        .await
        .map_err(|e| IdentityError::BadRequest(format!("muxing failed: {e}")))?
        .map_err(|e| IdentityError::Conflict(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "video/webm"), (header::CACHE_CONTROL, "no-store")], webm).into_response())
}
