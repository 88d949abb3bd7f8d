//! A session that moves to this node when the node that ran it was lost (R43).
//!
//! The node running a session publishes its `Handover` with every heartbeat. When that node is
//! lost and the endpoint reconnects here with its signed consent (the relay's `takeover` checks the
//! claim and claims the session in the store, once for the whole service), `LiveSession::resume`
//! runs it again from those facts: the same id, operator, ticket, terms and masks, the levels
//! the user signed for, the original consent time (the maximum duration does not restart). Its
//! `session.moved` record names the lost node and the gap; where the segment records, a new
//! recording starts before anything else, naming the cut one and the gap in its opening line.
//! Nobody is asked again. The operator then has `RESUME_GRACE_MS` to take the session up again
//! (`operator_came_back`), from any node; otherwise it ends as "operator lost". No viewer joins
//! before the endpoint was told to go on (`arrived`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sightline_core::handover::{Handover, RESUME_GRACE_MS, RunHead};
use sightline_core::recording::{Continuation, Gap};
use sightline_core::session::{Event, Levels, Phase, Session};
use sightline_proto::{RelayToAgent, SessionEvent, SessionPhase};

use super::{LiveSession, Request, SessionError, sorted};
use crate::link::AgentLink;
use crate::session::Sessions;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::Identity;
use sightline_recording::Recordings;

/// The node a session moved from, and when it was last heard of (its last heartbeat, Unix ms).
#[derive(Debug, Clone)]
pub struct LostNode {
    pub name: String,
    pub last_heard_ms: u64,
}

