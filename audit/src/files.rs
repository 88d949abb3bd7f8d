//! The audit directory on disk: opening (lock, key, verification of what is there, recovery of a
//! torn last write), appending records, and signing checkpoints.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sightline_core::audit::{AuditKey, Hash, LogVerifier, Record, Tree, leaf_hash, origin_for_node, split_records};

use super::AuditSettings;

/// What readers need to find a record and prove it: the Merkle tree and each record's offset.
#[derive(Debug, Default)]
pub struct Index {
    pub tree: Tree,
    /// Byte offset of each record's line in the log file.
    pub offsets: Vec<u64>,
    /// Where the indexed records end in the log file.
    pub end: u64,
    /// The newest signed checkpoint: its tree size and note.
    pub checkpoint: Option<(u64, String)>,
}

pub const LOG_FILE: &str = "log.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
pub const KEY_FILE: &str = "audit.key";
pub const PUBLIC_KEY_FILE: &str = "audit.pub";
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("audit directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the audit log in {0} is in use by another process (a running relay)")]
    Busy(PathBuf),
    #[error("invalid node name {0:?}: use letters, digits, '.', '-' and '_'")]
    NodeName(String),
    #[error("audit key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error(
        "the audit log in {dir} does not verify ({why}); the relay will not append to a damaged log: keep it as evidence, move the directory aside and start again"
    )]
    Damaged { dir: PathBuf, why: String },
    #[error("the audit log in {dir} is not the log this node published a checkpoint of: {why}")]
    NotAsPublished { dir: PathBuf, why: crate::PublishedMismatch },
    #[error(
        "{}: the second copy ({at}) holds {copy} records, this log {log}: records were lost from this disk; rebuild the log with `relay audit recover` before starting the node",
        dir.display()
    )]
    CopyAhead { dir: PathBuf, copy: u64, log: u64, at: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

/// The open audit directory: the writer's side.
pub struct AuditFiles {
    dir: PathBuf,
    node: String,
    key: AuditKey,
    log: File,
    /// Bytes of complete records in the log file.
    log_len: u64,
    checkpoints: File,
    /// The tree and where each record starts, shared with readers (proofs for the dashboard).
    index: Arc<RwLock<Index>>,
    prev: Option<Hash>,
    /// Held for the life of the writer; dropping it releases the flock.
    _lock: File,
    /// Bytes of a torn last record found (and cut off) at open.
    pub recovered_bytes: u64,
}

impl AuditFiles {
    /// Opens the directory for writing: takes its lock, creates or loads the key, verifies the
    /// log against its checkpoints and cuts off an incomplete last record (a write that was never
    /// acknowledged, since acknowledgement waits for the sync).
    pub fn open(settings: &AuditSettings) -> Result<AuditFiles, OpenError> {
        if !super::valid_node_name(&settings.node) {
            return Err(OpenError::NodeName(settings.node.clone()));
        }
        let dir = settings.dir.clone();
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Busy(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let key = load_or_create_key(&dir, &settings.node)?;

        let log_path = dir.join(LOG_FILE);
        let cp_path = dir.join(CHECKPOINT_FILE);
        let mut bytes = match std::fs::read(&log_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&log_path)(e)),
        };
        let notes = read_checkpoints(&cp_path).map_err(|why| OpenError::Damaged { dir: dir.clone(), why })?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let recovered_bytes = (bytes.len() - complete) as u64;
        bytes.truncate(complete);
        let damaged =
            |e: sightline_core::audit::VerifyError| OpenError::Damaged { dir: dir.clone(), why: e.to_string() };
        let mut verifier = LogVerifier::new(&notes, key.verifier_key()).map_err(damaged)?;
        let mut offsets = Vec::new();
        let mut at = 0u64;
        for line in split_records(&bytes).map_err(damaged)? {
            verifier.push(line).map_err(damaged)?;
            offsets.push(at);
            at += line.len() as u64 + 1;
        }
        let prev = verifier.last_leaf();
        let (report, tree) = verifier.finish().map_err(damaged)?;
        if let Some(node) = &report.node
            && *node != settings.node
        {
            return Err(OpenError::Damaged {
                dir,
                why: format!("it is the log of node {node:?}, this is node {:?}", settings.node),
            });
        }

        let log = OpenOptions::new().create(true).append(true).mode(0o600).open(&log_path).map_err(io(&log_path))?;
        if recovered_bytes > 0 {
            log.set_len(complete as u64).map_err(io(&log_path))?;
            log.sync_all().map_err(io(&log_path))?;
        }
        let checkpoints =
            OpenOptions::new().create(true).append(true).mode(0o600).open(&cp_path).map_err(io(&cp_path))?;
        Ok(AuditFiles {
            node: settings.node.clone(),
            dir,
            key,
            log,
            log_len: complete as u64,
            checkpoints,
            index: Arc::new(RwLock::new(Index {
                tree,
                offsets,
                end: complete as u64,
                checkpoint: report.last_checkpoint.map(|c| c.size).zip(notes.last().cloned()),
            })),
            prev,
            _lock: lock,
            recovered_bytes,
        })
    }

    pub fn verifier_key(&self) -> &str {
        self.key.verifier_key()
    }

    pub fn size(&self) -> u64 {
        self.read().tree.size()
    }

    /// The shared index (readers take the read lock).
    pub fn index(&self) -> Arc<RwLock<Index>> {
        self.index.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Size of the newest checkpoint.
    pub fn checkpointed(&self) -> u64 {
        self.read().checkpoint.as_ref().map_or(0, |(size, _)| *size)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Appends records (numbered, named and chained here) in one write and one sync. On failure
    /// nothing is counted and the file is cut back to its last good length.
    pub fn append_batch(&mut self, records: impl IntoIterator<Item = Record>) -> std::io::Result<Vec<Vec<u8>>> {
        let mut buf = Vec::new();
        let mut leaves = Vec::new();
        let mut lengths = Vec::new();
        let mut written = Vec::new();
        let mut prev = self.prev;
        for (seq, mut record) in (self.size()..).zip(records) {
            record.seq = seq;
            record.node = self.node.clone();
            record.prev = prev.map(|h| h.to_string()).unwrap_or_default();
            let bytes = record.canonical();
            let leaf = leaf_hash(&bytes);
            buf.extend_from_slice(&bytes);
            buf.push(b'\n');
            lengths.push(bytes.len() as u64 + 1);
            leaves.push(leaf);
            prev = Some(leaf);
            written.push(bytes);
        }
        // A failed write may have left part of a record behind: cut it before writing again.
        if self.log.metadata()?.len() != self.log_len {
            self.log.set_len(self.log_len)?;
        }
        if let Err(e) = self.log.write_all(&buf).and_then(|()| self.log.sync_data()) {
            let _ = self.log.set_len(self.log_len);
            return Err(e);
        }
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let mut at = self.log_len;
            for (leaf, len) in leaves.into_iter().zip(lengths) {
                index.tree.push(leaf);
                index.offsets.push(at);
                at += len;
            }
            index.end = at;
        }
        self.log_len += buf.len() as u64;
        self.prev = prev;
        Ok(written)
    }

    /// At most `max` records from `seq` on, as written (each without its newline): what a second
    /// copy that stopped at `seq` lacks. Reads only their bytes; a log file shorter than this
    /// log's index (cut outside the relay) is an error, never fewer records.
    pub fn records_range(&self, seq: u64, max: usize) -> std::io::Result<Vec<Vec<u8>>> {
        use std::os::unix::fs::FileExt;
        let (start, end, count) = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            let len = index.offsets.len() as u64;
            if seq >= len {
                return Ok(Vec::new());
            }
            let last = seq.saturating_add(max as u64).min(len);
            let at = |n: u64| index.offsets[usize::try_from(n).unwrap_or(usize::MAX)];
            let end = if last == len { index.end } else { at(last) };
            (at(seq), end, usize::try_from(last - seq).unwrap_or(usize::MAX))
        };
        let mut buf = vec![0; usize::try_from(end - start).map_err(std::io::Error::other)?];
        File::open(self.dir.join(LOG_FILE))?.read_exact_at(&mut buf, start)?;
        let records: Vec<Vec<u8>> = buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        if records.len() != count {
            return Err(std::io::Error::other(format!(
                "expected {count} records from {seq} in the log file, found {}",
                records.len()
            )));
        }
        Ok(records)
    }

    /// Signs and stores a checkpoint of the whole log, if it grew since the last one.
    pub fn checkpoint(&mut self) -> std::io::Result<bool> {
        let size = self.size();
        if size == self.checkpointed() {
            return Ok(false);
        }
        let root = self.read().tree.root(size).map_err(std::io::Error::other)?;
        let note = self.key.sign(size, root).map_err(std::io::Error::other)?;
        let mut line = serde_json::to_string(&note).map_err(std::io::Error::other)?;
        line.push('\n');
        let len = self.checkpoints.metadata()?.len();
        if let Err(e) = self.checkpoints.write_all(line.as_bytes()).and_then(|()| self.checkpoints.sync_data()) {
            let _ = self.checkpoints.set_len(len);
            return Err(e);
        }
        self.index.write().unwrap_or_else(|e| e.into_inner()).checkpoint = Some((size, note));
        Ok(true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads the signed checkpoint notes (one JSON string per line).
pub fn read_checkpoints(path: &Path) -> Result<Vec<String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<String>(l).map_err(|e| format!("checkpoint #{}: not a JSON string: {e}", i + 1))
        })
        .collect()
}

