//! The tables of directory groups to roles in force (R12), and their changes under two admins.
//!
//! A provider's table lives in the store, shared by every node. The SSO file seeds it when a node
//! first starts with the provider (`settle_role_mapping`); from then on the table changes only
//! when one admin asks for a new one and a different admin approves it, each with a fresh step-up
//! (the rules are `sightline_core::role_mapping`). A node whose file says something the admins
//! never approved does not start. The file keeps the ceiling: whether a group may grant `admin`
//! is `admin_from_directory` in each node's file, and a table beyond it is refused when asked
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
    self, ChangeDenied, ChangeFacts, InForce, MappingError, PendingChange, RoleMapping, Settled,
};

/// A provider's table in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovedMapping {
    pub provider: String,
    pub groups: BTreeMap<String, Vec<Role>>,
    pub sha256: String,
    /// The fingerprint of the file table this one was seeded from, or that was last brought in
    /// line with it: a node whose file still says that starts with this table.
    pub origin_sha256: String,
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
    pub sha256: String,
    /// The fingerprint of the table in force when it was asked for.
    pub based_on: String,
    pub requested_by: String,
    pub requested_by_name: String,
    pub created_ms: u64,
}

fn in_force(approved: &ApprovedMapping) -> InForce<'_> {
    InForce { sha256: &approved.sha256, origin_sha256: &approved.origin_sha256 }
}

fn change_detail(request: &MappingRequest) -> String {
    let table = request
        .groups
        .iter()
        .map(|(group, roles)| {
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            format!("{group:?}={}", roles.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!("request {}: table sha256 {} -> {} ({table})", request.id, request.based_on, request.sha256)
}

impl Identity {
    /// Brings the file's table for `provider` and the one in force together at start, and returns
    /// the table this node runs: the file seeds it the first time; after that the file must be
    /// the table's origin or the approved table itself, or the node does not start.
    pub async fn settle_role_mapping(&self, provider: &str, file: &RoleMapping) -> Result<RoleMapping, IdentityError> {
        let file_sha = file.fingerprint();
        loop {
            let stored: Option<ApprovedMapping> = self.store.get(Collection::RoleMappings, provider).await?;
            let settled = role_mapping::settle(&file_sha, stored.as_ref().map(in_force))
                .map_err(|e| IdentityError::Forbidden(format!("provider {provider:?}: {e}")))?;
            let approved = match (settled, stored) {
                (Settled::Seed, _) => {
                    let seeded = ApprovedMapping {
                        provider: provider.into(),
                        groups: file.groups(),
                        sha256: file_sha.clone(),
                        origin_sha256: file_sha.clone(),
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
                (Settled::FileCaughtUp, Some(approved)) => {
                    let caught_up = ApprovedMapping { origin_sha256: file_sha.clone(), ..approved };
                    self.store.put(Collection::RoleMappings, provider, &caught_up).await?;
                    caught_up
                }
                (_, Some(approved)) => approved,
                (_, None) => unreachable!("settle seeds when nothing is stored"),
            };
            return RoleMapping::new(approved.groups, file.admin_allowed()).map_err(|e| {
                IdentityError::Forbidden(format!(
                    "provider {provider:?}: the role table in force (sha256 {}) breaks this node's SSO file: {e}; \
                     ask for a table without it from the dashboard first",
                    approved.sha256
                ))
            });
        }
    }

    /// The table in force for `provider`, under this node's ceiling. Refused (fail closed) when
    /// there is none or it goes beyond the ceiling.
    pub async fn role_mapping(&self, provider: &str, admin_allowed: bool) -> Result<RoleMapping, IdentityError> {
        let approved: ApprovedMapping = self
            .store
            .get(Collection::RoleMappings, provider)
            .await?
            .ok_or_else(|| IdentityError::Forbidden(format!("provider {provider:?} has no role table in force")))?;
        RoleMapping::new(approved.groups, admin_allowed).map_err(|e| {
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

    /// An admin asks for `groups` to become `provider`'s table; `admin_allowed` is this node's
    /// ceiling for the provider.
    pub async fn request_mapping_change(
        &self,
        admin: &AuthUser,
        provider: &str,
        groups: BTreeMap<String, Vec<Role>>,
        admin_allowed: bool,
        source: Option<IpAddr>,
    ) -> Result<MappingRequest, IdentityError> {
        self.audit_available()?;
        let current: ApprovedMapping =
            self.store.get(Collection::RoleMappings, provider).await?.ok_or(IdentityError::NotFound)?;
        let proposed: Result<RoleMapping, MappingError> = RoleMapping::new(groups, admin_allowed);
        let facts = ChangeFacts {
            actor: &admin.user.id,
            actor_roles: &admin.user.roles,
            proposed: &proposed,
            in_force: &current.sha256,
        };
        let waiting = self.mapping_requests().await?.iter().any(|r| r.provider == provider);
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

    /// A second admin approves (or refuses) a pending change, with a fresh step-up;
    /// `admin_allowed` gives this node's ceiling for a provider (`None`: not configured here).
    pub async fn decide_mapping_change(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        admin_allowed: impl Fn(&str) -> Option<bool>,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        require(admin, roles::Capability::Administer)?;
        self.one_decision_at_a_time(async || {
            self.decide_mapping_change_locked(admin, request_id, approve, admin_allowed, source).await
        })
        .await
    }

    async fn decide_mapping_change_locked(
        &self,
        admin: &AuthUser,
        request_id: &str,
        approve: bool,
        admin_allowed: impl Fn(&str) -> Option<bool>,
        source: Option<IpAddr>,
    ) -> Result<(), IdentityError> {
        let admin = &self.admin_now(admin).await?;
        let request: MappingRequest =
            self.store.get(Collection::MappingRequests, request_id).await?.ok_or(IdentityError::NotFound)?;
        let provider = request.provider.as_str();
        let ceiling = admin_allowed(provider).ok_or(IdentityError::NotFound)?;
        let current: ApprovedMapping =
            self.store.get(Collection::RoleMappings, provider).await?.ok_or(IdentityError::NotFound)?;
        let proposed = RoleMapping::new(request.groups.clone(), ceiling);
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
            let approved = ApprovedMapping {
                provider: request.provider.clone(),
                groups: request.groups.clone(),
                sha256: request.sha256.clone(),
                origin_sha256: current.origin_sha256,
                requested_by_name: Some(request.requested_by_name.clone()),
                approved_by_name: Some(admin.user.name.clone()),
                since_ms: self.now_ms(),
            };
            self.store.put(Collection::RoleMappings, provider, &approved).await?;
            let due = self.recheck_directory_soon(provider).await?;
            self.emit(
                EventKind::MappingChangeApproved,
                Outcome::Success,
                &admin.user.name,
                Some(provider),
                source,
                format!("{detail}; in force on every node, {due} signed-in person(s) re-read at the next tick"),
            );
        } else {
            self.emit(
                EventKind::MappingChangeRefused,
                Outcome::Success,
                &admin.user.name,
                Some(provider),
                source,
                detail,
            );
        }
        self.audit_committed().await?;
        Ok(())
    }
}
