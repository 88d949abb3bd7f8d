//! One audit record and its canonical encoding.
//!
//! The canonical form is the compact JSON that serde writes for [`Record`]: fields in declaration
//! order, every field present (absent values as `null`), no insignificant white space. A record
//! read back is accepted only if re-encoding it yields the very same bytes, so one record has
//! exactly one encoding and therefore one leaf hash.

use serde::{Deserialize, Serialize};
use sightline_proto::Level;

use super::AuditError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// The name the canonical record uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// What every session event carries (R10, R38): which session, on which device and for which
/// endpoint account, by which operator, under which ticket and reason, with which levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFacts {
    pub session_id: String,
    pub ticket: String,
    pub reason: String,
    pub device_id: String,
    /// The device's display name (the host).
    pub device: String,
    pub endpoint_user: String,
    pub operator: String,
    /// Granted at the time of the event; while consent is awaited, the levels asked for.
    pub levels: Vec<Level>,
    /// Served without a person at the endpoint (R2). Absent (and not hashed) when false, so
    /// records written before the field existed verify unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unattended: bool,
}

/// One security event as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in this node's log, from 0; equal to the leaf index.
    pub seq: u64,
    /// Unix milliseconds, UTC, when the relay took the event.
    pub ts_ms: u64,
    /// The relay node whose log this is.
    pub node: String,
    /// Dotted event name (`session.start`, `auth.login_failed`, ...).
    pub kind: String,
    pub outcome: Outcome,
    /// Who acted: a user name, `device:<id>`, or `system`.
    pub actor: String,
    /// The actor's own network address (none for the system).
    pub source: Option<String>,
    /// Who or what was acted on, when not the actor.
    pub subject: Option<String>,
    /// For session events: the session's facts.
    pub session: Option<SessionFacts>,
    /// Detail for people and evidence (for example a device-signed consent receipt); never secrets.
    pub detail: String,
    /// The record of a break-glass sign-in's doing (R43): its actor or the session's operator
    /// signed in with a sealed code. Absent (and not hashed) when false, so records written
    /// before the field existed verify unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
    /// Leaf hash (base64) of the previous record; empty for the first. A hash chain beside the
    /// tree: an edited record breaks the chain at the next one.
    pub prev: String,
}

/// Whether a record with this actor and session is a break-glass sign-in's doing: its own
/// actions, and everything in the sessions it runs (the user's consent, the system's end).
pub fn break_glass_mark(actor: &str, session: Option<&SessionFacts>) -> bool {
    crate::break_glass::is_break_glass(actor)
        || session.is_some_and(|s| crate::break_glass::is_break_glass(&s.operator))
}

impl Record {
    /// The canonical bytes: the leaf data of the Merkle tree.
    pub fn canonical(&self) -> Vec<u8> {
        // Serialising a plain struct of strings, numbers and enums cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record and insists on its canonical form.
    pub fn from_canonical(bytes: &[u8]) -> Result<Record, AuditError> {
        let record: Record = serde_json::from_slice(bytes).map_err(|e| AuditError::MalformedRecord(e.to_string()))?;
        if record.canonical() != bytes {
            return Err(AuditError::NotCanonical);
        }
        Ok(record)
    }

    /// The event time as RFC 3339 UTC with milliseconds (for exports and people).
    pub fn time_utc(&self) -> String {
        match jiff::Timestamp::from_millisecond(self.ts_ms as i64) {
            Ok(t) => format!("{t:.3}"),
            Err(_) => self.ts_ms.to_string(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64) -> Record {
        Record {
            seq,
            ts_ms: 1_780_000_000_000 + seq,
            node: "relay-a".into(),
            kind: "session.start".into(),
            outcome: Outcome::Success,
            actor: "olga".into(),
            source: Some("127.0.0.1".into()),
            subject: None,
            session: Some(SessionFacts {
                session_id: "s1".into(),
                ticket: "INC-1".into(),
                reason: "printer".into(),
                device_id: "d1".into(),
                device: "front-desk".into(),
                endpoint_user: "anna".into(),
                operator: "olga".into(),
                levels: vec![Level::View],
                unattended: false,
            }),
            detail: "a \"quoted\" | = \\ line\nnext".into(),
            break_glass: false,
            prev: String::new(),
        }
    }

    #[test]
    fn canonical_form_round_trips_and_is_stable() {
        let record = sample(7);
        let bytes = record.canonical();
        assert_eq!(Record::from_canonical(&bytes).unwrap(), record);
        assert_eq!(record.clone().canonical(), bytes, "same record, same bytes");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with(r#"{"seq":7,"ts_ms":1780000000007,"node":"relay-a","kind":"session.start""#),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn other_encodings_of_the_same_record_are_refused() {
        let bytes = String::from_utf8(sample(1).canonical()).unwrap();
        let spaced = bytes.replacen(r#""seq":1"#, r#""seq": 1"#, 1);
        assert_eq!(Record::from_canonical(spaced.as_bytes()), Err(AuditError::NotCanonical));
        let reordered = bytes.replacen(r#"{"seq":1,"ts_ms":1780000000001"#, r#"{"ts_ms":1780000000001,"seq":1"#, 1);
        assert_eq!(Record::from_canonical(reordered.as_bytes()), Err(AuditError::NotCanonical));
        let escaped = bytes.replacen("olga", "\\u006flga", 1);
        assert_eq!(Record::from_canonical(escaped.as_bytes()), Err(AuditError::NotCanonical));
    }

    #[test]
    fn unknown_and_duplicate_fields_are_malformed() {
        let bytes = String::from_utf8(sample(1).canonical()).unwrap();
        let extra = bytes.replacen(r#"{"seq":1"#, r#"{"admin":true,"seq":1"#, 1);
        assert!(matches!(Record::from_canonical(extra.as_bytes()), Err(AuditError::MalformedRecord(_))));
        let twice = bytes.replacen(r#"{"seq":1"#, r#"{"seq":2,"seq":1"#, 1);
        assert!(matches!(Record::from_canonical(twice.as_bytes()), Err(AuditError::MalformedRecord(_))));
    }

    #[test]
    fn time_is_rendered_in_utc() {
        let mut r = sample(0);
        r.ts_ms = 1_764_633_600_123;
        assert_eq!(r.time_utc(), "2025-12-02T00:00:00.123Z");
    }
}
