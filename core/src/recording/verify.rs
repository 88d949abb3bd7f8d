//! Verifying a recording: the manifest's chain and signatures, every chunk against its hash,
//! and every recorded frame against the endpoint's seals.

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::RecordingError;
use super::chunk::{Chunk, TimelineEntry};
use super::manifest::{ManifestBody, ManifestLine, line_hash};
use super::seal::{frame_hash, seal_head, verify_seal};
use crate::audit::SessionFacts;

/// What verification established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordingReport {
    pub recording_id: String,
    pub node: String,
    pub segment: String,
    pub session: SessionFacts,
    /// The endpoint's Ed25519 key (hex) the manifest names: what its seals were checked with.
    pub device_key: String,
    pub started_ms: u64,
    /// The cut recording this one continues, and the gap between them (R43).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continues: Option<super::manifest::Continuation>,
    /// The manifest was closed: the recording holds the whole session.
    pub complete: bool,
    pub ended_ms: Option<u64>,
    pub end_reason: Option<String>,
    pub chunks: u64,
    pub frames: u64,
    /// Relay arrival time of the last recorded frame or entry.
    pub last_ms: u64,
    pub seals: u64,
    /// Recorded frames whose bytes the endpoint signed.
    pub frames_matched: u64,
    /// Frames the endpoint signed that are not in the recording (lost on the way, or removed).
    pub gaps: u64,
    /// Each run of missing sealed frames, with what explains it (a gap record of the recorder,
    /// or the recording's end) or nothing.
    pub gap_findings: Vec<GapFinding>,
    /// Missing sealed frames nothing explains: verification fails on them unless it is asked
    /// only to list them (`Options::list_unexplained_gaps`, for forensic work).
    pub unexplained_gaps: u64,
    /// Frames after the endpoint's last seal (the session ended before it signed them).
    pub unsealed_tail: u64,
    /// A chunk written just before a crash, whose manifest line never was: not part of the
    /// verified recording.
    pub unanchored_chunk: Option<u64>,
    /// The manifest ended inside a line (a crash while writing it); that line is ignored.
    pub torn_manifest_tail: bool,
}

/// A run of sealed frames the recording lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapFinding {
    /// RTP times of the run's first and last frame, and how many frames it holds.
    pub first_ts: u32,
    pub last_ts: u32,
    pub frames: u64,
    /// The recorder's reason (its gap record), or `after the last recorded frame`; `None`:
    /// nothing explains it.
    pub explained_by: Option<String>,
}

/// How strictly a recording is verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Report sealed frames that nothing explains instead of failing on them.
    pub list_unexplained_gaps: bool,
}

/// A verified recording: the report and the chunks, decoded, in order.
#[derive(Debug, Clone)]
pub struct Verified {
    pub report: RecordingReport,
    pub chunks: Vec<Chunk>,
    /// Each chunk's SHA-256 (hex) as the manifest lists it and its plaintext matched.
    pub chunk_sha256: Vec<String>,
}

/// Verifies the recording whose manifest is `manifest`, signed by `relay_key`. `present` lists
/// the chunk numbers stored; `read` returns one chunk's plaintext. Sealed frames the recording
/// lacks without a record that explains them fail it.
pub fn verify(
    manifest: &str,
    relay_key: &VerifyingKey,
    present: &BTreeSet<u64>,
    read: impl FnMut(u64) -> Result<Vec<u8>, String>,
) -> Result<Verified, RecordingError> {
    verify_with(manifest, relay_key, present, read, Options::default())
}

