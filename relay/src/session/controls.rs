//! Who acts on a running session from outside its machine's timers: the user's session bar
//! (pause, resume, end, and what the endpoint reports), the operator's controls, an admin's kill,
//! observers coming and going. Each pause or resume is recorded as the machine decided it,
//! carried out or refused with why, whoever asked (R8, R26).

use sightline_core::session::{Event, Phase};
use sightline_proto::{EndReason, Party, SessionEvent};

use super::LiveSession;
use sightline_audit::events::{EventKind, Outcome};

/// Refused pauses and resumes recorded one by one in a session; the rest are counted in
/// its end record.
pub const REFUSED_CONTROLS_RECORDED: u64 = 20;

/// Why the machine did not take a pause or resume, in the record's words.
fn why_refused(action: sightline_proto::ControlAction, phase: &Phase) -> &'static str {
    use sightline_proto::ControlAction;
    match (action, phase) {
        (ControlAction::Resume, Phase::Paused { by: Party::User }) => {
            "the user paused the session; only the user resumes it"
        }
        (ControlAction::Resume, Phase::Paused { .. }) => {
            "the relay paused the session; it resumes when its cause is gone"
        }
        (ControlAction::Resume, _) => "the session is not paused",
        _ => "the session is not active",
    }
}

impl LiveSession {
    /// The session bar's buttons (pause, resume, end by the user).
    pub fn user_event(&self, event: SessionEvent) {
        use sightline_proto::ControlAction;
        let actor = format!("user@{}", self.link.info.name);
        match event {
            // Recorded as the machine decides, not as the endpoint claims: a user's resume of the
            // relay's own pause (its recorder stalled) is refused and recorded so.
            SessionEvent::Pause { .. } => {
                let pause = Event::Pause { by: Party::User };
                let _ =
                    self.control(ControlAction::Pause, pause, Some(EventKind::SessionPaused), &actor, "by the user");
            }
            SessionEvent::Resume { .. } => {
                let resume = Event::Resume { by: Party::User };
                let _ =
                    self.control(ControlAction::Resume, resume, Some(EventKind::SessionResumed), &actor, "by the user");
            }
            SessionEvent::End { .. } => {
                self.step(Event::End { by: Party::User }, &actor);
            }
            // The endpoint's own clock ended it: the same end, with the same reason and record, as
            // the relay's timers make (issue 12: one account of why a session ended). The actor
            // says whose clock it was: the endpoint is not taken for the relay's own timer.
            SessionEvent::Ended { reason: reason @ (EndReason::Idle | EndReason::MaxDuration) } => {
                self.step(Event::EndedElsewhere(reason), "agent");
            }
            // Any other end is the relay's to decide; the endpoint has ended anyway, so the
            // session ends here too, with what it claimed on the record.
            SessionEvent::Ended { reason } => {
                self.declined_by_endpoint(&format!(
                    "it ended the session for a reason only the relay decides: {}",
                    reason.describe()
                ));
            }
            SessionEvent::InputRefused => {
                if self.input_refused_reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                self.emit(
                    EventKind::InputRefusedByEndpoint,
                    Outcome::Failure,
                    &format!("device:{}", self.link.info.agent_id),
                    "the endpoint refused input that came through the relay (R19): the relay's gate let it through, \
                     or a pause, expiry or resume crossed it on the way"
                        .into(),
                );
            }
            SessionEvent::ChatRefused => self.chat_refused_by_endpoint(),
            other => tracing::warn!(session = %self.id, ?other, "ignoring a session event the agent may not send"),
        }
    }

    /// The operator's pause, resume and end.
    /// A pause, resume or end from the operator's viewer; a refusal says why, for the operator.
    pub fn operator_control(&self, action: sightline_proto::ControlAction) -> Result<(), &'static str> {
        use sightline_proto::ControlAction;
        let actor = self.request.operator.name.clone();
        let (event, wire) = match action {
            ControlAction::Pause => (Event::Pause { by: Party::Operator }, SessionEvent::Pause { by: Party::Operator }),
            ControlAction::Resume => {
                (Event::Resume { by: Party::Operator }, SessionEvent::Resume { by: Party::Operator })
            }
            ControlAction::End => (Event::End { by: Party::Operator }, SessionEvent::End { by: Party::Operator }),
        };
        let kind = match action {
            ControlAction::Pause => Some(EventKind::SessionPaused),
            ControlAction::Resume => Some(EventKind::SessionResumed),
            ControlAction::End => None,
        };
        self.control(action, event, kind, &actor, "by the operator")?;
        if !matches!(action, ControlAction::End) {
            self.tell_agent(wire);
        }
        Ok(())
    }

    /// Steps the machine with a pause, resume or end by `actor`, and records it (`kind`) as the
    /// machine decided: carried out, or refused with why (returned).
    fn control(
        &self,
        action: sightline_proto::ControlAction,
        event: Event,
        kind: Option<EventKind>,
        actor: &str,
        by_whom: &str,
    ) -> Result<(), &'static str> {
        // The reason is read under the same lock as the step, so the other side's action in
        // between cannot make the record say something that was not so.
        let now = self.identity.now_ms();
        let (effects, refused) = {
            let mut machine = self.lock();
            let effects = machine.step(now, event);
            let refused = effects.is_empty().then(|| why_refused(action, &machine.phase));
            (effects, refused)
        };
        if let Some(why) = refused {
            // A resume of a pause someone else made, a pause of a session that is not running:
            // evidence of pressing against another party's decision, so recorded, not dropped;
            // past a budget only counted, so one connection cannot flood the log.
            if let Some(kind) = kind
                && self.refused_controls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REFUSED_CONTROLS_RECORDED
            {
                self.emit(kind, Outcome::Failure, actor, format!("refused: {why}"));
            }
            return Err(why);
        }
        self.carry_out(effects, actor);
        if let Some(kind) = kind {
            self.emit(kind, Outcome::Success, actor, by_whom.into());
        }
        Ok(())
    }

    /// An administrator ends the session at once.
    pub fn kill(&self, admin: &str) {
        self.step(Event::Kill { admin: admin.to_owned() }, admin);
    }

    pub fn observer_joined(&self, viewer_id: u64, name: &str) {
        self.observers.lock().unwrap_or_else(|e| e.into_inner()).insert(viewer_id, name.to_owned());
        self.emit(EventKind::ObserverJoined, Outcome::Success, name, String::new());
        self.tell_agent(SessionEvent::ObserverJoined { name: name.to_owned() });
        self.step(Event::ObserverJoined, name);
    }

    pub fn observer_left(&self, viewer_id: u64) {
        let Some(name) = self.observers.lock().unwrap_or_else(|e| e.into_inner()).remove(&viewer_id) else { return };
        self.emit(EventKind::ObserverLeft, Outcome::Success, &name, String::new());
        if !self.is_ended() {
            self.tell_agent(SessionEvent::ObserverLeft { name: name.clone() });
        }
        self.step(Event::ObserverLeft, &name);
    }
}
