//! The writer thread: group commit, checkpoints on a cadence and at shutdown, failure and retry.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use sightline_core::audit::Record;
use tokio::sync::watch;

use super::files::AuditFiles;
use super::{AuditSettings, Command, Progress, Replica};
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
    replica: Option<Box<dyn Replica>>,
) -> Result<std::thread::JoinHandle<()>, super::OpenError> {
    let dir = files.dir().to_owned();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || run(files, settings, queue, progress, replica))
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
        break_glass: sightline_core::audit::break_glass_mark(&event.actor, event.session.as_ref()),
        prev: String::new(),
    }
}

/// Records sent to the second copy per call, so a long backlog (after an outage, or a copy that
/// lost its records) goes in calls that each finish well within the copy's timeout.
const COPY_CHUNK: usize = 1000;

/// The records on disk the second copy does not hold yet, and how many of them are this
/// process's events (acknowledged once the copy holds them).
struct Unreplicated {
    /// The first record the copy lacks.
    next: u64,
    /// Records from `next` on, when they are at hand (the batches just written); otherwise they
    /// are read from the disk, a chunk at a time.
    records: Vec<Vec<u8>>,
    events: u64,
    /// Ask the copy where it stands and take what it lacks from the disk (at start, and after
    /// any failure: the copy may have lost records, and the disk holds them anyway, so nothing
    /// piles up in memory during an outage).
    refill: bool,
    /// The copy holds another log than this disk: nothing is copied or acknowledged until the
    /// node is restarted on the right log (or the copy is dealt with).
    broken: Option<String>,
}

impl Unreplicated {
    /// Sends what waits; `Ok(events)` with the number of this process's events now held twice.
    fn flush(&mut self, replica: &mut dyn Replica, files: &AuditFiles) -> Result<u64, String> {
        if let Some(why) = &self.broken {
            return Err(why.clone());
        }
        if self.refill {
            self.records.clear();
            let held = match replica.last_seq()? {
                None => 0,
                Some(last) => last.checked_add(1).ok_or("the copy's newest record number is out of range")?,
            };
            let size = files.size();
            let differs = if held > size {
                Some(format!("the copy holds {held} records, more than the {size} on this disk"))
            } else if held > 0 {
                // Each record names the one before it (`prev`): the same last record means the
                // same log up to it.
                let ours = files.records_range(held - 1, 1).map_err(|e| format!("reading the log to copy it: {e}"))?;
                let theirs = replica.record(held - 1)?;
                (theirs.as_deref() != ours.first().map(Vec::as_slice))
                    .then(|| format!("the copy's record {} differs from this log's", held - 1))
            } else {
                None
            };
            if let Some(differs) = differs {
                let why = format!(
                    "{differs}: the copy ({}) holds another log of this node; rebuild this node's log with `relay audit recover`, or set the copy aside, before it writes again",
                    replica.describe()
                );
                self.broken = Some(why.clone());
                return Err(why);
            }
            (self.next, self.refill) = (held, false);
        }
        loop {
            if self.records.is_empty() {
                if self.next >= files.size() {
                    break;
                }
                match files.records_range(self.next, COPY_CHUNK) {
                    Ok(records) => self.records = records,
                    Err(e) => {
                        self.refill = true;
                        return Err(format!("reading the log to copy it: {e}"));
                    }
                }
            }
            let n = self.records.len().min(COPY_CHUNK);
            if let Err(e) = replica.append(self.next, &self.records[..n]) {
                (self.refill, self.records) = (true, Vec::new());
                return Err(e);
            }
            self.next += n as u64;
            self.records.drain(..n);
        }
        Ok(std::mem::take(&mut self.events))
    }
}

