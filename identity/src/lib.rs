//! Who may do what: users with passkeys and roles, sessions as short-lived tokens, step-up,
//! lockout, role changes under separation of duties, enrolled agent devices and their maintenance
//! windows (R11-R18).
//!
//! Holds the rules and talks to the `Store`; every decision it makes is an audit event, and the
//! acknowledgement of a security action waits for that event to be durable. Decisions that need
//! no IO (roles, lockout, token checks) are in `sightline-core` and `tokens`. `Identity` is one
//! type; its methods live by concept: `enrolment` (tokens, invitations, first passkey), `login`,
//! `login_sessions`, `step_up`, `role_changes`, `passkey_resets` (a directory account's lost
//! passkey, under two admins), `directory` (people from the identity provider), `role_mappings`
//! (their groups to roles, changed under two admins), `lockouts`,
//! `devices` (device keys and maintenance windows). The shared types and the ceremony store are here.
//!
//! Refuses to know: HTTP (cookies, status codes and routes are the relay's surface, which maps
//! `IdentityError`), sessions and media, and which backend the store has.

pub mod break_glass;
pub mod devices;
mod directory;
mod enrolment;
mod lockouts;
mod login;
mod login_sessions;
mod passkey_resets;
mod role_changes;
mod role_mappings;
mod step_up;
pub mod tokens;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use sightline_core::lockout::{Attempts, LockoutPolicy, Verdict};
use sightline_core::roles::{self, Role, RoleChange, RoleChangeRequest};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration, RequestChallengeResponse, Uuid,
    Webauthn,
};

use sightline_audit::events::{Event, EventKind, EventSink, Outcome};
use sightline_store::{Collection, Store, StoreError};
use tokens::{Claims, Keyring, StoredKey, TokenSettings};

/// The browser's answers to a registration and a login ceremony (WebAuthn JSON), as the HTTP
/// surface receives them.
pub use directory::{DirectoryAccess, DirectoryGrant, DirectoryLink, DirectoryNext, DirectorySignIn, RecheckFailure};
pub use enrolment::PendingEnrolment;
pub use login_sessions::OwnSession;
pub use passkey_resets::PasskeyResetRequest;
pub use role_mappings::{ApprovedMapping, MappingRequest};
pub use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

/// How long a ceremony (registration, login, step-up) may take.
const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// Name of the session cookie (the relay sets it; a node forwarding a viewer presents it).
pub const SESSION_COOKIE: &str = "sightline_session";
/// The audience of the tokens one node hands another for a viewer it forwards (R43).
pub const FORWARDED_AUDIENCE: &str = "sightline-forwarded-viewer";
/// The audience of tokens one node hands another to carry one HTTP request of its user (R43).
pub const CARRIED_AUDIENCE: &str = "sightline-carried-request";

/// What a token one node hands another is for: each has an audience of its own, so a token made
/// for one opens nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrying {
    /// A viewer's socket forwarded to the node that runs the session.
    ViewerSocket,
    /// One HTTP request carried to the node that can answer it.
    Request,
}

impl Carrying {
    fn audience(self) -> &'static str {
        match self {
            Carrying::ViewerSocket => FORWARDED_AUDIENCE,
            Carrying::Request => CARRIED_AUDIENCE,
        }
    }
}
/// How long a step-up proof lasts (R14).
pub const STEP_UP_TTL_S: u64 = 5 * 60;
/// Sessions end after this much inactivity, whatever the token says (AAL3).
pub const IDLE_TIMEOUT_S: u64 = 15 * 60;
/// Signing keys rotate this often; older keys keep verifying for one more session lifetime.
const KEY_ROTATION_S: u64 = 24 * 60 * 60;
/// Invitation and bootstrap links stay valid this long.
pub const INVITE_TTL_MS: u64 = 72 * 60 * 60 * 1000;
/// Agent enrolment tokens stay valid this long.
pub const AGENT_TOKEN_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Session activity is written at most this often (saves a store write per request).
const ACTIVITY_GRANULARITY_S: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not signed in")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("too many failed attempts; retry in {retry_after_s} s")]
    Throttled { retry_after_s: u64 },
    #[error("locked after repeated failures; an admin must unlock it")]
    Locked,
    #[error("a fresh passkey confirmation (step-up) is required")]
    StepUpRequired,
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// The audit log cannot be written: security actions are refused (R41).
    #[error(transparent)]
    AuditUnavailable(#[from] sightline_audit::AuditUnavailable),
}

