//! Recording (R26-R28, R32, R24): a session on a synthetic screen is recorded by the relay in
//! front of the fan-out, the recording verifies against the relay's key and the endpoint's
//! seals, exports to a WebM that ffprobe reads, and its files at rest reveal nothing. A relay
//! that cannot record refuses the session before the user is asked; a recorder that fails
//! mid-session pauses the session and then ends it.

mod support;

use std::time::Duration;

use sightline_proto::channel::ChannelMessage;
use sightline_proto::{EndReason, ErrorCode, Party, SessionPhase, SessionStatus};
use sightline_recording::commands;
use support::{Operator, TestRelay, start_agent, start_relay_with};

/// Reads `n` RTP packets of the track (the screen flows).
async fn packets(track: &sightline_peer::VideoReceiver, n: usize) {
    for i in 0..n {
        match tokio::time::timeout(Duration::from_secs(3), track.read()).await {
            Ok(p) => {
                p.expect("track open");
            }
            Err(_) => panic!("no packet for 3 s after {i}"),
        }
    }
}

/// The relay's key, as an auditor who pinned it holds it.
fn trusted(relay: &TestRelay) -> sightline_audit::commands::TrustedKeys {
    sightline_audit::commands::TrustedKeys::new([relay.state.recordings.verifier_key.clone()])
}

fn verify(relay: &TestRelay, id: &str) -> anyhow::Result<sightline_core::recording::Verified> {
    let recordings = &relay.state.recordings;
    commands::verify_stored(
        &recordings.dir_of(id),
        id,
        &relay.auditor,
        &trusted(relay),
        sightline_core::recording::Options::default(),
    )
}

