//! The session lifecycle (design.md "Session lifecycle"), shared by relay and agent.
//!
//! A `Session` is created once policy allowed a request; it then waits for the user's consent,
//! runs, pauses, elevates and ends. `step(now, event)` changes state and returns effects for the
//! caller to carry out (media, input release, prompts, audit); `may_inject(now)` is the single
//! answer to "may input reach the endpoint now?" (R19), asked by the relay and again by the agent.

use std::collections::BTreeSet;

use crate::policy::{Deadline, EndsAt, Level, Obligations};

pub type Levels = BTreeSet<Level>;

/// Who did something.
pub use sightline_proto::Party;

/// Why a session ended; recorded with every end (R22, R23).
pub use sightline_proto::EndReason;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    AwaitingConsent { requested: Levels, deadline_ms: u64 },
    Active,
    Paused { by: Party },
    Ended(EndReason),
}

/// An elevation waiting for the user (and, in critical segments, a senior operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elevation {
    pub levels: Levels,
    pub user_confirmed: bool,
    pub senior_approved: bool,
    /// Unanswered by then (the segment's consent timeout), the request lapses: a missing senior
    /// must not hold the session's control hostage.
    pub deadline_ms: u64,
}

/// What happens to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ConsentAllowed {
        levels: Levels,
    },
    ConsentDenied,
    /// The consent window was closed without an answer.
    ConsentClosed,
    Pause {
        by: Party,
    },
    Resume {
        by: Party,
    },
    End {
        by: Party,
    },
    Kill {
        admin: String,
    },
    ElevationRequested {
        levels: Levels,
    },
    ElevationConfirmed {
        levels: Levels,
    },
    ElevationRefused,
    SeniorApproved,
    ObserverJoined,
    ObserverLeft,
    /// Activity, for the idle timeout (R23), defined here once for both sides: a chat line from
    /// the operator's side (the operator or an observer) resets the idle timer, and so does input
    /// the gate admits (`admit_input` counts that itself). The user's own actions at the endpoint
    /// do not count: the timeout is about the remote side's attention, and the user can end the
    /// session at any time. The relay and the agent feed exactly these, so they agree on idleness;
    /// an end either side's clock decides is told to the other.
    OperatorActivity,
    AgentLost,
    OperatorLost,
    /// The recorder cannot write: where recording is required the session pauses (nothing
    /// reaches a viewer that the recording lacks) until it recovers or fails.
    RecorderStalled,
    RecorderRecovered,
    RecorderFailed,
    /// The relay's audit log cannot be written (R41): the session ends.
    AuditUnavailable,
    /// The other side ended the session (the agent mirrors the relay's end, with its reason).
    EndedElsewhere(EndReason),
    /// The maintenance window the session needs was closed early (R3).
    WindowClosed,
    /// Time passed; deadlines are checked.
    Tick,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Show the consent prompt on the endpoint.
    AskConsent {
        levels: Levels,
        deadline_ms: u64,
    },
    StartMedia,
    PauseMedia,
    ResumeMedia,
    StopMedia,
    /// Release every held key and button on the endpoint.
    ReleaseInput,
    /// The granted levels changed (shown in the session bar and the viewer).
    Granted {
        levels: Levels,
    },
    AskUserToElevate {
        levels: Levels,
    },
    AskSeniorToApprove {
        levels: Levels,
    },
    /// The elevation was not completed in time: close its prompt.
    ElevationExpired {
        levels: Levels,
    },
    Ended(EndReason),
    /// The session's hours or window end soon: tell the user and the operator when (once).
    EndingSoon(EndsAt),
}

/// What a surviving node takes over of a session whose node was lost: the levels the user
/// signed for and the lost node still granted, and the session's clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub levels: Levels,
    pub grant_expires_ms: Option<u64>,
    pub started_ms: u64,
    pub paused_by: Option<Party>,
    pub warned: bool,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub phase: Phase,
    pub obligations: Obligations,
    /// Levels the segment allows (elevation cannot go beyond them).
    allowed: Levels,
    granted: Levels,
    /// When grants beyond the default ones (view, chat) expire (R7).
    grant_expires_ms: Option<u64>,
    started_ms: u64,
    last_activity_ms: u64,
    observers: u32,
    pub elevation: Option<Elevation>,
    /// Input events refused so far (counted, not logged one by one).
    pub dropped_input: u64,
    /// Chat lines refused so far: chat not granted, or the session not running (R20).
    pub dropped_chat: u64,
    /// Whether `EndingSoon` was given.
    warned: bool,
}

