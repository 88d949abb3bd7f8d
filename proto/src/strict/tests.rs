//! Every wire message, with an unknown key or a duplicate key at every object in it, is refused
//! and named; the same message without the defect (the control) decodes to itself.

use serde_json::Value;

use super::*;
use crate::channel::{ChannelMessage, Input, MediaSeal, SealedFrame};
use crate::mask::{Area, MaskAudience, MaskRule, MaskTarget, WindowMatch};
use crate::*;

fn receipt() -> ConsentReceipt {
    ConsentReceipt {
        kind: ConsentKind::Session,
        session_id: "s1".into(),
        device_id: "d1".into(),
        operator: "op".into(),
        ticket: "INC-1".into(),
        endpoint_user: "alice".into(),
        decision: Decision::Allow,
        levels: vec![Level::View],
        time_ms: 1,
        signature: "00".into(),
    }
}

fn request() -> ConsentRequest {
    let window = WindowMatch { class: Some("xterm".into()), title: None };
    ConsentRequest {
        session_id: "s1".into(),
        operator: OperatorInfo {
            name: "op".into(),
            display_name: "Op".into(),
            role: "operator".into(),
            organisation: "Bank".into(),
        },
        ticket: "INC-1".into(),
        reason: "incident".into(),
        levels: vec![Level::View, Level::Control],
        deadline_ms: 5,
        terms: SessionTerms {
            consent_timeout_s: 30,
            grant_expiry_s: 60,
            max_duration_s: 600,
            idle_timeout_s: 60,
            observer_required_for_control: false,
            recording_required: true,
            elevation_needs_senior: false,
            active_confirmation: false,
            ends_at: Some(EndsAt { at_ms: 5, because: Deadline::MaintenanceWindow }),
            end_warning_s: 300,
            unattended: false,
        },
        masks: vec![
            MaskRule {
                name: "panel".into(),
                audience: MaskAudience::Both,
                target: MaskTarget::Area { area: Area::Pixels { x: 1, y: 2, w: 3, h: 4 } },
            },
            MaskRule {
                name: "app".into(),
                audience: MaskAudience::Both,
                target: MaskTarget::Window { window: window.clone() },
            },
            MaskRule {
                name: "statement".into(),
                audience: MaskAudience::Both,
                target: MaskTarget::WhileWindow { window, area: Some(Area::Fraction { x: 0, y: 0, w: 5000, h: 5000 }) },
            },
        ],
        help_code: Some("123456".into()),
    }
}

fn status() -> SessionStatus {
    SessionStatus {
        session_id: "s1".into(),
        agent_id: "a1".into(),
        phase: SessionPhase::Active,
        operator: "op".into(),
        ticket: "INC-1".into(),
        reason: "incident".into(),
        granted: vec![Level::View],
        pending_elevation: vec![],
        paused_by: Some(Party::User),
        observers: vec!["obs".into()],
        grant_expires_ms: Some(9),
        consent_deadline_ms: None,
        end_reason: Some(EndReason::KilledByAdmin("root".into())),
        observing: false,
        recording: true,
        ending: Some(EndsAt { at_ms: 7, because: Deadline::SupportHours }),
    }
}

fn agent_to_relay() -> Vec<AgentToRelay> {
    vec![
        AgentToRelay::Hello {
            device_id: "d1".into(),
            signature: "00".into(),
            width: 1,
            height: 2,
            user: "alice".into(),
            unattended: false,
            resume: None,
        },
        AgentToRelay::Hello {
            device_id: "d1".into(),
            signature: "00".into(),
            width: 1,
            height: 2,
            user: "alice".into(),
            unattended: false,
            resume: Some(ResumeClaim { session_id: "s1".into(), receipts: vec![receipt()] }),
        },
        AgentToRelay::Enrol { token: "t".into(), public_key: "00".into(), name: "desk".into() },
        AgentToRelay::OpenWindow { device_id: "d1".into(), signature: "00".into(), start_ms: 1, end_ms: 2 },
        AgentToRelay::CloseWindow { device_id: "d1".into(), signature: "00".into() },
        AgentToRelay::AskHelp { device_id: "d1".into(), signature: "00".into(), user: "alice".into() },
        AgentToRelay::PublishOffer { sdp: "v=0".into() },
        AgentToRelay::PublishFailed { reason: "no display".into() },
        AgentToRelay::Consent { receipt: receipt() },
        AgentToRelay::Session { session_id: "s1".into(), event: SessionEvent::Pause { by: Party::User } },
        AgentToRelay::Session { session_id: "s1".into(), event: SessionEvent::Ended { reason: EndReason::Idle } },
        AgentToRelay::Session { session_id: "s1".into(), event: SessionEvent::InputRefused },
        AgentToRelay::Session { session_id: "s1".into(), event: SessionEvent::ChatRefused },
        AgentToRelay::Declined { session_id: "s2".into(), reason: "another session runs here".into() },
    ]
}

