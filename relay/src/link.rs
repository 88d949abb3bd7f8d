//! The relay's link to one connected agent: the signaling queue its socket drains, the RTP
//! fan-out of its media and the publisher feeding it, its `session` data channel behind an
//! ordered queue, and the viewers watching it.
//!
//! Sessions run on a link (`session`); the hub keeps the links of the agents online (`hub`).
//! A link knows neither: it carries messages, and it is broken, not silently lossy, when the
//! agent stops reading.
//!
//! Viewing an agent: the viewer's `watch` carries its receive-only offer. Once the session is
//! active the viewer is added here; the first viewer makes the relay send `publish` to the agent,
//! in parallel with answering the viewer from the fan-out (`sightline_sfu::Media`). The agent
//! (which publishes only inside a session its user consented to) opens its screen source and
//! offers; its socket answers. When the viewer's leg is up it is subscribed to the fan-out and a
//! keyframe is asked for upstream, so the agent's next frame is one. When the last viewer leaves,
//! the relay sends `unpublish` and the agent stops capturing. Measured: first decoded frame about
//! 0.4 s after the click on loopback (BENCHMARKS.md).
//!
//! The data channel queue is bounded in time as well as size: input waits at most `INPUT_WAIT`
//! and is then dropped (later it would act on a stale screen); a chat line waits `CHAT_WAIT`,
//! after which its sender is told it was not delivered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sightline_peer::{DataChannel, OnDelivery, Outbox};
use sightline_proto::channel::ChannelMessage;
use sightline_proto::{AgentInfo, RelayToAgent, ViewEndReason};
use sightline_sfu::{Fanout, Publisher};
use tokio::sync::{mpsc, watch};

/// Buffered signaling messages per agent; the agent socket drains them as fast as it can.
const AGENT_QUEUE: usize = 64;
/// Messages waiting for the agent's data channel (input and chat).
const CHANNEL_QUEUE: usize = 256;
/// How long a chat line may wait for the agent's data channel to open before the operator is
/// told it was not delivered.
pub const CHAT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long input may wait for the channel: later than this it would act on a stale screen.
const INPUT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The relay's side of one connected agent: its signaling queue, its media and data channel, its
/// viewers.
pub struct AgentLink {
    pub info: AgentInfo,
    /// Where the agent connects from (the endpoint's address in its events).
    pub address: Option<std::net::IpAddr>,
    /// Identifies this connection; a stale socket cleaning up must not remove a newer one.
    pub conn_id: u64,
    to_agent: mpsc::Sender<RelayToAgent>,
    /// RTP fan-out from the agent's track to every subscriber.
    pub fanout: Arc<Fanout>,
    /// The agent's publishing peer connection, while it publishes.
    publisher: Mutex<Option<Publisher>>,
    /// Viewers of this agent, told when the view ends on the agent's side.
    viewers: Mutex<HashMap<u64, mpsc::Sender<ViewEndReason>>>,
    /// The agent's `session` data channel (input and chat to the endpoint), while it publishes,
    /// behind an ordered queue: the channel opens after the media flows.
    channel: Outbox,
    /// Bumped whenever a session on any link changes, so lists of sessions can be pushed.
    sessions_changed: Arc<watch::Sender<u64>>,
    /// Set, and signalled, when a message to the agent could not be queued: the link is then
    /// broken, nothing more is queued on it (no later message may follow a lost one), and the
    /// agent's socket closes it, so both sides end its session (nothing is dropped silently).
    broken: std::sync::atomic::AtomicBool,
    broken_signal: tokio::sync::Notify,
    /// A session of a lost node is being taken over on this link (R43): no other opens meanwhile.
    resuming: std::sync::atomic::AtomicBool,
}

impl AgentLink {
    /// A new link to the agent `info` connected from `address`; messages for it are queued on
    /// the returned receiver, which its socket drains.
    pub fn new(
        info: AgentInfo,
        address: Option<std::net::IpAddr>,
        conn_id: u64,
        sessions_changed: Arc<watch::Sender<u64>>,
    ) -> (Arc<AgentLink>, mpsc::Receiver<RelayToAgent>) {
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let link = Arc::new(AgentLink {
            info,
            address,
            conn_id,
            to_agent: tx,
            fanout: Fanout::new(),
            publisher: Mutex::new(None),
            viewers: Mutex::new(HashMap::new()),
            channel: Outbox::new(CHANNEL_QUEUE),
            sessions_changed,
            broken: std::sync::atomic::AtomicBool::new(false),
            broken_signal: tokio::sync::Notify::new(),
            resuming: std::sync::atomic::AtomicBool::new(false),
        });
        (link, rx)
    }

