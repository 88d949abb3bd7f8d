//! Several relay nodes as one service (R43), without IO: which nodes are alive, which node holds
//! each agent and runs each session, and the statement with which one node vouches to another for
//! the viewer whose signaling it forwards.
//!
//! Every node writes a `NodeRecord` to the shared store every `HEARTBEAT_MS` and whenever its
//! agents or sessions change; a record not renewed for `NODE_SILENCE_MS` is a node gone. A session
//! runs on the node that holds its agent's link; a viewer connected to another node reaches it
//! through that node, which opens a socket to the session's node and vouches for the viewer's
//! address with a `Forwarded` statement signed by its node key (the key in its record). The
//! session's node applies policy, consent, recording and input gating exactly as for its own
//! viewers, to the address the statement names.
//!
//! Clocks: liveness and the statement's freshness compare one node's clock with another's, so
//! nodes need synchronised clocks (NTP); a skew beyond a second or two shortens or lengthens how
//! soon a node counts as gone.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ed25519_dalek::{Signature, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sightline_proto::{AgentInfo, SessionSummary};

use crate::audit::AuditKey;
use crate::recording::verifying_key_from_note;

/// How often a node renews its record.
pub const HEARTBEAT_MS: u64 = 1_000;
/// A node whose record is older than this is gone (four missed beats).
pub const NODE_SILENCE_MS: u64 = 4_000;
/// How long a forwarding statement is good for: long enough for a slow handshake between nodes,
/// short enough that a copied header is of little use (it also needs the viewer's cookie).
pub const FORWARD_VALID_MS: u64 = 30_000;

/// What a node tells the others about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name (its audit log's origin).
    pub name: String,
    /// Where other nodes reach this node's HTTP and WebSocket surface (`--node-url`).
    pub url: String,
    /// The node's key (a verifier key in note form), which signs what it forwards.
    pub key: String,
    /// When the record was written, by the node's clock (Unix ms).
    pub heartbeat_ms: u64,
    /// The agents whose links the node holds.
    pub agents: Vec<HeldAgent>,
    /// The sessions running on the node.
    pub sessions: Vec<SessionSummary>,
    /// What a surviving node needs to take each running session over (`crate::handover`).
    #[serde(default)]
    pub handovers: Vec<crate::handover::Handover>,
}

/// An agent a node holds, and since when (to tell a reconnected agent from the record of a node
/// that lost it and has not yet counted as gone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldAgent {
    pub info: AgentInfo,
    pub since_ms: u64,
}

/// The live nodes as one service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Live nodes, by name.
    nodes: BTreeMap<String, NodeRecord>,
    /// Every online agent once, with the node that holds it, sorted by name.
    pub agents: Vec<AgentInfo>,
    /// Every running session once, with its node, oldest first.
    pub sessions: Vec<SessionSummary>,
}

