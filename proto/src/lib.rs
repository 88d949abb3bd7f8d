//! Sightline wire types.
//!
//! This crate is the only place that knows the signaling wire format. Every WebSocket message is
//! a JSON object `{"v": 1, "type": "...", ...}`: one enum per direction, decoded with a size limit
//! and a version check so that relay, agent and viewer fail the same way on bad input.

pub mod agent_auth;
pub mod channel;
mod consent;
pub mod mask;
pub mod relay_proof;
pub mod strict;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use consent::*;

/// Version of the signaling protocol. A peer speaking another version is refused with a clear
/// error instead of being half-understood.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest signaling message accepted, in bytes. An SDP with all candidates is a few KiB; the
/// limit leaves room for that while bounding what a hostile peer can make us parse.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;

/// WebSocket path the agent dials.
pub const AGENT_WS_PATH: &str = "/ws/agent";
/// WebSocket path the viewer dials.
pub const VIEWER_WS_PATH: &str = "/ws/viewer";

/// Identifier an agent announces for itself (replaced by its enrolled device id once agents
/// have keys).
pub type AgentId = String;

/// What the agent sends to the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToRelay {
    /// Answer to the relay's `challenge`: the enrolled device id and an Ed25519 signature (hex)
    /// over `agent_auth::signed_message(challenge, device_id)`.
    Hello {
        device_id: AgentId,
        signature: String,
        /// Screen size of the source, so viewers can scale input later.
        width: u32,
        height: u32,
        /// The account logged in at the endpoint (who is asked for consent), for the record.
        user: String,
        /// Started for a server with nobody at the screen (R2): nobody is asked, so the relay
        /// serves it only where the policy allows unattended access, and refuses it elsewhere.
        #[serde(default)]
        unattended: bool,
        /// The session this endpoint ran on a relay node that was lost, which it asks this node
        /// to take over without asking its user again (R43).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeClaim>,
    },
    /// Instead of `hello` on a first connection: enrol this device with a one-time token. The
    /// relay answers `enrolled` and closes the connection.
    Enrol {
        token: String,
        /// Ed25519 public key, hex.
        public_key: String,
        name: String,
    },
    /// Instead of `hello`: the person at the endpoint opens a maintenance window (R3) for this
    /// device, `start_ms`..`end_ms` (Unix ms). Signed like `hello`; the relay answers
    /// `window_opened` and closes the connection.
    OpenWindow { device_id: AgentId, signature: String, start_ms: u64, end_ms: u64 },
    /// Instead of `hello`: the person at the endpoint withdraws the release early, closing the
    /// device's open maintenance windows (R3); sessions that need one end. Signed over
    /// `agent_auth::close_window_message`; the relay answers `windows_closed` and closes.
    CloseWindow { device_id: AgentId, signature: String },
    /// Instead of `hello`: the person at the endpoint asks for help (R2). Signed over
    /// `agent_auth::help_message`; the relay answers `help_code` and closes the connection.
    AskHelp {
        device_id: AgentId,
        signature: String,
        /// The account logged in at the endpoint, who asks.
        user: String,
    },
    /// SDP offer for the publishing peer connection (non-trickle: candidates included).
    PublishOffer { sdp: String },
    /// The agent could not start publishing (capture or encoder failure).
    PublishFailed { reason: String },
    /// The user's answer to a `consent_request` or an `elevation_request`, signed with the
    /// device key (R2, R5): the relay verifies it and keeps it with the session.
    Consent { receipt: ConsentReceipt },
    /// Something the user did in the session bar.
    Session { session_id: String, event: SessionEvent },
    /// The agent will not take up this request (another session runs on the endpoint): the
    /// relay ends it with the reason, so no request goes unanswered.
    Declined { session_id: String, reason: String },
}

