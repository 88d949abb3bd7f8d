//! R19, the agent's gate alone: input the relay should never have let through reaches the agent
//! anyway (the test puts it on the agent's data channel itself, past `LiveSession::input`, the
//! relay's gate), and the agent does not inject it while control is not granted. It tells the
//! relay, which records `input.refused_by_endpoint`: that report is the positive marker that the
//! probe was handled. The control: with control granted, the same message on the same path is
//! injected, and the X server shows the key down.
//!
//! Chat (R20) the same way: a line put on the agent's channel in a session without chat granted
//! is not shown, and the agent reports it (`chat.refused_by_endpoint`); with chat granted the
//! same path reports nothing, measured against a key that went down after the line.
//!
//! No relay fault is compiled in anywhere: the relay runs in this process, so the test reaches
//! its agent link directly (the binaries and the demo have no such path).

mod support;

use std::time::{Duration, Instant};

use sightline_proto::channel::{ChannelMessage, Input};
use sightline_proto::{Decision, Level, SessionPhase};
use support::xvfb::Xvfb;
use support::{Operator, start_agent, start_relay};

fn shift(down: bool) -> ChannelMessage {
    ChannelMessage::Input { input: Input::Key { key: "Shift".into(), down } }
}

/// A chat line sent past the relay's gate (its delivery is not what this test is about).
fn chat_past_the_gate(link: &sightline_relay::link::AgentLink, text: &str) {
    let line = ChannelMessage::Chat { from: "operator".into(), text: text.into() };
    link.send_chat(&line, Box::new(|_| {}));
}

#[test]
#[allow(unsafe_code)]
fn the_agent_refuses_input_the_relay_let_through_while_control_is_not_granted() {
    let xvfb = Xvfb::start();
    // The agent injects on its process's display (`DISPLAY`).
    // SAFETY: this binary holds this one test, and no runtime or other thread of ours exists yet
    // that could read the environment while it changes.
    unsafe { std::env::set_var("DISPLAY", &xvfb.display) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(gate_alone(&xvfb));
}

async fn gate_alone(xvfb: &Xvfb) {
    // The user grants what is asked, up to control.
    sightline_agent::frontend::scripted::answer_every_request(
        Decision::Allow,
        vec![Level::View, Level::Chat, Level::Control],
    );
    let relay = start_relay().await;
    let device = start_agent(&relay, "gate-1").await;

    // A view-only session.
    let mut ws = support::operator_socket(&relay, &device).await;
    let agent = relay.state.hub.agent(&device).expect("online once in the roster");
    let mut watching = support::watch_levels(&mut ws, &device, &[Level::View]).await.expect("the relay answers");
    let mut operator = Operator::new(ws, watching.status.take());
    let status = operator.status_until(|s| s.phase == SessionPhase::Active).await;
    assert_eq!(status.granted, vec![Level::View]);
    let session = agent.sessions.current().expect("the session on the link");
    let ChannelMessage::Input { input } = shift(true) else { unreachable!() };
    assert!(!session.input(input), "the relay's own gate admits no input to a view-only session");

    // Past the relay's gate, onto the agent's channel, until the agent reports a refusal.
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.events_of("input.refused_by_endpoint").is_empty() {
        assert!(Instant::now() < deadline, "the agent never reported the input it refused");
        agent.link.send_input(&shift(true));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!xvfb.shift_held(), "the agent injected a key in a view-only session");
    let refused = relay.events_of("input.refused_by_endpoint");
    assert_eq!(refused.len(), 1, "reported once per session");
    assert_eq!(refused[0].actor, format!("device:{device}"));
    assert_eq!(refused[0].session.as_ref().map(|s| s.session_id.as_str()), Some(session.id.as_str()));

    // Chat was not asked for, so not granted: the relay's gate refuses a line (counted for the
    // record), and a line put past it is refused by the agent, which says so once.
    session.operator_chat("operator", "through the front door");
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.events_of("chat.refused_by_endpoint").is_empty() {
        assert!(Instant::now() < deadline, "the agent never reported the chat line it refused");
        chat_past_the_gate(&agent.link, "past the relay's gate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused = relay.events_of("chat.refused_by_endpoint");
    assert_eq!(refused.len(), 1, "reported once per session");
    assert_eq!(refused[0].actor, format!("device:{device}"));
    assert_eq!(refused[0].session.as_ref().map(|s| s.session_id.as_str()), Some(session.id.as_str()));

    // The control: the operator ends it; a session with control; the same path injects.
    operator.control(sightline_proto::ControlAction::End).await;
    operator.status_until(|s| s.phase == SessionPhase::Ended).await;
    drop((watching, operator));
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.sessions.current().is_some_and(|s| !s.is_ended()) {
        assert!(Instant::now() < deadline, "the first session did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The relay's account, written with the session's end: the one line its own gate refused.
    while relay.events_of("chat.refused").is_empty() {
        assert!(Instant::now() < deadline, "no chat.refused record at the end of the first session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = relay.events_of("chat.refused");
    assert_eq!(counted.len(), 1);
    assert!(counted[0].detail.starts_with("1 chat lines:"), "{}", counted[0].detail);
    let mut ws = support::operator_socket(&relay, &device).await;
    let mut watching = support::watch_levels(&mut ws, &device, &[Level::View, Level::Chat, Level::Control])
        .await
        .expect("the relay answers");
    let mut operator = Operator::new(ws, watching.status.take());
    let status = operator.status_until(|s| s.phase == SessionPhase::Active).await;
    assert_eq!(status.granted, vec![Level::View, Level::Chat, Level::Control]);
    // A chat line on the same path, then the key: once the key is down, the line before it was
    // handled, and with chat granted nothing was refused.
    chat_past_the_gate(&agent.link, "with chat granted");
    let deadline = Instant::now() + Duration::from_secs(15);
    agent.link.send_input(&shift(true));
    while !xvfb.shift_held() {
        assert!(Instant::now() < deadline, "with control granted the key never went down: the probe cannot see");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.link.send_input(&shift(false));
    assert_eq!(relay.events_of("input.refused_by_endpoint").len(), 1, "nothing refused with control granted");
    assert_eq!(relay.events_of("chat.refused_by_endpoint").len(), 1, "no chat refused with chat granted");
    drop((watching, operator));
}
