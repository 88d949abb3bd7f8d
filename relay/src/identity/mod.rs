//! Identity and access: users with passkeys and roles, sessions as short-lived tokens, step-up,
//! lockout, role changes under separation of duties, and enrolled agent devices.
//!
//! This module holds the rules and talks to the `Store`; HTTP lives in `api`. Decisions that need
//! no IO (roles, lockout, token checks) are in `sightline-core` and `tokens`.

pub mod devices;
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
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, Webauthn,
};

use crate::events::{Event, EventKind, EventSink, Outcome};
use crate::store::{Collection, Store, StoreError};
use tokens::{Claims, Keyring, StoredKey, TokenSettings};

/// How long a ceremony (registration, login, step-up) may take.
const CEREMONY_TTL: Duration = Duration::from_secs(300);
/// How long a step-up proof lasts (R14).
pub const STEP_UP_TTL_S: u64 = 5 * 60;
/// Sessions end after this much inactivity, whatever the token says (AAL3).
pub const IDLE_TIMEOUT_S: u64 = 15 * 60;
/// Signing keys rotate this often; older keys keep verifying for one more session lifetime.
const KEY_ROTATION_S: u64 = 24 * 60 * 60;
/// Invitation and bootstrap links stay valid this long.
const INVITE_TTL_MS: u64 = 72 * 60 * 60 * 1000;
/// Agent enrolment tokens stay valid this long.
const AGENT_TOKEN_TTL_MS: u64 = 24 * 60 * 60 * 1000;
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
    AuditUnavailable(#[from] crate::audit::AuditUnavailable),
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
}

/// What a one-time enrolment token is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenPurpose {
    BootstrapAdmin,
    Invite { name: String, role: Role, invited_by: String },
    Agent { segment: String, created_by: String },
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
    pub last_activity_s: u64,
}

/// Ceremony state between the start and finish of a WebAuthn exchange.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ceremony {
    Enrol { token_hash: String, user_id: String, name: String, display_name: String, state: PasskeyRegistration },
    Login { user_id: String, state: PasskeyAuthentication },
    StepUp { user_id: String, sid: String, state: PasskeyAuthentication },
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

/// Settings the identity service needs from the relay configuration.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Public origin of the relay, e.g. `https://relay.bank.example` or `http://localhost:8080`.
    pub public_url: url::Url,
    pub tokens: TokenSettings,
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

fn lockout_key_account(user_id: &str) -> String {
    format!("account:{user_id}")
}

fn lockout_key_addr(ip: IpAddr) -> String {
    format!("addr:{ip}")
}

fn session_key(sid: &str) -> String {
    format!("session:{sid}")
}

