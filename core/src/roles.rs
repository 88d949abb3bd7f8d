//! Roles and separation of duties (R13).
//!
//! There is no universal role: each role grants a fixed set of capabilities and an admin, by
//! being admin, can neither view sessions nor recordings. Role changes follow two rules: nobody
//! changes their own roles, and a change requested by one admin takes effect only when a
//! *different* admin approves it. The very first admin, enrolled from the bootstrap link, is the
//! one audited exception.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The roles of Sightline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    SeniorOperator,
    Observer,
    Admin,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Operator, Role::SeniorOperator, Role::Observer, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::SeniorOperator => "senior_operator",
            Role::Observer => "observer",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// What a role allows. Routes and sockets ask for a capability, never for a role, so the mapping
/// lives in one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// See the list of online endpoints and open a view of one.
    ViewSessions,
    /// Approve an elevation in a critical segment.
    ApproveElevation,
    /// Join a running session as a second pair of eyes.
    ObserveSessions,
    /// Users, invitations, role grants, devices, enrolment tokens, revocation.
    Administer,
    /// Search and play recordings, read the audit log.
    Audit,
}

/// The capabilities of one role.
pub fn capabilities(role: Role) -> &'static [Capability] {
    match role {
        Role::Operator => &[Capability::ViewSessions],
        Role::SeniorOperator => &[Capability::ViewSessions, Capability::ApproveElevation],
        Role::Observer => &[Capability::ObserveSessions],
        Role::Admin => &[Capability::Administer],
        Role::Auditor => &[Capability::Audit],
    }
}

/// Whether any of `roles` grants `capability`.
pub fn allows(roles: &BTreeSet<Role>, capability: Capability) -> bool {
    roles.iter().any(|r| capabilities(*r).contains(&capability))
}

/// A requested change of one user's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleChange {
    Grant(Role),
    Revoke(Role),
}

/// Why a role change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChangeDenied {
    /// Only admins request or approve role changes.
    NotAdmin,
    /// Nobody changes their own roles.
    OwnRoles,
    /// The approver requested the change; a second admin must approve.
    SameAdmin,
    /// The change would do nothing (granting a role already held, revoking one not held).
    NoEffect,
    /// Revoking the last admin's admin role would leave nobody to administer.
    LastAdmin,
}

impl std::fmt::Display for RoleChangeDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleChangeDenied::NotAdmin => "only admins may request or approve role changes",
            RoleChangeDenied::OwnRoles => "nobody may change their own roles",
            RoleChangeDenied::SameAdmin => "a second admin must approve a role change",
            RoleChangeDenied::NoEffect => "the change would have no effect",
            RoleChangeDenied::LastAdmin => "the last admin cannot lose the admin role",
        })
    }
}

/// The facts a role decision needs, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct RoleChangeRequest<'a> {
    pub actor: &'a str,
    pub actor_roles: &'a BTreeSet<Role>,
    pub target: &'a str,
    pub target_roles: &'a BTreeSet<Role>,
    pub change: RoleChange,
    /// Admins there are now, for the last-admin rule.
    pub admin_count: usize,
}

/// May `actor` request this change? (It then waits for a second admin.)
pub fn check_request(req: RoleChangeRequest<'_>) -> Result<(), RoleChangeDenied> {
    if !allows(req.actor_roles, Capability::Administer) {
        return Err(RoleChangeDenied::NotAdmin);
    }
    if req.actor == req.target {
        return Err(RoleChangeDenied::OwnRoles);
    }
    match req.change {
        RoleChange::Grant(role) if req.target_roles.contains(&role) => Err(RoleChangeDenied::NoEffect),
        RoleChange::Revoke(role) if !req.target_roles.contains(&role) => Err(RoleChangeDenied::NoEffect),
        RoleChange::Revoke(Role::Admin) if req.admin_count <= 1 => Err(RoleChangeDenied::LastAdmin),
        _ => Ok(()),
    }
}

