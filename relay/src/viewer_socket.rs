//! The viewer's WebSocket: the roster of online agents, and watching one agent at a time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sightline_proto::{ErrorCode, RelayToViewer, ViewEndReason, ViewerToRelay, encode};
use tokio::sync::mpsc;

use sightline_core::policy::{AccessRequest, Level};

use crate::events::{EventKind, Outcome};
use crate::hub::AgentLink;
use crate::identity::{AuthUser, Revocation};
use crate::server::AppState;
use crate::sfu::Subscriber;
use crate::socket::next_message;

/// Open sockets re-check their session this often, so an expired, idle or revoked session ends
/// even if the revocation event was missed.
const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// The view a viewer has open.
struct View {
    link: Arc<AgentLink>,
    subscriber: Subscriber,
    ended: mpsc::Receiver<ViewEndReason>,
}

/// Serves one viewer connection to completion.
pub async fn serve(state: AppState, auth: AuthUser, socket: WebSocket, peer: SocketAddr) {
    let (hub, identity) = (state.hub.clone(), state.identity.clone());
    let viewer_id = hub.next_id();
    let (mut tx, mut rx) = socket.split();
    let mut roster = hub.subscribe_roster();
    let mut revocations = hub.subscribe_revocations();
    let mut recheck = tokio::time::interval(SESSION_RECHECK);
    let mut view: Option<View> = None;
    tracing::debug!(viewer_id, user = %auth.user.name, %peer, "viewer connected");

    let reasons = RelayToViewer::Reasons { reasons: state.policy.reasons.iter().cloned().collect() };
    let initial = RelayToViewer::Agents { agents: roster.borrow_and_update().clone() };
    for msg in [reasons, initial] {
        if tx.send(Message::Text(encode(&msg).into())).await.is_err() {
            return;
        }
    }
    loop {
        let ended = async {
            match view.as_mut() {
                Some(v) => v.ended.recv().await,
                None => std::future::pending().await,
            }
        };
        let out = tokio::select! {
            revoked = revocations.recv() => {
                let mine = match &revoked {
                    Ok(Revocation::Session { sid }) => *sid == auth.claims.sid,
                    Ok(Revocation::User { user_id }) => *user_id == auth.user.id,
                    _ => false,
                };
                if !mine { continue; }
                end_session(&mut tx).await;
                break;
            }
            _ = recheck.tick() => {
                // Fail closed: a store error ends the socket too.
                if !identity.session_alive(&auth.claims).await.unwrap_or(false) {
                    end_session(&mut tx).await;
                    break;
                }
                None
            }
            changed = roster.changed() => {
                if changed.is_err() { break; }
                Some(RelayToViewer::Agents { agents: roster.borrow_and_update().clone() })
            }
            reason = ended => {
                let reason = reason.unwrap_or(ViewEndReason::AgentGone);
                if let Some(v) = view.take() { close_view(viewer_id, v).await; }
                Some(RelayToViewer::ViewEnded { reason })
            }
            incoming = next_message::<ViewerToRelay, _>(&mut rx) => match incoming {
                None => break,
                Some(Err(e)) => Some(RelayToViewer::Error { code: e.code(), message: e.to_string() }),
                Some(Ok(ViewerToRelay::Unwatch)) => match view.take() {
                    Some(v) => { close_view(viewer_id, v).await; None }
                    None => Some(RelayToViewer::Error { code: ErrorCode::NotWatching, message: "no view is open".into() }),
                },
                Some(Ok(ViewerToRelay::Watch { agent_id, sdp, ticket, reason })) => {
                    if let Some(v) = view.take() { close_view(viewer_id, v).await; }
                    match open_view(&state, &auth, peer, viewer_id, &agent_id, &sdp, &ticket, &reason).await {
                        Ok((v, answer)) => { view = Some(v); Some(RelayToViewer::WatchAnswer { sdp: answer }) }
                        Err((code, message)) => Some(RelayToViewer::Error { code, message }),
                    }
                }
            },
        };
        if let Some(msg) = out
            && tx.send(Message::Text(encode(&msg).into())).await.is_err()
        {
            break;
        }
    }
    if let Some(v) = view.take() {
        close_view(viewer_id, v).await;
    }
    tracing::debug!(viewer_id, "viewer gone");
}

/// Checks the request against the session policy, then sets up media. Every refusal names its
/// reason to the operator and is a security event with the ticket.
#[allow(clippy::too_many_arguments)]
async fn open_view(
    state: &AppState,
    auth: &AuthUser,
    peer: SocketAddr,
    viewer_id: u64,
    agent_id: &str,
    sdp: &str,
    ticket: &str,
    reason: &str,
) -> Result<(View, String), (ErrorCode, String)> {
    let hub = &state.hub;
    let link = hub.agent(agent_id).map_err(|e| (ErrorCode::UnknownAgent, e.to_string()))?;
    let levels = std::collections::BTreeSet::from([Level::View]);
    let request = AccessRequest {
        roles: &auth.user.roles,
        source: peer.ip(),
        segment: &link.info.segment,
        levels: &levels,
        ticket,
        reason,
        now: jiff::Timestamp::now(),
        // Fail closed: a store error counts as "no window".
        maintenance_window_open: state
            .identity
            .window_open(&link.info.agent_id, state.identity.now_ms())
            .await
            .unwrap_or(false),
        unattended: false,
    };
    let subject = format!("device:{} ticket:{} reason:{}", link.info.agent_id, ticket.trim(), reason.trim());
    if let Err(denial) = state.policy.decide(&request) {
        state.identity.emit(
            EventKind::SessionRefused,
            Outcome::Failure,
            &auth.user.name,
            Some(&subject),
            Some(peer.ip()),
            denial.to_string(),
        );
        return Err((ErrorCode::PolicyDenied, denial.to_string()));
    }
    state.identity.emit(
        EventKind::SessionStarted,
        Outcome::Success,
        &auth.user.name,
        Some(&subject),
        Some(peer.ip()),
        "view",
    );
    // Ask the agent to publish first: its peer connection comes up while ours does.
    let (ended_tx, ended) = mpsc::channel(1);
    link.add_viewer(viewer_id, ended_tx);
    match hub.media.add_subscriber(sdp, link.fanout.clone()).await {
        Ok((subscriber, answer)) => {
            tracing::info!(viewer_id, agent = %agent_id, viewers = link.viewer_count(), "view opened");
            Ok((View { link, subscriber, ended }, answer))
        }
        Err(e) => {
            link.remove_viewer(viewer_id).await;
            Err((ErrorCode::MediaSetup, e.to_string()))
        }
    }
}

async fn close_view(viewer_id: u64, view: View) {
    view.subscriber.close().await;
    view.link.remove_viewer(viewer_id).await;
    tracing::info!(viewer_id, agent = %view.link.info.agent_id, "view closed");
}

async fn end_session<S>(tx: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let msg =
        RelayToViewer::Error { code: ErrorCode::SessionEnded, message: "your session ended; sign in again".into() };
    let _ = tx.send(Message::Text(encode(&msg).into())).await;
    let _ = tx.close().await;
}