fn relay_to_agent() -> Vec<RelayToAgent> {
    vec![
        RelayToAgent::Challenge { nonce: "00".into(), relay: None },
        RelayToAgent::Challenge {
            nonce: "00".into(),
            relay: Some(crate::relay_proof::RelayProof {
                key: "k".into(),
                signature: "00".into(),
                endorsements: vec![crate::relay_proof::KeyEndorsement {
                    key: "k".into(),
                    by: "j".into(),
                    signature: "00".into(),
                }],
            }),
        },
        RelayToAgent::WindowOpened { start_ms: 1, end_ms: 2 },
        RelayToAgent::WindowsClosed { closed: true },
        RelayToAgent::HelpCode { code: "123456".into(), expires_ms: 2 },
        RelayToAgent::Enrolled { device_id: "d1".into(), name: "desk".into(), segment: "office".into() },
        RelayToAgent::Welcome { name: "desk".into(), segment: "office".into() },
        RelayToAgent::Resumed { session_id: "s1".into() },
        RelayToAgent::ResumeRefused { session_id: "s1".into(), reason: "gone".into() },
        RelayToAgent::Publish,
        RelayToAgent::PublishAnswer { sdp: "v=0".into() },
        RelayToAgent::Unpublish,
        RelayToAgent::ConsentRequest { request: Box::new(request()) },
        RelayToAgent::ElevationRequest { session_id: "s1".into(), levels: vec![Level::Control] },
        RelayToAgent::Session {
            session_id: "s1".into(),
            event: SessionEvent::Granted { levels: vec![Level::Control] },
        },
        RelayToAgent::Session { session_id: "s1".into(), event: SessionEvent::ObserverJoined { name: "obs".into() } },
        RelayToAgent::Session { session_id: "s1".into(), event: SessionEvent::Recording { on: true } },
        RelayToAgent::Error { code: ErrorCode::Busy, message: "busy".into() },
    ]
}

fn viewer_to_relay() -> Vec<ViewerToRelay> {
    vec![
        ViewerToRelay::Watch {
            agent_id: "a1".into(),
            sdp: "v=0".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
            levels: vec![Level::View],
            help_code: Some("123 456".into()),
        },
        ViewerToRelay::WatchHelp {
            help_code: "123-456".into(),
            sdp: "v=0".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
            levels: vec![Level::View],
        },
        ViewerToRelay::Observe { session_id: "s1".into(), sdp: "v=0".into() },
        ViewerToRelay::Rejoin { session_id: "s1".into(), sdp: "v=0".into() },
        ViewerToRelay::Unwatch,
        ViewerToRelay::Elevate { levels: vec![Level::Control] },
        ViewerToRelay::Control { action: ControlAction::End },
    ]
}