impl Session {
    /// A session that policy allowed: the user is asked for `requested`.
    pub fn new(now_ms: u64, obligations: Obligations, allowed: Levels, requested: Levels) -> (Session, Vec<Effect>) {
        let deadline_ms = now_ms + u64::from(obligations.consent_timeout_s) * 1000;
        let session = Session {
            phase: Phase::AwaitingConsent { requested: requested.clone(), deadline_ms },
            obligations,
            allowed,
            granted: Levels::new(),
            grant_expires_ms: None,
            started_ms: now_ms,
            last_activity_ms: now_ms,
            observers: 0,
            elevation: None,
            dropped_input: 0,
            dropped_chat: 0,
            warned: false,
        };
        (session, vec![Effect::AskConsent { levels: requested, deadline_ms }])
    }

    /// A running session taken over from a relay node that was lost (R43): the user consented on
    /// that node and is not asked again. It runs from the facts the lost node published, with the
    /// levels its user signed for (`levels`), and keeps its clocks: the maximum duration counts
    /// from the original consent (`started_ms`), so a move never lengthens a session. A user's
    /// own pause holds; the relay's own pause (a stalled recorder there) does not, since the
    /// recorder here is new. Activity counts from the move, so the operator has the idle timeout
    /// to come back.
    pub fn resume(now_ms: u64, obligations: Obligations, allowed: Levels, moved: Moved) -> Session {
        let phase = match moved.paused_by {
            Some(by @ (Party::User | Party::Operator)) => Phase::Paused { by },
            _ => Phase::Active,
        };
        let mut granted: Levels = moved.levels.intersection(&allowed).copied().collect();
        granted.insert(Level::View);
        // Grants beyond the default ones lapse when they lapsed there, never later.
        let grant_expires_ms = moved.grant_expires_ms.filter(|_| granted.iter().any(|l| !l.on_by_default()));
        if grant_expires_ms.is_some_and(|t| now_ms >= t) {
            granted.retain(|l| l.on_by_default());
        }
        Session {
            phase,
            obligations,
            allowed,
            granted,
            grant_expires_ms: grant_expires_ms.filter(|t| now_ms < *t),
            started_ms: moved.started_ms,
            last_activity_ms: now_ms,
            observers: 0,
            elevation: None,
            dropped_input: 0,
            dropped_chat: 0,
            warned: moved.warned,
        }
    }

    /// When the user consented (Unix ms): the maximum duration counts from here.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Whether both sides were warned of the session's end (`EndingSoon`).
    pub fn warned(&self) -> bool {
        self.warned
    }

    pub fn granted(&self) -> &Levels {
        &self.granted
    }

