use super::*;

const SAMPLE: &str = r#"
reasons = ["incident", "password-reset", "software-install"]

[segments.office]
roles = ["operator", "senior_operator"]
operator_cidrs = ["10.0.0.0/8", "127.0.0.0/8"]
hours = { tz = "Europe/Berlin", days = ["mon", "tue", "wed", "thu", "fri"], from = "07:00", to = "19:00" }
levels = ["view", "chat", "control", "clipboard"]
grant_expiry_s = 900
max_duration_s = 7200
idle_timeout_s = 900
maintenance_window = false

[segments.payment]
roles = ["senior_operator"]
operator_cidrs = ["10.1.0.0/16"]
levels = ["view", "control"]
consent_timeout_s = 120
grant_expiry_s = 300
max_duration_s = 1800
idle_timeout_s = 300
observer_required_for_control = true
elevation_needs_senior = true
"#;

fn policy() -> Policy {
    Policy::from_toml(SAMPLE).unwrap()
}

/// Wednesday 2026-11-25 10:00 in Berlin (09:00 UTC).
fn office_hours() -> jiff::Timestamp {
    OK.at.parse().unwrap()
}

/// One table row: a request and the decision it must get.
#[derive(Clone)]
struct Case {
    segment: &'static str,
    roles: &'static [Role],
    source: &'static str,
    levels: &'static [Level],
    ticket: &'static str,
    reason: &'static str,
    at: &'static str,
    window: bool,
    expect: Result<(), Denial>,
}

/// An office request that is allowed (Wednesday, 10:00 in Berlin).
const OK: Case = Case {
    segment: "office",
    roles: &[Role::Operator],
    source: "10.2.3.4",
    levels: &[Level::View],
    ticket: "INC-1",
    reason: "incident",
    at: "2026-11-25T09:00:00Z",
    window: false,
    expect: Ok(()),
};

fn decide(case: &Case) -> Result<(), Denial> {
    decide_with(&policy(), case).map(|_| ())
}

/// `case` decided by `policy`, with the terms it gets.
fn decide_with(policy: &Policy, case: &Case) -> Result<Obligations, Denial> {
    let roles: BTreeSet<Role> = case.roles.iter().copied().collect();
    let levels: BTreeSet<Level> = case.levels.iter().copied().collect();
    let req = AccessRequest {
        roles: &roles,
        segments: None,
        source: case.source.parse().unwrap(),
        segment: case.segment,
        levels: &levels,
        ticket: case.ticket,
        reason: case.reason,
        now: case.at.parse().unwrap(),
        maintenance_window_until: case.window.then_some(u64::MAX),
        unattended: false,
        break_glass: false,
    };
    policy.decide(&req)
}

#[test]
fn switched_off_defaults() {
    use Level::*;
    let p = policy();
    let asked = |l: &[Level]| l.iter().copied().collect::<BTreeSet<Level>>();
    // Payments have no chat: a default request loses it, and what is asked on purpose stays
    // for `decide` to refuse by name.
    assert_eq!(p.without_switched_off_defaults("payment", &asked(&[View, Chat])), asked(&[View]));
    assert_eq!(p.without_switched_off_defaults("payment", &asked(&[View, Chat, Clipboard])), asked(&[View, Clipboard]));
    // The office has chat: nothing changes (the control).
    assert_eq!(p.without_switched_off_defaults("office", &asked(&[View, Chat])), asked(&[View, Chat]));
    assert_eq!(p.without_switched_off_defaults("nowhere", &asked(&[View, Chat])), asked(&[View, Chat]));
}

