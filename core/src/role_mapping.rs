//! Directory groups to Sightline roles (R12): the table, checked when it loads, and the rules by
//! which it may change.
//!
//! Separation of duties holds twice. A group grants `admin` only when the provider's entry in
//! the SSO file says `admin_from_directory = true`: that ceiling is the file's alone. And the
//! table is policy: the SSO file seeds it the first time a node starts with the provider; after
//! that it changes only when one admin asks for a new table and a different admin approves it,
//! each with a fresh step-up, as role changes do (`check_change_request`,
//! `check_change_approval`). The file is never applied again, and a file holding a table that
//! was never in force stops the node (`settle`) rather than being silently ignored: nobody with
//! write access to one node's file changes who holds which role behind the admins' backs.
//!
//! The table's fingerprint (SHA-256 of its canonical form) is on the node's start record and on
//! every change, so which table was in force is evidence.

use std::collections::{BTreeMap, BTreeSet};

use sha2::Digest;

use crate::roles::{Capability, Role, allows};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("group {group:?} grants admin, which needs admin_from_directory = true")]
    AdminNotAllowed { group: String },
    #[error("group {group:?} maps to no role")]
    Empty { group: String },
    #[error("the role table maps no group: nobody could get a role")]
    NoGroups,
    #[error("group names are not empty and have no leading or trailing spaces: {group:?}")]
    BadGroupName { group: String },
    #[error("group {group:?} reaches no segment")]
    NoSegment { group: String },
    #[error("the segment table names no group: leave it out to let the policy alone decide")]
    NoSegmentGroups,
    #[error("group {group:?} names segment {segment:?}, which the policy does not have")]
    UnknownSegment { group: String, segment: String },
}

/// Which roles each directory group gives, and, where the table says so, which segments of the
/// policy each group lets its people reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMapping {
    groups: BTreeMap<String, BTreeSet<Role>>,
    admin_allowed: bool,
    /// `None`: groups do not narrow the segments (the policy alone decides, as for invited
    /// accounts). `Some`: a person reaches only the segments their groups name here, and then
    /// only as far as the policy lets their roles.
    segments: Option<BTreeMap<String, BTreeSet<String>>>,
}

fn check_group_name(group: &str) -> Result<(), MappingError> {
    if group.is_empty() || group.trim() != group {
        return Err(MappingError::BadGroupName { group: group.into() });
    }
    Ok(())
}

impl RoleMapping {
    pub fn new(groups: BTreeMap<String, Vec<Role>>, admin_allowed: bool) -> Result<RoleMapping, MappingError> {
        if groups.is_empty() {
            return Err(MappingError::NoGroups);
        }
        let mut table = BTreeMap::new();
        for (group, roles) in groups {
            check_group_name(&group)?;
            if roles.is_empty() {
                return Err(MappingError::Empty { group });
            }
            if roles.contains(&Role::Admin) && !admin_allowed {
                return Err(MappingError::AdminNotAllowed { group });
            }
            table.insert(group, roles.into_iter().collect());
        }
        Ok(RoleMapping { groups: table, admin_allowed, segments: None })
    }

    /// The same roles, with groups narrowing the segments people reach (`None`: they do not).
    pub fn with_segments(self, segments: Option<BTreeMap<String, Vec<String>>>) -> Result<RoleMapping, MappingError> {
        let Some(segments) = segments else { return Ok(RoleMapping { segments: None, ..self }) };
        if segments.is_empty() {
            return Err(MappingError::NoSegmentGroups);
        }
        let mut table = BTreeMap::new();
        for (group, names) in segments {
            check_group_name(&group)?;
            if names.is_empty() {
                return Err(MappingError::NoSegment { group });
            }
            table.insert(group, names.into_iter().collect());
        }
        Ok(RoleMapping { segments: Some(table), ..self })
    }

    /// Refuses a segment table that names a segment the policy does not have.
    pub fn check_segments(&self, known: &BTreeSet<String>) -> Result<(), MappingError> {
        for (group, names) in self.segments.iter().flatten() {
            if let Some(segment) = names.iter().find(|n| !known.contains(*n)) {
                return Err(MappingError::UnknownSegment { group: group.clone(), segment: segment.clone() });
            }
        }
        Ok(())
    }

