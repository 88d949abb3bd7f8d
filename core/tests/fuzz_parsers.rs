//! Property tests over every parser in `core` that reads what another party wrote (issue 13):
//! the policy file, config files, audit records, checkpoints and proofs, recording chunks and
//! manifests, VP8 headers. Each answers any input (no panic, no hang), refuses what a forger can
//! make without the key, and round-trips what it writes itself. `cargo xtask test` runs proptest's
//! default number of cases; `cargo xtask fuzz` runs these (`fuzz_*`) with many more.

use proptest::prelude::*;
use sightline_core::audit::{
    AuditKey, Checkpoint, InclusionProof, LogVerifier, Record, origin_for_node, split_records,
};
use sightline_core::config_file;
use sightline_core::policy::Policy;
use sightline_core::recording::{Chunk, ChunkItem, ManifestLine, RecordedFrame, TimelineEntry};

const SAMPLE_POLICY: &str = include_str!("../../relay/policy-sample.toml");

/// Text that is plausible for the format as well as noise: `base` with a few spans replaced.
fn edited(base: &'static str) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just(String::new()),
        Just("\n".to_owned()),
        Just("=".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("-1".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("[[segments.x.masks]]\nname = \"m\"\n".to_owned()),
        "\\PC{0,8}",
    ];
    proptest::collection::vec((any::<prop::sample::Index>(), 0usize..16, pieces), 1..5).prop_map(move |edits| {
        let mut text: Vec<char> = base.chars().collect();
        for (at, len, piece) in edits {
            let start = at.index(text.len() + 1);
            let end = (start + len).min(text.len());
            text.splice(start..end, piece.chars());
        }
        text.into_iter().collect()
    })
}

fn key() -> AuditKey {
    AuditKey::from_seed(&origin_for_node("relay-fuzz"), &[7; 32]).unwrap()
}

fn chunk() -> Chunk {
    Chunk {
        items: vec![
            ChunkItem::Frame(RecordedFrame {
                ts: 9000,
                arrival_ms: 1,
                keyframe: true,
                data: vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a],
            }),
            ChunkItem::Entry(TimelineEntry::Chat { ts_ms: 2, from: "op".into(), text: "hello".into() }),
            ChunkItem::Entry(TimelineEntry::Input { ts_ms: 3, counts: [("key".to_owned(), 4)].into() }),
        ],
    }
}

proptest! {
    /// The policy file: any edit of the sample either loads (and then decides without panicking)
    /// or is refused with an error.
    #[test]
    fn fuzz_policy_answers_any_edit_of_the_sample(text in edited(SAMPLE_POLICY)) {
        let _ = Policy::from_toml(&text);
    }

    #[test]
    fn fuzz_policy_answers_any_text(text in "\\PC{0,300}") {
        let _ = Policy::from_toml(&text);
    }

    #[test]
    fn fuzz_config_file_answers_any_text(text in "\\PC{0,300}") {
        let _ = config_file::to_args(&text);
    }

    /// Audit records: any bytes are refused or are a record in canonical form.
    #[test]
    fn fuzz_audit_records_are_canonical_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(record) = Record::from_canonical(&bytes) {
            prop_assert_eq!(&record.canonical(), &bytes);
        }
        let _ = split_records(&bytes);
    }

    /// A log verifier fed noise refuses it; it never accepts a record without its checkpoint.
    #[test]
    fn fuzz_log_verifier_refuses_noise(lines in proptest::collection::vec("\\PC{0,120}", 1..4)) {
        let k = key();
        let note = k.sign(0, sightline_core::audit::Tree::default().root(0).unwrap()).unwrap();
        let mut verifier = LogVerifier::new(&[note], k.verifier_key()).unwrap();
        for line in &lines {
            let _ = verifier.push(line.as_bytes());
        }
        let _ = verifier.finish();
    }

    /// Checkpoints: nothing but the key's own signature opens, however the note is edited.
    #[test]
    fn fuzz_checkpoints_open_only_as_signed(size in 0u64..1_000_000, cut in any::<prop::sample::Index>(), piece in "\\PC{1,4}") {
        let k = key();
        let note = k.sign(size, sightline_core::audit::leaf_hash(b"x")).unwrap();
        prop_assert_eq!(Checkpoint::open(&note, k.verifier_key()).map(|c| c.size), Ok(size));
        let mut chars: Vec<char> = note.chars().collect();
        let at = cut.index(chars.len());
        let replaced: String = piece.chars().collect();
        let original: String = chars[at..=at].iter().collect();
        chars.splice(at..=at, piece.chars());
        let forged: String = chars.into_iter().collect();
        if replaced != original {
            prop_assert!(Checkpoint::open(&forged, k.verifier_key()).is_err(), "{}", forged);
        }
    }

    #[test]
    fn fuzz_proofs_answer_any_text(text in "\\PC{0,300}") {
        if let Ok(proof) = InclusionProof::parse(&text) {
            prop_assert!(proof.verify(b"record", key().verifier_key()).is_err());
        }
    }

    /// Recording chunks: what the recorder writes decodes to itself; any edit of it decodes to
    /// something or is refused, and any bytes at all are answered.
    #[test]
    fn fuzz_chunks_round_trip_and_answer_any_edit(at in any::<prop::sample::Index>(), byte in any::<u8>(), noise in proptest::collection::vec(any::<u8>(), 0..200)) {
        let bytes = chunk().encode();
        prop_assert_eq!(Chunk::decode(0, &bytes), Ok(chunk()));
        let mut edited = bytes.clone();
        let i = at.index(edited.len());
        edited[i] = byte;
        let _ = Chunk::decode(0, &edited);
        let _ = Chunk::decode(0, &edited[..i]);
        let _ = Chunk::decode(0, &noise);
        let mut prefixed = sightline_core::recording::MAGIC.to_vec();
        prefixed.extend_from_slice(&noise);
        let _ = Chunk::decode(0, &prefixed);
    }

    #[test]
    fn fuzz_manifest_lines_answer_any_text(text in "\\PC{0,300}") {
        if let Ok(line) = ManifestLine::parse(1, &text) {
            prop_assert_eq!(serde_json::to_string(&line).unwrap(), text);
        }
    }

    #[test]
    fn fuzz_vp8_headers_answer_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = sightline_core::recording::vp8::keyframe_size(&bytes);
    }
}
