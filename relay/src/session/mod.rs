//! Live sessions: the IO edge around `core::session`.
//!
//! One session per endpoint at a time (`Sessions`). The relay's copy of the state machine decides;
//! this module feeds it events (operator, observer, admin, timers, the agent's signed decisions),
//! carries out its effects (tell the agent, pause the fan-out, publish the status to viewers) and
//! writes every transition to the event sink with the session's facts (id, ticket, reason,
//! device, the endpoint account the agent's hello named, operator, current levels, unattended)
//! and the acting party's own address: the endpoint's for the user's and the device's actions,
//! the operator's, an observer's, an admin's for a kill, a senior's for an approval, none for the
//! system.
//!
//! `LiveSession::open` takes a request the policy allowed (`sockets::viewer`): `session.start`,
//! with the segment's terms, is on disk and the recorder runs where required (`recorder`) before
//! the agent gets its `consent_request` (operator name, role, organisation, ticket, reason,
//! levels, deadline, terms, mask rules). Operator controls, elevation, observers, the admin kill,
//! lost sockets, a maintenance window closed early (re-read every second; five failed reads in a
//! row end the session too), idle and maximum duration all become machine events here and, as
//! `session` messages, on the agent. An end the agent's own clock decided (idle, maximum
//! duration) ends the session with the same reason and record as the relay's timers, with `agent`
//! as the actor; any other end an agent claims, and a request it declines (another session runs
//! there, or its screen source cannot apply the mask rules), ends it as declined by the endpoint.
//! Only the user lifts the user's pause: an operator's refused pause or resume is recorded
//! (outcome failure), the first `REFUSED_CONTROLS_RECORDED` one by one and the rest only counted
//! in `session.ended`, so one viewer cannot flood the log. At the end the fan-out is paused for
//! this session's id, so nothing more reaches viewers until the link's next session begins.
//!
//! Input passes `LiveSession::input` (`input`, the machine's `admit_input`) and nowhere else: it
//! reaches the agent only while control is granted and unexpired, the session is not paused, an
//! observer is present where the segment requires one, and no elevation prompt waits for the
//! user. Input the gate admits and chat lines from the operator's side are the activity the idle
//! timeout counts, on the relay and the agent alike. Refused input, and any input from an
//! observer's connection, is counted and reported at the end (`input.dropped`); the agent checks
//! again before it injects.
//!
//! The concepts beside the core live in their own files: `consent` (the agent's signed
//! decisions and a senior's approval of an elevation), `controls` (the user's bar, the
//! operator's controls, an admin's kill, observers), `input` (the input gate), `chat` (the chat
//! gate and delivery, R20 R24), `recorder` (the session's recording, R26..R28) and `slot` (the
//! sessions of one endpoint).

mod chat;
mod consent;
mod controls;
mod input;
mod moved;
mod recorder;
mod slot;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_core::recording::TimelineEntry;
use sightline_core::session::{Effect, Event, Levels, Phase, Session};
use sightline_proto::{
    ConsentRequest, EndReason, Level, OperatorInfo, RelayToAgent, SessionEvent, SessionPhase, SessionStatus,
    SessionSummary,
};
use tokio::sync::{broadcast, watch};

pub use controls::REFUSED_CONTROLS_RECORDED;
pub use moved::LostNode;
pub use slot::Sessions;

use crate::link::AgentLink;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::Identity;
use sightline_recording::{Recorder, Recordings};

/// How often deadlines (consent timeout, grant expiry, idle, maximum duration) are checked.
const TICK: Duration = Duration::from_millis(250);
/// Chat lines buffered per viewer.
const CHAT_BUFFER: usize = 64;

/// Who asked for the session, and why.
#[derive(Debug, Clone)]
pub struct Request {
    pub operator: OperatorInfo,
    pub ticket: String,
    pub reason: String,
    pub levels: Levels,
    /// Levels the segment allows (elevation cannot go beyond them).
    pub allowed: Levels,
    pub source: Option<std::net::IpAddr>,
    /// The segment's mask rules, sent to the agent with the consent request (R33).
    pub masks: Vec<sightline_proto::mask::MaskRule>,
    /// The segment needs an open maintenance window (R3): the session ends when it closes, also
    /// when someone closes it early.
    pub window_required: bool,
    /// The help request (its id) this session answers, when the user asked for it (R2).
    pub help_request: Option<String>,
    /// That request's code, which the user was shown: their prompt names it.
    pub help_code: Option<String>,
}