    /// The roles a person in `groups` holds; groups the table does not name give nothing.
    pub fn roles_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> BTreeSet<Role> {
        groups.into_iter().filter_map(|g| self.groups.get(g)).flatten().copied().collect()
    }

    /// The segments a person in `groups` may reach: `None` when groups do not narrow them; else
    /// those their groups name (none, if no group of theirs is in the segment table).
    pub fn segments_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Option<BTreeSet<String>> {
        let table = self.segments.as_ref()?;
        Some(groups.into_iter().filter_map(|g| table.get(g)).flatten().cloned().collect())
    }

    /// The table: each group and the roles it gives.
    pub fn groups(&self) -> BTreeMap<String, Vec<Role>> {
        self.groups.iter().map(|(g, r)| (g.clone(), r.iter().copied().collect())).collect()
    }

    /// The segment table, if groups narrow the segments.
    pub fn segments(&self) -> Option<BTreeMap<String, Vec<String>>> {
        self.segments.as_ref().map(|t| t.iter().map(|(g, s)| (g.clone(), s.iter().cloned().collect())).collect())
    }

    /// Whether a group may grant `admin` (the file's `admin_from_directory`).
    pub fn admin_allowed(&self) -> bool {
        self.admin_allowed
    }

    /// SHA-256 (hex) of the table in a canonical form: `group=role,role` lines in order, then,
    /// when there is a segment table, `segments` and its `group=segment,segment` lines. The
    /// ceiling is not part of it: it is the file's, and the node's start record names it apart.
    pub fn fingerprint(&self) -> String {
        let line = |group: &str, items: Vec<&str>| {
            format!("{}={}\n", serde_json::to_string(group).unwrap_or_default(), items.join(","))
        };
        let mut text = String::new();
        for (group, roles) in &self.groups {
            text.push_str(&line(group, roles.iter().map(|r| r.as_str()).collect()));
        }
        if let Some(segments) = &self.segments {
            text.push_str("segments\n");
            for (group, names) in segments {
                text.push_str(&line(group, names.iter().map(String::as_str).collect()));
            }
        }
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
}

/// What bounds a table on a node: the SSO file's ceiling, and the segments its policy has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableLimits {
    pub admin_allowed: bool,
    pub known_segments: BTreeSet<String>,
}

impl TableLimits {
    /// The table of `groups` and `segments`, if it is within these limits.
    pub fn table(
        &self,
        groups: BTreeMap<String, Vec<Role>>,
        segments: Option<BTreeMap<String, Vec<String>>>,
    ) -> Result<RoleMapping, MappingError> {
        let table = RoleMapping::new(groups, self.admin_allowed)?.with_segments(segments)?;
        table.check_segments(&self.known_segments)?;
        Ok(table)
    }
}

fn lines_text<'a>(rows: impl Iterator<Item = (&'a String, Vec<&'a str>)>) -> String {
    rows.map(|(group, items)| format!("{group} = {}\n", items.join(", "))).collect()
}

/// The role table as lines of `group = role, role` (the dashboard's editor). Group names may hold
/// `=` and `,` (directory DNs do): each line splits at its last `=`, as role and segment names
/// hold neither.
pub fn table_text(groups: &BTreeMap<String, Vec<Role>>) -> String {
    lines_text(groups.iter().map(|(g, r)| (g, r.iter().map(|r| r.as_str()).collect())))
}

/// The segment table in the same form: `group = segment, segment`.
pub fn segments_text(segments: &BTreeMap<String, Vec<String>>) -> String {
    lines_text(segments.iter().map(|(g, s)| (g, s.iter().map(String::as_str).collect())))
}

