//! Resetting a directory account's lost passkey without letting any one admin take the account.
//!
//! A reset removes the person's passkeys and ends their sessions; it never hands anyone a
//! credential. The next passkey can only be enrolled by whoever completes a sign-in at the
//! organisation's identity provider as that person (issuer and subject), so an admin who resets
//! a passkey gains nothing unless they also control the person's directory account. Even so, a
//! reset is requested by one admin and approved by a different one, each with a fresh step-up,
//! and nobody requests or approves a reset of their own account (they would be locked out by it,
//! or be resetting a passkey they were just asked to prove they hold).
//!
//! Local (invited) accounts have no provider to re-enrol through: resetting one would leave an
//! account that nobody can ever use, so it is refused and the account is invited again instead.

use std::collections::BTreeSet;

use crate::roles::{Capability, Role, allows};

/// Why a passkey reset is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetDenied {
    /// Only admins request or approve a reset.
    NotAdmin,
    /// Nobody resets their own passkey.
    OwnAccount,
    /// The approver requested the reset; a second admin must approve.
    SameAdmin,
    /// The account is a local one: it has no provider to enrol a new passkey through.
    LocalAccount,
    /// The account holds none of the passkeys the request named (it is waiting for its first,
    /// was reset already, or enrolled a new one since the request).
    NoPasskey,
    /// A reset of this account is already waiting for a second admin.
    AlreadyRequested,
    /// The admin who asked is no longer an admin.
    RequesterNotAdmin,
    /// The request waited longer than [`REQUEST_TTL_MS`]; it is asked again if still needed.
    Expired,
}

/// How long a request waits for its second admin.
pub const REQUEST_TTL_MS: u64 = 24 * 3600 * 1000;

impl std::fmt::Display for ResetDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResetDenied::NotAdmin => "only admins may request or approve a passkey reset",
            ResetDenied::OwnAccount => "nobody may reset their own passkey",
            ResetDenied::SameAdmin => "a second admin must approve a passkey reset",
            ResetDenied::LocalAccount => {
                "only directory accounts have their passkey reset (the person enrols a new one through \
                 the identity provider); a local account is removed and invited again"
            }
            ResetDenied::NoPasskey => "the account holds none of the passkeys this reset would remove",
            ResetDenied::AlreadyRequested => "a reset of this account is already waiting for a second admin",
            ResetDenied::RequesterNotAdmin => "the admin who asked for this reset is no longer an admin",
            ResetDenied::Expired => "the request is more than a day old: ask again if the reset is still needed",
        })
    }
}

/// The facts a reset decision needs, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct ResetFacts<'a> {
    pub actor: &'a str,
    pub actor_roles: &'a BTreeSet<Role>,
    pub target: &'a str,
    /// Whether the account is bound to a directory identity.
    pub target_in_directory: bool,
    /// The account's passkeys that the reset would remove: all of them when asking; when
    /// approving, those the request named that the account still holds.
    pub target_passkeys: usize,
}

/// The request a decision is about, as it stands now.
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    pub requester: &'a str,
    pub requester_roles: &'a BTreeSet<Role>,
    pub age_ms: u64,
}

/// May `actor` request this reset, with `already_requested` saying whether one is waiting? (It
/// then waits for a second admin.)
pub fn check_request(facts: ResetFacts<'_>, already_requested: bool) -> Result<(), ResetDenied> {
    check_facts(facts)?;
    if already_requested {
        return Err(ResetDenied::AlreadyRequested);
    }
    Ok(())
}

fn check_facts(facts: ResetFacts<'_>) -> Result<(), ResetDenied> {
    if !allows(facts.actor_roles, Capability::Administer) {
        return Err(ResetDenied::NotAdmin);
    }
    if facts.actor == facts.target {
        return Err(ResetDenied::OwnAccount);
    }
    if !facts.target_in_directory {
        return Err(ResetDenied::LocalAccount);
    }
    if facts.target_passkeys == 0 {
        return Err(ResetDenied::NoPasskey);
    }
    Ok(())
}

/// May `facts.actor` approve the reset `pending` asked for? The request's rules hold again as
/// things are now, its requester is still an admin, it is fresh, and the approver is someone else.
pub fn check_approval(pending: Pending<'_>, facts: ResetFacts<'_>) -> Result<(), ResetDenied> {
    check_facts(facts)?;
    if facts.actor == pending.requester {
        return Err(ResetDenied::SameAdmin);
    }
    if !allows(pending.requester_roles, Capability::Administer) {
        return Err(ResetDenied::RequesterNotAdmin);
    }
    if pending.age_ms > REQUEST_TTL_MS {
        return Err(ResetDenied::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(actor: &'a str, roles: &'a BTreeSet<Role>, target: &'a str) -> ResetFacts<'a> {
        ResetFacts { actor, actor_roles: roles, target, target_in_directory: true, target_passkeys: 1 }
    }

    #[test]
    fn an_admin_requests_a_reset_of_someone_elses_directory_account_with_a_passkey() {
        let admin = BTreeSet::from([Role::Admin]);
        let operator = BTreeSet::from([Role::Operator]);
        assert_eq!(check_request(facts("a", &admin, "u"), false), Ok(()));
        assert_eq!(check_request(facts("o", &operator, "u"), false), Err(ResetDenied::NotAdmin));
        assert_eq!(check_request(facts("a", &admin, "a"), false), Err(ResetDenied::OwnAccount));
        let local = ResetFacts { target_in_directory: false, ..facts("a", &admin, "u") };
        assert_eq!(check_request(local, false), Err(ResetDenied::LocalAccount));
        let none = ResetFacts { target_passkeys: 0, ..facts("a", &admin, "u") };
        assert_eq!(check_request(none, false), Err(ResetDenied::NoPasskey));
        assert_eq!(check_request(facts("a", &admin, "u"), true), Err(ResetDenied::AlreadyRequested));
    }

    #[test]
    fn approval_needs_a_second_admin_who_is_not_the_person() {
        let admin = BTreeSet::from([Role::Admin]);
        let by_a = Pending { requester: "a", requester_roles: &admin, age_ms: 60_000 };
        assert_eq!(check_approval(by_a, facts("a", &admin, "u")), Err(ResetDenied::SameAdmin));
        assert_eq!(check_approval(by_a, facts("b", &admin, "u")), Ok(()));
        assert_eq!(check_approval(by_a, facts("u", &admin, "u")), Err(ResetDenied::OwnAccount));
        // The approver's roles as they are now: an admin demoted since cannot approve.
        assert_eq!(check_approval(by_a, facts("b", &BTreeSet::new(), "u")), Err(ResetDenied::NotAdmin));
        // Nor does the request of an admin demoted since count.
        let demoted = Pending { requester_roles: &BTreeSet::new(), ..by_a };
        assert_eq!(check_approval(demoted, facts("b", &admin, "u")), Err(ResetDenied::RequesterNotAdmin));
        // A request left waiting lapses.
        let stale = Pending { age_ms: REQUEST_TTL_MS + 1, ..by_a };
        assert_eq!(check_approval(stale, facts("b", &admin, "u")), Err(ResetDenied::Expired));
        // A reset approved twice, or after the person enrolled anew, finds none of the passkeys
        // the request named.
        let done = ResetFacts { target_passkeys: 0, ..facts("b", &admin, "u") };
        assert_eq!(check_approval(by_a, done), Err(ResetDenied::NoPasskey));
    }
}
