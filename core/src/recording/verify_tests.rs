//! A recording built in memory, then every kind of tampering the verifier must catch.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signer, SigningKey};

use super::*;
use crate::recording::{ChunkItem, ManifestKey, ManifestWriter, RecordedFrame, SealChain};

struct Recording {
    manifest: String,
    chunks: BTreeMap<u64, Vec<u8>>,
    relay: ManifestKey,
    device: SigningKey,
}

fn facts() -> SessionFacts {
    SessionFacts {
        session_id: "s1".into(),
        ticket: "INC-1".into(),
        reason: "incident".into(),
        device_id: "d1".into(),
        device: "pc".into(),
        endpoint_user: "alice".into(),
        operator: "bob".into(),
        levels: vec![],
        unattended: false,
    }
}

/// Three chunks of ten frames each (a frame every 150 ms), sealed every 8 frames; `closed`
/// adds the close line. Frame `n` is `[n; 20]` at RTP time `n * 9000`.
fn record(closed: bool, relay_seed: u8, device_seed: u8) -> Recording {
    let relay = ManifestKey::from_seed(&[relay_seed; 32]);
    let device = SigningKey::from_bytes(&[device_seed; 32]);
    let mut writer = ManifestWriter::new(relay.clone());
    let mut manifest = String::new();
    let mut put = |writer: &mut ManifestWriter, body| {
        let line = writer.line(body);
        writer.stored(&line);
        manifest.push_str(&line);
        manifest.push('\n');
    };
    put(
        &mut writer,
        ManifestBody::Open {
            recording_id: "r1".into(),
            node: "n1".into(),
            segment: "office".into(),
            session: Box::new(facts()),
            started_ms: 1000,
            device_key: hex::encode(device.verifying_key().as_bytes()),
            continues: None,
        },
    );
    let mut seals = SealChain::new("s1");
    let mut chunks = BTreeMap::new();
    let mut n = 0u32;
    for index in 0..3u64 {
        let mut chunk = Chunk::default();
        for _ in 0..10 {
            let data = vec![n as u8; 20];
            chunk.items.push(ChunkItem::Frame(RecordedFrame {
                ts: n * 9000,
                arrival_ms: 1000 + u64::from(n) * 150,
                keyframe: n == 0,
                data: data.clone(),
            }));
            if seals.push(n * 9000, &data) || n % 8 == 7 {
                let seal = seals.take(|m| hex::encode(device.sign(m).to_bytes())).unwrap();
                chunk.items.push(ChunkItem::Entry(TimelineEntry::Seal { ts_ms: 1000 + u64::from(n) * 100, seal }));
            }
            n += 1;
        }
        let bytes = chunk.encode();
        put(
            &mut writer,
            ManifestBody::Chunk {
                index,
                sha256: hex::encode(Sha256::digest(&bytes)),
                bytes: bytes.len() as u64,
                frames: 10,
                written_ms: 2000 + index * 1000,
            },
        );
        chunks.insert(index, bytes);
    }
    if closed {
        put(&mut writer, ManifestBody::Close { chunks: 3, ended_ms: 4000, reason: "ended".into() });
    }
    Recording { manifest, chunks, relay, device }
}

impl Recording {
    fn check(&self) -> Result<Verified, RecordingError> {
        let present: BTreeSet<u64> = self.chunks.keys().copied().collect();
        verify(&self.manifest, &self.relay.verifying_key(), &present, |i| {
            self.chunks.get(&i).cloned().ok_or_else(|| "gone".to_owned())
        })
    }

    /// Rewrites chunk `index` through `edit` and re-signs the manifest with the relay's key, as
    /// a relay forging its own recording would.
    fn forge(&mut self, index: u64, edit: impl FnOnce(&mut Chunk)) {
        let mut chunk = Chunk::decode(index, &self.chunks[&index]).unwrap();
        edit(&mut chunk);
        self.chunks.insert(index, chunk.encode());
        self.resign();
    }