/// The non-blank lines of an editor's text as (line number, group, items).
fn parse_lines(text: &str) -> Result<Vec<(usize, String, Vec<String>)>, String> {
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = n + 1;
        let (group, items) =
            line.rsplit_once('=').ok_or_else(|| format!("line {n}: write it as `group = name, name`"))?;
        let group = group.trim().to_owned();
        if !seen.insert(group.clone()) {
            return Err(format!("line {n}: group {group:?} is named twice"));
        }
        let items = items.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned).collect();
        rows.push((n, group, items));
    }
    Ok(rows)
}

/// Reads [`table_text`]'s form back; blank lines are skipped. Says which line is wrong.
pub fn parse_table_text(text: &str) -> Result<BTreeMap<String, Vec<Role>>, String> {
    parse_lines(text)?
        .into_iter()
        .map(|(n, group, items)| {
            let roles = items
                .iter()
                .map(|r| Role::parse(r).ok_or_else(|| format!("line {n}: {r:?} is not a role")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((group, roles))
        })
        .collect()
}

/// Reads [`segments_text`]'s form back: `None` for a text with no line (groups do not narrow
/// the segments).
pub fn parse_segments_text(text: &str) -> Result<Option<BTreeMap<String, Vec<String>>>, String> {
    let rows = parse_lines(text)?;
    Ok((!rows.is_empty()).then(|| rows.into_iter().map(|(_, group, items)| (group, items)).collect()))
}

/// What a change does, group by group, for the admin who approves it: `(group, before, after)`
/// for each group whose roles (or segments) differ (an empty side: the group is new or gone).
pub fn table_changes<T: Ord + Clone>(
    before: &BTreeMap<String, Vec<T>>,
    after: &BTreeMap<String, Vec<T>>,
) -> Vec<(String, Vec<T>, Vec<T>)> {
    let sorted = |items: Option<&Vec<T>>| -> Vec<T> {
        items.map(|r| r.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()).unwrap_or_default()
    };
    let groups: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    groups
        .into_iter()
        .map(|g| (g.clone(), sorted(before.get(g)), sorted(after.get(g))))
        .filter(|(_, b, a)| b != a)
        .collect()
}

/// What a node starting with the file's table does, given the table in force (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No table is in force yet: the file's becomes it.
    Seed,
    /// The file holds a table that has been in force (the seed, or one the admins approved):
    /// the table in force holds, whatever the file says. The file is never applied again.
    InForce,
}

/// The file says something that was never in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the SSO file's role table (sha256 {file}) was never in force; the table in force is sha256 \
     {in_force}. Tables change from the dashboard, where a second admin approves each change: ask \
     for this one there, or put back a table that has been in force"
)]
pub struct FileDiffers {
    pub file: String,
    pub in_force: String,
}

/// The table in force, as the store keeps it: its fingerprint and those of every table that has
/// been in force for the provider (the seed and each approved change).
#[derive(Debug, Clone, Copy)]
pub struct InForce<'a> {
    pub sha256: &'a str,
    pub history: &'a [String],
}

/// How a node starting with a file table whose fingerprint is `file` settles with the table in
/// force. A file holding a table that has been in force starts the node, so that nodes whose
/// files are updated one at a time after an approved change all keep starting; any other table
/// stops it, so that a file edited by hand is never silently ignored.
pub fn settle(file: &str, in_force: Option<InForce<'_>>) -> Result<Settled, FileDiffers> {
    let Some(in_force) = in_force else { return Ok(Settled::Seed) };
    if file == in_force.sha256 || in_force.history.iter().any(|h| h == file) {
        Ok(Settled::InForce)
    } else {
        Err(FileDiffers { file: file.into(), in_force: in_force.sha256.into() })
    }
}

/// Why a change of the table is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeDenied {
    /// Only admins ask for or decide a change.
    NotAdmin,
    /// The approver asked for the change; a second admin must approve it.
    SameAdmin,
    /// The admin who asked is no longer an admin.
    RequesterNotAdmin,
    /// The request waited longer than [`crate::passkey_reset::REQUEST_TTL_MS`].
    Expired,
    /// A change of this provider's table is already waiting for a second admin.
    AlreadyRequested,
    /// The table asked for is the one in force.
    Unchanged,
    /// The table in force changed since the request: what was asked for was measured against
    /// another table, so it is asked again.
    Stale,
    /// The table asked for breaks a rule of tables (the ceiling, an empty group).
    Invalid(MappingError),
}

