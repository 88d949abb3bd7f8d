//! A relay in this process, a synthetic agent enrolled on it, and a viewer speaking the
//! signaling protocol with a WebRTC peer: what the agent's integration tests share.

#![allow(dead_code)] // each test file uses its own part

pub mod xvfb;

use futures_util::{SinkExt, StreamExt};
use sightline_agent::capture::SourceKind;
use sightline_agent::connection::{self, RunConfig};
use sightline_agent::encoder::EncoderConfig;
use sightline_peer::{DataChannel, Peer, PeerConfig, VideoReceiver};
use sightline_proto::{RelayToViewer, SessionStatus, ViewerToRelay, decode, encode};
use tokio_tungstenite::tungstenite::Message;

/// A relay in this process, with an operator session minted on its own identity service (the
/// passkey ceremony itself is covered by the browser tests).
pub struct TestRelay {
    pub addr: std::net::SocketAddr,
    pub state: sightline_relay::state::AppState,
    pub operator_cookie: String,
    pub events: sightline_audit::events::MemorySink,
    pub dir: tempfile::TempDir,
    /// The auditor's identity: the relay encrypts recordings to its public key and holds none.
    pub auditor: age::x25519::Identity,
}

pub async fn start_relay() -> TestRelay {
    start_relay_with(&[]).await
}

