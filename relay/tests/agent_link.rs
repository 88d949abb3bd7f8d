//! Nothing between relay and agent is dropped silently (issue 13): a request the agent declines
//! ends with its reason on both sides, and a link the relay cannot queue to any more is closed, so
//! that both sides end the session instead of going on out of step.

mod common;

use std::time::Duration;

use common::{Relay, next_message, send};
use futures_util::SinkExt;
use sightline_audit::events::EventKind;
use sightline_core::roles::Role;
use sightline_proto::{AgentToRelay, EndReason, ErrorCode, RelayToAgent, RelayToViewer, SessionPhase};

/// The operator asks for a session on the agent's device: the agent's next message is the
/// consent request, whose session id is returned.
async fn request_session(relay: &Relay, viewer: &mut common::Socket, agent: &mut common::FakeAgent) -> String {
    let watch = format!(
        r#"{{"v":1,"type":"watch","agent_id":"{}","sdp":"v=0","ticket":"INC-7","reason":"incident","levels":["view"]}}"#,
        agent.device_id
    );
    viewer.send(tokio_tungstenite::tungstenite::Message::text(watch)).await.unwrap();
    match next_message::<RelayToAgent>(&mut agent.ws).await.expect("the link is open") {
        RelayToAgent::ConsentRequest { request } => request.session_id,
        other => panic!("expected a consent request, got {other:?} (relay at {})", relay.addr),
    }
}

/// The viewer's next session status in phase `Ended`.
async fn ended_status(viewer: &mut common::Socket) -> sightline_proto::SessionStatus {
    loop {
        match next_message::<RelayToViewer>(viewer).await.expect("the viewer socket is open") {
            RelayToViewer::Session { status } if status.phase == SessionPhase::Ended => return *status,
            RelayToViewer::Error { code, message } => panic!("{code:?}: {message}"),
            _ => {}
        }
    }
}

fn ended_events(relay: &Relay, session_id: &str) -> Vec<String> {
    relay
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::SessionEnded)
        .filter(|e| e.session.as_ref().is_some_and(|s| s.session_id == session_id))
        .map(|e| e.detail)
        .collect()
}

/// A relay, an agent played by the test, and an operator's request waiting on it.
struct Waiting {
    _dir: tempfile::TempDir,
    relay: Relay,
    agent: common::FakeAgent,
    viewer: common::Socket,
    session_id: String,
}

async fn waiting() -> Waiting {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]).await;
    let mut agent = relay.agent("demo").await;
    let cookie = relay.sign_in("op", &[Role::Operator]).await;
    let mut viewer = relay.open(sightline_proto::VIEWER_WS_PATH, Some(&cookie)).await;
    let session_id = request_session(&relay, &mut viewer, &mut agent).await;
    Waiting { _dir: dir, relay, agent, viewer, session_id }
}

#[tokio::test]
async fn a_request_the_agent_declines_ends_on_both_sides_with_the_agents_reason() {
    let Waiting { _dir, relay, mut agent, mut viewer, session_id } = waiting().await;
    send(
        &mut agent.ws,
        &AgentToRelay::Declined { session_id: session_id.clone(), reason: "another session runs here".into() },
    )
    .await;
    let status = ended_status(&mut viewer).await;
    assert_eq!(status.session_id, session_id);
    assert_eq!(status.end_reason, Some(EndReason::DeclinedByEndpoint("another session runs here".into())));
    let ended = ended_events(&relay, &session_id);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].contains("another session runs here"), "{ended:?}");

    // A decline naming a session the relay does not know is answered, not acted upon; and the
    // device takes the next request (control: the first decline freed it).
    send(&mut agent.ws, &AgentToRelay::Declined { session_id: "no-such-session".into(), reason: "x".into() }).await;
    loop {
        match next_message::<RelayToAgent>(&mut agent.ws).await.expect("the link is open") {
            RelayToAgent::Error { code, .. } => {
                assert_eq!(code, ErrorCode::UnknownSession);
                break;
            }
            // The relay tells the agent the declined session ended (it ignores that: not its own).
            RelayToAgent::Session { session_id: id, .. } if id == session_id => {}
            other => panic!("{other:?}"),
        }
    }
    let next = request_session(&relay, &mut viewer, &mut agent).await;
    assert_ne!(next, session_id);
}

/// The relay's tasks share this test's one thread, so they run only when the test awaits: the
/// queue to the agent fills while the test sends without yielding.
#[tokio::test(flavor = "current_thread")]
async fn a_link_that_cannot_take_a_message_is_closed_and_both_sides_end_the_session() {
    let Waiting { _dir, relay, mut agent, mut viewer, session_id } = waiting().await;

    // Numbered messages, queued without a pause, until one does not fit; none after it.
    let link = relay.state.hub.agent(&agent.device_id).unwrap().link.clone();
    let numbered = |n: usize| RelayToAgent::Error { code: ErrorCode::Busy, message: n.to_string() };
    let mut queued = 0usize;
    while link.send(numbered(queued)) {
        queued += 1;
        assert!(queued < 100_000, "the relay never refused a message to an agent that did not read");
    }
    assert!(!link.send(numbered(queued + 1)), "nothing may be queued after a lost message");

    // The agent, reading all along from here, gets a prefix of them in order and then the close:
    // never a gap followed by more. (It answers pings while it reads, so only the lost message
    // can be what closed the link; without that the read below would time out.)
    // (Bounded as a whole: pings keep coming, so a link left open would never fall silent.)
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut read = 0usize;
        while let Some(msg) = next_message::<RelayToAgent>(&mut agent.ws).await {
            match msg {
                RelayToAgent::Error { code: ErrorCode::Busy, message } => {
                    assert_eq!(message, read.to_string(), "a gap in what the agent got");
                    read += 1;
                }
                // The session's own messages, queued before the flood (the recorder's status).
                RelayToAgent::Session { session_id: id, .. } if id == session_id => {}
                other => panic!("{other:?}"),
            }
        }
        read
    })
    .await
    .expect("the relay closed the link");
    assert!(read <= queued, "read {read} of {queued}");

    // The relay's side: the session ends as the agent lost, once, and the device is offline.
    let status = ended_status(&mut viewer).await;
    assert_eq!((status.session_id.as_str(), status.end_reason), (session_id.as_str(), Some(EndReason::AgentLost)));
    assert_eq!(ended_events(&relay, &session_id).len(), 1);
    tokio::time::timeout(Duration::from_secs(10), async {
        while relay.state.hub.agent(&agent.device_id).is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the link is gone from the hub");

    // Control: the relay recovered; the agent connects again and takes a new request.
    agent.connect(&relay).await;
    let next = request_session(&relay, &mut viewer, &mut agent).await;
    assert_ne!(next, session_id);
}
