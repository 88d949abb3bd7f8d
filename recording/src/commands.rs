//! `relay recording ...`: list, verify and export recordings. Verification trusts only the
//! auditor's own copy of the node's public key (`TrustedKeys`: an export's `relay.pub` travels
//! with it and is never used), so it runs as well on an exported copy on an auditor's machine as
//! on the relay. A recording verifies only as the recording asked for: the manifest's id and
//! session must be the ones named. Given the audit logs, every chunk's hash must be the one the
//! log recorded, the session's facts the ones `recording.started` recorded, and the device key
//! the one `device.enrolled` recorded (`against_log`), so a recording re-signed by a rogue key
//! together with a log re-signed by it still fails against the pinned key.
//!
//! `relay recording list | verify ID | verify --dir DIR | export ID --out DIR`. Verifying checks
//! the manifest's chain and signatures, every chunk's hash, and every frame against the agent's
//! seals: an altered, injected or reordered frame fails; frames lost in transit are reported as
//! gaps; an unsealed tail longer than `MAX_UNSEALED_TAIL_MS` (3 s) fails. An export (audited)
//! holds the plaintext chunks, the verified manifest lines, `recording.webm`, `timeline.jsonl`
//! (each entry with its place in the video), `relay.pub` and the report; `verify --dir`
//! recomputes the video and the timeline from the chunks, so an edited export is refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use sightline_audit::commands::{NodeLog, TrustedKeys};
use sightline_audit::events::{DEVICE_KEY_RECORDS, Event, EventKind, Outcome, enrolled_key};
use sightline_core::audit::Record;
use sightline_core::recording::{ManifestBody, ManifestLine, Options, Verified, verify_with, verifying_key_from_note};

use crate::files::{self, MANIFEST, StoredChunk};

/// Exported chunks are plaintext, named like this.
pub fn exported_chunk_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(files::CHUNKS).join(format!("{index:06}.bin"))
}

pub const WEBM: &str = "recording.webm";
pub const TIMELINE: &str = "timeline.jsonl";
pub const RELAY_KEY: &str = "relay.pub";
pub const REPORT: &str = "report.json";

/// The pinned key of the node whose manifest this is: the node is read from the opening line
/// before anything in it is trusted, and only a key the auditor holds for that node is used.
fn relay_key(manifest: &str, trusted: &TrustedKeys, travelling: &Path) -> anyhow::Result<VerifyingKey> {
    let node = listed(manifest).map(|l| l.node).context("the manifest's first line does not open a recording")?;
    let vkey = trusted.for_node(&node, travelling)?;
    verifying_key_from_note(vkey).context("the trusted key is not usable")
}

/// Refuses a recording that is not the one asked for: files of another recording placed under
/// this id verify on their own, so the id and the session must be the ones named.
fn as_asked(verified: Verified, id: &str) -> anyhow::Result<Verified> {
    let r = &verified.report;
    // A session's first recording has the session's id; one that continues it on another node
    // (R43) has its own, and names the session in its facts.
    let own_id = match r.continues {
        None => r.session.session_id == id,
        Some(_) => r.session.session_id != id,
    };
    if r.recording_id != id || !own_id {
        bail!(
            "these files are recording {} (session {}, ticket {}, device {}), not recording {id}",
            r.recording_id,
            r.session.session_id,
            r.session.ticket,
            r.session.device_id
        );
    }
    Ok(verified)
}

/// Verifies the stored (encrypted) recording `id` in `dir`.
pub fn verify_stored(
    dir: &Path,
    id: &str,
    key: &age::x25519::Identity,
    trusted: &TrustedKeys,
    options: Options,
) -> anyhow::Result<Verified> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let relay_key = relay_key(&manifest, trusted, Path::new("audit.pub"))?;
    let present = files::list_chunks(dir).with_context(|| format!("cannot list the chunks of {}", dir.display()))?;
    as_asked(verify_with(&manifest, &relay_key, &present, |i| files::read_chunk(dir, i, key), options)?, id)
}

/// Verifies the export of recording `id` in `dir`: its chunks against the manifest, then the
/// video and the timeline beside them against what the chunks produce.
pub fn verify_exported(dir: &Path, id: &str, trusted: &TrustedKeys, options: Options) -> anyhow::Result<Verified> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let relay_key = relay_key(&manifest, trusted, &dir.join(RELAY_KEY))?;
    let mut present = BTreeSet::new();
    for entry in
        std::fs::read_dir(dir.join(files::CHUNKS)).with_context(|| format!("no chunks in {}", dir.display()))?
    {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        match name.strip_suffix(".bin").filter(|n| n.len() == 6).and_then(|n| n.parse().ok()) {
            Some(n) => {
                present.insert(n);
            }
            None => bail!("{} does not belong in an exported recording", name),
        }
    }
    let read = |i| std::fs::read(exported_chunk_path(dir, i)).map_err(|e| e.to_string());
    let verified = verify_with(&manifest, &relay_key, &present, read, options)?;
    let verified = as_asked(verified, id)?;
    let timeline = std::fs::read_to_string(dir.join(TIMELINE)).context("cannot read the exported timeline")?;
    if timeline != sightline_core::recording::timeline_jsonl(&verified.chunks) {
        let line = timeline
            .lines()
            .zip(sightline_core::recording::timeline_jsonl(&verified.chunks).lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |n| format!("line {}", n + 1));
        bail!("{TIMELINE} differs from the timeline in the verified chunks ({line})");
    }
    let video = std::fs::read(dir.join(WEBM)).context("cannot read the exported video")?;
    // What the video shows, not the muxer's bytes: libwebm draws each track's id at random, so
    // the same chunks never mux to the same file twice.
    let shown = crate::webm::content(&video).with_context(|| format!("{WEBM} is not a readable WebM"))?;
    if let Some(difference) = shown.difference(&crate::webm::content(&crate::webm::webm(&verified.chunks)?)?) {
        bail!("{WEBM} differs from the video in the verified chunks: {difference}");
    }
    Ok(verified)
}