/// A person's account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub roles: BTreeSet<Role>,
    pub passkeys: Vec<Passkey>,
    pub created_ms: u64,
    /// Enrolled from the bootstrap link (the one audited exception to two-admin role grants).
    #[serde(default)]
    pub bootstrap: bool,
    /// The directory identity this account belongs to (R12); none for invited accounts.
    #[serde(default)]
    pub directory: Option<DirectoryLink>,
    /// The policy segments the account may reach, where its provider's table narrows them by
    /// group (R12); `None`: the policy alone decides (every invited account).
    #[serde(default)]
    pub segments: Option<BTreeSet<String>>,
}

/// What a one-time enrolment token is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenPurpose {
    BootstrapAdmin,
    Invite {
        name: String,
        role: Role,
        invited_by: String,
    },
    Agent {
        segment: String,
        created_by: String,
    },
    /// A new key for an enrolled device (its endpoint was reinstalled): the device keeps its id,
    /// name and segment, and the change is a `device.key_changed` record.
    Rekey {
        device_id: String,
        created_by: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrolmentToken {
    pub purpose: TokenPurpose,
    pub expires_ms: u64,
}

/// A role change waiting for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRequest {
    pub id: String,
    pub target_id: String,
    pub target_name: String,
    pub change: RoleChange,
    pub requested_by: String,
    pub requested_by_name: String,
    pub created_ms: u64,
}

/// Server-side session state; its absence means logged out or revoked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub auth_time_s: u64,
    /// When the session began, in milliseconds: revocations and the person's list of sessions
    /// go by it (0 in records written before it existed: the start of `auth_time_s` then).
    #[serde(default)]
    pub auth_time_ms: u64,
    pub last_activity_s: u64,
    /// Where the sign-in came from, and the browser it named (shown to the person).
    #[serde(default)]
    pub source: Option<IpAddr>,
    #[serde(default)]
    pub device: Option<String>,
}

/// Ceremony state between the start and finish of a WebAuthn exchange.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ceremony {
    Enrol {
        token_hash: String,
        user_id: String,
        name: String,
        display_name: String,
        state: PasskeyRegistration,
    },
    Login {
        user_id: String,
        state: PasskeyAuthentication,
        /// The provider whose sign-in came first, for a directory account.
        #[serde(default)]
        directory: Option<String>,
        #[serde(default)]
        sign_in: Option<Box<DirectorySignIn>>,
    },
    DirectoryEnrol {
        user_id: String,
        name: String,
        sign_in: Box<DirectorySignIn>,
        state: PasskeyRegistration,
    },
    StepUp {
        user_id: String,
        sid: String,
        state: PasskeyAuthentication,
    },
}

/// A verified request's identity, with roles as stored now (not as the token remembers them).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub claims: Claims,
    /// A renewed token to hand back, when the current one is half-spent.
    pub renewed: Option<String>,
}

impl AuthUser {
    pub fn allows(&self, capability: roles::Capability) -> bool {
        roles::allows(&self.user.roles, capability)
    }
}

impl User {
    /// Whether the account's directory groups reach `segment` (always, when they do not narrow
    /// the segments). Roles and the policy still decide the rest.
    pub fn reaches(&self, segment: &str) -> bool {
        self.segments.as_ref().is_none_or(|reached| reached.contains(segment))
    }
}

/// Settings the identity service needs from the relay configuration.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Public origin of the relay, e.g. `https://relay.bank.example` or `http://localhost:8080`.
    pub public_url: url::Url,
    pub tokens: TokenSettings,
    /// Whether invited (local) accounts sign in beside directory ones (R12).
    pub local_accounts: bool,
}

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Wall clock in Unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

pub struct Identity {
    /// Ceremonies an address may start (login, enrolment): anonymous callers create server state,
    /// so each address gets a budget (60 a minute, bursts of 30).
    ceremony_starts: governor::DefaultKeyedRateLimiter<IpAddr>,
    ceremony_checks: std::sync::atomic::AtomicU64,
    /// Last reload of signing keys prompted by an unknown `kid` (bounded: such tokens are cheap to forge).
    last_key_reload: std::sync::Mutex<Option<std::time::Instant>>,
    store: Store,
    webauthn: Webauthn,
    keyring: RwLock<Arc<Keyring>>,
    pub settings: IdentitySettings,
    events: Arc<dyn EventSink>,
    lockout: LockoutPolicy,
    clock: Clock,
    /// Each device's record as this node last read it from the store, and when (`device_record`).
    devices_seen: std::sync::Mutex<std::collections::HashMap<String, (devices::Device, u64)>>,
    /// Break-glass sign-in on this node, where the policy names holders (R43).
    break_glass: std::sync::OnceLock<break_glass::BreakGlassDesk>,
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing is unrecoverable for a security service: refuse to continue.
    getrandom::fill(&mut buf).unwrap_or_else(|e| panic!("operating system RNG failed: {e}"));
    buf
}

