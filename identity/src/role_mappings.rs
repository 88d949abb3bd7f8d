//! The tables of directory groups to roles in force (R12), and their changes under two admins.
//!
//! A provider's table lives in the store, shared by every node. The SSO file seeds it when a node
//! first starts with the provider (`settle_role_mapping`); from then on the table changes only
//! when one admin asks for a new one and a different admin approves it, each with a fresh step-up
//! (the rules are `sightline_core::role_mapping`). A node whose file holds a table that was never
//! in force does not start, nor does a second provider name for an issuer that has a table. The file keeps the ceiling: whether a group may grant `admin`
//! is `admin_from_directory` in each node's file; and a table may narrow people to the policy's
//! segments, never name one the policy lacks. A table beyond these limits is refused when asked
//! for, when approved, and when a node starts.
//!
//! Sign-ins and groups re-reads take the table from the store each time, so an approved change is
//! in force on every node at once; approving also makes every grant of the provider due, so each
//! person's roles follow the new table at the next tick of the re-read loop, and a role lost ends
//! their sessions. Decisions share the cross-node mutex of role decisions and take the request
//! from the store once; every request, decision and refusal is on record before it is
//! acknowledged.

use std::collections::BTreeMap;

use super::*;

use sightline_core::role_mapping::{
    self, ChangeDenied, ChangeFacts, InForce, MappingError, PendingChange, RoleMapping, Settled, TableLimits,
};

/// A provider's table in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovedMapping {
    pub provider: String,
    /// The issuer the provider named when its table was seeded: accounts are bound to issuer and
    /// subject, so another provider name for the same issuer may not seed a table of its own.
    pub issuer: String,
    pub groups: BTreeMap<String, Vec<Role>>,
    /// Groups to the segments their people may reach; `None`: groups do not narrow them.
    #[serde(default)]
    pub segments: Option<BTreeMap<String, Vec<String>>>,
    pub sha256: String,
    /// Every table that has been in force for the provider, oldest first (the seed, then each
    /// approved change): a node whose file holds one of them starts, with this table in force.
    pub history_sha256: Vec<String>,
    /// Who asked for and who approved the table; both absent when the file seeded it.
    pub requested_by_name: Option<String>,
    pub approved_by_name: Option<String>,
    pub since_ms: u64,
}

/// A change of a provider's table waiting for a second admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MappingRequest {
    pub id: String,
    pub provider: String,
    pub groups: BTreeMap<String, Vec<Role>>,
    #[serde(default)]
    pub segments: Option<BTreeMap<String, Vec<String>>>,
    pub sha256: String,
    /// The fingerprint of the table in force when it was asked for.
    pub based_on: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub created_ms: u64,
}

fn in_force(approved: &ApprovedMapping) -> InForce<'_> {
    InForce { sha256: &approved.sha256, history: &approved.history_sha256 }
}

fn change_detail(request: &MappingRequest) -> String {
    let rows = |rows: Vec<(&String, Vec<&str>)>| {
        rows.into_iter().map(|(group, items)| format!("{group:?}={}", items.join(","))).collect::<Vec<_>>().join(" ")
    };
    let roles = rows(request.groups.iter().map(|(g, r)| (g, r.iter().map(|r| r.as_str()).collect())).collect());
    let segments = match &request.segments {
        Some(table) => rows(table.iter().map(|(g, s)| (g, s.iter().map(String::as_str).collect())).collect()),
        None => "not narrowed by groups".into(),
    };
    format!(
        "request {}: table sha256 {} -> {} (roles: {roles}; segments: {segments})",
        request.id, request.based_on, request.sha256
    )
}

