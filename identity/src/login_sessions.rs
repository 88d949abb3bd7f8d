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

use super::*;

impl Identity {
    /// Opens a session for `user` and returns its token. Called after a verified passkey login or
    /// enrolment; in-process harnesses (integration tests) call it directly. Not reachable over HTTP.
    pub async fn start_session(&self, user: &User) -> Result<String, IdentityError> {
        let now = self.now_s();
        let sid = random_token();
        let record = SessionRecord { user_id: user.id.clone(), auth_time_s: now, last_activity_s: now };
        self.store.put_ephemeral(&session_key(&sid), &record, Duration::from_secs(tokens::MAX_SESSION_S)).await?;
        self.issue_token(user, &sid, now, now)
    }

    pub(super) fn issue_token(
        &self,
        user: &User,
        sid: &str,
        auth_time_s: u64,
        now_s: u64,
    ) -> Result<String, IdentityError> {
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
    pub(super) async fn revoke_user_sessions_now(&self, user_id: &str) -> Result<(), IdentityError> {
        let key = user_revocation_key(user_id);
        let now = self.now_s().max(self.store.get_ephemeral::<u64>(&key).await?.unwrap_or(0));
        self.store.put_ephemeral(&key, &now, Duration::from_secs(tokens::MAX_SESSION_S + 60)).await?;
        self.store.publish(&Revocation::User { user_id: user_id.to_owned() }).await?;
        Ok(())
    }
}
