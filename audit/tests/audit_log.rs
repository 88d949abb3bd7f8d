//! The audit log on disk (R39, R41): durable before acknowledged, chained and checkpointed,
//! verified offline, tampering named, CLI events in the same log, and a full disk fails closed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sightline_audit::commands::{self, Anchors, Filter, Format, NodeLog, TrustedKeys};
use sightline_audit::events::{Event, EventKind, EventSink, Outcome, SessionFacts};
use sightline_audit::{AuditLog, AuditSettings, CliSink};
use sightline_core::audit::{AuditKey, Checkpoint, Record, origin_for_node};

fn settings(dir: &Path, node: &str) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        node: node.into(),
        checkpoint_records: 5,
        checkpoint_interval: Duration::from_millis(50),
    }
}

fn event(i: u64, kind: EventKind) -> Event {
    Event {
        ts_ms: 1_780_000_000_000 + i,
        kind,
        outcome: Outcome::Success,
        actor: format!("olga{i}"),
        subject: None,
        source: Some("192.0.2.7".parse().unwrap()),
        detail: format!("detail {i} with | = \\ and\na newline"),
        session: Some(SessionFacts {
            session_id: format!("s{}", i % 3),
            ticket: format!("INC-{}", i % 2),
            reason: "printer".into(),
            device_id: "dev-1".into(),
            device: "front-desk".into(),
            endpoint_user: "anna".into(),
            operator: "olga".into(),
            levels: vec![sightline_proto::Level::View],
            unattended: false,
        }),
    }
}

/// The node's key as the auditor keeps it: a copy taken from the genuine log.
fn pinned(dir: &Path) -> TrustedKeys {
    TrustedKeys::new([std::fs::read_to_string(dir.join("audit.pub")).unwrap()])
}

fn anchors(dir: &Path) -> Anchors {
    Anchors { trusted: pinned(dir), accept_tail: false }
}

