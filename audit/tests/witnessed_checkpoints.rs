//! Checkpoints one node witnessed of another (R43): `relay audit verify` with both logs holds
//! the other node to them, so it cannot present a shorter or different history later.

use std::path::Path;
use std::time::Duration;

use sightline_audit::commands::{self, NodeLog, TrustedKeys};
use sightline_audit::events::{Event, EventKind, Outcome};
use sightline_audit::{AuditLog, AuditSettings};

fn settings(dir: &Path, node: &str) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        node: node.into(),
        checkpoint_records: 3,
        checkpoint_interval: Duration::from_secs(3600),
    }
}

fn event(i: u64, kind: EventKind, subject: Option<String>, detail: String) -> Event {
    Event {
        ts_ms: 1_780_000_000_000 + i,
        kind,
        outcome: Outcome::Success,
        actor: "system".into(),
        subject,
        source: None,
        detail,
        session: None,
    }
}

fn key(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("audit.pub")).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_node_is_held_to_the_checkpoints_another_node_witnessed_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    // Node B writes six records, checkpointed at 3 and 6.
    let b = AuditLog::open(&settings(&dir_b, "node-b")).unwrap();
    for i in 0..6 {
        b.append(event(i, EventKind::DeviceTokenCreated, None, format!("token {i}")));
        if i == 2 {
            // Committed in two batches, so the writer signs a checkpoint after each.
            b.committed().await.unwrap();
        }
    }
    b.committed().await.unwrap();
    b.close();
    let witnessed = b.newest_checkpoint().unwrap();
    drop(b);
    // Node A witnessed B's newest checkpoint.
    let a = AuditLog::open(&settings(&dir_a, "node-a")).unwrap();
    a.append(event(0, EventKind::CheckpointWitnessed, Some("node:node-b".into()), witnessed));
    a.committed().await.unwrap();
    a.close();
    drop(a);
    let trusted = TrustedKeys::new([key(&dir_a), key(&dir_b)]);
    let logs = [NodeLog::load(&dir_a, &trusted).unwrap(), NodeLog::load(&dir_b, &trusted).unwrap()];
    assert_eq!(commands::check_witnessed(&logs, &trusted).unwrap(), 1);

    // B's log cut back to its first checkpoint (3 records): it verifies on its own...
    let cut = tmp.path().join("b-cut");
    std::fs::create_dir_all(&cut).unwrap();
    std::fs::copy(dir_b.join("audit.pub"), cut.join("audit.pub")).unwrap();
    let log = std::fs::read_to_string(dir_b.join("log.jsonl")).unwrap();
    let first_three: String = log.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(cut.join("log.jsonl"), first_three).unwrap();
    let checkpoints = std::fs::read_to_string(dir_b.join("checkpoints.jsonl")).unwrap();
    std::fs::write(cut.join("checkpoints.jsonl"), format!("{}\n", checkpoints.lines().next().unwrap())).unwrap();
    let alone = NodeLog::load(&cut, &trusted).unwrap();
    assert_eq!(alone.report.records, 3);
    // ...but not beside the log of the node that witnessed six.
    let logs = [NodeLog::load(&dir_a, &trusted).unwrap(), alone];
    let why = commands::check_witnessed(&logs, &trusted).unwrap_err().to_string();
    assert!(why.contains("node node-b's log holds 3 records, fewer than the checkpoint of 6"), "{why}");
    assert!(commands::verify(&[dir_a.clone(), cut.clone()], &trusted, false).is_err());
    // Control: without the witness's log, nothing holds the cut log to more.
    commands::verify(&[cut], &trusted, false).unwrap();
}
