//! ArcSight Common Event Format for audit records (export and SIEM forwarding).
//!
//! `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`. In the header `\` and `|`
//! are escaped; in extension values `\`, `=`, and line ends (as `\n`, `\r`). Keys are the CEF
//! dictionary's where one fits, custom string fields (`csN`) with labels otherwise.

use sightline_core::audit::{Outcome, Record};

fn header(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            // Header fields cannot hold line ends at all.
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn extension(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// One record as a CEF line (no line end); `leaf_hash` lets the SIEM match it to the tree.
pub fn format(record: &Record, leaf_hash: &str) -> String {
    // Break-glass is an emergency the security team must follow up whatever its outcome.
    let severity = match record.outcome {
        // A person in through break-glass (R43): every step of theirs is at the top of the scale.
        _ if record.break_glass => 10,
        _ if record.kind == "command.break_glass" => 9,
        // A node's history contradicts what another node saw: evidence was cut or rewritten.
        _ if record.kind == "audit.checkpoint_inconsistent" => 10,
        Outcome::Success => 3,
        Outcome::Failure => 6,
    };
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", record.ts_ms.to_string()),
        ("dvchost", record.node.clone()),
        ("externalId", record.seq.to_string()),
        ("act", record.kind.clone()),
        ("outcome", record.outcome.as_str().to_owned()),
        ("suser", record.actor.clone()),
    ];
    if let Some(source) = &record.source {
        ext.push(("src", source.clone()));
    }
    if let Some(subject) = &record.subject {
        ext.push(("cs6Label", "subject".into()));
        ext.push(("cs6", subject.clone()));
    }
    if let Some(s) = &record.session {
        ext.push(("duser", s.endpoint_user.clone()));
        ext.push(("dhost", s.device.clone()));
        ext.push(("deviceExternalId", s.device_id.clone()));
        ext.push(("cs1Label", "sessionId".into()));
        ext.push(("cs1", s.session_id.clone()));
        ext.push(("cs2Label", "ticket".into()));
        ext.push(("cs2", s.ticket.clone()));
        ext.push(("cs3Label", "reason".into()));
        ext.push(("cs3", s.reason.clone()));
        ext.push(("cs4Label", "operator".into()));
        ext.push(("cs4", s.operator.clone()));
        ext.push(("cs5Label", "levels".into()));
        ext.push(("cs5", sightline_proto::levels_text(&s.levels)));
        if s.unattended {
            // A number field, so a SIEM rule can select unattended sessions without parsing text.
            ext.push(("cn1Label", "unattended".into()));
            ext.push(("cn1", "1".into()));
        }
    }
    if record.break_glass {
        // A number field as for unattended, so a SIEM rule selects them without parsing text.
        ext.push(("cn2Label", "breakGlass".into()));
        ext.push(("cn2", "1".into()));
    }
    ext.push(("flexString1Label", "leafHash".into()));
    ext.push(("flexString1", leaf_hash.to_owned()));
    if !record.detail.is_empty() {
        ext.push(("msg", record.detail.clone()));
    }
    let ext: Vec<String> = ext.into_iter().map(|(k, v)| format!("{k}={}", extension(&v))).collect();
    format!(
        "CEF:0|Sightline|Sightline Relay|{}|{}|{}|{severity}|{}",
        header(env!("CARGO_PKG_VERSION")),
        header(&record.kind),
        header(&record.kind),
        ext.join(" ")
    )
}

/// A CEF line taken apart: the seven header fields and the extension's key/value pairs.
pub type Parsed = (Vec<String>, Vec<(String, String)>);

/// Splits a CEF line into header fields and extension pairs, undoing the escapes (for tests and
/// for anyone checking what a SIEM received).
pub fn parse(line: &str) -> Option<Parsed> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while fields.len() < 7 {
        match chars.next()? {
            '\\' => current.push(chars.next()?),
            '|' => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    let rest: String = chars.collect();
    // Extension: key=value pairs; a key starts after a space and runs to an unescaped '='.
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut it = rest.chars().peekable();
    while let Some(c) = it.next() {
        match (c, in_value) {
            ('\\', true) => match it.next()? {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                other => value.push(other),
            },
            ('=', false) => in_value = true,
            (' ', true) => {
                // A space ends the value only if what follows is `key=`.
                let ahead: String = it.clone().take_while(|c| *c != ' ' && *c != '=').collect();
                let is_key = !ahead.is_empty()
                    && ahead.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && it.clone().nth(ahead.chars().count()) == Some('=');
                if is_key {
                    pairs.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                    in_value = false;
                } else {
                    value.push(' ');
                }
            }
            (c, true) => value.push(c),
            (c, false) => key.push(c),
        }
    }
    if in_value {
        pairs.push((key, value));
    }
    Some((fields, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_core::audit::SessionFacts;

    #[test]
    fn awkward_values_survive_escaping() {
        let record = Record {
            seq: 42,
            ts_ms: 1_780_000_000_000,
            node: "relay-a".into(),
            kind: "session.start".into(),
            outcome: Outcome::Success,
            actor: "o|p=e\\r".into(),
            source: Some("127.0.0.1".into()),
            subject: Some("a = b".into()),
            session: Some(SessionFacts {
                session_id: "s1".into(),
                ticket: "INC|7=x\\y\nz".into(),
                reason: "printer broken".into(),
                device_id: "d1".into(),
                device: "front-desk".into(),
                endpoint_user: "anna".into(),
                operator: "o|p=e\\r".into(),
                levels: vec![sightline_proto::Level::View],
                unattended: true,
            }),
            detail: "line one\nline two | with = and \\".into(),
            break_glass: false,
            prev: String::new(),
        };
        let line = format(&record, "abc=");
        assert!(!line.contains('\n'), "{line}");
        let (fields, pairs) = parse(&line).unwrap();
        assert_eq!(fields[0], "CEF:0");
        assert_eq!(fields[4], "session.start");
        assert_eq!(fields[6], "3");
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("suser").as_deref(), Some("o|p=e\\r"));
        assert_eq!(get("cs2").as_deref(), Some("INC|7=x\\y\nz"));
        assert_eq!(get("cs3").as_deref(), Some("printer broken"));
        assert_eq!(get("msg").as_deref(), Some("line one\nline two | with = and \\"));
        assert_eq!(get("flexString1").as_deref(), Some("abc="));
        assert_eq!(get("externalId").as_deref(), Some("42"));
        assert_eq!(get("cs6").as_deref(), Some("a = b"));
        assert_eq!((get("cn1Label").as_deref(), get("cn1").as_deref()), (Some("unattended"), Some("1")));

        // A break-glass use is at the top of the SIEM's scale, a plain success is not.
        let glass = Record { kind: "command.break_glass".into(), ..record.clone() };
        assert_eq!(parse(&format(&glass, "abc=")).unwrap().0[6], "9");
        assert_eq!(get("cn2"), None);
        // A break-glass sign-in's doing: the highest severity and its own field.
        let signed_in = Record { break_glass: true, ..record };
        let (fields, pairs) = parse(&format(&signed_in, "abc=")).unwrap();
        assert_eq!(fields[6], "10");
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!((get("cn2Label").as_deref(), get("cn2").as_deref()), (Some("breakGlass"), Some("1")));
    }

    #[test]
    fn header_fields_escape_pipes_and_backslashes() {
        assert_eq!(header("a|b\\c\nd"), "a\\|b\\\\c d");
        assert_eq!(extension("a=b\\c\nd\re"), "a\\=b\\\\c\\nd\\re");
    }
}
