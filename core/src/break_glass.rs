//! Break-glass sign-in (R43): the rules, free of IO.
//!
//! When the shared store or the identity provider is down, nobody can sign in the normal way. A
//! named person then signs in on one node with a sealed one-time code (printed by
//! `relay break-glass codes`, kept offline), and gets reduced functions: view and chat with a
//! device whose user consents, nothing else. Every record of it is marked `break_glass` and
//! goes to the SIEM at the highest severity.
//!
//! Why these limits: a break-glass person was checked by nobody at the time (no passkey, no
//! directory), so they get only what a user at the endpoint sees and approves. No control,
//! clipboard or files (nothing acts on or leaves the endpoint), no unattended access (a person
//! must be there to consent), no observing others' sessions, no administration (roles, policy,
//! devices and users live in the store anyway). A code is bound to one node (its name is the
//! code's prefix), so a node can spend it on its own disk while the store is away, and it is
//! spent once whatever happens next.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use sightline_proto::Level;

/// Audit actors and session operators of break-glass sign-ins start with this; user names
/// cannot hold a `:`, so no account can be taken for one.
pub const ACTOR_PREFIX: &str = "break-glass:";

/// The longest a break-glass sign-in lasts; it is not renewed.
pub const MAX_SIGN_IN_S: u64 = 3600;

/// What a break-glass person may ask for.
pub const LEVELS: [Level; 2] = [Level::View, Level::Chat];

/// The audit actor (and session operator) of `holder`.
pub fn actor(holder: &str) -> String {
    format!("{ACTOR_PREFIX}{holder}")
}

/// Whether an audit actor or a session's operator is a break-glass sign-in.
pub fn is_break_glass(name: &str) -> bool {
    name.starts_with(ACTOR_PREFIX)
}

/// The policy's `[break_glass]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassFile {
    #[serde(default)]
    holders: Vec<HolderFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderFile {
    name: String,
    codes_sha256: Vec<String>,
}

/// Who holds break-glass codes, and the SHA-256 of each of their codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakGlassRules {
    holders: BTreeMap<String, BTreeSet<[u8; 32]>>,
}

impl BreakGlassRules {
    /// Validates the table: a malformed hash or a code named twice refuses the policy.
    pub fn from_file(file: BreakGlassFile) -> Result<BreakGlassRules, String> {
        let mut holders: BTreeMap<String, BTreeSet<[u8; 32]>> = BTreeMap::new();
        let mut every = BTreeSet::new();
        for holder in file.holders {
            let name = holder.name.trim().to_owned();
            if !valid_holder(&name) {
                return Err(format!(
                    "break_glass.holders: {name:?} is not a name (1-64 letters, digits, '.', '-', '_' or '@')"
                ));
            }
            if holder.codes_sha256.is_empty() {
                return Err(format!("break_glass.holders: {name:?} has no codes_sha256"));
            }
            let mut codes = BTreeSet::new();
            for h in &holder.codes_sha256 {
                let hash = hex::decode(h.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                    format!("break_glass.holders: a code of {name:?} is not 64 hex characters (`relay break-glass codes` makes them)")
                })?;
                if !every.insert(hash) {
                    return Err(format!("break_glass.holders: a code hash of {name:?} is listed twice"));
                }
                codes.insert(hash);
            }
            if holders.insert(name.clone(), codes).is_some() {
                return Err(format!("break_glass.holders: {name:?} is listed twice"));
            }
        }
        Ok(BreakGlassRules { holders })
    }

    pub fn is_empty(&self) -> bool {
        self.holders.is_empty()
    }

    /// Whether `code`, presented by `holder` on node `node`, is one of theirs for that node and
    /// not in `spent`. Returns the code's SHA-256 (hex), which is what gets spent and recorded.
    pub fn check(&self, node: &str, holder: &str, code: &str, spent: &BTreeSet<String>) -> Result<String, Refusal> {
        let code = code.trim();
        let hash: [u8; 32] = Sha256::digest(code.as_bytes()).into();
        let digest = hex::encode(hash);
        let Some(codes) = self.holders.get(holder.trim()) else {
            return Err(Refusal::UnknownCode);
        };
        if !codes.contains(&hash) {
            return Err(Refusal::UnknownCode);
        }
        // The node's name is part of the code: a code printed for another node is refused here,
        // so no code can be spent on two nodes while they cannot tell each other.
        if code.rsplit_once('.').map(|(prefix, _)| prefix) != Some(node) {
            return Err(Refusal::OtherNode);
        }
        if spent.contains(&digest) {
            return Err(Refusal::Spent);
        }
        Ok(digest)
    }
}