fn read_lines(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read(dir.join("log.jsonl"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["log.jsonl", "checkpoints.jsonl", "audit.pub"] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

/// A log of `n` events, closed (so its last checkpoint covers everything).
fn written_log(n: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    for i in 0..n {
        log.append(event(i, EventKind::SessionStarted));
    }
    log.close();
    (tmp, dir)
}

#[tokio::test]
async fn an_event_is_on_disk_when_committed_resolves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    log.append(event(1, EventKind::Login));
    log.committed().await.unwrap();
    // Read back by another handle, while the relay still runs: the record is there, whole.
    let lines = read_lines(&dir);
    assert_eq!(lines.len(), 1);
    let record = Record::from_canonical(&lines[0]).unwrap();
    assert_eq!(record.seq, 0);
    assert_eq!(record.node, "relay-a");
    assert_eq!(record.kind, "auth.login");
    assert_eq!(record.actor, "olga1");
    assert_eq!(record.source.as_deref(), Some("192.0.2.7"));
    assert_eq!(record.session.as_ref().unwrap().endpoint_user, "anna");
    assert_eq!(record.prev, "");
    log.close();
}

#[tokio::test]
async fn the_log_verifies_and_continues_its_chain_across_restarts() {
    let (_tmp, dir) = written_log(12);
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    assert_eq!(log.progress().size, 12);
    log.append(event(12, EventKind::Logout));
    log.close();
    let node = NodeLog::load(&dir, &pinned(&dir)).unwrap();
    assert_eq!(node.report.records, 13);
    assert_eq!(node.report.uncovered, 0, "closing signs a final checkpoint");
    assert_eq!(node.records[12].prev, sightline_core::audit::leaf_hash(&node.lines[11]).to_string());
    // Another node's name on the same directory is refused rather than mixed in.
    let err = AuditLog::open(&settings(&dir, "relay-b")).unwrap_err().to_string();
    assert!(err.contains("relay-a"), "{err}");
}

#[tokio::test]
async fn checkpoints_come_every_n_records_and_after_the_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    for i in 0..5 {
        log.append(event(i, EventKind::Login));
    }
    log.committed().await.unwrap();
    let mut progress = log.subscribe();
    // Five records reach the count; one more is covered by the interval alone.
    tokio::time::timeout(Duration::from_secs(5), progress.wait_for(|p| p.checkpointed == 5)).await.unwrap().unwrap();
    log.append(event(5, EventKind::Login));
    tokio::time::timeout(Duration::from_secs(5), progress.wait_for(|p| p.checkpointed == 6)).await.unwrap().unwrap();
    log.close();
}

#[tokio::test]
async fn tampered_copies_fail_verification_and_name_the_record_or_checkpoint() {
    let (tmp, dir) = written_log(12);
    let trusted = pinned(&dir);
    commands::verify(std::slice::from_ref(&dir), &trusted, false).unwrap();
    let lines = read_lines(&dir);
    let write = |name: &str, lines: &[Vec<u8>]| -> PathBuf {
        let copy = tmp.path().join(name);
        copy_dir(&dir, &copy);
        let bytes: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
        std::fs::write(copy.join("log.jsonl"), bytes).unwrap();
        copy
    };
    let failure = |copy: &Path| format!("{:#}", commands::verify(&[copy.to_owned()], &trusted, false).unwrap_err());

    // A flipped byte inside record 4's actor (still valid JSON).
    let mut flipped = lines.clone();
    let at = flipped[4].windows(6).position(|w| w == b"olga4\"").unwrap();
    flipped[4][at] ^= 0x01;
    let err = failure(&write("flipped", &flipped));
    assert!(err.contains("record 4: altered"), "{err}");

    let mut removed = lines.clone();
    removed.remove(7);
    let err = failure(&write("removed", &removed));
    assert!(err.contains("record 7:") && err.contains("removed, inserted or reordered"), "{err}");

    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let err = failure(&write("swapped", &swapped));
    assert!(err.contains("record 2:"), "{err}");

    let truncated = write("truncated", &lines[..9]);
    let err = failure(&truncated);
    assert!(err.contains("truncated"), "{err}");
    let torn = write("torn", &lines);
    let bytes = std::fs::read(torn.join("log.jsonl")).unwrap();
    std::fs::write(torn.join("log.jsonl"), &bytes[..bytes.len() - 7]).unwrap();
    let err = failure(&torn);
    assert!(err.contains("record 11: incomplete"), "{err}");

    // The newest checkpoint re-signed with another key under the same name.
    let resigned = write("resigned", &lines);
    let notes: Vec<String> = std::fs::read_to_string(dir.join("checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = std::fs::read_to_string(dir.join("audit.pub")).unwrap();
    let last = Checkpoint::open(notes.last().unwrap(), key.trim()).unwrap();
    let forger = AuditKey::from_seed(&origin_for_node("relay-a"), &[9; 32]).unwrap();
    let mut forged = notes.clone();
    *forged.last_mut().unwrap() = forger.sign(last.size, last.root).unwrap();
    let text: String = forged.iter().map(|n| serde_json::to_string(n).unwrap() + "\n").collect();
    std::fs::write(resigned.join("checkpoints.jsonl"), text).unwrap();
    let err = failure(&resigned);
    assert!(err.contains(&format!("checkpoint #{}", notes.len())) && err.contains("signature"), "{err}");
    // The forger's own key verifies it, but an auditor holding the node's key is not fooled.
    assert!(commands::verify(&[resigned], &trusted, false).is_err());
}

/// Every checkpoint re-signed with a foreign key under the node's name, and that key put in the
/// copy's audit.pub: the copy vouches for itself, and the auditor's pinned key refuses it.
#[tokio::test]
async fn a_log_re_signed_with_a_foreign_key_fails_against_the_pinned_key() {
    let (tmp, dir) = written_log(12);
    let trusted = pinned(&dir);
    let copy = tmp.path().join("resigned");
    copy_dir(&dir, &copy);
    let forger = AuditKey::from_seed(&origin_for_node("relay-a"), &[9; 32]).unwrap();
    let key = std::fs::read_to_string(dir.join("audit.pub")).unwrap();
    let notes: Vec<String> = std::fs::read_to_string(dir.join("checkpoints.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = notes
        .iter()
        .map(|n| {
            let cp = Checkpoint::open(n, key.trim()).unwrap();
            serde_json::to_string(&forger.sign(cp.size, cp.root).unwrap()).unwrap() + "\n"
        })
        .collect();
    std::fs::write(copy.join("checkpoints.jsonl"), text).unwrap();
    std::fs::write(copy.join("audit.pub"), format!("{}\n", forger.verifier_key())).unwrap();

    let err = format!("{:#}", commands::verify(std::slice::from_ref(&copy), &trusted, false).unwrap_err());
    assert!(err.contains("checkpoint #1") && err.contains("signature"), "{err}");
    // Control: the copy is otherwise a sound log, which the forger's key would accept.
    let forgers = TrustedKeys::new([forger.verifier_key().to_owned()]);
    commands::verify(std::slice::from_ref(&copy), &forgers, false).unwrap();

    // Without a key for the node nothing is verified, and the key in the copy is only named.
    let stranger = AuditKey::from_seed(&origin_for_node("relay-b"), &[3; 32]).unwrap();
    let none = TrustedKeys::new([stranger.verifier_key().to_owned()]);
    let err = format!("{:#}", commands::verify(std::slice::from_ref(&copy), &none, false).unwrap_err());
    assert!(err.contains("no trusted key for node relay-a"), "{err}");
    assert!(err.contains(forger.verifier_key()) && err.contains("not trusted"), "{err}");
}

/// A record appended after the newest checkpoint, chained correctly to the one before it, is
/// signed by nothing: verify and export fail on it unless the auditor accepts a tail.
#[tokio::test]
async fn records_after_the_newest_checkpoint_fail_unless_the_auditor_accepts_a_tail() {
    let (_tmp, dir) = written_log(6);
    let trusted = pinned(&dir);
    let lines = read_lines(&dir);
    let last = Record::from_canonical(lines.last().unwrap()).unwrap();
    let forged = Record {
        seq: last.seq + 1,
        ts_ms: last.ts_ms + 1,
        kind: "auth.unlocked".into(),
        actor: "mallory".into(),
        detail: "forged".into(),
        break_glass: false,
        prev: sightline_core::audit::leaf_hash(lines.last().unwrap()).to_string(),
        ..last
    };
    let mut bytes = std::fs::read(dir.join("log.jsonl")).unwrap();
    bytes.extend(forged.canonical());
    bytes.push(b'\n');
    std::fs::write(dir.join("log.jsonl"), bytes).unwrap();

    let err = format!("{:#}", commands::verify(std::slice::from_ref(&dir), &trusted, false).unwrap_err());
    assert!(err.contains("records 6 to 6 follow the newest checkpoint"), "{err}");
    let mut out = Vec::new();
    let exported =
        commands::export(std::slice::from_ref(&dir), &anchors(&dir), &Filter::default(), Format::Jsonl, &mut out);
    assert!(exported.is_err() && out.is_empty(), "nothing is exported from an unanchored log");
    // The auditor who accepts a tail gets it, marked as such, and the chain still holds.
    commands::verify(std::slice::from_ref(&dir), &trusted, true).unwrap();
    let tail = Anchors { trusted, accept_tail: true };
    assert_eq!(
        commands::export(std::slice::from_ref(&dir), &tail, &Filter::default(), Format::Jsonl, &mut out).unwrap(),
        7
    );
}

#[tokio::test]
async fn proofs_verify_with_only_the_record_the_proof_and_the_key() {
    let (tmp, dir) = written_log(9);
    let record_path = tmp.path().join("record.json");
    let proof = commands::prove(&dir, &pinned(&dir), 4, Some(&record_path)).unwrap();
    let proof_path = tmp.path().join("record.tlog-proof");
    std::fs::write(&proof_path, &proof).unwrap();
    let key = dir.join("audit.pub");
    let ok = commands::check_proof(&record_path, &proof_path, &key).unwrap();
    assert!(ok.contains("record 4"), "{ok}");
    // Another record with the same proof fails.
    std::fs::write(&record_path, &read_lines(&dir)[5]).unwrap();
    assert!(commands::check_proof(&record_path, &proof_path, &key).is_err());

    // Consistency: a checkpoint kept now, more records later.
    let old = tmp.path().join("old.checkpoint");
    std::fs::write(&old, NodeLog::load(&dir, &pinned(&dir)).unwrap().newest_checkpoint().unwrap()).unwrap();
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    for i in 9..30 {
        log.append(event(i, EventKind::Login));
    }
    log.close();
    let proof = commands::consistency(&dir, &pinned(&dir), &old).unwrap();
    let proof_path = tmp.path().join("consistency.json");
    std::fs::write(&proof_path, proof).unwrap();
    let ok = commands::check_consistency(&proof_path, &key).unwrap();
    assert!(ok.contains("size 30") && ok.contains("size 9"), "{ok}");
}

#[tokio::test]
async fn export_filters_and_merges_nodes_by_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let log_a = AuditLog::open(&settings(&a, "relay-a")).unwrap();
    let log_b = AuditLog::open(&settings(&b, "relay-b")).unwrap();
    for i in 0..6 {
        // Interleaved in time across the two nodes.
        if i % 2 == 0 { &log_a } else { &log_b }.append(event(i, EventKind::SessionStarted));
    }
    log_a.close();
    log_b.close();
    // The auditor holds both nodes' keys, in one file.
    let keys = tmp.path().join("keys");
    let both = [&a, &b].map(|d| std::fs::read_to_string(d.join("audit.pub")).unwrap()).concat();
    std::fs::write(&keys, both).unwrap();
    let both = Anchors { trusted: TrustedKeys::load(&[keys]).unwrap(), accept_tail: false };
    let mut out = Vec::new();
    let n = commands::export(&[a.clone(), b.clone()], &both, &Filter::default(), Format::Jsonl, &mut out).unwrap();
    assert_eq!(n, 6);
    let records: Vec<Record> =
        out.split(|&c| c == b'\n').filter(|l| !l.is_empty()).map(|l| Record::from_canonical(l).unwrap()).collect();
    let order: Vec<(String, u64)> = records.iter().map(|r| (r.node.clone(), r.ts_ms - 1_780_000_000_000)).collect();
    assert_eq!(order.iter().map(|(_, t)| *t).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(order[1].0, "relay-b");

    let filter = Filter { ticket: Some("INC-1".into()), ..Filter::default() };
    let mut out = Vec::new();
    assert_eq!(commands::export(&[a.clone(), b.clone()], &both, &filter, Format::Cef, &mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    for line in text.lines() {
        let (fields, pairs) = sightline_audit::cef::parse(line).unwrap();
        assert_eq!(fields[4], "session.start");
        let ticket = pairs.iter().find(|(k, _)| k == "cs2").map(|(_, v)| v.as_str());
        assert_eq!(ticket, Some("INC-1"));
        let msg = pairs.iter().find(|(k, _)| k == "msg").map(|(_, v)| v.clone()).unwrap();
        assert!(msg.contains("| = \\ and\na newline"), "{msg}");
    }
}

#[tokio::test]
async fn a_cli_command_beside_a_running_relay_writes_into_the_relays_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let settings = settings(&dir, "relay-a");
    let relay_log = Arc::new(AuditLog::open(&settings).unwrap());
    let ingest = sightline_audit::serve_ingest(&dir, relay_log.clone()).unwrap();
    relay_log.append(event(0, EventKind::Login));

    let cli = CliSink::open(&settings).unwrap();
    assert!(matches!(cli, CliSink::Forward { .. }), "the relay holds the log");
    cli.emit(Event { actor: "cli".into(), ..event(1, EventKind::Unlocked) });
    cli.committed().await.unwrap();
    ingest.abort();
    relay_log.close();
    let node = NodeLog::load(&dir, &pinned(&dir)).unwrap();
    assert_eq!(node.records.len(), 2);
    assert_eq!(node.records[1].kind, "auth.unlocked");
    assert_eq!(node.records[1].actor, "cli");
    assert_eq!(node.records[1].node, "relay-a");
}

#[tokio::test]
async fn an_unwritable_log_fails_closed_and_recovers_when_space_returns() {
    // A size-limited tmpfs is the honest full disk (root bypasses permission bits).
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mount)
        .status()
        .expect("mount(8) must exist");
    assert!(status.success(), "this test mounts a 64 KiB tmpfs and needs root (CI runs as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let dir = mount.join("audit");
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    log.append(event(0, EventKind::Login));
    log.committed().await.unwrap();
    // Fill the rest of the file system.
    let filler = mount.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 128 * 1024]);
    let mut i = 1;
    let err = loop {
        log.append(event(i, EventKind::Login));
        match log.committed().await {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 10_000, "the disk never filled");
    };
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(log.available().is_err(), "security actions are refused while the log cannot be written");
    // Space returns: the queued events are written, in order, and the log verifies.
    std::fs::remove_file(&filler).unwrap();
    let mut progress = log.subscribe();
    tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|p| p.failure.is_none()))
        .await
        .expect("recovers")
        .unwrap();
    log.committed().await.unwrap();
    assert!(log.available().is_ok());
    log.close();
    let node = NodeLog::load(&dir, &pinned(&dir)).unwrap();
    assert_eq!(node.records.len() as u64, i + 1, "every event kept, none twice");
}

#[tokio::test]
async fn a_cli_command_refuses_to_act_when_the_running_relay_cannot_take_its_event() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let settings = settings(&dir, "relay-a");
    // A relay holds the log but serves no ingest socket.
    let relay_log = AuditLog::open(&settings).unwrap();
    let cli = CliSink::open(&settings).unwrap();
    let err = cli.available().unwrap_err().to_string();
    assert!(err.contains("does not answer"), "{err}");
    relay_log.close();
    // Once closed, the CLI writes directly; a log keeps the node name it was started with.
    assert!(matches!(CliSink::open(&settings).unwrap(), CliSink::Direct(_)));
    assert_eq!(sightline_audit::node_of_dir(&dir).as_deref(), Some("relay-a"));
}

#[test]
fn events_round_trip_through_the_ingest_format_with_empty_fields() {
    // The CLI hands events to a running relay as JSON: fields left out when empty must come back.
    let bare =
        Event { subject: None, source: None, session: None, detail: String::new(), ..event(0, EventKind::Unlocked) };
    let json = serde_json::to_string(&bare).unwrap();
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back.detail, "");
    assert!(back.session.is_none() && back.source.is_none() && back.subject.is_none());
}

