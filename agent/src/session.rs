//! The endpoint's half of a session: the same `core::session` machine the relay runs, driven by
//! the user (front end), the relay's messages and local time, and the second gate for input.
//!
//! The agent does not trust the relay to have checked: input is injected only when this machine
//! also says control is granted, unexpired and not paused, and media is published only while a
//! session the user consented to is running.
//!
//! The user's answers become receipts signed with the device key. After Allow the window turns
//! into the always-on-top session bar (who, levels, observers, recording, chat, Pause/Resume,
//! End). With `active_confirmation` the session runs only while the user can see the bar
//! (`bar_visibility`): whenever it is hidden, right after consent or a resume too, the agent
//! pauses the session as the user's own pause, which only the user lifts. A terminal cannot show
//! that the session is watched, so such requests are refused at once there. Ends this side's
//! clock decides (idle, maximum duration) are sent to the relay, which records them as its own.

use std::sync::Arc;

use sightline_core::session::{Effect, Event, Levels, Phase, Session};
use sightline_proto::channel::{ChannelMessage, Input};
use sightline_proto::{
    AgentToRelay, ConsentKind, ConsentReceipt, ConsentRequest, Decision, EndReason, Level, Party, ResumeClaim,
    SessionEvent,
};

use crate::device::Device;
use crate::frontend::{Frontend, FrontendEvent, FrontendEvents};
use crate::input::Injector;
use crate::prompt::{UiCommand, UiReport, consent_lines};

/// How long a session waits, suspended, for another relay node to take it over (R43).
const RESUME_GRACE: std::time::Duration = std::time::Duration::from_millis(sightline_core::handover::RESUME_GRACE_MS);

/// What the connection must do for the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Signal(AgentToRelay),
    Channel(ChannelMessage),
    PauseMedia,
    ResumeMedia,
    StopMedia,
}

/// A session on this endpoint, from the consent prompt to its end.
pub struct EndpointSession {
    pub id: String,
    request: ConsentRequest,
    machine: Session,
    frontend: Option<Frontend>,
    injector: Option<Injector>,
    observers: Vec<String>,
    /// Whether the relay confirms its recorder is writing (R9): the bar never claims more.
    recording: bool,
    device: Arc<Device>,
    /// Input injected, for the log at the end (the machine counts what it refused).
    injected: u64,
    /// Whether the user cannot see the session bar, as the window last reported. Starts hidden:
    /// until the window says it is on screen, active confirmation does not let a session run.
    bar_hidden: bool,
    /// This agent runs unattended (nobody at the screen to ask, R2).
    unattended: bool,
    /// The receipts of what the user allowed (the consent, then each elevation): a relay node
    /// that takes the session over after its node was lost checks them (R43).
    allowed: Vec<ConsentReceipt>,
    /// Since when the session waits for another relay node to take it over: nothing is
    /// injected and nothing captured meanwhile, and past `RESUME_GRACE_MS` it ends here.
    suspended_since: Option<std::time::Instant>,
}

impl std::fmt::Debug for EndpointSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSession").field("id", &self.id).field("phase", &self.machine.phase).finish()
    }
}