async fn verified_complete(relay: &TestRelay, id: &str) -> sightline_core::recording::Verified {
    for _ in 0..100 {
        if let Ok(v) = verify(relay, id)
            && v.report.complete
        {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verify(relay, id).expect("the recording verifies")
}

/// A session the relay records (chunks every `chunk_ms`), live: the operator's view and socket,
/// and the status once the recorder confirmed it is writing.
struct Recorded {
    relay: TestRelay,
    watching: support::Watching,
    operator: Operator,
    status: SessionStatus,
}

async fn recorded_session(chunk_ms: u64, agent: &str) -> Recorded {
    support::allow_defaults();
    let relay = start_relay_with(&[format!("--recording-chunk-ms={chunk_ms}")]).await;
    let device = start_agent(&relay, agent).await;
    let mut ws = support::operator_socket(&relay, &device).await;
    let mut watching = support::watch(&mut ws, &device).await.expect("the relay answers");
    let mut operator = Operator::new(ws, watching.status.take());
    let status = operator.status_until(|s| s.phase == SessionPhase::Active && s.recording).await;
    Recorded { relay, watching, operator, status }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_recorded_verifiable_and_exports_to_webm() {
    let Recorded { relay, watching: support::Watching { peer, track, channel, .. }, mut operator, status } =
        recorded_session(500, "recorded-1").await;
    let id = status.session_id.clone();
    packets(&track, 200).await;
    // A chat line goes into the record once the agent has it (R24).
    let line =
        sightline_proto::channel::encode(&ChannelMessage::Chat { from: String::new(), text: "hello from IT".into() });
    for _ in 0..100 {
        if channel.send(&line).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    packets(&track, 100).await;
    operator.control(sightline_proto::ControlAction::End).await;
    let ended = operator.status_until(|s| s.phase == SessionPhase::Ended).await;
    assert_eq!(ended.end_reason, Some(EndReason::EndedByOperator));
    peer.close().await;

    let verified = verified_complete(&relay, &id).await;
    let r = &verified.report;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.end_reason.as_deref(), Some("the operator ended the session"));
    assert_eq!((r.session.ticket.as_str(), r.session.operator.as_str()), ("INC-42", "operator"));
    assert!(r.frames >= 20, "{r:?}");
    assert!(r.seals >= 1 && r.frames_matched >= 1, "the endpoint's seals cover the frames: {r:?}");
    assert_eq!(r.frames_matched + r.unsealed_tail, r.frames, "every frame is sealed or in the tail: {r:?}");
    assert_eq!(r.gaps, 0, "no frame lost on loopback: {r:?}");

    // The timeline: the signed consent, the chat line, the end (R27, R24).
    let timeline = sightline_core::recording::timeline_jsonl(&verified.chunks);
    let entries: Vec<serde_json::Value> = timeline.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["consent.allowed", "session.granted", "session.ended"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let consent = entries.iter().find(|e| e["kind"] == "consent.allowed").unwrap();
    assert!(consent["detail"].as_str().unwrap().contains("\"signature\""), "the receipt itself is in the timeline");
    assert!(
        entries.iter().any(|e| e["type"] == "chat" && e["text"] == "hello from IT" && e["from"] == "operator"),
        "the chat line is in the timeline: {timeline}"
    );

    // Every chunk is anchored in the audit log with the hash the manifest has (R28).
    let chunk_events = relay.events_of("recording.chunk");
    assert_eq!(chunk_events.len() as u64, r.chunks);
    let manifest = std::fs::read_to_string(relay.state.recordings.dir_of(&id).join("manifest.jsonl")).unwrap();
    for event in &chunk_events {
        let hash = event.detail.split("sha256 ").nth(1).unwrap().split(',').next().unwrap();
        assert!(manifest.contains(hash), "chunk hash {hash} of the audit log is in the manifest");
    }
    assert_eq!(relay.events_of("recording.closed").len(), 1);

    // At rest: no VP8 keyframe header, no ticket, no chat text in any file (R32). The probe is a
    // 1280x720 keyframe's start code with its frame size: the 3-byte start code alone turns up by
    // chance about once in 16 MB of ciphertext. Control: the export below has it.
    const KEYFRAME: [u8; 7] = [0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02];
    let dir = relay.state.recordings.dir_of(&id);
    for entry in std::fs::read_dir(dir.join("chunks")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(bytes.starts_with(b"age-encryption.org/v1"));
        assert!(!bytes.windows(KEYFRAME.len()).any(|w| w == KEYFRAME), "a VP8 keyframe is visible at rest");
        assert!(!bytes.windows(13).any(|w| w == b"hello from IT"), "chat text is visible at rest");
    }
    // Without the key, nothing decrypts.
    let other = age::x25519::Identity::generate();
    let err =
        commands::verify_stored(&dir, &id, &other, &trusted(&relay), sightline_core::recording::Options::default())
            .unwrap_err();
    assert!(format!("{err:#}").contains("cannot decrypt"), "{err:#}");

    // Export, then ffprobe reads VP8 1280x720 with a duration matching the frames (R27).
    let out = relay.dir.path().join("export");
    commands::export(&verified, &manifest, &relay.state.recordings.verifier_key, &out).unwrap();
    commands::verify_exported(&out, &id, &trusted(&relay), sightline_core::recording::Options::default())
        .expect("the export verifies");
    let webm = std::fs::read(out.join(commands::WEBM)).unwrap();
    assert!(webm.windows(KEYFRAME.len()).any(|w| w == KEYFRAME), "the probe finds the keyframe in plain video");
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-print_format", "json", "-show_streams", "-show_format"])
        .arg(out.join(commands::WEBM))
        .output()
        .expect("ffprobe runs");
    assert!(probe.status.success(), "{}", String::from_utf8_lossy(&probe.stderr));
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let stream = &probe["streams"][0];
    assert_eq!(
        (stream["codec_name"].as_str(), stream["width"].as_u64(), stream["height"].as_u64()),
        (Some("vp8"), Some(1280), Some(720))
    );
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    let frames: Vec<_> = verified.chunks.iter().flat_map(|c| c.frames()).skip_while(|f| !f.keyframe).collect();
    let span = f64::from(frames.last().unwrap().ts.wrapping_sub(frames[0].ts)) / 90_000.0;
    assert!((duration - span).abs() < 1.0, "ffprobe says {duration} s, the frames span {span} s");

    // An edited timeline line in the export is caught (the rest is covered in core's tests).
    let edited =
        std::fs::read_to_string(out.join(commands::TIMELINE)).unwrap().replace("hello from IT", "hello from XX");
    std::fs::write(out.join(commands::TIMELINE), edited).unwrap();
    let err = commands::verify_exported(&out, &id, &trusted(&relay), sightline_core::recording::Options::default())
        .unwrap_err();
    assert!(err.to_string().contains("timeline.jsonl differs"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_record_refuses_the_session_before_asking_the_user() {
    support::allow_defaults();
    let blocked = tempfile::NamedTempFile::new().unwrap();
    // The recordings "directory" is a file: nothing can be created under it.
    let relay = start_relay_with(&[format!("--recordings-dir={}", blocked.path().display())]).await;
    let device = start_agent(&relay, "unrecordable-1").await;
    let mut ws = support::operator_socket(&relay, &device).await;
    let refused = support::watch(&mut ws, &device).await.err().expect("refused");
    assert_eq!(refused.0, ErrorCode::RecordingUnavailable);
    assert!(refused.1.contains("recorder cannot start"), "{}", refused.1);
    let kinds = relay.event_kinds();
    assert!(kinds.contains(&"recording.unavailable".to_owned()), "{kinds:?}");
    // The positive marker first: the refusal is written; the user was never asked.
    assert!(!kinds.contains(&"consent.asked".to_owned()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_that_stops_writing_pauses_then_ends_the_session() {
    let Recorded { relay, watching: support::Watching { peer, track, .. }, mut operator, status } =
        recorded_session(300, "failing-1").await;
    packets(&track, 50).await;
    // Every packet's arrival from now on, to see when the picture stopped.
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::time::Instant>::new()));
    let counted = arrivals.clone();
    let counter = tokio::spawn(async move {
        while track.read().await.is_some() {
            counted.lock().unwrap().push(std::time::Instant::now());
        }
    });
    // The probe works: the counter sees the picture before anything breaks (on a loaded machine
    // the task may start late, so wait for it rather than assume it).
    let started = std::time::Instant::now();
    while arrivals.lock().unwrap().len() < 10 {
        assert!(started.elapsed() < Duration::from_secs(10), "the probe saw no packets before the break");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Writes start failing: the chunks directory becomes a file (even root cannot write there).
    let chunks = relay.state.recordings.dir_of(&status.session_id).join("chunks");
    std::fs::rename(&chunks, chunks.with_extension("moved")).unwrap();
    std::fs::write(&chunks, b"not a directory").unwrap();
    let broken = std::time::Instant::now();
    let paused = operator.status_until(|s| s.phase == SessionPhase::Paused).await;
    assert_eq!(paused.paused_by, Some(Party::System));
    assert!(!paused.recording, "the bar no longer says recording");
    let ended = operator.status_until(|s| s.phase == SessionPhase::Ended).await;
    assert_eq!(ended.end_reason, Some(EndReason::RecorderFailed));
    counter.abort();
    // The positive marker (the end, seconds later) came; packets stopped within a second of the
    // first write that failed (a chunk is written every 300 ms) and never resumed.
    let arrivals = arrivals.lock().unwrap().clone();
    let after = arrivals.iter().filter(|t| t.duration_since(broken) > Duration::from_millis(1000)).count();
    assert_eq!(after, 0, "{after} packets reached the viewer more than 1 s after recording broke");
    let kinds = relay.event_kinds();
    for kind in ["recording.stalled", "recording.failed"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind} missing: {kinds:?}");
    }
    peer.close().await;
}
