//! Login sessions: short-lived tokens over a server-side session that can be revoked on any
//! node, idle sign-out, logout and an admin's revoke-sessions.
//!
//! After a passkey login the relay sets a session cookie (`HttpOnly; Secure; SameSite=Strict`)
//! holding an EdDSA JWT (`tokens`: `kid`, `iss`, `aud`, at most 10 minutes). Every request
//! checks the token against the store too: the session record must exist (logout deletes it),
//! have been active in the last `IDLE_TIMEOUT_S` (15 minutes), be younger than 12 hours, and not
//! predate a "revoke sessions of user X" (an admin's, or an approved role change). A token past
//! half its lifetime is renewed on the next request (`core::renewal`, the arithmetic the viewer
//! shares: it asks at a third of the remaining lifetime while its user had input within the
//! activity window), so any lifetime from 30 s to 10 min keeps an active user signed in and lets
//! an idle one lapse. Revocations are published on the store's event channel, so open sockets on
//! every node close at once; sockets also re-check with `session_alive` (which does not count as
//! activity) in case an event was missed. Any store error refuses (fail closed).
//!
//! People see their own sessions and end any of them, or all but the one in hand (ASVS 7.5.2):
//! each session has a public id (a prefix of the SHA-256 of its secret id) in
//! `Collection::LoginSessions`, pruned as its sessions lapse.

use super::*;

/// One of a person's sessions, as they see it.
#[derive(Debug, Clone, Serialize)]
pub struct OwnSession {
    pub id: String,
    pub current: bool,
    pub source: Option<IpAddr>,
    pub device: Option<String>,
    pub started_s: u64,
    pub last_seen_s: u64,
    /// The start to the millisecond: the list's order.
    #[serde(skip)]
    began_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionEntry {
    user_id: String,
    sid: String,
}

/// The id a person sees for a session: names it without being it.
fn public_id(sid: &str) -> String {
    token_hash(sid)[..16].to_owned()
}

/// Browsers name themselves at length; a list needs the start.
const DEVICE_MAX: usize = 160;

impl Identity {
    /// Opens a session for `user` and returns its token. Called after a verified passkey login or
    /// enrolment; in-process harnesses (integration tests) call it directly. Not reachable over HTTP.
    pub async fn start_session(&self, user: &User) -> Result<String, IdentityError> {
        self.open_session(user, None).await
    }

    /// `start_session`, remembering where the sign-in came from.
    pub(super) async fn open_session(&self, user: &User, source: Option<IpAddr>) -> Result<String, IdentityError> {
        let now_ms = self.now_ms();
        let now = now_ms / 1000;
        let sid = random_token();
        let record = SessionRecord {
            user_id: user.id.clone(),
            auth_time_s: now,
            auth_time_ms: now_ms,
            last_activity_s: now,
            source,
            device: None,
        };
        // The record first: a listing between the two writes must not prune a live session.
        self.store.put_lasting(&session_key(&sid), &record, Duration::from_secs(tokens::MAX_SESSION_S)).await?;
        let entry = SessionEntry { user_id: user.id.clone(), sid: sid.clone() };
        self.store.put(Collection::LoginSessions, &public_id(&sid), &entry).await?;
        self.issue_token(user, &sid, now, now)
    }

    /// Notes the browser a new session's sign-in came from (its `User-Agent`), for its owner's list.
    pub async fn note_device(&self, token: &str, device: &str) -> Result<(), IdentityError> {
        let claims = self
            .keyring()
            .verify(&self.settings.tokens, token, self.now_s())
            .map_err(|_| IdentityError::Unauthenticated)?;
        let key = session_key(&claims.sid);
        let Some(record) = self.store.get_ephemeral::<SessionRecord>(&key).await? else { return Ok(()) };
        let device: String = device.chars().filter(|c| !c.is_control()).take(DEVICE_MAX).collect();
        let remaining = (record.auth_time_s + tokens::MAX_SESSION_S).saturating_sub(self.now_s()).max(1);
        let noted = SessionRecord { device: Some(device), ..record };
        // Only while it stands: a logout meanwhile is not undone.
        self.store.replace_lasting(&key, &noted, Duration::from_secs(remaining)).await?;
        Ok(())
    }

