//! The writer thread: group commit, checkpoints on a cadence and at shutdown, failure and retry.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use sightline_core::audit::Record;
use tokio::sync::watch;

use super::files::AuditFiles;
use super::{AuditSettings, Command, Progress};
use crate::events::Event;

/// Most events written in one group commit.
const MAX_BATCH: usize = 4096;
/// How soon a failed write is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub(super) fn spawn(
    files: AuditFiles,
    settings: AuditSettings,
    queue: Receiver<Command>,
    progress: watch::Sender<Progress>,
) -> Result<std::thread::JoinHandle<()>, super::OpenError> {
    let dir = files.dir().to_owned();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || run(files, settings, queue, progress))
        .map_err(|source| super::OpenError::Io { path: dir, source })
}

/// The record of an event (sequence number, node and chain are set when it is written).
pub fn record_of(event: &Event) -> Record {
    Record {
        seq: 0,
        ts_ms: event.ts_ms,
        node: String::new(),
        kind: event.kind.name(),
        outcome: event.outcome,
        actor: event.actor.clone(),
        source: event.source.map(|ip| ip.to_string()),
        subject: event.subject.clone(),
        session: event.session.clone(),
        detail: event.detail.clone(),
        prev: String::new(),
    }
}

fn run(mut files: AuditFiles, settings: AuditSettings, queue: Receiver<Command>, progress: watch::Sender<Progress>) {
    if files.recovered_bytes > 0 {
        tracing::warn!(bytes = files.recovered_bytes, "audit log: cut off an incomplete last record left by a crash");
    }
    // Events taken off the queue and not yet on disk, in order.
    let mut pending: Vec<Record> = Vec::new();
    let mut stopping = false;
    // When the oldest record not covered by a checkpoint was written.
    let mut uncovered_since: Option<Instant> = (files.size() > files.checkpointed()).then(Instant::now);
    loop {
        let failing = progress.borrow().failure.is_some();
        if failing && !stopping {
            // Give the disk a moment; events keep queueing and their callers are answered
            // (refused) from the failure already reported.
            std::thread::sleep(RETRY_AFTER);
        }
        if pending.is_empty() && !stopping {
            let wait = match uncovered_since {
                Some(t) => settings.checkpoint_interval.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            match queue.recv_timeout(wait) {
                Ok(Command::Event(e)) => pending.push(record_of(&e)),
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        while !stopping && pending.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Command::Event(e)) => pending.push(record_of(&e)),
                Ok(Command::Shutdown) => stopping = true,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => stopping = true,
            }
        }
        if !pending.is_empty() {
            match files.append_batch(pending.iter().cloned()) {
                Ok(n) => {
                    pending.clear();
                    uncovered_since.get_or_insert_with(Instant::now);
                    progress.send_modify(|p| {
                        p.committed += n;
                        p.size = files.size();
                        if p.failure.take().is_some() {
                            tracing::warn!("audit log writable again");
                        }
                    });
                }
                Err(e) => {
                    let why = format!("writing {}: {e}", files.dir().join(super::files::LOG_FILE).display());
                    report_failure(&progress, why);
                    if stopping {
                        tracing::error!(events = pending.len(), "relay stopping with audit events it could not write");
                        return;
                    }
                    continue;
                }
            }
        }
        let due = uncovered_since.is_some_and(|t| t.elapsed() >= settings.checkpoint_interval)
            || files.size() - files.checkpointed() >= settings.checkpoint_records;
        if due || (stopping && files.size() > files.checkpointed()) {
            match files.checkpoint() {
                Ok(_) => {
                    uncovered_since = None;
                    progress.send_modify(|p| p.checkpointed = files.checkpointed());
                }
                Err(e) => {
                    let why = format!("signing a checkpoint into {}: {e}", files.dir().display());
                    report_failure(&progress, why);
                    if stopping {
                        return;
                    }
                    continue;
                }
            }
        }
        if stopping && pending.is_empty() {
            return;
        }
    }
}

fn report_failure(progress: &watch::Sender<Progress>, why: String) {
    progress.send_if_modified(|p| {
        if p.failure.as_deref() == Some(why.as_str()) {
            return false;
        }
        tracing::error!(%why, "audit log cannot be written: security actions are refused");
        p.failure = Some(why.clone());
        true
    });
}