    /// When grants beyond the default ones fall back to them (Unix ms), if they do.
    pub fn grant_expires_ms(&self) -> Option<u64> {
        self.grant_expires_ms
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended(_))
    }

    /// Whether input may reach the endpoint now: control granted and not expired, the session
    /// running (not paused), an observer present where the segment requires one, and no
    /// elevation prompt in front of the user (the operator must not click the user's own prompt;
    /// once the user answered, waiting for a senior does not block the control already granted).
    pub fn may_inject(&self, now_ms: u64) -> bool {
        self.phase == Phase::Active
            && self.elevation.as_ref().is_none_or(|e| e.user_confirmed)
            && self.granted.contains(&Level::Control)
            && self.grant_expires_ms.is_none_or(|t| now_ms < t)
            && (!self.obligations.observer_required_for_control || self.observers > 0)
    }

    /// Filters one input event: `true` to pass it on, `false` (and counted) to drop it.
    pub fn admit_input(&mut self, now_ms: u64) -> bool {
        if self.may_inject(now_ms) {
            self.last_activity_ms = now_ms;
            true
        } else {
            self.dropped_input += 1;
            false
        }
    }

    /// Whether a chat line may pass now, either way (R20, R24): the user granted chat and the
    /// session runs (a paused one too: the two may talk about why it is paused).
    pub fn may_chat(&self) -> bool {
        matches!(self.phase, Phase::Active | Phase::Paused { .. }) && self.granted.contains(&Level::Chat)
    }

    /// Filters one chat line: `true` to pass it on, `false` (and counted) to refuse it.
    pub fn admit_chat(&mut self) -> bool {
        let admitted = self.may_chat();
        if !admitted {
            self.dropped_chat += 1;
        }
        admitted
    }

    fn end(&mut self, reason: EndReason) -> Vec<Effect> {
        if self.is_ended() {
            return Vec::new();
        }
        let was_live = !matches!(self.phase, Phase::AwaitingConsent { .. });
        self.phase = Phase::Ended(reason.clone());
        self.granted.clear();
        self.elevation = None;
        let mut effects = Vec::new();
        if was_live {
            effects.extend([Effect::ReleaseInput, Effect::StopMedia]);
        }
        effects.push(Effect::Ended(reason));
        effects
    }

    fn grant(&mut self, now_ms: u64, levels: Levels) -> Vec<Effect> {
        let beyond_defaults = levels.iter().any(|l| !l.on_by_default());
        self.grant_expires_ms = beyond_defaults.then(|| now_ms + u64::from(self.obligations.grant_expiry_s) * 1000);
        self.granted = levels.clone();
        vec![Effect::Granted { levels }]
    }

    /// Applies one event at time `now_ms`.
    pub fn step(&mut self, now_ms: u64, event: Event) -> Vec<Effect> {
        if self.is_ended() {
            return Vec::new();
        }
        // The hours or the window the session was allowed in hold while it runs (R3, R16).
        let mut warning = None;
        if matches!(event, Event::Tick)
            && let Some(ends) = self.obligations.ends_at
        {
            if now_ms >= ends.at_ms {
                return self.end(EndReason::DeadlineReached(ends.because));
            }
            if !self.warned && now_ms + u64::from(self.obligations.end_warning_s) * 1000 >= ends.at_ms {
                self.warned = true;
                warning = Some(Effect::EndingSoon(ends));
            }
        }
        let mut effects = self.apply(now_ms, event);
        if !self.is_ended() {
            effects.extend(warning);
        }
        effects
    }

    /// When the session will end, once both sides have been warned of it.
    pub fn ending(&self) -> Option<EndsAt> {
        self.obligations.ends_at.filter(|_| self.warned)
    }

    fn apply(&mut self, now_ms: u64, event: Event) -> Vec<Effect> {
        match (&self.phase, event) {
            (Phase::Ended(_), _) => Vec::new(),

            // ------------------------------------------------ consent
            (Phase::AwaitingConsent { requested, .. }, Event::ConsentAllowed { levels }) => {
                // The user grants a subset of what was asked; view is the floor of any session.
                let granted: Levels = levels.intersection(requested).copied().collect();
                if !granted.contains(&Level::View) {
                    return self.end(EndReason::DeniedByUser);
                }
                self.phase = Phase::Active;
                self.started_ms = now_ms;
                self.last_activity_ms = now_ms;
                let mut effects = vec![Effect::StartMedia];
                effects.extend(self.grant(now_ms, granted));
                effects
            }
            (Phase::AwaitingConsent { .. }, Event::ConsentDenied) => self.end(EndReason::DeniedByUser),
            (Phase::AwaitingConsent { .. }, Event::ConsentClosed) => self.end(EndReason::ConsentClosed),
            (Phase::AwaitingConsent { deadline_ms, .. }, Event::Tick) if now_ms >= *deadline_ms => {
                self.end(EndReason::ConsentTimedOut)
            }
            (Phase::AwaitingConsent { .. }, Event::AgentLost) => self.end(EndReason::AgentLost),
            (Phase::AwaitingConsent { .. }, Event::AuditUnavailable) => self.end(EndReason::AuditUnavailable),
            (Phase::AwaitingConsent { .. }, Event::EndedElsewhere(reason)) => self.end(reason),
            (Phase::AwaitingConsent { .. }, Event::WindowClosed) => {
                self.end(EndReason::DeadlineReached(Deadline::MaintenanceWindow))
            }
            (Phase::AwaitingConsent { .. }, Event::OperatorLost) => self.end(EndReason::OperatorLost),
            (Phase::AwaitingConsent { .. }, Event::Kill { admin }) => self.end(EndReason::KilledByAdmin(admin)),
            (Phase::AwaitingConsent { .. }, Event::End { by: Party::Operator }) => self.end(EndReason::EndedByOperator),
            (Phase::AwaitingConsent { .. }, Event::RecorderFailed) if self.obligations.recording_required => {
                self.end(EndReason::RecorderFailed)
            }
            (Phase::AwaitingConsent { .. }, _) => Vec::new(),

            // ------------------------------------------------ ending, from any live phase
            (_, Event::End { by: Party::User }) => self.end(EndReason::EndedByUser),
            (_, Event::End { .. }) => self.end(EndReason::EndedByOperator),
            (_, Event::Kill { admin }) => self.end(EndReason::KilledByAdmin(admin)),
            (_, Event::AgentLost) => self.end(EndReason::AgentLost),
            (_, Event::AuditUnavailable) => self.end(EndReason::AuditUnavailable),
            (_, Event::EndedElsewhere(reason)) => self.end(reason),
            (_, Event::WindowClosed) => self.end(EndReason::DeadlineReached(Deadline::MaintenanceWindow)),
            (_, Event::OperatorLost) => self.end(EndReason::OperatorLost),
            (_, Event::RecorderFailed) if self.obligations.recording_required => self.end(EndReason::RecorderFailed),
            (_, Event::RecorderFailed) => Vec::new(),
            (Phase::Active, Event::RecorderStalled) if self.obligations.recording_required => {
                self.phase = Phase::Paused { by: Party::System };
                vec![Effect::ReleaseInput, Effect::PauseMedia]
            }
            (Phase::Paused { by: Party::System }, Event::RecorderRecovered) => {
                self.phase = Phase::Active;
                self.last_activity_ms = now_ms;
                vec![Effect::ResumeMedia]
            }
            (_, Event::RecorderStalled | Event::RecorderRecovered) => Vec::new(),

            // ------------------------------------------------ pause and resume (R8)
            (Phase::Active, Event::Pause { by }) => {
                self.phase = Phase::Paused { by };
                vec![Effect::ReleaseInput, Effect::PauseMedia]
            }
            (Phase::Paused { by: paused_by }, Event::Resume { by }) => {
                // The operator cannot lift a pause the user made, and nobody lifts the relay's own
                // (a stalled recorder) but the relay (the agent mirrors it as a system resume).
                if (*paused_by == Party::User && by != Party::User)
                    || (*paused_by == Party::System && by != Party::System)
                {
                    return Vec::new();
                }
                self.phase = Phase::Active;
                self.last_activity_ms = now_ms;
                vec![Effect::ResumeMedia]
            }

            // ------------------------------------------------ elevation (R7)
            // One elevation at a time: a second request while one waits would swap what the user
            // (or the senior) is confirming under their hands.
            (_, Event::ElevationRequested { .. }) if self.elevation.is_some() => Vec::new(),
            (Phase::Active | Phase::Paused { .. }, Event::ElevationRequested { levels }) => {
                let wanted: Levels =
                    levels.iter().filter(|l| self.allowed.contains(l) && !self.granted.contains(l)).copied().collect();
                if wanted.is_empty() {
                    return Vec::new();
                }
                let deadline_ms = now_ms + u64::from(self.obligations.consent_timeout_s) * 1000;
                self.elevation = Some(Elevation {
                    levels: wanted.clone(),
                    user_confirmed: false,
                    senior_approved: false,
                    deadline_ms,
                });
                let mut effects = vec![Effect::AskUserToElevate { levels: wanted.clone() }];
                if self.obligations.elevation_needs_senior {
                    effects.push(Effect::AskSeniorToApprove { levels: wanted });
                }
                effects
            }
            (_, Event::ElevationConfirmed { levels }) => {
                let Some(elevation) = self.elevation.as_mut() else { return Vec::new() };
                elevation.levels = elevation.levels.intersection(&levels).copied().collect();
                if elevation.levels.is_empty() {
                    // Confirming none of what was asked is a refusal.
                    self.elevation = None;
                    return Vec::new();
                }
                elevation.user_confirmed = true;
                self.complete_elevation(now_ms)
            }
            (_, Event::SeniorApproved) => {
                let Some(elevation) = self.elevation.as_mut() else { return Vec::new() };
                elevation.senior_approved = true;
                self.complete_elevation(now_ms)
            }
            (_, Event::ElevationRefused) => {
                self.elevation = None;
                Vec::new()
            }

            // ------------------------------------------------ observer (R21)
            (_, Event::ObserverJoined) => {
                self.observers += 1;
                Vec::new()
            }
            (_, Event::ObserverLeft) => {
                self.observers = self.observers.saturating_sub(1);
                if self.obligations.observer_required_for_control
                    && self.observers == 0
                    && self.granted.contains(&Level::Control)
                {
                    // Control is suspended, not revoked: it returns when an observer does.
                    vec![Effect::ReleaseInput]
                } else {
                    Vec::new()
                }
            }

            (_, Event::OperatorActivity) => {
                self.last_activity_ms = now_ms;
                Vec::new()
            }

            // ------------------------------------------------ time (R23, R7)
            (_, Event::Tick) => {
                if now_ms >= self.started_ms + u64::from(self.obligations.max_duration_s) * 1000 {
                    return self.end(EndReason::MaxDuration);
                }
                if now_ms >= self.last_activity_ms + u64::from(self.obligations.idle_timeout_s) * 1000 {
                    return self.end(EndReason::Idle);
                }
                let mut effects = Vec::new();
                if self.grant_expires_ms.is_some_and(|t| now_ms >= t) {
                    self.grant_expires_ms = None;
                    self.granted.retain(|l| l.on_by_default());
                    effects.extend([Effect::ReleaseInput, Effect::Granted { levels: self.granted.clone() }]);
                }
                if let Some(elevation) = self.elevation.take_if(|e| now_ms >= e.deadline_ms) {
                    effects.push(Effect::ElevationExpired { levels: elevation.levels });
                }
                effects
            }

            (
                _,
                Event::ConsentAllowed { .. }
                | Event::ConsentDenied
                | Event::ConsentClosed
                | Event::Pause { .. }
                | Event::Resume { .. },
            ) => Vec::new(),
        }
    }

    fn complete_elevation(&mut self, now_ms: u64) -> Vec<Effect> {
        let Some(elevation) = &self.elevation else { return Vec::new() };
        if !elevation.user_confirmed || (self.obligations.elevation_needs_senior && !elevation.senior_approved) {
            return Vec::new();
        }
        let mut levels = self.granted.clone();
        levels.extend(elevation.levels.iter().copied());
        self.elevation = None;
        self.grant(now_ms, levels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    fn obligations() -> Obligations {
        Obligations {
            consent_timeout_s: 60,
            grant_expiry_s: 300,
            max_duration_s: 3600,
            idle_timeout_s: 600,
            observer_required_for_control: false,
            recording_required: true,
            elevation_needs_senior: false,
            active_confirmation: false,
            ends_at: None,
            end_warning_s: 300,
            unattended: false,
        }
    }

    fn levels(l: &[Level]) -> Levels {
        l.iter().copied().collect()
    }

    fn started(o: Obligations, requested: &[Level], granted: &[Level]) -> Session {
        let (mut s, _) = Session::new(0, o, levels(&[View, Control, Clipboard]), levels(requested));
        s.step(1_000, Event::ConsentAllowed { levels: levels(granted) });
        s
    }

    #[test]
    fn consent_outcomes() {
        let (s, effects) = Session::new(0, obligations(), levels(&[View, Control]), levels(&[View, Control]));
        assert_eq!(effects, vec![Effect::AskConsent { levels: levels(&[View, Control]), deadline_ms: 60_000 }]);
        let cases: Vec<(Event, u64, Phase)> = vec![
            (Event::ConsentDenied, 5, Phase::Ended(EndReason::DeniedByUser)),
            (Event::ConsentClosed, 5, Phase::Ended(EndReason::ConsentClosed)),
            (Event::Tick, 59_999, Phase::AwaitingConsent { requested: levels(&[View, Control]), deadline_ms: 60_000 }),
            (Event::Tick, 60_000, Phase::Ended(EndReason::ConsentTimedOut)),
            (Event::AgentLost, 5, Phase::Ended(EndReason::AgentLost)),
            (Event::ConsentAllowed { levels: levels(&[Control]) }, 5, Phase::Ended(EndReason::DeniedByUser)),
            (Event::ConsentAllowed { levels: levels(&[View]) }, 5, Phase::Active),
            (
                Event::Pause { by: Party::User },
                5,
                Phase::AwaitingConsent { requested: levels(&[View, Control]), deadline_ms: 60_000 },
            ),
        ];
        for (event, at, expected) in cases {
            let mut s = s.clone();
            s.step(at, event.clone());
            assert_eq!(s.phase, expected, "{event:?} at {at}");
            assert!(!s.may_inject(at), "no input before control is granted ({event:?})");
        }
    }

    #[test]
    fn chat_passes_only_while_granted_and_the_session_runs() {
        // Not before consent, whatever was asked.
        let (mut s, _) = Session::new(0, obligations(), levels(&[View, Chat, Control]), levels(&[View, Chat]));
        assert!(!s.admit_chat());
        // The user unticked chat: none either way (R20).
        let mut without = started(obligations(), &[View, Chat], &[View]);
        assert!(!without.admit_chat());
        assert_eq!(without.dropped_chat, 1);
        // Granted: through while active and while paused (the control), not after the end.
        s.step(1_000, Event::ConsentAllowed { levels: levels(&[View, Chat]) });
        assert!(s.admit_chat());
        s.step(2_000, Event::Pause { by: Party::User });
        assert!(s.admit_chat());
        s.step(3_000, Event::End { by: Party::User });
        assert!(!s.admit_chat());
        assert_eq!(s.dropped_chat, 2);
    }

    #[test]
    fn an_expiring_grant_keeps_the_default_levels() {
        let mut o = obligations();
        o.grant_expiry_s = 10;
        let mut s = started(o, &[View, Chat, Control], &[View, Chat, Control]);
        let effects = s.step(11_000, Event::Tick);
        assert_eq!(effects, vec![Effect::ReleaseInput, Effect::Granted { levels: levels(&[View, Chat]) }]);
        assert!(s.admit_chat(), "chat is not an elevated grant: it does not expire");
        // View and chat alone never expire.
        let mut s = started(o, &[View, Chat], &[View, Chat]);
        assert_eq!(s.grant_expires_ms(), None);
        assert!(s.step(100_000, Event::Tick).is_empty());
    }

    #[test]
    fn user_grants_a_subset_and_never_more_than_asked() {
        let s = started(obligations(), &[View, Control], &[View, Control, Clipboard]);
        assert_eq!(s.granted(), &levels(&[View, Control]));
        let s = started(obligations(), &[View, Control], &[View]);
        assert_eq!(s.granted(), &levels(&[View]));
        assert!(!s.may_inject(2_000), "view only: no input");
    }

    #[test]
    fn input_only_while_control_is_granted_running_and_not_expired() {
        let mut s = started(obligations(), &[View, Control], &[View, Control]);
        assert!(s.admit_input(2_000));
        assert_eq!(s.step(3_000, Event::Pause { by: Party::User }), vec![Effect::ReleaseInput, Effect::PauseMedia]);
        assert!(!s.admit_input(3_001));
        // The operator cannot lift the user's pause; the user can.
        assert!(s.step(3_002, Event::Resume { by: Party::Operator }).is_empty());
        assert!(!s.may_inject(3_003));
        assert_eq!(s.step(3_004, Event::Resume { by: Party::User }), vec![Effect::ResumeMedia]);
        assert!(s.admit_input(3_005));
        // The grant expires 300 s after consent (at 301 000) and falls back to view.
        assert!(s.may_inject(300_999));
        let effects = s.step(301_000, Event::Tick);
        assert_eq!(effects, vec![Effect::ReleaseInput, Effect::Granted { levels: levels(&[View]) }]);
        assert!(!s.admit_input(301_001));
        assert_eq!(s.dropped_input, 2);
    }

    #[test]
    fn elevation_needs_the_user_and_in_critical_segments_a_senior() {
        let mut s = started(obligations(), &[View], &[View]);
        assert_eq!(
            s.step(2_000, Event::ElevationRequested { levels: levels(&[Control]) }),
            vec![Effect::AskUserToElevate { levels: levels(&[Control]) }]
        );
        assert!(!s.may_inject(2_001));
        assert_eq!(
            s.step(3_000, Event::ElevationConfirmed { levels: levels(&[Control]) }),
            vec![Effect::Granted { levels: levels(&[View, Control]) }]
        );
        assert!(s.may_inject(3_001));

        let critical = Obligations { elevation_needs_senior: true, ..obligations() };
        let mut s = started(critical, &[View], &[View]);
        let effects = s.step(2_000, Event::ElevationRequested { levels: levels(&[Control, FileTransfer]) });
        // File transfer is not allowed in the segment: only control is asked for.
        assert_eq!(
            effects,
            vec![
                Effect::AskUserToElevate { levels: levels(&[Control]) },
                Effect::AskSeniorToApprove { levels: levels(&[Control]) }
            ]
        );
        assert!(
            s.step(3_000, Event::ElevationConfirmed { levels: levels(&[Control]) }).is_empty(),
            "still needs the senior"
        );
        assert!(!s.may_inject(3_001));
        assert_eq!(s.step(4_000, Event::SeniorApproved), vec![Effect::Granted { levels: levels(&[View, Control]) }]);
        assert!(s.may_inject(4_001));
        // While one elevation waits, another request changes nothing (the approver confirms what
        // they saw).
        let mut s = started(critical, &[View], &[View]);
        s.step(2_000, Event::ElevationRequested { levels: levels(&[Control]) });
        assert!(s.step(2_100, Event::ElevationRequested { levels: levels(&[Clipboard]) }).is_empty());
        assert_eq!(s.elevation.as_ref().map(|e| e.levels.clone()), Some(levels(&[Control])));
        // A refused elevation grants nothing.
        let mut s = started(obligations(), &[View], &[View]);
        s.step(2_000, Event::ElevationRequested { levels: levels(&[Control]) });
        s.step(2_500, Event::ElevationRefused);
        assert!(s.step(3_000, Event::ElevationConfirmed { levels: levels(&[Control]) }).is_empty());
        assert!(!s.may_inject(3_001));
    }

    #[test]
    fn observer_required_for_control() {
        let o = Obligations { observer_required_for_control: true, ..obligations() };
        let mut s = started(o, &[View, Control], &[View, Control]);
        assert!(!s.may_inject(2_000), "no observer yet");
        s.step(2_000, Event::ObserverJoined);
        assert!(s.may_inject(2_001));
        assert_eq!(s.step(3_000, Event::ObserverLeft), vec![Effect::ReleaseInput]);
        assert!(!s.may_inject(3_001), "suspended while the observer is away");
        s.step(4_000, Event::ObserverJoined);
        assert!(s.may_inject(4_001));
    }

    #[test]
    fn every_end_says_why_and_releases_input() {
        let cases: Vec<(Event, u64, EndReason)> = vec![
            (Event::End { by: Party::User }, 2_000, EndReason::EndedByUser),
            (Event::End { by: Party::Operator }, 2_000, EndReason::EndedByOperator),
            (Event::Kill { admin: "alice".into() }, 2_000, EndReason::KilledByAdmin("alice".into())),
            (Event::AgentLost, 2_000, EndReason::AgentLost),
            (Event::OperatorLost, 2_000, EndReason::OperatorLost),
            (Event::RecorderFailed, 2_000, EndReason::RecorderFailed),
            (Event::Tick, 1_000 + 600_000, EndReason::Idle),
        ];
        for (event, at, reason) in cases {
            let mut s = started(obligations(), &[View, Control], &[View, Control]);
            let effects = s.step(at, event.clone());
            assert_eq!(
                effects,
                vec![Effect::ReleaseInput, Effect::StopMedia, Effect::Ended(reason.clone())],
                "{event:?}"
            );
            assert!(!s.may_inject(at + 1));
            assert!(s.step(at + 2, Event::ConsentAllowed { levels: levels(&[View]) }).is_empty(), "ended stays ended");
        }
        // Activity keeps a session from idling; the maximum duration ends it anyway.
        let long = Obligations { idle_timeout_s: 600, max_duration_s: 1_000, ..obligations() };
        let mut s = started(long, &[View], &[View]);
        for t in (100_000..1_001_000).step_by(100_000) {
            s.step(t, Event::OperatorActivity);
            assert!(s.step(t, Event::Tick).is_empty(), "at {t}");
        }
        assert_eq!(
            s.step(1_001_000, Event::Tick),
            vec![Effect::ReleaseInput, Effect::StopMedia, Effect::Ended(EndReason::MaxDuration)]
        );
    }

    #[test]
    fn the_end_of_the_hours_or_window_warns_once_then_ends_the_session() {
        let ends = EndsAt { at_ms: 400_000, because: Deadline::MaintenanceWindow };
        let o = Obligations {
            ends_at: Some(ends),
            end_warning_s: 60,
            idle_timeout_s: 3_600,
            grant_expiry_s: 3_600,
            ..obligations()
        };
        let mut s = started(o, &[View, Control], &[View, Control]);
        assert!(s.step(339_999, Event::Tick).is_empty());
        assert_eq!(s.ending(), None);
        assert_eq!(s.step(340_000, Event::Tick), vec![Effect::EndingSoon(ends)], "warned end_warning_s before");
        assert_eq!(s.ending(), Some(ends));
        assert!(s.step(360_000, Event::Tick).is_empty(), "warned once");
        assert!(s.may_inject(399_999));
        assert_eq!(
            s.step(400_000, Event::Tick),
            vec![
                Effect::ReleaseInput,
                Effect::StopMedia,
                Effect::Ended(EndReason::DeadlineReached(Deadline::MaintenanceWindow))
            ]
        );
        // Also while the user has not answered yet, and without a warning first if it is late.
        let (mut waiting, _) =
            Session::new(0, Obligations { ends_at: Some(ends), ..obligations() }, levels(&[View]), levels(&[View]));
        assert_eq!(
            waiting.step(400_000, Event::Tick),
            vec![Effect::Ended(EndReason::DeadlineReached(Deadline::MaintenanceWindow))]
        );
        // A window closed early ends the session at once, with the same reason.
        let mut closed = started(obligations(), &[View], &[View]);
        assert_eq!(
            closed.step(5_000, Event::WindowClosed),
            vec![
                Effect::ReleaseInput,
                Effect::StopMedia,
                Effect::Ended(EndReason::DeadlineReached(Deadline::MaintenanceWindow))
            ]
        );
        // Control: a session without such an end runs on.
        let mut free = started(obligations(), &[View], &[View]);
        assert!(free.step(400_000, Event::Tick).is_empty());
    }

    #[test]
    fn an_unanswered_or_emptied_elevation_lapses_and_control_returns() {
        let critical = Obligations { elevation_needs_senior: true, ..obligations() };
        let mut s = started(critical, &[View, Control], &[View, Control]);
        s.step(2_000, Event::ElevationRequested { levels: levels(&[Clipboard]) });
        assert!(!s.may_inject(2_100), "the user's prompt is up");
        s.step(3_000, Event::ElevationConfirmed { levels: levels(&[Clipboard]) });
        assert!(s.may_inject(3_100), "waiting for the senior does not block control already granted");
        // No senior within the consent timeout (60 s): the request lapses, nothing more is granted.
        assert!(s.step(61_999, Event::Tick).is_empty());
        assert_eq!(s.step(62_000, Event::Tick), vec![Effect::ElevationExpired { levels: levels(&[Clipboard]) }]);
        assert!(s.elevation.is_none());
        assert!(s.step(62_100, Event::SeniorApproved).is_empty());
        assert_eq!(s.granted(), &levels(&[View, Control]));
        // A new request can be made; confirming none of it is a refusal.
        assert!(!s.step(63_000, Event::ElevationRequested { levels: levels(&[Clipboard]) }).is_empty());
        assert!(s.step(63_500, Event::ElevationConfirmed { levels: levels(&[FileTransfer]) }).is_empty());
        assert!(s.elevation.is_none());
        assert!(s.may_inject(63_600));
    }

    #[test]
    fn no_input_while_an_elevation_waits_for_the_user() {
        let mut s = started(obligations(), &[View, Control], &[View, Control]);
        assert!(s.may_inject(2_000));
        s.step(2_000, Event::ElevationRequested { levels: levels(&[Clipboard]) });
        // The operator must not be able to click the user's own prompt.
        assert!(!s.admit_input(2_100));
        s.step(2_200, Event::ElevationConfirmed { levels: levels(&[Clipboard]) });
        assert!(s.may_inject(2_300));
        assert_eq!(s.granted(), &levels(&[View, Control, Clipboard]));
    }

    #[test]
    fn the_agent_mirrors_an_end_decided_elsewhere_with_its_reason() {
        let mut s = started(obligations(), &[View, Control], &[View, Control]);
        let effects = s.step(3_000, Event::EndedElsewhere(EndReason::KilledByAdmin("ada".into())));
        assert_eq!(
            effects,
            [Effect::ReleaseInput, Effect::StopMedia, Effect::Ended(EndReason::KilledByAdmin("ada".into()))]
        );
        let (mut waiting, _) = Session::new(0, obligations(), levels(&[View]), levels(&[View]));
        assert_eq!(
            waiting.step(10, Event::EndedElsewhere(EndReason::ConsentTimedOut)),
            [Effect::Ended(EndReason::ConsentTimedOut)]
        );
        assert!(!waiting.may_inject(20));
    }

    #[test]
    fn a_stalled_recorder_pauses_the_session_and_only_its_recovery_resumes_it() {
        let mut s = started(obligations(), &[View, Control], &[View, Control]);
        assert_eq!(s.step(2_000, Event::RecorderStalled), [Effect::ReleaseInput, Effect::PauseMedia]);
        assert_eq!(s.phase, Phase::Paused { by: Party::System });
        assert!(!s.admit_input(2_100), "no input while the recording is stalled");
        for by in [Party::User, Party::Operator, Party::Admin] {
            assert!(s.step(2_200, Event::Resume { by }).is_empty(), "{by:?} cannot lift the relay's pause");
        }
        assert_eq!(s.step(2_300, Event::RecorderRecovered), [Effect::ResumeMedia]);
        assert!(s.may_inject(2_400));
        s.step(2_500, Event::RecorderStalled);
        assert_eq!(
            s.step(7_500, Event::RecorderFailed),
            [Effect::ReleaseInput, Effect::StopMedia, Effect::Ended(EndReason::RecorderFailed)]
        );

        // Where recording is off, the recorder's state changes nothing.
        let mut off = started(Obligations { recording_required: false, ..obligations() }, &[View], &[View]);
        assert!(off.step(2_000, Event::RecorderStalled).is_empty());
        assert!(off.step(2_000, Event::RecorderFailed).is_empty());
        assert_eq!(off.phase, Phase::Active);
        // A recorder that fails before consent ends a session that requires it.
        let (mut waiting, _) = Session::new(0, obligations(), levels(&[View]), levels(&[View]));
        assert_eq!(waiting.step(10, Event::RecorderFailed), [Effect::Ended(EndReason::RecorderFailed)]);
    }

    #[test]
    fn a_session_taken_over_from_a_lost_node_keeps_its_grants_clocks_and_the_users_pause() {
        let moved = |levels_: &[Level], expires: Option<u64>, paused_by| Moved {
            levels: levels(levels_),
            grant_expires_ms: expires,
            started_ms: 1_000,
            paused_by,
            warned: false,
        };
        let allowed = levels(&[View, Chat, Control]);
        // Control signed for and still granted: input flows at once, nobody is asked again.
        let s = Session::resume(50_000, obligations(), allowed.clone(), moved(&[View, Control], Some(90_000), None));
        assert_eq!(s.phase, Phase::Active);
        assert!(s.may_inject(50_001));
        assert_eq!(s.grant_expires_ms(), Some(90_000));
        assert_eq!(s.started_ms(), 1_000, "the maximum duration counts from the original consent");
        // A level the segment does not allow is not taken over, whatever was claimed.
        let s = Session::resume(50_000, obligations(), levels(&[View, Chat]), moved(&[View, Control], None, None));
        assert!(!s.granted().contains(&Control));
        // A grant that lapsed during the gap does not come back.
        let s =
            Session::resume(95_000, obligations(), allowed.clone(), moved(&[View, Chat, Control], Some(90_000), None));
        assert_eq!(s.granted(), &levels(&[View, Chat]));
        assert_eq!(s.grant_expires_ms(), None);
        // The user's pause holds; the lost node's own pause (its recorder) does not.
        let s = Session::resume(50_000, obligations(), allowed.clone(), moved(&[View], None, Some(Party::User)));
        assert_eq!(s.phase, Phase::Paused { by: Party::User });
        let s = Session::resume(50_000, obligations(), allowed.clone(), moved(&[View], None, Some(Party::System)));
        assert_eq!(s.phase, Phase::Active);
        // The clocks hold: past the maximum duration since the consent, the next tick ends it.
        let mut s = Session::resume(50_000, obligations(), allowed, moved(&[View], None, None));
        assert_eq!(s.step(1_000 + 3_600_000, Event::Tick).last(), Some(&Effect::Ended(EndReason::MaxDuration)));
    }
}