/// A relay with extra flags (after the defaults, so they win).
pub async fn start_relay_with(extra: &[String]) -> TestRelay {
    let dir = tempfile::tempdir().unwrap();
    let auditor = age::x25519::Identity::generate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut args = vec![
        "relay".to_owned(),
        format!("--listen={addr}"),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        format!("--public-url=http://localhost:{}/", addr.port()),
        format!("--data-dir={}", dir.path().join("relay").display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").to_owned(),
        // Test volumes may be small; the floor itself is tested where it matters.
        "--recording-min-free-mb=1".to_owned(),
        format!("--recording-recipient={}", auditor.to_public()),
    ];
    args.extend(extra.iter().cloned());
    let config = <sightline_relay::config::Config as clap::Parser>::parse_from(args);
    let events = sightline_audit::events::MemorySink::default();
    let state = sightline_relay::server::build(&config, std::sync::Arc::new(events.clone())).await.unwrap();
    let operator = sightline_identity::User {
        id: "op-1".into(),
        name: "operator".into(),
        display_name: "operator".into(),
        roles: [sightline_core::roles::Role::Operator].into_iter().collect(),
        passkeys: vec![],
        created_ms: 0,
        bootstrap: false,
        directory: None,
        segments: None,
    };
    state.identity.put_user_unchecked(&operator).await.unwrap();
    let token = state.identity.start_session(&operator).await.unwrap();
    tokio::spawn(sightline_relay::server::serve(listener, state.clone(), config, std::future::pending()));
    TestRelay {
        addr,
        state,
        operator_cookie: format!("{}={token}", sightline_relay::http::auth::SESSION_COOKIE),
        events,
        dir,
        auditor,
    }
}

impl TestRelay {
    /// Names of the events emitted so far, in order.
    pub fn event_kinds(&self) -> Vec<String> {
        self.events.0.lock().unwrap().iter().map(|e| e.kind.name()).collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<sightline_audit::events::Event> {
        self.events.0.lock().unwrap().iter().filter(|e| e.kind.name() == kind).cloned().collect()
    }
}

/// Enrols and runs a synthetic-screen agent; returns its device id.
pub async fn start_agent(relay: &TestRelay, name: &str) -> String {
    let token = relay.state.identity.create_agent_token("test", "office", None).await.unwrap();
    let url = connection::agent_socket_url(&format!("ws://{}", relay.addr).parse().unwrap()).unwrap();
    let dir = relay.dir.path().join(name);
    let info = connection::enroll(&url, &token, name, &dir, &Default::default(), None).await.unwrap();
    let config = RunConfig {
        relay_urls: vec![url],
        device: std::sync::Arc::new(sightline_agent::device::Device::load(&dir).unwrap()),
        source: SourceKind::Synthetic,
        route: Default::default(),
        unattended: false,
        synthetic_size: (1280, 720),
        encoder: EncoderConfig { width: 0, height: 0, fps: 30, bitrate_kbps: 2500, cpu_used: 12, threads: 2 },
    };
    tokio::spawn(connection::run(config, std::future::pending()));
    info.device_id
}

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The operator's signaling socket, once `agent_id` is in the roster.
pub async fn operator_socket(relay: &TestRelay, agent_id: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws/viewer", relay.addr).into_client_request().unwrap();
    request.headers_mut().insert("cookie", relay.operator_cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else { continue };
        if let Ok(RelayToViewer::Agents { agents }) = decode::<RelayToViewer>(&text)
            && agents.iter().any(|a| a.agent_id == agent_id)
        {
            return ws;
        }
    }
}

/// A view the relay answered.
pub struct Watching {
    pub peer: Peer,
    pub track: VideoReceiver,
    pub channel: DataChannel,
    /// The newest session status that came before the answer.
    pub status: Option<sightline_proto::SessionStatus>,
}

/// Asks to watch `agent_id` (ticket INC-42, view and chat, as the viewer does by default) with a
/// receive-only peer and a data channel; or the relay's refusal.
pub async fn watch(ws: &mut Socket, agent_id: &str) -> Result<Watching, (sightline_proto::ErrorCode, String)> {
    watch_levels(ws, agent_id, &[sightline_proto::Level::View, sightline_proto::Level::Chat]).await
}

/// `watch`, asking for `levels`.
pub async fn watch_levels(
    ws: &mut Socket,
    agent_id: &str,
    levels: &[sightline_proto::Level],
) -> Result<Watching, (sightline_proto::ErrorCode, String)> {
    let peer =
        Peer::new(PeerConfig { bind_ip: "127.0.0.1".parse().unwrap(), sockets: Default::default() }).await.unwrap();
    peer.add_video_receiver().await.unwrap();
    let channel = peer.create_data_channel(sightline_proto::channel::LABEL).await.unwrap();
    let offer = peer.offer().await.unwrap();
    let watch = ViewerToRelay::Watch {
        agent_id: agent_id.into(),
        sdp: offer,
        ticket: "INC-42".into(),
        reason: "incident".into(),
        levels: levels.to_vec(),
        help_code: None,
    };
    ws.send(Message::Text(encode(&watch).into())).await.unwrap();
    let mut status = None;
    let answer = loop {
        let Message::Text(text) = ws.next().await.unwrap().unwrap() else { continue };
        match decode::<RelayToViewer>(&text).unwrap() {
            RelayToViewer::WatchAnswer { sdp } => break sdp,
            RelayToViewer::Session { status: s } => status = Some(*s),
            RelayToViewer::Error { code, message } => {
                peer.close().await;
                return Err((code, message));
            }
            RelayToViewer::Agents { .. }
            | RelayToViewer::Reasons { .. }
            | RelayToViewer::HelpRequests { .. }
            | RelayToViewer::Nodes { .. } => {
                continue;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    peer.accept_answer(&answer).await.unwrap();
    let track = peer.next_track().await.expect("video track");
    Ok(Watching { peer, track, channel, status })
}

/// Every consent request in this process is answered: allow, as the window ticks (view and chat).
pub fn allow_defaults() {
    sightline_agent::frontend::scripted::answer_every_request(
        sightline_proto::Decision::Allow,
        vec![sightline_proto::Level::View, sightline_proto::Level::Chat],
    );
}

/// The operator's socket once watching: read all the time (so pings are answered, as a
/// browser does), statuses passed on.
pub struct Operator {
    sink: futures_util::stream::SplitSink<Socket, Message>,
    pub statuses: tokio::sync::mpsc::UnboundedReceiver<SessionStatus>,
    seen: Option<SessionStatus>,
}

impl Operator {
    pub fn new(ws: Socket, seen: Option<SessionStatus>) -> Operator {
        let (sink, mut stream) = ws.split();
        let (tx, statuses) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                if let Ok(RelayToViewer::Session { status }) = decode::<RelayToViewer>(&text) {
                    let _ = tx.send(*status);
                }
            }
        });
        Operator { sink, statuses, seen }
    }

    /// The newest status once one satisfies `wanted`.
    pub async fn status_until(&mut self, wanted: impl Fn(&SessionStatus) -> bool) -> SessionStatus {
        if let Some(status) = self.seen.take().filter(|s| wanted(s)) {
            return status;
        }
        loop {
            let status = self.statuses.recv().await.expect("socket open");
            if wanted(&status) {
                return status;
            }
        }
    }

    pub async fn control(&mut self, action: sightline_proto::ControlAction) {
        let message = sightline_proto::encode(&sightline_proto::ViewerToRelay::Control { action });
        self.sink.send(Message::Text(message.into())).await.unwrap();
    }
}
