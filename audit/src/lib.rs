//! Sightline's evidence log: what happened, on disk before it is acknowledged, provable to an
//! auditor who trusts only a node's public key (R38-R41).
//!
//! Owns the security event vocabulary and its sink interface (`events`), the node's
//! tamper-evident log ([`AuditLog`]: writer, files, checkpoints, search with proofs), the
//! auditor's commands over copies of logs (`commands`: verify, prove, consistency, export, CEF),
//! the CLI's way into a running relay's log (`CliSink`, the ingest socket), and SIEM forwarding
//! (`siem`). The Merkle tree, record and proof formats are pure and live in `sightline_core::audit`.
//! Refuses to know: HTTP, the relay's store, identities and sessions (events carry their facts
//! as plain values). Needs a tokio runtime only for the ingest socket and the SIEM forwarders;
//! the log's writer is a thread of its own.
//!
//! Layout of the audit directory (by default `<data dir>/audit`):
//! - `log.jsonl`: one canonical record per line (`sightline_core::audit::Record`), append-only;
//! - `checkpoints.jsonl`: signed checkpoints (C2SP signed notes), one JSON string per line;
//! - `audit.key`: the node's Ed25519 seed (hex, mode 0600); `audit.pub`: its signed-note verifier
//!   key, what auditors are given;
//! - `lock`: held (flock) by the one process writing the log;
//! - `ingest.sock`: where CLI commands hand their events to a running relay.
//!
//! One writer thread does all file IO: it takes every event queued since its last write, appends
//! them in one write, syncs (group commit), and only then reports them committed; callers that
//! acknowledge an action wait for that ([`AuditLog::committed`]). When the log cannot be written
//! the writer keeps the events, reports the failure (security actions are refused meanwhile) and
//! retries; nothing acknowledged is ever lost. The human log (tracing) is separate: no filter or
//! setting turns this one off.
//!
//! Each record is canonical JSON, numbered, named with its node, chained to the previous record's
//! leaf hash, and a leaf of an RFC 6962 Merkle tree. A checkpoint (a C2SP signed note, signed
//! with `audit.key`) is signed after `checkpoint_records` records, or `checkpoint_interval` after
//! the first record none covers, and at shutdown. `open` verifies the whole log before appending:
//! a log that does not verify stops the relay (it is evidence, kept as it is), a torn last record
//! (never acknowledged) is cut off, and a node never re-keys another node's log.
//!
//! What waits for `committed`: no login cookie, enrolment, step-up, role change, unlock or agent
//! token is handed out (`Identity::audit_committed`), no endpoint is asked for consent and no
//! media flows after consent, before its event is on disk. While `available` fails, the relay
//! refuses logins and session requests (`audit_unavailable`, explained only by
//! `AuditUnavailable::PUBLIC`), ends running sessions and answers `/readyz` with 503.

mod cli_sink;
mod files;
mod ingest;
mod query;
mod writer;

pub mod cef;
pub mod commands;
pub mod events;
pub mod receipts;
pub mod siem;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::events::Event;
use sightline_core::audit::{AuditError, Checkpoint, ConsistencyProof};

pub use cli_sink::CliSink;
pub use files::{AuditFiles, LOG_FILE, OpenError, PUBLIC_KEY_FILE};
pub use ingest::{forward_to_running_relay, serve as serve_ingest};
pub use query::{AuditPage, Folded, PageRequest, ProvedRecord};

/// How the audit log is kept.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub dir: PathBuf,
    /// This node's name: in every record, and the checkpoints' origin.
    pub node: String,
    /// A checkpoint is signed after this many records...
    pub checkpoint_records: u64,
    /// ...or this long after the first record it does not cover yet.
    pub checkpoint_interval: Duration,
}

/// Why a security action cannot be recorded (and so does not happen).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit log cannot be written ({0}); security actions are refused until it can")]
pub struct AuditUnavailable(pub String);

impl AuditUnavailable {
    /// What clients are told: the cause (a path, an OS error) stays in the relay's own log, where
    /// the writer reports it; callers of the relay learn only that security actions are refused.
    pub const PUBLIC: &'static str = "the audit log cannot be written; security actions are refused until it can";
}

/// Why this log is not the one the node published a checkpoint of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishedMismatch {
    #[error("the published checkpoint does not open with this node's key: {0}")]
    NotThisNode(String),
    #[error(
        "the log holds {local} records, but the node published a checkpoint of {published} (root {root}): records were cut off the log"
    )]
    Shorter { local: u64, published: u64, root: String },
    #[error(
        "the log's first {size} records have root {local}, but the node published root {published} for them: records were rewritten"
    )]
    Rewritten { size: u64, local: String, published: String },
}

