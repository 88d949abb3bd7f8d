//! Issue 23: an agent pins the relay node's key when it enrols, and refuses any relay that
//! cannot prove that key (a copied store, a redirected name, a relay stood up beside the real
//! one), before it says anything to it. A replaced key reaches the agent only through an
//! endorsement by the key it pinned (`relay audit endorse`, `--agent-key-endorsements`).

mod support;

use sightline_agent::connection;
use sightline_agent::device::Device;

fn socket_url(relay: &support::TestRelay) -> url::Url {
    connection::agent_socket_url(&format!("ws://{}", relay.addr).parse().unwrap()).unwrap()
}

/// The audit settings a relay started with `--audit-dir=DIR --node=NODE` uses.
fn audit_settings(dir: &std::path::Path, node: &str) -> sightline_audit::AuditSettings {
    sightline_audit::AuditSettings {
        dir: dir.to_owned(),
        node: node.into(),
        checkpoint_records: 1000,
        checkpoint_interval: std::time::Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_talks_only_to_the_relay_key_it_pinned_or_one_that_key_endorsed() {
    let keys = tempfile::tempdir().unwrap();
    let home_audit = keys.path().join("home-audit");
    let home = support::start_relay_with(&[format!("--audit-dir={}", home_audit.display())]).await;
    let token = home.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let agent_dir = home.dir.path().join("agent");
    connection::enroll(&socket_url(&home), &token, "desk", &agent_dir, &Default::default(), None).await.unwrap();
    let device = Device::load(&agent_dir).unwrap();
    assert_eq!(device.relay_pins().keys(), vec![home.state.prover.verifier_key().to_owned()]);

    // The control: the relay it enrolled with answers its signed call.
    connection::ask_help(&socket_url(&home), &device, &Default::default()).await.expect("the pinned relay is trusted");
    assert_eq!(home.events_of("help.requested").len(), 1);

    // Another relay (its own node key) is refused before the agent sends anything: it never
    // hears of the device, where a signed call from an unknown device is recorded as refused.
    let rogue = support::start_relay_with(&[]).await;
    let refused = connection::ask_help(&socket_url(&rogue), &device, &Default::default()).await.unwrap_err();
    let words = format!("{refused:#}");
    assert!(words.contains("never pinned") && words.contains(rogue.state.prover.verifier_key()), "{words}");
    // The marker after the probe: the same relay does hear a device it enrolled.
    let rogue_token = rogue.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let own_dir = rogue.dir.path().join("own-agent");
    connection::enroll(&socket_url(&rogue), &rogue_token, "own", &own_dir, &Default::default(), None).await.unwrap();
    connection::ask_help(&socket_url(&rogue), &Device::load(&own_dir).unwrap(), &Default::default()).await.unwrap();
    assert_eq!(rogue.events_of("help.requested").len(), 1, "only the rogue's own agent reached it");
    assert!(rogue.events_of("device.auth_failed").is_empty(), "the pinned agent sent nothing to the rogue");

    // A legitimate replacement: the new node's key, endorsed by the pinned one.
    let next_audit = keys.path().join("next-audit");
    let next_key = sightline_audit::evidence_key(&audit_settings(&next_audit, "test")).unwrap();
    let home_key = sightline_audit::evidence_key(&audit_settings(&home_audit, "test")).unwrap();
    let endorsement = sightline_core::relay_proof::endorse(&home_key, next_key.verifier_key()).unwrap();
    let endorsements = keys.path().join("endorsements.jsonl");
    std::fs::write(&endorsements, format!("{}\n", serde_json::to_string(&endorsement).unwrap())).unwrap();
    let next = support::start_relay_with(&[
        format!("--audit-dir={}", next_audit.display()),
        format!("--agent-key-endorsements={}", endorsements.display()),
    ])
    .await;
    // This relay's store does not know the device (a shared store would), so it refuses the call
    // itself: what matters is that the agent trusted the endorsed key and spoke to it.
    let answered = connection::ask_help(&socket_url(&next), &device, &Default::default()).await.unwrap_err();
    assert!(format!("{answered:#}").contains("refused the help request"), "{answered:#}");
    let heard = next.events_of("device.auth_failed");
    assert_eq!(heard.len(), 1, "the endorsed relay heard the agent's call");
    assert_eq!(heard[0].actor, format!("device:{}", device.info.device_id));
    assert_eq!(
        Device::load(&agent_dir).unwrap().relay_pins().keys(),
        vec![home.state.prover.verifier_key().to_owned(), next.state.prover.verifier_key().to_owned()],
        "the endorsed key is pinned beside the old one"
    );
}