fn run(
    mut files: AuditFiles,
    settings: AuditSettings,
    queue: Receiver<Command>,
    progress: watch::Sender<Progress>,
    mut replica: Option<Box<dyn Replica>>,
) {
    if files.recovered_bytes > 0 {
        tracing::warn!(bytes = files.recovered_bytes, "audit log: cut off an incomplete last record left by a crash");
    }
    // What a previous run wrote to disk and could not copy (it was killed in between) is sent
    // first, so the copy has no hole.
    let mut unreplicated =
        Unreplicated { next: files.size(), records: Vec::new(), events: 0, refill: true, broken: None };
    // Events taken off the queue and not yet on disk, in order.
    let mut pending: Vec<Record> = Vec::new();
    let mut stopping = false;
    // When the oldest record not covered by a checkpoint was written.
    let mut uncovered_since: Option<Instant> = (files.size() > files.checkpointed()).then(Instant::now);
    // When the second copy last failed: it is tried again at most every RETRY_AFTER, so records
    // that the disk alone acknowledges (break-glass) wait on a copy that hangs only during a
    // retry (up to the copy's timeout), not at every batch.
    let mut copy_failed_at: Option<Instant> = None;
    loop {
        let (failing, copy_failing) = {
            let p = progress.borrow();
            (p.failure.is_some(), p.copy_failing)
        };
        if failing && !copy_failing && !stopping {
            // Give the disk a moment; events keep queueing and their callers are answered
            // (refused) from the failure already reported.
            std::thread::sleep(RETRY_AFTER);
        }
        if pending.is_empty() && !stopping {
            let wait = match uncovered_since {
                Some(t) => settings.checkpoint_interval.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            // A failing copy is tried again without waiting for the next event.
            let wait = if copy_failing { wait.min(RETRY_AFTER) } else { wait };
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
                Ok(written) => {
                    pending.clear();
                    uncovered_since.get_or_insert_with(Instant::now);
                    let n = written.len() as u64;
                    if replica.is_some() {
                        // While refilling, the records are taken from the disk instead.
                        if !unreplicated.refill {
                            unreplicated.records.extend(written);
                        }
                        unreplicated.events += n;
                        progress.send_modify(|p| {
                            p.on_disk += n;
                            p.size = files.size();
                        });
                    } else {
                        progress.send_modify(|p| {
                            p.committed += n;
                            p.on_disk += n;
                            p.size = files.size();
                            if p.failure.take().is_some() {
                                tracing::warn!("audit log writable again");
                            }
                        });
                    }
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
        let copy_due = copy_failed_at.is_none_or(|t| t.elapsed() >= RETRY_AFTER) || stopping;
        if let Some(replica) = replica.as_mut().filter(|_| copy_due) {
            match unreplicated.flush(replica.as_mut(), &files) {
                Ok(n) => {
                    copy_failed_at = None;
                    progress.send_if_modified(|p| {
                        let recovered = p.failure.take().is_some();
                        if recovered {
                            tracing::warn!("audit log writable again, second copy included");
                        }
                        p.copy_failing = false;
                        p.committed += n;
                        recovered || n > 0
                    });
                }
                Err(e) => {
                    copy_failed_at = Some(Instant::now());
                    report_copy_failure(&progress, format!("copying to {}: {e}", replica.describe()));
                    if stopping {
                        tracing::error!(
                            from = unreplicated.next,
                            events = unreplicated.events,
                            "relay stopping with audit records the second copy lacks"
                        );
                        return;
                    }
                }
            };
        }
        // No checkpoint past what the copy holds: `relay audit recover` proves the copy against
        // the newest published one. It is signed once the copy is back.
        if copy_failed_at.is_some() && !stopping {
            continue;
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
    report(progress, why, false);
}

/// The disk took the records; only the second copy did not.
fn report_copy_failure(progress: &watch::Sender<Progress>, why: String) {
    report(progress, why, true);
}

fn report(progress: &watch::Sender<Progress>, why: String, copy_only: bool) {
    progress.send_if_modified(|p| {
        if p.failure.as_deref() == Some(why.as_str()) && p.copy_failing == copy_only {
            return false;
        }
        tracing::error!(%why, "audit log cannot be written: security actions are refused");
        p.failure = Some(why.clone());
        p.copy_failing = copy_only;
        true
    });
}
