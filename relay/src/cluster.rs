//! This node as one of several (R43): its heartbeat in the shared store with the agents and
//! sessions it holds, the live nodes as every viewer sees them, and the statements with which it
//! vouches for the viewers whose signaling it forwards (rules in `sightline_core::cluster`).
//!
//! The node writes its record every second and at once when an agent comes or goes or a session
//! changes, then tells the other nodes through the store's events, so their lists follow within
//! a store round trip. This node's own part of the view is always its hub as of now, whatever the
//! store answers: a store that cannot be read leaves the other nodes' last records, which age out
//! after `NODE_SILENCE_MS` (a node that cannot see the others stops offering their agents).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sightline_core::cluster::{ClusterView, ForwardError, Forwarded, HEARTBEAT_MS, HeldAgent, NodeRecord};
use sightline_store::{Collection, Store};
use tokio::sync::watch;

use crate::hub::Hub;

/// The store event that says a node's record changed (beside `Revocation`s on the same channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeChanged {
    pub node_changed: String,
}

/// This node's membership of the service.
pub struct Cluster {
    me: String,
    url: String,
    key: sightline_core::cluster::ForwardKey,
    verifier_key: String,
    store: Store,
    view: watch::Sender<ClusterView>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Joins the service as `me`, reachable by the other nodes at `url`, signing with `key`.
    pub fn new(me: String, url: url::Url, key: &sightline_core::audit::AuditKey, store: Store) -> Arc<Cluster> {
        let url = url.as_str().trim_end_matches('/').to_owned();
        Arc::new(Cluster {
            me,
            url,
            key: sightline_core::cluster::ForwardKey::of(key),
            verifier_key: key.verifier_key().to_owned(),
            store,
            view: watch::channel(ClusterView::default()).0,
        })
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The live nodes as of the last heartbeat or change.
    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    /// Follows the view (every change of agents, sessions or nodes).
    pub fn subscribe(&self) -> watch::Receiver<ClusterView> {
        self.view.subscribe()
    }

    /// The header with which this node forwards a viewer to node `to`.
    pub fn forward_header(&self, to: &str, sid: &str, client: std::net::IpAddr) -> String {
        Forwarded { from: self.me.clone(), to: to.to_owned(), sid: sid.to_owned(), client, at_ms: now_ms() }
            .header(&self.key)
    }

    /// Checks a forwarding header received for login session `sid`.
    pub fn verify_forwarded(&self, header: &str, sid: &str) -> Result<Forwarded, ForwardError> {
        Forwarded::verify(header, &self.me, sid, &self.view.borrow(), now_ms())
    }

    fn own_record(&self, hub: &Hub) -> NodeRecord {
        NodeRecord {
            name: self.me.clone(),
            url: self.url.clone(),
            key: self.verifier_key.clone(),
            heartbeat_ms: now_ms(),
            agents: hub.held_agents().into_iter().map(|(info, since_ms)| HeldAgent { info, since_ms }).collect(),
            sessions: hub.sessions(),
        }
    }

    /// Keeps this node's record and the view of the others current until the hub goes. Store
    /// errors are logged (once per outage) and tried again at the next beat.
    pub async fn run(self: Arc<Self>, hub: Arc<Hub>) {
        let mut beat = tokio::time::interval(std::time::Duration::from_millis(HEARTBEAT_MS));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut roster = hub.subscribe_roster();
        let mut sessions = hub.subscribe_sessions();
        let mut events = self.store.subscribe();
        let mut others: Vec<NodeRecord> = Vec::new();
        let mut failing = false;
        loop {
            let (changed_here, read_others) = tokio::select! {
                _ = beat.tick() => (false, true),
                r = roster.changed() => { if r.is_err() { return } (true, false) }
                r = sessions.changed() => { if r.is_err() { return } (true, false) }
                event = events.recv() => match event {
                    Ok(bytes) => match serde_json::from_slice::<NodeChanged>(&bytes) {
                        Ok(changed) if changed.node_changed != self.me => (false, true),
                        _ => continue,
                    },
                    // Missed events: the next beat reads every record anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => (false, true),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            let own = self.own_record(&hub);
            let mut result = self.store.put(Collection::Nodes, &self.me, &own).await;
            if changed_here && result.is_ok() {
                result = self.store.publish(&NodeChanged { node_changed: self.me.clone() }).await;
            }
            if read_others && result.is_ok() {
                match self.store.list::<NodeRecord>(Collection::Nodes).await {
                    Ok(records) => others = records.into_iter().map(|(_, r)| r).filter(|r| r.name != self.me).collect(),
                    Err(e) => result = Err(e),
                }
            }
            match result {
                Err(e) if !failing => {
                    tracing::error!(error = %e, "cannot reach the shared store: other nodes' agents age out of the lists");
                    failing = true;
                }
                Ok(()) if failing => {
                    tracing::info!("the shared store answers again");
                    failing = false;
                }
                _ => {}
            }
            let view = ClusterView::new(others.iter().cloned().chain([own]), now_ms());
            self.view.send_if_modified(|old| {
                let changed = old.agents != view.agents
                    || old.sessions != view.sessions
                    || old
                        .nodes()
                        .map(|n| (&n.name, &n.url, &n.key))
                        .ne(view.nodes().map(|n| (&n.name, &n.url, &n.key)));
                *old = view;
                changed
            });
        }
    }

    /// Leaves the service (graceful shutdown): the record goes, and the others are told.
    pub async fn leave(&self) {
        if let Err(e) = self.store.delete(Collection::Nodes, &self.me).await {
            tracing::warn!(error = %e, "cannot remove this node's record; it ages out");
            return;
        }
        let _ = self.store.publish(&NodeChanged { node_changed: self.me.clone() }).await;
    }
}