fn user_revocation_key(user_id: &str) -> String {
    format!("revoked-before:{user_id}")
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
        };
        identity.rotate_keys_if_due().await?;
        Ok(identity)
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
    pub async fn events_committed(&self) -> Result<(), crate::audit::AuditUnavailable> {
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
        facts: crate::events::SessionFacts,
        source: Option<IpAddr>,
        detail: String,
    ) {
        let subject = format!(
            "session:{} device:{} ({}) user:{} ticket:{} reason:{} operator:{}",
            facts.session_id,
            facts.device_id,
            facts.device,
            facts.endpoint_user,
            facts.ticket,
            facts.reason,
            facts.operator
        );
        self.events.emit(Event {
            ts_ms: self.now_ms(),
            kind,
            outcome,
            actor: actor.to_owned(),
            subject: Some(subject),
            source,
            detail,
            session: Some(facts),
        });
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

    // ---------------------------------------------------------------- enrolment tokens

    async fn create_token(&self, purpose: TokenPurpose, ttl_ms: u64) -> Result<String, IdentityError> {
        // A fixed prefix: recognisable in logs and tickets, and never mistaken for a CLI flag.
        let token = format!("sl_{}", random_token());
        let record = EnrolmentToken { purpose, expires_ms: self.now_ms() + ttl_ms };
        self.store.put(Collection::EnrolmentTokens, &token_hash(&token), &record).await?;
        Ok(token)
    }

    /// On a relay with no users, replaces any earlier bootstrap token with a fresh one and
    /// returns it; `None` once someone has enrolled.
    pub async fn bootstrap_token(&self) -> Result<Option<String>, IdentityError> {
        if !self.store.list::<User>(Collection::Users).await?.is_empty() {
            return Ok(None);
        }
        for (hash, token) in self.store.list::<EnrolmentToken>(Collection::EnrolmentTokens).await? {
            if token.purpose == TokenPurpose::BootstrapAdmin {
                self.store.delete(Collection::EnrolmentTokens, &hash).await?;
            }
        }
        let token = self.create_token(TokenPurpose::BootstrapAdmin, INVITE_TTL_MS).await?;
        self.emit(
            EventKind::BootstrapAdmin,
            Outcome::Success,
            "system",
            None,
            None,
            "one-time admin enrolment link issued",
        );
        Ok(Some(token))
    }

    pub fn enrolment_link(&self, token: &str) -> String {
        let mut url = self.settings.public_url.clone();
        url.set_fragment(Some(&format!("/enrol/{token}")));
        url.to_string()
    }

    /// Looks a token up; `consume` takes it for good, so a second taker (or a replay) fails.
    async fn enrolment_token(&self, token: &str, consume: bool) -> Result<EnrolmentToken, IdentityError> {
        let key = token_hash(token);
        let record: Option<EnrolmentToken> = if consume {
            self.store.take(Collection::EnrolmentTokens, &key).await?
        } else {
            self.store.get(Collection::EnrolmentTokens, &key).await?
        };
        let record = record
            .ok_or_else(|| IdentityError::BadRequest("this enrolment link is unknown or was already used".into()))?;
        if record.expires_ms < self.now_ms() {
            return Err(IdentityError::BadRequest("this enrolment link has expired".into()));
        }
        Ok(record)
    }

    async fn peek_token(&self, token: &str) -> Result<EnrolmentToken, IdentityError> {
        self.enrolment_token(token, false).await
    }

    async fn consume_token(&self, token: &str) -> Result<EnrolmentToken, IdentityError> {
        self.enrolment_token(token, true).await
    }

    // ---------------------------------------------------------------- ceremonies

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

    // ---------------------------------------------------------------- users

    /// Stores a user record as given, bypassing invitations and approvals: for in-process
    /// harnesses only (the HTTP API never calls it).
    pub async fn put_user_unchecked(&self, user: &User) -> Result<(), IdentityError> {
        self.store.put(Collection::UserNames, &user.name, &user.id).await?;
        self.store.put(Collection::Users, &user.id, user).await?;
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<User>, IdentityError> {
        let mut users: Vec<User> =
            self.store.list::<User>(Collection::Users).await?.into_iter().map(|(_, u)| u).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, IdentityError> {
        Ok(self.store.get(Collection::Users, id).await?)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>, IdentityError> {
        let Some(id) = self.store.get::<String>(Collection::UserNames, name).await? else { return Ok(None) };
        self.user(&id).await
    }

    /// An admin invites a person with one role; returns the enrolment link.
    pub async fn invite(
        &self,
        admin: &AuthUser,
        name: &str,
        role: Role,
        source: Option<IpAddr>,
    ) -> Result<String, IdentityError> {
        require(admin, roles::Capability::Administer)?;
        let name = valid_name(name)?;
        if self.user_by_name(&name).await?.is_some() {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let token = self
            .create_token(
                TokenPurpose::Invite { name: name.clone(), role, invited_by: admin.user.id.clone() },
                INVITE_TTL_MS,
            )
            .await?;
        self.emit(
            EventKind::UserInvited,
            Outcome::Success,
            &admin.user.name,
            Some(&name),
            source,
            format!("role {}", role.as_str()),
        );
        Ok(self.enrolment_link(&token))
    }

    /// Starts passkey registration for the holder of an enrolment link.
    pub async fn start_enrolment(
        &self,
        token: &str,
        display_name: Option<&str>,
        source: IpAddr,
    ) -> Result<(String, CreationChallengeResponse), IdentityError> {
        self.audit_available()?;
        self.ceremony_budget(source)?;
        let record = self.peek_token(token).await?;
        let name = match &record.purpose {
            TokenPurpose::BootstrapAdmin => valid_name(display_name.unwrap_or("admin"))?,
            TokenPurpose::Invite { name, .. } => name.clone(),
            TokenPurpose::Agent { .. } => {
                return Err(IdentityError::BadRequest("this is an agent enrolment token".into()));
            }
        };
        if self.user_by_name(&name).await?.is_some() {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let user_id = Uuid::new_v4();
        let (challenge, state) = self
            .webauthn
            .start_passkey_registration(user_id, &name, &name, None)
            .map_err(|e| IdentityError::BadRequest(format!("cannot start registration: {e}")))?;
        let ceremony = Ceremony::Enrol {
            token_hash: token_hash(token),
            user_id: user_id.to_string(),
            name: name.clone(),
            display_name: name,
            state,
        };
        Ok((self.begin_ceremony(&ceremony).await?, challenge))
    }

    /// Finishes registration: consumes the link, creates the user, starts a session.
    pub async fn finish_enrolment(
        &self,
        token: &str,
        ceremony_id: &str,
        credential: &RegisterPublicKeyCredential,
        source: Option<IpAddr>,
    ) -> Result<(User, String), IdentityError> {
        let Some(Ceremony::Enrol { token_hash: expected_hash, user_id, name, display_name, state }) =
            self.take_ceremony(ceremony_id).await?
        else {
            return Err(IdentityError::BadRequest("enrolment expired or unknown; open the link again".into()));
        };
        if expected_hash != token_hash(token) {
            return Err(IdentityError::BadRequest("enrolment does not match this link".into()));
        }
        let passkey = self.webauthn.finish_passkey_registration(credential, &state).map_err(|e| {
            self.emit(
                EventKind::UserEnrolled,
                Outcome::Failure,
                &name,
                None,
                source,
                format!("passkey registration failed: {e}"),
            );
            IdentityError::BadRequest("the passkey could not be registered (user verification is required)".into())
        })?;
        // The link is consumed only now, with a verified passkey in hand, and only once.
        let record = self.consume_token(token).await?;
        // An invitation's role applies at once only in the bootstrap phase (one admin, who must
        // still be an admin): that is the audited exception. With two or more admins the new
        // account starts without roles and the grant waits for an admin other than the inviter.
        let mut pending: Option<(Role, String)> = None;
        let (roles, bootstrap) = match &record.purpose {
            TokenPurpose::BootstrapAdmin => (BTreeSet::from([Role::Admin]), true),
            TokenPurpose::Invite { role, invited_by, .. } => {
                let inviter_is_admin = self.user(invited_by).await?.is_some_and(|u| u.roles.contains(&Role::Admin));
                if !inviter_is_admin {
                    return Err(IdentityError::Forbidden("the admin who sent this invitation no longer is one".into()));
                }
                if self.admin_count().await? <= 1 {
                    (BTreeSet::from([*role]), false)
                } else {
                    pending = Some((*role, invited_by.clone()));
                    (BTreeSet::new(), false)
                }
            }
            TokenPurpose::Agent { .. } => {
                return Err(IdentityError::BadRequest("this is an agent enrolment token".into()));
            }
        };
        if !self.store.insert_new(Collection::UserNames, &name, &user_id).await? {
            return Err(IdentityError::Conflict(format!("a user named {name:?} exists")));
        }
        let user = User {
            id: user_id,
            name,
            display_name,
            roles,
            passkeys: vec![passkey],
            created_ms: self.now_ms(),
            bootstrap,
        };
        self.store.put(Collection::Users, &user.id, &user).await?;
        let detail = match (&record.purpose, &pending) {
            (TokenPurpose::BootstrapAdmin, _) => {
                "first admin from the bootstrap link (audited exception to two-admin grants)".to_owned()
            }
            (TokenPurpose::Invite { role, invited_by, .. }, None) => {
                format!(
                    "role {} by invitation of {invited_by} (single-admin bootstrap phase: audited exception)",
                    role.as_str()
                )
            }
            (TokenPurpose::Invite { role, invited_by, .. }, Some(_)) => {
                format!("no role yet: grant of {} requested by {invited_by} awaits a second admin", role.as_str())
            }
            (TokenPurpose::Agent { .. }, _) => String::new(),
        };
        if let Some((role, inviter_id)) = pending {
            let inviter_name = self.user(&inviter_id).await?.map(|u| u.name).unwrap_or_default();
            let req = RoleRequest {
                id: hex::encode(random_bytes::<8>()),
                target_id: user.id.clone(),
                target_name: user.name.clone(),
                change: RoleChange::Grant(role),
                requested_by: inviter_id,
                requested_by_name: inviter_name.clone(),
                created_ms: self.now_ms(),
            };
            self.store.put(Collection::RoleRequests, &req.id, &req).await?;
            self.emit(
                EventKind::RoleChangeRequested,
                Outcome::Success,
                &inviter_name,
                Some(&user.name),
                source,
                describe(req.change),
            );
        }
        self.emit(EventKind::UserEnrolled, Outcome::Success, &user.name, None, source, detail);
        let token = self.start_session(&user).await?;
        self.audit_committed().await?;
        Ok((user, token))
    }

    // ---------------------------------------------------------------- login

    fn check_lockout(&self, attempts: &Attempts) -> Result<(), IdentityError> {
        match self.lockout.check(attempts, self.now_ms()) {
            Verdict::Allowed => Ok(()),
            Verdict::RetryAfter(at) => {
                Err(IdentityError::Throttled { retry_after_s: (at.saturating_sub(self.now_ms())).div_ceil(1000) })
            }
            Verdict::Locked => Err(IdentityError::Locked),
        }
    }

    async fn attempts(&self, key: &str) -> Result<Attempts, IdentityError> {
        Ok(self.store.get(Collection::Lockouts, key).await?.unwrap_or_default())
    }

    pub async fn start_login(
        &self,
        name: &str,
        source: IpAddr,
    ) -> Result<(String, RequestChallengeResponse), IdentityError> {
        self.audit_available()?;
        self.ceremony_budget(source)?;
        self.check_lockout(&self.attempts(&lockout_key_addr(source)).await?)?;
        let user = self.user_by_name(name.trim()).await?;
        let Some(user) = user.filter(|u| !u.passkeys.is_empty()) else {
            // Unknown names fail like wrong passkeys (and count against the address), so the
            // endpoint does not reveal which accounts exist.
            self.record_failure(None, source, "login for unknown account").await?;
            return Err(IdentityError::Unauthenticated);
        };
        self.check_lockout(&self.attempts(&lockout_key_account(&user.id)).await?)?;
        let (challenge, state) = self
            .webauthn
            .start_passkey_authentication(&user.passkeys)
            .map_err(|e| IdentityError::BadRequest(format!("cannot start login: {e}")))?;
        Ok((self.begin_ceremony(&Ceremony::Login { user_id: user.id, state }).await?, challenge))
    }

    async fn record_failure(&self, user: Option<&User>, source: IpAddr, detail: &str) -> Result<(), IdentityError> {
        let now = self.now_ms();
        let policy = self.lockout;
        let mut keys = vec![(lockout_key_addr(source), source.to_string())];
        if let Some(u) = user {
            keys.push((lockout_key_account(&u.id), u.name.clone()));
        }
        self.emit(
            EventKind::LoginFailed,
            Outcome::Failure,
            user.map_or("unknown", |u| u.name.as_str()),
            None,
            Some(source),
            detail,
        );
        for (key, subject) in keys {
            let before: Attempts = self.attempts(&key).await?;
            let after = self
                .store
                .update::<Attempts, _>(Collection::Lockouts, &key, |a| {
                    Some(policy.record_failure(a.unwrap_or_default(), now))
                })
                .await?;
            if after.is_some_and(|a| a.locked) && !before.locked {
                self.emit(
                    EventKind::Locked,
                    Outcome::Failure,
                    "system",
                    Some(&subject),
                    Some(source),
                    format!("locked after {} failures", policy.lock_after),
                );
            }
        }
        Ok(())
    }

    pub async fn finish_login(
        &self,
        ceremony_id: &str,
        credential: &PublicKeyCredential,
        source: IpAddr,
    ) -> Result<(User, String), IdentityError> {
        let Some(Ceremony::Login { user_id, state }) = self.take_ceremony(ceremony_id).await? else {
            self.record_failure(None, source, "login finished without a valid ceremony").await?;
            return Err(IdentityError::Unauthenticated);
        };
        let user = self.user(&user_id).await?.ok_or(IdentityError::Unauthenticated)?;
        self.check_lockout(&self.attempts(&lockout_key_addr(source)).await?)?;
        self.check_lockout(&self.attempts(&lockout_key_account(&user.id)).await?)?;
        let result = match self.webauthn.finish_passkey_authentication(credential, &state) {
            Ok(r) => r,
            Err(e) => {
                self.record_failure(Some(&user), source, &format!("passkey assertion refused: {e}")).await?;
                return Err(IdentityError::Unauthenticated);
            }
        };
        // Keep the signature counter current (clone detection), and clear the failure count.
        let policy = self.lockout;
        let user = self
            .store
            .update::<User, _>(Collection::Users, &user.id, |u| {
                let mut u = u?;
                for pk in &mut u.passkeys {
                    pk.update_credential(&result);
                }
                Some(u)
            })
            .await?
            .ok_or(IdentityError::Unauthenticated)?;
        for key in [lockout_key_account(&user.id), lockout_key_addr(source)] {
            self.store
                .update::<Attempts, _>(Collection::Lockouts, &key, |a| a.map(|a| policy.record_success(a)))
                .await?;
        }
        self.emit(EventKind::Login, Outcome::Success, &user.name, None, Some(source), "passkey with user verification");
        let token = self.start_session(&user).await?;
        // No cookie before the login is on disk (R41).
        self.audit_committed().await?;
        Ok((user, token))
    }

    // ---------------------------------------------------------------- sessions

    /// Opens a session for `user` and returns its token. Called after a verified passkey login or
    /// enrolment; in-process harnesses (integration tests) call it directly. Not reachable over HTTP.
    pub async fn start_session(&self, user: &User) -> Result<String, IdentityError> {
        let now = self.now_s();
        let sid = random_token();
        let record = SessionRecord { user_id: user.id.clone(), auth_time_s: now, last_activity_s: now };
        self.store.put_ephemeral(&session_key(&sid), &record, Duration::from_secs(tokens::MAX_SESSION_S)).await?;
        self.issue_token(user, &sid, now, now)
    }

    fn issue_token(&self, user: &User, sid: &str, auth_time_s: u64, now_s: u64) -> Result<String, IdentityError> {
        let settings = &self.settings.tokens;
        let exp = (now_s + settings.ttl_s.min(tokens::MAX_TOKEN_TTL_S)).min(auth_time_s + tokens::MAX_SESSION_S);
        let claims = Claims {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub: user.id.clone(),
            exp,
            iat: now_s,
            sid: sid.to_owned(),
            auth_time: auth_time_s,
            name: user.name.clone(),
            roles: user.roles.clone(),
        };
        self.keyring()
            .issue(&claims)
            .map_err(|e| IdentityError::Store(StoreError::Io(format!("cannot sign token: {e}"))))
    }

    /// Verifies a session token against keys, revocations and idle time, and loads the user.
    /// Any store failure refuses the request (fail closed).
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, IdentityError> {
        let now = self.now_s();
        let mut ring = self.keyring();
        let claims = match ring.verify(&self.settings.tokens, token, now) {
            Err(tokens::TokenError::UnknownKey) => {
                // Another node may have rotated: reload, but at most every 10 s whatever callers send.
                let due = {
                    let mut last = self.last_key_reload.lock().unwrap_or_else(|e| e.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                    if due {
                        *last = Some(std::time::Instant::now());
                    }
                    due
                };
                if !due {
                    return Err(IdentityError::Unauthenticated);
                }
                self.rotate_keys_if_due().await?;
                ring = self.keyring();
                ring.verify(&self.settings.tokens, token, now).map_err(|_| IdentityError::Unauthenticated)?
            }
            other => other.map_err(|_| IdentityError::Unauthenticated)?,
        };
        let session: SessionRecord =
            self.store.get_ephemeral(&session_key(&claims.sid)).await?.ok_or(IdentityError::Unauthenticated)?;
        if session.user_id != claims.sub || session.last_activity_s + IDLE_TIMEOUT_S < now {
            return Err(IdentityError::Unauthenticated);
        }
        if let Some(before) = self.store.get_ephemeral::<u64>(&user_revocation_key(&claims.sub)).await?
            && claims.auth_time <= before
        {
            return Err(IdentityError::Unauthenticated);
        }
        let user = self.user(&claims.sub).await?.ok_or(IdentityError::Unauthenticated)?;
        if now >= session.last_activity_s + ACTIVITY_GRANULARITY_S {
            let touched = SessionRecord { last_activity_s: now, ..session.clone() };
            let remaining = (session.auth_time_s + tokens::MAX_SESSION_S).saturating_sub(now).max(1);
            self.store.put_ephemeral(&session_key(&claims.sid), &touched, Duration::from_secs(remaining)).await?;
        }
        // Renewed at half its lifetime, whatever the configured lifetime is (the browser's
        // schedule in `core::renewal` relies on it).
        let renewed = if sightline_core::renewal::relay_renews(now, claims.iat, claims.exp) {
            Some(self.issue_token(&user, &claims.sid, claims.auth_time, now)?)
        } else {
            None
        };
        Ok(AuthUser { user, claims, renewed })
    }

    /// Checks that a session is still valid without counting as activity (open sockets re-check).
    pub async fn session_alive(&self, claims: &Claims) -> Result<bool, IdentityError> {
        let now = self.now_s();
        let Some(session) = self.store.get_ephemeral::<SessionRecord>(&session_key(&claims.sid)).await? else {
            return Ok(false);
        };
        if session.last_activity_s + IDLE_TIMEOUT_S < now || claims.auth_time + tokens::MAX_SESSION_S < now {
            return Ok(false);
        }
        if let Some(before) = self.store.get_ephemeral::<u64>(&user_revocation_key(&claims.sub)).await?
            && claims.auth_time <= before
        {
            return Ok(false);
        }
        Ok(self.user(&claims.sub).await?.is_some())
    }

    pub async fn logout(&self, auth: &AuthUser, source: Option<IpAddr>) -> Result<(), IdentityError> {
        self.store.take_ephemeral::<SessionRecord>(&session_key(&auth.claims.sid)).await?;
        self.store.publish(&Revocation::Session { sid: auth.claims.sid.clone() }).await?;
        self.emit(EventKind::Logout, Outcome::Success, &auth.user.name, None, source, "");
        Ok(())
    }

    /// An admin ends every session of a user, on every node, at once.
    pub async fn revoke_sessions(
        &self,
        admin: &AuthUser,
        user_id: &str,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        let target = self.user(user_id).await?.ok_or(IdentityError::NotFound)?;
        self.revoke_user_sessions_now(user_id).await?;
        self.emit(EventKind::SessionsRevoked, Outcome::Success, &admin.user.name, Some(&target.name), source, "");
        Ok(())
    }

    /// Ends every session of `user_id` that began before now. Keeps the latest marker when two
    /// revocations race (a node with a slower clock must not shorten an earlier revocation).
    async fn revoke_user_sessions_now(&self, user_id: &str) -> Result<(), IdentityError> {
        let key = user_revocation_key(user_id);
        let now = self.now_s().max(self.store.get_ephemeral::<u64>(&key).await?.unwrap_or(0));
        self.store.put_ephemeral(&key, &now, Duration::from_secs(tokens::MAX_SESSION_S + 60)).await?;
        self.store.publish(&Revocation::User { user_id: user_id.to_owned() }).await?;
        Ok(())
    }

    // ---------------------------------------------------------------- step-up

    pub async fn start_step_up(&self, auth: &AuthUser) -> Result<(String, RequestChallengeResponse), IdentityError> {
        let (challenge, state) = self
            .webauthn
            .start_passkey_authentication(&auth.user.passkeys)
            .map_err(|e| IdentityError::BadRequest(format!("cannot start step-up: {e}")))?;
        let ceremony = Ceremony::StepUp { user_id: auth.user.id.clone(), sid: auth.claims.sid.clone(), state };
        Ok((self.begin_ceremony(&ceremony).await?, challenge))
    }

    pub async fn finish_step_up(
        &self,
        auth: &AuthUser,
        ceremony_id: &str,
        credential: &PublicKeyCredential,
        source: IpAddr,
    ) -> Result<(), IdentityError> {
        let Some(Ceremony::StepUp { user_id, sid, state }) = self.take_ceremony(ceremony_id).await? else {
            return Err(IdentityError::BadRequest("step-up expired or unknown".into()));
        };
        if user_id != auth.user.id || sid != auth.claims.sid {
            return Err(IdentityError::Forbidden("step-up belongs to another session".into()));
        }
        self.check_lockout(&self.attempts(&lockout_key_account(&auth.user.id)).await?)?;
        if let Err(e) = self.webauthn.finish_passkey_authentication(credential, &state) {
            self.record_failure(Some(&auth.user), source, &format!("step-up assertion refused: {e}")).await?;
            return Err(IdentityError::Unauthenticated);
        }
        self.store.put_ephemeral(&step_up_key(&sid), &self.now_s(), Duration::from_secs(STEP_UP_TTL_S)).await?;
        self.emit(EventKind::StepUp, Outcome::Success, &auth.user.name, None, Some(source), "elevated for 5 minutes");
        self.audit_committed().await?;
        Ok(())
    }

    /// Critical actions call this: a step-up younger than five minutes, in this session.
    pub async fn require_step_up(&self, auth: &AuthUser) -> Result<(), IdentityError> {
        match self.store.get_ephemeral::<u64>(&step_up_key(&auth.claims.sid)).await? {
            Some(at) if at + STEP_UP_TTL_S >= self.now_s() => Ok(()),
            _ => Err(IdentityError::StepUpRequired),
        }
    }

    // ---------------------------------------------------------------- role changes

    /// Logs a refused role change and turns it into the error the caller sees.
    fn role_change_denied(
        &self,
        admin: &AuthUser,
        target: &User,
        source: Option<IpAddr>,
        denied: roles::RoleChangeDenied,
    ) -> IdentityError {
        self.emit(
            EventKind::RoleChangeDenied,
            Outcome::Failure,
            &admin.user.name,
            Some(&target.name),
            source,
            denied.to_string(),
        );
        IdentityError::Forbidden(denied.to_string())
    }

    async fn admin_count(&self) -> Result<usize, IdentityError> {
        Ok(self.users().await?.iter().filter(|u| u.roles.contains(&Role::Admin)).count())
    }

    pub async fn request_role_change(
        &self,
        admin: &AuthUser,
        target_id: &str,
        change: RoleChange,
        source: Option<IpAddr>,
    ) -> Result<RoleRequest, IdentityError> {
        self.audit_available()?;
        let target = self.user(target_id).await?.ok_or(IdentityError::NotFound)?;
        let request = RoleChangeRequest {
            actor: &admin.user.id,
            actor_roles: &admin.user.roles,
            target: &target.id,
            target_roles: &target.roles,
            change,
            admin_count: self.admin_count().await?,
        };
        if let Err(denied) = roles::check_request(request) {
            return Err(self.role_change_denied(admin, &target, source, denied));
        }
        self.require_step_up(admin).await?;
        let req = RoleRequest {
            id: hex::encode(random_bytes::<8>()),
            target_id: target.id.clone(),
            target_name: target.name.clone(),
            change,
            requested_by: admin.user.id.clone(),
            requested_by_name: admin.user.name.clone(),
            created_ms: self.now_ms(),
        };
        self.store.put(Collection::RoleRequests, &req.id, &req).await?;
        self.emit(
            EventKind::RoleChangeRequested,
            Outcome::Success,
            &admin.user.name,
            Some(&target.name),
            source,
            describe(change),
        );
        self.audit_committed().await?;
        Ok(req)
    }

    pub async fn role_requests(&self) -> Result<Vec<RoleRequest>, IdentityError> {
        let mut list: Vec<RoleRequest> =
            self.store.list(Collection::RoleRequests).await?.into_iter().map(|(_, r)| r).collect();
        list.sort_by_key(|r| r.created_ms);
        Ok(list)
    }

    /// A second admin approves (or refuses) a pending change, with a fresh step-up.
    pub async fn decide_role_request(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        // Decisions run one at a time across all nodes: the checks below (admin count, the
        // approver's own roles) must still hold when the change is written.
        let lock = self.lock("role-decisions").await?;
        let result = self.decide_role_request_locked(admin, request_id, approve, source).await;
        self.unlock_mutex("role-decisions", &lock).await;
        result
    }

    /// A cross-node mutex in the store; a holder that died is overtaken after 30 s.
    async fn lock(&self, name: &str) -> Result<String, IdentityError> {
        let holder = random_token();
        for _ in 0..100 {
            let now = self.now_ms();
            if self.store.insert_new(Collection::Mutexes, name, &(holder.clone(), now)).await? {
                return Ok(holder);
            }
            if let Some((_, since)) = self.store.get::<(String, u64)>(Collection::Mutexes, name).await?
                && since + 30_000 < now
            {
                self.store.delete(Collection::Mutexes, name).await?;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(IdentityError::Store(StoreError::Unavailable(format!("{name} is busy"))))
    }

    async fn unlock_mutex(&self, name: &str, holder: &str) {
        let mine =
            matches!(self.store.get::<(String, u64)>(Collection::Mutexes, name).await, Ok(Some((h, _))) if h == holder);
        if mine && let Err(e) = self.store.delete(Collection::Mutexes, name).await {
            tracing::error!(error = %e, "cannot release {name}; it expires in 30 s");
        }
    }

    async fn decide_role_request_locked(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        // The approver's roles as they are now, not as the request that got here saw them.
        let admin = &AuthUser {
            user: self.user(&admin.user.id).await?.ok_or(IdentityError::Unauthenticated)?,
            ..admin.clone()
        };
        require(admin, roles::Capability::Administer)?;
        let req: RoleRequest =
            self.store.get(Collection::RoleRequests, request_id).await?.ok_or(IdentityError::NotFound)?;
        let target = self.user(&req.target_id).await?.ok_or(IdentityError::NotFound)?;
        if approve {
            let check = RoleChangeRequest {
                actor: &admin.user.id,
                actor_roles: &admin.user.roles,
                target: &target.id,
                target_roles: &target.roles,
                change: req.change,
                admin_count: self.admin_count().await?,
            };
            if let Err(denied) = roles::check_approval(&req.requested_by, check) {
                return Err(self.role_change_denied(admin, &target, source, denied));
            }
        } else if admin.user.id == target.id {
            return Err(IdentityError::Forbidden("nobody may decide on their own roles".into()));
        }
        self.require_step_up(admin).await?;
        self.audit_available()?;
        // Taking the request makes the decision happen once, even if two admins click together.
        let Some(req) = self.store.take::<RoleRequest>(Collection::RoleRequests, request_id).await? else {
            return Err(IdentityError::NotFound);
        };
        if approve {
            self.store
                .update::<User, _>(Collection::Users, &target.id, |u| {
                    let mut u = u?;
                    roles::apply(&mut u.roles, req.change);
                    Some(u)
                })
                .await?;
            // Sessions carry roles in their token: end them so the change applies at once.
            self.revoke_user_sessions_now(&target.id).await?;
            let detail = format!("{} (requested by {})", describe(req.change), req.requested_by_name);
            self.emit(
                EventKind::RoleChangeApproved,
                Outcome::Success,
                &admin.user.name,
                Some(&target.name),
                source,
                detail,
            );
        } else {
            let detail = format!("{} (requested by {})", describe(req.change), req.requested_by_name);
            self.emit(
                EventKind::RoleChangeRefused,
                Outcome::Success,
                &admin.user.name,
                Some(&target.name),
                source,
                detail,
            );
        }
        self.audit_committed().await?;
        Ok(())
    }

    // ---------------------------------------------------------------- lockouts

    pub async fn locked_subjects(&self) -> Result<Vec<(String, Attempts)>, IdentityError> {
        Ok(self.store.list::<Attempts>(Collection::Lockouts).await?.into_iter().filter(|(_, a)| a.locked).collect())
    }

    pub async fn unlock(&self, admin: &AuthUser, key: &str, source: Option<IpAddr>) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.unlock_as(&admin.user.name, key, source).await
    }

    /// Break-glass unlock from the relay's command line (`relay unlock`), for operators of the
    /// system when every admin is locked out. Audited like any unlock.
    pub async fn unlock_from_cli(&self, account: Option<&str>, address: Option<IpAddr>) -> Result<(), IdentityError> {
        let key = match (account, address) {
            (Some(name), None) => {
                lockout_key_account(&self.user_by_name(name).await?.ok_or(IdentityError::NotFound)?.id)
            }
            (None, Some(ip)) => lockout_key_addr(ip),
            _ => return Err(IdentityError::BadRequest("give exactly one of --account or --address".into())),
        };
        self.unlock_as("cli", &key, None).await
    }

    async fn unlock_as(&self, actor: &str, key: &str, source: Option<IpAddr>) -> Result<(), IdentityError> {
        if !(key.starts_with("account:") || key.starts_with("addr:")) {
            return Err(IdentityError::BadRequest("unknown lock".into()));
        }
        self.audit_available()?;
        if !self.store.delete(Collection::Lockouts, key).await? {
            return Err(IdentityError::NotFound);
        }
        self.emit(EventKind::Unlocked, Outcome::Success, actor, Some(key), source, "");
        self.audit_committed().await?;
        Ok(())
    }

    pub async fn create_agent_token(
        &self,
        actor: &str,
        segment: &str,
        source: Option<IpAddr>,
    ) -> Result<String, IdentityError> {
        let segment = valid_name(segment)?;
        self.audit_available()?;
        let token = self
            .create_token(
                TokenPurpose::Agent { segment: segment.clone(), created_by: actor.to_owned() },
                AGENT_TOKEN_TTL_MS,
            )
            .await?;
        self.emit(EventKind::DeviceTokenCreated, Outcome::Success, actor, None, source, format!("segment {segment}"));
        self.audit_committed().await?;
        Ok(token)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::MemorySink;
    use crate::store::embedded::Embedded;

    async fn identity(dir: &std::path::Path) -> Identity {
        let store = Store::new(Arc::new(Embedded::open(dir).unwrap()));
        let settings = IdentitySettings {
            public_url: "http://localhost:8080/".parse().unwrap(),
            tokens: TokenSettings { issuer: "http://localhost:8080".into(), audience: "sightline".into(), ttl_s: 600 },
        };
        Identity::new(store, settings, Arc::new(MemorySink::default()), system_clock()).await.unwrap()
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
