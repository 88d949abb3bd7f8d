//! A recording on disk: `<recordings>/<id>/manifest.jsonl` and `<id>/chunks/NNNNNN.age`.
//!
//! Chunks are age-encrypted to the auditors' recipients (R32): the plaintext never touches
//! the disk. A chunk is written to a temporary name, synced and renamed, then its manifest line is
//! appended and synced; a failed append is cut back off, so a retry never leaves half a line in
//! the middle of the manifest. A crash between the two leaves one chunk without its line, which
//! verification reports and leaves out.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sightline_core::recording::{ManifestBody, ManifestKey, ManifestWriter};

pub const MANIFEST: &str = "manifest.jsonl";
pub const CHUNKS: &str = "chunks";

pub fn chunk_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(CHUNKS).join(format!("{index:06}.age"))
}

/// Chunk numbers stored in a recording directory (files named like chunks; anything else there
/// is not ours and is ignored).
pub fn list_chunks(dir: &Path) -> std::io::Result<BTreeSet<u64>> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir.join(CHUNKS))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name.strip_suffix(".age").filter(|n| n.len() == 6).and_then(|n| n.parse().ok()) {
            found.insert(n);
        }
    }
    Ok(found)
}

/// Decrypts one stored chunk.
pub fn read_chunk(dir: &Path, index: u64, key: &age::x25519::Identity) -> Result<Vec<u8>, String> {
    let path = chunk_path(dir, index);
    let sealed = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    age::decrypt(key, &sealed).map_err(|e| format!("{}: cannot decrypt with this identity: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What one stored chunk added to the manifest.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub index: u64,
    pub sha256: String,
    pub bytes: u64,
    pub frames: u64,
}

impl StoredChunk {
    /// The detail of the chunk's `recording.chunk` audit record. Verifiers read the index and
    /// hash back (`in_audit_detail`) to check a recording against the log.
    pub fn audit_detail(&self) -> String {
        format!("chunk {}: sha256 {}, {} bytes, {} frames", self.index, self.sha256, self.bytes, self.frames)
    }

    /// The chunk index and SHA-256 a `recording.chunk` record's detail names.
    pub fn in_audit_detail(detail: &str) -> Option<(u64, &str)> {
        let rest = detail.strip_prefix("chunk ")?;
        let (index, rest) = rest.split_once(": sha256 ")?;
        let sha256 = rest.split(',').next()?;
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())).then_some((index.parse().ok()?, sha256))
    }
}

/// `plain` encrypted to every recipient (any one of their identities opens it).
fn encrypt(recipients: &[age::x25519::Recipient], plain: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(std::io::Error::other)?;
    let mut sealed = Vec::with_capacity(plain.len() + 256);
    let mut writer = encryptor.wrap_output(&mut sealed)?;
    writer.write_all(plain)?;
    writer.finish()?;
    Ok(sealed)
}

/// A recording being written.
pub struct RecordingDir {
    dir: PathBuf,
    manifest: File,
    manifest_len: u64,
    writer: ManifestWriter,
    recipients: Vec<age::x25519::Recipient>,
    min_free_bytes: u64,
}

impl RecordingDir {
    /// Creates the recording's directory (it must not exist) and writes its opening line.
    pub fn create(
        root: &Path,
        id: &str,
        key: ManifestKey,
        recipients: Vec<age::x25519::Recipient>,
        min_free_bytes: u64,
        open: ManifestBody,
    ) -> std::io::Result<RecordingDir> {
        if recipients.is_empty() {
            return Err(std::io::Error::other("no recipient to encrypt the recording to (--recording-recipient)"));
        }
        check_free(root, min_free_bytes)?;
        let dir = root.join(id);
        std::fs::create_dir(&dir)?;
        std::fs::create_dir(dir.join(CHUNKS))?;
        let manifest = OpenOptions::new().create_new(true).append(true).mode(0o640).open(dir.join(MANIFEST))?;
        let mut recording = RecordingDir {
            dir,
            manifest,
            manifest_len: 0,
            writer: ManifestWriter::new(key),
            recipients,
            min_free_bytes,
        };
        recording.append(open)?;
        sync_dir(&recording.dir.join(CHUNKS))?;
        sync_dir(&recording.dir)?;
        sync_dir(root)?;
        Ok(recording)
    }

    /// Stores chunk `index` and its manifest line; safe to call again with the same chunk after
    /// a failure.
    pub fn write_chunk(&mut self, index: u64, plain: &[u8], frames: u64, now_ms: u64) -> std::io::Result<StoredChunk> {
        check_free(&self.dir, self.min_free_bytes)?;
        let sealed = encrypt(&self.recipients, plain)?;
        let path = chunk_path(&self.dir, index);
        let tmp = path.with_extension("tmp");
        {
            let mut file = OpenOptions::new().create(true).truncate(true).write(true).mode(0o640).open(&tmp)?;
            file.write_all(&sealed)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir.join(CHUNKS))?;
        let stored =
            StoredChunk { index, sha256: hex::encode(Sha256::digest(plain)), bytes: plain.len() as u64, frames };
        self.append(ManifestBody::Chunk {
            index,
            sha256: stored.sha256.clone(),
            bytes: stored.bytes,
            frames,
            written_ms: now_ms,
        })?;
        Ok(stored)
    }

    /// Appends the closing line.
    pub fn close(&mut self, body: ManifestBody) -> std::io::Result<()> {
        self.append(body)
    }

    fn append(&mut self, body: ManifestBody) -> std::io::Result<()> {
        let line = self.writer.line(body);
        let written = self.manifest.write_all(format!("{line}\n").as_bytes()).and_then(|()| self.manifest.sync_data());
        if let Err(e) = written {
            // Never leave half a line for the next one to follow.
            let _ = self.manifest.set_len(self.manifest_len);
            return Err(e);
        }
        self.manifest_len += line.len() as u64 + 1;
        self.writer.stored(&line);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Refuses to write below the configured free-space floor (R26: a full disk must stop a
/// session in an orderly way, not leave a recording that silently ends).
fn check_free(path: &Path, min_free_bytes: u64) -> std::io::Result<()> {
    let stat = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < min_free_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!("{} MB free on the recordings volume, below the floor of {} MB", free >> 20, min_free_bytes >> 20),
        ));
    }
    Ok(())
}