    pub fn sessions_changed(&self) {
        self.sessions_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Installs the agent's data channel (one per publication).
    pub fn set_channel(&self, channel: Option<DataChannel>) {
        self.channel.set_channel(channel);
    }

    /// Sends input on the agent's data channel; input that cannot go out within `INPUT_WAIT`
    /// (no publication, channel not open yet) is dropped rather than injected late.
    pub fn send_input(&self, msg: &ChannelMessage) {
        let agent = self.info.agent_id.clone();
        let on_delivery: OnDelivery = Box::new(move |result| {
            if let Err(e) = result {
                tracing::debug!(%agent, error = %e, "input not delivered to the agent");
            }
        });
        self.channel.send(sightline_proto::channel::encode(msg), INPUT_WAIT, on_delivery);
    }

    /// Queues a chat line for the agent's data channel; `on_delivery` learns, in order, whether
    /// it went out (it waits up to `CHAT_WAIT` for the channel to open).
    pub fn send_chat(&self, msg: &ChannelMessage, on_delivery: OnDelivery) {
        self.channel.send(sightline_proto::channel::encode(msg), CHAT_WAIT, on_delivery);
    }

    /// Queues a message for the agent. A full queue means the agent stopped reading: dropping the
    /// message would leave the two sides disagreeing about a session, so the link is treated as
    /// broken instead: its socket closes, the relay ends the agent's session as lost, and the
    /// agent, losing the relay, ends its own (R22). Returns whether the message was queued.
    pub fn send(&self, msg: RelayToAgent) -> bool {
        use std::sync::atomic::Ordering;
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        match self.to_agent.try_send(msg) {
            Ok(()) => true,
            // The socket is already going (its loop ended): it ends the agent's session itself.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(agent = %self.info.agent_id, "the queue to the agent is full: closing the link");
                self.broken.store(true, Ordering::Release);
                self.broken_signal.notify_one();
                false
            }
        }
    }

    /// Marks whether a lost node's session is being taken over on this link.
    pub fn set_resuming(&self, on: bool) {
        self.resuming.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Whether a lost node's session is being taken over on this link.
    pub fn resuming(&self) -> bool {
        self.resuming.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes when a message to the agent could not be queued (see `send`).
    pub async fn broken(&self) {
        self.broken_signal.notified().await;
    }

    /// Adds a viewer; the first viewer makes the agent start publishing.
    pub fn add_viewer(&self, viewer_id: u64, ended: mpsc::Sender<ViewEndReason>) {
        let first = {
            let mut viewers = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
            viewers.insert(viewer_id, ended);
            viewers.len() == 1
        };
        let publishing = self.publisher.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        if first && !publishing {
            self.send(RelayToAgent::Publish);
        }
    }

    /// Removes a viewer; when the last one leaves the agent stops capturing.
    pub async fn remove_viewer(&self, viewer_id: u64) {
        let now_empty = {
            let mut viewers = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
            viewers.remove(&viewer_id).is_some() && viewers.is_empty()
        };
        if now_empty {
            self.send(RelayToAgent::Unpublish);
            self.stop_publishing().await;
        }
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Tells every viewer its view ended.
    pub fn end_views(&self, reason: ViewEndReason) {
        let viewers: Vec<_> =
            self.viewers.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, tx)| tx).collect();
        for tx in viewers {
            let _ = tx.try_send(reason);
        }
    }

    /// Installs the agent's new publishing peer connection, closing any previous one.
    pub async fn set_publisher(&self, publisher: Publisher) {
        let previous = self.publisher.lock().unwrap_or_else(|e| e.into_inner()).replace(publisher);
        if let Some(previous) = previous {
            previous.close().await;
        }
    }

    pub async fn stop_publishing(&self) {
        self.set_channel(None);
        let previous = self.publisher.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(previous) = previous {
            previous.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> AgentInfo {
        AgentInfo {
            agent_id: "a1".into(),
            name: "desk".into(),
            segment: "office".into(),
            width: 1,
            height: 1,
            user: "alice".into(),
            unattended: false,
            node: String::new(),
        }
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_queued_breaks_the_link_instead_of_vanishing() {
        let (link, mut queue) = AgentLink::new(info(), None, 1, Arc::new(watch::channel(0).0));
        // An agent that stops reading: the queue fills, and every message up to then is kept.
        for _ in 0..AGENT_QUEUE {
            assert!(link.send(RelayToAgent::Publish));
        }
        // Control: the link is not broken while messages fit.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(100), link.broken()).await.is_err());
        assert!(!link.send(RelayToAgent::Unpublish));
        tokio::time::timeout(std::time::Duration::from_secs(1), link.broken()).await.expect("the link is broken");
        // Nothing may follow the lost message, even once the queue has room again.
        let _ = queue.try_recv();
        assert!(!link.send(RelayToAgent::Publish));
        // What was queued is still delivered in order; the message that did not fit is not
        // silently behind it.
        let mut delivered = 1;
        while let Ok(msg) = queue.try_recv() {
            assert_eq!(msg, RelayToAgent::Publish);
            delivered += 1;
        }
        assert_eq!(delivered, AGENT_QUEUE);
    }
}