impl std::fmt::Display for ChangeDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeDenied::NotAdmin => f.write_str("only admins may ask for or decide a change of the role table"),
            ChangeDenied::SameAdmin => f.write_str("a second admin must approve a change of the role table"),
            ChangeDenied::RequesterNotAdmin => {
                f.write_str("the admin who asked for this change of the role table is no longer an admin")
            }
            ChangeDenied::Expired => {
                f.write_str("the request is more than a day old: ask again if the change is still wanted")
            }
            ChangeDenied::AlreadyRequested => {
                f.write_str("a change of this provider's role table is already waiting for a second admin")
            }
            ChangeDenied::Unchanged => f.write_str("the table asked for is the one in force"),
            ChangeDenied::Stale => {
                f.write_str("the role table changed since this request was made: ask again against the table in force")
            }
            ChangeDenied::Invalid(e) => write!(f, "the table asked for is not valid: {e}"),
        }
    }
}

/// The facts a change decision needs, as plain values.
#[derive(Debug, Clone, Copy)]
pub struct ChangeFacts<'a> {
    pub actor: &'a str,
    pub actor_roles: &'a BTreeSet<Role>,
    /// The table asked for, checked against this node's ceiling.
    pub proposed: &'a Result<RoleMapping, MappingError>,
    /// The fingerprint of the table in force now.
    pub in_force: &'a str,
}

/// The request a decision is about, as it stands now.
#[derive(Debug, Clone, Copy)]
pub struct PendingChange<'a> {
    pub requester: &'a str,
    pub requester_roles: &'a BTreeSet<Role>,
    pub age_ms: u64,
    /// The fingerprint of the table in force when the change was asked for.
    pub based_on: &'a str,
}

fn check_change_facts(facts: ChangeFacts<'_>) -> Result<(), ChangeDenied> {
    if !allows(facts.actor_roles, Capability::Administer) {
        return Err(ChangeDenied::NotAdmin);
    }
    match facts.proposed {
        Err(e) => Err(ChangeDenied::Invalid(e.clone())),
        Ok(table) if table.fingerprint() == facts.in_force => Err(ChangeDenied::Unchanged),
        Ok(_) => Ok(()),
    }
}

/// May `facts.actor` ask for this change, with `already_requested` saying whether one for the
/// provider is waiting? (It then waits for a second admin.)
pub fn check_change_request(facts: ChangeFacts<'_>, already_requested: bool) -> Result<(), ChangeDenied> {
    check_change_facts(facts)?;
    if already_requested {
        return Err(ChangeDenied::AlreadyRequested);
    }
    Ok(())
}