/// What the audit logs confirmed of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheck {
    /// Chunks whose hash the log recorded.
    pub chunks_on_record: u64,
    /// The last chunk of a recording a crash cut short, written before its record was.
    pub chunk_not_yet_on_record: Option<u64>,
}

/// Checks a verified recording against the audit logs (each verified against the auditor's
/// keys): the session's facts against its `recording.started` record, every chunk's hash against
/// its `recording.chunk` record, and the device key against the device's newest enrolment before
/// the recording began.
pub fn against_log(verified: &Verified, logs: &[NodeLog]) -> anyhow::Result<LogCheck> {
    let r = &verified.report;
    let id = &r.recording_id;
    let records: Vec<&Record> = logs.iter().flat_map(|l| l.records.iter()).collect();
    // A session has one recording per node it ran on (R43: a session that moved goes on in a
    // recording of its own there): this recording's records are the session's on its node, from
    // its own `recording.started` up to the next one.
    let of_session = |kind: &'static str| {
        records.iter().copied().filter(move |rec| {
            rec.kind == kind && rec.session.as_ref().is_some_and(|s| s.session_id == r.session.session_id)
        })
    };
    let started = of_session("recording.started")
        .find(|rec| rec.detail == format!("recording {id}"))
        .with_context(|| format!("the audit logs given hold no recording.started for {id}"))?;
    let next_start = of_session("recording.started")
        .filter(|rec| rec.node == started.node && rec.seq > started.seq)
        .map(|rec| rec.seq)
        .min()
        .unwrap_or(u64::MAX);
    let of_this = |kind: &'static str| {
        of_session(kind).filter(move |rec| rec.node == started.node && rec.seq > started.seq && rec.seq < next_start)
    };
    let facts = started.session.as_ref().expect("filtered on its session");
    for (what, logged, manifest) in [
        ("ticket", &facts.ticket, &r.session.ticket),
        ("device", &facts.device_id, &r.session.device_id),
        ("operator", &facts.operator, &r.session.operator),
        ("endpoint user", &facts.endpoint_user, &r.session.endpoint_user),
    ] {
        if logged != manifest {
            bail!(
                "the manifest's {what} is {manifest:?}, the audit log's recording.started (record {} of {}) says {logged:?}",
                started.seq,
                started.node
            );
        }
    }
    let mut logged: BTreeMap<u64, (&str, &Record)> = BTreeMap::new();
    for rec in of_this("recording.chunk") {
        let (index, sha256) = StoredChunk::in_audit_detail(&rec.detail)
            .with_context(|| format!("record {} of {}: not a chunk record: {:?}", rec.seq, rec.node, rec.detail))?;
        logged.insert(index, (sha256, rec));
    }
    let listed = verified.chunks.len() as u64;
    if let Some((index, (_, rec))) = logged.range(listed..).next() {
        bail!(
            "the audit log records chunk {index} (record {} of {}), which the recording does not have",
            rec.seq,
            rec.node
        );
    }
    let mut missing = None;
    for (index, hash) in verified.chunk_sha256.iter().enumerate() {
        let index = index as u64;
        match logged.get(&index) {
            Some((sha256, _)) if sha256.eq_ignore_ascii_case(hash) => {}
            Some((sha256, rec)) => bail!(
                "chunk {index}: SHA-256 {hash} differs from the audit log's {sha256} (record {} of {})",
                rec.seq,
                rec.node
            ),
            // A crash between the chunk's manifest line and its record leaves the last chunk of an
            // unclosed recording without one; anywhere else the record is missing.
            None if !r.complete && index + 1 == listed => missing = Some(index),
            None => bail!("chunk {index} is not in the audit log: no recording.chunk record names it"),
        }
    }
    let device = format!("device:{}", r.session.device_id);
    let enrolled = records
        .iter()
        .filter(|rec| DEVICE_KEY_RECORDS.contains(&rec.kind.as_str()) && rec.actor == device)
        .filter(|rec| rec.outcome == Outcome::Success)
        .filter(|rec| rec.ts_ms <= r.started_ms)
        .max_by_key(|rec| rec.ts_ms)
        .with_context(|| {
            format!("the device's enrolment ({device}) is not in the audit logs given: add the log of the node that enrolled it")
        })?;
    match enrolled_key(&enrolled.detail) {
        Some(key) if key.eq_ignore_ascii_case(&r.device_key) => {}
        Some(key) => bail!(
            "the manifest names device key {}, the device enrolled with {key} (record {} of {}): its seals were checked with a key the log never recorded",
            r.device_key,
            enrolled.seq,
            enrolled.node
        ),
        None => bail!("the enrolment record of {device} (record {} of {}) names no key", enrolled.seq, enrolled.node),
    }
    Ok(LogCheck { chunks_on_record: listed - u64::from(missing.is_some()), chunk_not_yet_on_record: missing })
}

