//! A request whose mask rules this endpoint cannot apply (window rules on a screen source with no
//! windows) is declined before its user is asked, and the relay ends the session with the
//! endpoint's reason (R33; issue 13: no request goes unanswered). The control is the same request
//! without the rule, which the user is asked and allows.

mod support;

use futures_util::{SinkExt, StreamExt};
use sightline_proto::{EndReason, RelayToViewer, SessionPhase, SessionStatus, decode};
use support::{TestRelay, start_agent, start_relay_with};
use tokio_tungstenite::tungstenite::Message;

const WINDOW_RULE: &str = "
[[segments.office.masks]]
name = \"account statement\"
audience = \"both\"
window = { title = \"*Kontoauszug*\" }
";

/// A relay on the sample policy plus `extra`, a synthetic agent on it, and an operator's socket.
async fn relay_with_policy(dir: &std::path::Path, extra: &str) -> (TestRelay, String, support::Socket) {
    let policy = dir.join("policy.toml");
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml")).unwrap();
    std::fs::write(&policy, format!("{sample}{extra}")).unwrap();
    let relay = start_relay_with(&[format!("--policy={}", policy.display())]).await;
    let device = start_agent(&relay, "masked-1").await;
    let ws = support::operator_socket(&relay, &device).await;
    (relay, device, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_masks_on_a_source_without_windows_are_declined_before_the_user_is_asked() {
    support::allow_defaults();
    let dir = tempfile::tempdir().unwrap();
    let (relay, device, mut ws) = relay_with_policy(dir.path(), WINDOW_RULE).await;
    let watch = format!(
        r#"{{"v":1,"type":"watch","agent_id":"{device}","sdp":"v=0","ticket":"INC-9","reason":"incident","levels":["view"]}}"#
    );
    ws.send(Message::text(watch)).await.unwrap();
    let status: SessionStatus = loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next()).await.expect("an answer");
        let Some(Ok(Message::Text(text))) = next else { panic!("the operator socket closed") };
        match decode::<RelayToViewer>(&text).unwrap() {
            RelayToViewer::Session { status } if status.phase != SessionPhase::AwaitingConsent => break *status,
            RelayToViewer::Error { code, message } => panic!("{code:?}: {message}"),
            _ => {}
        }
    };
    assert_eq!(status.phase, SessionPhase::Ended);
    let Some(EndReason::DeclinedByEndpoint(why)) = &status.end_reason else { panic!("{status:?}") };
    assert!(why.contains("no windows"), "{why}");
    // Never put to the user (the scripted user would have allowed it).
    assert!(relay.events_of("consent.allowed").is_empty());
    let ended = relay.events_of("session.ended");
    assert_eq!(ended.len(), 1);
    assert!(ended[0].detail.contains("no windows"), "{}", ended[0].detail);

    // Control: the same request without the window rule is asked and allowed.
    let dir = tempfile::tempdir().unwrap();
    let (relay, device, mut ws) = relay_with_policy(dir.path(), "").await;
    let watching = support::watch(&mut ws, &device).await.expect("the relay answers");
    let mut operator = support::Operator::new(ws, watching.status);
    operator.status_until(|s| s.phase == SessionPhase::Active).await;
    assert_eq!(relay.events_of("consent.allowed").len(), 1);
}
