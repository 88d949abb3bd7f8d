//! Recordings (R26-R32): the live recorder of each session, the encrypted chunk files with
//! their signed manifest, the recordings index, retention, and the commands that verify and
//! export them.
//!
//! The evidence format and its verifier are `sightline_core::recording`; this crate is the IO
//! around it. Recordings are per node, in `--recordings-dir`; their chunks are encrypted to the
//! auditors' age X25519 recipients (`--recording-recipient`: public keys only, so the relay that
//! writes a recording cannot read it back, R32), and their manifests are signed with the node's
//! evidence key (the audit key, `audit.pub`), so one public key checks a node's log and its
//! recordings. Opening one takes an auditor's identity, in the auditor's own tool (`relay
//! recording verify|export --identity`) or browser.
//!
//! The agent vouches for what it sends: its publisher hashes every encoded frame of the `record`
//! track with its RTP timestamp and, at least once a second, sends a seal (a hash-chain link over
//! those frames, signed with the device key) on the session's data channel. The seals go into
//! the timeline, and verification (`commands`) checks every recorded frame against them.
//!
//! The recordings index (the store's `recordings` collection: shared by every node with Redis)
//! holds each recording's metadata from its opening line, whether it is complete, and the node
//! that holds it. The session writes its entry before the user is asked (a recording that cannot
//! be indexed is a session refused) and refreshes it when the recording closes; at start a node
//! puts what is on its disk into it (`Recordings::reconcile`). A relay killed mid-session leaves
//! every chunk written before the kill verifiable, and the recording marked incomplete.
//!
//! Refuses to know: HTTP (the relay's surface serves recordings to the auditor's player), the
//! session that is recorded (it hands the recorder packets and timeline entries), and where the
//! packets come from beyond `sightline_peer`'s RTP packet and VP8 frame assembly.

pub mod commands;
pub mod files;
pub mod recorder;
pub mod retention;
pub mod webm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sightline_core::recording::{ManifestBody, ManifestKey};
use tokio::sync::mpsc;

pub use recorder::{Recorder, RecorderNews};

/// Wall clock in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where and how this node records.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub dir: PathBuf,
    /// Who can open the recordings: the auditors' age X25519 recipients (and an escrow key kept
    /// offline, where the configuration says so). The relay holds no identity that decrypts.
    pub recipients: Vec<age::x25519::Recipient>,
    pub min_free_bytes: u64,
    pub chunk_every: Duration,
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("age identity {path}: {why}")]
    Identity { path: PathBuf, why: String },
    #[error("{0:?} is not an age X25519 recipient (age1...): {1}")]
    Recipient(String, String),
}

/// An auditor's age X25519 identity (`AGE-SECRET-KEY-1...`), from its file: what opens
/// recordings, in the auditor's own tools (never on the relay).
pub fn load_identity(path: &Path) -> Result<age::x25519::Identity, KeyError> {
    let bad = |why: String| KeyError::Identity { path: path.to_owned(), why };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| bad("no key in the file".into()))?;
    line.parse().map_err(|e: &str| bad(format!("not an age X25519 identity: {e}")))
}

/// A recipient as `age-keygen` prints it (`age1...`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, KeyError> {
    text.trim().parse().map_err(|e: &str| KeyError::Recipient(text.to_owned(), e.to_owned()))
}

/// This node's recordings.
pub struct Recordings {
    settings: RecordingSettings,
    manifest_key: ManifestKey,
    /// The node's public evidence key (`audit.pub`), for verification.
    pub verifier_key: String,
    /// Recordings being written now (the retention job leaves them alone).
    live: Arc<std::sync::Mutex<Vec<String>>>,
    /// The search index of every node's recordings (the embedded store, or Redis shared by all).
    index: sightline_store::Store,
}

impl std::fmt::Debug for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recordings").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Recordings {
    /// This node's recordings. The directory itself is checked when a session starts: a relay
    /// whose disk is full still serves everything but recorded sessions.
    pub fn open(
        settings: RecordingSettings,
        manifest_key: ManifestKey,
        verifier_key: String,
        index: sightline_store::Store,
    ) -> Recordings {
        Recordings { settings, manifest_key, verifier_key, live: Arc::default(), index }
    }

    pub fn settings(&self) -> &RecordingSettings {
        &self.settings
    }

    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.settings.dir.join(id)
    }

    /// Starts recording session `id`: its directory and opening line are on disk when this
    /// returns. Blocking IO.
    pub fn start(
        &self,
        id: &str,
        open: ManifestBody,
    ) -> std::io::Result<(Arc<Recorder>, mpsc::UnboundedReceiver<RecorderNews>)> {
        std::fs::create_dir_all(&self.settings.dir)?;
        let dir = files::RecordingDir::create(
            &self.settings.dir,
            id,
            self.manifest_key.clone(),
            self.settings.recipients.clone(),
            self.settings.min_free_bytes,
            open,
        )?;
        self.live.lock().unwrap_or_else(|e| e.into_inner()).push(id.to_owned());
        let (live, done) = (self.live.clone(), id.to_owned());
        let finished = Box::new(move || live.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| *l != done));
        Recorder::start(id.to_owned(), dir, self.settings.chunk_every, finished)
    }

    /// Puts (or refreshes) one recording in the search index.
    pub async fn index(&self, listed: &commands::Listed) -> Result<(), sightline_store::StoreError> {
        self.index.put(sightline_store::Collection::Recordings, &listed.id, listed).await
    }

    /// Refreshes recording `id`'s entry from its manifest (after it closed).
    pub async fn reindex(&self, id: &str) -> Result<(), sightline_store::StoreError> {
        let path = self.dir_of(id).join(files::MANIFEST);
        let manifest = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await;
        match manifest.ok().and_then(Result::ok).as_deref().and_then(commands::listed) {
            Some(listed) => self.index(&listed).await,
            None => Ok(()),
        }
    }

    /// Takes a deleted recording out of the index.
    pub async fn unindex(&self, id: &str) -> Result<(), sightline_store::StoreError> {
        self.index.delete(sightline_store::Collection::Recordings, id).await.map(|_| ())
    }

    /// Every node's recordings, as the index has them.
    pub async fn indexed(&self) -> Result<Vec<commands::Listed>, sightline_store::StoreError> {
        Ok(self.index.list(sightline_store::Collection::Recordings).await?.into_iter().map(|(_, l)| l).collect())
    }

    /// Puts this node's recordings into the index (at start: recordings made before the index
    /// existed, or whose entry a crash left stale).
    pub async fn reconcile(&self) -> anyhow::Result<usize> {
        let root = self.settings.dir.clone();
        let on_disk = tokio::task::spawn_blocking(move || commands::list(&root)).await??;
        let indexed: std::collections::BTreeMap<String, commands::Listed> =
            self.indexed().await?.into_iter().map(|l| (l.id.clone(), l)).collect();
        let mut fixed = 0;
        for listed in on_disk {
            if indexed.get(&listed.id).is_none_or(|i| i.complete != listed.complete || i.frames != listed.frames) {
                self.index(&listed).await?;
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    /// Ids of the recordings being written now.
    pub fn live(&self) -> Vec<String> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
