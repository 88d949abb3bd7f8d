//! Live sessions: the IO edge around `core::session`.
//!
//! One session per endpoint at a time. The relay's copy of the state machine decides; this module
//! feeds it events (operator, observer, admin, timers, the agent's signed decisions), carries out
//! its effects (tell the agent, pause the fan-out, publish the status to viewers) and writes every
//! transition to the event sink with the session id, ticket, device, operator and levels.
//! Input passes `admit_input` here and nowhere else: "input reaches the agent only while control
//! is granted, not expired and not paused".

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_core::recording::{ManifestBody, TimelineEntry};
use sightline_core::session::{Effect, Event, Levels, Phase, Session};
use sightline_proto::channel::{ChannelMessage, Input, MediaSeal};
use sightline_proto::{
    ConsentKind, ConsentReceipt, ConsentRequest, Decision, EndReason, Level, OperatorInfo, Party, RelayToAgent,
    SessionEvent, SessionPhase, SessionStatus, SessionSummary,
};
use tokio::sync::{broadcast, watch};

use crate::events::{EventKind, Outcome};
use crate::hub::AgentLink;
use crate::identity::Identity;
use crate::recording::{Recorder, RecorderNews, Recordings};

/// How often deadlines (consent timeout, grant expiry, idle, maximum duration) are checked.
const TICK: Duration = Duration::from_millis(250);
/// The `from` of a chat notice that a line did not reach the endpoint.
pub const NOT_DELIVERED: &str = "not delivered";
/// Why an operator's line was not delivered when the session has no chat (R20).
pub const CHAT_NOT_GRANTED: &str = "chat is not granted in this session";
/// Chat lines buffered per viewer.
const CHAT_BUFFER: usize = 64;
/// Late decisions (signed after the session ended) recorded per session; one prompt yields at
/// most a few genuine ones.
const MAX_LATE_RECEIPTS: usize = 4;

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
    AuditUnavailable(#[from] crate::audit::AuditUnavailable),
    #[error("this endpoint's sessions must be recorded and the recorder cannot start: {0}")]
    RecordingUnavailable(String),
}