pub fn random_token() -> String {
    B64.encode(random_bytes::<32>())
}

/// Tokens are stored by hash: a copy of the store does not hand out enrolment links.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// How audit records name an enrolment token: a prefix of its stored hash (names the token
/// without letting the record be used as one).
pub fn token_id(token: &str) -> String {
    token_hash(token)[..16].to_owned()
}

fn lockout_key_account(user_id: &str) -> String {
    format!("account:{user_id}")
}

fn lockout_key_addr(ip: IpAddr) -> String {
    format!("addr:{ip}")
}

fn session_key(sid: &str) -> String {
    format!("session:{sid}")
}

impl SessionRecord {
    /// When the session began (ms).
    pub fn began_ms(&self) -> u64 {
        if self.auth_time_ms > 0 { self.auth_time_ms } else { self.auth_time_s * 1000 }
    }
}

/// The instant (Unix ms) at or before which every session of the user that began is revoked.
fn user_revocation_key(user_id: &str) -> String {
    format!("revoked-before-ms:{user_id}")
}

fn step_up_key(sid: &str) -> String {
    format!("step-up:{sid}")
}

/// Broadcast between relay nodes so open sockets close at once everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Revocation {
    Session { sid: String },
    User { user_id: String },
    Device { device_id: String },
}

