//! The hub: which agents are online, who watches which agent, and the messages between them.
//!
//! Media is pinned to the relay node the agent is connected to. An agent publishes only while at
//! least one viewer watches it, so an idle endpoint captures and encodes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sightline_proto::{AgentId, AgentInfo, RelayToAgent, ViewEndReason};
use tokio::sync::{mpsc, watch};

use crate::session::LiveSession;
use sightline_identity::Revocation;
use sightline_peer::{DataChannel, OnDelivery, Outbox};
use sightline_proto::SessionSummary;
use sightline_proto::channel::ChannelMessage;
use sightline_sfu::{Fanout, Media, Publisher};

/// Buffered signaling messages per agent; the agent socket drains them as fast as it can.
const AGENT_QUEUE: usize = 64;
/// Messages waiting for the agent's data channel (input and chat).
const CHANNEL_QUEUE: usize = 256;
/// How long a chat line may wait for the agent's data channel to open before the operator is
/// told it was not delivered.
pub const CHAT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long input may wait for the channel: later than this it would act on a stale screen.
const INPUT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Who is online, shared by every socket handler.
pub struct Hub {
    pub media: Media,
    agents: Mutex<HashMap<AgentId, Arc<AgentLink>>>,
    /// Current roster, so viewer sockets can push changes without polling.
    roster: watch::Sender<Vec<AgentInfo>>,
    /// Source of connection ids (agents and viewers), to tell a reconnected agent from its ghost.
    next_id: std::sync::atomic::AtomicU64,
    /// Revocations from any node; each socket closes itself when it is the one revoked.
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// Bumped whenever any session changes, so lists of sessions can be pushed.
    sessions_changed: Arc<watch::Sender<u64>>,
}

/// One online agent and its viewers.
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
    /// The session running on this endpoint (at most one).
    session: Mutex<Option<Arc<LiveSession>>>,
    /// The session that ended last: a decision the agent signed just as the relay ended it (the
    /// consent deadline racing the user's click) is still verified and kept as evidence.
    ended: Mutex<Option<Arc<LiveSession>>>,
    /// The agent's `session` data channel (input and chat to the endpoint), while it publishes,
    /// behind an ordered queue: the channel opens after the media flows.
    channel: Outbox,
    sessions_changed: Arc<watch::Sender<u64>>,
    /// Set, and signalled, when a message to the agent could not be queued: the link is then
    /// broken, nothing more is queued on it (no later message may follow a lost one), and the
    /// agent's socket closes it, so both sides end its session (nothing is dropped silently).
    broken: std::sync::atomic::AtomicBool,
    broken_signal: tokio::sync::Notify,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("agent {0:?} is already connected")]
    DuplicateAgent(AgentId),
    #[error("agent {0:?} is not online")]
    UnknownAgent(AgentId),
}

impl Hub {
    pub fn new(media: Media) -> Arc<Self> {
        Arc::new(Hub {
            media,
            agents: Mutex::new(HashMap::new()),
            roster: watch::channel(Vec::new()).0,
            next_id: 1.into(),
            revocations: tokio::sync::broadcast::channel(256).0,
            sessions_changed: Arc::new(watch::channel(0).0),
        })
    }

    /// Follows changes to any session (to push lists of sessions).
    pub fn subscribe_sessions(&self) -> watch::Receiver<u64> {
        self.sessions_changed.subscribe()
    }