#[test]
fn decisions() {
    use Level::*;
    use Role::*;
    let payment = Case {
        segment: "payment",
        roles: &[SeniorOperator],
        source: "10.1.2.3",
        ticket: "CHG-7",
        reason: "software-install",
        ..OK
    };
    let cases = [
        OK,
        Case { levels: &[View, Control], ..OK },
        Case { segment: "nowhere", expect: Err(Denial::UnknownSegment), ..OK },
        Case { ticket: "  ", expect: Err(Denial::NoTicket), ..OK },
        Case { reason: "because", expect: Err(Denial::UnknownReason), ..OK },
        Case { roles: &[Observer], expect: Err(Denial::RoleNotAllowed), ..OK },
        Case { roles: &[Admin], expect: Err(Denial::RoleNotAllowed), ..OK },
        Case { source: "192.0.2.1", expect: Err(Denial::AddressNotAllowed), ..OK },
        // 19:30 in Berlin, and a Saturday: outside hours.
        Case { at: "2026-11-25T18:30:00Z", expect: Err(Denial::OutsideHours), ..OK },
        Case { at: "2026-11-28T09:00:00Z", expect: Err(Denial::OutsideHours), ..OK },
        // 07:30 in Berlin is 06:30 UTC: inside (the time zone matters).
        Case { at: "2026-11-25T06:30:00Z", ..OK },
        Case { levels: &[View, FileTransfer], expect: Err(Denial::LevelNotAllowed(FileTransfer)), ..OK },
        Case { levels: &[], expect: Err(Denial::NoLevels), ..OK },
        Case { expect: Err(Denial::MaintenanceWindowClosed), ..payment.clone() },
        Case { window: true, ..payment.clone() },
        // Chat is a level like the others (R20): on in the office, switched off for payments
        // (where a request that still names it is refused; see `switched_off_defaults`).
        Case { levels: &[View, Chat], ..OK },
        Case { window: true, levels: &[View, Chat], expect: Err(Denial::LevelNotAllowed(Chat)), ..payment.clone() },
        Case { window: true, roles: &[Operator], expect: Err(Denial::RoleNotAllowed), ..payment },
    ];
    for case in cases {
        assert_eq!(
            decide(&case),
            case.expect,
            "{} {:?} {} {:?} {}",
            case.segment,
            case.roles,
            case.source,
            case.levels,
            case.at
        );
    }
}

#[test]
fn obligations_come_from_the_segment() {
    let roles = BTreeSet::from([Role::SeniorOperator]);
    let levels = BTreeSet::from([Level::View]);
    let req = AccessRequest {
        roles: &roles,
        segments: None,
        source: "10.1.0.9".parse().unwrap(),
        segment: "payment",
        levels: &levels,
        ticket: "CHG-1",
        reason: "incident",
        now: office_hours(),
        maintenance_window_until: Some(u64::MAX),
        unattended: false,
        break_glass: false,
    };
    let o = policy().decide(&req).unwrap();
    assert_eq!((o.consent_timeout_s, o.grant_expiry_s, o.max_duration_s, o.idle_timeout_s), (120, 300, 1800, 300));
    assert!(o.observer_required_for_control && o.recording_required && o.elevation_needs_senior);
    assert!(!o.unattended);
    let unattended = AccessRequest { unattended: true, ..req.clone() };
    assert_eq!(policy().decide(&unattended), Err(Denial::UnattendedNotAllowed));
}

/// R12: directory groups may narrow the segments an operator reaches, never widen them.
#[test]
fn directory_segments_narrow_what_the_roles_reach() {
    let roles = BTreeSet::from([Role::SeniorOperator]);
    let levels = BTreeSet::from([Level::View]);
    let payment = BTreeSet::from(["payment".to_string()]);
    let office = BTreeSet::from(["office".to_string()]);
    let req = |segments: Option<&'static str>| AccessRequest {
        roles: &roles,
        segments: match segments {
            Some("payment") => Some(&payment),
            Some(_) => Some(&office),
            None => None,
        },
        source: "10.1.0.9".parse().unwrap(),
        segment: "payment",
        levels: &levels,
        ticket: "CHG-1",
        reason: "incident",
        now: office_hours(),
        maintenance_window_until: Some(u64::MAX),
        unattended: false,
        break_glass: false,
    };
    assert!(policy().decide(&req(None)).is_ok(), "control: not narrowed, the policy alone decides");
    assert!(policy().decide(&req(Some("payment"))).is_ok());
    assert_eq!(policy().decide(&req(Some("office"))), Err(Denial::SegmentNotReached));
    // Reaching the segment gives nothing the roles do not: an operator stays out of payment.
    let operator = BTreeSet::from([Role::Operator]);
    let narrowed_operator = AccessRequest { roles: &operator, ..req(Some("payment")) };
    assert_eq!(policy().decide(&narrowed_operator), Err(Denial::RoleNotAllowed));
}