/// What the relay sends to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayToAgent {
    /// First message on a new connection: a fresh random challenge (hex) to sign, and, when the
    /// agent dialled with a nonce, the node's proof that it holds the key the agent pinned.
    Challenge {
        nonce: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<relay_proof::RelayProof>,
    },
    /// The maintenance window was recorded.
    WindowOpened { start_ms: u64, end_ms: u64 },
    /// The answer to `close_window`: whether a window was open (and is now closed).
    WindowsClosed { closed: bool },
    /// The help request is open: the user reads `code` to the service desk before `expires_ms`
    /// (Unix ms). Asking again while it is open gives the same code.
    HelpCode { code: String, expires_ms: u64 },
    /// Enrolment succeeded: the id to use in every later `hello`.
    Enrolled { device_id: String, name: String, segment: String },
    /// The device was authenticated; `name` and `segment` are as enrolled.
    Welcome { name: String, segment: String },
    /// The session named in `hello`'s `resume` runs on this node now: the agent lifts its
    /// suspension (R43).
    Resumed { session_id: String },
    /// The session named in `hello`'s `resume` cannot move here; the agent ends it.
    ResumeRefused { session_id: String, reason: String },
    /// Start capturing and publish: answer with `PublishOffer`.
    Publish,
    /// SDP answer to the agent's `PublishOffer`.
    PublishAnswer { sdp: String },
    /// Nobody watches any more: stop capturing and close the peer connection.
    Unpublish,
    /// An operator asks for a session: show the consent prompt and answer with `consent`.
    ConsentRequest { request: Box<ConsentRequest> },
    /// The operator asks for more levels mid-session: the user confirms them (R7).
    ElevationRequest { session_id: String, levels: Vec<Level> },
    /// Something happened to the session elsewhere (operator, observer, admin, relay timers).
    Session { session_id: String, event: SessionEvent },
    /// The relay refuses the connection or a message; the agent logs it.
    Error { code: ErrorCode, message: String },
}

/// What a viewer (browser) sends to the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ViewerToRelay {
    /// Ask for a session with an agent. The offer carries a receive-only video transceiver and
    /// the `session` data channel; it is answered only once the user consented. Every session
    /// names its request/ticket ID and a reason from the relay's catalog (R4), and the levels
    /// the operator asks for (view is always included).
    Watch {
        agent_id: AgentId,
        sdp: String,
        ticket: String,
        reason: String,
        levels: Vec<Level>,
        /// The code of the help request this session answers (R2): taken once, and only for the
        /// endpoint that asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        help_code: Option<String>,
    },
    /// Answer a help request by the code its caller read out (R2): the relay finds the endpoint
    /// from the code, then it is a `Watch` of that endpoint with `help_code` set.
    WatchHelp { help_code: String, sdp: String, ticket: String, reason: String, levels: Vec<Level> },
    /// Join a running session as its observer (view only, R21).
    Observe { session_id: String, sdp: String },
    /// The operator takes up their own session again after it moved to another relay node
    /// (R43): the same person, with a new offer.
    Rejoin { session_id: String, sdp: String },
    /// Stop viewing (the operator's own session ends with it).
    Unwatch,
    /// The operator asks the user for more levels (R7).
    Elevate { levels: Vec<Level> },
    /// Pause, resume or end the operator's session.
    Control { action: ControlAction },
}

/// What an operator does to their session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Pause,
    Resume,
    End,
}

/// What the relay sends to a viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayToViewer {
    /// The current list of online agents; sent on connect and on every change.
    Agents { agents: Vec<AgentInfo> },
    /// The reasons an operator may choose from; sent on connect.
    Reasons { reasons: Vec<String> },
    /// SDP answer to the viewer's `Watch` offer.
    WatchAnswer { sdp: String },
    /// The view ended without the viewer asking (agent went away, publish failed).
    ViewEnded { reason: ViewEndReason },
    /// The relay nodes of the service (R43): a viewer whose own connection is lost expects its
    /// session to move only where there are others.
    Nodes { nodes: Vec<String> },
    /// The relay node that ran the viewer's session was lost: a surviving node takes it over
    /// within seconds; the viewer keeps the last picture and sends `rejoin` (or `observe`) until
    /// the session answers (R43).
    SessionMoving { session_id: String },
    /// The state of the session this viewer runs or observes, on every change.
    Session { status: Box<SessionStatus> },
    /// Sessions running now (for observers and senior operators); sent on every change.
    Sessions { sessions: Vec<SessionSummary> },
    /// Open help requests (for those who start sessions), oldest first; sent on every change.
    /// Without their codes: an operator learns a code only from the caller (R2).
    HelpRequests { requests: Vec<HelpQueueEntry> },
    /// A request was refused.
    Error { code: ErrorCode, message: String },
    /// TURN servers for this viewer's peer connections, with credentials of its own that expire
    /// at `expires_ms` (at most five minutes); renewed before then while the socket lives (R42).
    IceServers { servers: Vec<IceServer>, expires_ms: u64 },
}

