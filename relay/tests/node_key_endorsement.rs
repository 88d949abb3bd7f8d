//! Issue 23: `relay audit endorse` vouches with a node's key for another node key, so agents that
//! pinned the first accept the second; the endorsement is on the node's record (made by whom, on
//! which host) or it is not made, it is never made with a key the command would have to create,
//! and a relay refuses to start with endorsements that would only fail at its agents.

use std::path::Path;
use std::process::Command;

use sightline_audit::commands::{NodeLog, TrustedKeys};
use sightline_core::relay_proof::{RelayProver, Trust, check};
use sightline_proto::relay_proof::KeyEndorsement;

fn relay(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relay"))
        .arg(format!("--data-dir={}", data.display()))
        .arg("--node=home")
        .args(args)
        .output()
        .expect("the relay binary runs")
}

fn settings(data: &Path, node: &str) -> sightline_audit::AuditSettings {
    sightline_audit::AuditSettings {
        dir: data.join("audit"),
        node: node.into(),
        checkpoint_records: 1000,
        checkpoint_interval: std::time::Duration::from_secs(1),
    }
}

#[test]
fn an_endorsement_is_recorded_and_leads_agents_to_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, next) = (tmp.path().join("home"), tmp.path().join("next"));
    let home_key = sightline_audit::evidence_key(&settings(&home, "home")).unwrap();
    let next_key = sightline_audit::evidence_key(&settings(&next, "next")).unwrap();
    std::fs::write(tmp.path().join("next.pub"), next_key.verifier_key()).unwrap();

    let out = relay(&home, &["audit", "endorse", "--key", tmp.path().join("next.pub").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let endorsement: KeyEndorsement = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((endorsement.key.as_str(), endorsement.by.as_str()), (next_key.verifier_key(), home_key.verifier_key()));

    // What an agent that pinned the home key concludes from the new node's proof.
    let prover = RelayProver::new(&next_key, vec![endorsement]).unwrap();
    let proof = prover.prove(&[1; 32], &[2; 32]);
    assert_eq!(
        check(&[home_key.verifier_key().to_owned()], &[1; 32], &[2; 32], Some(&proof)),
        Ok(Trust::Endorsed { added: vec![next_key.verifier_key().to_owned()] })
    );

    // On the home node's record: who endorsed which key, verified against the pinned key.
    let log = NodeLog::load(&home.join("audit"), &TrustedKeys::new([home_key.verifier_key().to_owned()])).unwrap();
    let endorsed: Vec<_> = log.records.iter().filter(|r| r.kind == "node.key_endorsed").collect();
    assert_eq!(endorsed.len(), 1);
    assert!(endorsed[0].actor.starts_with("cli:"), "{}", endorsed[0].actor);
    assert_eq!(endorsed[0].subject.as_deref(), Some(format!("node-key:{}", next_key.verifier_key()).as_str()));

    // A directory without a node key gets no endorsement, and no key made up to sign one.
    let empty = tmp.path().join("empty");
    let out = relay(&empty, &["audit", "endorse", "--key", next_key.verifier_key()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no node key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!empty.join("audit/audit.key").exists());
}

#[tokio::test]
async fn a_relay_refuses_to_start_with_an_endorsement_that_does_not_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("relay");
    let own = sightline_audit::evidence_key(&settings(&data, "test")).unwrap();
    let old = sightline_audit::evidence_key(&settings(&tmp.path().join("old"), "test")).unwrap();
    let stranger = sightline_audit::evidence_key(&settings(&tmp.path().join("stranger"), "x")).unwrap();
    let start = |endorsement: KeyEndorsement, attempt: &str| {
        let file = tmp.path().join(format!("endorsements-{attempt}.jsonl"));
        std::fs::write(&file, serde_json::to_string(&endorsement).unwrap()).unwrap();
        let config = <sightline_relay::config::Config as clap::Parser>::parse_from([
            "relay".to_owned(),
            concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
            // A store of its own each time; the node's key is the one in `data/audit`.
            format!("--data-dir={}", tmp.path().join(attempt).display()),
            format!("--audit-dir={}", data.join("audit").display()),
            "--node=test".to_owned(),
            concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/policy-sample.toml").to_owned(),
            format!("--recording-recipient={}", age::x25519::Identity::generate().to_public()),
            format!("--agent-key-endorsements={}", file.display()),
        ]);
        async move {
            sightline_relay::server::build(&config, std::sync::Arc::new(sightline_audit::events::MemorySink::default()))
                .await
                .map(|state| state.prover.verifier_key().to_owned())
        }
    };
    // The control: an endorsement of this node's key by the old one starts.
    let good = sightline_core::relay_proof::endorse(&old, own.verifier_key()).unwrap();
    assert_eq!(start(good.clone(), "good").await.unwrap(), own.verifier_key());
    // The same endorsement claimed for a stranger's key does not.
    let forged = KeyEndorsement { by: stranger.verifier_key().to_owned(), ..good };
    let err = start(forged, "forged").await.unwrap_err();
    assert!(format!("{err:#}").contains("does not verify"), "{err:#}");
}