impl Identity {
    /// Brings the file's table for `provider` (at `issuer`) and the one in force together at
    /// start, and returns the table this node runs: the file seeds it the first time; after that
    /// the file must hold a table that has been in force, or the node does not start. Either
    /// table must be within `limits` (this node's ceiling and its policy's segments).
    pub async fn settle_role_mapping(
        &self,
        provider: &str,
        issuer: &str,
        file: &RoleMapping,
        limits: &TableLimits,
    ) -> Result<RoleMapping, IdentityError> {
        let refuse = |why: String| IdentityError::Forbidden(format!("provider {provider:?}: {why}"));
        file.check_segments(&limits.known_segments)
            .map_err(|e| IdentityError::Forbidden(format!("provider {provider:?}: the SSO file's table: {e}")))?;
        let file_sha = file.fingerprint();
        loop {
            let stored: Option<ApprovedMapping> = self.store.get(Collection::RoleMappings, provider).await?;
            if let Some(kept) = stored.as_ref().filter(|kept| kept.issuer != issuer) {
                return Err(refuse(format!(
                    "its table was seeded for issuer {}, and the SSO file now names issuer {issuer}: a table \
                     approved for one directory does not carry over to another; give the new directory a new \
                     provider name",
                    kept.issuer
                )));
            }
            let settled =
                role_mapping::settle(&file_sha, stored.as_ref().map(in_force)).map_err(|e| refuse(e.to_string()))?;
            let approved = match (settled, stored) {
                (Settled::Seed, _) => {
                    // Accounts are bound to issuer and subject, not to the provider's name: a new
                    // name for a directory that has a table would give its people roles no admin
                    // approved.
                    if let Some(other) = self.role_mappings().await?.into_iter().find(|m| m.issuer == issuer) {
                        return Err(refuse(format!(
                            "issuer {issuer} already has its table under provider {:?}: a second name for the \
                             same directory would seed a table no admin approved",
                            other.provider
                        )));
                    }
                    let seeded = ApprovedMapping {
                        provider: provider.into(),
                        issuer: issuer.into(),
                        groups: file.groups(),
                        segments: file.segments(),
                        sha256: file_sha.clone(),
                        history_sha256: vec![file_sha.clone()],
                        requested_by_name: None,
                        approved_by_name: None,
                        since_ms: self.now_ms(),
                    };
                    // Two nodes starting together: one seeds, the other settles with what it wrote.
                    if !self.store.insert_new(Collection::RoleMappings, provider, &seeded).await? {
                        continue;
                    }
                    seeded
                }
                (Settled::InForce, Some(approved)) => approved,
                (Settled::InForce, None) => unreachable!("settle seeds when nothing is stored"),
            };
            return limits.table(approved.groups, approved.segments).map_err(|e| {
                IdentityError::Forbidden(format!(
                    "provider {provider:?}: the role table in force (sha256 {}) is beyond this node's SSO file or \
                     policy: {e}; ask for a table without it from the dashboard first",
                    approved.sha256
                ))
            });
        }
    }

    /// The table in force for `provider`, within this node's limits. Refused (fail closed) when
    /// there is none or it goes beyond them.
    pub async fn role_mapping(&self, provider: &str, limits: &TableLimits) -> Result<RoleMapping, IdentityError> {
        let approved: ApprovedMapping = self
            .store
            .get(Collection::RoleMappings, provider)
            .await?
            .ok_or_else(|| IdentityError::Forbidden(format!("provider {provider:?} has no role table in force")))?;
        limits.table(approved.groups, approved.segments).map_err(|e| {
            IdentityError::Forbidden(format!("provider {provider:?}: the role table in force is not valid here: {e}"))
        })
    }

    pub async fn role_mappings(&self) -> Result<Vec<ApprovedMapping>, IdentityError> {
        Ok(self.store.list(Collection::RoleMappings).await?.into_iter().map(|(_, m)| m).collect())
    }

    pub async fn mapping_requests(&self) -> Result<Vec<MappingRequest>, IdentityError> {
        let mut list: Vec<MappingRequest> =
            self.store.list(Collection::MappingRequests).await?.into_iter().map(|(_, r)| r).collect();
        list.sort_by_key(|r| r.created_ms);
        Ok(list)
    }

    fn mapping_change_denied(
        &self,
        admin: &AuthUser,
        provider: &str,
        source: Option<IpAddr>,
        denied: ChangeDenied,
    ) -> IdentityError {
        self.emit(
            EventKind::MappingChangeDenied,
            Outcome::Failure,
            &admin.user.name,
            Some(provider),
            source,
            denied.to_string(),
        );
        IdentityError::Forbidden(denied.to_string())
    }

    /// An admin asks for `groups` (and `segments`) to become `provider`'s table; `limits` are
    /// this node's for the provider.
    pub async fn request_mapping_change(
        &self,
        admin: &AuthUser,
        provider: &str,
        groups: BTreeMap<String, Vec<Role>>,
        segments: Option<BTreeMap<String, Vec<String>>>,
        limits: &TableLimits,
        source: Option<IpAddr>,
    ) -> Result<MappingRequest, IdentityError> {
        self.audit_available()?;
        let current: ApprovedMapping =
            self.store.get(Collection::RoleMappings, provider).await?.ok_or(IdentityError::NotFound)?;
        let proposed: Result<RoleMapping, MappingError> = limits.table(groups, segments);
        let facts = ChangeFacts {
            actor: &admin.user.id,
            actor_roles: &admin.user.roles,
            proposed: &proposed,
            in_force: &current.sha256,
        };
        // A request that is stale (another table came into force) or out of date blocks nothing.
        let now = self.now_ms();
        let waiting = self.mapping_requests().await?.iter().any(|r| {
            r.provider == provider
                && r.based_on == current.sha256
                && now.saturating_sub(r.created_ms) <= sightline_core::passkey_reset::REQUEST_TTL_MS
        });
        let table = match (role_mapping::check_change_request(facts, waiting), proposed) {
            (Ok(()), Ok(table)) => table,
            (Err(denied), _) => {
                let error = self.mapping_change_denied(admin, provider, source, denied);
                self.audit_committed().await?;
                return Err(error);
            }
            (Ok(()), Err(_)) => unreachable!("an invalid table is denied"),
        };
        self.require_step_up(admin).await?;
        let request = MappingRequest {
            id: hex::encode(random_bytes::<8>()),
            provider: provider.into(),
            groups: table.groups(),
            segments: table.segments(),
            sha256: table.fingerprint(),
            based_on: current.sha256,
            requested_by: admin.user.id.clone(),
            requested_by_name: admin.user.name.clone(),
            created_ms: self.now_ms(),
        };
        self.store.put(Collection::MappingRequests, &request.id, &request).await?;
        self.emit(
            EventKind::MappingChangeRequested,
            Outcome::Success,
            &admin.user.name,
            Some(provider),
            source,
            change_detail(&request),
        );
        self.audit_committed().await?;
        Ok(request)
    }