/// A TURN server as a browser's `RTCIceServer` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `turn:host:port?transport=udp|tcp` and `turns:host:port?transport=tcp`.
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Session events that travel between relay and agent, so both drive the same state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEvent {
    Pause {
        by: Party,
    },
    Resume {
        by: Party,
    },
    End {
        by: Party,
    },
    /// An elevation was confirmed by the user and, where needed, approved by a senior operator.
    Granted {
        levels: Vec<Level>,
    },
    ObserverJoined {
        name: String,
    },
    ObserverLeft {
        name: String,
    },
    /// Whether the relay's recorder confirms it is writing this session (R9).
    Recording {
        on: bool,
    },
    /// The session is over (any reason); the agent stops and releases everything.
    Ended {
        reason: EndReason,
    },
    /// From the agent, once per session: input reached the endpoint that its own gate refused
    /// (R19). The relay should not have let it through (or a pause or expiry crossed it on the
    /// way); either way the record shows that the two gates disagreed.
    InputRefused,
    /// From the agent, for every chat line that reached the endpoint while its user had not
    /// granted chat (R20); the line was not shown. The relay records the first one and tells the
    /// sender each time.
    ChatRefused,
}

/// Why a session ended; recorded with every end (R22, R23).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    DeniedByUser,
    ConsentTimedOut,
    ConsentClosed,
    EndedByUser,
    EndedByOperator,
    KilledByAdmin(String),
    MaxDuration,
    Idle,
    AgentLost,
    OperatorLost,
    RecorderFailed,
    /// The relay's audit log could not be written: no session runs unrecorded in it (R41).
    AuditUnavailable,
    /// The relay node that ran the session was lost and the session could not move (R43); the
    /// text says why.
    NodeLost(String),
    /// The agent declined the request, with its reason (another session runs there).
    DeclinedByEndpoint(String),
    /// The support hours or the maintenance window the session ran in ended (R3, R16).
    DeadlineReached(Deadline),
}

impl EndReason {
    /// For people: the viewer, the session bar and the audit detail say this.
    pub fn describe(&self) -> String {
        match self {
            EndReason::DeniedByUser => "the user denied the request".into(),
            EndReason::ConsentTimedOut => "the user did not answer in time".into(),
            EndReason::ConsentClosed => "the user closed the consent prompt".into(),
            EndReason::EndedByUser => "the user ended the session".into(),
            EndReason::EndedByOperator => "the operator ended the session".into(),
            EndReason::KilledByAdmin(admin) => format!("ended by administrator {admin}"),
            EndReason::MaxDuration => "the maximum session duration was reached".into(),
            EndReason::Idle => "the session was idle too long".into(),
            EndReason::AgentLost => "the connection to the endpoint was lost".into(),
            EndReason::OperatorLost => "the operator's connection was lost".into(),
            EndReason::RecorderFailed => "recording failed".into(),
            EndReason::AuditUnavailable => "the relay's audit log could not be written".into(),
            EndReason::NodeLost(why) => format!("the relay node that ran the session was lost: {why}"),
            EndReason::DeclinedByEndpoint(why) => format!("the endpoint declined the request: {why}"),
            EndReason::DeadlineReached(Deadline::SupportHours) => "the support hours of this segment ended".into(),
            EndReason::DeadlineReached(Deadline::MaintenanceWindow) => {
                "the maintenance window of this device ended".into()
            }
        }
    }
}

/// Who did something to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    User,
    Operator,
    Admin,
    System,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionPhase {
    AwaitingConsent,
    Active,
    Paused,
    Ended,
}