/// R2: unattended access only in a segment that allows it, only inside an open window (even
/// where attended support needs none), and marked in the terms both sides hold.
#[test]
fn unattended_access_needs_its_segment_and_an_open_window() {
    let text = SAMPLE.replace("maintenance_window = false\n", "maintenance_window = false\nunattended = true\n");
    let policy = Policy::from_toml(&text).unwrap();
    let roles = BTreeSet::from([Role::Operator]);
    let levels = BTreeSet::from([Level::View, Level::Control]);
    let req = |unattended: bool, window: Option<u64>| AccessRequest {
        roles: &roles,
        segments: None,
        source: "10.2.3.4".parse().unwrap(),
        segment: "office",
        levels: &levels,
        ticket: "INC-1",
        reason: "incident",
        now: office_hours(),
        maintenance_window_until: window,
        unattended,
        break_glass: false,
    };
    // The control: attended support in this segment needs no window.
    assert!(!policy.decide(&req(false, None)).unwrap().unattended);
    assert_eq!(policy.decide(&req(true, None)), Err(Denial::MaintenanceWindowClosed));
    let until = unix_ms(office_hours()) + 600_000;
    let o = policy.decide(&req(true, Some(until))).unwrap();
    assert!(o.unattended && o.recording_required);
    assert_eq!(o.ends_at, Some(EndsAt { at_ms: until, because: Deadline::MaintenanceWindow }));
    // Where the segment does not allow it, not even inside a window.
    let unattended_payment = AccessRequest {
        segment: "payment",
        roles: &BTreeSet::from([Role::SeniorOperator]),
        source: "10.1.0.9".parse().unwrap(),
        levels: &BTreeSet::from([Level::View]),
        ..req(true, Some(until))
    };
    assert_eq!(policy.decide(&unattended_payment), Err(Denial::UnattendedNotAllowed));
}

#[test]
fn a_session_ends_with_the_hours_or_the_window_whichever_is_first() {
    let with_hours = SAMPLE.replace(
        "[segments.payment]\n",
        "[segments.payment]\nend_warning_s = 60\nhours = { tz = \"Europe/Berlin\", days = [\"wed\"], from = \"07:00\", to = \"19:30:15\" }\n",
    );
    let policy = Policy::from_toml(&with_hours).unwrap();
    let roles = BTreeSet::from([Role::SeniorOperator]);
    let levels = BTreeSet::from([Level::View]);
    let at = |window_until: Option<u64>| AccessRequest {
        roles: &roles,
        segments: None,
        source: "10.1.0.9".parse().unwrap(),
        segment: "payment",
        levels: &levels,
        ticket: "CHG-1",
        reason: "incident",
        now: office_hours(),
        maintenance_window_until: window_until,
        unattended: false,
        break_glass: false,
    };
    // 19:30:15 in Berlin on 2026-11-25 (CET, UTC+1) is 18:30:15 UTC.
    let closing: u64 = 1_795_631_415_000;
    let window_first = closing - 60_000;
    let o = policy.decide(&at(Some(window_first))).unwrap();
    assert_eq!(o.ends_at, Some(EndsAt { at_ms: window_first, because: Deadline::MaintenanceWindow }));
    assert_eq!(o.end_warning_s, 60);
    let o = policy.decide(&at(Some(closing + 1))).unwrap();
    assert_eq!(o.ends_at, Some(EndsAt { at_ms: closing, because: Deadline::SupportHours }));
    assert_eq!(policy.decide(&at(None)), Err(Denial::MaintenanceWindowClosed));
    // A segment that needs no window ends with its hours (19:00 in Berlin), warned 5 minutes before
    // by default.
    let operator = BTreeSet::from([Role::Operator]);
    let office = AccessRequest { segment: "office", roles: &operator, source: "10.2.3.4".parse().unwrap(), ..at(None) };
    let o = policy.decide(&office).unwrap();
    let seven = closing - 1_815_000;
    assert_eq!((o.ends_at, o.end_warning_s), (Some(EndsAt { at_ms: seven, because: Deadline::SupportHours }), 300));
}