#[tokio::test]
async fn a_search_reads_newest_first_across_blocks_and_every_proof_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
    for i in 0..1200 {
        log.append(event(i, if i % 2 == 0 { EventKind::Login } else { EventKind::Logout }));
    }
    log.committed().await.unwrap();
    let mut progress = log.subscribe();
    progress.wait_for(|p| p.checkpointed > 0).await.unwrap();
    // Records written after the last checkpoint are served without a proof.
    let checkpointed = log.progress().checkpointed;
    let page = log
        .search(
            &Filter { kind: Some("auth.logout".into()), ..Filter::default() },
            &sightline_audit::PageRequest { limit: 550, ..Default::default() },
        )
        .unwrap();
    assert_eq!(page.records.len(), 550);
    let seqs: Vec<u64> = page.records.iter().map(|r| Record::from_canonical(r.line.as_bytes()).unwrap().seq).collect();
    let want: Vec<u64> = (0..1200).rev().filter(|s| s % 2 == 1).take(550).collect();
    assert_eq!(seqs, want);
    let note = page.checkpoint.clone().unwrap();
    for (record, seq) in page.records.iter().zip(&seqs) {
        match &record.proof {
            Some(hashes) => {
                let hashes = hashes.iter().map(|h| sightline_core::audit::Hash::parse_hash(h).unwrap()).collect();
                let proof = sightline_core::audit::InclusionProof { index: *seq, hashes, checkpoint: note.clone() };
                proof.verify(record.line.as_bytes(), &page.verifier_key).unwrap();
            }
            None => assert!(*seq >= checkpointed, "record {seq} is covered by the checkpoint of size {checkpointed}"),
        }
    }

    // Pages follow on: the next one starts right below the last record listed, without a gap.
    assert_eq!(page.next_before, Some(*seqs.last().unwrap()));
    let next = log
        .search(
            &Filter { kind: Some("auth.logout".into()), ..Filter::default() },
            &sightline_audit::PageRequest { limit: 550, before: page.next_before, ..Default::default() },
        )
        .unwrap();
    let rest: Vec<u64> = next.records.iter().map(|r| Record::from_canonical(r.line.as_bytes()).unwrap().seq).collect();
    assert_eq!(rest, (0..1200).rev().filter(|s| s % 2 == 1).skip(550).collect::<Vec<_>>());
    assert_eq!(next.next_before, None, "the last page says so");

    // A folded kind is counted, not listed: the page shows everything else.
    let folded = log
        .search(
            &Filter::default(),
            &sightline_audit::PageRequest { limit: 10, fold: Some("auth.login".into()), before: None },
        )
        .unwrap();
    assert!(folded.records.iter().all(|r| !r.line.contains("\"kind\":\"auth.login\"")));
    assert_eq!(folded.records.len(), 10);
    let counted: u64 = folded.folded.iter().map(|f| f.count).sum();
    assert_eq!(counted, 9, "the logins between the ten logouts listed (1199 down to 1181): {:?}", folded.folded);
    assert!(folded.folded.iter().all(|f| f.kind == "auth.login" && f.first_seq <= f.last_seq));
    assert!(folded.kinds.contains(&"recording.chunk".to_owned()));
    log.close();
}