/// The state of a session as its viewers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: String,
    pub agent_id: AgentId,
    pub phase: SessionPhase,
    pub operator: String,
    pub ticket: String,
    pub reason: String,
    pub granted: Vec<Level>,
    /// Levels waiting for the user's (and a senior's) confirmation.
    pub pending_elevation: Vec<Level>,
    pub paused_by: Option<Party>,
    pub observers: Vec<String>,
    /// Unix ms when grants beyond the default ones (view, chat) fall back to them.
    pub grant_expires_ms: Option<u64>,
    /// Unix ms of the consent deadline while awaiting consent.
    pub consent_deadline_ms: Option<u64>,
    pub end_reason: Option<EndReason>,
    /// Whether this viewer is the session's observer (no input).
    pub observing: bool,
    /// Whether the relay's recorder confirms it is writing this session (R9).
    #[serde(default)]
    pub recording: bool,
    /// Set once the session is within its warning time of `SessionTerms::ends_at`.
    #[serde(default)]
    pub ending: Option<EndsAt>,
}

/// A running session as others see it in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub agent_id: AgentId,
    pub agent_name: String,
    pub segment: String,
    pub operator: String,
    pub ticket: String,
    pub reason: String,
    pub phase: SessionPhase,
    pub granted: Vec<Level>,
    pub pending_elevation: Vec<Level>,
    pub needs_senior: bool,
    pub observers: Vec<String>,
    pub started_ms: u64,
    /// The relay node the session runs on (R43).
    #[serde(default)]
    pub node: String,
}

/// An agent as operators see it in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent_id: AgentId,
    pub name: String,
    /// Policy segment the device was enrolled into.
    pub segment: String,
    pub width: u32,
    pub height: u32,
    /// The account logged in at the endpoint.
    pub user: String,
    /// An agent for a server with nobody at the screen (R2).
    #[serde(default)]
    pub unattended: bool,
    /// The relay node the agent is connected to (R43).
    #[serde(default)]
    pub node: String,
}

/// A person at an endpoint asked for help (R2) and waits for the service desk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpRequest {
    /// Names the request in the audit trail (the code is for people, and is reused later).
    pub id: String,
    /// The one-time code the user reads out (six digits).
    pub code: String,
    pub agent_id: AgentId,
    /// The device's name.
    pub device: String,
    /// The device's policy segment: the queue shows a request only to those who may connect there.
    pub segment: String,
    /// The endpoint account that asked.
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl HelpRequest {
    /// The request as the operators' queue shows it: everything but the code.
    pub fn queue_entry(&self) -> HelpQueueEntry {
        HelpQueueEntry {
            id: self.id.clone(),
            agent_id: self.agent_id.clone(),
            device: self.device.clone(),
            segment: self.segment.clone(),
            user: self.user.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        }
    }
}

/// An open help request in the operators' queue. It carries no code: the code proves that the
/// operator talks to the person who asked, so it reaches the operator only by their voice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpQueueEntry {
    pub id: String,
    pub agent_id: AgentId,
    pub device: String,
    pub segment: String,
    pub user: String,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// Why a view ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewEndReason {
    AgentGone,
    PublishFailed,
    MediaFailed,
    /// The relay node that ran the session stopped answering (R43).
    NodeLost,
}

/// Machine-readable error codes; the accompanying message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadMessage,
    UnsupportedVersion,
    TooLarge,
    UnknownAgent,
    DuplicateAgent,
    NotWatching,
    MediaSetup,
    /// The device is unknown, revoked, or its signature did not verify.
    DeviceRefused,
    /// The user's session ended (logout, revocation, idle timeout).
    SessionEnded,
    /// The session policy refuses the request; the message says why.
    PolicyDenied,
    /// The segment requires recording and the recorder cannot write (R26).
    RecordingUnavailable,
    /// The endpoint already has a session running.
    Busy,
    /// No such session, or not one this viewer may act on.
    UnknownSession,
    /// A consent receipt's signature or content did not verify.
    BadReceipt,
    /// The viewer's role does not allow this.
    Forbidden,
    /// The relay's audit log cannot be written: no security action proceeds (R41).
    AuditUnavailable,
    /// Too many requests from this operator, or for this device; the message says when to retry.
    RateLimited,
    /// The help code is unknown, already taken, lapsed, or from another endpoint.
    HelpCode,
    /// The relay node that holds the device or runs the session cannot be reached (R43).
    NodeUnreachable,
}

