//! Help the user asks for (R2): `agent help` opens a request with a one-time code; operators see
//! the open requests in a queue and take one up (from the queue, or by the code the user reads
//! to them), after which the session follows the normal path: ticket, reason, policy, consent.
//!
//! Requests live in the shared store (`Collection::HelpRequests`, keyed by code), so every relay
//! node sees the same queue. Taking a request is the store's atomic `take`: one operator gets it,
//! on whichever node. Each node re-reads the queue every `REFRESH` (and at once after its own
//! changes) and lapses expired requests; the node whose delete succeeds writes `help.expired`,
//! so a lapse is recorded once however many nodes run.
//!
//! A request is on record before it exists: `help.requested` is durable before the request is
//! stored, so no node shows it and the user gets no code unless the log has it; one that then
//! cannot open is recorded as `help.withdrawn`.
//!
//! Rate limit: a device has at most one open request. Asking again while it is open gives the
//! same code, mints nothing and writes nothing, so a device opens at most one request per TTL
//! and cannot fill the audit log by asking. (Asks are serialised per node; two nodes asked for
//! the same device in the same instant could each open one, and both would show.)
//!
//! `agent help` (or its window, `agent help --window`) is a one-shot connection: the agent signs
//! the challenge with a help-only message (`agent_auth::help_message`) and gets a six-digit code
//! (`sightline_core::help`). A `watch` that carries the code takes the request last of all the
//! checks (`sockets::viewer`: a refused request leaves it open), and only for the endpoint that
//! asked. The session then asks the user as usual, `session.start` names the request, and
//! `help.picked_up` is written once the session opened; one that fails to open puts it back.
//!
//! Unattended agents (also R2): an agent started with `--unattended` says so in its hello, and
//! `Policy::decide` serves it only in a segment with `unattended = true`, recorded, and inside an
//! open maintenance window even where the segment needs none. The terms it gets say
//! `unattended`, and it answers with a signed `unattended` receipt instead of asking anybody
//! (`session::consent`); `SessionFacts::unattended` marks every event of such a session.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sightline_core::help;
use sightline_proto::HelpRequest;
use tokio::sync::watch;

use sightline_audit::AuditUnavailable;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::devices::Device;
use sightline_identity::{Identity, random_bytes};
use sightline_store::{Collection, Store, StoreError};

/// How often each node re-reads the queue and lapses expired requests.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HelpError {
    #[error("no open help request has this code (it may have been taken, or lapsed)")]
    Unknown,
    #[error("this help code is for another endpoint")]
    OtherDevice,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditUnavailable),
}

pub struct HelpDesk {
    store: Store,
    identity: Arc<Identity>,
    ttl: Duration,
    /// The open requests, oldest first, as this node last read them.
    open: watch::Sender<Vec<HelpRequest>>,
    /// One ask at a time on this node: "is one open? if not, open one" must not interleave.
    asking: tokio::sync::Mutex<()>,
}

