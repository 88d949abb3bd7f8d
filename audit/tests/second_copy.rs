//! The audit log's second copy (R43): nothing is acknowledged before the copy holds it, a copy
//! that fails fails the log closed and loses nothing, a restarted node fills the copy's hole
//! first, and `recover` rebuilds a verifiable log from the copy or names what it lacks.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_audit::commands::{self, TrustedKeys};
use sightline_audit::events::{Event, EventKind, Outcome};
use sightline_audit::{AuditLog, AuditSettings, OpenError, Replica};

fn settings(dir: &Path) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        node: "node-a".into(),
        checkpoint_records: 4,
        checkpoint_interval: Duration::from_millis(50),
    }
}

fn event(i: u64) -> Event {
    Event {
        ts_ms: 1_780_000_000_000 + i,
        kind: EventKind::DeviceTokenCreated,
        outcome: Outcome::Success,
        actor: "admin".into(),
        subject: None,
        source: None,
        detail: format!("token {i}"),
        session: None,
    }
}

/// What the copy holds (sequence number, record), and whether it fails now.
type CopyState = (Vec<(u64, Vec<u8>)>, bool);

/// A copy in memory that the test can make fail.
#[derive(Clone, Default)]
struct MemoryCopy(Arc<Mutex<CopyState>>);

impl MemoryCopy {
    fn held(&self) -> Vec<(u64, Vec<u8>)> {
        self.0.lock().unwrap().0.clone()
    }

    fn fail(&self, failing: bool) {
        self.0.lock().unwrap().1 = failing;
    }
}

impl Replica for MemoryCopy {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn last_seq(&mut self) -> Result<Option<u64>, String> {
        let state = self.0.lock().unwrap();
        if state.1 {
            return Err("copy down".into());
        }
        Ok(state.0.last().map(|(seq, _)| *seq))
    }

    fn record(&mut self, seq: u64) -> Result<Option<Vec<u8>>, String> {
        Ok(self.0.lock().unwrap().0.iter().find(|(s, _)| *s == seq).map(|(_, r)| r.clone()))
    }

    fn append(&mut self, first_seq: u64, records: &[Vec<u8>]) -> Result<(), String> {
        let mut state = self.0.lock().unwrap();
        if state.1 {
            return Err("copy down".into());
        }
        let held = state.0.last().map_or(0, |(seq, _)| seq + 1);
        if first_seq > held {
            return Err(format!("the copy holds {held} records, and {first_seq} was to come next"));
        }
        for (seq, record) in (first_seq..).zip(records) {
            if seq >= held {
                state.0.push((seq, record.clone()));
            }
        }
        Ok(())
    }
}

fn disk(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let text = std::fs::read(dir.join("log.jsonl")).unwrap();
    (0..).zip(text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec)).collect()
}

async fn until_available(log: &AuditLog) {
    for _ in 0..100 {
        if log.available().is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the log did not recover");
}

#[tokio::test]
async fn nothing_is_acknowledged_before_the_copy_holds_it_and_a_failing_copy_fails_closed_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let copy = MemoryCopy::default();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();

    log.append(event(0));
    log.committed().await.unwrap();
    assert_eq!(copy.held(), disk(&dir), "acknowledged: on disk and in the copy, the same bytes");

    // The copy goes: the event reaches the disk, but is not acknowledged, and the log refuses.
    copy.fail(true);
    log.append(event(1));
    let refused = log.committed().await.unwrap_err();
    assert!(refused.0.contains("copying to memory: copy down"), "{refused}");
    assert!(log.available().is_err());
    assert_eq!(disk(&dir).len(), 2);
    assert_eq!(copy.held().len(), 1);

    // It comes back: the record that waited is copied first, then the next one.
    copy.fail(false);
    until_available(&log).await;
    log.append(event(2));
    log.committed().await.unwrap();
    assert_eq!(copy.held(), disk(&dir));
    assert_eq!(copy.held().len(), 3);
    log.close();
}

#[tokio::test]
async fn a_restarted_node_first_copies_what_its_previous_run_wrote_and_did_not_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    // A previous run wrote three records; the copy got only the first (the node was killed).
    let first = AuditLog::open(&settings(&dir)).unwrap();
    for i in 0..3 {
        first.append(event(i));
    }
    first.committed().await.unwrap();
    first.close();
    drop(first);
    let copy = MemoryCopy::default();
    copy.0.lock().unwrap().0.push(disk(&dir)[0].clone());

    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();
    log.append(event(3));
    log.committed().await.unwrap();
    assert_eq!(copy.held(), disk(&dir), "the hole was filled before the new record");
    // Control: the new record is in it, after the three of the previous run.
    assert_eq!(copy.held().last().unwrap().0, 3);
    log.close();
}