/// The audit record of an export of recording `id` to `out` at `ts_ms` by `actor` on the command
/// line: an export hands the evidence out, so it is itself evidence, made only once this is
/// durable (R29).
pub fn export_event(id: &str, verified: &Verified, out: &Path, actor: &str, ts_ms: u64) -> Event {
    Event {
        ts_ms,
        kind: EventKind::RecordingExported,
        outcome: Outcome::Success,
        actor: actor.into(),
        subject: Some(format!("recording:{id}")),
        source: None,
        detail: format!("exported to {}", out.display()),
        session: Some(verified.report.session.clone()),
    }
}

/// Exports the stored recording in `dir` (verified as `verified`) to `out`.
pub fn export_stored(dir: &Path, verified: &Verified, verifier_key: &str, out: &Path) -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))?;
    export(verified, &manifest, verifier_key, out)
}

/// Writes an exported copy: plaintext chunks, the manifest, the video, the timeline, the relay's
/// public key and the verification report.
pub fn export(verified: &Verified, manifest: &str, verifier_key: &str, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out.join(files::CHUNKS)).with_context(|| format!("cannot create {}", out.display()))?;
    for (index, chunk) in verified.chunks.iter().enumerate() {
        std::fs::write(exported_chunk_path(out, index as u64), chunk.encode())?;
    }
    // Only the verified lines: a torn tail of a crashed relay is not part of the evidence.
    let lines: String = manifest.lines().take(verified.chunks.len() + 1 + usize::from(verified.report.complete)).fold(
        String::new(),
        |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        },
    );
    std::fs::write(out.join(MANIFEST), lines)?;
    std::fs::write(out.join(WEBM), crate::webm::webm(&verified.chunks)?)?;
    std::fs::write(out.join(TIMELINE), sightline_core::recording::timeline_jsonl(&verified.chunks))?;
    std::fs::write(out.join(RELAY_KEY), format!("{}\n", verifier_key.trim()))?;
    std::fs::write(out.join(REPORT), serde_json::to_string_pretty(&verified.report)?)?;
    Ok(())
}

/// One recording as `relay recording list` and the search show it, from its manifest (not
/// verified); kept in the store's index too, so every node's recordings can be found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub id: String,
    /// The relay node that holds it (recordings are per node).
    pub node: String,
    pub ticket: String,
    pub reason: String,
    pub operator: String,
    pub device: String,
    pub device_id: String,
    pub endpoint_user: String,
    pub segment: String,
    pub started_ms: u64,
    pub complete: bool,
    /// Frames the chunks hold: none for a session denied or ended before the first picture.
    #[serde(default)]
    pub frames: u64,
    /// Why the recording closed (the session's end), once it did.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// The session's facts (for the events about this recording), read from the manifest; not
    /// shown and not kept in the index.
    #[serde(skip)]
    pub session: Option<sightline_core::audit::SessionFacts>,
}

/// The listing of a manifest's text, if its first line opens a recording.
pub fn listed(manifest: &str) -> Option<Listed> {
    let first = ManifestLine::parse(0, manifest.lines().next()?).ok()?;
    let ManifestBody::Open { recording_id, session, started_ms, segment, node, .. } = first.body else { return None };
    let (mut frames, mut end_reason) = (0, None);
    for line in manifest.lines().skip(1).filter_map(|l| serde_json::from_str::<ManifestLine>(l).ok()) {
        match line.body {
            ManifestBody::Chunk { frames: n, .. } => frames += n,
            ManifestBody::Close { reason, .. } => end_reason = Some(reason),
            _ => {}
        }
    }
    let complete = end_reason.is_some();
    Some(Listed {
        id: recording_id,
        node,
        ticket: session.ticket.clone(),
        reason: session.reason.clone(),
        operator: session.operator.clone(),
        device: session.device.clone(),
        device_id: session.device_id.clone(),
        endpoint_user: session.endpoint_user.clone(),
        segment,
        started_ms,
        complete,
        frames,
        end_reason,
        session: Some(*session),
    })
}

/// Every recording under `root`, oldest first (manifests' opening lines, not verified).
pub fn list(root: &Path) -> anyhow::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    for entry in entries {
        let dir = entry?.path();
        let Ok(manifest) = std::fs::read_to_string(dir.join(MANIFEST)) else { continue };
        if let Some(listed) = listed(&manifest) {
            out.push(listed);
        }
    }
    out.sort_by_key(|l| l.started_ms);
    Ok(out)
}
