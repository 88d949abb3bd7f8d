//! The agent's WebSocket: hello, then publish offers and answers, until either side goes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use sightline_proto::{AgentInfo, AgentToRelay, ErrorCode, RelayToAgent, ViewEndReason, decode, encode};

use crate::hub::Hub;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one agent connection to completion.
pub async fn serve(hub: Arc<Hub>, socket: WebSocket, peer: SocketAddr) {
    let (mut tx, mut rx) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_message(&mut rx)).await {
        Ok(Some(Ok(AgentToRelay::Hello { agent_id, name, width, height }))) => {
            AgentInfo { agent_id, name, width, height }
        }
        Ok(Some(Ok(other))) => {
            refuse(&mut tx, ErrorCode::BadMessage, format!("expected hello, got {other:?}")).await;
            return;
        }
        Ok(Some(Err(e))) => {
            refuse(&mut tx, e.code(), e.to_string()).await;
            return;
        }
        Ok(None) => return,
        Err(_) => {
            refuse(&mut tx, ErrorCode::BadMessage, "no hello within 10 s".into()).await;
            return;
        }
    };
    if hello.agent_id.is_empty() || hello.agent_id.len() > 128 || hello.name.len() > 256 {
        refuse(&mut tx, ErrorCode::BadMessage, "agent_id must be 1-128 bytes and name at most 256".into()).await;
        return;
    }
    let (link, mut outbox) = match hub.register_agent(hello) {
        Ok(v) => v,
        Err(e) => {
            refuse(&mut tx, ErrorCode::DuplicateAgent, e.to_string()).await;
            return;
        }
    };
    tracing::info!(agent = %link.info.agent_id, name = %link.info.name, %peer, "agent online");

    loop {
        tokio::select! {
            out = outbox.recv() => {
                let Some(msg) = out else { break };
                if tx.send(Message::Text(encode(&msg).into())).await.is_err() {
                    break;
                }
            }
            incoming = next_message(&mut rx) => {
                match incoming {
                    None => break,
                    Some(Err(e)) => {
                        // A malformed message is refused but does not end a healthy agent link.
                        tracing::warn!(agent = %link.info.agent_id, error = %e, "bad message from agent");
                        let _ = tx.send(Message::Text(encode(&RelayToAgent::Error { code: e.code(), message: e.to_string() }).into())).await;
                    }
                    Some(Ok(AgentToRelay::PublishOffer { sdp })) => {
                        match hub.media.accept_publisher(&sdp, link.fanout.clone()).await {
                            Ok((publisher, answer)) => {
                                link.set_publisher(publisher).await;
                                if tx.send(Message::Text(encode(&RelayToAgent::PublishAnswer { sdp: answer }).into())).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(agent = %link.info.agent_id, error = %e, "cannot accept publisher");
                                let _ = tx.send(Message::Text(encode(&RelayToAgent::Error { code: ErrorCode::MediaSetup, message: e.to_string() }).into())).await;
                                link.end_views(ViewEndReason::MediaFailed);
                            }
                        }
                    }
                    Some(Ok(AgentToRelay::PublishFailed { reason })) => {
                        tracing::warn!(agent = %link.info.agent_id, %reason, "agent could not publish");
                        link.end_views(ViewEndReason::PublishFailed);
                    }
                    Some(Ok(AgentToRelay::Hello { .. })) => {
                        let _ = tx.send(Message::Text(encode(&RelayToAgent::Error { code: ErrorCode::BadMessage, message: "hello already received".into() }).into())).await;
                    }
                }
            }
        }
    }
    tracing::info!(agent = %link.info.agent_id, "agent offline");
    hub.unregister_agent(&link).await;
}

/// Reads the next text message. `None` when the socket closed; binary and oversized frames are
/// errors (axum enforces the size limit and closes the socket, which ends up as `None`).
async fn next_message<S>(rx: &mut S) -> Option<Result<AgentToRelay, sightline_proto::DecodeError>>
where
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        match rx.next().await? {
            Ok(Message::Text(text)) => return Some(decode(&text)),
            Ok(Message::Binary(_)) => {
                return Some(Err(sightline_proto::DecodeError::Malformed(
                    "binary frames are not part of the protocol".into(),
                )));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
        }
    }
}

async fn refuse<S>(tx: &mut S, code: ErrorCode, message: String)
where
    S: futures_util::Sink<Message> + Unpin,
{
    tracing::warn!(?code, %message, "refusing agent connection");
    let _ = tx.send(Message::Text(encode(&RelayToAgent::Error { code, message }).into())).await;
    let _ = tx.close().await;
}
