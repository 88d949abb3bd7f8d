//! Chat in a session: passed only while the user granted it and the session runs (R20), shown
//! to the viewers once it reached the agent's channel, and kept in the recording as each side
//! got it (R24).
//!
//! Levels: view, chat, control, clipboard and file transfer are each a `proto::Level`. The
//! segment's `levels` list what may be asked for; the operator ticks what is asked (view and chat
//! by default; view always, and chat left out where the segment does not list it); the user ticks
//! what is granted (the window ticks view and chat; a plain `allow` on the terminal grants those
//! two of what was asked). Grants beyond view and chat expire after the segment's
//! `grant_expiry_s`; view and chat stay.
//!
//! Chat passes only while the machine says so (`core::session::Session::admit_chat`: chat
//! granted, session active or paused), on both sides. The relay answers a line in a session
//! without chat with "not delivered" to its sender and counts it (`chat.refused` at the end). The
//! agent refuses a line that got past the relay anyway and shows it to nobody; the sender is told
//! every time, and the first refusal in a session is recorded (`chat.refused_by_endpoint`).
//! Neither the viewer nor the session bar shows a chat box without the grant.

use sightline_core::recording::TimelineEntry;
use sightline_core::session::Event;
use sightline_proto::channel::ChannelMessage;

use super::LiveSession;
use sightline_audit::events::{EventKind, Outcome};

/// The `from` of a chat notice that a line did not reach the endpoint.
pub const NOT_DELIVERED: &str = "not delivered";
/// Why an operator's line was not delivered when the session has no chat (R20).
pub const CHAT_NOT_GRANTED: &str = "chat is not granted in this session";

impl LiveSession {
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
        let session = self.id.clone();
        let on_delivery: sightline_peer::OnDelivery = Box::new(move |result| {
            // The outcome (never the text) is logged, so an operator's "my line went nowhere"
            // can be answered from the relay's log.
            match &result {
                Ok(()) => tracing::debug!(%session, "operator chat line reached the endpoint's channel"),
                Err(e) => tracing::info!(%session, error = %e, "operator chat line not delivered"),
            }
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

    /// The agent refused a line the relay had reported delivered (a race with the grant or the
    /// end).
    pub(super) fn chat_refused_by_endpoint(&self) {
        // The line was reported delivered when it reached the agent's channel: the sender
        // and the record learn that the user did not see it (every time, R24).
        let notice = format!("a line did not reach the user: the endpoint refused it ({CHAT_NOT_GRANTED} there)");
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
}

/// Trims and bounds a chat line; empty lines are dropped.
fn clean_chat(text: &str) -> Option<String> {
    let text: String =
        text.trim().chars().filter(|c| !c.is_control()).take(sightline_proto::channel::MAX_CHAT_CHARS).collect();
    (!text.is_empty()).then_some(text)
}