impl EndpointSession {
    /// Asks the user. Without anyone to ask, the request is refused at once (a signed `closed`).
    ///
    /// An unattended agent asks nobody: it takes up a request the relay serves unattended with
    /// a signed `unattended` receipt, and refuses every other (R2). Both must agree: an attended
    /// agent never takes up an unattended request, and an unattended one never pretends a user
    /// consented.
    pub async fn ask(
        request: ConsentRequest,
        device: Arc<Device>,
        events: FrontendEvents,
        unattended: bool,
    ) -> (EndpointSession, Vec<Action>) {
        let now = crate::now_ms();
        let requested: Levels = request.levels.iter().copied().collect();
        // The relay bounds elevation by the segment; here any level may be asked later.
        let allowed: Levels = Level::ALL.into_iter().collect();
        let (mut machine, _ask) = Session::new(now, request.terms, allowed, requested);
        // The relay's deadline, not ours: both sides time out at the same instant.
        if let Phase::AwaitingConsent { deadline_ms, .. } = &mut machine.phase {
            *deadline_ms = request.deadline_ms;
        }
        tracing::info!(session = %request.session_id, "consent prompt shown: {}", consent_lines(&request).join(" | "));
        let mut session = EndpointSession {
            id: request.session_id.clone(),
            request,
            machine,
            frontend: None,
            injector: None,
            observers: Vec::new(),
            recording: false,
            device,
            injected: 0,
            bar_hidden: true,
            unattended,
            allowed: Vec::new(),
            suspended_since: None,
        };
        if unattended || session.request.terms.unattended {
            // Checked here too, not only at the relay: an unattended session must be recorded and
            // end with its maintenance window (R2; or with the hours, if they end first).
            let terms = &session.request.terms;
            let held = terms.recording_required && terms.ends_at.is_some();
            let actions = if unattended && terms.unattended && held {
                tracing::info!(session = %session.id, "unattended: taking up the request without asking");
                let levels = session.request.levels.clone();
                session.decide(ConsentKind::Unattended, Decision::Allow, levels).await
            } else {
                tracing::warn!(
                    session = %session.id,
                    agent_unattended = unattended,
                    request_unattended = session.request.terms.unattended,
                    recorded_and_bounded = held,
                    "refusing: the request and this agent disagree on whether anybody is asked, or an unattended session would run unrecorded or outside a maintenance window"
                );
                let kind = if unattended { ConsentKind::Unattended } else { ConsentKind::Session };
                session.decide(kind, Decision::Closed, Vec::new()).await
            };
            return (session, actions);
        }
        match Frontend::open(events, &session.id) {
            Ok(frontend) if session.request.terms.active_confirmation && frontend.is_terminal() => {
                // A terminal cannot show that the session is watched: refused at once, with the
                // reason on the terminal, rather than a session that could never run.
                tracing::warn!(session = %session.id, "active confirmation needs the session window: refusing");
                println!("A remote support request was refused: this device's policy needs the session window.");
                let actions = session.decide(ConsentKind::Session, Decision::Closed, Vec::new()).await;
                (session, actions)
            }
            Ok(mut frontend) => {
                frontend.send(&UiCommand::Ask { request: Box::new(session.request.clone()) }).await;
                session.frontend = Some(frontend);
                (session, Vec::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "refusing the session request");
                let actions = session.decide(ConsentKind::Session, Decision::Closed, Vec::new()).await;
                (session, actions)
            }
        }
    }

    pub fn is_ended(&self) -> bool {
        self.machine.is_ended()
    }

    /// Whether the user consented and the session runs (media may flow).
    pub fn consented(&self) -> bool {
        matches!(self.machine.phase, Phase::Active | Phase::Paused { .. })
    }

    /// Who the session's pictures are for, from the request the user consented to: the segment's
    /// masks, whether the relay records, and the operator the watermark names.
    pub fn audiences(&self) -> crate::publisher::Audiences {
        let operator = &self.request.operator;
        crate::publisher::Audiences {
            masks: self.request.masks.clone(),
            recorded: self.request.terms.recording_required,
            session_id: self.request.session_id.clone(),
            operator: format!("{} ({})", operator.display_name, operator.name),
        }
    }

    pub fn is_paused(&self) -> bool {
        matches!(self.machine.phase, Phase::Paused { .. })
    }

    fn receipt(&self, kind: ConsentKind, decision: Decision, levels: Vec<Level>) -> ConsentReceipt {
        self.device.sign_receipt(ConsentReceipt {
            kind,
            session_id: self.id.clone(),
            device_id: String::new(),
            operator: self.request.operator.name.clone(),
            ticket: self.request.ticket.clone(),
            endpoint_user: crate::endpoint_user(),
            decision,
            levels,
            time_ms: crate::now_ms(),
            signature: String::new(),
        })
    }

