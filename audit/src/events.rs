//! Security events: one sink interface for everything the audit trail must hold.
//!
//! Every authentication success and failure, lock, enrolment, role change, token revocation and
//! device revocation is an `Event`. The relay's sink is its tamper-evident audit log
//! ([`crate::AuditLog`]); tests use `MemorySink`. Event names are dotted and registered in
//! `EventKind`, so a new kind cannot appear unnoticed.
//!
//! `EventSink::committed` and `EventSink::available` are how callers fail closed: an action is
//! acknowledged only once its event is durable, and not started while the log cannot be written.
//! A session's events carry `SessionFacts` as fields (the facts of the session at the time of
//! the event), and each event carries the acting party's own address, none for the system.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use sightline_core::audit::{Outcome, SessionFacts};

use crate::AuditUnavailable;

/// Every kind of security event the relay emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "auth.login")]
    Login,
    #[serde(rename = "auth.login_failed")]
    LoginFailed,
    #[serde(rename = "auth.locked")]
    Locked,
    #[serde(rename = "auth.unlocked")]
    Unlocked,
    #[serde(rename = "auth.logout")]
    Logout,
    #[serde(rename = "auth.step_up")]
    StepUp,
    #[serde(rename = "auth.sessions_revoked")]
    SessionsRevoked,
    /// A named person signed in on this node with a sealed one-time code while the store or the
    /// identity provider was down (R43); the detail names the code's SHA-256, now spent.
    #[serde(rename = "auth.break_glass_login")]
    BreakGlassLogin,
    /// A break-glass sign-in was refused; the detail starts with `reason=` and
    /// `sightline_core::break_glass::Refusal::code`'s name.
    #[serde(rename = "auth.break_glass_refused")]
    BreakGlassRefused,
    /// An identity provider vouched for a person (R12): provider, issuer, subject, groups and the
    /// roles they map to; the passkey comes next, and `auth.login` only after it.
    #[serde(rename = "auth.directory_verified")]
    DirectoryVerified,
    /// A directory sign-in, logout token or groups re-read was refused; the detail starts with
    /// `reason=` and one of `sightline_sso::Refusal::code`'s names.
    #[serde(rename = "auth.directory_refused")]
    DirectoryRefused,
    /// The provider's back-channel logout ended a person's sessions everywhere.
    #[serde(rename = "auth.backchannel_logout")]
    DirectoryLogout,
    /// A directory account's roles changed because its groups did.
    #[serde(rename = "role.directory_changed")]
    DirectoryRolesChanged,
    /// An admin asked for a new table of directory groups to roles; a second admin decides. The
    /// subject is the provider; the detail names the table in force and the one asked for.
    #[serde(rename = "role.mapping_change_requested")]
    MappingChangeRequested,
    /// A second admin approved a new role table: it is in force on every node, and each person of
    /// the provider has their groups read again at the next tick.
    #[serde(rename = "role.mapping_change_approved")]
    MappingChangeApproved,
    #[serde(rename = "role.mapping_change_refused")]
    MappingChangeRefused,
    /// A request or decision on the role table broke a rule (`sightline_core::role_mapping`).
    #[serde(rename = "role.mapping_change_denied")]
    MappingChangeDenied,
    #[serde(rename = "user.enrolled")]
    UserEnrolled,
    #[serde(rename = "user.invited")]
    UserInvited,
    #[serde(rename = "user.bootstrap_admin")]
    BootstrapAdmin,
    #[serde(rename = "role.change_requested")]
    RoleChangeRequested,
    #[serde(rename = "role.change_approved")]
    RoleChangeApproved,
    #[serde(rename = "role.change_refused")]
    RoleChangeRefused,
    #[serde(rename = "role.change_denied")]
    RoleChangeDenied,
    /// An admin asked to reset a directory account's passkey; a second admin decides.
    #[serde(rename = "user.passkey_reset_requested")]
    PasskeyResetRequested,
    /// A second admin approved a passkey reset: the passkeys are gone and the person's sessions
    /// ended; a new passkey comes only with a sign-in at the identity provider.
    #[serde(rename = "user.passkey_reset_approved")]
    PasskeyResetApproved,
    #[serde(rename = "user.passkey_reset_refused")]
    PasskeyResetRefused,
    /// A passkey reset request or decision broke a rule (`sightline_core::passkey_reset`).
    #[serde(rename = "user.passkey_reset_denied")]
    PasskeyResetDenied,
    #[serde(rename = "device.token_created")]
    DeviceTokenCreated,
    #[serde(rename = "device.enrolled")]
    DeviceEnrolled,
    #[serde(rename = "device.enrolment_refused")]
    DeviceEnrolmentRefused,
    #[serde(rename = "device.auth_failed")]
    DeviceAuthFailed,
    #[serde(rename = "device.revoked")]
    DeviceRevoked,
    /// An enrolled device took a new key with an admin's re-key token: the record names both.
    #[serde(rename = "device.key_changed")]
    DeviceKeyChanged,
    /// A relay node started, with the SHA-256 of the policy it runs (which policy a node ran is on
    /// the record, and commands on its host are checked against it).
    #[serde(rename = "node.started")]
    NodeStarted,
    /// This node's key vouched for another node key (`relay audit endorse`): agents that pinned
    /// this key will trust that one.
    #[serde(rename = "node.key_endorsed")]
    NodeKeyEndorsed,
    /// This node saw another node's published checkpoint (the signed note is the detail): the
    /// other node cannot later present a shorter or different history than this record holds
    /// (`relay audit verify` with both logs checks it, R43).
    #[serde(rename = "audit.checkpoint_witnessed")]
    CheckpointWitnessed,
    /// Another node published a checkpoint that contradicts one this node saw before (smaller,
    /// or another root at the same size): its history was cut back or rewritten.
    #[serde(rename = "audit.checkpoint_inconsistent")]
    CheckpointInconsistent,
    /// An admin approved one command on a node's host (`sightline_core::command_approval`).
    #[serde(rename = "command.approved")]
    CommandApproved,
    /// A command on the host ran under an admin's approval, which it consumed.
    #[serde(rename = "command.approval_used")]
    CommandApprovalUsed,
    /// A command on the host ran under the node's break-glass credential.
    #[serde(rename = "command.break_glass")]
    CommandBreakGlass,
    /// A command on the host was refused: the policy gates it and nothing valid was presented.
    #[serde(rename = "command.refused")]
    CommandRefused,
    #[serde(rename = "access.denied")]
    AccessDenied,
    #[serde(rename = "session.refused")]
    SessionRefused,
    #[serde(rename = "session.start")]
    SessionStarted,
    #[serde(rename = "maintenance.window_opened")]
    MaintenanceWindowOpened,
    #[serde(rename = "maintenance.window_closed")]
    MaintenanceWindowClosed,
    #[serde(rename = "consent.asked")]
    ConsentAsked,
    #[serde(rename = "consent.allowed")]
    ConsentAllowed,
    #[serde(rename = "consent.denied")]
    ConsentDenied,
    #[serde(rename = "consent.timed_out")]
    ConsentTimedOut,
    #[serde(rename = "consent.receipt_refused")]
    ConsentReceiptRefused,
    #[serde(rename = "consent.late")]
    ConsentLate,
    /// An unattended agent took up a session the policy serves unattended: nobody was asked (R2).
    #[serde(rename = "consent.unattended")]
    ConsentUnattended,
    /// The person at an endpoint asked for help and was given a one-time code (R2).
    #[serde(rename = "help.requested")]
    HelpRequested,
    /// An operator took up a help request (by the queue or the code).
    #[serde(rename = "help.picked_up")]
    HelpPickedUp,
    /// A help request lapsed unanswered.
    #[serde(rename = "help.expired")]
    HelpExpired,
    /// A help request whose record was written but which could not open (the audit log could not
    /// make it durable, or the store refused it): the user was given no code.
    #[serde(rename = "help.withdrawn")]
    HelpWithdrawn,

    #[serde(rename = "session.granted")]
    SessionGranted,
    /// The endpoint's media reached the relay: the transport ICE chose, and (as the source) the
    /// address it came from, which is the proxy's when it came through one (R1).
    #[serde(rename = "session.media_path")]
    SessionMediaPath,
    #[serde(rename = "session.paused")]
    SessionPaused,
    #[serde(rename = "session.resumed")]
    SessionResumed,
    #[serde(rename = "session.ending_soon")]
    SessionEndingSoon,
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// The relay node that ran the session was lost and this node took the session over (R43):
    /// the user was not asked again; the detail names the lost node and the gap.
    #[serde(rename = "session.moved")]
    SessionMoved,
    /// The operator took up their session again on the node it moved to.
    #[serde(rename = "session.rejoined")]
    SessionRejoined,
    #[serde(rename = "elevation.requested")]
    ElevationRequested,
    #[serde(rename = "elevation.confirmed")]
    ElevationConfirmed,
    #[serde(rename = "elevation.refused")]
    ElevationRefused,
    #[serde(rename = "elevation.approved")]
    ElevationApproved,
    #[serde(rename = "elevation.expired")]
    ElevationExpired,
    #[serde(rename = "observer.joined")]
    ObserverJoined,
    #[serde(rename = "observer.left")]
    ObserverLeft,
    #[serde(rename = "input.dropped")]
    InputDropped,
    /// The endpoint's own gate refused input that came through the relay (R19).
    #[serde(rename = "input.refused_by_endpoint")]
    InputRefusedByEndpoint,
    /// Chat lines refused in a session without chat granted, counted at its end (R20).
    #[serde(rename = "chat.refused")]
    ChatRefused,
    /// The endpoint's own gate refused a chat line that came through the relay (R20).
    #[serde(rename = "chat.refused_by_endpoint")]
    ChatRefusedByEndpoint,
    #[serde(rename = "audit.viewed")]
    AuditViewed,
    #[serde(rename = "recording.started")]
    RecordingStarted,
    #[serde(rename = "recording.chunk")]
    RecordingChunk,
    #[serde(rename = "recording.stalled")]
    RecordingStalled,
    #[serde(rename = "recording.recovered")]
    RecordingRecovered,
    #[serde(rename = "recording.failed")]
    RecordingFailed,
    #[serde(rename = "recording.closed")]
    RecordingClosed,
    #[serde(rename = "recording.unavailable")]
    RecordingUnavailable,
    #[serde(rename = "recording.exported")]
    RecordingExported,
    #[serde(rename = "recording.viewed")]
    RecordingViewed,
    #[serde(rename = "recording.deleted")]
    RecordingDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 88] = [
        EventKind::Login,
        EventKind::BreakGlassLogin,
        EventKind::BreakGlassRefused,
        EventKind::LoginFailed,
        EventKind::Locked,
        EventKind::Unlocked,
        EventKind::Logout,
        EventKind::StepUp,
        EventKind::SessionsRevoked,
        EventKind::DirectoryVerified,
        EventKind::DirectoryRefused,
        EventKind::DirectoryLogout,
        EventKind::DirectoryRolesChanged,
        EventKind::MappingChangeRequested,
        EventKind::MappingChangeApproved,
        EventKind::MappingChangeRefused,
        EventKind::MappingChangeDenied,
        EventKind::UserEnrolled,
        EventKind::UserInvited,
        EventKind::BootstrapAdmin,
        EventKind::RoleChangeRequested,
        EventKind::RoleChangeApproved,
        EventKind::RoleChangeRefused,
        EventKind::RoleChangeDenied,
        EventKind::PasskeyResetRequested,
        EventKind::PasskeyResetApproved,
        EventKind::PasskeyResetRefused,
        EventKind::PasskeyResetDenied,
        EventKind::DeviceTokenCreated,
        EventKind::DeviceEnrolled,
        EventKind::DeviceEnrolmentRefused,
        EventKind::DeviceAuthFailed,
        EventKind::DeviceRevoked,
        EventKind::DeviceKeyChanged,
        EventKind::NodeStarted,
        EventKind::NodeKeyEndorsed,
        EventKind::CheckpointWitnessed,
        EventKind::CheckpointInconsistent,
        EventKind::CommandApproved,
        EventKind::CommandApprovalUsed,
        EventKind::CommandBreakGlass,
        EventKind::CommandRefused,
        EventKind::AccessDenied,
        EventKind::SessionRefused,
        EventKind::SessionStarted,
        EventKind::MaintenanceWindowOpened,
        EventKind::MaintenanceWindowClosed,
        EventKind::ConsentAsked,
        EventKind::ConsentAllowed,
        EventKind::ConsentDenied,
        EventKind::ConsentTimedOut,
        EventKind::ConsentReceiptRefused,
        EventKind::ConsentLate,
        EventKind::ConsentUnattended,
        EventKind::HelpRequested,
        EventKind::HelpPickedUp,
        EventKind::HelpExpired,
        EventKind::HelpWithdrawn,
        EventKind::SessionGranted,
        EventKind::SessionMediaPath,
        EventKind::SessionPaused,
        EventKind::SessionResumed,
        EventKind::SessionEndingSoon,
        EventKind::SessionEnded,
        EventKind::SessionMoved,
        EventKind::SessionRejoined,
        EventKind::ElevationRequested,
        EventKind::ElevationConfirmed,
        EventKind::ElevationRefused,
        EventKind::ElevationApproved,
        EventKind::ElevationExpired,
        EventKind::ObserverJoined,
        EventKind::ObserverLeft,
        EventKind::InputDropped,
        EventKind::InputRefusedByEndpoint,
        EventKind::ChatRefused,
        EventKind::ChatRefusedByEndpoint,
        EventKind::AuditViewed,
        EventKind::RecordingStarted,
        EventKind::RecordingChunk,
        EventKind::RecordingStalled,
        EventKind::RecordingRecovered,
        EventKind::RecordingFailed,
        EventKind::RecordingClosed,
        EventKind::RecordingUnavailable,
        EventKind::RecordingExported,
        EventKind::RecordingViewed,
        EventKind::RecordingDeleted,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// One security event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds, UTC.
    pub ts_ms: u64,
    pub kind: EventKind,
    pub outcome: Outcome,
    /// Who acted: a user name, `device:<id>`, or `system`.
    pub actor: String,
    /// Who or what was acted on, when not the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// Free-form detail for people (never secrets).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// For session events: the session's facts as fields, so a SIEM can search them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionFacts>,
}