    /// A second admin approves (or refuses) a pending change, with a fresh step-up; `limits`
    /// gives this node's limits for a provider (`None`: not configured here).
    pub async fn decide_mapping_change(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        limits: impl Fn(&str) -> Option<TableLimits>,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.one_decision_at_a_time(async || {
            self.decide_mapping_change_locked(admin, request_id, approve, limits, source).await
        })
        .await
    }

    async fn decide_mapping_change_locked(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        limits: impl Fn(&str) -> Option<TableLimits>,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let admin = &self.admin_now(admin).await?;
        let request: MappingRequest =
            self.store.get(Collection::MappingRequests, request_id).await?.ok_or(IdentityError::NotFound)?;
        let provider = request.provider.as_str();
        let limits = limits(provider).ok_or(IdentityError::NotFound)?;
        let current: ApprovedMapping =
            self.store.get(Collection::RoleMappings, provider).await?.ok_or(IdentityError::NotFound)?;
        let proposed = limits.table(request.groups.clone(), request.segments.clone());
        if approve {
            let requester_roles = self.user(&request.requested_by).await?.map(|u| u.roles).unwrap_or_default();
            let pending = PendingChange {
                requester: &request.requested_by,
                requester_roles: &requester_roles,
                age_ms: self.now_ms().saturating_sub(request.created_ms),
                based_on: &request.based_on,
            };
            let facts = ChangeFacts {
                actor: &admin.user.id,
                actor_roles: &admin.user.roles,
                proposed: &proposed,
                in_force: &current.sha256,
            };
            if let Err(denied) = role_mapping::check_change_approval(pending, facts) {
                let error = self.mapping_change_denied(admin, provider, source, denied);
                self.audit_committed().await?;
                return Err(error);
            }
        }
        self.require_step_up(admin).await?;
        self.audit_available()?;
        // Taking the request makes the decision happen once, even if two admins click together.
        let Some(request) = self.store.take::<MappingRequest>(Collection::MappingRequests, request_id).await? else {
            return Err(IdentityError::NotFound);
        };
        let detail = format!("{} (requested by {})", change_detail(&request), request.requested_by_name);
        if approve {
            // Only over the table it was asked against: a write that raced this decision is kept.
            let since_ms = self.now_ms();
            let mut replaced = false;
            self.store
                .update::<ApprovedMapping, _>(Collection::RoleMappings, provider, |kept| {
                    let kept = kept?;
                    replaced = kept.sha256 == request.based_on;
                    if !replaced {
                        return Some(kept);
                    }
                    let mut history = kept.history_sha256.clone();
                    history.retain(|h| h != &request.sha256);
                    history.push(request.sha256.clone());
                    Some(ApprovedMapping {
                        groups: request.groups.clone(),
                        segments: request.segments.clone(),
                        sha256: request.sha256.clone(),
                        history_sha256: history,
                        requested_by_name: Some(request.requested_by_name.clone()),
                        approved_by_name: Some(admin.user.name.clone()),
                        since_ms,
                        ..kept
                    })
                })
                .await?;
            if !replaced {
                let error = self.mapping_change_denied(admin, provider, source, ChangeDenied::Stale);
                self.audit_committed().await?;
                return Err(error);
            }
            self.emit(
                EventKind::MappingChangeApproved,
                Outcome::Success,
                &admin.user.name,
                Some(provider),
                source,
                format!("{detail}; in force on every node, signed-in people re-read at the next tick"),
            );
            self.audit_committed().await?;
            // After the record: a failure here delays the re-read to its period, never the change.
            if let Err(e) = self.recheck_directory_soon(provider).await {
                tracing::warn!(error = %e, provider, "cannot make the provider's people due for a re-read");
            }
        } else {
            self.emit(
                EventKind::MappingChangeRefused,
                Outcome::Success,
                &admin.user.name,
                Some(provider),
                source,
                detail,
            );
            self.audit_committed().await?;
        }
        Ok(())
    }
}