#[test]
fn invalid_files_are_refused_with_the_place_named() {
    let bad = [
        (SAMPLE.replace("consent_timeout_s = 120", "consent_timeout_s = 300"), "consent_timeout_s"),
        (SAMPLE.replace("Europe/Berlin", "Mars/Olympus"), "unknown time zone"),
        (SAMPLE.replace("\"10.1.0.0/16\"", "\"10.1.0.0/99\""), "operator_cidrs"),
        (SAMPLE.replace("levels = [\"view\", \"control\"]", "levels = [\"control\"]"), "include view"),
        (SAMPLE.replace("roles = [\"senior_operator\"]", "roles = []"), "roles is empty"),
        (SAMPLE.replace("from = \"07:00\"", "from = \"20:00\""), "from < to"),
        (
            SAMPLE.replace("reasons = [\"incident\", \"password-reset\", \"software-install\"]", "reasons = []"),
            "catalog is empty",
        ),
        (SAMPLE.replace("idle_timeout_s = 300", "idle_timeout_s = 300\nsurprise = 1"), "unknown field"),
        (
            SAMPLE
                .replace("consent_timeout_s = 120", "consent_timeout_s = 120\nunattended = true\nrecording = \"off\""),
            "requires recording",
        ),
        (
            SAMPLE.replace(
                "consent_timeout_s = 120",
                "consent_timeout_s = 120\nunattended = true\nactive_confirmation = true",
            ),
            "exclude each other",
        ),
        // The rule is a word, and the old boolean is no longer read: refused, not ignored.
        (SAMPLE.replace("idle_timeout_s = 300", "idle_timeout_s = 300\nrecording = \"sometimes\""), "recording"),
        (SAMPLE.replace("idle_timeout_s = 300", "idle_timeout_s = 300\nrecording_required = false"), "unknown field"),
    ];
    for (text, expected) in bad {
        let err = Policy::from_toml(&text).unwrap_err().0;
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

/// The payment segment with `masks` appended (as its last tables).
fn with_masks(masks: &str) -> String {
    format!("{SAMPLE}\n{masks}")
}

#[test]
fn mask_rules_are_read_in_every_form() {
    let policy = Policy::from_toml(&with_masks(
        r#"
[[segments.payment.masks]]
name = "customer panel"
audience = "both"
area_fraction = { x = 0.0, y = 0.0, w = 0.25, h = 1.0 }

[[segments.payment.masks]]
name = "logo"
audience = "both"
area_px = { x = 10, y = 20, w = 30, h = 40 }

[[segments.payment.masks]]
name = "teller"
audience = "both"
window = { class = "Teller", title = "*Kunde*" }

[[segments.payment.masks]]
name = "statement"
audience = "recording"
while_window = { title = "*Kontoauszug*" }

[[segments.payment.masks]]
name = "customer id"
audience = "operator"
window = { title = "*Ausweis*" }
"#,
    ))
    .unwrap();
    let masks = &policy.segments["payment"].masks;
    assert_eq!(masks.len(), 5);
    let audiences: Vec<_> = masks.iter().map(|m| m.audience).collect();
    use MaskAudience::{Both, Operator, Recording};
    assert_eq!(audiences, [Both, Both, Both, Recording, Operator]);
    assert_eq!(masks[0].target, MaskTarget::Area { area: Area::Fraction { x: 0, y: 0, w: 2_500, h: 10_000 } });
    assert_eq!(masks[1].target, MaskTarget::Area { area: Area::Pixels { x: 10, y: 20, w: 30, h: 40 } });
    assert_eq!(
        masks[2].target,
        MaskTarget::Window { window: WindowMatch { class: Some("Teller".into()), title: Some("*Kunde*".into()) } }
    );
    assert_eq!(
        masks[3].target,
        MaskTarget::WhileWindow {
            window: WindowMatch { class: None, title: Some("*Kontoauszug*".into()) },
            area: None
        }
    );
    assert!(policy.segments["office"].masks.is_empty());
}

#[test]
fn invalid_mask_rules_are_refused_not_ignored() {
    let head = "[[segments.payment.masks]]\nname = \"m\"\n";
    let bad = [
        ("audience = \"both\"\n", "nothing to mask"),
        ("audience = \"both\"\narea_px = { x = 0, y = 0, w = 0, h = 5 }\n", "empty"),
        ("audience = \"both\"\narea_fraction = { x = 0.5, y = 0, w = 0.75, h = 1 }\n", "within 0..1"),
        ("audience = \"both\"\narea_fraction = { x = 0, y = 0, w = 1.5, h = 1 }\n", "not within 0..1"),
        ("audience = \"both\"\nwindow = { role = \"x\" }\n", "unknown field"),
        ("audience = \"both\"\nwindow = { class = \"\" }\n", "needs a class or a title"),
        (
            "audience = \"both\"\nwindow = { title = \"a\" }\narea_px = { x = 0, y = 0, w = 1, h = 1 }\n",
            "takes no area",
        ),
        ("audience = \"both\"\nwindow = { title = \"a\" }\nwhile_window = { title = \"a\" }\n", "not both"),
        ("audience = \"everyone\"\narea_px = { x = 0, y = 0, w = 1, h = 1 }\n", "audience"),
        ("audience = \"both\"\narea_px = { x = 0, y = 0, w = 1, h = 1 }\nblur = true\n", "unknown field"),
    ];
    for (rule, expected) in bad {
        let err = Policy::from_toml(&with_masks(&format!("{head}{rule}"))).unwrap_err().0;
        assert!(err.contains(expected), "expected {expected:?} in {err:?} for {rule}");
        // Validation names the segment; a parse error names the line.
        assert!(err.contains("segment payment") || err.contains("line 2"), "{err}");
    }
    // The control: the same table with a valid area loads.
    Policy::from_toml(&with_masks(&format!("{head}audience = \"both\"\narea_px = {{ x = 0, y = 0, w = 1, h = 1 }}\n")))
        .unwrap();
}

#[test]
fn closing_time_in_a_daylight_saving_gap_or_fold_is_never_late() {
    let at = |hours: &str, now: &'static str| {
        let text = SAMPLE.replace(
            "hours = { tz = \"Europe/Berlin\", days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"], from = \"07:00\", to = \"19:00\" }",
            hours,
        );
        let policy = Policy::from_toml(&text).unwrap();
        decide_with(&policy, &Case { at: now, ..OK }).unwrap().ends_at.unwrap().at_ms
    };
    let ms = |t: &str| unix_ms(t.parse().unwrap());
    // 2027-03-28: Berlin skips 02:00-03:00 (the door closes at 01:00 UTC, when 02:00 CET
    // becomes 03:00 CEST). Closing at 02:30 must not be 03:30 CEST (01:30 UTC).
    let gap = at(
        "hours = { tz = \"Europe/Berlin\", days = [\"sun\"], from = \"00:00\", to = \"02:30\" }",
        "2027-03-28T00:10:00Z",
    );
    assert!(gap <= ms("2027-03-28T01:00:00Z"), "{gap}");
    // 2027-10-31: 02:30 happens twice (00:30 and 01:30 UTC); the first one closes the door.
    let fold = at(
        "hours = { tz = \"Europe/Berlin\", days = [\"sun\"], from = \"00:00\", to = \"02:30\" }",
        "2027-10-31T00:00:00Z",
    );
    assert_eq!(fold, ms("2027-10-31T00:30:00Z"));
}

