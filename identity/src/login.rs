//! Passkey login, and the lockout that counts its failures (R13).

use super::*;

impl Identity {
    pub(super) fn check_lockout(&self, attempts: &Attempts) -> Result<(), IdentityError> {
        match self.lockout.check(attempts, self.now_ms()) {
            Verdict::Allowed => Ok(()),
            Verdict::RetryAfter(at) => {
                Err(IdentityError::Throttled { retry_after_s: (at.saturating_sub(self.now_ms())).div_ceil(1000) })
            }
            Verdict::Locked => Err(IdentityError::Locked),
        }
    }

    pub(super) async fn attempts(&self, key: &str) -> Result<Attempts, IdentityError> {
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
        // A directory account signs in through its provider first, every time (R12); local
        // accounts only while they are allowed. Refused like a wrong passkey, and counted.
        let user = user.filter(|u| u.directory.is_none() && self.local_accounts_allowed());
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
        let ceremony = Ceremony::Login { user_id: user.id, state, directory: None, sign_in: None };
        Ok((self.begin_ceremony(&ceremony).await?, challenge))
    }

    pub(super) async fn record_failure(
        &self,
        user: Option<&User>,
        source: IpAddr,
        detail: &str,
    ) -> Result<(), IdentityError> {
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
        let Some(Ceremony::Login { user_id, state, directory, sign_in }) = self.take_ceremony(ceremony_id).await?
        else {
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
        // The ceremony began with the passkeys the account had then; one removed since (a reset
        // approved meanwhile) no longer signs in.
        if !user.passkeys.iter().any(|pk| pk.cred_id() == result.cred_id()) {
            self.record_failure(Some(&user), source, "the passkey was removed from the account").await?;
            return Err(IdentityError::Unauthenticated);
        }
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
        let how = match &directory {
            Some(provider) => format!("directory {provider} then passkey with user verification"),
            None => "passkey with user verification".to_owned(),
        };
        if let Some(sign_in) = &sign_in {
            self.directory_session_opened(&user, sign_in).await?;
        }
        let token = self.open_session(&user, Some(source)).await?;
        // A reset approved between the check above and the session: the approval removes the
        // passkeys and then ends the person's sessions, so either this re-read sees the passkey
        // gone or the approval's end covers this session.
        let still_held =
            self.user(&user.id).await?.is_some_and(|u| u.passkeys.iter().any(|pk| pk.cred_id() == result.cred_id()));
        if !still_held {
            self.revoke_user_sessions_now(&user.id).await?;
            self.record_failure(Some(&user), source, "the passkey was removed from the account").await?;
            return Err(IdentityError::Unauthenticated);
        }
        self.emit(EventKind::Login, Outcome::Success, &user.name, None, Some(source), how);
        // No cookie before the login is on disk (R41).
        self.audit_committed().await?;
        Ok((user, token))
    }
}