impl Event {
    /// A session event: the session's facts as fields (a SIEM searches them), and as the subject
    /// for people.
    pub fn of_session(
        ts_ms: u64,
        kind: EventKind,
        outcome: Outcome,
        actor: &str,
        facts: SessionFacts,
        source: Option<IpAddr>,
        detail: String,
    ) -> Event {
        let subject = format!(
            "session:{} device:{} ({}) user:{} ticket:{} reason:{} operator:{}",
            facts.session_id,
            facts.device_id,
            facts.device,
            facts.endpoint_user,
            facts.ticket,
            facts.reason,
            facts.operator
        );
        Event {
            ts_ms,
            kind,
            outcome,
            actor: actor.to_owned(),
            subject: Some(subject),
            source,
            detail,
            session: Some(facts),
        }
    }
}

/// The detail of a `session.media_path` record: the transport (`udp` or `tcp`) and, where the
/// relay knows it, the address and port the endpoint's media came from.
pub fn media_path_detail(transport: &str, from: Option<std::net::SocketAddr>) -> String {
    match from {
        Some(from) => format!("endpoint media over {transport} from {from}"),
        None => format!("endpoint media over {transport}"),
    }
}

/// The detail of a `device.enrolled` record: the device, and the key it enrolled with, so that
/// verifiers check receipts and seals against the key the log recorded for the device, not the
/// one a store holds now. `token` names the enrolment token (a prefix of its stored hash) and
/// `created_by` who made it.
pub fn device_enrolled_detail(
    name: &str,
    segment: &str,
    public_key_hex: &str,
    token: &str,
    created_by: &str,
) -> String {
    format!("{name} in segment {segment}; key ed25519:{public_key_hex}; token {token} created by {created_by}")
}

