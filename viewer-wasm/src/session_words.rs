//! What the operator's session bar says and offers, derived from one place only: the session's
//! status as the relay reports it. No IO, so each state's words are unit-tested here; the e2e
//! tests read the same words off the page.

use sightline_proto::{Level, Party, SessionPhase, SessionStatus};

/// The session's phase in words a person uses.
pub fn phase_words(s: &SessionStatus) -> String {
    match s.phase {
        SessionPhase::AwaitingConsent => "waiting for the user to answer".into(),
        SessionPhase::Active => "running".into(),
        SessionPhase::Paused => match s.paused_by {
            Some(Party::User) => "paused by the user: only the user can resume".into(),
            Some(Party::Operator) if s.observing => "paused by the operator".into(),
            Some(Party::Operator) => "paused by you".into(),
            Some(Party::System) => "paused by the relay: the recording cannot be written".into(),
            Some(Party::Admin) | None => "paused".into(),
        },
        SessionPhase::Ended => "ended".into(),
    }
}

/// What the picture area says while it shows no picture (`None` once frames are shown and the
/// session runs): an empty black box leaves the operator guessing.
pub fn video_hint(s: Option<&SessionStatus>, showing_frames: bool) -> Option<&'static str> {
    match s.map(|s| s.phase) {
        None => (!showing_frames).then_some("Connecting to the endpoint…"),
        Some(SessionPhase::AwaitingConsent) => {
            Some("Waiting for the user to allow the session: no picture until then.")
        }
        Some(SessionPhase::Paused) => Some("Paused: the picture stops until the session resumes."),
        Some(SessionPhase::Ended) => None,
        Some(SessionPhase::Active) => (!showing_frames).then_some("Waiting for the first picture from the endpoint…"),
    }
}

/// A running session's phase in the list of sessions.
pub fn summary_phase_words(phase: SessionPhase) -> &'static str {
    match phase {
        SessionPhase::AwaitingConsent => "waiting for the user",
        SessionPhase::Active => "running",
        SessionPhase::Paused => "paused",
        SessionPhase::Ended => "ended",
    }
}

/// The recording indicator (R9): shown exactly while the recorder takes the picture, that is
/// while the relay's recorder confirms it writes and frames flow (the session runs). While the
/// session is paused no picture is taken, and the indicator says so; before consent, after a
/// denial and after the end there is nothing to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingIndicator {
    /// Frames are being recorded now.
    Recording,
    /// The recorder is open, but the session is paused: no picture is taken.
    Paused,
    /// The session runs but the recorder does not confirm it writes.
    NotRecording,
}

impl RecordingIndicator {
    pub fn of(s: &SessionStatus) -> Option<Self> {
        match (s.phase, s.recording) {
            (SessionPhase::Active, true) => Some(Self::Recording),
            (SessionPhase::Active, false) => Some(Self::NotRecording),
            (SessionPhase::Paused, true) => Some(Self::Paused),
            (SessionPhase::Paused, false) => Some(Self::NotRecording),
            (SessionPhase::AwaitingConsent | SessionPhase::Ended, _) => None,
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Self::Recording => "Recording",
            Self::Paused => "Recording paused",
            Self::NotRecording => "Not recording",
        }
    }

    /// The value of `data-recording`: whether a picture is being recorded now.
    pub fn is_recording(self) -> bool {
        self == Self::Recording
    }
}

/// Whether the operator is offered Resume: only a pause the operator made is theirs to lift.
pub fn may_resume(s: &SessionStatus) -> bool {
    s.phase == SessionPhase::Paused && s.paused_by == Some(Party::Operator) && !s.observing
}

/// Whether the operator is offered Pause.
pub fn may_pause(s: &SessionStatus) -> bool {
    s.phase == SessionPhase::Active && !s.observing
}

