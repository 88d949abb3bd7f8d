//! The hub: which agents are online, who watches which agent, and the sessions running on them.
//!
//! Media is pinned to the relay node the agent is connected to. An agent publishes only while at
//! least one viewer watches it, so an idle endpoint captures and encodes nothing.
//!
//! An agent is online once its socket proved the device key (`sockets::agent`); a second
//! connection of the same device is refused while the first holds the roster entry. When its
//! socket closes (or falls silent, see `sockets::wire`) the agent leaves the roster, its session
//! ends as "agent lost", every view of it ends (`view_ended: agent_gone`) and its peer connections
//! close. A stale socket cleaning up never removes a newer connection of the same device. The
//! roster is a `watch` channel, so viewer sockets push changes instead of polling; revocations
//! from any node are fanned out to every socket here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sightline_identity::Revocation;
use sightline_proto::SessionSummary;
use sightline_proto::{AgentId, AgentInfo, RelayToAgent, ViewEndReason};
use sightline_sfu::Media;
use tokio::sync::{mpsc, watch};

use crate::link::AgentLink;
use crate::session::{LiveSession, Sessions};

/// Who is online, shared by every socket handler.
pub struct Hub {
    pub media: Media,
    agents: Mutex<HashMap<AgentId, Arc<OnlineAgent>>>,
    /// Current roster, so viewer sockets can push changes without polling.
    roster: watch::Sender<Vec<AgentInfo>>,
    /// Source of connection ids (agents and viewers), to tell a reconnected agent from its ghost.
    next_id: std::sync::atomic::AtomicU64,
    /// Revocations from any node; each socket closes itself when it is the one revoked.
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// Bumped whenever any session changes, so lists of sessions can be pushed.
    sessions_changed: Arc<watch::Sender<u64>>,
}

/// One online agent: the link to it, and the sessions that run on it.
pub struct OnlineAgent {
    pub link: Arc<AgentLink>,
    pub sessions: Arc<Sessions>,
    /// When its socket proved the device key (Unix ms): of two nodes that list the device, the
    /// later connection is the live one.
    pub since_ms: u64,
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
        let agents: Vec<_> = self.agents.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut list: Vec<SessionSummary> =
            agents.iter().filter_map(|a| a.sessions.current()).map(|s| s.summary()).collect();
        list.sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.session_id.cmp(&b.session_id)));
        list
    }

    /// What another node needs to take over each session running here (R43).
    pub fn handovers(&self) -> Vec<sightline_core::handover::Handover> {
        let agents: Vec<_> = self.agents.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        agents.iter().filter_map(|a| a.sessions.current()).filter_map(|s| s.handover()).collect()
    }

    /// A running session by id.
    pub fn session(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        let agents: Vec<_> = self.agents.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        agents.iter().filter_map(|a| a.sessions.current()).find(|s| s.id == session_id)
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

    /// The agents online here, each with when it connected.
    pub fn held_agents(&self) -> Vec<(AgentInfo, u64)> {
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.values().map(|a| (a.link.info.clone(), a.since_ms)).collect()
    }

    /// Follows roster changes.
    pub fn subscribe_roster(&self) -> watch::Receiver<Vec<AgentInfo>> {
        self.roster.subscribe()
    }

    fn publish_roster(&self, agents: &HashMap<AgentId, Arc<OnlineAgent>>) {
        let mut list: Vec<AgentInfo> = agents.values().map(|a| a.link.info.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.agent_id.cmp(&b.agent_id)));
        self.roster.send_replace(list);
    }

    /// Registers a newly connected agent. Returns it and the queue its socket drains.
    pub fn register_agent(
        &self,
        info: AgentInfo,
        address: Option<std::net::IpAddr>,
    ) -> Result<(Arc<OnlineAgent>, mpsc::Receiver<RelayToAgent>), HubError> {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if agents.contains_key(&info.agent_id) {
            return Err(HubError::DuplicateAgent(info.agent_id));
        }
        let agent_id = info.agent_id.clone();
        let (link, rx) = AgentLink::new(info, address, self.next_id(), self.sessions_changed.clone());
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let agent = Arc::new(OnlineAgent { link, sessions: Sessions::new(), since_ms });
        agents.insert(agent_id, agent.clone());
        self.publish_roster(&agents);
        Ok((agent, rx))
    }

    /// Removes an agent whose socket closed: every view of it ends and its media is torn down.
    pub async fn unregister_agent(&self, agent: &Arc<OnlineAgent>) {
        {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            if agents.get(&agent.link.info.agent_id).is_some_and(|a| a.link.conn_id == agent.link.conn_id) {
                agents.remove(&agent.link.info.agent_id);
                self.publish_roster(&agents);
            }
        }
        agent.gone().await;
    }

    pub fn agent(&self, agent_id: &str) -> Result<Arc<OnlineAgent>, HubError> {
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.get(agent_id).cloned().ok_or_else(|| HubError::UnknownAgent(agent_id.to_owned()))
    }

    /// Ends every agent link (relay shutdown).
    pub async fn shutdown(&self) {
        let gone: Vec<_> = {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            let gone = agents.drain().map(|(_, a)| a).collect();
            self.publish_roster(&agents);
            gone
        };
        for agent in gone {
            agent.gone().await;
        }
    }
}

impl OnlineAgent {
    /// The agent is gone: its session ends as "agent lost", every view of it ends and its media
    /// is torn down.
    async fn gone(&self) {
        if let Some(session) = self.sessions.current() {
            session.step(sightline_core::session::Event::AgentLost, "system");
        }
        self.sessions.forget_ended();
        self.link.end_views(ViewEndReason::AgentGone);
        self.link.stop_publishing().await;
    }
}
