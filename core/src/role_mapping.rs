//! Directory groups to Sightline roles: a pure table, checked when it loads.
//!
//! Separation of duties holds here: a group grants `admin` only when the provider's
//! configuration says `admin_from_directory = true`. The table's fingerprint (SHA-256 of its
//! canonical form) goes on the node's record at start, so which mapping a node ran is evidence.

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest;
use sightline_core::roles::Role;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("group {group:?} grants admin, which needs admin_from_directory = true")]
    AdminNotAllowed { group: String },
    #[error("group {group:?} maps to no role")]
    Empty { group: String },
    #[error("the role table maps no group: nobody could get a role")]
    NoGroups,
}

/// Which roles each directory group gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    groups: BTreeMap<String, BTreeSet<Role>>,
    admin_allowed: bool,
}

impl RoleMapping {
    pub fn new(groups: BTreeMap<String, Vec<Role>>, admin_allowed: bool) -> Result<RoleMapping, MappingError> {
        if groups.is_empty() {
            return Err(MappingError::NoGroups);
        }
        let mut table = BTreeMap::new();
        for (group, roles) in groups {
            if roles.is_empty() {
                return Err(MappingError::Empty { group });
            }
            if roles.contains(&Role::Admin) && !admin_allowed {
                return Err(MappingError::AdminNotAllowed { group });
            }
            table.insert(group, roles.into_iter().collect());
        }
        Ok(RoleMapping { groups: table, admin_allowed })
    }

    /// The roles a person in `groups` holds; groups the table does not name give nothing.
    pub fn roles_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> BTreeSet<Role> {
        groups.into_iter().filter_map(|g| self.groups.get(g)).flatten().copied().collect()
    }

    /// SHA-256 (hex) of the table in a canonical form: `group=role,role` lines in order, then the
    /// admin switch.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for (group, roles) in &self.groups {
            let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            text.push_str(&format!("{}={}\n", serde_json::to_string(group).unwrap_or_default(), roles.join(",")));
        }
        text.push_str(&format!("admin_from_directory={}\n", self.admin_allowed));
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &[Role])], admin: bool) -> Result<RoleMapping, MappingError> {
        RoleMapping::new(entries.iter().map(|(g, r)| (g.to_string(), r.to_vec())).collect(), admin)
    }

    #[test]
    fn groups_give_the_union_of_their_roles_and_unknown_groups_give_nothing() {
        let m = table(&[("ops", &[Role::Operator]), ("sec", &[Role::Observer, Role::Auditor])], false).unwrap();
        assert_eq!(
            m.roles_for(["ops", "sec", "sales"]),
            BTreeSet::from([Role::Operator, Role::Observer, Role::Auditor])
        );
        assert!(m.roles_for(["sales"]).is_empty());
        assert!(m.roles_for([]).is_empty());
        // Group names are exact: case and spacing matter, as in the directory.
        assert!(m.roles_for(["OPS", " ops"]).is_empty());
    }

    #[test]
    fn admin_comes_from_the_directory_only_when_the_configuration_says_so() {
        assert_eq!(table(&[("it", &[Role::Admin])], false), Err(MappingError::AdminNotAllowed { group: "it".into() }));
        assert!(table(&[("it", &[Role::Admin])], true).unwrap().roles_for(["it"]).contains(&Role::Admin));
        assert_eq!(table(&[], false), Err(MappingError::NoGroups));
        assert_eq!(table(&[("x", &[])], false), Err(MappingError::Empty { group: "x".into() }));
    }

    #[test]
    fn the_fingerprint_changes_with_the_table_and_only_with_it() {
        let a = table(&[("ops", &[Role::Operator]), ("sec", &[Role::Observer])], false).unwrap();
        let same = table(&[("sec", &[Role::Observer]), ("ops", &[Role::Operator])], false).unwrap();
        let other =
            table(&[("ops", &[Role::Operator, Role::SeniorOperator]), ("sec", &[Role::Observer])], false).unwrap();
        let admin_on = table(&[("ops", &[Role::Operator]), ("sec", &[Role::Observer])], true).unwrap();
        assert_eq!(a.fingerprint(), same.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
        assert_ne!(a.fingerprint(), admin_on.fingerprint());
    }
}
