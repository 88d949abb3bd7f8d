//! The sessions of one endpoint: at most one running, and the one that ended last.

use std::sync::{Arc, Mutex};

use super::LiveSession;

/// The sessions of one endpoint, kept beside its link by the hub.
#[derive(Default)]
pub struct Sessions {
    /// The session running on this endpoint (at most one).
    running: Mutex<Option<Arc<LiveSession>>>,
    /// The session that ended last: a decision the agent signed just as the relay ended it (the
    /// consent deadline racing the user's click) is still verified and kept as evidence.
    ended: Mutex<Option<Arc<LiveSession>>>,
}

impl Sessions {
    pub fn new() -> Arc<Sessions> {
        Arc::default()
    }

    /// Attaches a new session; `false` if one is running.
    pub(super) fn attach(&self, session: Arc<LiveSession>) -> bool {
        let mut slot = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| !s.is_ended()) {
            return false;
        }
        *slot = Some(session);
        true
    }

    /// Detaches the session `id` (after it ended).
    pub(super) fn detach(&self, id: &str) {
        let mut slot = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| s.id == id) {
            let ended = slot.take();
            drop(slot);
            *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = ended;
        }
    }

    /// Drops the last ended session: it holds the endpoint's link and these sessions, so keeping
    /// it past the link's life would keep them all alive.
    pub fn forget_ended(&self) {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The running session, or the one that ended last, if it has this id.
    pub fn by_id(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.current()
            .filter(|s| s.id == id)
            .or_else(|| self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|s| s.id == id))
    }

    /// The running session, if any (or the one that just ended, until it detaches).
    pub fn current(&self) -> Option<Arc<LiveSession>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
