//! The agent's WebSocket: challenge, signed hello, then publish offers and answers, until either
//! side goes or the device is revoked.
//!
//! Every connection starts with a fresh 32-byte challenge, and the first message must answer it
//! within `HELLO_TIMEOUT`: a `hello` (the device's signature, screen size, the endpoint account
//! logged in, whether it runs unattended, and the session of a lost node it claims, which
//! `crate::takeover` serves beside the link) puts the agent online (`hub`); `enrol`, `open_window`,
//! `close_window` and `ask_help` are one-shot calls, answered and closed (the rules are in
//! `sightline_identity::devices` and `help`). The endpoint account lands in every session record,
//! so it must be 1-128 printable characters. An unauthenticated peer learns why it was refused
//! but nothing of the relay's internal failures.
//!
//! Once online, the device's enrolment (not revoked, and still with the key it said hello with)
//! is re-checked every `DEVICE_RECHECK` and on every revocation or key change (a store error drops the agent too; it reconnects and is checked again). Consent
//! receipts, session events and declines go to the session they name (`crate::session`); a
//! malformed message is refused but does not end a healthy link; a link the relay could not
//! queue to (`crate::link`) is closed, so both sides end the session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use sightline_proto::{AgentInfo, AgentToRelay, ErrorCode, RelayToAgent, ViewEndReason, encode};

use crate::hub::OnlineAgent;
use crate::sockets::wire::{Heartbeat, Liveness, close_within, next_message, send_within};
use sightline_identity::{IdentityError, Revocation, random_bytes};

/// How often a connected agent's enrolment is re-checked (revocations whose event was missed).
const DEVICE_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// What an unauthenticated peer may learn about a refusal: internal failures stay in the log.
fn public_reason(e: &IdentityError) -> String {
    match e {
        IdentityError::Store(_) => "the relay cannot check devices right now; retry later".into(),
        other => other.to_string(),
    }
}

/// How long a new connection may take to answer the challenge.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The endpoint account an agent names: it lands in every session record, so it must be
/// printable and bounded.
fn endpoint_user(user: &str) -> Option<String> {
    let user = user.trim();
    (!user.is_empty() && user.chars().count() <= 128 && !user.chars().any(char::is_control)).then(|| user.to_owned())
}

fn text(msg: &RelayToAgent) -> Message {
    Message::Text(encode(msg).into())
}