    /// Records a decision of the user: signed receipt to the relay, and the local machine.
    async fn decide(&mut self, kind: ConsentKind, decision: Decision, levels: Vec<Level>) -> Vec<Action> {
        let levels = if decision == Decision::Allow { levels } else { Vec::new() };
        tracing::info!(session = %self.id, ?kind, ?decision, levels = %sightline_proto::levels_text(&levels), "user decided");
        let receipt = self.receipt(kind, decision, levels.clone());
        if decision == Decision::Allow {
            self.allowed.push(receipt.clone());
        }
        let mut actions = vec![Action::Signal(AgentToRelay::Consent { receipt })];
        let set: Levels = levels.into_iter().collect();
        let event = match (kind, decision) {
            (ConsentKind::Session | ConsentKind::Unattended, Decision::Allow) => Event::ConsentAllowed { levels: set },
            (ConsentKind::Unattended, _) => Event::ConsentClosed,
            (ConsentKind::Session, Decision::Deny) => Event::ConsentDenied,
            (ConsentKind::Session, Decision::Closed) => Event::ConsentClosed,
            (ConsentKind::Session, Decision::TimedOut) => Event::EndedElsewhere(EndReason::ConsentTimedOut),
            (ConsentKind::Elevation, Decision::Allow) if !set.is_empty() => Event::ElevationConfirmed { levels: set },
            (ConsentKind::Elevation, _) => Event::ElevationRefused,
        };
        actions.extend(self.step(event).await);
        actions
    }

    /// Applies an event and carries out the effects that are the endpoint's.
    async fn step(&mut self, event: Event) -> Vec<Action> {
        let effects = self.machine.step(crate::now_ms(), event);
        let mut actions = Vec::new();
        let mut status_changed = !effects.is_empty();
        for effect in effects {
            match effect {
                Effect::PauseMedia => actions.push(Action::PauseMedia),
                Effect::ResumeMedia => actions.push(Action::ResumeMedia),
                Effect::StopMedia => actions.push(Action::StopMedia),
                Effect::ReleaseInput => self.release_input(),
                Effect::AskUserToElevate { levels } => {
                    if let Some(f) = self.frontend.as_mut() {
                        f.send(&UiCommand::Elevate { levels: levels.into_iter().collect() }).await;
                    }
                }
                Effect::ElevationExpired { .. } => {
                    tracing::info!(session = %self.id, "the request for more access lapsed");
                    if let Some(f) = self.frontend.as_mut() {
                        f.send(&UiCommand::ElevationClosed).await;
                    }
                }
                Effect::Ended(reason) => {
                    self.release_input();
                    self.injector = None;
                    actions.push(Action::StopMedia);
                    // The machine's "agent lost" is, seen from here, the relay gone.
                    let text = if reason == EndReason::AgentLost {
                        "the connection to the relay was lost".to_owned()
                    } else {
                        reason.describe()
                    };
                    tracing::info!(session = %self.id, reason = %text, injected = self.injected, dropped = self.machine.dropped_input, "session ended");
                    if let Some(mut f) = self.frontend.take() {
                        f.send(&UiCommand::Ended { reason: text }).await;
                        f.finish();
                    }
                    status_changed = false;
                }
                Effect::EndingSoon(ends) => {
                    tracing::info!(session = %self.id, at_ms = ends.at_ms, because = ends.because.describe(), "the session ends soon");
                }
                Effect::Granted { .. }
                | Effect::StartMedia
                | Effect::AskConsent { .. }
                | Effect::AskSeniorToApprove { .. } => {}
            }
        }
        if status_changed {
            self.show_status().await;
        }
        actions
    }

    async fn show_status(&mut self) {
        if self.machine.is_ended() || matches!(self.machine.phase, Phase::AwaitingConsent { .. }) {
            return;
        }
        let paused_by = match self.machine.phase {
            Phase::Paused { by } => Some(by),
            _ => None,
        };
        let cmd = UiCommand::Status {
            granted: self.machine.granted().iter().copied().collect(),
            observers: self.observers.clone(),
            paused_by,
            recording: self.recording && self.suspended_since.is_none(),
            ending: self.machine.ending(),
            reconnecting: self.suspended_since.is_some(),
        };
        if let Some(f) = self.frontend.as_mut() {
            f.send(&cmd).await;
        }
    }