#[tokio::test]
async fn recover_rebuilds_a_verifiable_log_from_the_copy_and_names_what_it_lacks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let copy = MemoryCopy::default();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();
    for i in 0..10 {
        log.append(event(i));
    }
    log.committed().await.unwrap();
    log.close();
    let published = log.newest_checkpoint().expect("a checkpoint at close");
    drop(log);
    let key = std::fs::read_to_string(dir.join("audit.pub")).unwrap();
    let trusted = TrustedKeys::new([key]);

    let out = tmp.path().join("rebuilt");
    let rebuilt = commands::recover(&copy.held(), Some(&published), &trusted, &out).unwrap();
    assert_eq!((rebuilt.records, rebuilt.published, rebuilt.tail), (10, 10, 0));
    assert_eq!(std::fs::read(out.join("log.jsonl")).unwrap(), std::fs::read(dir.join("log.jsonl")).unwrap());
    commands::verify(std::slice::from_ref(&out), &trusted, false).unwrap();
    // A second rebuild into the same directory is refused: nothing is overwritten.
    let again = commands::recover(&copy.held(), Some(&published), &trusted, &out).unwrap_err();
    assert!(again.to_string().contains("is not empty"), "{again}");

    // A record missing in the middle, and records the published checkpoint covers beyond the end.
    let mut holed = copy.held();
    holed.remove(4);
    let why = commands::recover(&holed, Some(&published), &trusted, &tmp.path().join("holed")).unwrap_err();
    assert!(why.to_string().contains("lacks 1 record(s) the node wrote: 4;"), "{why}");
    assert!(!tmp.path().join("holed").exists(), "nothing rebuilt");
    let short = &copy.held()[..7];
    let why = commands::recover(short, Some(&published), &trusted, &tmp.path().join("short")).unwrap_err();
    assert!(why.to_string().contains("lacks 3 record(s) the node wrote: 7 to 9;"), "{why}");
    // A record altered in the copy does not verify against the published checkpoint.
    let mut altered = copy.held();
    altered[2].1 = String::from_utf8(altered[2].1.clone()).unwrap().replace("token 2", "token 9").into_bytes();
    assert!(commands::recover(&altered, Some(&published), &trusted, &tmp.path().join("altered")).is_err());
}

#[tokio::test]
async fn a_copy_that_lost_its_records_gets_them_again_from_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let copy = MemoryCopy::default();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();
    for i in 0..5 {
        log.append(event(i));
    }
    log.committed().await.unwrap();
    // Redis restarted without its disk: the stream is empty.
    copy.0.lock().unwrap().0.clear();
    log.append(event(5));
    // The append meets a hole (refused, not written after it), then the disk fills it.
    let _ = log.committed().await;
    until_available(&log).await;
    log.append(event(6));
    log.committed().await.unwrap();
    assert_eq!(copy.held(), disk(&dir));
    assert_eq!(copy.held().len(), 7);
    log.close();
}

#[tokio::test]
async fn a_disk_that_lost_records_the_copy_holds_does_not_start_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let copy = MemoryCopy::default();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();
    for i in 0..3 {
        log.append(event(i));
    }
    log.committed().await.unwrap();
    log.close();
    drop(log);
    // The node starts again under its name on an empty disk (its key kept, its log gone).
    std::fs::remove_file(dir.join("log.jsonl")).unwrap();
    std::fs::remove_file(dir.join("checkpoints.jsonl")).unwrap();
    let refused = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap_err();
    assert!(matches!(refused, OpenError::CopyAhead { copy: 3, log: 0, .. }), "{refused}");
    assert!(refused.to_string().contains("relay audit recover"), "{refused}");
    // Control: with the copy level with the disk, it opens.
    copy.0.lock().unwrap().0.clear();
    AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy))).unwrap().close();
}

#[tokio::test]
async fn a_copy_of_another_log_under_this_node_name_is_refused_and_nothing_is_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    // Another log of the same node name (another disk, another key): its first three records
    // are what the copy holds.
    let elsewhere = tmp.path().join("elsewhere");
    let other = AuditLog::open(&settings(&elsewhere)).unwrap();
    for i in 0..3 {
        other.append(event(100 + i));
    }
    other.committed().await.unwrap();
    other.close();
    drop(other);
    let dir = tmp.path().join("audit");
    let here = AuditLog::open(&settings(&dir)).unwrap();
    for i in 0..5 {
        here.append(event(i));
    }
    here.committed().await.unwrap();
    here.close();
    drop(here);

    let foreign = MemoryCopy::default();
    foreign.0.lock().unwrap().0 = disk(&elsewhere);
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(foreign.clone()))).unwrap();
    log.append(event(5));
    let refused = log.committed().await.unwrap_err();
    assert!(refused.0.contains("the copy's record 2 differs from this log's"), "{refused}");
    // It stays refused: the copy is not written with this log's records.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(log.available().is_err());
    assert_eq!(foreign.held(), disk(&elsewhere));
    log.close();
    drop(log);

    // Control: a copy holding this log's own first three records is filled up and acknowledged.
    let own = MemoryCopy::default();
    own.0.lock().unwrap().0 = disk(&dir)[..3].to_vec();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(own.clone()))).unwrap();
    log.append(event(6));
    log.committed().await.unwrap();
    assert_eq!(own.held(), disk(&dir));
    log.close();
}

/// Break-glass (R43): while the store is down, a person signed in with a sealed code must leave
/// evidence, so the node may acknowledge on its disk alone; the copy gets every record back.
#[tokio::test]
async fn on_the_disk_alone_a_failing_copy_acknowledges_and_the_copy_catches_up_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let copy = MemoryCopy::default();
    let log = AuditLog::open_replicated(&settings(&dir), None, Some(Box::new(copy.clone()))).unwrap();
    log.append(event(0));
    log.committed().await.unwrap();

    copy.fail(true);
    // The control: without the switch the copy's failure refuses.
    log.append(event(1));
    assert!(log.committed().await.is_err());

    log.acknowledge_on_disk_alone(true);
    log.available().expect("the disk takes records");
    log.append(event(2));
    log.committed().await.expect("acknowledged on the disk alone");
    assert_eq!(disk(&dir).len(), 3);
    assert_eq!(copy.held().len(), 1, "the copy is still down");

    // Switched off (the break-glass person left), the copy's failure refuses again.
    log.acknowledge_on_disk_alone(false);
    assert!(log.available().is_err());

    copy.fail(false);
    until_available(&log).await;
    log.append(event(3));
    log.committed().await.unwrap();
    assert_eq!(copy.held(), disk(&dir), "every record, those acknowledged on the disk alone included");
}
