//! A session of a lost node, claimed by its endpoint on this node (R43, issue 27): taken over only
//! with receipts the device signed, only once the node counts as lost, with no level beyond what
//! the user signed for, and recorded as moved (`relay::takeover`).

mod common;

use common::{Relay, Socket, next_message, send};
use ed25519_dalek::{Signer, SigningKey};
use sightline_audit::events::EventKind;
use sightline_core::cluster::NodeRecord;
use sightline_core::handover::Handover;
use sightline_proto::{
    AgentToRelay, ConsentKind, ConsentReceipt, Decision, Level, OperatorInfo, RelayToAgent, ResumeClaim, SessionPhase,
    SessionSummary, SessionTerms,
};
use sightline_store::Collection;

const LOST: &str = "node-x";
const SESSION: &str = "5e5510000000000000000001";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The record node-x left when it was killed: it ran `SESSION` on `device` with view, chat and
/// control granted.
fn lost_record(device: &str) -> NodeRecord {
    let terms = SessionTerms {
        consent_timeout_s: 60,
        grant_expiry_s: 300,
        max_duration_s: 3600,
        idle_timeout_s: 600,
        observer_required_for_control: false,
        recording_required: true,
        elevation_needs_senior: false,
        active_confirmation: false,
        ends_at: None,
        end_warning_s: 0,
        unattended: false,
    };
    let handover = Handover {
        session_id: SESSION.into(),
        agent_id: device.into(),
        operator: OperatorInfo {
            name: "operator".into(),
            display_name: "Operator".into(),
            role: "operator".into(),
            organisation: "Bank".into(),
        },
        ticket: "INC-1".into(),
        reason: "incident".into(),
        requested: vec![Level::View, Level::Chat, Level::Control],
        allowed: vec![Level::View, Level::Chat, Level::Control],
        granted: vec![Level::View, Level::Chat, Level::Control],
        grant_expires_ms: Some(now_ms() + 300_000),
        created_ms: now_ms() - 60_000,
        started_ms: now_ms() - 50_000,
        paused_by: None,
        warned: false,
        terms,
        masks: Vec::new(),
        window_required: false,
        help_request: None,
        recording: None,
    };
    let summary = SessionSummary {
        session_id: SESSION.into(),
        agent_id: device.into(),
        agent_name: "desk".into(),
        segment: "office".into(),
        operator: "operator".into(),
        ticket: "INC-1".into(),
        reason: "incident".into(),
        phase: SessionPhase::Active,
        granted: handover.granted.clone(),
        pending_elevation: Vec::new(),
        needs_senior: false,
        observers: Vec::new(),
        started_ms: handover.created_ms,
        node: String::new(),
    };
    NodeRecord {
        name: LOST.into(),
        url: "http://127.0.0.1:9".into(),
        key: "unused".into(),
        heartbeat_ms: now_ms(),
        agents: Vec::new(),
        sessions: vec![summary],
        handovers: vec![handover],
    }
}

fn receipt(key: &SigningKey, device: &str, kind: ConsentKind, levels: &[Level]) -> ConsentReceipt {
    let mut r = ConsentReceipt {
        kind,
        session_id: SESSION.into(),
        device_id: device.into(),
        operator: "operator".into(),
        ticket: "INC-1".into(),
        endpoint_user: "alice".into(),
        decision: Decision::Allow,
        levels: levels.to_vec(),
        time_ms: now_ms() - 50_000,
        signature: String::new(),
    };
    r.signature = hex::encode(key.sign(&sightline_proto::agent_auth::consent_message(&r)).to_bytes());
    r
}