/// May `facts.actor` approve the change `pending` asked for? The rules of asking hold again as
/// things are now, the table in force is the one it was asked against, its requester is still an
/// admin, it is fresh, and the approver is someone else.
pub fn check_change_approval(pending: PendingChange<'_>, facts: ChangeFacts<'_>) -> Result<(), ChangeDenied> {
    check_change_facts(facts)?;
    if facts.actor == pending.requester {
        return Err(ChangeDenied::SameAdmin);
    }
    if !allows(pending.requester_roles, Capability::Administer) {
        return Err(ChangeDenied::RequesterNotAdmin);
    }
    if pending.age_ms > crate::passkey_reset::REQUEST_TTL_MS {
        return Err(ChangeDenied::Expired);
    }
    if pending.based_on != facts.in_force {
        return Err(ChangeDenied::Stale);
    }
    Ok(())
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
        // The ceiling is the file's, named apart on the start record.
        assert_eq!(a.fingerprint(), admin_on.fingerprint());
    }

    #[test]
    fn group_names_are_taken_as_the_directory_spells_them_and_never_blank() {
        assert_eq!(table(&[("", &[Role::Operator])], false), Err(MappingError::BadGroupName { group: "".into() }));
        assert_eq!(
            table(&[(" ops", &[Role::Operator])], false),
            Err(MappingError::BadGroupName { group: " ops".into() })
        );
    }

    #[test]
    fn the_file_seeds_the_table_once_and_then_may_only_repeat_what_was_in_force() {
        assert_eq!(settle("f1", None), Ok(Settled::Seed));
        let seeded = ["f1".to_string()];
        assert_eq!(settle("f1", Some(InForce { sha256: "f1", history: &seeded })), Ok(Settled::InForce));
        // The admins approved t2 since: the old file and a file that says t2 both start the node
        // (with t2 in force); anything else stops it.
        let changed = ["f1".to_string(), "t2".to_string()];
        let now = InForce { sha256: "t2", history: &changed };
        assert_eq!(settle("f1", Some(now)), Ok(Settled::InForce));
        assert_eq!(settle("t2", Some(now)), Ok(Settled::InForce));
        assert_eq!(settle("f3", Some(now)), Err(FileDiffers { file: "f3".into(), in_force: "t2".into() }));
    }

    fn change<'a>(
        actor: &'a str,
        roles: &'a BTreeSet<Role>,
        proposed: &'a Result<RoleMapping, MappingError>,
        in_force: &'a str,
    ) -> ChangeFacts<'a> {
        ChangeFacts { actor, actor_roles: roles, proposed, in_force }
    }

    #[test]
    fn an_admin_asks_for_a_valid_new_table_once() {
        let admin = BTreeSet::from([Role::Admin]);
        let operator = BTreeSet::from([Role::Operator]);
        let old = table(&[("ops", &[Role::Operator])], false).unwrap().fingerprint();
        let new = table(&[("ops", &[Role::Operator, Role::Observer])], false);
        assert_eq!(check_change_request(change("a", &admin, &new, &old), false), Ok(()));
        assert_eq!(check_change_request(change("o", &operator, &new, &old), false), Err(ChangeDenied::NotAdmin));
        assert_eq!(check_change_request(change("a", &admin, &new, &old), true), Err(ChangeDenied::AlreadyRequested));
        let same = table(&[("ops", &[Role::Operator])], false);
        assert_eq!(check_change_request(change("a", &admin, &same, &old), false), Err(ChangeDenied::Unchanged));
        // The ceiling: a table that grants admin where the file does not allow it is refused.
        let admin_grant = table(&[("it", &[Role::Admin])], false);
        assert_eq!(
            check_change_request(change("a", &admin, &admin_grant, &old), false),
            Err(ChangeDenied::Invalid(MappingError::AdminNotAllowed { group: "it".into() }))
        );
    }

    #[test]
    fn approval_needs_a_second_admin_against_the_table_it_was_asked_for() {
        let admin = BTreeSet::from([Role::Admin]);
        let old = table(&[("ops", &[Role::Operator])], false).unwrap().fingerprint();
        let new = table(&[("ops", &[Role::Observer])], false);
        let by_a = PendingChange { requester: "a", requester_roles: &admin, age_ms: 60_000, based_on: &old };
        assert_eq!(check_change_approval(by_a, change("b", &admin, &new, &old)), Ok(()));
        assert_eq!(check_change_approval(by_a, change("a", &admin, &new, &old)), Err(ChangeDenied::SameAdmin));
        let none = BTreeSet::new();
        assert_eq!(check_change_approval(by_a, change("b", &none, &new, &old)), Err(ChangeDenied::NotAdmin));
        let demoted = PendingChange { requester_roles: &none, ..by_a };
        assert_eq!(
            check_change_approval(demoted, change("b", &admin, &new, &old)),
            Err(ChangeDenied::RequesterNotAdmin)
        );
        let old_request = PendingChange { age_ms: crate::passkey_reset::REQUEST_TTL_MS + 1, ..by_a };
        assert_eq!(check_change_approval(old_request, change("b", &admin, &new, &old)), Err(ChangeDenied::Expired));
        // Another change landed since the request: it is asked again.
        assert_eq!(check_change_approval(by_a, change("b", &admin, &new, "other")), Err(ChangeDenied::Stale));
    }

    #[test]
    fn the_editor_text_reads_back_as_the_table_even_with_directory_names() {
        let t: BTreeMap<String, Vec<Role>> = [
            ("CN=Ops,OU=Groups,DC=bank".to_string(), vec![Role::Operator, Role::Observer]),
            ("auditors".to_string(), vec![Role::Auditor]),
        ]
        .into();
        assert_eq!(parse_table_text(&table_text(&t)), Ok(t));
        assert_eq!(parse_table_text("\n ops = operator ,\n\n").unwrap()["ops"], vec![Role::Operator]);
        assert!(parse_table_text("ops").unwrap_err().starts_with("line 1:"));
        assert!(parse_table_text("ops = operator\nsec = root").unwrap_err().contains("line 2: \"root\" is not a role"));
        assert!(parse_table_text("a = operator\na = observer").unwrap_err().contains("named twice"));
        // A group with no role is read as such; the table's own check refuses it.
        assert_eq!(parse_table_text("x =").unwrap()["x"], Vec::<Role>::new());
    }

    #[test]
    fn a_change_is_shown_group_by_group() {
        let before: BTreeMap<String, Vec<Role>> =
            [("ops".to_string(), vec![Role::Operator]), ("sec".to_string(), vec![Role::Observer])].into();
        let after: BTreeMap<String, Vec<Role>> = [
            ("ops".to_string(), vec![Role::Operator]),
            ("sec".to_string(), vec![Role::Auditor, Role::Observer]),
            ("new".to_string(), vec![Role::Operator]),
        ]
        .into();
        assert_eq!(
            table_changes(&before, &after),
            vec![
                ("new".to_string(), vec![], vec![Role::Operator]),
                ("sec".to_string(), vec![Role::Observer], vec![Role::Observer, Role::Auditor]),
            ]
        );
        assert_eq!(table_changes(&after, &after), vec![]);
    }

    #[test]
    fn groups_narrow_the_segments_only_where_the_table_has_a_segment_table() {
        let roles = table(&[("ops", &[Role::Operator]), ("branch-a", &[Role::Operator])], false).unwrap();
        assert_eq!(roles.segments_for(["ops"]), None);
        let seg = |rows: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
            rows.iter().map(|(g, s)| (g.to_string(), s.iter().map(|s| s.to_string()).collect())).collect()
        };
        let narrowed = roles
            .clone()
            .with_segments(Some(seg(&[("branch-a", &["office"]), ("it", &["servers", "office"])])))
            .unwrap();
        assert_eq!(narrowed.segments_for(["ops"]), Some(BTreeSet::new()));
        assert_eq!(
            narrowed.segments_for(["branch-a", "it"]),
            Some(BTreeSet::from(["office".to_string(), "servers".to_string()]))
        );
        // A segment table changes the fingerprint; none leaves it as a table of roles alone.
        assert_ne!(narrowed.fingerprint(), roles.fingerprint());
        assert_eq!(roles.clone().with_segments(None).unwrap().fingerprint(), roles.fingerprint());
        assert_eq!(roles.clone().with_segments(Some(BTreeMap::new())), Err(MappingError::NoSegmentGroups));
        assert_eq!(
            roles.clone().with_segments(Some(seg(&[("x", &[])]))),
            Err(MappingError::NoSegment { group: "x".into() })
        );
        // Segments are checked against the policy's.
        let limits = TableLimits { admin_allowed: false, known_segments: BTreeSet::from(["office".to_string()]) };
        assert_eq!(
            limits.table(roles.groups(), Some(seg(&[("it", &["servers"])]))),
            Err(MappingError::UnknownSegment { group: "it".into(), segment: "servers".into() })
        );
        assert_eq!(
            limits.table(roles.groups(), Some(seg(&[("it", &["office"])]))).map(|t| t.segments_for(["it"])),
            Ok(Some(BTreeSet::from(["office".to_string()])))
        );
        assert_eq!(parse_segments_text("\n"), Ok(None));
        assert_eq!(
            parse_segments_text(&segments_text(&seg(&[("it", &["office", "servers"])]))),
            Ok(Some(seg(&[("it", &["office", "servers"])])))
        );
    }
}