/// How often a running session that needs a maintenance window reads it again (a window closed
/// early, on any node, ends the session within about this long).
const WINDOW_RECHECK_TICKS: u32 = 4;
/// Consecutive failed reads of the window after which the session ends (fail closed, but not on
/// one store hiccup).
const WINDOW_READ_FAILURES: u32 = 5;
/// How long one read of the window may take.
const WINDOW_READ_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("{0} already has a session running")]
    Busy(String),
    #[error("the consent receipt does not verify: {0}")]
    BadReceipt(String),
    #[error("the session has ended")]
    Ended,
    #[error("no elevation waits for a senior's approval in this session")]
    NothingToApprove,
    #[error("the pending elevation is for {pending}, not {approved}")]
    OtherElevation { pending: String, approved: String },
    #[error(transparent)]
    AuditUnavailable(#[from] sightline_audit::AuditUnavailable),
    #[error("this endpoint's sessions must be recorded and the recorder cannot start: {0}")]
    RecordingUnavailable(String),
}

/// A session between one operator and one endpoint, with its observers.
pub struct LiveSession {
    pub id: String,
    pub link: Arc<AgentLink>,
    /// The endpoint's sessions, this one among them while it runs.
    endpoint_sessions: Arc<Sessions>,
    pub request: Request,
    pub created_ms: u64,
    identity: Arc<Identity>,
    machine: Mutex<Session>,
    /// Observers by viewer connection id.
    observers: Mutex<BTreeMap<u64, String>>,
    status: watch::Sender<SessionStatus>,
    chat: broadcast::Sender<(String, String)>,
    /// Signatures of decisions recorded after the end (`consent.late`), each kept once.
    late_receipts: Mutex<Vec<String>>,
    /// Whether the endpoint already reported refusing input (R19): recorded once, whatever an
    /// agent sends.
    input_refused_reported: std::sync::atomic::AtomicBool,
    /// Whether the agent's refusal of a chat line was recorded (once per session, like input's).
    chat_refused_reported: std::sync::atomic::AtomicBool,
    /// The operator's pauses and resumes the machine refused (the first
    /// `REFUSED_CONTROLS_RECORDED` are recorded one by one).
    refused_controls: std::sync::atomic::AtomicU64,
    /// Each party's own network address, for the events they cause (R38): the operator's from
    /// their request, the user's and the device's from the agent's connection, admins' and
    /// seniors' and observers' from theirs when they act.
    addresses: Mutex<BTreeMap<String, std::net::IpAddr>>,
    /// The session's recorder, where the segment requires recording (set before consent is
    /// asked; a session that cannot have one does not start).
    recorder: std::sync::OnceLock<Arc<Recorder>>,
    /// How far the recording has come (chunks written, the last one's hash): published with
    /// the node's heartbeat, so a node that takes the session over can chain to it (R43).
    run_head: Mutex<Option<sightline_core::handover::RunHead>>,
    /// Whether the operator has a view of the session on this node: a session taken over from a
    /// lost node waits `RESUME_GRACE_MS` for them, then ends as "operator lost".
    operator_here: std::sync::atomic::AtomicBool,
    /// The lost node this session moved from, if it did (R43).
    moved_from: std::sync::OnceLock<String>,
    /// Set while this node takes the session over (R43): no viewer joins yet.
    arriving: std::sync::atomic::AtomicBool,
}

fn sorted(levels: &Levels) -> Vec<Level> {
    levels.iter().copied().collect()
}