/// A message with its protocol version, as it travels.
#[derive(Debug, Serialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    msg: T,
}

/// Why an incoming message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("protocol version {got} is not supported (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion { got: u64 },
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Two equal keys in one object: which one counts is not left to chance.
    #[error("malformed message: duplicate key {key:?} in {path}")]
    DuplicateKey { path: String, key: String },
    /// A key the message type does not have.
    #[error("malformed message: unknown field {path}")]
    UnknownField { path: String },
}

impl From<strict::StrictError> for DecodeError {
    fn from(e: strict::StrictError) -> Self {
        match e {
            strict::StrictError::Malformed(m) => DecodeError::Malformed(m),
            strict::StrictError::DuplicateKey { path, key } => DecodeError::DuplicateKey { path, key },
            strict::StrictError::UnknownField { path } => DecodeError::UnknownField { path },
        }
    }
}

impl DecodeError {
    /// The wire error code to report back to the sender.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::Malformed(_) | DecodeError::DuplicateKey { .. } | DecodeError::UnknownField { .. } => {
                ErrorCode::BadMessage
            }
        }
    }
}

/// Serialises a message with the current protocol version.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serialising these plain enums cannot fail: no maps with non-string keys, no custom Serialize.
    serde_json::to_string(&Envelope { v: PROTOCOL_VERSION, msg }).unwrap_or_else(|e| {
        unreachable!("wire types always serialise: {e}");
    })
}