/// The detail of a `device.key_changed` record: like `device_enrolled_detail` with the new key
/// (so `enrolled_key` reads it), and the key it replaced.
pub fn device_key_changed_detail(
    name: &str,
    segment: &str,
    new_key_hex: &str,
    old_key_hex: &str,
    token: &str,
    created_by: &str,
) -> String {
    format!(
        "{name} in segment {segment}; key ed25519:{new_key_hex}; replaces ed25519:{old_key_hex}; token {token} created by {created_by}"
    )
}

/// The records that set a device's key: its enrolment, and every later change. A receipt or seal
/// is checked against the newest of them before it.
pub const DEVICE_KEY_RECORDS: [&str; 2] = ["device.enrolled", "device.key_changed"];

/// The Ed25519 public key (hex) a `device.enrolled` or `device.key_changed` record's detail names.
pub fn enrolled_key(detail: &str) -> Option<&str> {
    let key = detail.split("; key ed25519:").nth(1)?.get(..64)?;
    key.bytes().all(|b| b.is_ascii_hexdigit()).then_some(key)
}

/// Waiting for events to be durable.
pub type Commit<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), AuditUnavailable>> + Send + 'a>>;

/// Where events go.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);

    /// Resolves when every event emitted before the call is durable; an action is acknowledged
    /// only after its event is (R41). Fails while the log cannot be written.
    fn committed(&self) -> Commit<'_> {
        Box::pin(async { Ok(()) })
    }

    /// Whether security actions may start now (the log can be written).
    fn available(&self) -> Result<(), AuditUnavailable> {
        Ok(())
    }
}