/// A session between one operator and one endpoint, with its observers.
pub struct LiveSession {
    pub id: String,
    pub link: Arc<AgentLink>,
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
    /// Each party's own network address, for the events they cause (R38): the operator's from
    /// their request, the user's and the device's from the agent's connection, admins' and
    /// seniors' and observers' from theirs when they act.
    addresses: Mutex<BTreeMap<String, std::net::IpAddr>>,
    /// The session's recorder, where the segment requires recording (set before consent is
    /// asked; a session that cannot have one does not start).
    recorder: std::sync::OnceLock<Arc<Recorder>>,
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
        request: Request,
        obligations: sightline_core::policy::Obligations,
        recordings: &Arc<Recordings>,
    ) -> Result<Arc<LiveSession>, SessionError> {
        let now = identity.now_ms();
        let (machine, effects) = Session::new(now, obligations, request.allowed.clone(), request.levels.clone());
        let id = hex::encode(crate::identity::random_bytes::<12>());
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
            request,
            created_ms: now,
            identity,
            machine: Mutex::new(machine),
            observers: Mutex::new(BTreeMap::new()),
            status: watch::channel(status).0,
            chat: broadcast::channel(CHAT_BUFFER).0,
            late_receipts: Mutex::new(Vec::new()),
            input_refused_reported: false.into(),
            chat_refused_reported: false.into(),
            addresses: Mutex::new(BTreeMap::new()),
            recorder: std::sync::OnceLock::new(),
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
        if !link.attach_session(session.clone()) {
            return Err(SessionError::Busy(link.info.name.clone()));
        }
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
            && let Err(why) = session.start_recording(recordings).await
        {
            session.emit(EventKind::RecordingUnavailable, Outcome::Failure, "system", why.clone());
            session.step(Event::RecorderFailed, "system");
            return Err(SessionError::RecordingUnavailable(why));
        }
        session.carry_out(effects, &operator);
        let ticker = Arc::downgrade(&session);
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
        Ok(session)
    }

    /// Reads the device's maintenance window again: closed early (by an admin, on any node), the
    /// session ends; unreadable several times in a row, too.
    async fn recheck_window(&self, failed_reads: &mut u32) {
        let now = self.identity.now_ms();
        // Bounded, so a slow store delays none of the session's other deadlines (the read runs in
        // the session's tick loop); a read that times out counts as failed.
        let read = tokio::time::timeout(WINDOW_READ_TIMEOUT, self.identity.window_until(&self.link.info.agent_id, now))
            .await
            .unwrap_or_else(|_| Err(crate::store::StoreError::Unavailable("no answer within 500 ms".into()).into()));
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
    fn facts(&self) -> crate::events::SessionFacts {
        let (levels, unattended) = {
            let m = self.lock();
            let levels = match &m.phase {
                Phase::AwaitingConsent { requested, .. } => sorted(requested),
                _ => sorted(m.granted()),
            };
            (levels, m.obligations.unattended)
        };
        crate::events::SessionFacts {
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

    /// Opens the recording: its directory and signed opening line are on disk, the recorder is
    /// in front of the fan-out, and the agent is told (R9).
    async fn start_recording(self: &Arc<Self>, recordings: &Arc<Recordings>) -> Result<(), String> {
        let device_key = match self.identity.device(&self.link.info.agent_id).await {
            Ok(Some(device)) => device.public_key,
            Ok(None) => return Err("the device is not enrolled".into()),
            Err(e) => return Err(format!("cannot read the device's key: {e}")),
        };
        let open = ManifestBody::Open {
            recording_id: self.id.clone(),
            node: recordings.settings().node.clone(),
            segment: self.link.info.segment.clone(),
            session: Box::new(self.facts()),
            started_ms: self.identity.now_ms(),
            device_key,
        };
        let (recordings, id) = (recordings.clone(), self.id.clone());
        let starting = recordings.clone();
        let (recorder, mut news) = tokio::task::spawn_blocking(move || starting.start(&id, open))
            .await
            .map_err(|e| format!("recorder set-up panicked: {e}"))?
            .map_err(|e| format!("cannot write to the recordings directory: {e}"))?;
        // Findable by auditors from the start (R30): a recording nobody can find is no evidence.
        if let Err(e) = recordings.reindex(&self.id).await {
            recorder.close("the recordings index could not be written");
            return Err(format!("cannot index the recording: {e}"));
        }
        let _ = self.recorder.set(recorder.clone());
        self.link.fanout.set_recorder(recorder);
        self.emit(EventKind::RecordingStarted, Outcome::Success, "system", format!("recording {}", self.id));
        // The agent hears of it with the consent request (it has no session before that).
        self.status.send_modify(|s| s.recording = true);
        let session = self.clone();
        tokio::spawn(async move {
            while let Some(news) = news.recv().await {
                let closed = matches!(news, RecorderNews::Closed { .. });
                session.recorder_news(news);
                if closed && let Err(e) = recordings.reindex(&session.id).await {
                    tracing::error!(recording = %session.id, error = %e, "cannot mark the recording complete in the index");
                }
            }
        });
        Ok(())
    }

    /// Acts on what the recorder reports: chunk hashes into the audit log (R28), and a stalled
    /// or failed recorder pauses or ends the session (R26).
    fn recorder_news(&self, news: RecorderNews) {
        match news {
            RecorderNews::Chunk(c) => self.emit(
                EventKind::RecordingChunk,
                Outcome::Success,
                "system",
                format!("chunk {}: sha256 {}, {} bytes, {} frames", c.index, c.sha256, c.bytes, c.frames),
            ),
            RecorderNews::Stalled(why) => {
                self.emit(EventKind::RecordingStalled, Outcome::Failure, "system", why);
                self.set_recording(false);
                if !self.step(Event::RecorderStalled, "system").is_empty() {
                    self.tell_agent(SessionEvent::Pause { by: Party::System });
                }
            }
            RecorderNews::Recovered => {
                self.emit(EventKind::RecordingRecovered, Outcome::Success, "system", "writing again".into());
                self.set_recording(true);
                if !self.step(Event::RecorderRecovered, "system").is_empty() {
                    self.tell_agent(SessionEvent::Resume { by: Party::System });
                }
            }
            RecorderNews::Failed(why) => {
                self.emit(EventKind::RecordingFailed, Outcome::Failure, "system", why);
                self.set_recording(false);
                self.step(Event::RecorderFailed, "system");
            }
            RecorderNews::Closed { chunks } => {
                self.emit(EventKind::RecordingClosed, Outcome::Success, "system", format!("{chunks} chunks"));
            }
        }
    }

    /// What the viewers' status and the session bar say about recording (R9).
    fn set_recording(&self, on: bool) {
        self.status.send_if_modified(|s| std::mem::replace(&mut s.recording, on) != on);
        if !self.is_ended() {
            self.tell_agent(SessionEvent::Recording { on });
        }
    }

    /// The endpoint's signature over the frames it sent: kept with the recording.
    pub fn media_seal(&self, seal: MediaSeal) {
        if seal.session_id != self.id {
            tracing::warn!(session = %self.id, other = %seal.session_id, "media seal for another session; ignored");
            return;
        }
        if let Some(recorder) = self.recorder.get() {
            recorder.note(TimelineEntry::Seal { ts_ms: self.identity.now_ms(), seal });
        }
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
                    };
                    self.emit(
                        EventKind::ConsentAsked,
                        Outcome::Success,
                        actor,
                        format!("levels: {}", sightline_proto::levels_text(&request.levels)),
                    );
                    self.link.send(RelayToAgent::ConsentRequest { request });
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
                    self.emit(
                        EventKind::SessionEnded,
                        Outcome::Success,
                        actor,
                        format!("{}; input events dropped: {dropped}", reason.describe()),
                    );
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
                    self.link.detach_session(&self.id);
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
        }
    }

    /// A signed decision from the agent: verified against the device key and the session's own
    /// facts, kept, then applied. A receipt that does not verify is refused and changes nothing.
    pub async fn accept_receipt(&self, receipt: ConsentReceipt) -> Result<(), SessionError> {
        let refuse = |why: String| {
            self.emit(
                EventKind::ConsentReceiptRefused,
                Outcome::Failure,
                &format!("device:{}", receipt.device_id),
                why.clone(),
            );
            SessionError::BadReceipt(why)
        };
        if receipt.session_id != self.id
            || receipt.device_id != self.link.info.agent_id
            || receipt.operator != self.request.operator.name
            || receipt.ticket != self.request.ticket
            || receipt.endpoint_user != self.link.info.user
        {
            return Err(refuse("it names another session, device, operator, ticket or endpoint account".into()));
        }
        // An unattended session is taken up only by an `unattended` receipt, and an attended one
        // only by the user's: neither can pass for the other in the record (R2). Nobody confirms
        // an elevation where nobody is asked. A receipt of the wrong kind is refused, and a
        // request still waiting for it ends (its two sides disagree on whether anybody is
        // asked: fail closed); an elevation it would have confirmed lapses.
        let unattended = self.lock().obligations.unattended;
        let wrong_kind = match (receipt.kind, unattended) {
            (ConsentKind::Unattended, false) => Some("an unattended receipt for a session the policy serves attended"),
            (ConsentKind::Session, true) => Some("a user's receipt for a session the policy serves unattended"),
            (ConsentKind::Elevation, true) if receipt.decision == Decision::Allow => {
                Some("an elevation confirmed in a session nobody attends")
            }
            _ => None,
        };
        if let Some(why) = wrong_kind {
            let error = refuse(why.into());
            if !self.is_ended() {
                self.step(Event::ConsentClosed, &format!("device:{}", receipt.device_id));
            }
            return Err(error);
        }
        let message = sightline_proto::agent_auth::consent_message(&receipt);
        if let Err(e) = self.identity.verify_device_message(&receipt.device_id, &message, &receipt.signature).await {
            return Err(refuse(e.to_string()));
        }
        // Where nobody is asked, the device answers, and the record says so.
        let actor =
            if unattended { format!("device:{}", receipt.device_id) } else { format!("user@{}", self.link.info.name) };
        let levels: Levels = receipt.levels.iter().copied().collect();
        let text = sightline_proto::levels_text(&receipt.levels);
        // The signed receipt itself goes into the event: the audit trail keeps the evidence, and
        // anyone with the device's public key can check it again later (R2).
        let detail = format!(
            "receipt signed at {} by the device key: {}",
            receipt.time_ms,
            serde_json::to_string(&receipt).unwrap_or_default()
        );
        if self.is_ended() {
            // Too late to change anything, but what the user decided is still evidence (once:
            // a replayed copy adds nothing, and the record must not grow without bound).
            let first = {
                let mut kept = self.late_receipts.lock().unwrap_or_else(|e| e.into_inner());
                let first = kept.len() < MAX_LATE_RECEIPTS && !kept.contains(&receipt.signature);
                if first {
                    kept.push(receipt.signature.clone());
                }
                first
            };
            if first {
                self.emit(
                    EventKind::ConsentLate,
                    Outcome::Failure,
                    &actor,
                    format!("after the session ended; {detail}"),
                );
            }
            return Err(SessionError::Ended);
        }
        match (receipt.kind, receipt.decision) {
            (ConsentKind::Session, Decision::Allow) => {
                self.emit(EventKind::ConsentAllowed, Outcome::Success, &actor, format!("levels: {text}; {detail}"));
                // The screen flows only once the consent is on disk (R41).
                if let Err(e) = self.identity.events_committed().await {
                    self.step(Event::AuditUnavailable, "system");
                    return Err(SessionError::AuditUnavailable(e));
                }
                self.step(Event::ConsentAllowed { levels }, &actor);
            }
            (ConsentKind::Unattended, Decision::Allow) => {
                self.emit(
                    EventKind::ConsentUnattended,
                    Outcome::Success,
                    &actor,
                    format!("nobody was asked (unattended agent); levels: {text}; {detail}"),
                );
                if let Err(e) = self.identity.events_committed().await {
                    self.step(Event::AuditUnavailable, "system");
                    return Err(SessionError::AuditUnavailable(e));
                }
                self.step(Event::ConsentAllowed { levels }, &actor);
            }
            (ConsentKind::Unattended, _) => {
                self.emit(
                    EventKind::ConsentDenied,
                    Outcome::Failure,
                    &actor,
                    format!("unattended agent refused; {detail}"),
                );
                self.step(Event::ConsentClosed, &actor);
            }
            (ConsentKind::Session, Decision::Deny) => {
                self.emit(EventKind::ConsentDenied, Outcome::Failure, &actor, detail);
                self.step(Event::ConsentDenied, &actor);
            }
            (ConsentKind::Session, Decision::Closed) => {
                self.emit(EventKind::ConsentDenied, Outcome::Failure, &actor, format!("prompt closed; {detail}"));
                self.step(Event::ConsentClosed, &actor);
            }
            (ConsentKind::Session, Decision::TimedOut) => {
                // The event is written by the end itself (the relay's clock may get there first).
                self.step(Event::EndedElsewhere(EndReason::ConsentTimedOut), &actor);
            }
            (ConsentKind::Elevation, Decision::Allow) if !levels.is_empty() => {
                self.emit(EventKind::ElevationConfirmed, Outcome::Success, &actor, format!("levels: {text}; {detail}"));
                self.step(Event::ElevationConfirmed { levels }, &actor);
            }
            (ConsentKind::Elevation, _) => {
                self.emit(EventKind::ElevationRefused, Outcome::Failure, &actor, detail);
                self.step(Event::ElevationRefused, &actor);
            }
        }
        Ok(())
    }

    /// The session bar's buttons (pause, resume, end by the user).
    pub fn user_event(&self, event: SessionEvent) {
        let actor = format!("user@{}", self.link.info.name);
        match event {
            SessionEvent::Pause { .. } => {
                self.emit(EventKind::SessionPaused, Outcome::Success, &actor, "by the user".into());
                self.step(Event::Pause { by: Party::User }, &actor);
            }
            SessionEvent::Resume { .. } => {
                self.emit(EventKind::SessionResumed, Outcome::Success, &actor, "by the user".into());
                self.step(Event::Resume { by: Party::User }, &actor);
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
            SessionEvent::ChatRefused => {
                // The line was reported delivered when it reached the agent's channel: the sender
                // and the record learn that the user did not see it (every time, R24).
                let notice =
                    format!("a line did not reach the user: the endpoint refused it ({CHAT_NOT_GRANTED} there)");
                if let Some(recorder) = self.recorder.get() {
                    recorder.note(TimelineEntry::Chat {
                        ts_ms: self.identity.now_ms(),
                        from: NOT_DELIVERED.to_owned(),
                        text: notice.clone(),
                    });
                }
                let _ = self.chat.send((NOT_DELIVERED.to_owned(), notice));
                if self.chat_refused_reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                self.emit(
                    EventKind::ChatRefusedByEndpoint,
                    Outcome::Failure,
                    &format!("device:{}", self.link.info.agent_id),
                    "the endpoint refused a chat line that came through the relay (R20): chat was not granted there, \
                     or the session's end crossed it on the way"
                        .into(),
                );
            }
            other => tracing::warn!(session = %self.id, ?other, "ignoring a session event the agent may not send"),
        }
    }

    /// The operator's pause, resume and end.
    pub fn operator_control(&self, action: sightline_proto::ControlAction) {
        use sightline_proto::ControlAction;
        let actor = self.request.operator.name.clone();
        let (event, wire) = match action {
            ControlAction::Pause => (Event::Pause { by: Party::Operator }, SessionEvent::Pause { by: Party::Operator }),
            ControlAction::Resume => {
                (Event::Resume { by: Party::Operator }, SessionEvent::Resume { by: Party::Operator })
            }
            ControlAction::End => (Event::End { by: Party::Operator }, SessionEvent::End { by: Party::Operator }),
        };
        let effects = self.step(event, &actor);
        let kind = match action {
            ControlAction::Pause => Some(EventKind::SessionPaused),
            ControlAction::Resume => Some(EventKind::SessionResumed),
            ControlAction::End => None,
        };
        if effects.is_empty() {
            return; // refused by the machine (e.g. resuming a pause the user made)
        }
        if let Some(kind) = kind {
            self.emit(kind, Outcome::Success, &actor, "by the operator".into());
        }
        if !matches!(action, ControlAction::End) {
            self.tell_agent(wire);
        }
    }

    /// An administrator ends the session at once.
    pub fn kill(&self, admin: &str) {
        self.step(Event::Kill { admin: admin.to_owned() }, admin);
    }

    /// The operator asks for more levels.
    pub fn elevate(&self, levels: Levels) -> Vec<Effect> {
        let actor = self.request.operator.name.clone();
        self.step(Event::ElevationRequested { levels }, &actor)
    }

    /// Whether a senior's approval of `levels` would apply: an elevation waits for one, for
    /// exactly those levels.
    pub fn check_approval(&self, levels: &Levels) -> Result<(), SessionError> {
        approvable(&self.lock(), levels)
    }

    /// A senior operator approves the pending elevation, naming the levels they saw; an
    /// approval for anything else (a changed or finished request) is refused. Checked and
    /// applied under one lock, so the request cannot change in between.
    pub fn approve(&self, senior: &str, levels: &Levels) -> Result<(), SessionError> {
        let effects = {
            let mut m = self.lock();
            approvable(&m, levels)?;
            m.step(self.identity.now_ms(), Event::SeniorApproved)
        };
        self.emit(
            EventKind::ElevationApproved,
            Outcome::Success,
            senior,
            // The step-up is the caller's to require (the API does); its own event records it.
            format!("levels: {}; senior approval", sightline_proto::levels_text(&sorted(levels))),
        );
        self.carry_out(effects, senior);
        Ok(())
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

    /// One input event from the operator: forwarded only if the machine admits it (R19).
    pub fn input(&self, input: Input) -> bool {
        let admitted = self.lock().admit_input(self.identity.now_ms());
        if admitted {
            if let Some(recorder) = self.recorder.get() {
                recorder.count_input(input_kind(&input));
            }
            self.link.send_input(&ChannelMessage::Input { input });
        }
        admitted
    }

    /// Input that arrived where none may come from (an observer's connection): counted.
    pub fn drop_input(&self) {
        self.lock().dropped_input += 1;
    }

    /// A chat line from the operator (`from` set here, never taken from the sender). Only while
    /// the user granted chat (R20); otherwise the viewers are told it was not delivered, and the
    /// line is counted for the session's record.
    pub fn operator_chat(&self, from: &str, text: &str) {
        let Some(text) = clean_chat(text) else { return };
        let now = self.identity.now_ms();
        {
            let mut machine = self.lock();
            if !machine.admit_chat() {
                drop(machine);
                let _ = self.chat.send((NOT_DELIVERED.to_owned(), format!("{text} ({CHAT_NOT_GRANTED})")));
                return;
            }
            machine.step(now, Event::OperatorActivity);
        }
        // The line is shown to the viewers once it reached the agent's channel, in order; a line
        // that could not be delivered is shown as such instead of as sent.
        let chat = self.chat.clone();
        let line = (from.to_owned(), text.clone());
        let recorder = self.recorder.get().cloned();
        let identity = self.identity.clone();
        let on_delivery: sightline_peer::OnDelivery = Box::new(move |result| {
            let (from, text) = match result {
                Ok(()) => line,
                Err(e) => (NOT_DELIVERED.to_owned(), format!("{} ({e})", line.1)),
            };
            // The record has each line as the other side got it (R24).
            if let Some(recorder) = recorder {
                recorder.note(TimelineEntry::Chat { ts_ms: identity.now_ms(), from: from.clone(), text: text.clone() });
            }
            let _ = chat.send((from, text));
        });
        self.link.send_chat(&ChannelMessage::Chat { from: from.to_owned(), text }, on_delivery);
    }

    /// A chat line from the user at the endpoint; the agent sends none without chat granted, and
    /// the relay takes none either (R20).
    pub fn user_chat(&self, text: &str) {
        let Some(text) = clean_chat(text) else { return };
        if !self.lock().admit_chat() {
            tracing::warn!(session = %self.id, "the endpoint sent a chat line without chat granted; not passed on");
            return;
        }
        let from = format!("user@{}", self.link.info.name);
        if let Some(recorder) = self.recorder.get() {
            recorder.note(TimelineEntry::Chat {
                ts_ms: self.identity.now_ms(),
                from: from.clone(),
                text: text.clone(),
            });
        }
        let _ = self.chat.send((from, text));
    }
}

/// Whether a senior's approval of `levels` applies to the machine's pending elevation.
fn approvable(m: &Session, levels: &Levels) -> Result<(), SessionError> {
    let pending = match &m.elevation {
        Some(e) if m.obligations.elevation_needs_senior && !e.senior_approved => &e.levels,
        _ => return Err(SessionError::NothingToApprove),
    };
    if pending != levels {
        return Err(SessionError::OtherElevation {
            pending: sightline_proto::levels_text(&sorted(pending)),
            approved: sightline_proto::levels_text(&sorted(levels)),
        });
    }
    Ok(())
}

/// The kind of an input event, all the recording keeps of it (never keys or positions).
fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::PointerMove { .. } => "pointer_move",
        Input::PointerButton { .. } => "pointer_button",
        Input::Wheel { .. } => "wheel",
        Input::Key { .. } => "key",
    }
}