    fn resign(&mut self) {
        let mut writer = ManifestWriter::new(self.relay.clone());
        let mut out = String::new();
        for raw in self.manifest.lines() {
            let mut line: ManifestLine = serde_json::from_str(raw).unwrap();
            if let ManifestBody::Chunk { index, sha256, bytes, frames, .. } = &mut line.body {
                let plain = &self.chunks[index];
                *sha256 = hex::encode(Sha256::digest(plain));
                *bytes = plain.len() as u64;
                *frames = Chunk::decode(*index, plain).unwrap().frames().count() as u64;
            }
            let text = writer.line(line.body);
            writer.stored(&text);
            out.push_str(&text);
            out.push('\n');
        }
        self.manifest = out;
    }
}

#[test]
fn an_untouched_recording_verifies_whole() {
    let verified = record(true, 1, 2).check().unwrap();
    let r = &verified.report;
    assert!(r.complete);
    assert_eq!((r.chunks, r.frames, r.gaps), (3, 30, 0));
    // Seals after frames 7, 15 and 23; the last six frames come after the last seal.
    assert_eq!((r.seals, r.frames_matched, r.unsealed_tail), (3, 24, 6));
    assert_eq!(r.end_reason.as_deref(), Some("ended"));
    assert_eq!(verified.chunks.len(), 3);
}

#[test]
fn an_unclosed_recording_verifies_as_incomplete() {
    let r = record(false, 1, 2).check().unwrap().report;
    assert!(!r.complete);
    assert_eq!(r.frames, 30);
}

#[test]
fn a_flipped_byte_names_its_chunk() {
    let mut rec = record(true, 1, 2);
    rec.chunks.get_mut(&1).unwrap()[40] ^= 1;
    assert!(matches!(rec.check(), Err(RecordingError::ChunkHash { chunk: 1, .. })));
}

#[test]
fn removed_swapped_and_added_chunks_are_caught() {
    let mut removed = record(true, 1, 2);
    removed.chunks.remove(&1);
    assert_eq!(removed.check().unwrap_err(), RecordingError::MissingChunk { chunk: 1 });

    let mut swapped = record(true, 1, 2);
    let (a, b) = (swapped.chunks[&0].clone(), swapped.chunks[&2].clone());
    swapped.chunks.insert(0, b);
    swapped.chunks.insert(2, a);
    assert!(matches!(swapped.check(), Err(RecordingError::ChunkHash { chunk: 0, .. })));

    let mut added = record(true, 1, 2);
    added.chunks.insert(3, Chunk::default().encode());
    assert_eq!(added.check().unwrap_err(), RecordingError::ExtraChunk { chunk: 3 });
}

#[test]
fn one_trailing_chunk_without_its_line_is_left_out_of_an_unclosed_recording() {
    let mut crashed = record(false, 1, 2);
    crashed.chunks.insert(3, Chunk::default().encode());
    let r = crashed.check().unwrap().report;
    assert_eq!((r.unanchored_chunk, r.chunks), (Some(3), 3));
    crashed.chunks.insert(4, Chunk::default().encode());
    assert_eq!(crashed.check().unwrap_err(), RecordingError::ExtraChunk { chunk: 4 });
}

#[test]
fn an_edited_timeline_line_is_caught() {
    let mut rec = record(true, 1, 2);
    let mut chunk = Chunk::decode(0, &rec.chunks[&0]).unwrap();
    chunk.items.insert(0, ChunkItem::Entry(TimelineEntry::Chat { ts_ms: 1, from: "x".into(), text: "y".into() }));
    rec.chunks.insert(0, chunk.encode());
    assert!(matches!(rec.check(), Err(RecordingError::ChunkHash { chunk: 0, .. })));
}

#[test]
fn a_manifest_signed_by_another_key_or_edited_is_refused() {
    let mut rec = record(true, 1, 2);
    rec.relay = ManifestKey::from_seed(&[9; 32]);
    rec.resign();
    let expected = ManifestKey::from_seed(&[1; 32]).verifying_key();
    let present: BTreeSet<u64> = rec.chunks.keys().copied().collect();
    let result = verify(&rec.manifest, &expected, &present, |i| Ok(rec.chunks[&i].clone()));
    assert_eq!(result.unwrap_err(), RecordingError::BadManifestSignature { line: 0 });

    let rec = record(true, 1, 2);
    let edited = rec.manifest.replacen("INC-1", "INC-2", 1);
    let present: BTreeSet<u64> = rec.chunks.keys().copied().collect();
    let result = verify(&edited, &rec.relay.verifying_key(), &present, |i| Ok(rec.chunks[&i].clone()));
    assert_eq!(result.unwrap_err(), RecordingError::BadManifestSignature { line: 0 });

    let mut lines: Vec<&str> = rec.manifest.lines().collect();
    lines.remove(2);
    let dropped = lines.join("\n") + "\n";
    let result = verify(&dropped, &rec.relay.verifying_key(), &present, |i| Ok(rec.chunks[&i].clone()));
    assert!(matches!(result, Err(RecordingError::Manifest { line: 2, .. })), "{result:?}");
}