impl LiveSession {
    /// Opens a session that policy allowed: the agent is asked for consent once the session's
    /// start is on disk (R41). Fails if the endpoint already has one, or the log cannot be written.
    pub async fn open(
        identity: Arc<Identity>,
        link: Arc<AgentLink>,
        endpoint_sessions: Arc<Sessions>,
        request: Request,
        obligations: sightline_core::policy::Obligations,
        recordings: &Arc<Recordings>,
    ) -> Result<Arc<LiveSession>, SessionError> {
        let now = identity.now_ms();
        let (machine, effects) = Session::new(now, obligations, request.allowed.clone(), request.levels.clone());
        let id = hex::encode(sightline_identity::random_bytes::<12>());
        let session = LiveSession::build(identity, link.clone(), endpoint_sessions.clone(), request, machine, id, now);
        if !endpoint_sessions.attach(session.clone()) {
            return Err(SessionError::Busy(link.info.name.clone()));
        }
        link.sessions_changed();
        let operator = session.request.operator.name.clone();
        // "Session start and parameters" (R38): the segment's terms this session runs under.
        let waiting = if obligations.unattended {
            "served unattended: nobody at the endpoint is asked"
        } else {
            "awaiting the user's consent"
        };
        let asked_by = match &session.request.help_request {
            Some(id) => format!("; answers help request {id}"),
            None => String::new(),
        };
        session.emit(
            EventKind::SessionStarted,
            Outcome::Success,
            &operator,
            format!("{waiting}{asked_by}; terms: {}", serde_json::to_string(&obligations).unwrap_or_default()),
        );
        if let Err(e) = session.identity.events_committed().await {
            session.step(Event::AuditUnavailable, "system");
            return Err(SessionError::AuditUnavailable(e));
        }
        // A new session on the link: the fan-out is the link's; what the last session left (a
        // pause at its end, its closed recorder) does not apply to this one.
        session.link.fanout.begin_session(&session.id);
        if !obligations.recording_required {
            session.link.fanout.clear_recorder();
        }
        // R26: where recording is required, the recorder runs before the user is even asked.
        if obligations.recording_required
            && let Err(why) = session.start_recording(recordings, None).await
        {
            session.emit(EventKind::RecordingUnavailable, Outcome::Failure, "system", why.clone());
            session.step(Event::RecorderFailed, "system");
            return Err(SessionError::RecordingUnavailable(why));
        }
        session.carry_out(effects, &operator);
        session.spawn_ticker();
        Ok(session)
    }

    /// The session's shared parts around its machine (not yet attached to the endpoint).
    fn build(
        identity: Arc<Identity>,
        link: Arc<AgentLink>,
        endpoint_sessions: Arc<Sessions>,
        request: Request,
        machine: Session,
        id: String,
        created_ms: u64,
    ) -> Arc<LiveSession> {
        let status = SessionStatus {
            session_id: id.clone(),
            agent_id: link.info.agent_id.clone(),
            phase: SessionPhase::AwaitingConsent,
            operator: request.operator.name.clone(),
            ticket: request.ticket.clone(),
            reason: request.reason.clone(),
            granted: Vec::new(),
            pending_elevation: Vec::new(),
            paused_by: None,
            observers: Vec::new(),
            grant_expires_ms: None,
            consent_deadline_ms: None,
            end_reason: None,
            observing: false,
            recording: false,
            ending: None,
        };
        let session = Arc::new(LiveSession {
            id,
            link: link.clone(),
            endpoint_sessions,
            request,
            created_ms,
            identity,
            machine: Mutex::new(machine),
            observers: Mutex::new(BTreeMap::new()),
            status: watch::channel(status).0,
            chat: broadcast::channel(CHAT_BUFFER).0,
            late_receipts: Mutex::new(Vec::new()),
            input_refused_reported: false.into(),
            chat_refused_reported: false.into(),
            refused_controls: 0.into(),
            addresses: Mutex::new(BTreeMap::new()),
            recorder: std::sync::OnceLock::new(),
            run_head: Mutex::new(None),
            operator_here: false.into(),
            moved_from: std::sync::OnceLock::new(),
            arriving: false.into(),
        });
        {
            let mut addresses = session.addresses.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(ip) = session.request.source {
                addresses.insert(session.request.operator.name.clone(), ip);
            }
            if let Some(ip) = link.address {
                addresses.insert(format!("user@{}", link.info.name), ip);
                addresses.insert(format!("device:{}", link.info.agent_id), ip);
            }
        }
        session
    }

