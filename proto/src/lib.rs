//! Sightline wire types.
//!
//! This crate is the only place that knows the signaling wire format. Every WebSocket message is
//! a JSON object `{"v": 1, "type": "...", ...}`: one enum per direction, decoded with a size limit
//! and a version check so that relay, agent and viewer fail the same way on bad input.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

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
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentToRelay {
    /// Answer to the relay's `challenge`: the enrolled device id and an Ed25519 signature (hex)
    /// over `agent_auth::signed_message(challenge, device_id)`.
    Hello {
        device_id: AgentId,
        signature: String,
        /// Screen size of the source, so viewers can scale input later.
        width: u32,
        height: u32,
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
    /// SDP offer for the publishing peer connection (non-trickle: candidates included).
    PublishOffer { sdp: String },
    /// The agent could not start publishing (capture or encoder failure).
    PublishFailed { reason: String },
}

/// What the relay sends to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RelayToAgent {
    /// First message on a new connection: a fresh random challenge (hex) to sign.
    Challenge { nonce: String },
    /// The maintenance window was recorded.
    WindowOpened { start_ms: u64, end_ms: u64 },
    /// Enrolment succeeded: the id to use in every later `hello`.
    Enrolled { device_id: String, name: String, segment: String },
    /// The device was authenticated; `name` and `segment` are as enrolled.
    Welcome { name: String, segment: String },
    /// Start capturing and publish: answer with `PublishOffer`.
    Publish,
    /// SDP answer to the agent's `PublishOffer`.
    PublishAnswer { sdp: String },
    /// Nobody watches any more: stop capturing and close the peer connection.
    Unpublish,
    /// The relay refuses the connection or a message; the agent logs it.
    Error { code: ErrorCode, message: String },
}

/// What a viewer (browser) sends to the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ViewerToRelay {
    /// Start viewing an agent. The offer carries a receive-only video transceiver. Every
    /// session names its request/ticket ID and a reason from the relay's catalog (R4).
    Watch { agent_id: AgentId, sdp: String, ticket: String, reason: String },
    /// Stop viewing.
    Unwatch,
}

/// What the relay sends to a viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RelayToViewer {
    /// The current list of online agents; sent on connect and on every change.
    Agents { agents: Vec<AgentInfo> },
    /// The reasons an operator may choose from; sent on connect.
    Reasons { reasons: Vec<String> },
    /// SDP answer to the viewer's `Watch` offer.
    WatchAnswer { sdp: String },
    /// The view ended without the viewer asking (agent went away, publish failed).
    ViewEnded { reason: ViewEndReason },
    /// A request was refused.
    Error { code: ErrorCode, message: String },
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
}

/// Why a view ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewEndReason {
    AgentGone,
    PublishFailed,
    MediaFailed,
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
}

/// A message with its protocol version, as it travels.
#[derive(Debug, Serialize, Deserialize)]
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
    UnsupportedVersion { got: u32 },
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The wire error code to report back to the sender.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::Malformed(_) => ErrorCode::BadMessage,
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

/// Parses a message, enforcing the size limit and the protocol version.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_SIGNAL_BYTES {
        return Err(DecodeError::TooLarge { size: text.len(), limit: MAX_SIGNAL_BYTES });
    }
    // Check the version before the body so a newer peer gets "unsupported version", not a
    // confusing complaint about a field it added.
    #[derive(Deserialize)]
    struct VersionOnly {
        v: u32,
    }
    let version: VersionOnly = serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if version.v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion { got: version.v });
    }
    let envelope: Envelope<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    serde_json::from_value(envelope.msg).map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_direction() {
        let hello = AgentToRelay::Hello { device_id: "a1".into(), signature: "00".into(), width: 1280, height: 720 };
        assert_eq!(decode::<AgentToRelay>(&encode(&hello)).unwrap(), hello);
        let publish = RelayToAgent::Publish;
        assert_eq!(decode::<RelayToAgent>(&encode(&publish)).unwrap(), publish);
        let watch = ViewerToRelay::Watch {
            agent_id: "a1".into(),
            sdp: "v=0".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
        };
        assert_eq!(decode::<ViewerToRelay>(&encode(&watch)).unwrap(), watch);
        let ended = RelayToViewer::ViewEnded { reason: ViewEndReason::AgentGone };
        assert_eq!(decode::<RelayToViewer>(&encode(&ended)).unwrap(), ended);
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
            r#"{"v":1,"type":"watch","agent_id":"a","sdp":"x","ticket":"t","reason":"r","extra":true}"#,
            r#"{"v":1,"type":"watch","agent_id":"a"}"#,
            "not json",
        ] {
            let err = decode::<ViewerToRelay>(bad).unwrap_err();
            assert!(
                matches!(err, DecodeError::Malformed(_) | DecodeError::UnsupportedVersion { .. }),
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

/// How an agent proves it holds its enrolled key: it signs a fresh relay challenge.
pub mod agent_auth {
    /// Domain separation: a signature made for this purpose is useless for any other.
    pub const CONTEXT: &[u8] = b"sightline agent auth v1\0";

    /// What an agent signs to open a maintenance window: the hello message plus the window, so
    /// a signature for one window cannot be replayed for another.
    pub fn window_message(challenge: &[u8], device_id: &str, start_ms: u64, end_ms: u64) -> Vec<u8> {
        let mut m = signed_message(challenge, device_id);
        m.extend_from_slice(b"\0window\0");
        m.extend_from_slice(&start_ms.to_be_bytes());
        m.extend_from_slice(&end_ms.to_be_bytes());
        m
    }

    /// The exact bytes an agent signs: context, challenge, device id.
    pub fn signed_message(challenge: &[u8], device_id: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(CONTEXT.len() + challenge.len() + device_id.len() + 1);
        m.extend_from_slice(CONTEXT);
        m.extend_from_slice(challenge);
        m.push(0);
        m.extend_from_slice(device_id.as_bytes());
        m
    }
}