/// A holder's name follows the rules of user names.
fn valid_holder(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

/// A new code for `node`: the node's name (which may hold dots itself), a dot, and 128 random
/// bits as 32 hex digits.
pub fn code_for(node: &str, random: [u8; 16]) -> String {
    format!("{node}.{}", hex::encode(random))
}

/// The SHA-256 (hex) of a code as presented (surrounding blanks removed).
pub fn digest(code: &str) -> String {
    hex::encode(Sha256::digest(code.trim().as_bytes()))
}

/// Why a break-glass sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The normal sign-in works: break-glass is for when it does not.
    NotNeeded,
    /// No such holder, or not one of their codes.
    UnknownCode,
    /// The code was printed for another node.
    OtherNode,
    /// The code was used before.
    Spent,
    /// The node cannot record the code as spent (its disk).
    CannotSpend,
}

impl Refusal {
    /// A short name for the audit record's detail.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotNeeded => "not_needed",
            Refusal::UnknownCode => "unknown_code",
            Refusal::OtherNode => "other_node",
            Refusal::Spent => "spent",
            Refusal::CannotSpend => "cannot_spend",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotNeeded => {
                "the normal sign-in works now: break-glass is only for when the store or the identity provider is down"
            }
            Refusal::UnknownCode => "this is not a break-glass code of that holder",
            Refusal::OtherNode => "this code was printed for another relay node",
            Refusal::Spent => "this break-glass code was used before",
            Refusal::CannotSpend => "the node cannot record the code as spent, so it is not accepted",
        })
    }
}

/// What a break-glass sign-in may ask for in a session: `None` when allowed, or why not.
pub fn session_refusal(levels: &BTreeSet<Level>, unattended: bool) -> Option<String> {
    if unattended {
        return Some("break-glass: unattended access is not allowed; a user must consent".into());
    }
    levels.iter().find(|l| !LEVELS.contains(l)).map(|l| {
        format!("break-glass: level {} is not allowed; only view and chat, with the user's consent", l.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(codes: &[&str]) -> BreakGlassRules {
        let file: BreakGlassFile = toml::from_str(&format!(
            "[[holders]]\nname = \"jane\"\ncodes_sha256 = [{}]\n",
            codes.iter().map(|c| format!("\"{}\"", digest(c))).collect::<Vec<_>>().join(",")
        ))
        .unwrap();
        BreakGlassRules::from_file(file).unwrap()
    }

    #[test]
    fn a_code_is_accepted_once_on_its_own_node_and_for_its_holder() {
        let code = code_for("relay-a", [7; 16]);
        let rules = rules(&[&code]);
        let mut spent = BTreeSet::new();
        let hash = rules.check("relay-a", "jane", &format!(" {code}\n"), &spent).unwrap();
        assert_eq!(hash, digest(&code));
        spent.insert(hash);
        assert_eq!(rules.check("relay-a", "jane", &code, &spent), Err(Refusal::Spent));
        assert_eq!(rules.check("relay-b", "jane", &code, &BTreeSet::new()), Err(Refusal::OtherNode));
        assert_eq!(rules.check("relay-a", "john", &code, &BTreeSet::new()), Err(Refusal::UnknownCode));
        assert_eq!(rules.check("relay-a", "jane", "relay-a.00", &BTreeSet::new()), Err(Refusal::UnknownCode));
        // A node named like a host name.
        let dotted = code_for("relay.bank.example", [9; 16]);
        assert!(rules_ok(&dotted, "relay.bank.example"));
        assert!(!rules_ok(&dotted, "bank.example"));
    }

    fn rules_ok(code: &str, node: &str) -> bool {
        rules(&[code]).check(node, "jane", code, &BTreeSet::new()).is_ok()
    }

    #[test]
    fn a_table_that_cannot_be_held_refuses_the_policy() {
        let bad = |text: &str| BreakGlassRules::from_file(toml::from_str(text).unwrap()).unwrap_err();
        assert!(bad("[[holders]]\nname = \"jane\"\ncodes_sha256 = [\"abc\"]").contains("64 hex"));
        assert!(bad("[[holders]]\nname = \"jane\"\ncodes_sha256 = []").contains("no codes"));
        assert!(bad("[[holders]]\nname = \"ja:ne\"\ncodes_sha256 = []").contains("not a name"));
        let h = digest("x");
        assert!(bad(&format!("[[holders]]\nname = \"a\"\ncodes_sha256 = [\"{h}\", \"{h}\"]")).contains("twice"));
        assert!(toml::from_str::<BreakGlassFile>("[[holders]]\nname = \"a\"\ncodes = []").is_err());
    }

    #[test]
    fn a_break_glass_session_is_view_and_chat_with_a_user_there() {
        let view_chat: BTreeSet<Level> = LEVELS.into_iter().collect();
        assert_eq!(session_refusal(&view_chat, false), None);
        assert!(session_refusal(&view_chat, true).unwrap().contains("unattended"));
        let control: BTreeSet<Level> = [Level::View, Level::Control].into_iter().collect();
        assert!(session_refusal(&control, false).unwrap().contains("control"));
        assert!(is_break_glass(&actor("jane")) && !is_break_glass("jane"));
    }
}
