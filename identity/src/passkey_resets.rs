//! Passkey resets of directory accounts: a person who lost their passkey is let back in without
//! any admin being able to take their account.
//!
//! One admin requests the reset and a different admin approves it, each with a fresh step-up
//! (the rules are `sightline_core::passkey_reset`). Approval removes the account's passkeys and
//! ends every session of the person on every node; it hands out nothing. The next passkey is
//! enrolled only at the end of a sign-in at the identity provider as the same issuer and subject
//! (`directory::finish_directory_enrolment` completes an account that has none), so the person
//! proves who they are to the directory again, and an admin who is not that person cannot.
//! Decisions share the cross-node mutex of role decisions and take the request from the store
//! once, so two admins clicking together decide once. Every request, decision and refusal is on
//! record before it is acknowledged.

use super::*;

use sightline_core::passkey_reset::{self, Pending, ResetDenied, ResetFacts};

/// A passkey reset waiting for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasskeyResetRequest {
    pub id: String,
    pub target_id: String,
    pub target_name: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub created_ms: u64,
    /// The passkeys the reset removes (credential ids, hex): those the account held when it was
    /// asked for. A passkey enrolled after the request is not touched by it.
    pub credentials: Vec<String>,
}

fn credential_id(passkey: &Passkey) -> String {
    hex::encode::<&[u8]>(passkey.cred_id().as_ref())
}

fn facts<'a>(admin: &'a AuthUser, target: &'a User, removable: usize) -> ResetFacts<'a> {
    ResetFacts {
        actor: &admin.user.id,
        actor_roles: &admin.user.roles,
        target: &target.id,
        target_in_directory: target.directory.is_some(),
        target_passkeys: removable,
    }
}

impl Identity {
    fn reset_denied(
        &self,
        admin: &AuthUser,
        target: &User,
        source: Option<IpAddr>,
        denied: ResetDenied,
    ) -> IdentityError {
        self.emit(
            EventKind::PasskeyResetDenied,
            Outcome::Failure,
            &admin.user.name,
            Some(&target.name),
            source,
            denied.to_string(),
        );
        IdentityError::Forbidden(denied.to_string())
    }

    pub async fn request_passkey_reset(
        &self,
        admin: &AuthUser,
        target_id: &str,
        source: Option<IpAddr>,
    ) -> Result<PasskeyResetRequest, IdentityError> {
        self.audit_available()?;
        let target = self.user(target_id).await?.ok_or(IdentityError::NotFound)?;
        let waiting = self.passkey_resets().await?.iter().any(|r| r.target_id == target.id);
        if let Err(denied) = passkey_reset::check_request(facts(admin, &target, target.passkeys.len()), waiting) {
            let error = self.reset_denied(admin, &target, source, denied);
            self.audit_committed().await?;
            return Err(error);
        }
        self.require_step_up(admin).await?;
        let request = PasskeyResetRequest {
            id: hex::encode(random_bytes::<8>()),
            target_id: target.id.clone(),
            target_name: target.name.clone(),
            requested_by: admin.user.id.clone(),
            requested_by_name: admin.user.name.clone(),
            created_ms: self.now_ms(),
            credentials: target.passkeys.iter().map(credential_id).collect(),
        };
        self.store.put(Collection::PasskeyResets, &request.id, &request).await?;
        self.emit(
            EventKind::PasskeyResetRequested,
            Outcome::Success,
            &admin.user.name,
            Some(&target.name),
            source,
            format!("request {}", request.id),
        );
        self.audit_committed().await?;
        Ok(request)
    }

    pub async fn passkey_resets(&self) -> Result<Vec<PasskeyResetRequest>, IdentityError> {
        let mut list: Vec<PasskeyResetRequest> =
            self.store.list(Collection::PasskeyResets).await?.into_iter().map(|(_, r)| r).collect();
        list.sort_by_key(|r| r.created_ms);
        Ok(list)
    }

    /// A second admin approves (or refuses) a pending reset, with a fresh step-up.
    pub async fn decide_passkey_reset(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.one_decision_at_a_time(async || self.decide_passkey_reset_locked(admin, request_id, approve, source).await)
            .await
    }

    async fn decide_passkey_reset_locked(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let admin = &self.admin_now(admin).await?;
        let request: PasskeyResetRequest =
            self.store.get(Collection::PasskeyResets, request_id).await?.ok_or(IdentityError::NotFound)?;
        let target = self.user(&request.target_id).await?.ok_or(IdentityError::NotFound)?;
        let named = |p: &Passkey| request.credentials.contains(&credential_id(p));
        let removable = target.passkeys.iter().filter(|p| named(p)).count();
        let facts = facts(admin, &target, removable);
        if approve {
            let requester_roles = self.user(&request.requested_by).await?.map(|u| u.roles).unwrap_or_default();
            let pending = Pending {
                requester: &request.requested_by,
                requester_roles: &requester_roles,
                age_ms: self.now_ms().saturating_sub(request.created_ms),
            };
            if let Err(denied) = passkey_reset::check_approval(pending, facts) {
                let error = self.reset_denied(admin, &target, source, denied);
                self.audit_committed().await?;
                return Err(error);
            }
        } else if admin.user.id == target.id {
            let error = self.reset_denied(admin, &target, source, ResetDenied::OwnAccount);
            self.audit_committed().await?;
            return Err(error);
        }
        self.require_step_up(admin).await?;
        self.audit_available()?;
        // Taking the request makes the decision happen once, even if two admins click together.
        let Some(request) = self.store.take::<PasskeyResetRequest>(Collection::PasskeyResets, request_id).await? else {
            return Err(IdentityError::NotFound);
        };
        let detail = format!("request {} (requested by {})", request.id, request.requested_by_name);
        if approve {
            self.store
                .update::<User, _>(Collection::Users, &target.id, |u| {
                    let mut u = u?;
                    u.passkeys.retain(|p| !request.credentials.contains(&credential_id(p)));
                    Some(u)
                })
                .await?;
            // After the passkeys are gone: a sign-in racing this either sees them gone or began
            // before this end (`login::finish_login` checks again once its session is open).
            self.revoke_user_sessions_now(&target.id).await?;
            self.emit(
                EventKind::PasskeyResetApproved,
                Outcome::Success,
                &admin.user.name,
                Some(&target.name),
                source,
                format!(
                    "{detail}; {removable} passkey(s) removed, sessions ended; a new one is enrolled only after \
                     a sign-in at the identity provider"
                ),
            );
        } else {
            self.emit(
                EventKind::PasskeyResetRefused,
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
}