/// Trims and bounds a chat line; empty lines are dropped.
fn clean_chat(text: &str) -> Option<String> {
    let text: String =
        text.trim().chars().filter(|c| !c.is_control()).take(sightline_proto::channel::MAX_CHAT_CHARS).collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MemorySink;
    use ed25519_dalek::{Signer, SigningKey};
    use sightline_proto::AgentInfo;

    /// A relay with one enrolled device (key `[7; 32]`) in `segment`, online.
    struct Fixture {
        state: crate::state::AppState,
        events: MemorySink,
        key: SigningKey,
        device_id: String,
        link: Arc<AgentLink>,
        _outbox: tokio::sync::mpsc::Receiver<RelayToAgent>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(segment: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = <crate::config::Config as clap::Parser>::parse_from([
            "relay".to_owned(),
            "--listen=127.0.0.1:0".to_owned(),
            concat!("--static-dir=", env!("CARGO_MANIFEST_DIR"), "/../static").to_owned(),
            "--public-url=http://localhost:1/".to_owned(),
            format!("--data-dir={}", dir.path().display()),
            "--node=test".to_owned(),
            concat!("--policy=", env!("CARGO_MANIFEST_DIR"), "/policy-sample.toml").to_owned(),
        ]);
        let events = MemorySink::default();
        let state = crate::server::build(&config, Arc::new(events.clone())).await.unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let token = state.identity.create_agent_token("test", segment, None).await.unwrap();
        let device = state
            .identity
            .enrol_device(&token, &hex::encode(key.verifying_key().to_bytes()), "desk", None)
            .await
            .unwrap();
        let info = AgentInfo {
            agent_id: device.id.clone(),
            name: "desk".into(),
            segment: segment.into(),
            width: 1,
            height: 1,
            user: "alice".into(),
            unattended: false,
        };
        let (link, outbox) = state.hub.register_agent(info, Some("192.0.2.50".parse().unwrap())).unwrap();
        Fixture { state, events, key, device_id: device.id, link, _outbox: outbox, _dir: dir }
    }

    impl Fixture {
        /// Opens a session asking for `levels`, under the segment's terms.
        async fn open(&self, levels: &[Level]) -> Arc<LiveSession> {
            let segment = &self.state.policy.segments[&self.link.info.segment];
            let request = Request {
                operator: OperatorInfo {
                    name: "op".into(),
                    display_name: "Op".into(),
                    role: "operator".into(),
                    organisation: "IT".into(),
                },
                ticket: "INC-1".into(),
                reason: "incident".into(),
                levels: levels.iter().copied().collect(),
                allowed: segment.levels.clone(),
                source: None,
                masks: segment.masks.clone(),
                window_required: segment.maintenance_window,
                help_request: None,
            };
            LiveSession::open(
                self.state.identity.clone(),
                self.link.clone(),
                request,
                segment.terms,
                &self.state.recordings,
            )
            .await
            .unwrap()
        }

        /// The device's signed decision for `session`.
        fn receipt(&self, session: &LiveSession, kind: ConsentKind, levels: &[Level]) -> ConsentReceipt {
            signed(
                &self.key,
                ConsentReceipt {
                    kind,
                    session_id: session.id.clone(),
                    device_id: self.device_id.clone(),
                    operator: "op".into(),
                    ticket: "INC-1".into(),
                    endpoint_user: "alice".into(),
                    decision: Decision::Allow,
                    levels: levels.to_vec(),
                    time_ms: 1,
                    signature: String::new(),
                },
            )
        }

        fn events_of(&self, kind: EventKind) -> Vec<crate::events::Event> {
            self.events.0.lock().unwrap().iter().filter(|e| e.kind == kind).cloned().collect()
        }
    }

    fn signed(key: &SigningKey, mut r: ConsentReceipt) -> ConsentReceipt {
        r.signature = hex::encode(key.sign(&sightline_proto::agent_auth::consent_message(&r)).to_bytes());
        r
    }

    /// A decision counts only with the enrolled device's signature over this very session's
    /// facts; anything else is refused and leaves the session waiting (R2, R5).
    #[tokio::test]
    async fn only_a_receipt_signed_by_the_device_for_this_session_moves_it() {
        let f = fixture("office").await;
        let stranger = SigningKey::from_bytes(&[8; 32]);
        let session = f.open(&[Level::View, Level::Control]).await;
        let allow = f.receipt(&session, ConsentKind::Session, &[Level::View, Level::Control]);
        let refused = [
            signed(&stranger, allow.clone()),
            ConsentReceipt { signature: "00".into(), ..allow.clone() },
            signed(&f.key, ConsentReceipt { ticket: "INC-2".into(), ..allow.clone() }),
            signed(&f.key, ConsentReceipt { session_id: "other".into(), ..allow.clone() }),
            // Signed for view only, then widened in transit.
            ConsentReceipt {
                levels: vec![Level::View, Level::Control],
                ..signed(&f.key, ConsentReceipt { levels: vec![Level::View], ..allow.clone() })
            },
            // The endpoint account changed in transit.
            ConsentReceipt { endpoint_user: "mallory".into(), ..allow.clone() },
            // Signed by the device, but for another account than the one logged in at hello.
            signed(&f.key, ConsentReceipt { endpoint_user: "mallory".into(), ..allow.clone() }),
        ];
        for receipt in refused {
            assert!(matches!(session.accept_receipt(receipt).await, Err(SessionError::BadReceipt(_))));
            assert_eq!(session.status().borrow().phase, SessionPhase::AwaitingConsent);
        }
        session.accept_receipt(allow).await.unwrap();
        let status = session.status().borrow().clone();
        assert_eq!((status.phase, status.granted), (SessionPhase::Active, vec![Level::View, Level::Control]));

        // Every session event carries the session's facts as fields (R10).
        let allowed = f.events_of(EventKind::ConsentAllowed);
        let facts = allowed[0].session.as_ref().unwrap();
        assert_eq!(
            (facts.ticket.as_str(), facts.endpoint_user.as_str(), facts.operator.as_str(), facts.device_id.as_str()),
            ("INC-1", "alice", "op", f.device_id.as_str())
        );
        assert_eq!(
            f.events_of(EventKind::SessionStarted)[0].session.as_ref().unwrap().levels,
            [Level::View, Level::Control]
        );
    }

    /// Each event carries its actor's own address (R38): the user's decision the endpoint's, the
    /// admin's kill the admin's, the system's none.
    #[tokio::test]
    async fn events_carry_the_acting_partys_address() {
        let f = fixture("office").await;
        let session = f.open(&[Level::View]).await;
        let allow = f.receipt(&session, ConsentKind::Session, &[Level::View]);
        session.accept_receipt(allow).await.unwrap();
        let allowed = f.events_of(EventKind::ConsentAllowed);
        assert_eq!(allowed[0].source, Some("192.0.2.50".parse().unwrap()), "the endpoint's address");
        session.note_address("ada", "198.51.100.9".parse().unwrap());
        session.kill("ada");
        let ended = f.events_of(EventKind::SessionEnded);
        assert_eq!(ended[0].actor, "ada");
        assert_eq!(ended[0].source, Some("198.51.100.9".parse().unwrap()), "the admin's address");
    }

    /// The user's click and the relay's deadline can cross: a decision signed just after the
    /// session ended changes nothing, but is verified and kept as evidence (R2, R10).
    #[tokio::test]
    async fn a_decision_that_arrives_after_the_end_is_kept_not_applied() {
        let f = fixture("office").await;
        let session = f.open(&[Level::View]).await;
        session.kill("ada");
        let late = f.receipt(&session, ConsentKind::Session, &[Level::View]);
        let found = f.link.session_by_id(&session.id).expect("the ended session is still found by id");
        assert_eq!(found.accept_receipt(late.clone()).await, Err(SessionError::Ended));
        assert_eq!(session.status().borrow().phase, SessionPhase::Ended);
        let kept = f.events_of(EventKind::ConsentLate);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].detail.contains(&late.signature), "the signed receipt is in the record");
        // A replayed copy is refused and not recorded again.
        assert_eq!(found.accept_receipt(late.clone()).await, Err(SessionError::Ended));
        assert_eq!(f.events_of(EventKind::ConsentLate).len(), 1);
        // A forged late receipt is refused as forged, not kept as evidence.
        let forged = ConsentReceipt { levels: vec![Level::View, Level::Control], ..late };
        assert!(matches!(found.accept_receipt(forged).await, Err(SessionError::BadReceipt(_))));
        assert_eq!(f.events_of(EventKind::ConsentLate).len(), 1);
    }

    /// A request the agent declines (issue 13: never ignored) ends with the agent's reason, cut to
    /// a bounded, printable length.
    #[tokio::test]
    async fn a_request_the_agent_declines_ends_with_its_reason() {
        let f = fixture("office").await;
        let session = f.open(&[Level::View]).await;
        assert_eq!(session.status().borrow().phase, SessionPhase::AwaitingConsent);
        session.declined_by_endpoint(&format!("another session runs here\n{}", "x".repeat(500)));
        let status = session.status().borrow().clone();
        assert_eq!(status.phase, SessionPhase::Ended);
        let Some(EndReason::DeclinedByEndpoint(why)) = status.end_reason else { panic!("{status:?}") };
        assert!(why.starts_with("another session runs here") && why.chars().count() == 200 && !why.contains('\n'));
        assert_eq!(f.events_of(EventKind::SessionEnded).len(), 1);
    }

    /// An end the endpoint's clock decided is the same end, with the same reason and record, as
    /// one the relay's timers make (its actor names the endpoint); an end only the relay may decide
    /// is not taken at its word (issue 12).
    #[tokio::test]
    async fn an_idle_end_the_agent_reports_ends_the_session_with_the_same_reason() {
        let f = fixture("office").await;
        let session = f.open(&[Level::View]).await;
        session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
        session.user_event(SessionEvent::Ended { reason: EndReason::Idle });
        let status = session.status().borrow().clone();
        assert_eq!((status.phase, status.end_reason), (SessionPhase::Ended, Some(EndReason::Idle)));
        let ended = f.events_of(EventKind::SessionEnded);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].actor, "agent");
        assert!(ended[0].detail.starts_with(&EndReason::Idle.describe()), "{}", ended[0].detail);

        // Control: a reason the endpoint cannot decide ends the session (the endpoint has ended)
        // under its own name, never as the claimed admin kill.
        let next = f.open(&[Level::View]).await;
        next.accept_receipt(f.receipt(&next, ConsentKind::Session, &[Level::View])).await.unwrap();
        next.user_event(SessionEvent::Ended { reason: EndReason::KilledByAdmin("root".into()) });
        let status = next.status().borrow().clone();
        let Some(EndReason::DeclinedByEndpoint(why)) = status.end_reason else { panic!("{status:?}") };
        assert!(why.contains("ended by administrator root"), "{why}");
        assert_eq!(f.events_of(EventKind::SessionEnded).len(), 2);
    }

    /// In a segment that needs a senior's approval, control comes only with the user's signed
    /// confirmation and the senior's approval of exactly the levels pending (R7).
    #[tokio::test]
    async fn a_senior_approves_exactly_the_pending_elevation() {
        let f = fixture("payment").await;
        let session = f.open(&[Level::View]).await;
        session.accept_receipt(f.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
        assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
        assert!(!session.elevate([Level::Control].into()).is_empty());
        assert!(matches!(session.approve("sam", &[Level::Clipboard].into()), Err(SessionError::OtherElevation { .. })));
        session.approve("sam", &[Level::Control].into()).unwrap();
        assert_eq!(session.status().borrow().granted, [Level::View], "the user has not confirmed yet");
        assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
        session.accept_receipt(f.receipt(&session, ConsentKind::Elevation, &[Level::Control])).await.unwrap();
        assert_eq!(session.status().borrow().granted, [Level::View, Level::Control]);
        let approved = f.events_of(EventKind::ElevationApproved);
        assert_eq!(approved.len(), 1);
        assert_eq!(approved[0].actor, "sam");

        // Where the segment needs no senior, there is nothing for one to approve.
        let office = fixture("office").await;
        let session = office.open(&[Level::View]).await;
        session.accept_receipt(office.receipt(&session, ConsentKind::Session, &[Level::View])).await.unwrap();
        assert!(!session.elevate([Level::Control].into()).is_empty());
        assert_eq!(session.approve("sam", &[Level::Control].into()), Err(SessionError::NothingToApprove));
    }
}
