//! Messages on the WebRTC data channel `session` (viewer <-> relay <-> agent): input and chat.
//! Typed and versioned like signaling, with a smaller limit (SCTP messages are small).

use serde::{Deserialize, Serialize};

/// Label of the data channel every session connection opens.
pub const LABEL: &str = "session";
/// Largest data channel message accepted, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 4 * 1024;
/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 1000;

/// One input event, in the remote screen's pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    PointerMove {
        x: u32,
        y: u32,
    },
    /// `button`: 0 left, 1 middle, 2 right (the DOM's numbering).
    PointerButton {
        x: u32,
        y: u32,
        button: u8,
        down: bool,
    },
    /// Wheel steps: positive is down/right.
    Wheel {
        dx: i32,
        dy: i32,
    },
    /// `key` as in the DOM (`"a"`, `"Enter"`, `"Shift"`).
    Key {
        key: String,
        down: bool,
    },
}

/// What travels on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelMessage {
    Input {
        input: Input,
    },
    /// Chat: `from` is set by the relay (never trusted from the sender).
    Chat {
        from: String,
        text: String,
    },
    /// The agent's signature over the frames it sent (agent -> relay, kept with the
    /// recording so it can be checked against what the relay recorded).
    MediaSeal {
        seal: MediaSeal,
    },
}

/// Most frames one seal covers: a seal stays well inside [`MAX_CHANNEL_BYTES`].
pub const MAX_SEALED_FRAMES: usize = 24;

/// One encoded frame as the agent sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedFrame {
    /// The frame's RTP timestamp (90 kHz), which the relay forwards unchanged.
    pub ts: u32,
    /// SHA-256 of the encoded VP8 frame, base64.
    pub sha256: String,
}

/// A link in the agent's hash chain over the frames of one session, signed by the device
/// key over `agent_auth::media_seal_message(self)`. `prev` is the SHA-256 (hex) of the
/// previous seal's signed message, empty for the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaSeal {
    pub session_id: String,
    pub seq: u64,
    pub prev: String,
    pub frames: Vec<SealedFrame>,
    pub signature: String,
}

pub fn encode(msg: &ChannelMessage) -> String {
    crate::encode(msg)
}

pub fn decode(text: &str) -> Result<ChannelMessage, crate::DecodeError> {
    if text.len() > MAX_CHANNEL_BYTES {
        return Err(crate::DecodeError::TooLarge { size: text.len(), limit: MAX_CHANNEL_BYTES });
    }
    crate::decode(text)
}
