//! One account of activity and of every end (issue 12, R23): a chat line from the operator is
//! activity on both sides alike (defined once, `core::session::Event::OperatorActivity`), so a
//! chat-only session is not ended on the endpoint while the relay keeps it; and when it does go
//! idle, it ends once, as idle, whichever side's clock saw it first. (That the agent reports its
//! own ends is shown by the relay's unit test `an_idle_end_the_agent_reports_ends_the_session_with_the_same_reason`
//! and, here, by the race either side may win.)

mod support;

use std::time::{Duration, Instant};

use sightline_peer::ChannelEvent;
use sightline_proto::channel::ChannelMessage;
use sightline_proto::{EndReason, SessionPhase};
use support::{Operator, start_agent, start_relay_with};

/// Sends a chat line as the operator, waiting for the data channel to open; returns once the
/// relay has shown it back (it reached the agent's channel).
async fn chat(channel: &sightline_peer::DataChannel, text: &str) {
    let line = sightline_proto::channel::encode(&ChannelMessage::Chat { from: String::new(), text: text.into() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.send(&line).await.is_err() {
        assert!(Instant::now() < deadline, "the data channel never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        match tokio::time::timeout(Duration::from_secs(10), channel.recv()).await.expect("the line came back") {
            Some(ChannelEvent::Text(t)) => {
                if let Ok(ChannelMessage::Chat { text: shown, .. }) = sightline_proto::channel::decode(&t)
                    && shown == text
                {
                    return;
                }
            }
            Some(_) => {}
            None => panic!("the data channel closed"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_keeps_both_sides_active_and_an_idle_session_ends_once_as_idle() {
    support::allow_defaults();
    const IDLE_S: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml")).unwrap();
    assert!(sample.contains("idle_timeout_s = 900"), "the office segment's idle timeout moved in the sample");
    std::fs::write(&policy, sample.replacen("idle_timeout_s = 900", &format!("idle_timeout_s = {IDLE_S}"), 1)).unwrap();
    let relay = start_relay_with(&[format!("--policy={}", policy.display())]).await;
    let device = start_agent(&relay, "idle-1").await;
    let mut ws = support::operator_socket(&relay, &device).await;
    let mut watching = support::watch(&mut ws, &device).await.expect("the relay answers");
    let mut operator = Operator::new(ws, watching.status.take());
    operator.status_until(|s| s.phase == SessionPhase::Active).await;

    // Only chat, for three idle timeouts: neither side may call the session idle.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(3 * IDLE_S) {
        chat(&watching.channel, &format!("line {n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The positive marker: a last line reached the endpoint, after which nothing had ended.
    chat(&watching.channel, "still here").await;
    while let Ok(status) = operator.statuses.try_recv() {
        assert_ne!(status.phase, SessionPhase::Ended, "ended while chatting: {:?}", status.end_reason);
    }
    assert!(relay.events_of("session.ended").is_empty());

    // Silence: the session ends as idle, once.
    let ended = tokio::time::timeout(
        Duration::from_secs(IDLE_S + 10),
        operator.status_until(|s| s.phase == SessionPhase::Ended),
    )
    .await
    .expect("the session ends when idle");
    assert_eq!(ended.end_reason, Some(EndReason::Idle));
    let records = relay.events_of("session.ended");
    assert_eq!(records.len(), 1, "{records:?}");
    // The relay's timer or the endpoint's (reported, and named as such) saw it first.
    assert!(["system", "agent"].contains(&records[0].actor.as_str()), "{}", records[0].actor);
    assert!(records[0].detail.starts_with(&EndReason::Idle.describe()), "{}", records[0].detail);
    watching.peer.close().await;
}
