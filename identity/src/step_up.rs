//! Step-up: a fresh passkey assertion before sensitive actions (R14).
//!
//! A step-up is valid 5 minutes (`STEP_UP_TTL_S`) for the login session that made it, never for
//! another one. It is required to request or decide a role change, for a senior's approval of an
//! elevation, and before an auditor views a recording. Failed step-ups count towards the account's
//! lockout like failed logins.

use super::*;

impl Identity {
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
}
