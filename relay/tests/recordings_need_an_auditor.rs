//! R32: the relay encrypts recordings to the auditors' public keys and holds none that decrypts;
//! a policy that records a segment, with nobody named to open its recordings, does not start.

mod common;

use std::sync::Arc;

use sightline_audit::events::MemorySink;

#[tokio::test]
async fn a_recorded_segment_without_an_auditor_to_open_it_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = "127.0.0.1:1".parse().unwrap();
    // The common configuration names an auditor; without one (the last flag wins) it refuses.
    let mut config = common::config(tmp.path(), addr, &[]);
    config.recording_recipients.clear();
    let err = sightline_relay::server::build(&config, Arc::new(MemorySink::default())).await.err().expect("refused");
    assert!(err.to_string().contains("is recorded, and no --recording-recipient"), "{err:#}");
    // Control: with one, it starts, and its data directory holds no age identity.
    let config = common::config(tmp.path(), addr, &[]);
    let state = sightline_relay::server::build(&config, Arc::new(MemorySink::default())).await.expect("starts");
    drop(state);
    let mut files = vec![tmp.path().to_owned()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(!bytes.windows(14).any(|w| w == b"AGE-SECRET-KEY"), "{} holds an age identity", path.display());
        }
    }
}
