//! What the person at the endpoint is told and can answer, independent of how it is shown (the
//! window in `ui`, or the terminal prompt in `tty`): the prompt text, and the line protocol between
//! the agent and its front end. The front end runs as a child process (`agent consent-ui`)
//! because a GUI owns its thread and may crash; the agent treats a vanished front end as a deny
//! (while asking) or as the user ending the session (while running).

use serde::{Deserialize, Serialize};
use sightline_proto::{ConsentRequest, Decision, Level, Party, levels_text};

/// From the agent to the front end, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UiCommand {
    Ask {
        request: Box<ConsentRequest>,
    },
    Elevate {
        levels: Vec<Level>,
    },
    /// The elevation request lapsed: take its prompt away.
    ElevationClosed,
    Status {
        granted: Vec<Level>,
        observers: Vec<String>,
        paused_by: Option<Party>,
        recording: bool,
        /// Once the end of the session's hours or window is near: when, and why (R3, R16).
        #[serde(default)]
        ending: Option<sightline_proto::EndsAt>,
        /// The relay node was lost and the session waits for another to take it over (R43).
        #[serde(default)]
        reconnecting: bool,
    },
    Chat {
        from: String,
        text: String,
    },
    Ended {
        reason: String,
    },
}

/// What the bar says while the session waits for another relay node (R43).
pub const RECONNECTING_LINE: &str =
    "Reconnecting: the relay was lost. Nothing can act on this screen until another relay takes the session over.";

/// From the front end to the agent, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UiReport {
    Decision {
        decision: Decision,
        levels: Vec<Level>,
    },
    ElevationDecision {
        decision: Decision,
        levels: Vec<Level>,
    },
    Pause,
    Resume,
    End,
    Chat {
        text: String,
    },
    /// The session bar was minimised or hidden (`true`) or shown again.
    Hidden {
        hidden: bool,
    },
}

/// Who asks: the display name, with the user name beside it only where it says something more.
fn operator_line(display_name: &str, name: &str) -> String {
    if display_name == name || display_name.is_empty() {
        format!("Operator: {name}")
    } else {
        format!("Operator: {display_name} ({name})")
    }
}

/// The lines every consent prompt shows, in order (the window, the terminal and the log use the
/// same ones, so what the user saw is what the log says they saw).
pub fn consent_lines(r: &ConsentRequest) -> Vec<String> {
    let mut lines = vec![
        operator_line(&r.operator.display_name, &r.operator.name),
        format!("Role: {}", r.operator.role.replace('_', " ")),
        format!("Organisation: {}", r.operator.organisation),
        format!("Reason: {}", r.reason),
        format!("Ticket: {}", r.ticket),
        format!("Requested: {}", levels_text(&r.levels)),
    ];
    if !r.masks.is_empty() {
        lines.push(masked_line(&r.masks));
    }
    // The user who asked for help knows their code: this is the answer to it, not a stranger.
    if let Some(code) = &r.help_code {
        lines.insert(0, format!("This answers your help request {}", sightline_core::help::spoken(code)));
    }
    lines
}

/// What the session hides and from whom (R33, R34), for the prompt and the session bar.
pub fn masked_line(masks: &[sightline_proto::mask::MaskRule]) -> String {
    format!("Hidden: {}", sightline_proto::mask::masks_text(masks))
}

/// The warning the bar shows before the session's hours or window end.
pub fn ending_line(ends: &sightline_proto::EndsAt) -> String {
    let at = i64::try_from(ends.at_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "soon".to_owned(), |t| format!("at {} UTC", t.strftime("%H:%M:%S")));
    format!("This session ends {at}: {}", ends.because.describe())
}

/// What the bar says while the session is paused, by whom it was paused: the relay pauses a
/// session only while its recording cannot be written, and only that lifts the pause.
pub fn paused_line(by: Party) -> &'static str {
    match by {
        Party::User => "Paused by you",
        Party::Operator => "Paused by the operator",
        Party::Admin => "Paused by an administrator",
        Party::System => "Paused by the relay: the recording cannot be written",
    }
}

/// Human name of a level, for check boxes.
pub fn level_label(level: Level) -> &'static str {
    match level {
        Level::View => "See my screen",
        Level::Chat => "Chat with me",
        Level::Control => "Control mouse and keyboard",
        Level::Clipboard => "Use my clipboard",
        Level::FileTransfer => "Transfer files",
    }
}

/// What a plain `allow` grants on the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainAllow {
    /// The consent prompt (R20): what is on by default (view and chat) of what was asked;
    /// anything more is named.
    Defaults,
    /// An elevation prompt: the levels it asks about.
    Asked,
}

