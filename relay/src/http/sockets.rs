//! The two WebSocket upgrades: the agent's (authenticated on the socket itself, by its device
//! key) and the viewer's (same-origin, a signed-in user whose roles allow viewing). Both cap the
//! message size; the sockets themselves are `crate::sockets`.

use std::net::SocketAddr;
use tracing::Instrument;

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::IdentityError;
use sightline_proto::MAX_SIGNAL_BYTES;

use super::access::VIEWER_SOCKET;
use super::auth::authenticate;
use super::error::ApiError;
use crate::state::AppState;

/// The agent's fresh nonce, which the relay's first message signs (`relay_proof`).
#[derive(Debug, serde::Deserialize)]
pub(super) struct AgentDial {
    nonce: Option<String>,
}

pub(super) async fn agent_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(dial): Query<AgentDial>,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    use sightline_proto::relay_proof::NONCE_BYTES;
    let nonce = match dial.nonce.as_deref().map(hex::decode) {
        None => None,
        Some(Ok(nonce)) if nonce.len() == NONCE_BYTES => Some(nonce),
        Some(_) => {
            let why = format!("the agent's nonce must be {} hex characters", 2 * NONCE_BYTES);
            return (axum::http::StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let proof = nonce.map(|nonce| (nonce, state.prover.clone()));
    ws.max_message_size(MAX_SIGNAL_BYTES)
        .max_frame_size(MAX_SIGNAL_BYTES)
        .on_upgrade(move |socket| {
            // The device is known once its hello verifies (`sockets::agent` records it).
            let span = tracing::info_span!("agent_socket", address = %peer.ip(), device = tracing::field::Empty);
            let takeover = crate::takeover::Takeover {
                hub: state.hub.clone(),
                cluster: state.cluster.clone(),
                identity: state.identity.clone(),
                recordings: state.recordings.clone(),
            };
            crate::sockets::agent::serve(takeover, state.help, proof, socket, peer).instrument(span)
        })
        .into_response()
}

pub(super) async fn viewer_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> axum::response::Response {
    // Browsers send the page's origin on WebSocket handshakes; only our own pages may connect
    // (the SameSite=Strict cookie already stays home, this closes the door twice).
    let expected = state.identity.settings.public_url.origin().ascii_serialization();
    if headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|o| o != expected) {
        return ApiError(IdentityError::Forbidden("cross-origin socket refused".into())).into_response();
    }
    let forwarded = super::carried::is_carried(&headers);
    // A node forwarding a viewer presents a token made for that alone (`forward_token`), and
    // names the viewer's address in a statement checked below.
    let (auth, carried_client) = if forwarded {
        let purpose = sightline_core::cluster::PURPOSE_VIEWER_SOCKET;
        match super::carried::carried_user(&state, &headers, sightline_identity::Carrying::ViewerSocket, purpose).await
        {
            Ok((auth, client)) => (Ok(auth), Some(client)),
            Err(e) => (Err(e), None),
        }
    } else {
        (authenticate(&state.identity, &headers).await, None)
    };
    let auth = match auth {
        Ok(auth) => auth,
        Err(e) => return ApiError(e).into_response(),
    };
    if !VIEWER_SOCKET.iter().any(|c| auth.allows(*c)) {
        state.identity.emit(
            EventKind::AccessDenied,
            Outcome::Failure,
            &auth.user.name,
            Some("/ws/viewer"),
            Some(peer.ip()),
            "role does not allow viewing sessions",
        );
        return ApiError(IdentityError::Forbidden("your roles do not allow viewing sessions".into())).into_response();
    }
    // Another node carrying its viewer's session here (R43) names the viewer's address, and
    // only a live node's signature over it, for this very login session, is taken.
    let peer = match carried_client {
        None => peer,
        Some(Ok(client)) => SocketAddr::new(client, 0),
        Some(Err(why)) => {
            state.identity.emit(
                EventKind::AccessDenied,
                Outcome::Failure,
                &auth.user.name,
                Some("/ws/viewer"),
                Some(peer.ip()),
                format!("forwarded viewer refused: {why}"),
            );
            return ApiError(IdentityError::Forbidden(format!("forwarded viewer refused: {why}"))).into_response();
        }
    };
    ws.max_message_size(MAX_SIGNAL_BYTES)
        .max_frame_size(MAX_SIGNAL_BYTES)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("viewer_socket", user = %auth.user.name, address = %peer.ip(), forwarded);
            crate::sockets::viewer::serve(state, auth, socket, peer, forwarded).instrument(span)
        })
        .into_response()
}