fn relay_to_viewer() -> Vec<RelayToViewer> {
    vec![
        RelayToViewer::Agents {
            agents: vec![AgentInfo {
                agent_id: "a1".into(),
                name: "desk".into(),
                segment: "office".into(),
                width: 1,
                height: 2,
                user: "alice".into(),
                unattended: false,
                node: "relay-1".into(),
            }],
        },
        RelayToViewer::Reasons { reasons: vec!["incident".into()] },
        RelayToViewer::WatchAnswer { sdp: "v=0".into() },
        RelayToViewer::ViewEnded { reason: ViewEndReason::AgentGone },
        RelayToViewer::SessionMoving { session_id: "s1".into() },
        RelayToViewer::Nodes { nodes: vec!["node-a".into()] },
        RelayToViewer::Session { status: Box::new(status()) },
        RelayToViewer::Sessions {
            sessions: vec![SessionSummary {
                session_id: "s1".into(),
                agent_id: "a1".into(),
                agent_name: "desk".into(),
                segment: "office".into(),
                operator: "op".into(),
                ticket: "INC-1".into(),
                reason: "incident".into(),
                phase: SessionPhase::AwaitingConsent,
                granted: vec![],
                pending_elevation: vec![Level::Control],
                needs_senior: true,
                observers: vec![],
                started_ms: 3,
                node: "relay-1".into(),
            }],
        },
        RelayToViewer::HelpRequests {
            requests: vec![HelpQueueEntry {
                id: "h1".into(),
                agent_id: "a1".into(),
                device: "desk".into(),
                segment: "office".into(),
                user: "alice".into(),
                created_ms: 1,
                expires_ms: 2,
            }],
        },
        RelayToViewer::Error { code: ErrorCode::PolicyDenied, message: "no".into() },
    ]
}

fn channel_messages() -> Vec<ChannelMessage> {
    let seal = MediaSeal {
        session_id: "s1".into(),
        seq: 0,
        prev: String::new(),
        frames: vec![SealedFrame { ts: 1, sha256: "AA==".into() }],
        signature: "00".into(),
    };
    vec![
        ChannelMessage::Input { input: Input::PointerMove { x: 1, y: 2 } },
        ChannelMessage::Input { input: Input::PointerButton { x: 1, y: 2, button: 0, down: true } },
        ChannelMessage::Input { input: Input::Wheel { dx: -1, dy: 1 } },
        ChannelMessage::Input { input: Input::Key { key: "a".into(), down: false } },
        ChannelMessage::Chat { from: String::new(), text: "hi".into() },
        ChannelMessage::MediaSeal { seal },
    ]
}