/// Serves one agent connection to completion.
pub async fn serve(
    takeover: crate::takeover::Takeover,
    help: Arc<crate::help::HelpDesk>,
    proof: Option<(Vec<u8>, Arc<sightline_core::relay_proof::RelayProver>)>,
    socket: WebSocket,
    peer: SocketAddr,
) {
    let (hub, identity) = (takeover.hub.clone(), takeover.identity.clone());
    let (mut tx, rx) = socket.split();
    let live = Liveness::default();
    let mut rx = rx.inspect(|_| live.heard());
    // Subscribe before authenticating, so a revocation racing the handshake is not missed.
    let mut revocations = hub.subscribe_revocations();
    let challenge = random_bytes::<32>();
    // An agent that dialled with a nonce gets the node's proof with the challenge (it pinned the
    // node's key at enrolment); one without a nonce gets none and decides for itself.
    let relay = proof.map(|(nonce, prover)| prover.prove(&nonce, &challenge));
    if !send_within(&mut tx, text(&RelayToAgent::Challenge { nonce: hex::encode(challenge), relay })).await {
        return;
    }
    let (device_id, signature, width, height, user, unattended, resume) =
        match tokio::time::timeout(HELLO_TIMEOUT, next_message(&mut rx)).await {
            Ok(Some(Ok(AgentToRelay::Hello { device_id, signature, width, height, user, unattended, resume }))) => {
                (device_id, signature, width, height, user, unattended, resume)
            }
            Ok(Some(Ok(AgentToRelay::OpenWindow { device_id, signature, start_ms, end_ms }))) => {
                let opened = async {
                    let device = identity
                        .authenticate_window(&device_id, &challenge, &signature, start_ms, end_ms, Some(peer.ip()))
                        .await?;
                    identity
                        .open_window(&device.id, start_ms, end_ms, &format!("user@{}", device.name), Some(peer.ip()))
                        .await
                }
                .await;
                match opened {
                    Ok(w) => {
                        send_within(
                            &mut tx,
                            text(&RelayToAgent::WindowOpened { start_ms: w.start_ms, end_ms: w.end_ms }),
                        )
                        .await;
                        close_within(&mut tx).await;
                    }
                    Err(e) => refuse(&mut tx, ErrorCode::DeviceRefused, public_reason(&e)).await,
                }
                return;
            }
            Ok(Some(Ok(AgentToRelay::CloseWindow { device_id, signature }))) => {
                let closed = async {
                    let device =
                        identity.authenticate_close_window(&device_id, &challenge, &signature, Some(peer.ip())).await?;
                    identity.close_windows(&device.id, &format!("user@{}", device.name), Some(peer.ip())).await
                }
                .await;
                match closed {
                    Ok(closed) => {
                        send_within(&mut tx, text(&RelayToAgent::WindowsClosed { closed })).await;
                        close_within(&mut tx).await;
                    }
                    Err(e) => refuse(&mut tx, ErrorCode::DeviceRefused, public_reason(&e)).await,
                }
                return;
            }
            Ok(Some(Ok(AgentToRelay::AskHelp { device_id, signature, user }))) => {
                let Some(user) = endpoint_user(&user) else {
                    return refuse(&mut tx, ErrorCode::BadMessage, "user must be 1-128 printable characters".into())
                        .await;
                };
                let device = match identity.authenticate_help(&device_id, &challenge, &signature, Some(peer.ip())).await
                {
                    Ok(device) => device,
                    Err(e) => return refuse(&mut tx, ErrorCode::DeviceRefused, public_reason(&e)).await,
                };
                match help.ask(&device, &user, Some(peer.ip())).await {
                    Ok(request) => {
                        let reply = RelayToAgent::HelpCode { code: request.code, expires_ms: request.expires_ms };
                        send_within(&mut tx, text(&reply)).await;
                        close_within(&mut tx).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, device = %device.id, "cannot open a help request");
                        let why = match e {
                            crate::help::HelpError::Audit(_) => sightline_audit::AuditUnavailable::PUBLIC,
                            _ => "the relay cannot take help requests right now; try again later",
                        };
                        refuse(&mut tx, ErrorCode::HelpCode, why.into()).await;
                    }
                }
                return;
            }
            Ok(Some(Ok(AgentToRelay::Enrol { token, public_key, name }))) => {
                match identity.enrol_device(&token, &public_key, &name, Some(peer.ip())).await {
                    Ok(device) => {
                        let enrolled =
                            RelayToAgent::Enrolled { device_id: device.id, name: device.name, segment: device.segment };
                        send_within(&mut tx, text(&enrolled)).await;
                        close_within(&mut tx).await;
                    }
                    Err(e) => refuse(&mut tx, ErrorCode::DeviceRefused, public_reason(&e)).await,
                }
                return;
            }
            Ok(Some(Ok(other))) => {
                return refuse(&mut tx, ErrorCode::BadMessage, format!("expected hello, got {other:?}")).await;
            }
            Ok(Some(Err(e))) => return refuse(&mut tx, e.code(), e.to_string()).await,
            Ok(None) => return,
            Err(_) => return refuse(&mut tx, ErrorCode::BadMessage, "no hello within 10 s".into()).await,
        };
    if device_id.is_empty() || device_id.len() > 128 {
        return refuse(&mut tx, ErrorCode::BadMessage, "device_id must be 1-128 bytes".into()).await;
    }
    let Some(user) = endpoint_user(&user) else {
        return refuse(&mut tx, ErrorCode::BadMessage, "user must be 1-128 printable characters".into()).await;
    };
    let device = match identity.authenticate_device(&device_id, &challenge, &signature, Some(peer.ip())).await {
        Ok(device) => device,
        Err(e) => return refuse(&mut tx, ErrorCode::DeviceRefused, public_reason(&e)).await,
    };
    tracing::Span::current().record("device", device.id.as_str());
    let info = AgentInfo {
        agent_id: device.id.clone(),
        name: device.name.clone(),
        segment: device.segment.clone(),
        width,
        height,
        user,
        unattended,
        node: String::new(),
    };
    let (agent, mut outbox) = match hub.register_agent(info, Some(peer.ip())) {
        Ok(v) => v,
        Err(e) => return refuse(&mut tx, ErrorCode::DuplicateAgent, e.to_string()).await,
    };
    let link = agent.link.clone();
    if !send_within(
        &mut tx,
        text(&RelayToAgent::Welcome { name: device.name.clone(), segment: device.segment.clone() }),
    )
    .await
    {
        hub.unregister_agent(&agent).await;
        return;
    }
    tracing::info!(agent = %link.info.agent_id, name = %link.info.name, segment = %link.info.segment, unattended, %peer, "agent online");
    // Its session's node was lost: this node may take the session over (R43). Beside the loop,
    // which keeps answering the agent meanwhile.
    if let Some(claim) = resume {
        tokio::spawn(takeover.serve(agent.clone(), claim));
    }

    // A re-keyed device's old key is as gone as a revoked one.
    let enrolled_key = device.public_key.clone();
    let still_enrolled = || identity.device_holds_key(&link.info.agent_id, &enrolled_key);
    let mut recheck = tokio::time::interval(DEVICE_RECHECK);
    let mut heartbeat = Heartbeat::default();
    let mut broken = false;
    loop {
        tokio::select! {
            // What is still queued went in before the lost message (`send` queues nothing after
            // it), so whether it goes out first or not, the agent sees no gap before the close.
            () = link.broken() => {
                broken = true;
                break;
            }
            _ = heartbeat.next() => {
                // An endpoint that vanished without closing TCP (power cut, network gone) ends its
                // session here too, not only on its own side (R22).
                if heartbeat.peer_gone(&live) {
                    tracing::info!(agent = %link.info.agent_id, "agent silent: treating it as gone");
                    break;
                }
                if !send_within(&mut tx, Message::Ping(Vec::new().into())).await {
                    break;
                }
            }
            revoked = revocations.recv() => {
                let ours = match revoked {
                    Ok(Revocation::Device { device_id }) => device_id == link.info.agent_id,
                    // Missed events: check the store now instead of trusting silence.
                    Err(_) => !still_enrolled().await.unwrap_or(false),
                    Ok(_) => false,
                };
                if ours {
                    send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::DeviceRefused, message: "this device was revoked or took a new key".into() })).await;
                    close_within(&mut tx).await;
                    break;
                }
            }
            _ = recheck.tick() => {
                // Fail closed: a store error drops the agent too; it reconnects and is checked again.
                if !still_enrolled().await.unwrap_or(false) {
                    send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::DeviceRefused, message: "this device is no longer enrolled".into() })).await;
                    close_within(&mut tx).await;
                    break;
                }
            }
            out = outbox.recv() => {
                let Some(msg) = out else { break };
                if !send_within(&mut tx, text(&msg)).await {
                    break;
                }
            }
            incoming = next_message::<AgentToRelay, _>(&mut rx) => {
                match incoming {
                    None => break,
                    Some(Err(e)) => {
                        // A malformed message is refused but does not end a healthy agent link.
                        tracing::warn!(agent = %link.info.agent_id, error = %e, "bad message from agent");
                        if !send_within(&mut tx, text(&RelayToAgent::Error { code: e.code(), message: e.to_string() })).await { break; }
                    }
                    Some(Ok(AgentToRelay::PublishOffer { sdp })) => {
                        match hub.media.accept_publisher(&sdp, link.fanout.clone()).await {
                            Ok((publisher, answer)) => {
                                tokio::spawn(read_agent_channel(publisher.peer(), agent.clone()));
                                tokio::spawn(record_media_path(publisher.peer(), agent.clone()));
                                link.set_publisher(publisher).await;
                                if !send_within(&mut tx, text(&RelayToAgent::PublishAnswer { sdp: answer })).await {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(agent = %link.info.agent_id, error = %e, "cannot accept publisher");
                                if !send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::MediaSetup, message: e.to_string() })).await { break; }
                                link.end_views(ViewEndReason::MediaFailed);
                            }
                        }
                    }
                    Some(Ok(AgentToRelay::Consent { receipt })) => {
                        let Some(session) = agent.sessions.by_id(&receipt.session_id) else {
                            if !send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::UnknownSession, message: "no such session".into() })).await { break; }
                            continue;
                        };
                        if let Err(e) = session.accept_receipt(receipt).await {
                            tracing::warn!(agent = %link.info.agent_id, error = %e, "consent receipt refused");
                            let (code, message) = match e {
                                crate::session::SessionError::AuditUnavailable(_) => (ErrorCode::AuditUnavailable, sightline_audit::AuditUnavailable::PUBLIC.to_owned()),
                                e => (ErrorCode::BadReceipt, e.to_string()),
                            };
                            if !send_within(&mut tx, text(&RelayToAgent::Error { code, message })).await { break; }
                        }
                    }
                    Some(Ok(AgentToRelay::Session { session_id, event })) => {
                        match agent.sessions.by_id(&session_id) {
                            Some(session) if !session.is_ended() => session.user_event(event),
                            // Both sides ended it at once, each telling the other: nothing to do.
                            Some(_) if matches!(event, sightline_proto::SessionEvent::Ended { .. }) => {}
                            _ => {
                                if !send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::UnknownSession, message: "no such session".into() })).await { break; }
                            }
                        }
                    }
                    Some(Ok(AgentToRelay::Declined { session_id, reason })) => {
                        match agent.sessions.by_id(&session_id) {
                            Some(session) => session.declined_by_endpoint(&reason),
                            None => {
                                if !send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::UnknownSession, message: "no such session".into() })).await { break; }
                            }
                        }
                    }
                    Some(Ok(AgentToRelay::PublishFailed { reason })) => {
                        tracing::warn!(agent = %link.info.agent_id, %reason, "agent could not publish");
                        link.end_views(ViewEndReason::PublishFailed);
                    }
                    Some(Ok(AgentToRelay::Hello { .. } | AgentToRelay::Enrol { .. } | AgentToRelay::OpenWindow { .. } | AgentToRelay::AskHelp { .. } | AgentToRelay::CloseWindow { .. })) => {
                        if !send_within(&mut tx, text(&RelayToAgent::Error { code: ErrorCode::BadMessage, message: "already authenticated".into() })).await { break; }
                    }
                }
            }
        }
    }
    tracing::info!(agent = %link.info.agent_id, "agent offline");
    hub.unregister_agent(&agent).await;
    if broken {
        // A message could not be queued (see `AgentLink::send`): the session ended above; closing
        // is how the agent learns, rather than going on out of step.
        close_within(&mut tx).await;
    }
}