    /// Sessions running on this node.
    pub fn sessions(&self) -> Vec<SessionSummary> {
        let links: Vec<_> = self.agents.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut list: Vec<SessionSummary> = links.iter().filter_map(|l| l.session()).map(|s| s.summary()).collect();
        list.sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.session_id.cmp(&b.session_id)));
        list
    }

    /// A running session by id.
    pub fn session(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        let links: Vec<_> = self.agents.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        links.iter().filter_map(|l| l.session()).find(|s| s.id == session_id)
    }

    /// Tells every socket on this node about a revocation.
    pub fn revoke(&self, revocation: &Revocation) {
        let _ = self.revocations.send(revocation.clone());
    }

    pub fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The agents online now.
    pub fn roster(&self) -> Vec<AgentInfo> {
        self.roster.borrow().clone()
    }

    /// Follows roster changes.
    pub fn subscribe_roster(&self) -> watch::Receiver<Vec<AgentInfo>> {
        self.roster.subscribe()
    }

    fn publish_roster(&self, agents: &HashMap<AgentId, Arc<AgentLink>>) {
        let mut list: Vec<AgentInfo> = agents.values().map(|a| a.info.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.agent_id.cmp(&b.agent_id)));
        self.roster.send_replace(list);
    }

    /// Registers a newly connected agent. Returns the link and the queue its socket drains.
    pub fn register_agent(
        &self,
        info: AgentInfo,
        address: Option<std::net::IpAddr>,
    ) -> Result<(Arc<AgentLink>, mpsc::Receiver<RelayToAgent>), HubError> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if agents.contains_key(&info.agent_id) {
            return Err(HubError::DuplicateAgent(info.agent_id));
        }
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let link = Arc::new(AgentLink {
            info: info.clone(),
            address,
            conn_id: self.next_id(),
            to_agent: tx,
            fanout: Fanout::new(),
            publisher: Mutex::new(None),
            viewers: Mutex::new(HashMap::new()),
            session: Mutex::new(None),
            ended: Mutex::new(None),
            channel: Outbox::new(CHANNEL_QUEUE),
            sessions_changed: self.sessions_changed.clone(),
            broken: std::sync::atomic::AtomicBool::new(false),
            broken_signal: tokio::sync::Notify::new(),
        });
        agents.insert(info.agent_id, link.clone());
        self.publish_roster(&agents);
        Ok((link, rx))
    }

    /// Removes an agent whose socket closed: every view of it ends and its media is torn down.
    pub async fn unregister_agent(&self, link: &Arc<AgentLink>) {
        {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            if agents.get(&link.info.agent_id).is_some_and(|l| l.conn_id == link.conn_id) {
                agents.remove(&link.info.agent_id);
                self.publish_roster(&agents);
            }
        }
        if let Some(session) = link.session() {
            session.step(sightline_core::session::Event::AgentLost, "system");
        }
        link.forget_ended_session();
        link.end_views(ViewEndReason::AgentGone);
        link.stop_publishing().await;
    }

    pub fn agent(&self, agent_id: &str) -> Result<Arc<AgentLink>, HubError> {
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.get(agent_id).cloned().ok_or_else(|| HubError::UnknownAgent(agent_id.to_owned()))
    }

    /// Ends every agent link (relay shutdown).
    pub async fn shutdown(&self) {
        let links: Vec<_> = {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            let links = agents.drain().map(|(_, l)| l).collect();
            self.publish_roster(&agents);
            links
        };
        for link in links {
            if let Some(session) = link.session() {
                session.step(sightline_core::session::Event::AgentLost, "system");
            }
            link.forget_ended_session();
            link.end_views(ViewEndReason::AgentGone);
            link.stop_publishing().await;
        }
    }
}

impl AgentLink {
    /// Attaches a new session; `false` if one is running.
    pub fn attach_session(&self, session: Arc<LiveSession>) -> bool {
        let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| !s.is_ended()) {
            return false;
        }
        *slot = Some(session);
        drop(slot);
        self.sessions_changed();
        true
    }

    /// Detaches the session `id` (after it ended).
    pub fn detach_session(&self, id: &str) {
        let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| s.id == id) {
            let ended = slot.take();
            drop(slot);
            *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = ended;
        }
    }

    /// Drops the last ended session: it holds this link, so keeping it past the link's life would
    /// keep both alive.
    pub fn forget_ended_session(&self) {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The running session, or the one that ended last, if it has this id.
    pub fn session_by_id(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.session()
            .filter(|s| s.id == id)
            .or_else(|| self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|s| s.id == id))
    }

    pub fn session(&self) -> Option<Arc<LiveSession>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
        }
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_queued_breaks_the_link_instead_of_vanishing() {
        let hub = Hub::new(Media::new(std::net::IpAddr::from([127, 0, 0, 1])));
        let (link, mut queue) = hub.register_agent(info(), None).unwrap();
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
