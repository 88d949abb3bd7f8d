//! A recording checked as an auditor who distrusts the relay would (R28, R32, R39): only the key
//! the auditor pinned vouches for it, it verifies only as the recording asked for, its chunks,
//! facts and device key must be the ones the audit log recorded, and an export verifies the same
//! way however long after it was made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use sightline_audit::commands::{NodeLog, TrustedKeys};
use sightline_audit::events::{Event, EventKind, Outcome, SessionFacts, device_enrolled_detail};
use sightline_audit::{AuditLog, AuditSettings};
use sightline_core::audit::{AuditKey, origin_for_node};
use sightline_core::recording::{Chunk, ChunkItem, ManifestBody, ManifestKey, RecordedFrame, SealChain, TimelineEntry};
use sightline_recording::commands::{self, against_log};
use sightline_recording::files::{RecordingDir, StoredChunk};

const NODE: &str = "relay-a";
const DEVICE_SEED: u8 = 7;

fn facts(id: &str) -> SessionFacts {
    SessionFacts {
        session_id: id.into(),
        ticket: format!("INC-{id}"),
        reason: "printer".into(),
        device_id: "d1".into(),
        device: "front-desk".into(),
        endpoint_user: "anna".into(),
        operator: "olga".into(),
        levels: vec![sightline_proto::Level::View],
        unattended: false,
    }
}

/// A 64x48 VP8 keyframe's uncompressed header, then filler: what the muxer needs to start a video.
fn frame(n: u32) -> Vec<u8> {
    let mut data = if n == 0 { vec![0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 64, 0, 48, 0] } else { vec![0x51, 0, 0] };
    data.extend(std::iter::repeat_n(n as u8, 40));
    data
}

/// Three chunks of ten frames (one every 100 ms at 90 kHz), sealed by the device every 8 frames.
fn chunks(id: &str, device: &SigningKey) -> Vec<Chunk> {
    let mut seals = SealChain::new(id);
    let mut out = Vec::new();
    let mut n = 0u32;
    for _ in 0..3 {
        let mut chunk = Chunk::default();
        for _ in 0..10 {
            let data = frame(n);
            chunk.items.push(ChunkItem::Frame(RecordedFrame {
                ts: n * 9000,
                arrival_ms: 1_000 + u64::from(n) * 100,
                keyframe: n == 0,
                data: data.clone(),
            }));
            if seals.push(n * 9000, &data) || n % 8 == 7 || n == 29 {
                let seal = seals.take(|m| hex::encode(device.sign(m).to_bytes())).unwrap();
                chunk.items.push(ChunkItem::Entry(TimelineEntry::Seal { ts_ms: 1_000 + u64::from(n) * 100, seal }));
            }
            n += 1;
        }
        out.push(chunk);
    }
    out
}

/// A node with an audit log and recordings, as an auditor receives copies of them.
struct Node {
    _tmp: tempfile::TempDir,
    audit_dir: PathBuf,
    recordings: PathBuf,
    age: age::x25519::Identity,
    /// The auditor's own copy of the node's verifier key.
    trusted: TrustedKeys,
}

/// Writes recording `id` with the device key of `device_seed`, and (unless `log_chunks` says
/// otherwise) the audit records a relay writes for it; returns each chunk's stored line.
fn record(node: &Node, log: &AuditLog, manifest_key: &ManifestKey, id: &str, device_seed: u8) -> Vec<StoredChunk> {
    let device = SigningKey::from_bytes(&[device_seed; 32]);
    let open = ManifestBody::Open {
        recording_id: id.into(),
        node: NODE.into(),
        segment: "office".into(),
        session: Box::new(facts(id)),
        started_ms: 1_000,
        device_key: hex::encode(device.verifying_key().as_bytes()),
        continues: None,
    };
    let mut dir =
        RecordingDir::create(&node.recordings, id, manifest_key.clone(), vec![node.age.to_public()], 0, open).unwrap();
    log.append(session_event(id, EventKind::RecordingStarted, format!("recording {id}")));
    let mut stored = Vec::new();
    for (index, chunk) in chunks(id, &device).iter().enumerate() {
        let c = dir.write_chunk(index as u64, &chunk.encode(), chunk.frames().count() as u64, 5_000).unwrap();
        log.append(session_event(id, EventKind::RecordingChunk, c.audit_detail()));
        stored.push(c);
    }
    dir.close(ManifestBody::Close { chunks: 3, ended_ms: 9_000, reason: "ended by the user".into() }).unwrap();
    stored
}

fn session_event(id: &str, kind: EventKind, detail: String) -> Event {
    Event::of_session(2_000, kind, Outcome::Success, "system", facts(id), None, detail)
}