#[test]
fn a_frame_the_relay_replaced_altered_or_injected_fails_even_when_it_re_signs() {
    // Replaced by a frame of another recording (same place, other bytes).
    let mut replaced = record(true, 1, 2);
    replaced.forge(1, |c| {
        if let Some(ChunkItem::Frame(f)) = c.items.iter_mut().find(|i| matches!(i, ChunkItem::Frame(_))) {
            f.data = vec![0xee; 20];
        }
    });
    assert!(matches!(replaced.check(), Err(RecordingError::FrameAltered { chunk: 1, ts: 90000 })));

    let mut injected = record(true, 1, 2);
    injected.forge(1, |c| {
        c.items.insert(
            1,
            ChunkItem::Frame(RecordedFrame { ts: 94500, arrival_ms: 2050, keyframe: false, data: vec![1; 20] }),
        );
    });
    assert!(matches!(injected.check(), Err(RecordingError::FrameNotSealed { chunk: 1, ts: 94500 })));

    let mut reordered = record(true, 1, 2);
    reordered.forge(2, |c| {
        let frames: Vec<usize> =
            c.items.iter().enumerate().filter(|(_, i)| matches!(i, ChunkItem::Frame(_))).map(|(n, _)| n).collect();
        c.items.swap(frames[0], frames[1]);
    });
    assert!(matches!(reordered.check(), Err(RecordingError::FrameReordered { chunk: 2, .. })));
}

/// A sealed frame the relay removed without a word fails verification and names the frames; the
/// forensic listing reports it instead. The same loss with the recorder's gap record around it
/// verifies, with the record's reason in the report (R28).
#[test]
fn a_removed_frame_fails_unless_a_gap_record_accounts_for_it() {
    let remove_first_of_chunk_1 = |c: &mut Chunk| {
        let first = c.items.iter().position(|i| matches!(i, ChunkItem::Frame(_))).unwrap();
        c.items.remove(first);
    };
    let mut removed = record(true, 1, 2);
    removed.forge(1, remove_first_of_chunk_1);
    // Frame 10 (RTP time 90000) is the first of chunk 1.
    assert_eq!(
        removed.check().unwrap_err(),
        RecordingError::UnexplainedGap { frames: 1, first_ts: 90_000, last_ts: 90_000 }
    );
    let present: BTreeSet<u64> = removed.chunks.keys().copied().collect();
    let listed = verify_with(
        &removed.manifest,
        &removed.relay.verifying_key(),
        &present,
        |i| removed.chunks.get(&i).cloned().ok_or_else(|| "gone".to_owned()),
        Options { list_unexplained_gaps: true },
    )
    .unwrap()
    .report;
    assert_eq!((listed.gaps, listed.unexplained_gaps, listed.frames), (1, 1, 29));
    assert_eq!(listed.gap_findings, [GapFinding { first_ts: 90_000, last_ts: 90_000, frames: 1, explained_by: None }]);

    // The recorder's account of the loss, naming the recorded frames on either side.
    let mut accounted = record(true, 1, 2);
    accounted.forge(1, |c| {
        remove_first_of_chunk_1(c);
        let gap = TimelineEntry::Gap {
            ts_ms: 2_000,
            after_ts: Some(9 * 9000),
            before_ts: Some(11 * 9000),
            reason: "packets lost on the way to the relay".into(),
        };
        c.items.insert(0, ChunkItem::Entry(gap));
    });
    let r = accounted.check().unwrap().report;
    assert_eq!((r.gaps, r.unexplained_gaps), (1, 0));
    assert_eq!(r.gap_findings[0].explained_by.as_deref(), Some("packets lost on the way to the relay"));

    // A record that spans recorded frames (here: from the start) explains nothing.
    let mut sweeping = record(true, 1, 2);
    sweeping.forge(1, |c| {
        remove_first_of_chunk_1(c);
        let gap = TimelineEntry::Gap { ts_ms: 2_000, after_ts: None, before_ts: Some(11 * 9000), reason: "all".into() };
        c.items.insert(0, ChunkItem::Entry(gap));
    });
    assert!(matches!(sweeping.check(), Err(RecordingError::UnexplainedGap { frames: 1, .. })));

    // Frames sealed after the last recorded one were on their way when the recording closed.
    // (Frame 23 is the last sealed one; the recording here ends at frame 22.)
    let mut cut = record(true, 1, 2);
    cut.forge(2, |c| c.items.retain(|i| !matches!(i, ChunkItem::Frame(f) if f.ts >= 23 * 9000)));
    let r = cut.check().unwrap().report;
    assert_eq!(r.gap_findings.len(), 1);
    assert_eq!(r.gap_findings[0].first_ts, 23 * 9000);
    assert_eq!(r.gap_findings[0].explained_by.as_deref(), Some("after the last recorded frame"));

    let mut unsealed = record(true, 1, 2);
    unsealed.forge(0, |c| c.items.retain(|i| !matches!(i, ChunkItem::Entry(TimelineEntry::Seal { .. }))));
    // Seal 0 is gone: the chain breaks at seal 1.
    assert!(matches!(unsealed.check(), Err(RecordingError::Seal { seq: 1, .. })));
}