impl Identity {
    pub async fn new(
        store: Store,
        settings: IdentitySettings,
        events: Arc<dyn EventSink>,
        clock: Clock,
    ) -> anyhow::Result<Identity> {
        let origin = &settings.public_url;
        let rp_id = origin.host_str().ok_or_else(|| anyhow::anyhow!("public URL {origin} has no host"))?;
        let webauthn = webauthn_rs::WebauthnBuilder::new(rp_id, origin)
            .map_err(|e| anyhow::anyhow!("WebAuthn cannot use origin {origin} (rp id {rp_id}): {e}; use a host name such as localhost, not an IP address"))?
            .rp_name("Sightline")
            .timeout(CEREMONY_TTL)
            .build()?;
        let per_minute = std::num::NonZeroU32::new(60).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(30).unwrap_or(std::num::NonZeroU32::MIN);
        let identity = Identity {
            ceremony_starts: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute).allow_burst(burst)),
            ceremony_checks: 0.into(),
            last_key_reload: std::sync::Mutex::new(None),
            store,
            webauthn,
            keyring: RwLock::new(Arc::new(Keyring::new(&[]).0)),
            settings,
            events,
            lockout: LockoutPolicy::STANDARD,
            clock,
            devices_seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            break_glass: std::sync::OnceLock::new(),
        };
        identity.rotate_keys_if_due().await?;
        Ok(identity)
    }

    /// Spends one ceremony start from `source`'s budget (for ceremonies that begin elsewhere,
    /// such as a directory sign-in).
    pub fn spend_ceremony_budget(&self, source: IpAddr) -> Result<(), IdentityError> {
        self.ceremony_budget(source)
    }

    /// Spends one ceremony start from `source`'s budget.
    fn ceremony_budget(&self, source: IpAddr) -> Result<(), IdentityError> {
        // Forget idle addresses now and then, so the limiter's memory stays bounded too.
        if self.ceremony_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed).is_multiple_of(4096) {
            self.ceremony_starts.retain_recent();
        }
        self.ceremony_starts.check_key(&source).map_err(|_| IdentityError::Throttled { retry_after_s: 2 })
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether security actions may start: refused while the audit log cannot be written.
    pub fn audit_available(&self) -> Result<(), IdentityError> {
        Ok(self.events.available()?)
    }

    /// Waits until every event emitted so far is durable; an action is acknowledged only then.
    pub async fn audit_committed(&self) -> Result<(), IdentityError> {
        Ok(self.events.committed().await?)
    }

    /// The same, with the audit error itself (for callers outside the identity service).
    pub async fn events_committed(&self) -> Result<(), sightline_audit::AuditUnavailable> {
        self.events.committed().await
    }

    pub fn emit(
        &self,
        kind: EventKind,
        outcome: Outcome,
        actor: &str,
        subject: Option<&str>,
        source: Option<IpAddr>,
        detail: impl Into<String>,
    ) {
        self.events.emit(Event {
            ts_ms: self.now_ms(),
            kind,
            outcome,
            actor: actor.to_owned(),
            subject: subject.map(str::to_owned),
            source,
            detail: detail.into(),
            session: None,
        });
    }

    /// A session event: the subject for people, the facts as fields.
    pub fn emit_session(
        &self,
        kind: EventKind,
        outcome: Outcome,
        actor: &str,
        facts: sightline_audit::events::SessionFacts,
        source: Option<IpAddr>,
        detail: String,
    ) {
        self.events.emit(Event::of_session(self.now_ms(), kind, outcome, actor, facts, source, detail));
    }

    fn keyring(&self) -> Arc<Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads signing keys from the store, creating a new one when the newest is due for
    /// rotation. Every node does this at start and hourly; two nodes rotating at once only
    /// produce two valid keys.
    pub async fn rotate_keys_if_due(&self) -> Result<(), IdentityError> {
        let now = self.now_s();
        let mut stored: Vec<StoredKey> =
            self.store.list::<StoredKey>(Collection::SigningKeys).await?.into_iter().map(|(_, k)| k).collect();
        let newest = stored.iter().map(|k| k.created_s).max();
        if newest.is_none_or(|t| t + KEY_ROTATION_S <= now) {
            let key = StoredKey::new(hex::encode(random_bytes::<8>()), random_bytes::<32>(), now);
            self.store.insert_new(Collection::SigningKeys, &key.kid, &key).await?;
            stored.push(key);
        }
        // Keys older than a rotation period plus a whole session can no longer have live tokens.
        for old in stored.iter().filter(|k| k.created_s + KEY_ROTATION_S + tokens::MAX_SESSION_S < now) {
            self.store.delete(Collection::SigningKeys, &old.kid).await?;
        }
        stored.retain(|k| k.created_s + KEY_ROTATION_S + tokens::MAX_SESSION_S >= now);
        let (ring, problems) = Keyring::new(&stored);
        for p in problems {
            tracing::error!("{p}");
        }
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    // Ceremonies (registration, login, step-up) in progress, shared by the files below.

    /// Stores a ceremony's state until its finish (at most `CEREMONY_TTL`); returns its id.
    async fn begin_ceremony(&self, ceremony: &Ceremony) -> Result<String, IdentityError> {
        let id = random_token();
        self.store.put_ephemeral(&format!("ceremony:{id}"), ceremony, CEREMONY_TTL).await?;
        Ok(id)
    }

    /// Takes a ceremony's state: each ceremony finishes at most once.
    async fn take_ceremony(&self, id: &str) -> Result<Option<Ceremony>, IdentityError> {
        Ok(self.store.take_ephemeral(&format!("ceremony:{id}")).await?)
    }
}

/// A role change as the audit detail names it.
fn describe(change: RoleChange) -> String {
    match change {
        RoleChange::Grant(r) => format!("grant {}", r.as_str()),
        RoleChange::Revoke(r) => format!("revoke {}", r.as_str()),
    }
}

pub fn require(auth: &AuthUser, capability: roles::Capability) -> Result<(), IdentityError> {
    if auth.allows(capability) { Ok(()) } else { Err(IdentityError::Forbidden("your roles do not allow this".into())) }
}

/// User, segment and device names: 1-64 characters of letters, digits, `.`, `-`, `_`, `@`.
pub fn valid_name(name: &str) -> Result<String, IdentityError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        return Err(IdentityError::BadRequest("names are 1-64 letters, digits, '.', '-', '_' or '@'".into()));
    }
    Ok(name.to_owned())
}