/// Parses a terminal answer: `deny`, `allow` (see `PlainAllow`), or a list of levels
/// (`view,control`). Levels not asked for are ignored; view is implied by any allow.
pub fn parse_tty_answer(answer: &str, asked: &[Level], plain: PlainAllow) -> Option<(Decision, Vec<Level>)> {
    let answer = answer.trim().to_ascii_lowercase();
    match answer.as_str() {
        "" => None,
        "n" | "no" | "deny" => Some((Decision::Deny, Vec::new())),
        "y" | "yes" | "allow" => Some((
            Decision::Allow,
            asked.iter().copied().filter(|l| plain == PlainAllow::Asked || l.on_by_default()).collect(),
        )),
        list => {
            let mut levels = Vec::new();
            for word in list.split([',', ' ']).filter(|w| !w.is_empty()) {
                let level = Level::ALL.into_iter().find(|l| l.as_str() == word)?;
                if asked.contains(&level) && !levels.contains(&level) {
                    levels.push(level);
                }
            }
            if !levels.contains(&Level::View) && asked.contains(&Level::View) {
                levels.insert(0, Level::View);
            }
            Some((Decision::Allow, levels))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_proto::{OperatorInfo, SessionTerms};

    fn request() -> ConsentRequest {
        ConsentRequest {
            session_id: "s1".into(),
            operator: OperatorInfo {
                name: "op".into(),
                display_name: "Olga Operator".into(),
                role: "senior_operator".into(),
                organisation: "Bank IT".into(),
            },
            ticket: "INC-1".into(),
            reason: "incident".into(),
            levels: vec![Level::View, Level::Control],
            deadline_ms: 0,
            terms: SessionTerms {
                consent_timeout_s: 60,
                grant_expiry_s: 60,
                max_duration_s: 60,
                idle_timeout_s: 60,
                observer_required_for_control: false,
                recording_required: false,
                elevation_needs_senior: false,
                active_confirmation: false,
                ends_at: None,
                end_warning_s: 300,
                unattended: false,
            },
            masks: Vec::new(),
            help_code: None,
        }
    }

    /// A pause the relay made (its recorder stalled) is not put on the operator (issue 23).
    #[test]
    fn the_bar_says_who_paused_the_session() {
        assert_eq!(paused_line(Party::System), "Paused by the relay: the recording cannot be written");
        assert_eq!(paused_line(Party::Operator), "Paused by the operator");
        assert_eq!(paused_line(Party::User), "Paused by you");
        let lines: std::collections::BTreeSet<_> =
            [Party::User, Party::Operator, Party::Admin, Party::System].map(paused_line).into_iter().collect();
        assert_eq!(lines.len(), 4, "each party has its own words");
    }

    #[test]
    fn a_prompt_that_answers_the_users_help_request_says_so_first() {
        let mut r = request();
        r.help_code = Some("123456".into());
        let lines = consent_lines(&r);
        assert_eq!(lines[0], "This answers your help request 123 456");
        assert_eq!(lines[1..], consent_lines(&request())[..]);
    }

    #[test]
    fn an_operator_whose_display_name_is_the_user_name_is_named_once() {
        assert_eq!(operator_line("olga", "olga"), "Operator: olga");
        assert_eq!(operator_line("", "olga"), "Operator: olga");
        assert_eq!(operator_line("Olga Operator", "olga"), "Operator: Olga Operator (olga)");
    }

    #[test]
    fn prompt_names_operator_role_organisation_reason_ticket_and_levels() {
        let lines = consent_lines(&request());
        assert_eq!(
            lines,
            [
                "Operator: Olga Operator (op)",
                "Role: senior operator",
                "Organisation: Bank IT",
                "Reason: incident",
                "Ticket: INC-1",
                "Requested: view, control",
            ]
        );
    }

    #[test]
    fn terminal_answers() {
        use PlainAllow::{Asked, Defaults};
        let asked = [Level::View, Level::Control];
        assert_eq!(parse_tty_answer("deny", &asked, Defaults), Some((Decision::Deny, vec![])));
        assert_eq!(
            parse_tty_answer("Y", &asked, Defaults),
            Some((Decision::Allow, vec![Level::View])),
            "consent: what is on by default of what was asked"
        );
        assert_eq!(
            parse_tty_answer("allow", &[Level::View, Level::Chat, Level::Control], Defaults),
            Some((Decision::Allow, vec![Level::View, Level::Chat])),
            "consent: view and chat, never control (R20)"
        );
        assert_eq!(
            parse_tty_answer("view", &[Level::View, Level::Chat], Defaults),
            Some((Decision::Allow, vec![Level::View])),
            "naming the levels leaves chat off"
        );
        assert_eq!(
            parse_tty_answer("allow", &asked, Asked),
            Some((Decision::Allow, asked.to_vec())),
            "elevation: as asked"
        );
        assert_eq!(parse_tty_answer("view", &asked, Defaults), Some((Decision::Allow, vec![Level::View])));
        // Not asked for: ignored; view implied.
        assert_eq!(
            parse_tty_answer("control,file_transfer", &asked, Defaults),
            Some((Decision::Allow, asked.to_vec()))
        );
        assert_eq!(parse_tty_answer("launch", &asked, Defaults), None);
        assert_eq!(parse_tty_answer("  ", &asked, Defaults), None);
    }

    #[test]
    fn protocol_lines_round_trip() {
        let cmd = UiCommand::Ask { request: Box::new(request()) };
        let line = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<UiCommand>(&line).unwrap(), cmd);
        let report = UiReport::Decision { decision: Decision::Allow, levels: vec![Level::View] };
        let line = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<UiReport>(&line).unwrap(), report);
    }
}
