//! Strict parsing on the relay's real sockets (issue 13): a message with a duplicate key or a
//! field its type does not have is refused with `bad_message`, changes nothing, and the socket
//! keeps working; the same message without the defect is acted upon (the control).

mod common;

use common::{Relay, Socket, next_text};
use futures_util::SinkExt;
use sightline_core::roles::Role;
use sightline_proto::{ErrorCode, RelayToAgent, RelayToViewer, decode};
use tokio_tungstenite::tungstenite::Message;

/// The code of the next error the viewer socket reports, skipping the lists it sends on connect.
async fn next_viewer_error(socket: &mut Socket) -> ErrorCode {
    loop {
        let text = next_text(socket).await.expect("socket still open");
        if let RelayToViewer::Error { code, .. } = decode::<RelayToViewer>(&text).unwrap() {
            return code;
        }
    }
}

#[tokio::test]
async fn viewer_socket_refuses_unknown_fields_and_duplicate_keys_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]).await;
    let cookie = relay.sign_in("op", &[Role::Operator]).await;
    let mut ws = relay.open(sightline_proto::VIEWER_WS_PATH, Some(&cookie)).await;

    let watch = |extra: &str| {
        format!(
            r#"{{"v":1,"type":"watch","agent_id":"no-such-agent","sdp":"v=0","ticket":"INC-1","reason":"incident","levels":["view"]{extra}}}"#
        )
    };
    let probes = [
        r#"{"v":1,"type":"unwatch","admin":true}"#.to_owned(),
        r#"{"v":1,"type":"control","action":"end","action":"pause"}"#.to_owned(),
        watch(r#","agent_id":"other""#),
        watch(r#","as":"admin""#),
    ];
    for probe in &probes {
        ws.send(Message::text(probe.clone())).await.unwrap();
        assert_eq!(next_viewer_error(&mut ws).await, ErrorCode::BadMessage, "{probe}");
    }
    // Controls: the same messages without the defect reach the relay's logic and get its answers,
    // on the same socket.
    ws.send(Message::text(r#"{"v":1,"type":"unwatch"}"#)).await.unwrap();
    assert_eq!(next_viewer_error(&mut ws).await, ErrorCode::NotWatching);
    ws.send(Message::text(watch(""))).await.unwrap();
    assert_eq!(next_viewer_error(&mut ws).await, ErrorCode::UnknownAgent);
}

#[tokio::test]
async fn agent_socket_refuses_a_hello_with_an_unknown_field() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(dir.path(), &[]).await;
    let hello = |extra: &str| {
        format!(
            r#"{{"v":1,"type":"hello","device_id":"dev-1","signature":"00","width":1,"height":1,"user":"alice"{extra}}}"#
        )
    };
    let refusal = |text: Option<String>| match decode::<RelayToAgent>(&text.expect("an answer")).unwrap() {
        RelayToAgent::Error { code, .. } => code,
        other => panic!("expected an error, got {other:?}"),
    };
    for (extra, want) in [
        (r#","trusted":true"#, ErrorCode::BadMessage),
        (r#","user":"root""#, ErrorCode::BadMessage),
        // Control: the well-formed hello is parsed and refused for what it says (an unknown device).
        ("", ErrorCode::DeviceRefused),
    ] {
        let mut ws = relay.open(sightline_proto::AGENT_WS_PATH, None).await;
        assert!(matches!(
            decode::<RelayToAgent>(&next_text(&mut ws).await.unwrap()).unwrap(),
            RelayToAgent::Challenge { .. }
        ));
        ws.send(Message::text(hello(extra))).await.unwrap();
        assert_eq!(refusal(next_text(&mut ws).await), want, "{extra}");
    }
}