/// `verify`, with `options`.
pub fn verify_with(
    manifest: &str,
    relay_key: &VerifyingKey,
    present: &BTreeSet<u64>,
    mut read: impl FnMut(u64) -> Result<Vec<u8>, String>,
    options: Options,
) -> Result<Verified, RecordingError> {
    let (text, torn) = match manifest.rfind('\n') {
        Some(end) => (&manifest[..=end], end + 1 != manifest.len()),
        None => ("", !manifest.is_empty()),
    };
    let mut lines = Vec::new();
    let mut prev = String::new();
    for (n, raw) in text.lines().enumerate() {
        let n = n as u64;
        let line = ManifestLine::parse(n, raw)?;
        if line.seq != n {
            return Err(RecordingError::Manifest { line: n, why: format!("numbered {}", line.seq) });
        }
        if line.prev != prev {
            return Err(RecordingError::Manifest { line: n, why: "does not chain to the line before it".into() });
        }
        line.verify(n, relay_key)?;
        prev = line_hash(raw);
        lines.push(line);
    }
    let Some(ManifestBody::Open { recording_id, node, segment, session, started_ms, device_key, continues }) =
        lines.first().map(|l| l.body.clone())
    else {
        return Err(RecordingError::Manifest { line: 0, why: "the first line must open the recording".into() });
    };
    let device_key_hex = device_key.clone();
    let device_key = hex::decode(&device_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or_else(|| RecordingError::MalformedKey(format!("device key {device_key:?}")))?;

    let mut chunk_lines = Vec::new();
    let mut close = None;
    for (n, line) in lines.iter().enumerate().skip(1) {
        let n = n as u64;
        if close.is_some() {
            return Err(RecordingError::Manifest { line: n, why: "follows the close line".into() });
        }
        match &line.body {
            ManifestBody::Open { .. } => {
                return Err(RecordingError::Manifest { line: n, why: "a second open line".into() });
            }
            ManifestBody::Chunk { index, sha256, bytes, frames, .. } => {
                if *index != chunk_lines.len() as u64 {
                    return Err(RecordingError::Manifest {
                        line: n,
                        why: format!("chunk {index} where chunk {} was due", chunk_lines.len()),
                    });
                }
                chunk_lines.push((*index, sha256.clone(), *bytes, *frames));
            }
            ManifestBody::Close { chunks, ended_ms, reason } => {
                if *chunks != chunk_lines.len() as u64 {
                    return Err(RecordingError::Manifest {
                        line: n,
                        why: format!("closes with {chunks} chunks, {} listed", chunk_lines.len()),
                    });
                }
                close = Some((*ended_ms, reason.clone()));
            }
        }
    }

    let listed = chunk_lines.len() as u64;
    let mut unanchored_chunk = None;
    for &index in present.range(listed..) {
        // One chunk past the last line is what a crash between writing a chunk and its line
        // leaves; anything else is an addition.
        if close.is_none() && index == listed {
            unanchored_chunk = Some(index);
        } else {
            return Err(RecordingError::ExtraChunk { chunk: index });
        }
    }
    let mut chunks = Vec::with_capacity(chunk_lines.len());
    for (index, sha256, bytes, frames) in &chunk_lines {
        if !present.contains(index) {
            return Err(RecordingError::MissingChunk { chunk: *index });
        }
        let plain = read(*index).map_err(|why| RecordingError::MalformedChunk { chunk: *index, why })?;
        let found = hex::encode(Sha256::digest(&plain));
        if &found != sha256 || plain.len() as u64 != *bytes {
            return Err(RecordingError::ChunkHash { chunk: *index, expected: sha256.clone(), found });
        }
        let chunk = Chunk::decode(*index, &plain)?;
        if chunk.frames().count() as u64 != *frames {
            return Err(RecordingError::MalformedChunk { chunk: *index, why: "frame count differs".into() });
        }
        chunks.push(chunk);
    }

    let media = check_media(&chunks, &session.session_id, &device_key)?;
    if !options.list_unexplained_gaps
        && let Some(run) = media.findings.iter().find(|f| f.explained_by.is_none())
    {
        return Err(RecordingError::UnexplainedGap {
            frames: run.frames,
            first_ts: run.first_ts,
            last_ts: run.last_ts,
        });
    }
    let last_ms = chunks
        .iter()
        .flat_map(|c| c.items.iter())
        .map(|i| match i {
            super::ChunkItem::Frame(f) => f.arrival_ms,
            super::ChunkItem::Entry(e) => e.ts_ms(),
        })
        .max()
        .unwrap_or(started_ms);
    let report = RecordingReport {
        recording_id,
        node,
        segment,
        session: *session,
        device_key: device_key_hex,
        started_ms,
        continues,
        complete: close.is_some(),
        ended_ms: close.as_ref().map(|c| c.0),
        end_reason: close.map(|c| c.1),
        chunks: listed,
        frames: media.frames,
        last_ms,
        seals: media.seals,
        frames_matched: media.matched,
        gaps: media.gaps,
        unexplained_gaps: media.findings.iter().filter(|f| f.explained_by.is_none()).map(|f| f.frames).sum(),
        gap_findings: media.findings,
        unsealed_tail: media.tail,
        unanchored_chunk,
        torn_manifest_tail: torn,
    };
    let chunk_sha256 = chunk_lines.into_iter().map(|(_, sha256, _, _)| sha256).collect();
    Ok(Verified { report, chunks, chunk_sha256 })
}

/// Checks that `next` continues `previous` (both verified): the same session and endpoint key,
/// the id and node `next` names, at least the chunks `next` says it had written, the last of
/// them with the hash it names, and a gap that ends before `next` began. An auditor then knows
/// exactly what is missing: the gap, and whatever the cut recording holds after its last
/// published chunk.
pub fn check_continuation(previous: &Verified, next: &Verified) -> Result<(), RecordingError> {
    let fail = |why: String| Err(RecordingError::NotAContinuation(why));
    let Some(cont) = &next.report.continues else {
        return fail(format!("{} continues no recording", next.report.recording_id));
    };
    let (p, n) = (&previous.report, &next.report);
    if cont.previous != p.recording_id || cont.previous_node != p.node {
        return fail(format!(
            "it continues {} of node {}, not {} of node {}",
            cont.previous, cont.previous_node, p.recording_id, p.node
        ));
    }
    if p.session.session_id != n.session.session_id || p.device_key != n.device_key {
        return fail("the two recordings are of different sessions or endpoints".into());
    }
    if p.chunks < cont.previous_chunks {
        return fail(format!("the cut recording holds {} chunks, {} were published", p.chunks, cont.previous_chunks));
    }
    let last = cont.previous_chunks.checked_sub(1).and_then(|i| previous.chunk_sha256.get(i as usize));
    if last != cont.previous_last_sha256.as_ref() {
        return fail("the cut recording's last published chunk has another hash".into());
    }
    if cont.gap.start_ms > cont.gap.end_ms || cont.gap.end_ms > n.started_ms {
        return fail("the gap is not between the two recordings".into());
    }
    Ok(())
}

/// Longest run of frames after the endpoint's last seal that still verifies.
pub const MAX_UNSEALED_TAIL_MS: u64 = 3000;

struct MediaCheck {
    frames: u64,
    seals: u64,
    matched: u64,
    gaps: u64,
    findings: Vec<GapFinding>,
    tail: u64,
}

/// Every recorded frame against the endpoint's seals: the seals must chain and verify; a
/// recorded frame must be the very bytes sealed at its timestamp and in the sealed order; a
/// frame recorded after the last seal is the unsealed tail; sealed frames not recorded are gaps.
fn check_media(chunks: &[Chunk], session_id: &str, device_key: &VerifyingKey) -> Result<MediaCheck, RecordingError> {
    // Position in the endpoint's sending order, and hash, of every sealed frame.
    let mut sealed: HashMap<u32, (u64, String)> = HashMap::new();
    let mut seals = 0u64;
    let mut head = String::new();
    for entry in chunks.iter().flat_map(Chunk::timeline) {
        let TimelineEntry::Seal { seal, .. } = entry else { continue };
        let bad = |why: String| RecordingError::Seal { seq: seal.seq, why };
        if seal.seq != seals {
            return Err(bad(format!("seal {seals} was due (a seal is missing or repeated)")));
        }
        if seal.session_id != session_id {
            return Err(bad(format!("for session {}, not this one", seal.session_id)));
        }
        if seal.prev != head {
            return Err(bad("does not chain to the seal before it".into()));
        }
        verify_seal(seal, device_key)?;
        for frame in &seal.frames {
            let position = sealed.len() as u64;
            if sealed.insert(frame.ts, (position, frame.sha256.clone())).is_some() {
                return Err(bad(format!("seals RTP time {} twice", frame.ts)));
            }
        }
        head = seal_head(seal);
        seals += 1;
    }
    let last_sealed = sealed.len() as u64;
    let mut recorded_positions = BTreeSet::new();
    let (mut frames, mut matched, mut tail) = (0u64, 0u64, 0u64);
    let mut tail_span: Option<(u64, u64)> = None;
    let mut last_position: Option<u64> = None;
    for (index, chunk) in chunks.iter().enumerate() {
        for frame in chunk.frames() {
            frames += 1;
            match sealed.get(&frame.ts) {
                Some((position, hash)) => {
                    if *hash != frame_hash(&frame.data) {
                        return Err(RecordingError::FrameAltered { chunk: index as u64, ts: frame.ts });
                    }
                    if last_position.is_some_and(|p| p >= *position) {
                        return Err(RecordingError::FrameReordered { chunk: index as u64, ts: frame.ts });
                    }
                    last_position = Some(*position);
                    recorded_positions.insert(*position);
                    matched += 1;
                }
                // After the last sealed frame was recorded, the rest is the tail the endpoint
                // did not get to sign before the session ended.
                None if last_sealed == 0 || last_position == Some(last_sealed - 1) => {
                    tail += 1;
                    let span = tail_span.get_or_insert((frame.arrival_ms, frame.arrival_ms));
                    span.1 = frame.arrival_ms;
                }
                None => return Err(RecordingError::FrameNotSealed { chunk: index as u64, ts: frame.ts }),
            }
        }
    }
    // The endpoint seals at least once a second: a longer unsealed tail means seals were lost
    // or removed, and the frames in it cannot be vouched for.
    if let Some((first, last)) = tail_span
        && last.saturating_sub(first) > MAX_UNSEALED_TAIL_MS
    {
        return Err(RecordingError::Seal {
            seq: seals,
            why: format!("{tail} frames over {} ms after the last seal: seals are missing", last - first),
        });
    }
    let findings = gap_findings(chunks, &sealed, &recorded_positions);
    Ok(MediaCheck { frames, seals, matched, gaps: last_sealed - matched, findings, tail })
}

/// The runs of sealed frames not recorded, each matched with what explains it: the recorder's
/// gap record naming exactly the recorded frames on either side of the run (by RTP time; none
/// for the recording's start), or the recording's end (frames sealed after the last recorded
/// one were still on their way when it closed). A gap record naming a frame the endpoint never
/// sealed, or one that spans a recorded frame, explains nothing.
fn gap_findings(chunks: &[Chunk], sealed: &HashMap<u32, (u64, String)>, recorded: &BTreeSet<u64>) -> Vec<GapFinding> {
    let position = |ts: &Option<u32>| ts.map(|t| sealed.get(&t).map(|(p, _)| *p));
    // (position of the recorded frame before, position of the one after) -> reason.
    let mut records: Vec<(Option<u64>, Option<u64>, &str)> = Vec::new();
    for entry in chunks.iter().flat_map(Chunk::timeline) {
        let TimelineEntry::Gap { after_ts, before_ts, reason, .. } = entry else { continue };
        match (position(after_ts), position(before_ts)) {
            (Some(None), _) | (_, Some(None)) => {}
            (after, before) => records.push((after.flatten(), before.flatten(), reason)),
        }
    }
    let mut order: Vec<(u64, u32)> = sealed.iter().map(|(ts, (position, _))| (*position, *ts)).collect();
    order.sort_unstable();
    let mut findings: Vec<GapFinding> = Vec::new();
    let mut previous_missing: Option<u64> = None;
    for (position, ts) in order {
        if recorded.contains(&position) {
            continue;
        }
        let before = recorded.range(..position).next_back().copied();
        let after = recorded.range(position + 1..).next().copied();
        let reason = match after {
            None => Some("after the last recorded frame".to_owned()),
            Some(_) => {
                records.iter().find(|(a, b, _)| *a == before && *b == after).map(|(_, _, reason)| (*reason).to_owned())
            }
        };
        match findings.last_mut() {
            Some(run) if run.explained_by == reason && previous_missing == Some(position.wrapping_sub(1)) => {
                run.last_ts = ts;
                run.frames += 1;
            }
            _ => findings.push(GapFinding { first_ts: ts, last_ts: ts, frames: 1, explained_by: reason }),
        }
        previous_missing = Some(position);
    }
    findings
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