    /// Runs the session's clocks (deadlines, the recorder's chunks, the maintenance window)
    /// until it ends.
    fn spawn_ticker(self: &Arc<Self>) {
        let ticker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            let (mut ticks, mut failed_reads) = (0u32, 0u32);
            loop {
                tick.tick().await;
                let Some(session) = ticker.upgrade() else { break };
                if session.is_ended() {
                    break;
                }
                session.step(Event::Tick, "system");
                if let Some(recorder) = session.recorder.get() {
                    recorder.tick();
                }
                ticks += 1;
                if session.request.window_required && ticks.is_multiple_of(WINDOW_RECHECK_TICKS) {
                    session.recheck_window(&mut failed_reads).await;
                }
            }
        });
    }

    /// Reads the device's maintenance window again: closed early (by an admin, on any node), the
    /// session ends; unreadable several times in a row, too.
    async fn recheck_window(&self, failed_reads: &mut u32) {
        let now = self.identity.now_ms();
        // Bounded, so a slow store delays none of the session's other deadlines (the read runs in
        // the session's tick loop); a read that times out counts as failed.
        let read = tokio::time::timeout(WINDOW_READ_TIMEOUT, self.identity.window_until(&self.link.info.agent_id, now))
            .await
            .unwrap_or_else(|_| Err(sightline_store::StoreError::Unavailable("no answer within 500 ms".into()).into()));
        match read {
            Ok(Some(_)) => *failed_reads = 0,
            Ok(None) => {
                self.step(Event::WindowClosed, "system");
            }
            Err(e) => {
                *failed_reads += 1;
                tracing::warn!(session = %self.id, error = %e, failed = *failed_reads, "cannot read the maintenance window");
                if *failed_reads >= WINDOW_READ_FAILURES {
                    self.step(Event::WindowClosed, "system");
                }
            }
        }
    }

    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.subscribe()
    }

    pub fn chat(&self) -> broadcast::Receiver<(String, String)> {
        self.chat.subscribe()
    }

    pub fn is_ended(&self) -> bool {
        self.lock().is_ended()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Session> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The facts every event of this session carries (R4, R10).
    fn facts(&self) -> sightline_audit::events::SessionFacts {
        let (levels, unattended) = {
            let m = self.lock();
            let levels = match &m.phase {
                Phase::AwaitingConsent { requested, .. } => sorted(requested),
                _ => sorted(m.granted()),
            };
            (levels, m.obligations.unattended)
        };
        sightline_audit::events::SessionFacts {
            session_id: self.id.clone(),
            ticket: self.request.ticket.clone(),
            reason: self.request.reason.clone(),
            device_id: self.link.info.agent_id.clone(),
            device: self.link.info.name.clone(),
            endpoint_user: self.link.info.user.clone(),
            operator: self.request.operator.name.clone(),
            levels,
            unattended,
        }
    }

    /// Writes a session event (never while the machine is locked), with the actor's own address
    /// (none for the system).
    pub fn emit(&self, kind: EventKind, outcome: Outcome, actor: &str, detail: String) {
        let source = self.addresses.lock().unwrap_or_else(|e| e.into_inner()).get(actor).copied();
        self.emit_from(kind, outcome, actor, source, detail);
    }

    /// Records the path the endpoint's media takes to the relay (R1): the relay's own view, from
    /// its side of the connection, so no claim of the agent's is needed.
    pub fn media_path(&self, transport: &str, from: Option<std::net::SocketAddr>) {
        let detail = sightline_audit::events::media_path_detail(transport, from);
        self.emit_from(EventKind::SessionMediaPath, Outcome::Success, "system", from.map(|f| f.ip()), detail);
    }

    fn emit_from(
        &self,
        kind: EventKind,
        outcome: Outcome,
        actor: &str,
        source: Option<std::net::IpAddr>,
        detail: String,
    ) {
        // The timeline holds the session's events; the chunk events are the recording itself.
        if let Some(recorder) = self.recorder.get()
            && kind != EventKind::RecordingChunk
        {
            recorder.note(TimelineEntry::Event {
                ts_ms: self.identity.now_ms(),
                kind: kind.name(),
                outcome: outcome.as_str().to_owned(),
                actor: actor.to_owned(),
                detail: detail.clone(),
            });
        }
        self.identity.emit_session(kind, outcome, actor, self.facts(), source, detail);
    }

    /// Remembers where a party acting on this session connects from (admins, seniors, observers).
    pub fn note_address(&self, actor: &str, ip: std::net::IpAddr) {
        self.addresses.lock().unwrap_or_else(|e| e.into_inner()).insert(actor.to_owned(), ip);
    }

    /// The agent declined this request (it runs another session): it ends with the agent's
    /// reason, cut to a sane length (the agent is not trusted with the size of our records).
    pub fn declined_by_endpoint(&self, reason: &str) {
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(200).collect();
        self.step(Event::EndedElsewhere(EndReason::DeclinedByEndpoint(reason)), "agent");
    }

    /// Feeds one event to the machine and carries out what it decides.
    pub fn step(&self, event: Event, actor: &str) -> Vec<Effect> {
        let now = self.identity.now_ms();
        let effects = self.lock().step(now, event);
        self.carry_out(effects.clone(), actor);
        effects
    }

    /// Tells the agent about an event that did not start there.
    pub fn tell_agent(&self, event: SessionEvent) {
        self.link.send(RelayToAgent::Session { session_id: self.id.clone(), event });
    }

    fn carry_out(&self, effects: Vec<Effect>, actor: &str) {
        for effect in effects {
            match effect {
                Effect::AskConsent { levels, deadline_ms } => {
                    let terms = self.lock().obligations;
                    let request = ConsentRequest {
                        session_id: self.id.clone(),
                        operator: self.request.operator.clone(),
                        ticket: self.request.ticket.clone(),
                        reason: self.request.reason.clone(),
                        levels: sorted(&levels),
                        deadline_ms,
                        terms,
                        masks: self.request.masks.clone(),
                        help_code: self.request.help_code.clone(),
                    };
                    self.emit(
                        EventKind::ConsentAsked,
                        Outcome::Success,
                        actor,
                        format!("levels: {}", sightline_proto::levels_text(&request.levels)),
                    );
                    self.link.send(RelayToAgent::ConsentRequest { request: Box::new(request) });
                    // The prompt's session now exists on the agent: it may show the recorder's state.
                    if self.recorder.get().is_some_and(|r| r.writing()) {
                        self.tell_agent(SessionEvent::Recording { on: true });
                    }
                }
                Effect::StartMedia => {}
                Effect::PauseMedia => self.link.fanout.set_paused(&self.id, true),
                Effect::ResumeMedia => {
                    self.link.fanout.set_paused(&self.id, false);
                    self.link.fanout.request_keyframe();
                }
                // The agent mirrors the machine and releases its own keys; the relay holds none.
                Effect::ReleaseInput | Effect::StopMedia => {}
                Effect::Granted { levels } => {
                    self.emit(
                        EventKind::SessionGranted,
                        Outcome::Success,
                        actor,
                        format!("levels: {}", sightline_proto::levels_text(&sorted(&levels))),
                    );
                    // Idempotent on the agent: it confirmed the user's part already.
                    self.tell_agent(SessionEvent::Granted { levels: sorted(&levels) });
                }
                Effect::AskUserToElevate { levels } => {
                    self.emit(
                        EventKind::ElevationRequested,
                        Outcome::Success,
                        actor,
                        format!("levels: {}", sightline_proto::levels_text(&sorted(&levels))),
                    );
                    self.link
                        .send(RelayToAgent::ElevationRequest { session_id: self.id.clone(), levels: sorted(&levels) });
                }
                Effect::AskSeniorToApprove { .. } => {}
                // The viewers hear it through the status; the agent's own machine warns its user.
                Effect::EndingSoon(ends) => self.emit(
                    EventKind::SessionEndingSoon,
                    Outcome::Success,
                    actor,
                    format!("ends at {} (Unix ms): {}", ends.at_ms, ends.because.describe()),
                ),
                Effect::ElevationExpired { levels } => self.emit(
                    EventKind::ElevationExpired,
                    Outcome::Failure,
                    actor,
                    format!("levels: {}; not completed in time", sightline_proto::levels_text(&sorted(&levels))),
                ),
                Effect::Ended(reason) => {
                    if reason == EndReason::ConsentTimedOut {
                        self.emit(
                            EventKind::ConsentTimedOut,
                            Outcome::Failure,
                            actor,
                            "no answer before the deadline".into(),
                        );
                    }
                    let dropped = self.lock().dropped_input;
                    let mut detail = format!("{}; input events dropped: {dropped}", reason.describe());
                    let refused = self.refused_controls.load(std::sync::atomic::Ordering::Relaxed);
                    if refused > REFUSED_CONTROLS_RECORDED {
                        let unrecorded = refused - REFUSED_CONTROLS_RECORDED;
                        detail.push_str(&format!("; refused pauses and resumes not recorded one by one: {unrecorded}"));
                    }
                    self.emit(EventKind::SessionEnded, Outcome::Success, actor, detail);
                    crate::metrics::session_ended(&reason);
                    if dropped > 0 {
                        self.emit(EventKind::InputDropped, Outcome::Failure, actor, format!("{dropped} input events"));
                    }
                    let refused_chat = self.lock().dropped_chat;
                    if refused_chat > 0 {
                        self.emit(
                            EventKind::ChatRefused,
                            Outcome::Failure,
                            actor,
                            format!(
                                "{refused_chat} chat lines: chat was not granted in this session, or it was not running"
                            ),
                        );
                    }
                    // Nothing more reaches viewers: paused until the next session on the link
                    // starts, and a closed recorder stays in front of them (`sfu::Fanout`).
                    self.link.fanout.set_paused(&self.id, true);
                    if let Some(recorder) = self.recorder.get() {
                        recorder.close(&reason.describe());
                    }
                    self.tell_agent(SessionEvent::Ended { reason });
                    self.endpoint_sessions.detach(&self.id);
                }
            }
        }
        self.publish_status();
    }

    fn publish_status(&self) {
        let m = self.lock();
        let observers: Vec<String> =
            self.observers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let (phase, paused_by, end_reason, deadline) = match &m.phase {
            Phase::AwaitingConsent { deadline_ms, .. } => {
                (SessionPhase::AwaitingConsent, None, None, Some(*deadline_ms))
            }
            Phase::Active => (SessionPhase::Active, None, None, None),
            Phase::Paused { by } => (SessionPhase::Paused, Some(*by), None, None),
            Phase::Ended(reason) => (SessionPhase::Ended, None, Some(reason.clone()), None),
        };
        let pending = m.elevation.as_ref().map(|e| sorted(&e.levels)).unwrap_or_default();
        let granted = sorted(m.granted());
        let expires = m.grant_expires_ms();
        let ending = m.ending();
        drop(m);
        // Called after every tick: viewers and session lists hear only of real changes.
        let changed = self.status.send_if_modified(|s| {
            let before = s.clone();
            s.phase = phase;
            s.paused_by = paused_by;
            s.end_reason = end_reason;
            s.consent_deadline_ms = deadline;
            s.granted = granted;
            s.pending_elevation = pending;
            s.grant_expires_ms = expires;
            s.observers = observers;
            s.ending = ending;
            *s != before
        });
        if changed {
            self.link.sessions_changed();
        }
    }

    /// The session as a list shows it.
    pub fn summary(&self) -> SessionSummary {
        let s = self.status.borrow().clone();
        let needs_senior = self.lock().obligations.elevation_needs_senior;
        SessionSummary {
            session_id: self.id.clone(),
            agent_id: self.link.info.agent_id.clone(),
            agent_name: self.link.info.name.clone(),
            segment: self.link.info.segment.clone(),
            operator: s.operator,
            ticket: s.ticket,
            reason: s.reason,
            phase: s.phase,
            granted: s.granted,
            pending_elevation: s.pending_elevation,
            needs_senior,
            observers: s.observers,
            started_ms: self.created_ms,
            node: String::new(),
        }
    }
}