/// An identity service for unit tests, on `store`, writing its events to `events` (this crate's
/// tests, and others' with the `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub async fn for_tests(store: Store, events: Arc<dyn EventSink>) -> Identity {
    let settings = IdentitySettings {
        public_url: "http://localhost:8080/".parse().unwrap(),
        tokens: TokenSettings { issuer: "http://localhost:8080".into(), audience: "sightline".into(), ttl_s: 600 },
        local_accounts: true,
    };
    Identity::new(store, settings, events, system_clock()).await.unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_audit::events::MemorySink;
    use sightline_store::embedded::Embedded;

    async fn identity(dir: &std::path::Path) -> Identity {
        for_tests(Store::new(Arc::new(Embedded::open(dir).unwrap())), Arc::new(MemorySink::default())).await
    }

    /// An admin with a live session and a fresh step-up.
    async fn admin(identity: &Identity, name: &str) -> AuthUser {
        let user = User {
            id: format!("id-{name}"),
            name: name.into(),
            display_name: name.into(),
            roles: BTreeSet::from([Role::Admin]),
            passkeys: vec![],
            created_ms: 0,
            bootstrap: false,
            directory: None,
            segments: None,
        };
        identity.put_user_unchecked(&user).await.unwrap();
        let token = identity.start_session(&user).await.unwrap();
        let auth = identity.authenticate(&token).await.unwrap();
        identity
            .store
            .put_ephemeral(&step_up_key(&auth.claims.sid), &identity.now_s(), Duration::from_secs(300))
            .await
            .unwrap();
        auth
    }

    /// A token one node hands another opens only what it was made for: a viewer socket's token
    /// is no carried request's, neither is a session cookie, and a cookie is neither (R43).
    #[tokio::test]
    async fn tokens_between_nodes_open_only_what_they_were_made_for() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity(dir.path()).await;
        let auth = admin(&identity, "root").await;
        let socket = identity.forward_token(&auth, Carrying::ViewerSocket).await.unwrap();
        let request = identity.forward_token(&auth, Carrying::Request).await.unwrap();
        assert!(identity.authenticate_forwarded(&socket, Carrying::ViewerSocket).await.is_ok());
        assert!(identity.authenticate_forwarded(&request, Carrying::Request).await.is_ok());
        assert!(identity.authenticate_forwarded(&socket, Carrying::Request).await.is_err());
        assert!(identity.authenticate_forwarded(&request, Carrying::ViewerSocket).await.is_err());
        for token in [&socket, &request] {
            assert!(identity.authenticate(token).await.is_err());
        }
        let cookie = identity.start_session(&identity.user(&auth.user.id).await.unwrap().unwrap()).await.unwrap();
        for carrying in [Carrying::ViewerSocket, Carrying::Request] {
            assert!(identity.authenticate_forwarded(&cookie, carrying).await.is_err());
        }
    }

    /// The first administrator names themselves (no silent "admin"); an invitation's holder gets
    /// the invited name, and a different name typed is refused rather than ignored (issue 24).
    #[tokio::test]
    async fn enrolment_names_are_chosen_or_invited_never_made_up() {
        let dir = tempfile::tempdir().unwrap();
        let identity = identity(dir.path()).await;
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let bootstrap = identity.bootstrap_token().await.unwrap().unwrap();
        for empty in [None, Some(""), Some("  ")] {
            let e = identity.start_enrolment(&bootstrap, empty, source).await.unwrap_err();
            assert!(e.to_string().contains("chooses a user name"), "{e}");
        }
        assert!(identity.start_enrolment(&bootstrap, Some("ada"), source).await.is_ok());

        let admin = admin(&identity, "root").await;
        let link = identity.invite(&admin, "olga", Role::Operator, None).await.unwrap();
        let token = link.rsplit('/').next().unwrap();
        let e = identity.start_enrolment(token, Some("mallory"), source).await.unwrap_err();
        assert!(e.to_string().contains(r#"this invitation is for "olga""#), "{e}");
        for same in [None, Some("olga")] {
            assert!(identity.start_enrolment(token, same, source).await.is_ok());
        }
    }

    /// The device's key, the token it used and the admin who made that token are on the record
    /// (R18, R39): verifiers check receipts and seals against the key the log holds, so a key
    /// swapped in the store later is not the enrolled one.
    #[tokio::test]
    async fn an_enrolment_puts_the_devices_key_its_token_and_its_admin_on_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let events = MemorySink::default();
        let identity =
            for_tests(Store::new(Arc::new(Embedded::open(dir.path()).unwrap())), Arc::new(events.clone())).await;
        let token = identity.create_agent_token("ada", "office", None).await.unwrap();
        let key = hex::encode(ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes());
        let device = identity.enrol_device(&token, &key, "front-desk", None).await.unwrap();
        let recorded = events.0.lock().unwrap().clone();
        let created = recorded.iter().find(|e| e.kind == EventKind::DeviceTokenCreated).unwrap();
        let enrolled = recorded.iter().find(|e| e.kind == EventKind::DeviceEnrolled).unwrap();
        assert_eq!(enrolled.actor, format!("device:{}", device.id));
        assert_eq!(sightline_audit::events::enrolled_key(&enrolled.detail), Some(key.as_str()));
        let id = token_id(&token);
        assert!(created.detail.ends_with(&format!("token {id}")), "{}", created.detail);
        assert!(enrolled.detail.ends_with(&format!("token {id} created by ada")), "{}", enrolled.detail);
        assert!(!enrolled.detail.contains(&token), "the record names the token, it does not hold it");
    }

    /// A device takes a new key only with an admin's re-key token, after a step-up: it keeps its
    /// id, the record names both keys and the admin, the old key no longer authenticates, and the
    /// device's connections are told to go (issue 23).
    #[tokio::test]
    async fn a_key_change_needs_an_admins_token_and_is_on_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let events = MemorySink::default();
        let identity =
            for_tests(Store::new(Arc::new(Embedded::open(dir.path()).unwrap())), Arc::new(events.clone())).await;
        let sign = |seed: u8, msg: &[u8]| {
            use ed25519_dalek::Signer;
            hex::encode(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).sign(msg).to_bytes())
        };
        let public =
            |seed: u8| hex::encode(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes());
        let token = identity.create_agent_token("ada", "office", None).await.unwrap();
        let device = identity.enrol_device(&token, &public(7), "front-desk", None).await.unwrap();

        // No step-up, no token; an operator gets none either.
        let root = admin(&identity, "root").await;
        identity.store.take_ephemeral::<u64>(&step_up_key(&root.claims.sid)).await.unwrap();
        assert!(matches!(
            identity.create_rekey_token(&root, &device.id, None).await,
            Err(IdentityError::StepUpRequired)
        ));
        let root = admin(&identity, "root2").await;
        let mut revocations = identity.store.subscribe();
        let rekey = identity.create_rekey_token(&root, &device.id, None).await.unwrap();
        let rekeyed = identity.enrol_device(&rekey, &public(8), "ignored", None).await.unwrap();
        assert_eq!((rekeyed.id.as_str(), rekeyed.name.as_str()), (device.id.as_str(), "front-desk"));
        let published: Revocation = serde_json::from_slice(&revocations.recv().await.unwrap()).unwrap();
        assert_eq!(
            published,
            Revocation::Device { device_id: device.id.clone() },
            "the old key's links are told to go"
        );

        let recorded = events.0.lock().unwrap().clone();
        let changed = recorded.iter().find(|e| e.kind == EventKind::DeviceKeyChanged).unwrap();
        assert_eq!(changed.actor, format!("device:{}", device.id));
        assert_eq!(sightline_audit::events::enrolled_key(&changed.detail), Some(public(8).as_str()));
        assert!(changed.detail.contains(&format!("replaces ed25519:{}", public(7))), "{}", changed.detail);
        assert!(
            changed.detail.ends_with(&format!("token {} created by root2", token_id(&rekey))),
            "{}",
            changed.detail
        );

        let challenge = [1u8; 32];
        let message = sightline_proto::agent_auth::signed_message(&challenge, &device.id);
        assert!(identity.authenticate_device(&device.id, &challenge, &sign(7, &message), None).await.is_err());
        assert!(identity.authenticate_device(&device.id, &challenge, &sign(8, &message), None).await.is_ok());
        assert!(!identity.device_holds_key(&device.id, &public(7)).await.unwrap());
        // The token worked once.
        assert!(identity.enrol_device(&rekey, &public(9), "front-desk", None).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_approvals_cannot_remove_the_last_admin() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Arc::new(identity(dir.path()).await);
        let (a, b, c) = (admin(&identity, "a").await, admin(&identity, "b").await, admin(&identity, "c").await);
        // A circle of requests: a asks to demote b, b asks to demote c, c asks to demote a.
        let r1 = identity.request_role_change(&a, &b.user.id, RoleChange::Revoke(Role::Admin), None).await.unwrap();
        let r2 = identity.request_role_change(&b, &c.user.id, RoleChange::Revoke(Role::Admin), None).await.unwrap();
        let r3 = identity.request_role_change(&c, &a.user.id, RoleChange::Revoke(Role::Admin), None).await.unwrap();
        // Each approved by the one admin who is neither requester nor target, all at once.
        let (x, y, z) = tokio::join!(
            identity.decide_role_request(&c, &r1.id, true, None),
            identity.decide_role_request(&a, &r2.id, true, None),
            identity.decide_role_request(&b, &r3.id, true, None),
        );
        let admins = identity.admin_count().await.unwrap();
        assert!(admins >= 1, "no admin left: {x:?} {y:?} {z:?}");
        assert!([&x, &y, &z].iter().any(|r| r.is_err()), "at least one approval must be refused");
    }
}