/// Renders `value` as JSON text, with `extra` (a key and its JSON text) appended to the object at
/// `target`: the only way to write a duplicate key, which a `Value` cannot hold.
fn render(value: &Value, path: &str, target: &str, extra: &(String, String), out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push('{');
            let mut first = true;
            for (k, v) in map {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                render(v, &format!("{path}.{k}"), target, extra, out);
            }
            if path == target {
                if !first {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&extra.0).unwrap());
                out.push(':');
                out.push_str(&extra.1);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(v, &format!("{path}[{i}]"), target, extra, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// Every object in `value` with its path and its first key and value.
fn objects(value: &Value, path: &str, out: &mut Vec<(String, Option<(String, Value)>)>) {
    match value {
        Value::Object(map) => {
            out.push((path.to_owned(), map.iter().next().map(|(k, v)| (k.clone(), v.clone()))));
            for (k, v) in map {
                objects(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                objects(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The defects of `msg`'s encoding, each refused as named, and the control.
fn every_object_refuses_defects<T>(msg: &T, decode: impl Fn(&str) -> Result<T, DecodeError>) -> usize
where
    T: Serialize + PartialEq + std::fmt::Debug,
{
    let text = crate::encode(msg);
    assert_eq!(&decode(&text).unwrap(), msg, "control: {text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    let mut found = Vec::new();
    objects(&value, "$", &mut found);
    let mut probes = 0;
    for (path, first) in found {
        let unknown = ("zz_admin".to_owned(), "true".to_owned());
        let mut bad = String::new();
        render(&value, "$", &path, &unknown, &mut bad);
        // The envelope's `v` is taken off before the body is checked; paths are the same. An
        // externally tagged enum (`{"killed_by_admin":"root"}`) is a map of exactly one key, and
        // serde refuses a second one itself, before the unknown-field check can name it.
        match decode(&bad) {
            Err(DecodeError::Malformed(_)) if path.ends_with(".end_reason") => {}
            other => assert_eq!(other, Err(DecodeError::UnknownField { path: format!("{path}.zz_admin") }), "{bad}"),
        }
        probes += 1;
        if let Some((key, v)) = first {
            let mut twice = String::new();
            render(&value, "$", &path, &(key.clone(), v.to_string()), &mut twice);
            assert_eq!(decode(&twice), Err(DecodeError::DuplicateKey { path: path.clone(), key }), "{twice}");
            probes += 1;
        }
    }
    probes
}

#[test]
fn every_message_type_refuses_unknown_and_duplicate_keys_at_every_depth() {
    let mut probes = 0;
    for m in agent_to_relay() {
        probes += every_object_refuses_defects(&m, crate::decode::<AgentToRelay>);
    }
    for m in relay_to_agent() {
        probes += every_object_refuses_defects(&m, crate::decode::<RelayToAgent>);
    }
    for m in viewer_to_relay() {
        probes += every_object_refuses_defects(&m, crate::decode::<ViewerToRelay>);
    }
    for m in relay_to_viewer() {
        probes += every_object_refuses_defects(&m, crate::decode::<RelayToViewer>);
    }
    for m in channel_messages() {
        probes += every_object_refuses_defects(&m, crate::channel::decode);
    }
    // Nested objects were reached, not only the top of each message.
    assert!(probes > 100, "{probes}");
}

#[test]
fn a_unit_variant_with_an_extra_field_is_refused() {
    let control = crate::decode::<ViewerToRelay>(r#"{"v":1,"type":"unwatch"}"#);
    assert_eq!(control, Ok(ViewerToRelay::Unwatch));
    let probe = crate::decode::<ViewerToRelay>(r#"{"v":1,"type":"unwatch","admin":true}"#);
    assert_eq!(probe, Err(DecodeError::UnknownField { path: "$.admin".into() }));
    assert_eq!(probe.unwrap_err().code(), ErrorCode::BadMessage);
}

#[test]
fn a_duplicate_type_or_version_is_refused() {
    let twice = r#"{"v":1,"type":"unwatch","type":"elevate","levels":["control"]}"#;
    assert_eq!(
        crate::decode::<ViewerToRelay>(twice),
        Err(DecodeError::DuplicateKey { path: "$".into(), key: "type".into() })
    );
    assert_eq!(
        crate::decode::<ViewerToRelay>(r#"{"v":1,"v":2,"type":"unwatch"}"#),
        Err(DecodeError::DuplicateKey { path: "$".into(), key: "v".into() })
    );
}

#[test]
fn unique_value_reads_what_serde_json_reads() {
    let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":"\u00e9"}"#;
    assert_eq!(unique_value(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    assert!(matches!(unique_value(r#"{"a":1} x"#), Err(StrictError::Malformed(_))));
    assert!(matches!(unique_value(r#"{"a":1"#), Err(StrictError::Malformed(_))));
    assert_eq!(
        unique_value(r#"[{"a":1},{"b":{"c":1,"c":1}}]"#),
        Err(StrictError::DuplicateKey { path: "$[1].b".into(), key: "c".into() })
    );
}

/// Decodes `text` as a `T`; what decodes is stable (its own encoding decodes to the same
/// message). Whether it decoded.
fn stable<T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(text: &str) -> bool {
    match crate::decode::<T>(text) {
        Ok(msg) => {
            assert_eq!(crate::decode::<T>(&crate::encode(&msg)).as_ref(), Ok(&msg), "{text}");
            true
        }
        Err(_) => false,
    }
}

fn channel_stable(text: &str) -> bool {
    match crate::channel::decode(text) {
        Ok(msg) => {
            assert_eq!(crate::channel::decode(&crate::channel::encode(&msg)).as_ref(), Ok(&msg), "{text}");
            true
        }
        Err(_) => false,
    }
}

/// Decodes a text and says whether it decoded (asserting stability when it did).
type Decoder = fn(&str) -> bool;

/// Every decoder on the wire.
const DECODERS: [Decoder; 5] =
    [stable::<AgentToRelay>, stable::<RelayToAgent>, stable::<ViewerToRelay>, stable::<RelayToViewer>, channel_stable];

/// Every sample message, as text, with its decoder.
fn corpus() -> Vec<(String, Decoder)> {
    let ok = |i: usize| DECODERS[i];
    let mut out: Vec<(String, Decoder)> = Vec::new();
    out.extend(agent_to_relay().iter().map(|m| (crate::encode(m), ok(0))));
    out.extend(relay_to_agent().iter().map(|m| (crate::encode(m), ok(1))));
    out.extend(viewer_to_relay().iter().map(|m| (crate::encode(m), ok(2))));
    out.extend(relay_to_viewer().iter().map(|m| (crate::encode(m), ok(3))));
    out.extend(channel_messages().iter().map(|m| (crate::channel::encode(m), ok(4))));
    out
}

/// One edit of a message's text: delete, insert or replace a byte-sized piece at a position.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, String),
    Replace(usize, String),
}

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    // Pieces that make plausible JSON as well as noise: structure, keys, numbers, escapes.
    let piece = prop_oneof![
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just(":null".to_owned()),
        Just(r#","type":"unwatch""#.to_owned()),
        Just(r#""v":1,"#.to_owned()),
        Just("-1".to_owned()),
        Just("1e999".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(r"\u0000".to_owned()),
        Just(r"\ud800".to_owned()),
        "\\PC{0,3}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), piece.clone()).prop_map(|(i, p)| Edit::Insert(i, p)),
        (any::<usize>(), piece).prop_map(|(i, p)| Edit::Replace(i, p)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Delete(i) if !chars.is_empty() => {
                chars.remove(at(*i, chars.len()));
            }
            Edit::Delete(_) => {}
            Edit::Insert(i, p) => {
                let i = at(*i, chars.len() + 1);
                chars.splice(i..i, p.chars());
            }
            Edit::Replace(i, p) if !chars.is_empty() => {
                let i = at(*i, chars.len());
                chars.splice(i..i + 1, p.chars());
            }
            Edit::Replace(..) => {}
        }
    }
    chars.into_iter().collect()
}

proptest::proptest! {
    /// Any text: every decoder answers (no panic), and what it accepts is stable.
    #[test]
    fn fuzz_decoders_answer_any_text(text in "\\PC{0,200}") {
        for decoder in DECODERS {
            decoder(&text);
        }
    }

    /// Real messages with a few edits: the decoder of their type answers, and anything it accepts
    /// re-encodes to a message it decodes the same (checked inside `corpus`).
    #[test]
    fn fuzz_edited_messages_are_refused_or_stable(
        pick in proptest::prelude::any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let corpus = corpus();
        let (text, decoder) = &corpus[pick.index(corpus.len())];
        decoder(&apply(text, &edits));
    }

    /// Any strings in a watch request survive encoding and strict decoding unchanged.
    #[test]
    fn fuzz_watch_round_trips_any_strings(agent_id in "\\PC*", sdp in "\\PC*", ticket in "\\PC*", reason in "\\PC*") {
        let watch = ViewerToRelay::Watch { agent_id, sdp, ticket, reason, levels: vec![Level::View], help_code: None };
        proptest::prop_assert_eq!(crate::decode::<ViewerToRelay>(&crate::encode(&watch)), Ok(watch));
    }

    /// Duplicates are found wherever the generator puts them.
    #[test]
    fn fuzz_unique_value_finds_any_duplicate(keys in proptest::collection::vec("[a-c]{1,2}", 1..8)) {
        let text = format!("{{{}}}", keys.iter().map(|k| format!("{k:?}:1")).collect::<Vec<_>>().join(","));
        let distinct: std::collections::BTreeSet<_> = keys.iter().collect();
        let parsed = unique_value(&text);
        if distinct.len() == keys.len() {
            proptest::prop_assert!(parsed.is_ok(), "{}", text);
        } else {
            proptest::prop_assert!(matches!(parsed, Err(StrictError::DuplicateKey { .. })), "{}", text);
        }
    }
}