impl ClusterView {
    /// The view of `records` at `now_ms`: nodes silent for longer than `NODE_SILENCE_MS` are left
    /// out; an agent two live nodes claim is on the one it connected to last.
    pub fn new(records: impl IntoIterator<Item = NodeRecord>, now_ms: u64) -> ClusterView {
        let nodes: BTreeMap<String, NodeRecord> = records
            .into_iter()
            .filter(|r| r.heartbeat_ms.saturating_add(NODE_SILENCE_MS) >= now_ms)
            .map(|r| (r.name.clone(), r))
            .collect();
        let mut holder: BTreeMap<&str, (&NodeRecord, &HeldAgent)> = BTreeMap::new();
        for node in nodes.values() {
            for held in &node.agents {
                let newer = holder.get(held.info.agent_id.as_str()).is_none_or(|(_, h)| held.since_ms > h.since_ms);
                if newer {
                    holder.insert(&held.info.agent_id, (node, held));
                }
            }
        }
        let mut agents: Vec<AgentInfo> =
            holder.values().map(|(node, held)| AgentInfo { node: node.name.clone(), ..held.info.clone() }).collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.agent_id.cmp(&b.agent_id)));
        // A session is where its agent is; one the holder does not list (it ended there, or the
        // agent moved) is listed from the node that still runs it.
        let mut sessions: BTreeMap<&str, SessionSummary> = BTreeMap::new();
        for node in nodes.values() {
            for s in &node.sessions {
                let on_holder = holder.get(s.agent_id.as_str()).is_some_and(|(n, _)| n.name == node.name);
                if on_holder || !sessions.contains_key(s.session_id.as_str()) {
                    sessions.insert(&s.session_id, SessionSummary { node: node.name.clone(), ..s.clone() });
                }
            }
        }
        let mut sessions: Vec<SessionSummary> = sessions.into_values().collect();
        sessions.sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.session_id.cmp(&b.session_id)));
        ClusterView { agents, sessions, nodes }
    }

    /// A live node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    /// The live nodes.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// The node that holds an agent's link.
    pub fn node_of_agent(&self, agent_id: &str) -> Option<&NodeRecord> {
        let agent = self.agents.iter().find(|a| a.agent_id == agent_id)?;
        self.nodes.get(&agent.node)
    }

    /// The node that runs a session.
    pub fn node_of_session(&self, session_id: &str) -> Option<&NodeRecord> {
        let session = self.sessions.iter().find(|s| s.session_id == session_id)?;
        self.nodes.get(&session.node)
    }
}

/// Why a forwarded viewer is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("malformed forwarding statement: {0}")]
    Malformed(&'static str),
    #[error("node {0:?} is not a live node of this service")]
    UnknownNode(String),
    #[error("the forwarding statement is not signed by node {0:?}'s key")]
    BadSignature(String),
    #[error(
        "the forwarding statement was made {skew_ms} ms away from this node's clock (at most {FORWARD_VALID_MS} ms): are the nodes' clocks synchronised (NTP)?"
    )]
    Stale { skew_ms: u64 },
}

/// What a statement is for, signed with it: the node checks it against what it was asked to do,
/// so a statement made for one request opens nothing else.
pub const PURPOSE_VIEWER_SOCKET: &str = "viewer-socket";

/// The purpose of a statement carrying one HTTP request (`GET /api/recordings/...`).
pub fn request_purpose(method: &str, path: &str) -> String {
    format!("{method} {path}")
}

/// A node vouches that it forwards the socket (or carries the request, `purpose` says which) of
/// a viewer signed in with session `sid`, who connected to it from `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// What it is for: `PURPOSE_VIEWER_SOCKET`, or `request_purpose` of the one request.
    pub purpose: String,
    /// The forwarding node.
    pub from: String,
    /// The node it forwards to.
    pub to: String,
    /// The viewer's login session.
    pub sid: String,
    /// The viewer's address as the forwarding node saw it.
    pub client: IpAddr,
    pub at_ms: u64,
}

/// A node's key as it signs forwarding statements (its evidence key: the one its record names).
#[derive(Clone)]
pub struct ForwardKey(ed25519_dalek::SigningKey);

impl ForwardKey {
    pub fn of(key: &AuditKey) -> ForwardKey {
        ForwardKey(key.signing_key().clone())
    }
}

impl std::fmt::Debug for ForwardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardKey")
    }
}

/// The HTTP header that carries the statement: `from;client;at_ms;signature`.
pub const FORWARDED_HEADER: &str = "x-sightline-forwarded";

impl Forwarded {
    fn message(&self) -> Vec<u8> {
        let Forwarded { purpose, from, to, sid, client, at_ms } = self;
        format!("sightline forwarded viewer v2\n{purpose}\n{from}\n{to}\n{sid}\n{client}\n{at_ms}\n").into_bytes()
    }

    /// The header value, signed with the forwarding node's key.
    pub fn header(&self, key: &ForwardKey) -> String {
        let signature = hex::encode(key.0.sign(&self.message()).to_bytes());
        format!("{};{};{};{signature}", self.from, self.client, self.at_ms)
    }