impl LiveSession {
    /// Takes over `handover`, a session of the lost node `lost`, with `levels` (what the user
    /// signed for and the lost node still granted). Fails, with nothing started, when the
    /// endpoint already runs another session here, the log cannot be written or the recording
    /// cannot start; the caller then records the session's end.
    pub async fn resume(
        identity: Arc<Identity>,
        link: Arc<AgentLink>,
        endpoint_sessions: Arc<Sessions>,
        handover: &Handover,
        levels: Levels,
        recordings: &Arc<Recordings>,
        lost: &LostNode,
    ) -> Result<Arc<LiveSession>, SessionError> {
        let now = identity.now_ms();
        let allowed: Levels = handover.allowed.iter().copied().collect();
        let machine = Session::resume(now, handover.terms, allowed.clone(), handover.moved(levels));
        let request = Request {
            operator: handover.operator.clone(),
            ticket: handover.ticket.clone(),
            reason: handover.reason.clone(),
            levels: handover.requested.iter().copied().collect(),
            allowed,
            // Where the operator connects from is noted when they come back.
            source: None,
            masks: handover.masks.clone(),
            window_required: handover.window_required,
            help_request: handover.help_request.clone(),
            help_code: None,
        };
        let session = LiveSession::build(
            identity,
            link.clone(),
            endpoint_sessions.clone(),
            request,
            machine,
            handover.session_id.clone(),
            handover.created_ms,
        );
        let _ = session.moved_from.set(lost.name.clone());
        session.arriving.store(true, Ordering::Release);
        if !endpoint_sessions.attach(session.clone()) {
            return Err(SessionError::Busy(link.info.name.clone()));
        }
        link.sessions_changed();
        let gap_s = now.saturating_sub(lost.last_heard_ms) / 1000;
        session.emit(
            EventKind::SessionMoved,
            Outcome::Success,
            "system",
            format!(
                "taken over from relay node {}, silent for {gap_s} s; the user was not asked again (their signed consent was checked); levels: {}",
                lost.name,
                sightline_proto::levels_text(&sorted(session.lock().granted()))
            ),
        );
        if let Err(e) = session.identity.events_committed().await {
            session.step(Event::AuditUnavailable, "system");
            return Err(SessionError::AuditUnavailable(e));
        }
        session.link.fanout.begin_session(&session.id);
        if !handover.terms.recording_required {
            session.link.fanout.clear_recorder();
        } else {
            // R26 holds through the move: the recorder stands in front of the viewers before the
            // endpoint is told to go on.
            // A lost node that published no recording head (none written yet) had its first
            // recording under the session's id, with nothing in it to chain to.
            let head = handover.recording.clone().unwrap_or(RunHead {
                recording_id: handover.session_id.clone(),
                chunks: 0,
                last_sha256: None,
            });
            let continues = Some(Continuation {
                previous: head.recording_id,
                previous_node: lost.name.clone(),
                previous_chunks: head.chunks,
                previous_last_sha256: head.last_sha256,
                gap: Gap {
                    // By the lost node's clock: never after this one's start, whatever the skew.
                    start_ms: lost.last_heard_ms.min(now),
                    end_ms: now,
                    cause: format!("relay node {} was lost", lost.name),
                },
            });
            if let Err(why) = session.start_recording(recordings, continues).await {
                session.emit(EventKind::RecordingUnavailable, Outcome::Failure, "system", why.clone());
                session.step(Event::RecorderFailed, "system");
                return Err(SessionError::RecordingUnavailable(why));
            }
        }
        session.publish_status();
        session.spawn_ticker();
        // The endpoint hears it goes on before any viewer's request to publish can reach it:
        // viewers are let in only from here on (`arrived`).
        link.send(RelayToAgent::Resumed { session_id: session.id.clone() });
        // The lost node's own pause (its recorder) does not hold here: the endpoint's does not.
        if handover.paused_by == Some(sightline_proto::Party::System) {
            session.tell_agent(SessionEvent::Resume { by: sightline_proto::Party::System });
        }
        if session.recorder.get().is_some_and(|r| r.writing()) {
            session.tell_agent(SessionEvent::Recording { on: true });
        }
        session.arriving.store(false, Ordering::Release);
        let waiting = Arc::downgrade(&session);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(RESUME_GRACE_MS)).await;
            if let Some(session) = waiting.upgrade()
                && !session.operator_here.load(Ordering::Relaxed)
                && !session.is_ended()
            {
                tracing::info!(session = %session.id, "the operator did not come back to the moved session");
                session.step(Event::OperatorLost, "system");
            }
        });
        Ok(session)
    }

    /// Whether this session moved here from a lost node.
    pub fn moved(&self) -> bool {
        self.moved_from.get().is_some()
    }

    /// Whether viewers may join: not while the session is still being taken over here (its
    /// recorder not yet in front of them, its endpoint not yet told to go on).
    pub fn arrived(&self) -> bool {
        !self.arriving.load(Ordering::Acquire)
    }

    /// Whether the operator has taken this moved session up again.
    pub fn operator_present(&self) -> bool {
        self.operator_here.load(Ordering::Relaxed)
    }

    /// The operator took this moved session up again (from any node): recorded once.
    pub fn operator_came_back(&self, ip: std::net::IpAddr) {
        let operator = self.request.operator.name.clone();
        self.note_address(&operator, ip);
        if !self.operator_here.swap(true, Ordering::Relaxed) {
            self.emit(
                EventKind::SessionRejoined,
                Outcome::Success,
                &operator,
                "the operator took the session up again".into(),
            );
        }
    }

    /// What a node that takes this session over needs (R43), while it runs.
    pub fn handover(&self) -> Option<Handover> {
        let m = self.lock();
        let paused_by = match m.phase {
            Phase::Active => None,
            Phase::Paused { by } => Some(by),
            Phase::AwaitingConsent { .. } | Phase::Ended(_) => return None,
        };
        let status = self.status.borrow();
        if status.phase == SessionPhase::Ended {
            return None;
        }
        Some(Handover {
            session_id: self.id.clone(),
            agent_id: self.link.info.agent_id.clone(),
            operator: self.request.operator.clone(),
            ticket: self.request.ticket.clone(),
            reason: self.request.reason.clone(),
            requested: sorted(&self.request.levels),
            allowed: sorted(&self.request.allowed),
            granted: sorted(m.granted()),
            grant_expires_ms: m.grant_expires_ms(),
            created_ms: self.created_ms,
            started_ms: m.started_ms(),
            paused_by,
            warned: m.warned(),
            terms: m.obligations,
            masks: self.request.masks.clone(),
            window_required: self.request.window_required,
            help_request: self.request.help_request.clone(),
            recording: self.run_head.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        })
    }
}
