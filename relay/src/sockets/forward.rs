//! A viewer's session on another node (R43). A session runs on the node that holds its agent's
//! link; a viewer connected here whose `watch`, help code or `observe` names a device or session
//! of another node gets its view carried there: this node opens a viewer socket to that node
//! (`NodeRecord::url`), presenting a fresh token of the viewer's own login session and a
//! statement signed by this node's key that names the viewer's address
//! (`sightline_core::cluster::Forwarded`), and passes the view's messages both ways. The other
//! node decides, asks for consent, records, gates input and chat exactly as for its own viewers;
//! the browser's media goes straight to that node's media ports (its answer names them).
//!
//! Only the view's messages cross (`watch_answer`, `view_ended`, `session`, `error`); the lists
//! (agents, sessions, help requests) and TURN credentials are this node's. The far node pings
//! this socket like any viewer's, and this node watches the far node's silence the same way; a
//! browser that goes away closes the forwarded socket, and the far node ends the session as
//! "operator lost", as for its own viewers.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sightline_core::cluster::{FORWARDED_HEADER, NodeRecord};
use sightline_identity::{AuthUser, SESSION_COOKIE};
use sightline_proto::{ErrorCode, MAX_SIGNAL_BYTES, RelayToViewer, ViewerToRelay};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::sockets::wire::{Liveness, SEND_TIMEOUT};
use crate::state::AppState;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long opening the socket to another node may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a viewer's message is served.
pub enum Route {
    Here,
    There(NodeRecord),
}

/// Where `msg` goes: a request for a device or session held here, or unknown everywhere (which
/// this node refuses as before), is served here; one for another live node's device or session
/// goes there, and so does every message about a view already carried elsewhere. A socket
/// another node forwarded is always served here.
pub async fn route(
    state: &AppState,
    auth: &AuthUser,
    msg: &ViewerToRelay,
    carried: Option<&Forward>,
    forwarded: bool,
) -> Route {
    if forwarded {
        return Route::Here;
    }
    let cluster = state.cluster.view();
    let elsewhere = |node: Option<&NodeRecord>| match node {
        Some(n) if n.name != state.cluster.me() => Route::There(n.clone()),
        _ => Route::Here,
    };
    match msg {
        ViewerToRelay::Watch { agent_id, .. } if state.hub.agent(agent_id).is_err() => {
            elsewhere(cluster.node_of_agent(agent_id))
        }
        // Only those who may start sessions make this node look a code up.
        ViewerToRelay::WatchHelp { .. } if !auth.allows(sightline_core::roles::Capability::ViewSessions) => Route::Here,
        ViewerToRelay::WatchHelp { help_code, .. } => match state.help.find(help_code).await {
            Ok(request) if state.hub.agent(&request.agent_id).is_err() => {
                elsewhere(cluster.node_of_agent(&request.agent_id))
            }
            // Here, a code that names nothing counts against the operator's budget as before.
            _ => Route::Here,
        },
        ViewerToRelay::Observe { session_id, .. } if state.hub.session(session_id).is_none() => {
            elsewhere(cluster.node_of_session(session_id))
        }
        // A session that moved (R43) is taken up again where it runs now.
        ViewerToRelay::Rejoin { session_id, .. } if state.hub.session(session_id).is_none() => {
            elsewhere(cluster.node_of_session(session_id))
        }
        ViewerToRelay::Watch { .. } | ViewerToRelay::Observe { .. } | ViewerToRelay::Rejoin { .. } => Route::Here,
        ViewerToRelay::Unwatch | ViewerToRelay::Elevate { .. } | ViewerToRelay::Control { .. } => match carried {
            Some(f) => cluster.node(&f.node).cloned().map_or(Route::Here, Route::There),
            None => Route::Here,
        },
    }
}

/// Whether `msg` starts a view (and so ends the one open before, wherever it was).
pub fn starts_view(msg: &ViewerToRelay) -> bool {
    matches!(
        msg,
        ViewerToRelay::Watch { .. }
            | ViewerToRelay::WatchHelp { .. }
            | ViewerToRelay::Observe { .. }
            | ViewerToRelay::Rejoin { .. }
    )
}

/// The viewer's socket to another node.
pub struct Forward {
    /// The node it goes to.
    pub node: String,
    tx: SplitSink<Socket, Message>,
    rx: SplitStream<Socket>,
    live: Liveness,
    /// A view was asked for there and has not ended (nor been refused).
    in_view: bool,
    /// The far node has reported the view's session at least once.
    seen_status: bool,
    /// The view's session as last reported (its id and phase): one that ran when the far node
    /// was lost may move to another node (R43).
    session: Option<(String, sightline_proto::SessionPhase)>,
}

