//! Role changes under separation of duties: requested by one admin, decided by another, and never
//! leaving the relay without an admin.
//!
//! Requesting and deciding each need a fresh step-up (`step_up`). A change requested by one admin
//! waits until a different admin approves it; nobody decides on their own roles; the last admin
//! cannot lose the role (the rules are `sightline_core::roles`). Decisions are serialised across
//! nodes by a store mutex, checked against the approver's roles as they are now, and taken from
//! the store once, so two admins clicking together decide once. An approved change ends every
//! session of its user on every node, so the new roles apply at once. Requests and decisions are
//! on disk before they are acknowledged; refusals are recorded as `role.change_denied`.

use super::*;

impl Identity {
    /// Logs a refused role change and turns it into the error the caller sees.
    pub(super) fn role_change_denied(
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

    pub(super) async fn admin_count(&self) -> Result<usize, IdentityError> {
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
        self.one_decision_at_a_time(async || self.decide_role_request_locked(admin, request_id, approve, source).await)
            .await
    }

    /// Runs an admin's decision (a role change, a passkey reset) while no other runs on any node:
    /// the checks it makes (admin count, the approver's own roles) must still hold when it writes.
    pub(super) async fn one_decision_at_a_time<T>(
        &self,
        decide: impl AsyncFnOnce() -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let lock = self.lock("role-decisions").await?;
        let result = decide().await;
        self.unlock_mutex("role-decisions", &lock).await;
        result
    }

    /// The deciding admin as the store has them now, not as the request that got here saw them;
    /// refused unless still an admin.
    pub(super) async fn admin_now(&self, admin: &AuthUser) -> Result<AuthUser, IdentityError> {
        let now =
            AuthUser { user: self.user(&admin.user.id).await?.ok_or(IdentityError::Unauthenticated)?, ..admin.clone() };
        require(&now, roles::Capability::Administer)?;
        Ok(now)
    }

    /// A cross-node mutex in the store; a holder that died is overtaken after 30 s.
    pub(super) async fn lock(&self, name: &str) -> Result<String, IdentityError> {
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

    pub(super) async fn unlock_mutex(&self, name: &str, holder: &str) {
        let mine =
            matches!(self.store.get::<(String, u64)>(Collection::Mutexes, name).await, Ok(Some((h, _))) if h == holder);
        if mine && let Err(e) = self.store.delete(Collection::Mutexes, name).await {
            tracing::error!(error = %e, "cannot release {name}; it expires in 30 s");
        }
    }

    pub(super) async fn decide_role_request_locked(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let admin = &self.admin_now(admin).await?;
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
}