    fn release_input(&mut self) {
        if let Some(injector) = self.injector.as_mut()
            && let Err(e) = injector.release_all()
        {
            tracing::warn!(error = %e, "cannot release held keys");
        }
    }

    /// Something the user did in the window or on the terminal.
    pub async fn on_frontend(&mut self, event: FrontendEvent) -> Vec<Action> {
        let awaiting = matches!(self.machine.phase, Phase::AwaitingConsent { .. });
        let report = match event {
            FrontendEvent::Gone if awaiting => {
                return self.decide(ConsentKind::Session, Decision::Closed, Vec::new()).await;
            }
            FrontendEvent::Gone => {
                // Without the bar the user could not pause or end: the session cannot go on.
                tracing::warn!(session = %self.id, "the session bar is gone: ending the session");
                self.frontend = None;
                return self.user(SessionEvent::End { by: Party::User }, Event::End { by: Party::User }).await;
            }
            FrontendEvent::Report(report) => report,
        };
        let mut actions = match report {
            UiReport::Decision { decision, levels } if awaiting => {
                self.decide(ConsentKind::Session, decision, levels).await
            }
            UiReport::ElevationDecision { decision, levels } if self.machine.elevation.is_some() => {
                self.decide(ConsentKind::Elevation, decision, levels).await
            }
            UiReport::Pause => {
                self.user(SessionEvent::Pause { by: Party::User }, Event::Pause { by: Party::User }).await
            }
            UiReport::Resume => {
                self.user(SessionEvent::Resume { by: Party::User }, Event::Resume { by: Party::User }).await
            }
            UiReport::End => self.user(SessionEvent::End { by: Party::User }, Event::End { by: Party::User }).await,
            UiReport::Hidden { hidden } => {
                self.bar_hidden = hidden;
                Vec::new()
            }
            // The bar offers no chat box without chat granted (R20); a line that comes anyway
            // (a race with the grant's change) is not sent.
            UiReport::Chat { text } if self.machine.admit_chat() => {
                if let Some(f) = self.frontend.as_mut() {
                    f.send(&UiCommand::Chat { from: "you".into(), text: text.clone() }).await;
                }
                vec![Action::Channel(ChannelMessage::Chat { from: String::new(), text })]
            }
            // Typed on a terminal, or raced with a change of the grant: the user is told.
            UiReport::Chat { text } => {
                if let Some(f) = self.frontend.as_mut() {
                    let text = format!("{text} (chat is not granted in this session)");
                    f.send(&UiCommand::Chat { from: "not sent".into(), text }).await;
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        actions.extend(self.confirm_visible().await);
        actions
    }

    /// Active confirmation (R8): in segments that ask for it, a session runs only while the user
    /// can see the session bar; hiding, minimising or pushing it off screen pauses it (as the
    /// user's own pause, so only the user lifts it), and so does running on while hidden after a
    /// consent or a resume.
    async fn confirm_visible(&mut self) -> Vec<Action> {
        if !self.request.terms.active_confirmation || !self.bar_hidden || self.machine.phase != Phase::Active {
            return Vec::new();
        }
        tracing::info!(session = %self.id, "session bar hidden: pausing (active confirmation)");
        self.user(SessionEvent::Pause { by: Party::User }, Event::Pause { by: Party::User }).await
    }

    /// A user action: applied here and reported to the relay if the machine accepted it.
    async fn user(&mut self, wire: SessionEvent, event: Event) -> Vec<Action> {
        let before = self.machine.phase.clone();
        let mut actions = self.step(event).await;
        if self.machine.phase != before {
            actions.insert(0, Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event: wire }));
        }
        actions
    }

    /// The operator asks for more levels.
    pub async fn on_elevation_request(&mut self, levels: Vec<Level>) -> Vec<Action> {
        let mut actions = self.step(Event::ElevationRequested { levels: levels.into_iter().collect() }).await;
        if self.unattended {
            // Nobody to confirm more access: refused at once, not left to lapse.
            actions.extend(self.decide(ConsentKind::Elevation, Decision::Closed, Vec::new()).await);
        }
        actions
    }

    /// Something happened at the relay (operator, observer, admin, relay timers).
    pub async fn on_relay(&mut self, event: SessionEvent) -> Vec<Action> {
        let event = match event {
            SessionEvent::Recording { on } => {
                self.recording = on;
                self.show_status().await;
                return Vec::new();
            }
            SessionEvent::Pause { by } => Event::Pause { by },
            SessionEvent::Resume { by } => Event::Resume { by },
            SessionEvent::End { by } => Event::End { by },
            // The relay completed an elevation (the user confirmed here; a senior approved there).
            SessionEvent::Granted { .. } => Event::SeniorApproved,
            SessionEvent::ObserverJoined { name } => {
                self.observers.push(name);
                Event::ObserverJoined
            }
            SessionEvent::ObserverLeft { name } => {
                if let Some(i) = self.observers.iter().position(|n| *n == name) {
                    self.observers.remove(i);
                }
                Event::ObserverLeft
            }
            SessionEvent::Ended { reason } => Event::EndedElsewhere(reason),
            SessionEvent::InputRefused | SessionEvent::ChatRefused => {
                tracing::warn!(session = %self.id, "the relay sent an event only the endpoint sends; ignored");
                return Vec::new();
            }
        };
        let mut actions = self.step(event).await;
        // Observer changes have no effect on the machine's output but show in the bar.
        if actions.is_empty() {
            self.show_status().await;
        }
        actions.retain(|a| !matches!(a, Action::Signal(_)));
        // An operator's resume does not bring a session back to life behind a hidden bar.
        actions.extend(self.confirm_visible().await);
        actions
    }

    /// Input from the relay's data channel: injected only if this side agrees too (R19). The
    /// first input this side refuses in a session is reported to the relay: the two gates
    /// disagreed, and the record should say so (later ones are counted, for the log at the end).
    pub fn on_input(&mut self, input: &Input) -> Vec<Action> {
        if self.suspended_since.is_some() {
            self.machine.dropped_input += 1;
            return Vec::new();
        }
        if !self.machine.admit_input(crate::now_ms()) {
            if self.machine.dropped_input > 1 {
                return Vec::new();
            }
            tracing::warn!(session = %self.id, "input refused: this endpoint does not allow it now (R19); told the relay");
            let event = SessionEvent::InputRefused;
            return vec![Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event })];
        }
        if self.injector.is_none() {
            match Injector::open() {
                Ok(injector) => self.injector = Some(injector),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot inject input");
                    return Vec::new();
                }
            }
        }
        if let Some(injector) = self.injector.as_mut() {
            match injector.inject(input) {
                Ok(()) => self.injected += 1,
                Err(e) => tracing::warn!(error = %e, "input injection failed"),
            }
        }
        Vec::new()
    }

    /// A chat line from the operator's side (operator or observer): shown only if this side agrees
    /// that chat is granted (R20, the relay checked first), and then activity, as at the relay
    /// (`core::session::Event::OperatorActivity`). Every line refused is reported: the relay's
    /// delivery report already told the sender it arrived, and the two gates disagreed.
    pub async fn on_operator_chat(&mut self, from: String, text: String) -> Vec<Action> {
        if !self.machine.admit_chat() {
            tracing::warn!(session = %self.id, "chat line refused: chat is not granted here now (R20); told the relay");
            let event = SessionEvent::ChatRefused;
            return vec![Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event })];
        }
        self.machine.step(crate::now_ms(), Event::OperatorActivity);
        self.on_chat(from, text).await;
        Vec::new()
    }

    /// Shows a chat line in the bar.
    pub async fn on_chat(&mut self, from: String, text: String) {
        if let Some(f) = self.frontend.as_mut() {
            f.send(&UiCommand::Chat { from, text }).await;
        }
    }

    /// Local deadlines: consent timeout (a signed `timed_out`), grant expiry, idle, duration,
    /// and a suspension no relay node ended in time.
    pub async fn tick(&mut self) -> Vec<Action> {
        if self.suspended_since.is_some_and(|since| since.elapsed() >= RESUME_GRACE) {
            tracing::warn!(session = %self.id, "no relay node took the session over in time: ending it");
            self.suspended_since = None;
            let why = format!("no relay node took the session over within {} s", RESUME_GRACE.as_secs());
            let event = SessionEvent::Ended { reason: EndReason::NodeLost(why.clone()) };
            let mut actions = vec![Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event })];
            actions.extend(self.step(Event::EndedElsewhere(EndReason::NodeLost(why))).await);
            return actions;
        }
        if let Phase::AwaitingConsent { deadline_ms, .. } = self.machine.phase
            && crate::now_ms() >= deadline_ms
        {
            return self.decide(ConsentKind::Session, Decision::TimedOut, Vec::new()).await;
        }
        let was_ended = self.is_ended();
        let mut actions = self.step(Event::Tick).await;
        // An end this side's clock decided (idle, maximum duration) is told to the relay, which
        // records it as the same end its own timers would have (issue 12: one account of an end).
        if let (false, Phase::Ended(reason)) = (was_ended, &self.machine.phase) {
            let event = SessionEvent::Ended { reason: reason.clone() };
            actions.insert(0, Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event }));
        }
        actions
    }

    /// The relay connection is gone: the session ends here at once (R22).
    pub async fn relay_lost(&mut self) -> Vec<Action> {
        self.suspended_since = None;
        self.step(Event::AgentLost).await
    }

    /// Whether the session may wait for another relay node to take it over (R43): the user
    /// consented and it runs. A request still waiting for the user ends with its relay.
    pub fn may_move(&self) -> bool {
        self.consented()
    }

    /// The relay node is gone and another may take the session over (R43): input is released
    /// at once and capture stops (R22 holds: nothing acts on the endpoint without a live relay);
    /// the bar says the session is reconnecting. The clock of the grace period starts at the
    /// first loss, not at each failed attempt.
    pub async fn suspend(&mut self) -> Vec<Action> {
        if self.suspended_since.is_none() {
            tracing::warn!(session = %self.id, "relay lost: the session is suspended while another relay node takes it over");
            self.suspended_since = Some(std::time::Instant::now());
        }
        self.release_input();
        self.injector = None;
        self.show_status().await;
        vec![Action::StopMedia]
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended_since.is_some()
    }

    /// What the next relay node is asked to take over, while the session is suspended.
    pub fn resume_claim(&self) -> Option<ResumeClaim> {
        self.suspended_since?;
        Some(ResumeClaim { session_id: self.id.clone(), receipts: self.allowed.clone() })
    }

    /// Another relay node runs the session now: it goes on.
    pub async fn resumed(&mut self) {
        if let Some(since) = self.suspended_since.take() {
            tracing::info!(session = %self.id, after_ms = since.elapsed().as_millis() as u64, "session resumed on another relay node");
            self.show_status().await;
        }
    }

    /// How the session ended here, for a relay that did not hear of it (it took the session over
    /// from a lost node meanwhile): the user's own end as the user's, any other as its reason.
    pub fn end_told_to_relay(&self) -> Option<Action> {
        let Phase::Ended(reason) = &self.machine.phase else { return None };
        let event = match reason {
            EndReason::EndedByUser => SessionEvent::End { by: Party::User },
            other => SessionEvent::Ended { reason: other.clone() },
        };
        Some(Action::Signal(AgentToRelay::Session { session_id: self.id.clone(), event }))
    }

    /// The relay node refused to take the session over: it ends here, with the reason.
    pub async fn resume_refused(&mut self, reason: &str) -> Vec<Action> {
        self.suspended_since = None;
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        self.step(Event::EndedElsewhere(EndReason::NodeLost(reason))).await
    }
}