    /// Reads and checks a header received by node `to` for login session `sid` and `purpose`:
    /// signed by a live node's key (from `cluster`), within `FORWARD_VALID_MS` of `now_ms`.
    pub fn verify(
        header: &str,
        to: &str,
        sid: &str,
        purpose: &str,
        cluster: &ClusterView,
        now_ms: u64,
    ) -> Result<Forwarded, ForwardError> {
        let mut parts = header.split(';');
        let (Some(from), Some(client), Some(at_ms), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ForwardError::Malformed("four fields separated by ';' expected"));
        };
        let client: IpAddr = client.parse().map_err(|_| ForwardError::Malformed("the client is not an address"))?;
        let at_ms: u64 = at_ms.parse().map_err(|_| ForwardError::Malformed("the time is not a number"))?;
        let signature = hex::decode(signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or(ForwardError::Malformed("the signature is not 64 bytes of hex"))?;
        let node = cluster.node(from).ok_or_else(|| ForwardError::UnknownNode(from.to_owned()))?;
        let statement = Forwarded {
            purpose: purpose.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            sid: sid.to_owned(),
            client,
            at_ms,
        };
        let public = verifying_key_from_note(&node.key).map_err(|_| ForwardError::BadSignature(from.to_owned()))?;
        public
            .verify(&statement.message(), &Signature::from_bytes(&signature))
            .map_err(|_| ForwardError::BadSignature(from.to_owned()))?;
        if now_ms.abs_diff(at_ms) > FORWARD_VALID_MS {
            return Err(ForwardError::Stale { skew_ms: now_ms.abs_diff(at_ms) });
        }
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentInfo {
        AgentInfo {
            agent_id: id.into(),
            name: format!("pc-{id}"),
            segment: "office".into(),
            width: 640,
            height: 480,
            user: "alice".into(),
            unattended: false,
            node: String::new(),
        }
    }

    fn session(id: &str, agent_id: &str, started_ms: u64) -> SessionSummary {
        SessionSummary {
            session_id: id.into(),
            agent_id: agent_id.into(),
            agent_name: format!("pc-{agent_id}"),
            segment: "office".into(),
            operator: "olga".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
            phase: sightline_proto::SessionPhase::Active,
            granted: vec![],
            pending_elevation: vec![],
            needs_senior: false,
            observers: vec![],
            started_ms,
            node: String::new(),
        }
    }

    fn node(name: &str, key: &AuditKey, heartbeat_ms: u64, agents: &[(&str, u64)]) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            url: format!("http://{name}.internal:8443"),
            key: key.verifier_key().to_owned(),
            heartbeat_ms,
            agents: agents.iter().map(|(id, since_ms)| HeldAgent { info: agent(id), since_ms: *since_ms }).collect(),
            sessions: vec![],
            handovers: vec![],
        }
    }

    fn key(name: &str) -> AuditKey {
        AuditKey::from_seed(name, &[name.len() as u8; 32]).unwrap()
    }

    #[test]
    fn silent_nodes_and_their_agents_are_gone() {
        let (a, b) = (key("a"), key("bb"));
        let records = [node("a", &a, 10_000, &[("1", 1)]), node("bb", &b, 10_000 - NODE_SILENCE_MS - 1, &[("2", 1)])];
        let view = ClusterView::new(records.clone(), 10_000);
        assert_eq!(view.nodes().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            view.agents.iter().map(|a| (a.agent_id.as_str(), a.node.as_str())).collect::<Vec<_>>(),
            [("1", "a")]
        );
        assert!(view.node_of_agent("2").is_none());
        // Control: at the limit, the second node still counts.
        let view = ClusterView::new(records, 9_999);
        assert_eq!(view.node_of_agent("2").map(|n| n.name.as_str()), Some("bb"));
    }

    #[test]
    fn an_agent_two_nodes_claim_is_where_it_connected_last_and_so_is_its_session() {
        let (a, b) = (key("a"), key("bb"));
        let mut on_a = node("a", &a, 5_000, &[("1", 100)]);
        let mut on_b = node("bb", &b, 5_000, &[("1", 200)]);
        on_a.sessions = vec![session("s-old", "1", 50), session("s-a", "9", 60)];
        on_b.sessions = vec![session("s-old", "1", 50)];
        let view = ClusterView::new([on_a.clone(), on_b.clone()], 5_000);
        assert_eq!(view.node_of_agent("1").map(|n| n.name.as_str()), Some("bb"));
        assert_eq!(view.agents.len(), 1);
        assert_eq!(view.node_of_session("s-old").map(|n| n.name.as_str()), Some("bb"));
        assert_eq!(view.node_of_session("s-a").map(|n| n.name.as_str()), Some("a"));
        assert_eq!(view.sessions.iter().map(|s| s.session_id.as_str()).collect::<Vec<_>>(), ["s-old", "s-a"]);
        // The other way round, node a holds it.
        on_a.agents[0].since_ms = 300;
        let view = ClusterView::new([on_a, on_b], 5_000);
        assert_eq!(view.node_of_agent("1").map(|n| n.name.as_str()), Some("a"));
        assert_eq!(view.node_of_session("s-old").map(|n| n.name.as_str()), Some("a"));
    }

    #[test]
    fn a_forwarding_statement_holds_only_as_signed_by_a_live_node() {
        let (a, b) = (key("a"), key("bb"));
        let view = ClusterView::new([node("a", &a, 1_000, &[]), node("bb", &b, 1_000, &[])], 1_000);
        let statement = Forwarded {
            purpose: PURPOSE_VIEWER_SOCKET.into(),
            from: "a".into(),
            to: "bb".into(),
            sid: "sid-1".into(),
            client: "198.18.0.7".parse().unwrap(),
            at_ms: 1_000,
        };
        let header = statement.header(&ForwardKey::of(&a));
        assert_eq!(
            Forwarded::verify(&header, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Ok(statement.clone())
        );
        // For another session, another node, or too late: refused.
        assert_eq!(
            Forwarded::verify(&header, "bb", "sid-2", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        assert_eq!(
            Forwarded::verify(&header, "cc", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        assert_eq!(
            Forwarded::verify(&header, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 1_000 + FORWARD_VALID_MS + 1),
            Err(ForwardError::Stale { skew_ms: FORWARD_VALID_MS + 1 })
        );
        // Signed by another node's key, or naming a node that is not live, or a changed address.
        let forged = Forwarded { ..statement.clone() }.header(&ForwardKey::of(&b));
        assert_eq!(
            Forwarded::verify(&forged, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        let stranger = Forwarded { from: "zz".into(), ..statement.clone() }.header(&ForwardKey::of(&a));
        assert_eq!(
            Forwarded::verify(&stranger, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::UnknownNode("zz".into()))
        );
        let moved = header.replacen("198.18.0.7", "198.18.0.8", 1);
        assert_eq!(
            Forwarded::verify(&moved, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        assert!(matches!(
            Forwarded::verify("a;1.2.3.4;5", "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::Malformed(_))
        ));
        // Made for one purpose, it opens nothing else: not a request, and one request not another.
        let purpose = request_purpose("GET", "/api/recordings/ab/chunks/0");
        assert_eq!(
            Forwarded::verify(&header, "bb", "sid-1", &purpose, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        let chunk = Forwarded { purpose: purpose.clone(), ..statement.clone() }.header(&ForwardKey::of(&a));
        assert!(Forwarded::verify(&chunk, "bb", "sid-1", &purpose, &view, 2_000).is_ok());
        let other = request_purpose("GET", "/api/recordings/ab/chunks/1");
        assert_eq!(
            Forwarded::verify(&chunk, "bb", "sid-1", &other, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
        assert_eq!(
            Forwarded::verify(&chunk, "bb", "sid-1", PURPOSE_VIEWER_SOCKET, &view, 2_000),
            Err(ForwardError::BadSignature("a".into()))
        );
    }
}