/// A second place, failure-independent of this node's disk, where every record is durable
/// before anything it records is acknowledged (R43): with it, losing the node's disk loses no
/// acknowledged record (`relay audit recover`). The writer thread calls it after each group
/// commit; while it fails, the log counts as unwritable (security actions are refused) and the
/// records wait, on disk, for the next try.
pub trait Replica: Send + 'static {
    /// Where it is (for the node's log and `node.started`).
    fn describe(&self) -> String;
    /// The sequence number of the newest record it holds, if any (an error if it does not hold
    /// every record up to it).
    fn last_seq(&mut self) -> Result<Option<u64>, String>;
    /// The record it holds under `seq`, as written.
    fn record(&mut self, seq: u64) -> Result<Option<Vec<u8>>, String>;
    /// Makes `records` (canonical lines without newline, consecutive from `first_seq`) durable;
    /// records it already holds are skipped, so a retry after a lost answer is harmless.
    fn append(&mut self, first_seq: u64, records: &[Vec<u8>]) -> Result<(), String>;
}

/// What the writer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Events of this process that are on disk (and in the second copy, where there is one).
    pub committed: u64,
    /// Records in the log.
    pub size: u64,
    /// Size of the newest checkpoint.
    pub checkpointed: u64,
    /// Why the log cannot be written now, if it cannot.
    pub failure: Option<String>,
    /// Events of this process that are on this node's disk, whether or not the copy holds them.
    pub on_disk: u64,
    /// The failure is the second copy's alone: the disk takes records (break-glass may then
    /// acknowledge on the disk alone, `AuditLog::acknowledge_on_disk_alone`).
    pub copy_failing: bool,
}

impl Progress {
    /// How many events count as acknowledged, and the failure that refuses the rest, when
    /// `disk_alone` lets the disk alone acknowledge while only the copy fails.
    fn acknowledged(&self, disk_alone: bool) -> (u64, Option<&str>) {
        match &self.failure {
            Some(_) if disk_alone && self.copy_failing => (self.on_disk, None),
            Some(why) => (self.committed, Some(why)),
            None => (self.committed, None),
        }
    }
}

enum Command {
    Event(Box<Event>),
    Shutdown,
}

/// The running audit log of this node.
pub struct AuditLog {
    queue: std::sync::mpsc::Sender<Command>,
    /// Events handed to the writer by this process.
    accepted: AtomicU64,
    progress: watch::Receiver<Progress>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    node: String,
    verifier_key: String,
    dir: PathBuf,
    /// The writer's tree and record offsets, for proofs served to the dashboard.
    index: std::sync::Arc<std::sync::RwLock<files::Index>>,
    /// Whether records on this node's disk are acknowledged while the second copy cannot take
    /// them (break-glass, R43).
    disk_alone: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("node", &self.node).field("progress", &*self.progress.borrow()).finish()
    }
}

impl AuditLog {
    /// Opens (or creates) the log, verifies what is there, and starts the writer.
    pub fn open(settings: &AuditSettings) -> Result<AuditLog, OpenError> {
        AuditLog::open_as_published(settings, None)
    }

    /// Opens the log as `open` does, and first checks it against the newest checkpoint this node
    /// published where it cannot take it back (the shared store): the log must hold at least as
    /// many records, and the same ones. A log or checkpoint file cut back or rewritten since is
    /// refused before anything is written or signed, naming the difference.
    pub fn open_as_published(settings: &AuditSettings, published: Option<&str>) -> Result<AuditLog, OpenError> {
        AuditLog::open_replicated(settings, published, None)
    }