/// Whether "Request control" is offered: not once control is granted or already asked for.
pub fn may_request_control(s: &SessionStatus) -> bool {
    !s.observing
        && s.phase == SessionPhase::Active
        && !s.granted.contains(&Level::Control)
        && !s.pending_elevation.contains(&Level::Control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: SessionPhase) -> SessionStatus {
        SessionStatus {
            session_id: "s".into(),
            agent_id: "a".into(),
            phase,
            operator: "op".into(),
            ticket: "INC-1".into(),
            reason: "incident".into(),
            granted: vec![Level::View, Level::Chat],
            pending_elevation: Vec::new(),
            paused_by: None,
            observers: Vec::new(),
            grant_expires_ms: None,
            consent_deadline_ms: None,
            end_reason: None,
            observing: false,
            recording: true,
            ending: None,
        }
    }

    #[test]
    fn the_picture_area_says_why_it_is_empty() {
        assert_eq!(video_hint(None, false), Some("Connecting to the endpoint…"));
        let waiting = status(SessionPhase::AwaitingConsent);
        assert!(video_hint(Some(&waiting), false).unwrap().contains("Waiting for the user"));
        let active = status(SessionPhase::Active);
        assert!(video_hint(Some(&active), false).unwrap().contains("first picture"));
        assert_eq!(video_hint(Some(&active), true), None, "a live picture needs no words");
        assert!(video_hint(Some(&status(SessionPhase::Paused)), true).unwrap().starts_with("Paused"));
        assert_eq!(video_hint(Some(&status(SessionPhase::Ended)), false), None, "the end says so elsewhere");
    }

    #[test]
    fn recording_shows_only_while_frames_are_recorded() {
        // The recorder opens before the user is asked (consent is on the record), but no picture
        // is taken then, nor after a denial or the end.
        assert_eq!(RecordingIndicator::of(&status(SessionPhase::AwaitingConsent)), None);
        assert_eq!(RecordingIndicator::of(&status(SessionPhase::Ended)), None);
        assert_eq!(RecordingIndicator::of(&status(SessionPhase::Active)), Some(RecordingIndicator::Recording));
        let mut paused = status(SessionPhase::Paused);
        paused.paused_by = Some(Party::User);
        assert_eq!(RecordingIndicator::of(&paused), Some(RecordingIndicator::Paused));
        assert!(!RecordingIndicator::Paused.is_recording());
        let mut stalled = status(SessionPhase::Paused);
        stalled.recording = false;
        assert_eq!(RecordingIndicator::of(&stalled), Some(RecordingIndicator::NotRecording));
    }

    #[test]
    fn only_the_operators_own_pause_offers_resume() {
        let mut s = status(SessionPhase::Paused);
        for (by, offered) in [(Party::User, false), (Party::System, false), (Party::Operator, true)] {
            s.paused_by = Some(by);
            assert_eq!(may_resume(&s), offered, "{by:?}");
        }
        s.observing = true;
        assert!(!may_resume(&s), "an observer resumes nothing");
        assert_eq!(phase_words(&s), "paused by the operator");
    }

    #[test]
    fn control_is_offered_until_granted_or_asked() {
        let mut s = status(SessionPhase::Active);
        assert!(may_request_control(&s));
        s.pending_elevation = vec![Level::Control];
        assert!(!may_request_control(&s));
        s.pending_elevation.clear();
        s.granted.push(Level::Control);
        assert!(!may_request_control(&s));
        assert!(!may_request_control(&status(SessionPhase::Paused)));
    }

    #[test]
    fn phases_read_as_words_not_state_names() {
        let words: Vec<String> = [SessionPhase::AwaitingConsent, SessionPhase::Active, SessionPhase::Ended]
            .into_iter()
            .map(|p| phase_words(&status(p)))
            .collect();
        assert_eq!(words, ["waiting for the user to answer", "running", "ended"]);
        let mut paused = status(SessionPhase::Paused);
        paused.paused_by = Some(Party::User);
        assert_eq!(phase_words(&paused), "paused by the user: only the user can resume");
        assert!(words.iter().all(|w| !w.contains('_')));
    }
}