/// The node's evidence key from `dir` (created on first use, 0600).
pub fn load_or_create_key(dir: &Path, node: &str) -> Result<AuditKey, OpenError> {
    let path = dir.join(KEY_FILE);
    let bad = |why: String| OpenError::Key { path: path.clone(), why };
    let seed: [u8; 32] = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path).map_err(io(&path))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!("readable by others (mode {:o}); chmod 600 it", mode & 0o777)));
            }
            hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("not 32 bytes of hex".into()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| bad(format!("the operating system's RNG failed: {e}")))?;
            let mut file =
                OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).map_err(io(&path))?;
            file.write_all(hex::encode(seed).as_bytes()).and_then(|()| file.sync_all()).map_err(io(&path))?;
            seed
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let key = AuditKey::from_seed(&origin_for_node(node), &seed).map_err(|e| bad(e.to_string()))?;
    let public = dir.join(PUBLIC_KEY_FILE);
    let current = std::fs::read_to_string(&public).unwrap_or_default();
    if let Some((name, _)) = current.trim().split_once('+')
        && name != key.origin()
    {
        // Never re-key another node's log: its checkpoints would stop verifying.
        return Err(bad(format!("this directory holds the log of {name}, not of {}", key.origin())));
    }
    if current.trim() != key.verifier_key() {
        std::fs::write(&public, format!("{}\n", key.verifier_key())).map_err(io(&public))?;
    }
    Ok(key)
}
