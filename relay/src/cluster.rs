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
use sightline_audit::events::{Event, EventKind, EventSink, Outcome};
use sightline_core::audit::SessionFacts;
use sightline_core::cluster::{ClusterView, ForwardError, Forwarded, HEARTBEAT_MS, HeldAgent, NodeRecord};
use sightline_store::{Collection, Store};
use tokio::sync::watch;

use crate::hub::Hub;

/// What nodes tell each other through the store's events (beside `Revocation`s on the same
/// channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cluster", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// A node's record changed: read it now rather than at the next beat.
    NodeChanged { node: String },
    /// Node `from` asks node `to` to act on a session `to` runs, for `actor` (who was checked
    /// and, where the action needs it, stepped up on `from`).
    Command {
        id: String,
        from: String,
        to: String,
        session_id: String,
        actor: String,
        source: Option<std::net::IpAddr>,
        action: SessionAction,
    },
    /// The answer to command `id`, for node `to`.
    Reply { id: String, to: String, result: Result<(), String> },
}

/// What a node may ask of the node that runs a session: the admin's kill (R22), a senior's
/// approval of exactly the levels they saw pending (R7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SessionAction {
    Kill,
    Approve { levels: Vec<sightline_proto::Level> },
}

/// Why a command to another node did not act.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Refused(String),
    #[error("node {0} did not confirm within 5 s; the action may still take effect there")]
    NoAnswer(String),
    #[error("the shared store cannot carry the command: {0}")]
    Store(#[from] sightline_store::StoreError),
}

/// How long a node waits for another's answer to a command.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// This node's membership of the service.
pub struct Cluster {
    me: String,
    /// Where this node records the end of a lost node's sessions.
    events: Arc<dyn EventSink>,
    url: String,
    key: sightline_core::cluster::ForwardKey,
    verifier_key: String,
    store: Store,
    view: watch::Sender<ClusterView>,
    /// Commands this node has sent to others.
    commands: std::sync::atomic::AtomicU64,
    /// Set by `leave`; the heartbeat writes under it, so nothing is written after.
    left: tokio::sync::Mutex<bool>,
    /// When each other node's heartbeat last changed, by this node's own clock: a node is lost
    /// when its record stood still that long, whatever the two clocks say.
    still_since: std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>,
}

/// Applies another node's command to a session running here.
fn apply(
    hub: &Hub,
    session_id: &str,
    actor: &str,
    source: Option<std::net::IpAddr>,
    action: &SessionAction,
) -> Result<(), String> {
    let session = hub.session(session_id).ok_or("no such session is running")?;
    if session.is_ended() {
        // As on the node itself: killing an ended session changes nothing, approving fails.
        return match action {
            SessionAction::Kill => Ok(()),
            SessionAction::Approve { .. } => Err("the session has ended".into()),
        };
    }
    if let Some(ip) = source {
        session.note_address(actor, ip);
    }
    match action {
        SessionAction::Kill => {
            session.kill(actor);
            Ok(())
        }
        SessionAction::Approve { levels } => {
            session.approve(actor, &levels.iter().copied().collect()).map_err(|e| e.to_string())
        }
    }
}

/// A node whose record is this old has its sessions taken over or their ends recorded by a
/// survivor: longer than it takes to leave the lists (`NODE_SILENCE_MS`), so a node that merely
/// missed a few beats is not declared lost.
pub const NODE_LOST_MS: u64 = 6_000;

/// The store key by which one surviving node claims a lost node's session, to take it over or to
/// record its end: once per node lost, so a session that moved and lost its new node too is
/// claimed again.
pub fn lost_claim(node: &str, session_id: &str) -> String {
    format!("node-lost:{node}:{session_id}")
}

/// How much longer than `NODE_LOST_MS` a survivor waits before recording the end of a lost
/// node's session whose endpoint is back on a live node: that node is taking the session over
/// (the relay's `takeover`), and records its end itself if it cannot.
const TAKEOVER_WINDOW_MS: u64 = 8_000;

/// The records that decode; one that does not (a node of another version during an upgrade) is
/// skipped with a warning instead of hiding every other node.
pub(crate) fn decode_records(records: Vec<(String, serde_json::Value)>) -> Vec<NodeRecord> {
    records
        .into_iter()
        .filter_map(|(name, value)| match serde_json::from_value(value) {
            Ok(record) => Some(record),
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "skipping a node record this node cannot read");
                None
            }
        })
        .collect()
}

