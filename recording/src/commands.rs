//! `relay recording ...`: list, verify and export recordings. Verification trusts only the
//! node's public key (`audit.pub`), so it runs as well on an exported copy on an auditor's
//! machine as on the relay.
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

use anyhow::{Context, bail};
use sightline_audit::events::{Event, EventKind, Outcome};
use sightline_core::recording::{ManifestBody, ManifestLine, Verified, verify, verifying_key_from_note};

use crate::files::{self, MANIFEST};

/// Exported chunks are plaintext, named like this.
pub fn exported_chunk_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(files::CHUNKS).join(format!("{index:06}.bin"))
}

pub const WEBM: &str = "recording.webm";
pub const TIMELINE: &str = "timeline.jsonl";
pub const RELAY_KEY: &str = "relay.pub";
pub const REPORT: &str = "report.json";

fn relay_key(vkey: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    verifying_key_from_note(vkey).context("the relay's public key (audit.pub) is not usable")
}

/// Verifies a stored (encrypted) recording.
pub fn verify_stored(dir: &Path, key: &age::x25519::Identity, verifier_key: &str) -> anyhow::Result<Verified> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let present = files::list_chunks(dir).with_context(|| format!("cannot list the chunks of {}", dir.display()))?;
    Ok(verify(&manifest, &relay_key(verifier_key)?, &present, |i| files::read_chunk(dir, i, key))?)
}

/// Verifies an exported recording: its chunks against the manifest, then the video and the
/// timeline beside them against what the chunks produce.
pub fn verify_exported(dir: &Path, verifier_key: &str) -> anyhow::Result<Verified> {
    let manifest = std::fs::read_to_string(dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
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
    let verified = verify(&manifest, &relay_key(verifier_key)?, &present, |i| {
        std::fs::read(exported_chunk_path(dir, i)).map_err(|e| e.to_string())
    })?;
    let timeline = std::fs::read_to_string(dir.join(TIMELINE)).context("cannot read the exported timeline")?;
    if timeline != crate::webm::timeline_jsonl(&verified.chunks) {
        let line = timeline
            .lines()
            .zip(crate::webm::timeline_jsonl(&verified.chunks).lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "its length".to_owned(), |n| format!("line {}", n + 1));
        bail!("{TIMELINE} differs from the timeline in the verified chunks ({line})");
    }
    let video = std::fs::read(dir.join(WEBM)).context("cannot read the exported video")?;
    if video != crate::webm::webm(&verified.chunks)? {
        bail!("{WEBM} differs from the video in the verified chunks");
    }
    Ok(verified)
}

/// The audit record of an export of recording `id` to `out` at `ts_ms` by the command line: an
/// export hands the evidence out, so it is itself evidence, made only once this is durable (R29).
pub fn export_event(id: &str, verified: &Verified, out: &Path, ts_ms: u64) -> Event {
    Event {
        ts_ms,
        kind: EventKind::RecordingExported,
        outcome: Outcome::Success,
        actor: "cli".into(),
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
    std::fs::write(out.join(TIMELINE), crate::webm::timeline_jsonl(&verified.chunks))?;
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
    /// The session's facts (for the events about this recording), read from the manifest; not
    /// shown and not kept in the index.
    #[serde(skip)]
    pub session: Option<sightline_core::audit::SessionFacts>,
}

/// The listing of a manifest's text, if its first line opens a recording.
pub fn listed(manifest: &str) -> Option<Listed> {
    let first = ManifestLine::parse(0, manifest.lines().next()?).ok()?;
    let ManifestBody::Open { recording_id, session, started_ms, segment, node, .. } = first.body else { return None };
    let complete = manifest
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<ManifestLine>(l).ok())
        .is_some_and(|l| matches!(l.body, ManifestBody::Close { .. }));
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