/// May `approver` approve a change that `requester` asked for? Re-checks the request against the
/// roles as they are now: they may have changed while the request waited.
pub fn check_approval(requester: &str, approver_req: RoleChangeRequest<'_>) -> Result<(), RoleChangeDenied> {
    check_request(approver_req)?;
    if approver_req.actor == requester {
        return Err(RoleChangeDenied::SameAdmin);
    }
    Ok(())
}

/// Applies an approved change.
pub fn apply(roles: &mut BTreeSet<Role>, change: RoleChange) {
    match change {
        RoleChange::Grant(role) => {
            roles.insert(role);
        }
        RoleChange::Revoke(role) => {
            roles.remove(&role);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(roles: &[Role]) -> BTreeSet<Role> {
        roles.iter().copied().collect()
    }

    #[test]
    fn no_role_is_universal() {
        for role in Role::ALL {
            let caps = capabilities(role);
            assert!(caps.len() <= 2, "{role:?} grants too much: {caps:?}");
        }
        let admin = set(&[Role::Admin]);
        assert!(!allows(&admin, Capability::ViewSessions));
        assert!(!allows(&admin, Capability::Audit));
        assert!(!allows(&admin, Capability::ObserveSessions));
        assert!(allows(&set(&[Role::Auditor]), Capability::Audit));
        assert!(!allows(&set(&[Role::Operator]), Capability::Administer));
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn request_rules() {
        let admin = set(&[Role::Admin]);
        let operator = set(&[Role::Operator]);
        let none = set(&[]);
        let req = |actor: &'static str, actor_roles, target: &'static str, target_roles, change, admin_count| {
            RoleChangeRequest { actor, actor_roles, target, target_roles, change, admin_count }
        };
        let cases: Vec<(RoleChangeRequest<'_>, Result<(), RoleChangeDenied>)> = vec![
            (req("a", &admin, "u", &none, RoleChange::Grant(Role::Operator), 2), Ok(())),
            (req("a", &admin, "a", &admin, RoleChange::Grant(Role::Operator), 2), Err(RoleChangeDenied::OwnRoles)),
            (req("o", &operator, "u", &none, RoleChange::Grant(Role::Operator), 2), Err(RoleChangeDenied::NotAdmin)),
            (req("a", &admin, "u", &operator, RoleChange::Grant(Role::Operator), 2), Err(RoleChangeDenied::NoEffect)),
            (req("a", &admin, "u", &none, RoleChange::Revoke(Role::Operator), 2), Err(RoleChangeDenied::NoEffect)),
            (req("a", &admin, "b", &admin, RoleChange::Revoke(Role::Admin), 1), Err(RoleChangeDenied::LastAdmin)),
            (req("a", &admin, "b", &admin, RoleChange::Revoke(Role::Admin), 2), Ok(())),
        ];
        for (request, expected) in cases {
            assert_eq!(check_request(request), expected, "{request:?}");
        }
    }

    #[test]
    fn approval_needs_a_second_admin() {
        let admin = set(&[Role::Admin]);
        let none = set(&[]);
        let by = |actor| RoleChangeRequest {
            actor,
            actor_roles: &admin,
            target: "u",
            target_roles: &none,
            change: RoleChange::Grant(Role::Auditor),
            admin_count: 2,
        };
        assert_eq!(check_approval("a", by("a")), Err(RoleChangeDenied::SameAdmin));
        assert_eq!(check_approval("a", by("b")), Ok(()));
        // An approver who is the target is refused too.
        let self_approval = RoleChangeRequest { target: "b", ..by("b") };
        assert_eq!(check_approval("a", self_approval), Err(RoleChangeDenied::OwnRoles));
    }

    #[test]
    fn apply_changes_roles() {
        let mut roles = set(&[Role::Operator]);
        apply(&mut roles, RoleChange::Grant(Role::Auditor));
        apply(&mut roles, RoleChange::Revoke(Role::Operator));
        assert_eq!(roles, set(&[Role::Auditor]));
    }
}
