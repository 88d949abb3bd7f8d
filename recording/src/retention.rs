//! The retention job (R31): the only thing that deletes recordings. A recording older than its
//! segment's `recording_retention_days` is deleted after its deletion is on disk in the audit
//! log (if the log cannot be written, nothing is deleted). A recording still being written is
//! never touched; segments without a retention keep theirs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sightline_core::policy::Policy;

use sightline_audit::events::{Event, EventKind, EventSink, Outcome};

use crate::Recordings;
use crate::commands::{Listed, list};

const DAY_MS: u64 = 24 * 3600 * 1000;

/// The recordings under `root` whose segment's retention has passed at `now_ms`, except `live` ones.
pub fn expired(root: &Path, policy: &Policy, live: &[String], now_ms: u64) -> anyhow::Result<Vec<(Listed, u32)>> {
    Ok(list(root)?
        .into_iter()
        .filter(|r| !live.contains(&r.id))
        .filter_map(|r| {
            let days = policy.segments.get(&r.segment)?.recording_retention_days?;
            (now_ms >= r.started_ms.saturating_add(u64::from(days) * DAY_MS)).then_some((r, days))
        })
        .collect())
}

/// Runs the job every `every` until the relay stops; its deletions go to `events`.
pub async fn run(recordings: Arc<Recordings>, policy: Arc<Policy>, events: Arc<dyn EventSink>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = run_once(&recordings, &policy, events.as_ref(), crate::now_ms()).await {
            tracing::error!(error = %e, "recording retention failed; will try again");
        }
    }
}

/// One pass at `now` (Unix ms): each expired recording's deletion is audited, then carried out.
pub async fn run_once(
    recordings: &Recordings,
    policy: &Policy,
    events: &dyn EventSink,
    now: u64,
) -> anyhow::Result<usize> {
    let root = recordings.settings().dir.clone();
    let live = recordings.live();
    let policy = policy.clone();
    let due = tokio::task::spawn_blocking(move || expired(&root, &policy, &live, now)).await??;
    let mut deleted = 0;
    for (recording, days) in due {
        events.emit(Event::of_session(
            crate::now_ms(),
            EventKind::RecordingDeleted,
            Outcome::Success,
            "system",
            recording
                .session
                .clone()
                .ok_or_else(|| anyhow::anyhow!("recording {} has no session facts", recording.id))?,
            None,
            format!(
                "recording {} of segment {} deleted by the retention job: older than {days} days",
                recording.id, recording.segment
            ),
        ));
        // Never delete what the log has not recorded as deleted.
        events.committed().await?;
        let dir = recordings.dir_of(&recording.id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await??;
        recordings.unindex(&recording.id).await?;
        deleted += 1;
    }
    Ok(deleted)
}
