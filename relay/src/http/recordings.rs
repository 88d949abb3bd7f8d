//! The recordings' HTTP edge (R29, R30, R32, R14): search by metadata for auditors (and
//! operators, who see only their own sessions' metadata), and, for auditors after a passkey
//! step-up, the recording as the relay holds it: the signed manifest and the chunks encrypted to
//! the auditors' keys. The relay cannot read them; the auditor's browser decrypts them with the
//! auditor's identity and verifies everything against the key the auditor pinned. Opening a
//! recording is an audit event, on disk before anything is served. No route edits or deletes one.
//!
//! `GET /api/recordings` searches the recordings index (every node's recordings where the nodes
//! share Redis) by ticket, operator, device, endpoint account and start time, newest first.
//! `GET /api/recordings/{id}` (manifest and chunk list) and `.../chunks/{n}` (one encrypted
//! chunk): recordings stay on the node that made them; a node asked for another live node's asks
//! that node on the auditor's behalf (`carried`), which decides and records the view as its own,
//! and a recording whose node is not running is named with it (409). Deletion is the retention job's alone
//! (`sightline_recording::retention`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sightline_core::roles::Capability;

use super::carried::Carried;
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

/// A recording as the auditor's player gets it: what the relay has, which it cannot read.
/// The player decrypts the chunks with the auditor's own identity and verifies all of it in the
/// browser, against the key the auditor pinned.
#[derive(Debug, Serialize)]
pub struct Opened {
    pub id: String,
    /// The node that recorded it (whose key signed the manifest).
    pub node: String,
    /// The signed manifest, as stored.
    pub manifest: String,
    /// The chunk numbers stored (`GET .../chunks/{n}` serves each, encrypted).
    pub chunks: Vec<u64>,
}

/// Only hex ids name recordings: nothing else reaches the file system.
fn checked_id(id: &str) -> Result<&str, IdentityError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(IdentityError::NotFound);
    }
    Ok(id)
}

/// Where a recording an auditor asks for is.
enum Stored {
    /// On this node's disk, for an auditor who stepped up.
    Here(std::path::PathBuf),
    /// On the disk of another live node, which is asked on the auditor's behalf (R43).
    There(sightline_core::cluster::NodeRecord),
}

/// Where recording `id` is, for an auditor: here (after the step-up), on another live node
/// (which checks the step-up itself), or nowhere that can serve it now.
/// A request another node carried here is answered from this disk or refused, never carried on.
async fn stored(state: &AppState, auth: &AuthUser, id: &str, carried: bool) -> Result<Stored, ApiError> {
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
        let Some(listed) = elsewhere else { return Err(IdentityError::NotFound.into()) };
        if listed.node == state.cluster.me() || carried {
            return Err(IdentityError::Conflict(format!(
                "recording {id} is indexed for node {} but not on this node's disk",
                listed.node
            ))
            .into());
        }
        return match state.cluster.view().node(&listed.node) {
            Some(node) => Ok(Stored::There(node.clone())),
            None => Err(IdentityError::Conflict(format!(
                "recording {id} is held by relay node {}, which is not running: it can be opened when that node (or its disk) is back",
                listed.node
            ))
            .into()),
        };
    }
    state.identity.require_step_up(auth).await?;
    Ok(Stored::Here(dir))
}

/// `GET /api/recordings/{id}`: the signed manifest and the list of chunks, for an auditor who
/// stepped up; the opening is recorded (`recording.viewed`) before anything is served.
pub async fn open(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    carried: Option<Extension<Carried>>,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = match stored(&state, &auth, &id, carried.is_some()).await? {
        Stored::Here(dir) => dir,
        // The path asked for, as asked: the other node serves the same route.
        Stored::There(node) => return Ok(super::carried::fetch(&state, &auth, peer.ip(), &node, uri.path()).await),
    };
    let read = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let manifest = std::fs::read_to_string(dir.join(sightline_recording::files::MANIFEST))?;
            let chunks = sightline_recording::files::list_chunks(&dir)?;
            Ok::<_, std::io::Error>((manifest, chunks))
        })
    };
    let (manifest, chunks) = read
        .await
        .map_err(|e| IdentityError::BadRequest(format!("reading the recording failed: {e}")))?
        .map_err(|e| IdentityError::Conflict(format!("recording {id} cannot be read: {e}")))?;
    let listed = commands::listed(&manifest)
        .ok_or_else(|| IdentityError::Conflict(format!("recording {id} has no readable opening line")))?;
    let facts =
        listed.session.clone().ok_or_else(|| IdentityError::Conflict(format!("recording {id} names no session")))?;
    state.identity.emit_session(
        EventKind::RecordingViewed,
        Outcome::Success,
        &auth.user.name,
        facts,
        Some(peer.ip()),
        format!("recording {id}: manifest and encrypted chunks"),
    );
    state.identity.audit_committed().await?;
    Ok(Json(Opened { id, node: listed.node, manifest, chunks: chunks.into_iter().collect() }).into_response())
}

/// `GET /api/recordings/{id}/chunks/{n}`: one chunk as stored, encrypted to the auditors' keys
/// (the relay cannot read it), for an auditor who stepped up.
pub async fn chunk(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    carried: Option<Extension<Carried>>,
    uri: axum::http::Uri,
    Path((id, n)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    let dir = match stored(&state, &auth, &id, carried.is_some()).await? {
        Stored::Here(dir) => dir,
        // The path asked for, as asked: the other node serves the same route.
        Stored::There(node) => return Ok(super::carried::fetch(&state, &auth, peer.ip(), &node, uri.path()).await),
    };
    let path = sightline_recording::files::chunk_path(&dir, n);
    let sealed = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .map_err(|e| IdentityError::BadRequest(format!("reading the chunk failed: {e}")))?
        .map_err(|_| IdentityError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream"), (header::CACHE_CONTROL, "no-store")], sealed)
        .into_response())
}
