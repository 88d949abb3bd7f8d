//! Health for load balancers and orchestrators (R46): `/healthz` says the process answers
//! (liveness: restart it when it does not), `/readyz` whether this node can take sessions now
//! (readiness: send it no new work while it cannot). Anyone can ask either, so neither names a
//! reason, a path or a count; the failing part goes to the node's own log, once per change.
//!
//! Ready means: the audit log can be written (R41: nothing is acknowledged otherwise), the state
//! store answers within `PROBE_WITHIN` (sign-ins, sessions and the other nodes are there), and,
//! where the policy requires recording in any segment, the recordings directory takes a file and
//! its sync (R26: a recorded session cannot start otherwise). A node that is not ready still
//! serves what it can: a running session, and break-glass at its own address (docs/break-glass.md).
//!
//! Anyone can ask, so the checks run one at a time and their answer serves every caller for
//! `FRESH_FOR`: callers cannot make the probes overlap (and fail each other), nor pile up blocked
//! threads behind a hung disk (a probe that does not finish leaves the next callers waiting for
//! it, and they are answered "not ready" after `PROBE_WITHIN`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// How long each check may take: a balancer polls every second or two.
const PROBE_WITHIN: Duration = Duration::from_secs(1);
/// The prefix of the file the recordings check writes and removes.
const PROBE_FILE: &str = ".readiness-probe";
/// How long one answer serves every caller.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when this node can take sessions now, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    static LAST: tokio::sync::Mutex<Option<(Instant, bool)>> = tokio::sync::Mutex::const_new(None);
    let ready = match tokio::time::timeout(PROBE_WITHIN, LAST.lock()).await {
        // A probe still running (a hung disk) holds the lock: not ready.
        Err(_) => false,
        Ok(mut last) => match *last {
            Some((at, ready)) if at.elapsed() < FRESH_FOR => ready,
            _ => {
                let failing = failing_parts(&state).await;
                log_change(&failing);
                *last = Some((Instant::now(), failing.is_empty()));
                failing.is_empty()
            }
        },
    };
    if ready {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "not_ready" }))).into_response()
    }
}

/// What keeps this node from taking sessions, each part with its cause.
async fn failing_parts(state: &AppState) -> Vec<String> {
    let mut failing = Vec::new();
    if let Err(e) = state.identity.audit_available() {
        failing.push(format!("audit log: {e}"));
    }
    if let Err(e) = state.identity.store_reachable(PROBE_WITHIN).await {
        failing.push(format!("state store: {e}"));
    }
    if state.policy.segments.values().any(|s| s.terms.recording_required) {
        // One write at a time, even past its timeout: a hung disk holds one thread, not one per poll.
        static WRITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let dir = state.recordings.settings().dir.clone();
        if WRITING.swap(true, std::sync::atomic::Ordering::SeqCst) {
            failing.push("recordings directory: the previous test write has not finished".into());
            return failing;
        }
        let probe = tokio::task::spawn_blocking(move || {
            let written = write_probe(&dir);
            WRITING.store(false, std::sync::atomic::Ordering::SeqCst);
            written
        });
        match tokio::time::timeout(PROBE_WITHIN, probe).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failing.push(format!("recordings directory: {e}")),
            Ok(Err(e)) => failing.push(format!("recordings directory: the check failed: {e}")),
            Err(_) => failing.push(format!("recordings directory: no write within {} s", PROBE_WITHIN.as_secs())),
        }
    }
    failing
}

/// Writes, syncs and removes a small file in `dir`: what a recorder starting a session needs.
fn write_probe(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{PROBE_FILE}-{}", hex::encode(sightline_identity::random_bytes::<6>())));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"ready?\n")?;
    file.sync_all()?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The node's log says when readiness changes and why, not at every poll.
fn log_change(failing: &[String]) {
    static LAST: Mutex<Option<Vec<String>>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.as_deref() == Some(failing) {
        return;
    }
    if failing.is_empty() {
        tracing::info!("ready to take sessions");
    } else {
        tracing::warn!(failing = %failing.join("; "), "not ready to take sessions");
    }
    *last = Some(failing.to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recordings_probe_leaves_nothing_and_names_an_unwritable_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(write_probe(&file).is_err());
    }
}