#[test]
fn a_segment_needs_a_maintenance_window_unless_it_opts_out() {
    // R3: payment says nothing about windows, office opts out.
    let policy = policy();
    assert!(policy.segments["payment"].maintenance_window);
    assert!(!policy.segments["office"].maintenance_window);
}

#[test]
fn a_recording_mask_needs_a_recording() {
    let mask = "[[segments.payment.masks]]\nname = \"m\"\naudience = \"recording\"\narea_px = { x = 0, y = 0, w = 1, h = 1 }\n";
    Policy::from_toml(&with_masks(mask)).unwrap();
    let unrecorded = with_masks(mask).replacen("[segments.payment]", "[segments.payment]\nrecording = \"off\"", 1);
    let err = Policy::from_toml(&unrecorded).unwrap_err().0;
    assert!(err.contains("segment records nothing"), "{err}");
}

#[test]
fn a_break_glass_request_is_held_to_view_and_chat_with_consent() {
    let policy = Policy::from_toml(SAMPLE).unwrap();
    let roles = BTreeSet::from([Role::Operator]);
    let view_chat = BTreeSet::from([Level::View, Level::Chat]);
    let control = BTreeSet::from([Level::View, Level::Control]);
    let req = |levels, break_glass| AccessRequest {
        roles: &roles,
        segments: None,
        source: "10.2.3.4".parse().unwrap(),
        segment: "office",
        levels,
        ticket: "INC-1",
        reason: "incident",
        now: office_hours(),
        maintenance_window_until: None,
        unattended: false,
        break_glass,
    };
    // The control: the same request with control passes for a signed-in operator.
    assert!(policy.decide(&req(&control, false)).is_ok());
    assert!(matches!(policy.decide(&req(&control, true)), Err(Denial::BreakGlass(why)) if why.contains("control")));
    assert!(policy.decide(&req(&view_chat, true)).is_ok());
}
