//! The agent's signed decisions on a session (consent, elevation, unattended service) and a
//! senior's approval of an elevation: verified, recorded, then fed to the machine.
//!
//! A receipt is signed with the device key over length-prefixed fields (kind, session, device,
//! operator, ticket, endpoint account, decision, levels, time: `agent_auth::consent_message`). It
//! is verified against the enrolled key and against the session's own facts, and the whole signed
//! receipt goes into the event, so the audit trail holds evidence anyone with the device's public
//! key can check again. An Allow steps the machine only once its event is on disk; only then is
//! the operator's offer answered and the agent told to publish (and the agent itself refuses to
//! publish without a consented session). Deny, a closed prompt and the deadline end the session
//! with their reason. A decision that arrives after the session ended (the deadline crossing the
//! user's click) is still verified and kept, as `consent.late`, never applied.
//!
//! An unattended session is taken up only by an `unattended` receipt, an attended one only by the
//! user's, so the record never confuses the two. Elevations come one at a time; the user confirms
//! in the session bar with a signed receipt, and where the segment says so a senior operator
//! approves as well (`POST /api/sessions/{id}/approve-elevation`, naming the pending levels, after
//! a passkey step-up; checked and applied under the machine's lock). A request not completed
//! within the segment's consent timeout lapses (`elevation.expired`); control already granted
//! keeps working once the user has answered.

use sightline_core::session::{Effect, Event, Levels, Session};
use sightline_proto::{ConsentKind, ConsentReceipt, Decision, EndReason};

use super::{LiveSession, SessionError, sorted};
use sightline_audit::events::{EventKind, Outcome};

/// Late decisions (signed after the session ended) recorded per session; one prompt yields at
/// most a few genuine ones.
const MAX_LATE_RECEIPTS: usize = 4;

impl LiveSession {
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