fn enrolment(device_seed: u8, ts_ms: u64) -> Event {
    let key = hex::encode(SigningKey::from_bytes(&[device_seed; 32]).verifying_key().as_bytes());
    Event {
        ts_ms,
        kind: EventKind::DeviceEnrolled,
        outcome: Outcome::Success,
        actor: "device:d1".into(),
        subject: None,
        source: None,
        detail: device_enrolled_detail("front-desk", "office", &key, "0123456789abcdef", "ada"),
        session: None,
    }
}

/// A node that enrolled the device and recorded `r1` and `r2`.
fn recorded_node() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        dir: tmp.path().join("audit"),
        node: NODE.into(),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(60),
    };
    let log = AuditLog::open(&settings).unwrap();
    let key = sightline_audit::evidence_key(&settings).unwrap();
    let trusted = TrustedKeys::new([key.verifier_key().to_owned()]);
    let node = Node {
        audit_dir: settings.dir.clone(),
        recordings: tmp.path().join("recordings"),
        age: age::x25519::Identity::generate(),
        trusted,
        _tmp: tmp,
    };
    std::fs::create_dir_all(&node.recordings).unwrap();
    log.append(enrolment(DEVICE_SEED, 500));
    let manifest_key = ManifestKey::of(&key);
    record(&node, &log, &manifest_key, "r1", DEVICE_SEED);
    record(&node, &log, &manifest_key, "r2", DEVICE_SEED);
    // Closing signs a checkpoint over every record.
    log.close();
    node
}

fn logs(node: &Node) -> Vec<NodeLog> {
    vec![NodeLog::load(&node.audit_dir, &node.trusted).unwrap()]
}

fn export(node: &Node, id: &str, out: &Path) {
    let dir = node.recordings.join(id);
    let verified =
        commands::verify_stored(&dir, id, &node.age, &node.trusted, sightline_core::recording::Options::default())
            .unwrap();
    let key = node.trusted.for_node(NODE, Path::new("audit.pub")).unwrap().to_owned();
    commands::export_stored(&dir, &verified, &key, out).unwrap();
}