/// Keeps events in memory, for tests.
#[derive(Debug, Default, Clone)]
pub struct MemorySink(pub Arc<Mutex<Vec<Event>>>);

impl EventSink for MemorySink {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` is what the auditor's search offers: a kind missing from it cannot be filtered on.
    /// Every `rename` in the enum's source must be the name of one entry.
    #[test]
    fn every_event_kind_is_listed_in_all() {
        let source = include_str!("events.rs");
        let body = &source[source.find("pub enum EventKind").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let declared: std::collections::BTreeSet<&str> =
            body.split("#[serde(rename = \"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
        let listed: std::collections::BTreeSet<String> = EventKind::ALL.iter().map(|k| k.name()).collect();
        let listed: std::collections::BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        assert_eq!(declared, listed);
        assert_eq!(listed.len(), EventKind::ALL.len(), "a kind is listed twice");
    }

    #[test]
    fn an_enrolment_record_names_its_key() {
        let key = "ab".repeat(32);
        let detail = device_enrolled_detail("front-desk", "office", &key, "3f2a9c0d1e2b4a5f", "ada");
        assert_eq!(enrolled_key(&detail), Some(key.as_str()));
        // Records written before keys were on the record name none.
        assert_eq!(enrolled_key("front-desk in segment office"), None);
        assert_eq!(enrolled_key("x; key ed25519:not-hex-at-all"), None);
    }

    #[test]
    fn every_event_kind_is_registered_with_a_unique_dotted_name() {
        let names: Vec<String> = EventKind::ALL.iter().map(|k| k.name()).collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate names: {names:?}");
        for name in &names {
            assert!(name.contains('.') && !name.starts_with('.'), "{name} is not dotted");
        }
    }
}
