//! Relay + agent (synthetic screen) + a WebRTC subscriber, all on loopback: the subscriber gets
//! VP8 through the relay, reassembles and decodes frames, and the frame counters advance. A
//! second subscriber on the same agent gets frames too (fan-out). The agent enrols with a
//! one-time token and proves its key on connection; the viewers carry an operator session.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sightline_agent::capture::SourceKind;
use sightline_agent::connection::{self, RunConfig};
use sightline_agent::decoder::Vp8Decoder;
use sightline_agent::encoder::EncoderConfig;
use sightline_core::framecode;
use sightline_peer::vp8::FrameAssembler;
use sightline_peer::{Peer, PeerConfig};
use sightline_proto::{RelayToViewer, ViewerToRelay, decode, encode};
use tokio_tungstenite::tungstenite::Message;

/// A relay in this process, with an operator session minted on its own identity service (the
/// passkey ceremony itself is covered by the browser tests).
struct TestRelay {
    addr: std::net::SocketAddr,
    state: sightline_relay::server::AppState,
    operator_cookie: String,
    _dir: tempfile::TempDir,
}

async fn start_relay() -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = <sightline_relay::config::Config as clap::Parser>::parse_from([
        "relay".to_owned(),
        format!("--listen={addr}"),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        format!("--public-url=http://localhost:{}/", addr.port()),
        format!("--data-dir={}", dir.path().join("relay").display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").to_owned(),
    ]);
    let state =
        sightline_relay::server::build(&config, std::sync::Arc::new(sightline_relay::events::MemorySink::default()))
            .await
            .unwrap();
    let operator = sightline_relay::identity::User {
        id: "op-1".into(),
        name: "operator".into(),
        display_name: "operator".into(),
        roles: [sightline_core::roles::Role::Operator].into_iter().collect(),
        passkeys: vec![],
        created_ms: 0,
        bootstrap: false,
    };
    state.identity.put_user_unchecked(&operator).await.unwrap();
    let token = state.identity.start_session(&operator).await.unwrap();
    tokio::spawn(sightline_relay::server::serve(listener, state.clone(), config, std::future::pending()));
    TestRelay { addr, state, operator_cookie: format!("{}={token}", sightline_relay::api::SESSION_COOKIE), _dir: dir }
}

async fn start_agent(relay: &TestRelay, name: &str) -> String {
    let token = relay.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let url = connection::agent_socket_url(&format!("ws://{}", relay.addr).parse().unwrap()).unwrap();
    let dir = relay._dir.path().join(name);
    let info = connection::enroll(&url, &token, name, &dir, None).await.unwrap();
    let config = RunConfig {
        relay_url: url,
        device: std::sync::Arc::new(sightline_agent::device::Device::load(&dir).unwrap()),
        source: SourceKind::Synthetic,
        ca_cert: None,
        synthetic_size: (1280, 720),
        encoder: EncoderConfig { width: 0, height: 0, fps: 30, bitrate_kbps: 2500, cpu_used: 12, threads: 2 },
    };
    tokio::spawn(connection::run(config, std::future::pending()));
    info.device_id
}

/// A viewer: signaling socket plus a receive-only peer connection. Returns decoded frame counters.
async fn watch(relay: &TestRelay, agent_id: &str, frames_wanted: usize) -> Vec<u32> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws/viewer", relay.addr).into_client_request().unwrap();
    request.headers_mut().insert("cookie", relay.operator_cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Wait until the agent is in the roster.
    loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else { continue };
        if let Ok(RelayToViewer::Agents { agents }) = decode::<RelayToViewer>(&text)
            && agents.iter().any(|a| a.agent_id == agent_id)
        {
            break;
        }
    }
    let peer = Peer::new(PeerConfig { bind_ip: "127.0.0.1".parse().unwrap() }).await.unwrap();
    peer.add_video_receiver().await.unwrap();
    let offer = peer.offer().await.unwrap();
    let watch = ViewerToRelay::Watch {
        agent_id: agent_id.into(),
        sdp: offer,
        ticket: "INC-42".into(),
        reason: "incident".into(),
        levels: vec![sightline_proto::Level::View],
    };
    ws.send(Message::Text(encode(&watch).into())).await.unwrap();
    let answer = loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else { continue };
        match decode::<RelayToViewer>(&text).unwrap() {
            RelayToViewer::WatchAnswer { sdp } => break sdp,
            RelayToViewer::Agents { .. } | RelayToViewer::Reasons { .. } | RelayToViewer::Session { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    peer.accept_answer(&answer).await.unwrap();
    let track = peer.next_track().await.expect("video track");
    let mut assembler = FrameAssembler::default();
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut counters = Vec::new();
    let mut first_frame = None;
    while counters.len() < frames_wanted {
        let packet = track.read().await.expect("track ended early");
        let Some(frame) = assembler.push(&packet) else { continue };
        if first_frame.is_none() {
            // The relay holds a new viewer's stream until a keyframe starts: nothing undecodable
            // is sent ahead of it.
            first_frame = Some(frame.keyframe);
        }
        // A frame after a lost one may not decode; the counters below prove the stream advances.
        let Ok(pictures) = decoder.decode(&frame.data) else { continue };
        for luma in pictures {
            assert_eq!((luma.width, luma.height), (1280, 720));
            counters.push(framecode::read_luma_plane(&luma.y, luma.stride).unwrap().counter);
        }
    }
    peer.close().await;
    assert_eq!(first_frame, Some(true), "the first frame a viewer gets is a keyframe");
    counters
}

fn assert_advancing(counters: &[u32]) {
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "frame counters must strictly increase: {counters:?}");
    assert!(counters.last().unwrap() - counters.first().unwrap() >= counters.len() as u32 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_advancing_frames_through_the_relay_after_consent() {
    sightline_agent::frontend::scripted::answer_every_request(
        sightline_proto::Decision::Allow,
        vec![sightline_proto::Level::View],
    );
    let relay = start_relay().await;
    let device = start_agent(&relay, "synthetic-1").await;
    let counters = tokio::time::timeout(Duration::from_secs(30), watch(&relay, &device, 45))
        .await
        .expect("the viewer got its frames within 30 s");
    assert_advancing(&counters);
}