/// Parses a message, enforcing the size limit and the protocol version, and refusing duplicate
/// keys and fields the message type does not have (see [`strict`]).
pub fn decode<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_SIGNAL_BYTES {
        return Err(DecodeError::TooLarge { size: text.len(), limit: MAX_SIGNAL_BYTES });
    }
    let mut value = strict::unique_value(text)?;
    let serde_json::Value::Object(envelope) = &mut value else {
        return Err(DecodeError::Malformed("a message is a JSON object".into()));
    };
    // Check the version before the body so a newer peer gets "unsupported version", not a
    // confusing complaint about a field it added.
    let version = match envelope.remove("v") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(_) => None,
        None => return Err(DecodeError::Malformed("missing field `v`".into())),
    };
    match version {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => Ok(strict::typed(value)?),
        Some(got) => Err(DecodeError::UnsupportedVersion { got }),
        None => Err(DecodeError::Malformed("`v` is not a version number".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_direction() {
        let hello = AgentToRelay::Hello {
            device_id: "a1".into(),
            signature: "00".into(),
            width: 1280,
            height: 720,
            user: "alice".into(),
            unattended: false,
            resume: None,
        };
        assert_eq!(decode::<AgentToRelay>(&encode(&hello)).unwrap(), hello);
        let publish = RelayToAgent::Publish;
        assert_eq!(decode::<RelayToAgent>(&encode(&publish)).unwrap(), publish);
        let watch = ViewerToRelay::Watch {
            agent_id: "a1".into(),
            sdp: "v=0".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
            levels: vec![Level::View, Level::Control],
            help_code: None,
        };
        assert_eq!(decode::<ViewerToRelay>(&encode(&watch)).unwrap(), watch);
        let ended = RelayToViewer::ViewEnded { reason: ViewEndReason::AgentGone };
        assert_eq!(decode::<RelayToViewer>(&encode(&ended)).unwrap(), ended);
    }

    #[test]
    fn consent_receipts_sign_every_field() {
        let receipt = ConsentReceipt {
            kind: ConsentKind::Session,
            session_id: "s".into(),
            device_id: "d".into(),
            operator: "op".into(),
            ticket: "INC-1".into(),
            endpoint_user: "alice".into(),
            decision: Decision::Allow,
            levels: vec![Level::View, Level::Control],
            time_ms: 7,
            signature: String::new(),
        };
        let base = agent_auth::consent_message(&receipt);
        let variants = [
            ConsentReceipt { kind: ConsentKind::Elevation, ..receipt.clone() },
            ConsentReceipt { kind: ConsentKind::Unattended, ..receipt.clone() },
            ConsentReceipt { session_id: "s2".into(), ..receipt.clone() },
            ConsentReceipt { operator: "op2".into(), ..receipt.clone() },
            ConsentReceipt { ticket: "INC-2".into(), ..receipt.clone() },
            ConsentReceipt { endpoint_user: "mallory".into(), ..receipt.clone() },
            ConsentReceipt { decision: Decision::Deny, ..receipt.clone() },
            ConsentReceipt { levels: vec![Level::View], ..receipt.clone() },
            ConsentReceipt { time_ms: 8, ..receipt.clone() },
            // Shifting bytes between fields changes the message too (length prefixes).
            ConsentReceipt { session_id: "sd".into(), device_id: String::new(), ..receipt.clone() },
        ];
        for v in variants {
            assert_ne!(agent_auth::consent_message(&v), base, "{v:?}");
        }
    }

    #[test]
    fn channel_messages_have_their_own_limit() {
        let chat = channel::ChannelMessage::Chat { from: String::new(), text: "hi".into() };
        assert_eq!(channel::decode(&channel::encode(&chat)).unwrap(), chat);
        let key = channel::ChannelMessage::Input { input: channel::Input::Key { key: "a".into(), down: true } };
        assert_eq!(channel::decode(&channel::encode(&key)).unwrap(), key);
        let big = format!(r#"{{"v":1,"type":"chat","from":"","text":"{}"}}"#, "x".repeat(channel::MAX_CHANNEL_BYTES));
        assert_eq!(channel::decode(&big).unwrap_err().code(), ErrorCode::TooLarge);
        assert!(channel::decode(r#"{"v":1,"type":"input","input":{"type":"launch"}}"#).is_err());
    }

    #[test]
    fn wire_shape_is_flat_and_versioned() {
        let text = encode(&RelayToAgent::PublishAnswer { sdp: "x".into() });
        assert_eq!(text, r#"{"v":1,"type":"publish_answer","sdp":"x"}"#);
    }

    #[test]
    fn refuses_other_versions() {
        let err = decode::<RelayToAgent>(r#"{"v":2,"type":"publish"}"#).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion { got: 2 });
        assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn refuses_missing_version_unknown_type_and_extra_fields() {
        for bad in [
            r#"{"type":"publish"}"#,
            r#"{"v":1,"type":"launch_missiles"}"#,
            r#"{"v":1,"type":"watch","agent_id":"a","sdp":"x","ticket":"t","reason":"r","levels":[],"extra":true}"#,
            r#"{"v":1,"type":"watch","agent_id":"a"}"#,
            "not json",
        ] {
            let err = decode::<ViewerToRelay>(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Malformed(_)
                        | DecodeError::UnsupportedVersion { .. }
                        | DecodeError::UnknownField { .. }
                ),
                "{bad}: {err:?}"
            );
            assert_ne!(err.code(), ErrorCode::TooLarge);
        }
    }

    #[test]
    fn refuses_oversized_messages_before_parsing() {
        let huge = format!(
            r#"{{"v":1,"type":"watch","agent_id":"a","ticket":"t","reason":"r","sdp":"{}"}}"#,
            "x".repeat(MAX_SIGNAL_BYTES)
        );
        let err = decode::<ViewerToRelay>(&huge).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooLarge);
    }
}

/// The agent's video tracks, by what they are for (R34). A recorded session has both: the
/// operator's picture (`view`: operator masks, watermark) and the recording's (`record`: recording
/// masks, no watermark); the relay sends `view` to the operator and observers only and `record` to
/// its recorder only. An unrecorded session has `view` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaTrack {
    View,
    Record,
}

impl MediaTrack {
    pub fn label(self) -> &'static str {
        match self {
            MediaTrack::View => "view",
            MediaTrack::Record => "record",
        }
    }

    pub fn from_label(label: &str) -> Option<MediaTrack> {
        [MediaTrack::View, MediaTrack::Record].into_iter().find(|t| t.label() == label)
    }
}