impl HelpDesk {
    /// A help desk whose requests lapse after `ttl`; its refresh task runs while it lives.
    pub fn start(store: Store, identity: Arc<Identity>, ttl: Duration) -> Arc<HelpDesk> {
        let desk = Arc::new(HelpDesk {
            store,
            identity,
            ttl,
            open: watch::channel(Vec::new()).0,
            asking: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&desk)));
        desk
    }

    /// The open requests, on every change.
    pub fn subscribe(&self) -> watch::Receiver<Vec<HelpRequest>> {
        self.open.subscribe()
    }

    /// The person at `device`, logged in as `user`, asks for help: their open request if it is
    /// still open, otherwise a new one with a fresh code.
    pub async fn ask(&self, device: &Device, user: &str, source: Option<IpAddr>) -> Result<HelpRequest, HelpError> {
        let _one_at_a_time = self.asking.lock().await;
        let now = self.identity.now_ms();
        if let Some(open) = self.open_requests(now).await?.into_iter().find(|r| r.agent_id == device.id) {
            tracing::info!(device = %device.id, request = %open.id, "asked for help again: the open request stands");
            return Ok(open);
        }
        let expires_ms = now + u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let id = hex::encode(random_bytes::<8>());
        let actor = format!("user@{}", device.name);
        let subject = format!("device:{}", device.id);
        // On record before anyone sees it (R41): the user is given no code, and no node shows the
        // request, unless its record is durable. The record names the request, not its code.
        self.identity.emit(
            EventKind::HelpRequested,
            Outcome::Success,
            &actor,
            Some(&subject),
            source,
            format!("request {id} by {user}, open until {expires_ms} (Unix ms)"),
        );
        let opened = async {
            self.identity.events_committed().await?;
            let request = HelpRequest {
                id: id.clone(),
                code: String::new(),
                agent_id: device.id.clone(),
                device: device.name.clone(),
                segment: device.segment.clone(),
                user: user.to_owned(),
                created_ms: now,
                expires_ms,
            };
            self.open(request).await
        };
        match opened.await {
            Ok(request) => {
                self.refresh().await;
                Ok(request)
            }
            Err(e) => {
                // The log holds the request's record (it is written when the disk frees up), so
                // it also says the request never opened.
                self.identity.emit(
                    EventKind::HelpWithdrawn,
                    Outcome::Failure,
                    "system",
                    Some(&subject),
                    source,
                    format!("request {id} by {user} did not open: {e}"),
                );
                Err(e)
            }
        }
    }

    /// Stores `request` under a free code. A code in use is drawn again; with a million codes and
    /// one request per device, a few draws always find a free one.
    async fn open(&self, mut request: HelpRequest) -> Result<HelpRequest, HelpError> {
        for _ in 0..32 {
            let Some(code) = help::code_from(random_bytes::<4>()) else { continue };
            request.code = code;
            if self.store.insert_new(Collection::HelpRequests, &request.code, &request).await? {
                return Ok(request);
            }
        }
        Err(HelpError::Store(StoreError::Unavailable("no free help code found".into())))
    }

    /// The open request with `typed` code, not taken: which endpoint a caller's code names.
    pub async fn find(&self, typed: &str) -> Result<HelpRequest, HelpError> {
        let code = help::normalise(typed).ok_or(HelpError::Unknown)?;
        let found: Option<HelpRequest> = self.store.get(Collection::HelpRequests, &code).await?;
        found.filter(|r| help::is_open(r.expires_ms, self.identity.now_ms())).ok_or(HelpError::Unknown)
    }

    /// An operator takes up the request with `typed` code for `agent_id`: once, and only for the
    /// endpoint that asked. A code for another endpoint is not spent by the attempt.
    pub async fn take(&self, typed: &str, agent_id: &str) -> Result<HelpRequest, HelpError> {
        let request = self.find(typed).await?;
        let code = request.code.clone();
        if request.agent_id != agent_id {
            return Err(HelpError::OtherDevice);
        }
        // Another operator may have taken it since the read, and the code may even have been
        // given to another request since: the store's take decides, and what it took by mistake
        // goes back.
        let taken: Option<HelpRequest> = self.store.take(Collection::HelpRequests, &code).await?;
        let request = match taken {
            Some(t) if t.id == request.id => t,
            Some(other) => {
                if !self.store.insert_new(Collection::HelpRequests, &code, &other).await? {
                    tracing::error!(request = %other.id, "a help request taken by mistake could not be put back");
                }
                return Err(HelpError::Unknown);
            }
            None => return Err(HelpError::Unknown),
        };
        self.refresh().await;
        Ok(request)
    }

    /// Records that `operator` took up `request` with a session that opened (written only then,
    /// so the log never shows a pickup for a request that went back into the queue).
    pub fn picked_up(&self, request: &HelpRequest, operator: &str, source: Option<IpAddr>) {
        let now = self.identity.now_ms();
        self.identity.emit(
            EventKind::HelpPickedUp,
            Outcome::Success,
            operator,
            Some(&format!("device:{}", request.agent_id)),
            source,
            format!(
                "request {} by {}, asked {} s ago",
                request.id,
                request.user,
                now.saturating_sub(request.created_ms) / 1000
            ),
        );
    }

    /// Puts back a request taken for a session that then could not start, so the user's request
    /// is not lost with it (unless it lapsed meanwhile).
    pub async fn put_back(&self, request: &HelpRequest) {
        if !help::is_open(request.expires_ms, self.identity.now_ms()) {
            return;
        }
        match self.store.insert_new(Collection::HelpRequests, &request.code, request).await {
            Ok(_) => self.refresh().await,
            Err(e) => tracing::error!(error = %e, request = %request.id, "cannot put a help request back"),
        }
    }

    /// Open requests, oldest first; lapsed ones are deleted on the way, each recorded once.
    async fn open_requests(&self, now: u64) -> Result<Vec<HelpRequest>, StoreError> {
        let mut open = Vec::new();
        for (code, request) in self.store.list::<HelpRequest>(Collection::HelpRequests).await? {
            if help::is_open(request.expires_ms, now) {
                open.push(request);
            } else if self.store.delete(Collection::HelpRequests, &code).await? {
                self.identity.emit(
                    EventKind::HelpExpired,
                    Outcome::Failure,
                    "system",
                    Some(&format!("device:{}", request.agent_id)),
                    None,
                    format!("request {} by {} lapsed unanswered", request.id, request.user),
                );
            }
        }
        open.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(open)
    }

    /// Re-reads the queue and tells the sockets if it changed. A store error keeps the last
    /// queue shown (taking a request still goes through the store, so nothing stale is taken).
    async fn refresh(&self) {
        match self.open_requests(self.identity.now_ms()).await {
            Ok(open) => {
                self.open.send_if_modified(|shown| {
                    let changed = *shown != open;
                    if changed {
                        *shown = open;
                    }
                    changed
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the help requests"),
        }
    }
}

async fn refresh_loop(desk: Weak<HelpDesk>) {
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(desk) = desk.upgrade() else { break };
        desk.refresh().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use sightline_audit::events::{Commit, Event, EventSink, MemorySink};
    use sightline_store::embedded::Embedded;

    /// Records in memory, and refuses to make anything durable while `full` is set (a full disk).
    #[derive(Default)]
    struct Log {
        events: MemorySink,
        full: AtomicBool,
    }

    impl EventSink for Log {
        fn emit(&self, event: Event) {
            self.events.emit(event);
        }

        fn committed(&self) -> Commit<'_> {
            let full = self.full.load(Ordering::SeqCst);
            Box::pin(async move { if full { Err(AuditUnavailable("disk full".into())) } else { Ok(()) } })
        }
    }

    impl Log {
        fn kinds(&self) -> Vec<EventKind> {
            let events = self.events.0.lock().unwrap_or_else(|e| e.into_inner());
            events.iter().map(|e| e.kind).filter(|k| k.name().starts_with("help.")).collect()
        }
    }

    async fn desk(dir: &std::path::Path, log: Arc<Log>) -> (Arc<HelpDesk>, Device, Store) {
        let store = Store::new(Arc::new(Embedded::open(dir).unwrap()));
        let identity = Arc::new(sightline_identity::for_tests(store.clone(), log).await);
        let token = identity.create_agent_token("admin", "office", None).await.unwrap();
        let device = identity
            .enrol_device(
                &token,
                &hex::encode(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes()),
                "desk",
                None,
            )
            .await
            .unwrap();
        (HelpDesk::start(store.clone(), identity, Duration::from_secs(600)), device, store)
    }

    #[tokio::test]
    async fn a_help_request_the_audit_log_cannot_take_is_withdrawn_and_no_code_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::default());
        let (desk, device, store) = desk(dir.path(), log.clone()).await;
        log.full.store(true, Ordering::SeqCst);

        let refused = desk.ask(&device, "alice", None).await;
        assert!(matches!(refused, Err(HelpError::Audit(_))), "{refused:?}");
        let stored: Vec<(String, HelpRequest)> = store.list(Collection::HelpRequests).await.unwrap();
        assert!(stored.is_empty(), "an unrecorded request stays open: {stored:?}");
        assert!(desk.subscribe().borrow().is_empty());

        // The control: once the log takes it again, the same ask opens a request operators see.
        log.full.store(false, Ordering::SeqCst);
        let request = desk.ask(&device, "alice", None).await.unwrap();
        assert_eq!(desk.subscribe().borrow().iter().map(|r| &r.code).collect::<Vec<_>>(), [&request.code]);
        // The log, once it takes writes again, says the first request never opened.
        use EventKind::{HelpRequested, HelpWithdrawn};
        assert_eq!(log.kinds(), [HelpRequested, HelpWithdrawn, HelpRequested]);
    }
}
