//! Strict parsing on the relay's real sockets (issue 13): a message with a duplicate key or a
//! field its type does not have is refused with `bad_message`, changes nothing, and the socket
//! keeps working; the same message without the defect is acted upon (the control).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use sightline_core::roles::Role;
use sightline_proto::{ErrorCode, RelayToAgent, RelayToViewer, decode};
use sightline_relay::api::SESSION_COOKIE;
use sightline_relay::config::Config;
use sightline_relay::identity::User;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn relay(dir: &std::path::Path) -> (SocketAddr, sightline_relay::server::AppState) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config::parse_from([
        "relay".to_owned(),
        format!("--listen={addr}"),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        format!("--public-url=http://localhost:{}/", addr.port()),
        format!("--data-dir={}", dir.display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").to_owned(),
    ]);
    let state = sightline_relay::server::build(&config, Arc::new(sightline_relay::events::MemorySink::default()))
        .await
        .unwrap();
    tokio::spawn(sightline_relay::server::serve(listener, state.clone(), config, std::future::pending()));
    (addr, state)
}

async fn open(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Socket {
    let mut request = format!("ws://127.0.0.1:{}{path}", addr.port()).into_client_request().unwrap();
    if let Some(c) = cookie {
        request.headers_mut().insert("cookie", c.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next text message, bounded so a silent relay fails the test instead of hanging it.
async fn next_text(socket: &mut Socket) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("the relay answered") {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

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
    let (addr, state) = relay(dir.path()).await;
    let user = User {
        id: "id-op".into(),
        name: "op".into(),
        display_name: "Op".into(),
        roles: BTreeSet::from([Role::Operator]),
        passkeys: vec![],
        created_ms: 0,
        bootstrap: false,
    };
    state.identity.put_user_unchecked(&user).await.unwrap();
    let cookie = format!("{SESSION_COOKIE}={}", state.identity.start_session(&user).await.unwrap());
    let mut ws = open(addr, sightline_proto::VIEWER_WS_PATH, Some(&cookie)).await;

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
    let (addr, _state) = relay(dir.path()).await;
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
        let mut ws = open(addr, sightline_proto::AGENT_WS_PATH, None).await;
        assert!(matches!(
            decode::<RelayToAgent>(&next_text(&mut ws).await.unwrap()).unwrap(),
            RelayToAgent::Challenge { .. }
        ));
        ws.send(Message::text(hello(extra))).await.unwrap();
        assert_eq!(refusal(next_text(&mut ws).await), want, "{extra}");
    }
}
