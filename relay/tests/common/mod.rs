//! A relay on a free loopback port, with its events in memory, and what its integration tests
//! need to talk to it as a browser or as an agent would.

#![allow(dead_code)] // each test file uses its own part of this

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use sightline_audit::events::{Event, MemorySink};
use sightline_core::roles::Role;
use sightline_identity::User;
use sightline_proto::{AgentToRelay, RelayToAgent, decode, encode};
use sightline_relay::config::Config;
use sightline_relay::http::auth::SESSION_COOKIE;
use sightline_relay::state::AppState;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Relay {
    pub addr: SocketAddr,
    pub state: AppState,
    events: MemorySink,
}

/// A relay's configuration for a test: listening on `addr`, data in `dir`, the sample policy;
/// `extra` flags come after these, so they win.
pub fn config(dir: &std::path::Path, addr: SocketAddr, extra: &[&str]) -> Config {
    let mut args = vec![
        "relay".to_owned(),
        format!("--listen={addr}"),
        concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
        format!("--public-url=http://localhost:{}/", addr.port()),
        format!("--data-dir={}", dir.display()),
        "--node=test".to_owned(),
        concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/../relay/policy-sample.toml").to_owned(),
        // An auditor's public key: recorded segments need one (the relay holds no secret key).
        format!("--recording-recipient={}", age::x25519::Identity::generate().to_public()),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Config::parse_from(args)
}

impl Relay {
    /// Starts a relay on the sample policy; `extra` are further command-line flags.
    pub async fn start(dir: &std::path::Path, extra: &[&str]) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = config(dir, addr, extra);
        let events = MemorySink::default();
        let state = sightline_relay::server::build(&config, Arc::new(events.clone())).await.unwrap();
        tokio::spawn(sightline_relay::server::serve(listener, state.clone(), config, std::future::pending()));
        Relay { addr, state, events }
    }

    /// Opens a WebSocket on `path`, with a sign-in cookie if given.
    pub async fn open(&self, path: &str, cookie: Option<&str>) -> Socket {
        let mut request = format!("ws://127.0.0.1:{}{path}", self.addr.port()).into_client_request().unwrap();
        if let Some(c) = cookie {
            request.headers_mut().insert("cookie", c.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    /// A signed-in user with `roles`: the cookie a browser would hold.
    pub async fn sign_in(&self, name: &str, roles: &[Role]) -> String {
        let user = User {
            id: format!("id-{name}"),
            name: name.into(),
            display_name: name.into(),
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
            passkeys: vec![],
            created_ms: 0,
            bootstrap: false,
            directory: None,
            segments: None,
        };
        self.state.identity.put_user_unchecked(&user).await.unwrap();
        format!("{SESSION_COOKIE}={}", self.state.identity.start_session(&user).await.unwrap())
    }

    /// The security events emitted so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.0.lock().unwrap().clone()
    }

    /// Enrols a device in `segment` with a fixed key and connects it as an agent would, up to
    /// the relay's `welcome`.
    pub async fn agent(&self, segment: &str) -> FakeAgent {
        let key = SigningKey::from_bytes(&[7; 32]);
        let token = self.state.identity.create_agent_token("admin", segment, None).await.unwrap();
        let mut ws = self.open(sightline_proto::AGENT_WS_PATH, None).await;
        let RelayToAgent::Challenge { .. } = next_message(&mut ws).await.expect("a challenge") else { panic!() };
        let public_key = hex::encode(key.verifying_key().to_bytes());
        send(&mut ws, &AgentToRelay::Enrol { token, public_key, name: "desk".into() }).await;
        let Some(RelayToAgent::Enrolled { device_id, .. }) = next_message(&mut ws).await else {
            panic!("not enrolled")
        };
        let mut agent = FakeAgent { device_id, key, ws };
        agent.connect(self).await;
        agent
    }
}

/// An agent played by the test: it answers what the test tells it to, and can stop reading.
pub struct FakeAgent {
    pub device_id: String,
    key: SigningKey,
    pub ws: Socket,
}

impl FakeAgent {
    /// (Re)connects with the device key, up to the relay's `welcome`.
    pub async fn connect(&mut self, relay: &Relay) {
        self.ws = relay.open(sightline_proto::AGENT_WS_PATH, None).await;
        let Some(RelayToAgent::Challenge { nonce, .. }) = next_message(&mut self.ws).await else {
            panic!("no challenge")
        };
        let message = sightline_proto::agent_auth::signed_message(&hex::decode(nonce).unwrap(), &self.device_id);
        let hello = AgentToRelay::Hello {
            device_id: self.device_id.clone(),
            signature: hex::encode(self.key.sign(&message).to_bytes()),
            width: 640,
            height: 480,
            user: "alice".into(),
            unattended: false,
            resume: None,
        };
        send(&mut self.ws, &hello).await;
        let Some(RelayToAgent::Welcome { .. }) = next_message(&mut self.ws).await else { panic!("not welcome") };
    }
}

pub async fn send<T: serde::Serialize>(ws: &mut Socket, msg: &T) {
    ws.send(Message::text(encode(msg))).await.unwrap();
}

/// The next text message, bounded so a silent relay fails the test instead of hanging it; `None`
/// once the socket is closed.
pub async fn next_text(socket: &mut Socket) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("the relay answered") {
            Some(Ok(Message::Text(t))) => return Some(t.to_string()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

pub async fn next_message<T: serde::de::DeserializeOwned + serde::Serialize>(socket: &mut Socket) -> Option<T> {
    next_text(socket).await.map(|t| decode(&t).unwrap())
}