/// Connects the device with `claim` in its hello (tried again while its last connection is still
/// registered) and returns the answer to the claim.
async fn claim(relay: &Relay, device: &str, claim: ResumeClaim) -> (Socket, RelayToAgent) {
    let key = SigningKey::from_bytes(&[7; 32]);
    for _ in 0..50 {
        let mut ws = relay.open(sightline_proto::AGENT_WS_PATH, None).await;
        let Some(RelayToAgent::Challenge { nonce, .. }) = next_message(&mut ws).await else { panic!("no challenge") };
        let message = sightline_proto::agent_auth::signed_message(&hex::decode(nonce).unwrap(), device);
        let hello = AgentToRelay::Hello {
            device_id: device.into(),
            signature: hex::encode(key.sign(&message).to_bytes()),
            width: 640,
            height: 480,
            user: "alice".into(),
            unattended: false,
            resume: Some(claim.clone()),
        };
        send(&mut ws, &hello).await;
        match next_message(&mut ws).await {
            Some(RelayToAgent::Welcome { .. }) => {}
            Some(RelayToAgent::Error { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            other => panic!("unexpected answer to hello: {other:?}"),
        }
        // The claim is answered beside the link (after up to the 6 s it takes to count a node
        // as lost); pings and other messages may come first.
        let answer = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match next_message::<RelayToAgent>(&mut ws).await.expect("the link stays up") {
                    m @ (RelayToAgent::Resumed { .. } | RelayToAgent::ResumeRefused { .. }) => return m,
                    _ => continue,
                }
            }
        })
        .await
        .expect("an answer to the claim");
        return (ws, answer);
    }
    panic!("the device's previous connection never went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_nodes_session_is_taken_over_only_with_the_devices_own_receipts_and_never_beyond_them() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]).await;
    let agent = relay.agent("office").await;
    let device = agent.device_id.clone();
    drop(agent);
    let key = SigningKey::from_bytes(&[7; 32]);

    // No node runs the session: refused at once.
    let (ws, answer) = claim(
        &relay,
        &device,
        ResumeClaim {
            session_id: SESSION.into(),
            receipts: vec![receipt(&key, &device, ConsentKind::Session, &[Level::View])],
        },
    )
    .await;
    assert!(
        matches!(&answer, RelayToAgent::ResumeRefused { reason, .. } if reason == "no relay node runs this session"),
        "{answer:?}"
    );
    drop(ws);

    relay.state.identity.store().put(Collection::Nodes, LOST, &lost_record(&device)).await.unwrap();
    // A receipt signed by another key is refused (the attack), before anything is claimed.
    let forger = SigningKey::from_bytes(&[9; 32]);
    let (ws, answer) = claim(
        &relay,
        &device,
        ResumeClaim {
            session_id: SESSION.into(),
            receipts: vec![receipt(
                &forger,
                &device,
                ConsentKind::Session,
                &[Level::View, Level::Chat, Level::Control],
            )],
        },
    )
    .await;
    assert!(
        matches!(&answer, RelayToAgent::ResumeRefused { reason, .. } if reason.starts_with("a receipt does not verify")),
        "{answer:?}"
    );
    drop(ws);
    assert!(relay.events().iter().all(|e| e.kind != EventKind::SessionMoved));

    // The control: the device's own receipt for view and chat takes the session over, without
    // the control the lost node had granted (the user never signed for it).
    let (_ws, answer) = claim(
        &relay,
        &device,
        ResumeClaim {
            session_id: SESSION.into(),
            receipts: vec![receipt(&key, &device, ConsentKind::Session, &[Level::View, Level::Chat])],
        },
    )
    .await;
    assert_eq!(answer, RelayToAgent::Resumed { session_id: SESSION.into() });
    let session = relay.state.hub.session(SESSION).expect("the session runs here");
    assert_eq!(session.summary().granted, vec![Level::View, Level::Chat]);
    assert_eq!(session.summary().phase, SessionPhase::Active);
    let moved: Vec<_> = relay.events().into_iter().filter(|e| e.kind == EventKind::SessionMoved).collect();
    assert_eq!(moved.len(), 1);
    assert!(moved[0].detail.starts_with("taken over from relay node node-x, silent for "), "{}", moved[0].detail);
    assert_eq!(moved[0].session.as_ref().map(|s| s.levels.clone()), Some(vec![Level::View, Level::Chat]));
    // The recording starts anew, before the endpoint was told to go on.
    assert!(relay.events().iter().any(|e| e.kind == EventKind::RecordingStarted));
    // Claimed once: no survivor records its end.
    assert!(relay.events().iter().all(|e| e.kind != EventKind::SessionEnded));
}