#[test]
fn a_recording_verifies_with_the_pinned_key_and_against_the_log() {
    let node = recorded_node();
    let verified = commands::verify_stored(
        &node.recordings.join("r1"),
        "r1",
        &node.age,
        &node.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap();
    let check = against_log(&verified, &logs(&node)).unwrap();
    assert_eq!((check.chunks_on_record, check.chunk_not_yet_on_record), (3, None));

    // Without a pinned key for the node, nothing is trusted, whatever the data holds.
    let stranger = AuditKey::from_seed(&origin_for_node("relay-b"), &[3; 32]).unwrap();
    let untrusted = TrustedKeys::new([stranger.verifier_key().to_owned()]);
    let err = commands::verify_stored(
        &node.recordings.join("r1"),
        "r1",
        &node.age,
        &untrusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("no trusted key for node relay-a"), "{err:#}");
}

/// An export re-signed with a foreign key, that key shipped beside it as relay.pub, verified
/// against its own relay.pub; against the key the auditor pinned it fails and names the signature.
#[test]
fn an_export_re_signed_with_a_foreign_key_fails_against_the_pinned_key() {
    let node = recorded_node();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    export(&node, "r1", &out);
    commands::verify_exported(&out, "r1", &node.trusted, sightline_core::recording::Options::default())
        .expect("the untouched export verifies");

    // The forger keeps the node's name and rewrites every manifest line with their own key.
    let forger = AuditKey::from_seed(&origin_for_node(NODE), &[9; 32]).unwrap();
    let mut writer = sightline_core::recording::ManifestWriter::new(ManifestKey::of(&forger));
    let manifest = std::fs::read_to_string(out.join(sightline_recording::files::MANIFEST)).unwrap();
    let mut forged = String::new();
    for line in manifest.lines() {
        let body = serde_json::from_str::<sightline_core::recording::ManifestLine>(line).unwrap().body;
        let line = writer.line(body);
        writer.stored(&line);
        forged.push_str(&line);
        forged.push('\n');
    }
    std::fs::write(out.join(sightline_recording::files::MANIFEST), forged).unwrap();
    std::fs::write(out.join(commands::RELAY_KEY), format!("{}\n", forger.verifier_key())).unwrap();

    let err = commands::verify_exported(&out, "r1", &node.trusted, sightline_core::recording::Options::default())
        .unwrap_err();
    assert!(format!("{err:#}").contains("manifest line 0: the relay's signature does not verify"), "{err:#}");
    // Control: the probe is a well-formed export, which the forger's key would accept.
    let forgers = TrustedKeys::new([forger.verifier_key().to_owned()]);
    commands::verify_exported(&out, "r1", &forgers, sightline_core::recording::Options::default())
        .expect("verifies under the key it was re-signed with");
}

/// Recording r2's files put where r1's belong verify on their own, but not as r1.
#[test]
fn a_recording_verifies_only_as_the_recording_asked_for() {
    let node = recorded_node();
    let err = commands::verify_stored(
        &node.recordings.join("r2"),
        "r1",
        &node.age,
        &node.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("these files are recording r2 (session r2, ticket INC-r2"), "{err:#}");
    // Control: asked for as itself, it verifies.
    commands::verify_stored(
        &node.recordings.join("r2"),
        "r2",
        &node.age,
        &node.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    export(&node, "r2", &out);
    let err = commands::verify_exported(&out, "r1", &node.trusted, sightline_core::recording::Options::default())
        .unwrap_err();
    assert!(format!("{err:#}").contains("not recording r1"), "{err:#}");
}

/// A chunk whose hash is not the one the log recorded, a device key other than the enrolled one,
/// and a recording the log never saw start all fail against the log.
#[test]
fn the_log_check_catches_what_the_manifest_alone_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let settings = AuditSettings {
        dir: tmp.path().join("audit"),
        node: NODE.into(),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(60),
    };
    let log = AuditLog::open(&settings).unwrap();
    let key = sightline_audit::evidence_key(&settings).unwrap();
    let node = Node {
        audit_dir: settings.dir.clone(),
        recordings: tmp.path().join("recordings"),
        age: age::x25519::Identity::generate(),
        trusted: TrustedKeys::new([key.verifier_key().to_owned()]),
        _tmp: tempfile::tempdir().unwrap(),
    };
    std::fs::create_dir_all(&node.recordings).unwrap();
    // The device enrolled with one key; the store later held another, which signed r3's seals.
    log.append(enrolment(DEVICE_SEED, 500));
    let manifest_key = ManifestKey::of(&key);
    record(&node, &log, &manifest_key, "r3", 8);
    // r4's second chunk was rewritten after its record: same size, another hash.
    let stored = record(&node, &log, &manifest_key, "r4", DEVICE_SEED);
    log.close();
    let logs = logs(&node);

    let r3 = commands::verify_stored(
        &node.recordings.join("r3"),
        "r3",
        &node.age,
        &node.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap();
    let err = against_log(&r3, &logs).unwrap_err();
    assert!(format!("{err:#}").contains("the device enrolled with"), "{err:#}");

    let mut r4 = commands::verify_stored(
        &node.recordings.join("r4"),
        "r4",
        &node.age,
        &node.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap();
    against_log(&r4, &logs).expect("the control: as recorded, it matches the log");
    r4.chunk_sha256[1] = "0".repeat(64);
    let err = against_log(&r4, &logs).unwrap_err();
    assert!(format!("{err:#}").contains(&format!("chunk 1: SHA-256 {} differs", "0".repeat(64))), "{err:#}");
    assert!(format!("{err:#}").contains(&stored[1].sha256), "{err:#}");

    // A log that never saw the recording start vouches for nothing of it.
    let r1_elsewhere = recorded_node();
    let r1 = commands::verify_stored(
        &r1_elsewhere.recordings.join("r1"),
        "r1",
        &r1_elsewhere.age,
        &r1_elsewhere.trusted,
        sightline_core::recording::Options::default(),
    )
    .unwrap();
    let err = against_log(&r1, &logs).unwrap_err();
    assert!(format!("{err:#}").contains("hold no recording.started for r1"), "{err:#}");
}

/// The muxer gives each export's track a random id, so two exports of the same chunks differ in
/// bytes; an export still verifies after that, because what it shows is compared.
#[test]
fn an_export_verifies_the_same_however_long_after_it_was_made() {
    let node = recorded_node();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    export(&node, "r1", &out);
    let exported = std::fs::read(out.join(commands::WEBM)).unwrap();
    // libwebm seeds its ids with the time in seconds: a second later it writes other bytes.
    std::thread::sleep(Duration::from_millis(1_100));
    let verified = commands::verify_exported(&out, "r1", &node.trusted, sightline_core::recording::Options::default())
        .expect("the export verifies later too");
    let remuxed = sightline_recording::webm::webm(&verified.chunks).unwrap();
    assert_ne!(remuxed, exported, "the probe: a byte comparison would have failed");
    // Control: a changed frame in the video is still found.
    let mut shown = sightline_recording::webm::content(&exported).unwrap();
    shown.frames[5].data[0] ^= 0x01;
    let original = sightline_recording::webm::content(&remuxed).unwrap();
    assert_eq!(shown.difference(&original).as_deref(), Some("frame 5 (at 500 ms) differs"));
}