    /// The signed-in person's live sessions, newest first; lapsed ones are pruned on the way.
    pub async fn own_sessions(&self, auth: &AuthUser) -> Result<Vec<OwnSession>, IdentityError> {
        let now = self.now_s();
        let revoked_before = self.store.get_ephemeral::<u64>(&user_revocation_key(&auth.user.id)).await?;
        let mut sessions = Vec::new();
        for (id, entry) in self.store.list::<SessionEntry>(Collection::LoginSessions).await? {
            if entry.user_id != auth.user.id {
                continue;
            }
            let record = self.store.get_ephemeral::<SessionRecord>(&session_key(&entry.sid)).await?;
            let live = record.as_ref().is_some_and(|r| {
                r.last_activity_s + IDLE_TIMEOUT_S >= now && revoked_before.is_none_or(|before| r.began_ms() > before)
            });
            match record {
                Some(r) if live => sessions.push(OwnSession {
                    began_ms: r.began_ms(),
                    current: entry.sid == auth.claims.sid,
                    id,
                    source: r.source,
                    device: r.device,
                    started_s: r.auth_time_s,
                    last_seen_s: r.last_activity_s,
                }),
                _ => {
                    self.store.delete(Collection::LoginSessions, &id).await?;
                }
            }
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.began_ms));
        Ok(sessions)
    }

    /// Ends one of the person's own sessions (`id` from `own_sessions`), or with `None` every one
    /// but the session in hand; on every node at once. Returns how many ended.
    pub async fn end_own_sessions(
        &self,
        auth: &AuthUser,
        id: Option<&str>,
        source: Option<IpAddr>,
    ) -> Result<usize, IdentityError> {
        self.audit_available()?;
        let mine = self.own_sessions(auth).await?;
        let targets: Vec<&OwnSession> = match id {
            Some(id) => vec![mine.iter().find(|s| s.id == id).ok_or(IdentityError::NotFound)?],
            None => mine.iter().filter(|s| !s.current).collect(),
        };
        for target in &targets {
            let Some(entry) = self.store.take::<SessionEntry>(Collection::LoginSessions, &target.id).await? else {
                continue;
            };
            self.store.take_ephemeral::<SessionRecord>(&session_key(&entry.sid)).await?;
            self.store.publish(&Revocation::Session { sid: entry.sid.clone() }).await?;
            self.emit(
                EventKind::SessionsRevoked,
                Outcome::Success,
                &auth.user.name,
                Some(&auth.user.name),
                source,
                format!(
                    "own session {} ended by its owner{} (signed in from {})",
                    target.id,
                    if target.current { " (the one in hand)" } else { "" },
                    target.source.map_or("-".to_owned(), |s| s.to_string())
                ),
            );
        }
        self.audit_committed().await?;
        Ok(targets.len())
    }

    pub(super) fn issue_token(
        &self,
        user: &User,
        sid: &str,
        auth_time_s: u64,
        now_s: u64,
    ) -> Result<String, IdentityError> {
        self.issue_token_as(&self.settings.tokens, user, sid, auth_time_s, now_s)
    }

    /// The token settings of the tokens one node hands another for what it carries: an audience
    /// of their own for each purpose (so no route takes them as a session cookie, and one made
    /// for a socket opens no request) and a minute's life.
    fn forwarded_tokens(&self, carrying: crate::Carrying) -> tokens::TokenSettings {
        tokens::TokenSettings { audience: carrying.audience().into(), ttl_s: 60, ..self.settings.tokens.clone() }
    }