impl Forward {
    /// Opens a viewer socket to `node` for `auth`, who connected here from `client`.
    pub async fn open(
        state: &AppState,
        auth: &AuthUser,
        client: IpAddr,
        node: &NodeRecord,
    ) -> Result<Forward, (ErrorCode, String)> {
        let token = state
            .identity
            .forward_token(auth, sightline_identity::Carrying::ViewerSocket)
            .await
            .map_err(|_| (ErrorCode::SessionEnded, "your session ended; sign in again".to_owned()))?;
        let unreachable = |why: String| (ErrorCode::NodeUnreachable, why);
        let url = format!("{}/ws/viewer", node.url.replacen("http", "ws", 1));
        let mut request =
            url.into_client_request().map_err(|e| unreachable(format!("node {} has a bad address: {e}", node.name)))?;
        let origin = state.identity.settings.public_url.origin().ascii_serialization();
        let header = state.cluster.forward_header(
            sightline_core::cluster::PURPOSE_VIEWER_SOCKET,
            &node.name,
            &auth.claims.sid,
            client,
        );
        let headers = request.headers_mut();
        for (name, value) in
            [("cookie", format!("{SESSION_COOKIE}={token}")), ("origin", origin), (FORWARDED_HEADER, header)]
        {
            let value =
                value.parse().map_err(|_| unreachable(format!("cannot forward to node {}: bad header", node.name)))?;
            headers.insert(name, value);
        }
        let config =
            WebSocketConfig::default().max_message_size(Some(MAX_SIGNAL_BYTES)).max_frame_size(Some(MAX_SIGNAL_BYTES));
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(config), false);
        let socket = match tokio::time::timeout(OPEN_TIMEOUT, connect).await {
            Ok(Ok((socket, _))) => socket,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(refused))) => {
                let why = refused.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let why = format!("node {} refused to take this view ({}): {why}", node.name, refused.status());
                return Err(unreachable(why));
            }
            Ok(Err(e)) => return Err(unreachable(format!("node {} cannot be reached: {e}", node.name))),
            Err(_) => {
                return Err(unreachable(format!(
                    "node {} did not answer within {} s",
                    node.name,
                    OPEN_TIMEOUT.as_secs()
                )));
            }
        };
        let (tx, rx) = socket.split();
        tracing::info!(user = %auth.user.name, node = %node.name, "viewer forwarded to the node that holds the session");
        Ok(Forward {
            node: node.name.clone(),
            tx,
            rx,
            live: Liveness::default(),
            in_view: false,
            seen_status: false,
            session: None,
        })
    }

    /// Sends one of the viewer's messages; `false` when the far node is gone or stuck.
    pub async fn send(&mut self, msg: &ViewerToRelay) -> bool {
        if starts_view(msg) {
            (self.in_view, self.seen_status) = (true, false);
        }
        if matches!(msg, ViewerToRelay::Unwatch) {
            self.in_view = false;
        }
        let text = sightline_proto::encode(msg);
        matches!(tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Message::Text(text.into()))).await, Ok(Ok(())))
    }

    /// The next message of the view for the browser; `None` once the far node's socket ended.
    pub async fn next(&mut self) -> Option<RelayToViewer> {
        loop {
            let frame = self.rx.next().await?;
            self.live.heard();
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            };
            let msg = match sightline_proto::decode::<RelayToViewer>(&text) {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(node = %self.node, error = %e, "a forwarded viewer message from another node does not decode");
                    continue;
                }
            };
            match &msg {
                RelayToViewer::Session { status } => {
                    self.seen_status = true;
                    self.session = Some((status.session_id.clone(), status.phase));
                    if status.phase == sightline_proto::SessionPhase::Ended {
                        self.in_view = false;
                    }
                }
                RelayToViewer::ViewEnded { .. } | RelayToViewer::SessionMoving { .. } => self.in_view = false,
                // Refused before it started: no view there.
                RelayToViewer::Error { .. } if !self.seen_status => self.in_view = false,
                RelayToViewer::WatchAnswer { .. } | RelayToViewer::Error { .. } => {}
                // The lists and TURN credentials are this node's own.
                RelayToViewer::Agents { .. }
                | RelayToViewer::Reasons { .. }
                | RelayToViewer::Sessions { .. }
                | RelayToViewer::Nodes { .. }
                | RelayToViewer::HelpRequests { .. }
                | RelayToViewer::IceServers { .. } => continue,
            }
            return Some(msg);
        }
    }

    /// Whether a view runs there (so its loss must be told to the browser).
    pub fn in_view(&self) -> bool {
        self.in_view
    }

    /// The session of the view, if it was running (active or paused) when last reported.
    pub fn running_session(&self) -> Option<&str> {
        use sightline_proto::SessionPhase;
        self.session
            .as_ref()
            .filter(|(_, phase)| matches!(phase, SessionPhase::Active | SessionPhase::Paused))
            .map(|(id, _)| id.as_str())
    }

    /// Pings the far node; whether it has been silent too long (it pings every viewer socket
    /// every 2 s, so silence means it is gone).
    pub async fn beat(&mut self) -> bool {
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.tx.send(Message::Ping(Vec::new().into()))).await;
        matches!(sent, Ok(Ok(()))) && self.live.silent_for() <= crate::sockets::wire::SILENCE_LIMIT
    }

    /// Leaves the far node: its view ends as the operator ending it (`unwatch` first).
    pub async fn leave(mut self) {
        if self.in_view {
            self.send(&ViewerToRelay::Unwatch).await;
        }
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.tx.close()).await;
    }
}