/// Reads the agent's `session` data channel: installs it for input and chat to the endpoint, and
/// passes the user's chat lines and the media seals to the session. Nothing else may come from
/// the agent here.
async fn read_agent_channel(peer: std::sync::Arc<sightline_peer::Peer>, agent: Arc<OnlineAgent>) {
    let link = &agent.link;
    use sightline_peer::ChannelEvent;
    use sightline_proto::channel::{ChannelMessage, LABEL};
    let Some(channel) = peer.next_data_channel().await else { return };
    if channel.label().await.ok().as_deref() != Some(LABEL) {
        tracing::warn!(agent = %link.info.agent_id, "agent opened an unexpected data channel");
        return;
    }
    link.set_channel(Some(channel.clone()));
    while let Some(event) = channel.recv().await {
        let ChannelEvent::Text(text) = event else { continue };
        match sightline_proto::channel::decode(&text) {
            Ok(ChannelMessage::Chat { text, .. }) => {
                if let Some(session) = agent.sessions.current() {
                    session.user_chat(&text);
                }
            }
            Ok(ChannelMessage::MediaSeal { seal }) => {
                if let Some(session) = agent.sessions.current() {
                    session.media_seal(seal);
                }
            }
            Ok(ChannelMessage::Input { .. }) => {
                tracing::warn!(agent = %link.info.agent_id, "agent sent input on its data channel; ignored");
            }
            Err(e) => tracing::warn!(agent = %link.info.agent_id, error = %e, "bad data channel message from agent"),
        }
    }
}

async fn refuse<S>(tx: &mut S, code: ErrorCode, message: String)
where
    S: futures_util::Sink<Message> + Unpin,
{
    tracing::warn!(?code, %message, "refusing agent connection");
    send_within(tx, text(&RelayToAgent::Error { code, message })).await;
    close_within(tx).await;
}

/// How long a publisher may take to connect before its path goes unrecorded (it then fails, and
/// that is recorded as the session's end).
const MEDIA_PATH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Once the agent's media is connected, the session's record says which way it came (R1).
async fn record_media_path(peer: std::sync::Arc<sightline_peer::Peer>, agent: Arc<OnlineAgent>) {
    if !matches!(tokio::time::timeout(MEDIA_PATH_WAIT, peer.connected()).await, Ok(Ok(()))) {
        return;
    }
    let (Some(path), Some(session)) = (peer.path().await, agent.sessions.current()) else { return };
    tracing::info!(session = %session.id, transport = path.transport.as_str(), from = ?path.remote, "endpoint media connected");
    session.media_path(path.transport.as_str(), path.remote);
}