    pub(crate) fn issue_token_as(
        &self,
        settings: &tokens::TokenSettings,
        user: &User,
        sid: &str,
        auth_time_s: u64,
        now_s: u64,
    ) -> Result<String, IdentityError> {
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

    /// A fresh token for a session whose socket this node forwards, or one of whose requests it
    /// carries, to another node (R43): the other node checks the session as for any request. Its
    /// audience is that of `carrying` and it lives a minute: it opens a forwarded viewer socket or
    /// a carried request (`authenticate_forwarded` with the same `carrying`, beside the node's
    /// signed statement for that very socket or request) and nothing else. Not activity, and
    /// refused once the session is not alive.
    pub async fn forward_token(&self, auth: &AuthUser, carrying: crate::Carrying) -> Result<String, IdentityError> {
        if !self.session_alive(&auth.claims).await? {
            return Err(IdentityError::Unauthenticated);
        }
        let settings = self.forwarded_tokens(carrying);
        self.issue_token_as(&settings, &auth.user, &auth.claims.sid, auth.claims.auth_time, self.now_s())
    }

    /// Verifies a token another node made with `forward_token`, as `authenticate` does.
    pub async fn authenticate_forwarded(
        &self,
        token: &str,
        carrying: crate::Carrying,
    ) -> Result<AuthUser, IdentityError> {
        let settings = self.forwarded_tokens(carrying);
        self.authenticate_as(&settings, token).await
    }

    /// Verifies a session token against keys, revocations and idle time, and loads the user.
    /// Any store failure refuses the request (fail closed).
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, IdentityError> {
        let settings = self.settings.tokens.clone();
        self.authenticate_as(&settings, token).await
    }

    async fn authenticate_as(&self, settings: &tokens::TokenSettings, token: &str) -> Result<AuthUser, IdentityError> {
        // A break-glass sign-in is in this node's memory: no store is asked (it is down).
        if settings.audience == self.settings.tokens.audience
            && let Some(checked) = self.authenticate_break_glass(token)
        {
            return checked;
        }
        let now = self.now_s();
        let mut ring = self.keyring();
        let claims = match ring.verify(settings, token, now) {
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
                ring.verify(settings, token, now).map_err(|_| IdentityError::Unauthenticated)?
            }
            other => other.map_err(|_| IdentityError::Unauthenticated)?,
        };
        let session: SessionRecord =
            self.store.get_ephemeral(&session_key(&claims.sid)).await?.ok_or(IdentityError::Unauthenticated)?;
        if session.user_id != claims.sub || session.last_activity_s + IDLE_TIMEOUT_S < now {
            return Err(IdentityError::Unauthenticated);
        }
        if let Some(before) = self.store.get_ephemeral::<u64>(&user_revocation_key(&claims.sub)).await?
            && session.began_ms() <= before
        {
            return Err(IdentityError::Unauthenticated);
        }
        let user = self.user(&claims.sub).await?.ok_or(IdentityError::Unauthenticated)?;
        // Local accounts switched off: their sessions end too, not only their next sign-in.
        if user.directory.is_none() && !self.local_accounts_allowed() {
            return Err(IdentityError::Unauthenticated);
        }
        if now >= session.last_activity_s + ACTIVITY_GRANULARITY_S {
            let touched = SessionRecord { last_activity_s: now, ..session.clone() };
            let remaining = (session.auth_time_s + tokens::MAX_SESSION_S).saturating_sub(now).max(1);
            // Only while it stands: a logout taking it meanwhile is not undone (and the request
            // that raced it is refused).
            let key = session_key(&claims.sid);
            if !self.store.replace_lasting(&key, &touched, Duration::from_secs(remaining)).await? {
                return Err(IdentityError::Unauthenticated);
            }
        }
        // Renewed at half its lifetime, whatever the configured lifetime is (the browser's
        // schedule in `core::renewal` relies on it).
        // Only cookies are renewed; a forwarded token is made afresh for each socket.
        let renewed = if settings.audience == self.settings.tokens.audience
            && sightline_core::renewal::relay_renews(now, claims.iat, claims.exp)
        {
            Some(self.issue_token(&user, &claims.sid, claims.auth_time, now)?)
        } else {
            None
        };
        Ok(AuthUser { user, claims, renewed })
    }

    /// Checks that a session is still valid without counting as activity (open sockets re-check).
    pub async fn session_alive(&self, claims: &Claims) -> Result<bool, IdentityError> {
        if let Some(alive) = self.break_glass_alive(claims) {
            return Ok(alive);
        }
        let now = self.now_s();
        let Some(session) = self.store.get_ephemeral::<SessionRecord>(&session_key(&claims.sid)).await? else {
            return Ok(false);
        };
        if session.last_activity_s + IDLE_TIMEOUT_S < now || claims.auth_time + tokens::MAX_SESSION_S < now {
            return Ok(false);
        }
        if let Some(before) = self.store.get_ephemeral::<u64>(&user_revocation_key(&claims.sub)).await?
            && session.began_ms() <= before
        {
            return Ok(false);
        }
        Ok(self.user(&claims.sub).await?.is_some_and(|u| u.directory.is_some() || self.local_accounts_allowed()))
    }

    pub async fn logout(&self, auth: &AuthUser, source: Option<IpAddr>) -> Result<(), IdentityError> {
        if self.break_glass_logout(auth, source) {
            return Ok(());
        }
        self.store.take_ephemeral::<SessionRecord>(&session_key(&auth.claims.sid)).await?;
        self.store.delete(Collection::LoginSessions, &public_id(&auth.claims.sid)).await?;
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

    /// Ends every session of `user_id` that began up to now (to the millisecond, so a sign-in
    /// right after it stands). Keeps the latest marker when two revocations race (a node with a
    /// slower clock must not shorten an earlier revocation).
    pub(super) async fn revoke_user_sessions_now(&self, user_id: &str) -> Result<(), IdentityError> {
        let key = user_revocation_key(user_id);
        let now = self.now_ms().max(self.store.get_ephemeral::<u64>(&key).await?.unwrap_or(0));
        self.store.put_lasting(&key, &now, Duration::from_secs(tokens::MAX_SESSION_S + 60)).await?;
        self.store.publish(&Revocation::User { user_id: user_id.to_owned() }).await?;
        Ok(())
    }
}