/// Refuses to start this node under `name` while another live node runs under it (R43): two
/// nodes of one name would write one audit copy and one heartbeat record, and the second would
/// be refused later with a less telling error (its log behind the copy). A record left behind
/// may be this node's own previous run, killed a moment ago, so it is read again after a
/// heartbeat and a half: only a live node moves it meanwhile (judged by the record changing,
/// not by comparing clocks). Two twins started at the same moment, before either wrote its
/// record, are not caught here.
pub async fn refuse_if_name_taken(store: &Store, name: &str) -> anyhow::Result<()> {
    let read = || store.get::<NodeRecord>(Collection::Nodes, name);
    let Some(first) = read().await? else { return Ok(()) };
    tokio::time::sleep(std::time::Duration::from_millis(HEARTBEAT_MS * 3 / 2)).await;
    if let Some(again) = read().await?
        && again.heartbeat_ms != first.heartbeat_ms
    {
        anyhow::bail!(
            "another relay node named {name:?} is running ({}): give each node its own name with --node",
            again.url
        );
    }
    Ok(())
}

/// Unix milliseconds by this node's clock (what heartbeats and statements carry).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Joins the service as `me`, reachable by the other nodes at `url`, signing with `key`.
    pub fn new(
        me: String,
        url: url::Url,
        key: &sightline_core::audit::AuditKey,
        store: Store,
        events: Arc<dyn EventSink>,
    ) -> Arc<Cluster> {
        let url = url.as_str().trim_end_matches('/').to_owned();
        Arc::new(Cluster {
            me,
            events,
            url,
            key: sightline_core::cluster::ForwardKey::of(key),
            verifier_key: key.verifier_key().to_owned(),
            store,
            view: watch::channel(ClusterView::default()).0,
            commands: 0.into(),
            left: tokio::sync::Mutex::new(false),
            still_since: std::sync::Mutex::new(std::collections::HashMap::new()),
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

    /// The header with which this node forwards a viewer's socket, or carries one request
    /// (`purpose`), to node `to`.
    pub fn forward_header(&self, purpose: &str, to: &str, sid: &str, client: std::net::IpAddr) -> String {
        Forwarded {
            purpose: purpose.to_owned(),
            from: self.me.clone(),
            to: to.to_owned(),
            sid: sid.to_owned(),
            client,
            at_ms: now_ms(),
        }
        .header(&self.key)
    }

    /// Checks a forwarding header received for login session `sid` and `purpose`. A node this node has not
    /// heard of yet (it started since the last beat) is looked up in the store once: its first
    /// forwarded user need not wait for this node's next beat.
    pub async fn verify_forwarded(&self, header: &str, sid: &str, purpose: &str) -> Result<Forwarded, ForwardError> {
        let view = self.view.borrow().clone();
        match Forwarded::verify(header, &self.me, sid, purpose, &view, now_ms()) {
            Err(ForwardError::UnknownNode(from)) => {
                let record = self.store.get::<NodeRecord>(Collection::Nodes, &from).await.ok().flatten();
                let fresh = ClusterView::new(record, now_ms());
                Forwarded::verify(header, &self.me, sid, purpose, &fresh, now_ms())
            }
            checked => checked,
        }
    }

    fn own_record(&self, hub: &Hub) -> NodeRecord {
        NodeRecord {
            name: self.me.clone(),
            url: self.url.clone(),
            key: self.verifier_key.clone(),
            heartbeat_ms: now_ms(),
            agents: hub.held_agents().into_iter().map(|(info, since_ms)| HeldAgent { info, since_ms }).collect(),
            sessions: hub.sessions(),
            handovers: hub.handovers(),
        }
    }

    /// How long node `name`'s record has stood still at `heartbeat_ms`: `None` unless this
    /// node's last read of it saw that very heartbeat (a record read since that moved on, or a
    /// stalled heartbeat loop that has not read it, proves no silence).
    pub fn still_for(&self, name: &str, heartbeat_ms: u64) -> Option<std::time::Duration> {
        let still = self.still_since.lock().unwrap_or_else(|e| e.into_inner());
        still.get(name).filter(|(beat, _)| *beat == heartbeat_ms).map(|(_, since)| since.elapsed())
    }

    /// The shared store (the takeover reads lost nodes' records and claims their sessions).
    pub fn store(&self) -> &Store {
        &self.store
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
        // Lost nodes (name, last heartbeat) whose sessions were seen to.
        let mut reaped = std::collections::HashSet::new();
        // This node's previous run left its record behind (it was killed): the sessions it ran
        // ended with it, unrecorded, unless a surviving node recorded them meanwhile. Read
        // before this run's first beat overwrites it (tried for a few seconds), and seen to at
        // every beat until done.
        let mut previous = None;
        for attempt in 1..=5 {
            match self.store.get::<NodeRecord>(Collection::Nodes, &self.me).await {
                Ok(found) => {
                    previous = found;
                    break;
                }
                Err(e) if attempt == 5 => {
                    tracing::error!(error = %e, "cannot read this node's previous record: the ends of its sessions are not recorded");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
            }
        }
        tokio::spawn(self.clone().serve_commands(hub.clone()));
        loop {
            let (changed_here, read_others) = tokio::select! {
                _ = beat.tick() => (false, true),
                r = roster.changed() => { if r.is_err() { return } (true, false) }
                r = sessions.changed() => { if r.is_err() { return } (true, false) }
                event = events.recv() => match event {
                    Ok(bytes) => match serde_json::from_slice::<ClusterEvent>(&bytes) {
                        Ok(ClusterEvent::NodeChanged { node }) if node != self.me => (false, true),
                        _ => continue,
                    },
                    // Missed events: the next beat reads every record anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => (false, true),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            if let Some(prev) = &previous
                && self.end_sessions_of_lost(prev, false).await
            {
                previous = None;
            }
            let own = self.own_record(&hub);
            let mut result = {
                // Not after `leave`: a record written then would bring a stopped node back.
                let left = self.left.lock().await;
                if *left {
                    return;
                }
                self.store.put(Collection::Nodes, &self.me, &own).await
            };
            if changed_here && result.is_ok() {
                result = self.store.publish(&ClusterEvent::NodeChanged { node: self.me.clone() }).await;
            }
            // Whether `others` was read now: only a fresh read may declare a node lost.
            let mut fresh = false;
            if read_others && result.is_ok() {
                match self.store.list::<serde_json::Value>(Collection::Nodes).await {
                    Ok(records) => {
                        others = decode_records(records).into_iter().filter(|r| r.name != self.me).collect();
                        fresh = true;
                    }
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
            let now = now_ms();
            let view = ClusterView::new(others.iter().cloned().chain([own]), now);
            if fresh {
                let at = std::time::Instant::now();
                let lost_after = std::time::Duration::from_millis(NODE_LOST_MS);
                let lost: Vec<NodeRecord> = {
                    let mut still_since = self.still_since.lock().unwrap_or_else(|e| e.into_inner());
                    still_since.retain(|name, _| others.iter().any(|r| &r.name == name));
                    for r in &others {
                        let entry = still_since.entry(r.name.clone()).or_insert((r.heartbeat_ms, at));
                        if entry.0 != r.heartbeat_ms {
                            *entry = (r.heartbeat_ms, at);
                        }
                    }
                    // A node whose record stood still that long, as of a read made just now.
                    others
                        .iter()
                        .filter(|r| still_since.get(&r.name).is_some_and(|(_, t)| at - *t >= lost_after))
                        .cloned()
                        .collect()
                };
                for lost in &lost {
                    let which = (lost.name.clone(), lost.heartbeat_ms);
                    if !reaped.contains(&which) && self.end_sessions_of_lost(lost, true).await {
                        reaped.insert(which);
                    }
                }
            }
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

    /// Serves the other nodes' commands to this node's sessions, on a subscription of its own,
    /// so an answer never waits behind the heartbeat's store calls.
    async fn serve_commands(self: Arc<Self>, hub: Arc<Hub>) {
        let mut events = self.store.subscribe();
        loop {
            let bytes = match events.recv().await {
                Ok(bytes) => bytes,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "commands from other nodes may have been missed; they get no answer");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Ok(ClusterEvent::Command { id, from, to, session_id, actor, source, action }) =
                serde_json::from_slice::<ClusterEvent>(&bytes)
            else {
                continue;
            };
            if to != self.me {
                continue;
            }
            let result = apply(&hub, &session_id, &actor, source, &action);
            let reply = ClusterEvent::Reply { id, to: from, result };
            if let Err(e) = self.store.publish(&reply).await {
                tracing::error!(error = %e, "cannot answer another node's command");
            }
        }
    }

    /// Asks node `to` to act on session `session_id` it runs, and waits for its answer.
    pub async fn ask(
        &self,
        to: &str,
        session_id: &str,
        actor: &str,
        source: Option<std::net::IpAddr>,
        action: SessionAction,
    ) -> Result<(), CommandError> {
        // Unique among this node's commands, and across restarts by the time.
        let n = self.commands.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{}-{n}", self.me, now_ms());
        let mut events = self.store.subscribe();
        let command = ClusterEvent::Command {
            id: id.clone(),
            from: self.me.clone(),
            to: to.to_owned(),
            session_id: session_id.to_owned(),
            actor: actor.to_owned(),
            source,
            action,
        };
        self.store.publish(&command).await?;
        let answer = async {
            loop {
                match events.recv().await {
                    Ok(bytes) => {
                        if let Ok(ClusterEvent::Reply { id: of, to, result }) = serde_json::from_slice(&bytes)
                            && of == id
                            && to == self.me
                        {
                            return Some(result);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        match tokio::time::timeout(ANSWER_WITHIN, answer).await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(why))) => Err(CommandError::Refused(why)),
            Ok(None) | Err(_) => Err(CommandError::NoAnswer(to.to_owned())),
        }
    }

    /// A node stopped renewing its record without leaving (killed, powered off, cut off): the
    /// sessions it ran cannot have recorded their end. A session whose endpoint came back on a
    /// live node is left to that node for `TAKEOVER_WINDOW_MS` more (it takes the session over,
    /// the relay's `takeover`); for every other, one surviving node (the first to claim each in the
    /// store) records its end, with the facts the lost node last published (R43). Viewers
    /// connected elsewhere were told by their forwarded sockets; the endpoint ends its side
    /// within 5 s of losing the relay (R22). Whether every session was seen to (a store error
    /// leaves the rest for the next beat).
    ///
    /// A node cut off from the store but still running ends its sessions itself within 5 s (its
    /// viewer sockets cannot re-check their logins), before a survivor's `NODE_LOST_MS`; both
    /// ends are then on the record, each naming who ended it.
    async fn end_sessions_of_lost(&self, lost: &NodeRecord, read_again: bool) -> bool {
        // Read again just before claiming: a node that came back has renewed its record, and one
        // that left removed it (it recorded its own ends). Not for this node's own previous run.
        if read_again {
            match self.store.get::<NodeRecord>(Collection::Nodes, &lost.name).await {
                Ok(Some(now)) if now.heartbeat_ms != lost.heartbeat_ms => return true,
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::error!(error = %e, node = %lost.name, "cannot read a lost node's record");
                    return false;
                }
            }
        }
        let mut all_seen_to = true;
        for s in lost.sessions.iter().filter(|s| s.phase != sightline_proto::SessionPhase::Ended) {
            // Its endpoint is back on a live node, which is taking the session over: that node
            // records the end itself if it cannot, and this one only once it had time to.
            let back = self.view().node_of_agent(&s.agent_id).is_some_and(|n| n.name != lost.name);
            let waited = self.still_for(&lost.name, lost.heartbeat_ms).unwrap_or_default();
            if read_again && back && waited < std::time::Duration::from_millis(NODE_LOST_MS + TAKEOVER_WINDOW_MS) {
                all_seen_to = false;
                continue;
            }
            let claim = lost_claim(&lost.name, &s.session_id);
            match self.store.insert_new(Collection::Mutexes, &claim, &(self.me.clone(), now_ms())).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    // Tried again at the next beat, by this node or another.
                    tracing::error!(error = %e, session = %s.session_id, "cannot claim a lost node's session");
                    return false;
                }
            }
            let silent_s = now_ms().saturating_sub(lost.heartbeat_ms) / 1000;
            self.record_lost_end(lost, s, &format!("{} stopped answering {silent_s} s ago", lost.name));
        }
        all_seen_to
    }

    /// Records the end of session `s` of the lost node `lost` (its single `session.ended`), once
    /// this node claimed it: `why` the session could not go on.
    pub fn record_lost_end(&self, lost: &NodeRecord, s: &sightline_proto::SessionSummary, why: &str) {
        let agent = lost.agents.iter().find(|a| a.info.agent_id == s.agent_id).map(|a| &a.info);
        let facts = SessionFacts {
            session_id: s.session_id.clone(),
            ticket: s.ticket.clone(),
            reason: s.reason.clone(),
            device_id: s.agent_id.clone(),
            device: s.agent_name.clone(),
            endpoint_user: agent.map(|a| a.user.clone()).unwrap_or_default(),
            operator: s.operator.clone(),
            levels: s.granted.clone(),
            unattended: agent.is_some_and(|a| a.unattended),
        };
        let reason = sightline_proto::EndReason::NodeLost(why.to_owned());
        let detail = format!("{}; ended by {}", reason.describe(), self.me);
        tracing::warn!(session = %s.session_id, node = %lost.name, "recording the end of a lost node's session");
        self.events.emit(Event::of_session(
            now_ms(),
            EventKind::SessionEnded,
            Outcome::Failure,
            "system",
            facts,
            None,
            detail,
        ));
        crate::metrics::session_ended(&reason);
    }

    /// Leaves the service (graceful shutdown): the record goes, and the others are told.
    pub async fn leave(&self) {
        let mut left = self.left.lock().await;
        *left = true;
        if let Err(e) = self.store.delete(Collection::Nodes, &self.me).await {
            tracing::warn!(error = %e, "cannot remove this node's record; it ages out");
            return;
        }
        let _ = self.store.publish(&ClusterEvent::NodeChanged { node: self.me.clone() }).await;
    }
}