/// A consent receipt checked against the record alone: signed by the key the device enrolled
/// with, it verifies; signed by a key swapped into the relay's store afterwards (the live check
/// would accept it), it fails and names the record. No enrolment on record fails too.
#[tokio::test]
async fn consent_receipts_are_checked_against_the_key_the_device_enrolled_with() {
    use ed25519_dalek::{Signer, SigningKey};
    use sightline_proto::{ConsentKind, ConsentReceipt, Decision, Level};
    let receipt = |key: &SigningKey, session: &str| {
        let mut r = ConsentReceipt {
            kind: ConsentKind::Session,
            session_id: session.into(),
            device_id: "dev-1".into(),
            operator: "olga".into(),
            ticket: "INC-1".into(),
            endpoint_user: "anna".into(),
            decision: Decision::Allow,
            levels: vec![Level::View],
            time_ms: 1_780_000_000_100,
            signature: String::new(),
        };
        r.signature = hex::encode(key.sign(&sightline_proto::agent_auth::consent_message(&r)).to_bytes());
        format!(
            "levels: view; receipt signed at {} by the device key: {}",
            r.time_ms,
            serde_json::to_string(&r).unwrap()
        )
    };
    let (enrolled, swapped) = (SigningKey::from_bytes(&[7; 32]), SigningKey::from_bytes(&[8; 32]));
    let enrolment = Event {
        kind: EventKind::DeviceEnrolled,
        actor: "device:dev-1".into(),
        session: None,
        detail: sightline_audit::events::device_enrolled_detail(
            "front-desk",
            "office",
            &hex::encode(enrolled.verifying_key().to_bytes()),
            "0123456789abcdef",
            "ada",
        ),
        ..event(0, EventKind::DeviceEnrolled)
    };
    let consent = |i: u64, detail: String| Event { detail, ..event(i, EventKind::ConsentAllowed) };
    let write = |events: Vec<Event>| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let log = AuditLog::open(&settings(&dir, "relay-a")).unwrap();
        for e in events {
            log.append(e);
        }
        log.close();
        let logs = vec![NodeLog::load(&dir, &pinned(&dir)).unwrap()];
        (tmp, logs)
    };

    let (_a, good) =
        write(vec![enrolment.clone(), consent(1, receipt(&enrolled, "s1")), consent(2, receipt(&enrolled, "s2"))]);
    let report = sightline_audit::receipts::check_receipts(&good).unwrap();
    assert_eq!((report.verified, report.devices.len()), (2, 1));

    let (_b, forged) =
        write(vec![enrolment.clone(), consent(1, receipt(&enrolled, "s1")), consent(2, receipt(&swapped, "s2"))]);
    let err = format!("{:#}", sightline_audit::receipts::check_receipts(&forged).unwrap_err());
    assert!(
        err.contains("record 2 of relay-a") && err.contains("not signed by the device's key on record (record 0"),
        "{err}"
    );

    // A key changed through the relay (an admin's re-key token) is on the record: receipts before
    // the change are checked against the old key, after it against the new one, and the old key
    // signs nothing after it.
    let changed = Event {
        kind: EventKind::DeviceKeyChanged,
        actor: "device:dev-1".into(),
        session: None,
        detail: sightline_audit::events::device_key_changed_detail(
            "front-desk",
            "office",
            &hex::encode(swapped.verifying_key().to_bytes()),
            &hex::encode(enrolled.verifying_key().to_bytes()),
            "fedcba9876543210",
            "root",
        ),
        ..event(2, EventKind::DeviceKeyChanged)
    };
    let (_d, rekeyed) = write(vec![
        enrolment.clone(),
        consent(1, receipt(&enrolled, "s1")),
        changed.clone(),
        consent(3, receipt(&swapped, "s3")),
    ]);
    assert_eq!(sightline_audit::receipts::check_receipts(&rekeyed).unwrap().verified, 2);
    let (_e, stale) = write(vec![enrolment.clone(), changed, consent(3, receipt(&enrolled, "s3"))]);
    let err = format!("{:#}", sightline_audit::receipts::check_receipts(&stale).unwrap_err());
    assert!(err.contains("record 2 of relay-a") && err.contains("(record 1 of relay-a)"), "{err}");

    let (_c, unenrolled) = write(vec![consent(1, receipt(&enrolled, "s1"))]);
    let err = format!("{:#}", sightline_audit::receipts::check_receipts(&unenrolled).unwrap_err());
    assert!(err.contains("whose enrolment is not in the logs given"), "{err}");
}