#[test]
fn a_long_unsealed_tail_fails() {
    // Every seal removed: three seconds of frames nobody vouches for.
    let mut stripped = record(true, 1, 2);
    for index in 0..3 {
        stripped.forge(index, |c| c.items.retain(|i| !matches!(i, ChunkItem::Entry(TimelineEntry::Seal { .. }))));
    }
    assert!(matches!(stripped.check(), Err(RecordingError::Seal { seq: 0, .. })));
}

#[test]
fn seals_signed_by_another_device_fail() {
    let mut rec = record(true, 1, 2);
    let other = record(true, 1, 3);
    rec.chunks = other.chunks.clone();
    rec.resign();
    assert!(matches!(rec.check(), Err(RecordingError::Seal { seq: 0, .. })));
    let _ = rec.device;
}

#[test]
fn a_continuation_names_the_cut_recording_and_its_last_published_chunk() {
    use crate::recording::{Continuation, Gap};
    let cut = record(false, 1, 2).check().unwrap();
    let mut next = record(true, 1, 2).check().unwrap();
    next.report.recording_id = "r2".into();
    next.report.started_ms = 9_000;
    let cont = Continuation {
        previous: "r1".into(),
        previous_node: "n1".into(),
        previous_chunks: 2,
        previous_last_sha256: Some(cut.chunk_sha256[1].clone()),
        gap: Gap { start_ms: 5_000, end_ms: 8_500, cause: "node n1 lost".into() },
    };
    next.report.continues = Some(cont.clone());
    check_continuation(&cut, &next).unwrap();
    // Control above; each of these breaks the chain.
    type Break = (&'static str, fn(&mut Continuation));
    let breaks: [Break; 5] = [
        ("another recording", |c| c.previous = "r9".into()),
        ("another node", |c| c.previous_node = "n9".into()),
        ("more chunks than the cut one holds", |c| c.previous_chunks = 4),
        ("another hash", |c| c.previous_last_sha256 = Some("00".repeat(32))),
        ("a gap after the start", |c| c.gap.end_ms = 9_500),
    ];
    for (what, change) in breaks {
        let mut changed = next.clone();
        change(changed.report.continues.as_mut().unwrap());
        assert!(matches!(check_continuation(&cut, &changed), Err(RecordingError::NotAContinuation(_))), "{what}");
    }
    let mut other_session = next.clone();
    other_session.report.session.session_id = "s9".into();
    assert!(check_continuation(&cut, &other_session).is_err());
    next.report.continues = None;
    assert!(check_continuation(&cut, &next).is_err(), "a recording that continues nothing");
}
