//! RFC 5424 messages for audit records and checkpoints, and RFC 6587 octet-counting frames.
//!
//! Structured data `[sightline@32473 node=".." seq=".." leaf=".."]` lets the receiving SIEM see
//! gaps and duplicates and match each message to the Merkle tree; checkpoints travel as their
//! own messages (MSGID `checkpoint`), so the SIEM's copy is verifiable against the node's key.
//! (32473 is the private enterprise number RFC 5612 reserves for documentation; a deployment
//! can keep it, since the SD-ID is only a name.)

use sightline_core::audit::{Outcome, Record};

use super::Payload;

const SD_ID: &str = "sightline@32473";
/// Facility 10 (security/authorization) in the priority value.
const FACILITY_AUTHPRIV: u8 = 10;

fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424 header fields are printable US-ASCII without spaces.
fn header_token(value: &str, max: usize) -> String {
    let token: String = value.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if token.is_empty() { "-".into() } else { token }
}

fn timestamp(ts_ms: u64) -> String {
    match jiff::Timestamp::from_millisecond(ts_ms as i64) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => "-".into(),
    }
}

/// The message for one record (`line` is its canonical JSON, `leaf` its leaf hash).
pub fn record_message(record: &Record, line: &[u8], leaf: &str, payload: Payload) -> String {
    let severity = match record.outcome {
        Outcome::Success => 6,
        Outcome::Failure => 4,
    };
    let msg = match payload {
        Payload::Json => String::from_utf8_lossy(line).into_owned(),
        Payload::Cef => crate::cef::format(record, leaf),
    };
    format!(
        "<{}>1 {} {} sightline-relay - {} [{SD_ID} node=\"{}\" seq=\"{}\" leaf=\"{}\"] {msg}",
        FACILITY_AUTHPRIV * 8 + severity,
        timestamp(record.ts_ms),
        header_token(&record.node, 255),
        header_token(&record.kind, 32),
        sd_value(&record.node),
        record.seq,
        sd_value(leaf),
    )
}

/// The message for a signed checkpoint: the note as a JSON string (it spans lines).
pub fn checkpoint_message(node: &str, size: u64, note: &str, now_ms: u64) -> String {
    format!(
        "<{}>1 {} {} sightline-relay - checkpoint [{SD_ID} node=\"{}\" size=\"{size}\"] {}",
        FACILITY_AUTHPRIV * 8 + 5,
        timestamp(now_ms),
        header_token(node, 255),
        sd_value(node),
        serde_json::to_string(note).unwrap_or_default(),
    )
}

/// RFC 6587 octet counting: `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_an_rfc5424_message_with_its_position() {
        let record = Record {
            seq: 7,
            ts_ms: 1_764_633_600_123,
            node: "relay-a".into(),
            kind: "auth.login_failed".into(),
            outcome: Outcome::Failure,
            actor: "x".into(),
            source: None,
            subject: None,
            session: None,
            detail: String::new(),
            break_glass: false,
            prev: String::new(),
        };
        let line = record.canonical();
        let msg = record_message(&record, &line, "ab]c", Payload::Json);
        assert!(
            msg.starts_with(
                r#"<84>1 2025-12-02T00:00:00.123Z relay-a sightline-relay - auth.login_failed [sightline@32473 node="relay-a" seq="7" leaf="ab\]c"] {"seq":7"#
            ),
            "{msg}"
        );
        let framed = frame(&msg);
        assert!(framed.starts_with(format!("{} <84>", msg.len()).as_bytes()));
        let cp = checkpoint_message("relay-a", 8, "origin\n8\nroot\n\n— sig\n", 1_764_633_600_123);
        assert!(cp.contains(r#"checkpoint [sightline@32473 node="relay-a" size="8"] "origin\n8\nroot"#), "{cp}");
        assert!(!cp.contains('\n'));
    }
}