    /// Opens the log as `open_as_published` does, with every record also made durable in
    /// `replica` before it counts as committed (R43).
    pub fn open_replicated(
        settings: &AuditSettings,
        published: Option<&str>,
        replica: Option<Box<dyn Replica>>,
    ) -> Result<AuditLog, OpenError> {
        let files = AuditFiles::open(settings)?;
        if let Some(note) = published {
            let index = files.index();
            let index = index.read().unwrap_or_else(|e| e.into_inner());
            check_published(&index.tree, files.verifier_key(), note)
                .map_err(|why| OpenError::NotAsPublished { dir: settings.dir.clone(), why })?;
        }
        let mut replica = replica;
        if let Some(copy) = replica.as_mut() {
            // A copy that holds more than the disk: records were lost from the disk (a node
            // restored from an old backup, or started on a new one under the old name). Writing
            // on would give the copy and the log different records under the same numbers.
            // (A copy that cannot be asked now is asked again by the writer before it copies.)
            if let Ok(Some(last)) = copy.last_seq()
                && last >= files.size()
            {
                return Err(OpenError::CopyAhead {
                    dir: settings.dir.clone(),
                    copy: last.saturating_add(1),
                    log: files.size(),
                    at: copy.describe(),
                });
            }
        }
        let node = settings.node.clone();
        let verifier_key = files.verifier_key().to_owned();
        let size = files.size();
        let checkpointed = files.checkpointed();
        let index = files.index();
        let (progress_tx, progress) = watch::channel(Progress {
            committed: 0,
            size,
            checkpointed,
            failure: None,
            on_disk: 0,
            copy_failing: false,
        });
        let (queue, rx) = std::sync::mpsc::channel();
        let writer = writer::spawn(files, settings.clone(), rx, progress_tx, replica)?;
        Ok(AuditLog {
            queue,
            accepted: AtomicU64::new(0),
            progress,
            writer: Mutex::new(Some(writer)),
            node,
            verifier_key,
            dir: settings.dir.clone(),
            index,
            disk_alone: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The newest records matching `filter` on the page asked for, each with its inclusion proof
    /// against the newest checkpoint. Blocking file IO: call from a blocking task.
    pub fn search(&self, filter: &commands::Filter, page: &PageRequest) -> anyhow::Result<AuditPage> {
        query::search(&self.dir, &self.node, &self.verifier_key, &self.index, filter, page)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The signed-note verifier key of this node's checkpoints.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The newest checkpoint this node signed (its note), if any.
    pub fn newest_checkpoint(&self) -> Option<String> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).checkpoint.as_ref().map(|(_, note)| note.clone())
    }

    /// The consistency proof from `old`, a checkpoint this node signed (its note), to the newest
    /// one it signed: what it publishes beside each new checkpoint, so that other nodes hold it
    /// to an extension of what they saw (`sightline_core::witness`). `None` when nothing newer
    /// was signed.
    pub fn consistency_from(&self, old: &str) -> Result<Option<ConsistencyProof>, AuditError> {
        let from = Checkpoint::open(old, &self.verifier_key)?;
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let Some((size, note)) = index.checkpoint.clone() else { return Ok(None) };
        if size <= from.size {
            return Ok(None);
        }
        let hashes = if from.size == 0 { Vec::new() } else { index.tree.consistency_proof(from.size, size)? };
        Ok(Some(ConsistencyProof::new(old.to_owned(), note, &hashes)))
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Events of this process queued so far (`progress().committed` of them are durable).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Queues an event; the writer makes it durable in its next group commit.
    pub fn append(&self, event: Event) {
        // The human log sees every event too, but only as a copy: filtering it changes nothing here.
        tracing::info!(target: "sightline::audit", kind = %event.kind.name(), actor = %event.actor, outcome = ?event.outcome, "audit event");
        self.accepted.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(Command::Event(Box::new(event))).is_err() {
            tracing::error!("audit writer is gone; event not recorded");
        }
    }

    /// While `on` and the second copy fails, an event is acknowledged once it is on this node's
    /// disk (the copy gets it when it is back). Only break-glass turns it on (R43), and only
    /// while the store itself does not answer: a person is in who must leave evidence, and every
    /// other action needs the store anyway.
    pub fn acknowledge_on_disk_alone(&self, on: bool) {
        if self.disk_alone.swap(on, Ordering::SeqCst) != on {
            tracing::warn!(on, "audit log: records acknowledged on this node's disk alone (break-glass)");
        }
    }

    /// Whether security actions may proceed now.
    pub fn available(&self) -> Result<(), AuditUnavailable> {
        let disk_alone = self.disk_alone.load(Ordering::SeqCst);
        match self.progress.borrow().acknowledged(disk_alone).1 {
            Some(why) => Err(AuditUnavailable(why.to_owned())),
            None if self.writer.lock().unwrap_or_else(|e| e.into_inner()).is_none() => {
                Err(AuditUnavailable("the audit log is closed".into()))
            }
            None => Ok(()),
        }
    }

    /// Waits until every event appended before this call is on disk. Fails at once while the
    /// log cannot be written: the action the event records must not be acknowledged.
    pub async fn committed(&self) -> Result<(), AuditUnavailable> {
        let target = self.accepted.load(Ordering::SeqCst);
        let mut progress = self.progress.clone();
        loop {
            {
                let now = progress.borrow_and_update();
                let (acknowledged, failure) = now.acknowledged(self.disk_alone.load(Ordering::SeqCst));
                if acknowledged >= target {
                    return Ok(());
                }
                if let Some(why) = failure {
                    return Err(AuditUnavailable(why.to_owned()));
                }
            }
            if progress.changed().await.is_err() {
                return Err(AuditUnavailable("the audit writer stopped".into()));
            }
        }
    }

    /// Follows the writer's progress (health, sizes).
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Writes what is queued, signs a final checkpoint and stops the writer.
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = self.queue.send(Command::Shutdown);
            if writer.join().is_err() {
                tracing::error!("audit writer panicked during shutdown");
            }
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl crate::events::EventSink for AuditLog {
    fn emit(&self, event: Event) {
        self.append(event);
    }

    fn committed(&self) -> crate::events::Commit<'_> {
        Box::pin(AuditLog::committed(self))
    }

    fn available(&self) -> Result<(), AuditUnavailable> {
        AuditLog::available(self)
    }
}

/// Checks `tree` against `note`, a checkpoint the node published: at least as many records, the
/// same root at the published size.
fn check_published(
    tree: &sightline_core::audit::Tree,
    verifier_key: &str,
    note: &str,
) -> Result<(), PublishedMismatch> {
    let published = sightline_core::audit::Checkpoint::open(note, verifier_key)
        .map_err(|e| PublishedMismatch::NotThisNode(e.to_string()))?;
    let local = tree.size();
    if local < published.size {
        return Err(PublishedMismatch::Shorter { local, published: published.size, root: published.root.to_string() });
    }
    if published.size > 0 {
        let root = tree.root(published.size).map_err(|e| PublishedMismatch::NotThisNode(e.to_string()))?;
        if root != published.root {
            return Err(PublishedMismatch::Rewritten {
                size: published.size,
                local: root.to_string(),
                published: published.root.to_string(),
            });
        }
    }
    Ok(())
}

/// The node's evidence key (audit checkpoints and recording manifests), from the audit
/// directory; created there with the directory on first use.
pub fn evidence_key(settings: &AuditSettings) -> Result<sightline_core::audit::AuditKey, OpenError> {
    std::fs::create_dir_all(&settings.dir)
        .map_err(|e| OpenError::Key { path: settings.dir.clone(), why: e.to_string() })?;
    files::load_or_create_key(&settings.dir, &settings.node)
}

/// The node whose log a directory holds (from the name of its checkpoint key), if any.
pub fn node_of_dir(dir: &std::path::Path) -> Option<String> {
    let key = std::fs::read_to_string(dir.join(files::PUBLIC_KEY_FILE)).ok()?;
    let name = key.trim().split_once('+')?.0;
    name.strip_prefix("sightline.audit/").filter(|n| valid_node_name(n)).map(str::to_owned)
}

/// Who acts from the command line, as the record names them: `cli:<account>(uid <n>)@<host>`. The
/// uid is the operating system's account of the process (an environment variable could claim any
/// name); the account name is what `/etc/passwd` calls that uid.
pub fn cli_actor() -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let account = uid
        .and_then(|uid| {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| "?".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let uid = uid.map_or_else(|| "?".to_owned(), |u| u.to_string());
    format!("cli:{account}(uid {uid})@{host}")
}

/// This machine's host name, the default node name.
pub fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| valid_node_name(h))
        .unwrap_or_else(|| "relay".to_owned())
}

/// Node names go into checkpoint origins and key names: letters, digits, `.`, `-`, `_`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

#[cfg(test)]
mod tests {
    /// The command line's actor is the process's OS account and host, read from the OS.
    #[test]
    fn the_command_line_is_named_by_its_uid_and_host() {
        use std::os::unix::fs::MetadataExt;
        let actor = super::cli_actor();
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let (who, at) = actor.strip_prefix("cli:").unwrap().rsplit_once('@').unwrap();
        assert_eq!(at, host.trim());
        assert!(who.ends_with(&format!("(uid {uid})")), "{actor}");
        assert!(!who.starts_with('?'), "the account of uid {uid} has a name in /etc/passwd: {actor}");
    }
}
