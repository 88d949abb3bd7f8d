//! What the user is asked and what they answer (R2, R5, R6, R20): the levels an operator may be
//! granted, the request the consent window shows, the session's terms, and the signed receipt.

use serde::{Deserialize, Serialize};

use crate::mask;

/// What an operator may do in a session, each a separate channel the segment's policy allows and
/// the user grants (R6, R20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    View,
    Chat,
    Control,
    Clipboard,
    FileTransfer,
}

impl Level {
    pub const ALL: [Level; 5] = [Level::View, Level::Chat, Level::Control, Level::Clipboard, Level::FileTransfer];

    /// On unless someone switches it off (R20): view and chat. The rest is asked for and ticked on
    /// purpose, and expires after the segment's grant expiry (R7); these do not.
    pub fn on_by_default(self) -> bool {
        matches!(self, Level::View | Level::Chat)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::View => "view",
            Level::Chat => "chat",
            Level::Control => "control",
            Level::Clipboard => "clipboard",
            Level::FileTransfer => "file_transfer",
        }
    }
}

/// Levels as people read them: `view, control`.
pub fn levels_text(levels: &[Level]) -> String {
    if levels.is_empty() {
        return "none".into();
    }
    levels.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ")
}

/// Who asks, as the consent prompt shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorInfo {
    pub name: String,
    pub display_name: String,
    pub role: String,
    pub organisation: String,
}

/// What the user is asked, and the rules of the session that follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRequest {
    pub session_id: String,
    pub operator: OperatorInfo,
    pub ticket: String,
    pub reason: String,
    pub levels: Vec<Level>,
    /// Unix ms after which no answer counts as a deny.
    pub deadline_ms: u64,
    pub terms: SessionTerms,
    /// The segment's mask rules; the agent applies them before encoding or refuses to publish.
    pub masks: Vec<mask::MaskRule>,
    /// The code of the user's own help request this session answers, so the prompt can say so.
    #[serde(default)]
    pub help_code: Option<String>,
}

/// The segment's obligations the agent enforces again on its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTerms {
    pub consent_timeout_s: u32,
    pub grant_expiry_s: u32,
    pub max_duration_s: u32,
    pub idle_timeout_s: u32,
    pub observer_required_for_control: bool,
    pub recording_required: bool,
    pub elevation_needs_senior: bool,
    /// Hiding or minimising the session bar pauses the session.
    pub active_confirmation: bool,
    /// When the segment's support hours or the device's maintenance window end, whichever comes
    /// first, as decided when the session was allowed: both sides end the session then (R3, R16).
    #[serde(default)]
    pub ends_at: Option<EndsAt>,
    /// How long before `ends_at` both sides are warned.
    #[serde(default)]
    pub end_warning_s: u32,
    /// Served without a person at the endpoint (R2): the agent answers with an `unattended`
    /// receipt instead of asking, and every event of the session says so.
    #[serde(default)]
    pub unattended: bool,
}

/// A time-bound rule a running session is held to (R3, R16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadline {
    SupportHours,
    MaintenanceWindow,
}

impl Deadline {
    /// What ends, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Deadline::SupportHours => "the support hours of this segment end",
            Deadline::MaintenanceWindow => "the maintenance window of this device ends",
        }
    }
}

/// When a session ends at the latest, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndsAt {
    /// Unix ms.
    pub at_ms: u64,
    pub because: Deadline,
}

/// The user's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
    /// The prompt was closed without an answer.
    Closed,
    TimedOut,
}

/// Whether a receipt answers the session's opening request or a later elevation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentKind {
    Session,
    Elevation,
    /// An unattended agent takes up a session the policy serves unattended (R2): signed like a
    /// consent, it says that nobody was asked, never that somebody agreed.
    Unattended,
}

/// A signed consent decision (R2, R5). `signature` is Ed25519 by the device key over
/// `agent_auth::consent_message(self)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentReceipt {
    pub kind: ConsentKind,
    pub session_id: String,
    pub device_id: String,
    pub operator: String,
    pub ticket: String,
    /// The endpoint account that answered (the agent's logged-in user).
    pub endpoint_user: String,
    pub decision: Decision,
    /// The levels granted (empty unless allowed).
    pub levels: Vec<Level>,
    pub time_ms: u64,
    pub signature: String,
}

/// An endpoint's claim on the session it ran on a relay node that was lost (R43): the user's
/// signed consent and elevations, so the node that takes it over grants no more than the user
/// agreed to, and asks nobody again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeClaim {
    pub session_id: String,
    /// The `allow` receipt of the session's consent (`session` or `unattended`), then the
    /// `allow` receipts of its elevations.
    pub receipts: Vec<ConsentReceipt>,
}
