//! Commands run on a relay node's host that act on its data (`relay recording export`,
//! `relay unlock`, `relay agent-token create`): the policy's `[command_line]` table says which of
//! them need an admin's approval or the node's break-glass credential (issue 23).
//!
//! An approval is evidence, not a token the host could mint: an admin who stepped up with a
//! passkey asks the relay for it, the relay writes a `command.approved` record naming the admin,
//! the command, its target, its expiry and the SHA-256 of a one-time code, and gives the code to
//! the admin alone. The command on the host presents the code and is granted only if a record
//! under a signed checkpoint of the node's log matches it, and no `command.approval_used` record
//! consumed it. The break-glass credential is a secret kept offline (a safe) whose SHA-256 the
//! policy holds; its use is a record of its own, for the security team to follow up. Everything
//! here decides on plain values; reading the log and writing the records is the relay binary's.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A command on the node's data that the policy can put under approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeCommand {
    /// `relay recording export`: hands a recording out, decrypted. Target: the recording id.
    RecordingExport,
    /// `relay unlock`: lifts a login lock. Target: `account:<name>` or `address:<ip>`.
    Unlock,
    /// `relay agent-token create`: lets one more endpoint enrol. Target: the segment.
    AgentTokenCreate,
}

impl NodeCommand {
    pub const ALL: [NodeCommand; 3] =
        [NodeCommand::RecordingExport, NodeCommand::Unlock, NodeCommand::AgentTokenCreate];

    /// The name the policy and the records use.
    pub fn name(self) -> &'static str {
        match self {
            NodeCommand::RecordingExport => "recording.export",
            NodeCommand::Unlock => "unlock",
            NodeCommand::AgentTokenCreate => "agent_token.create",
        }
    }

    pub fn parse(name: &str) -> Option<NodeCommand> {
        NodeCommand::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The policy's `[command_line]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLineFile {
    #[serde(default)]
    needs_approval: Vec<String>,
    #[serde(default)]
    break_glass_sha256: Option<String>,
}

/// Which commands need an approval, and the break-glass credential's hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandRules {
    pub needs_approval: BTreeSet<NodeCommand>,
    pub break_glass_sha256: Option<[u8; 32]>,
}

impl CommandRules {
    /// Validates the table: an unknown command name refuses the policy rather than leaving a
    /// command ungated that someone meant to gate.
    pub fn from_file(file: CommandLineFile) -> Result<CommandRules, String> {
        let needs_approval = file
            .needs_approval
            .iter()
            .map(|n| {
                NodeCommand::parse(n.trim()).ok_or_else(|| {
                    let known: Vec<_> = NodeCommand::ALL.iter().map(|c| c.name()).collect();
                    format!("command_line.needs_approval: unknown command {n:?} (known: {})", known.join(", "))
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let break_glass_sha256 = match file.break_glass_sha256 {
            None => None,
            Some(h) => Some(hex::decode(h.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or(
                "command_line.break_glass_sha256: not 64 hex characters (`relay break-glass create` makes one)",
            )?),
        };
        Ok(CommandRules { needs_approval, break_glass_sha256 })
    }
}

/// An admin's approval, as the detail of its `command.approved` record (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub id: String,
    pub command: String,
    pub target: String,
    pub reason: String,
    pub expires_ms: u64,
    /// SHA-256 (hex) of the one-time code; the code itself is never recorded.
    pub code_sha256: String,
}

/// Longest an approval may stay open.
pub const MAX_APPROVAL_MS: u64 = 24 * 3600 * 1000;

/// The SHA-256 (hex) of a code or credential as presented (surrounding blanks removed).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// The SHA-256 (hex) of a file as it is (a policy).
pub fn digest_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An approval the node's log holds: the record's position and who approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub seq: u64,
    pub admin: String,
    /// Whether a signed checkpoint covers the record (only then does it count).
    pub checkpointed: bool,
    pub approval: Approval,
}

/// What the person at the host presents.
#[derive(Debug, Clone, Copy)]
pub enum Authority<'a> {
    None,
    /// An approval's one-time code.
    Approval(&'a str),
    /// The node's break-glass credential.
    BreakGlass(&'a str),
}

/// Why a command may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The policy does not gate it.
    NotNeeded,
    /// An admin approved it (the approval's record).
    Approved { id: String, admin: String, seq: u64 },
    /// The break-glass credential was used.
    BreakGlass,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the policy says {0} needs an admin's approval: ask an admin for one (admin page, \"Approve a command on the node\") and pass --approval CODE, or use the break-glass credential (--break-glass FILE)"
    )]
    NeedsApproval(&'static str),
    #[error("no approval of this node's log matches the code (a code is for one node, one command and one target)")]
    UnknownCode,
    #[error("approval {id} is for {command} {target}, not for this command")]
    OtherCommand { id: String, command: String, target: String },
    #[error("approval {id} expired")]
    Expired { id: String },
    #[error("approval {id} was used already (record {seq})")]
    Used { id: String, seq: u64 },
    #[error("approval {id} is not yet under a signed checkpoint of the log; retry in a few seconds")]
    NotCheckpointed { id: String },
    #[error("the policy holds no break-glass credential for this node")]
    NoBreakGlass,
    #[error("the break-glass credential does not match the policy's")]
    WrongBreakGlass,
    #[error(
        "the policy given (SHA-256 {given}) is not the one the node runs (record {seq}: {running}): pass the node's own --policy"
    )]
    OtherPolicy { given: String, running: String, seq: u64 },
}

/// A command is judged by the policy the node runs, not by one its caller picked: the newest
/// `node.started` record names that policy's SHA-256. A node that never started has none yet.
pub fn same_policy(given_sha256: &str, running: Option<(u64, &str)>) -> Result<(), Refusal> {
    match running {
        Some((seq, running)) if running != given_sha256 => {
            Err(Refusal::OtherPolicy { given: given_sha256.to_owned(), running: running.to_owned(), seq })
        }
        _ => Ok(()),
    }
}

/// Decides whether `command` on `target` may run now. `used` maps the ids of approvals already
/// consumed to the record that consumed them.
pub fn decide(
    rules: &CommandRules,
    command: NodeCommand,
    target: &str,
    now_ms: u64,
    authority: Authority<'_>,
    approvals: &[Recorded],
    used: &std::collections::BTreeMap<String, u64>,
) -> Result<Grant, Refusal> {
    match authority {
        Authority::BreakGlass(secret) => {
            let expected = rules.break_glass_sha256.ok_or(Refusal::NoBreakGlass)?;
            let presented = Sha256::digest(secret.trim().as_bytes());
            // Constant time: the comparison says nothing about how close a guess came.
            let diff = presented.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 { Ok(Grant::BreakGlass) } else { Err(Refusal::WrongBreakGlass) }
        }
        Authority::None if !rules.needs_approval.contains(&command) => Ok(Grant::NotNeeded),
        Authority::None => Err(Refusal::NeedsApproval(command.name())),
        Authority::Approval(code) => {
            let code_sha256 = digest(code);
            let found = approvals.iter().find(|r| r.approval.code_sha256 == code_sha256).ok_or(Refusal::UnknownCode)?;
            let a = &found.approval;
            if a.command != command.name() || a.target != target {
                return Err(Refusal::OtherCommand {
                    id: a.id.clone(),
                    command: a.command.clone(),
                    target: a.target.clone(),
                });
            }
            if let Some(&seq) = used.get(&a.id) {
                return Err(Refusal::Used { id: a.id.clone(), seq });
            }
            if now_ms >= a.expires_ms {
                return Err(Refusal::Expired { id: a.id.clone() });
            }
            if !found.checkpointed {
                return Err(Refusal::NotCheckpointed { id: a.id.clone() });
            }
            Ok(Grant::Approved { id: a.id.clone(), admin: found.admin.clone(), seq: found.seq })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn rules() -> CommandRules {
        CommandRules::from_file(CommandLineFile {
            needs_approval: vec!["recording.export".into(), "unlock".into()],
            break_glass_sha256: Some(digest("correct horse battery staple")),
        })
        .unwrap()
    }

    fn recorded(code: &str, checkpointed: bool) -> Recorded {
        Recorded {
            seq: 41,
            admin: "ada".into(),
            checkpointed,
            approval: Approval {
                id: "ap-1".into(),
                command: "recording.export".into(),
                target: "rec-7".into(),
                reason: "court order 12".into(),
                expires_ms: 2_000,
                code_sha256: digest(code),
            },
        }
    }

    const NOW: u64 = 1_000;

    #[test]
    fn a_gated_command_runs_only_with_a_matching_unused_checkpointed_approval() {
        let (rules, log, none) = (rules(), vec![recorded("k3y", true)], BTreeMap::new());
        let export = NodeCommand::RecordingExport;
        assert_eq!(
            decide(&rules, export, "rec-7", NOW, Authority::Approval("k3y"), &log, &none),
            Ok(Grant::Approved { id: "ap-1".into(), admin: "ada".into(), seq: 41 })
        );
        assert_eq!(
            decide(&rules, export, "rec-7", NOW, Authority::None, &log, &none),
            Err(Refusal::NeedsApproval("recording.export"))
        );
        assert_eq!(
            decide(&rules, export, "rec-7", NOW, Authority::Approval("guess"), &log, &none),
            Err(Refusal::UnknownCode)
        );
        assert!(matches!(
            decide(&rules, export, "rec-8", NOW, Authority::Approval("k3y"), &log, &none),
            Err(Refusal::OtherCommand { .. })
        ));
        assert!(matches!(
            decide(&rules, NodeCommand::Unlock, "rec-7", NOW, Authority::Approval("k3y"), &log, &none),
            Err(Refusal::OtherCommand { .. })
        ));
        let used = BTreeMap::from([("ap-1".to_owned(), 50)]);
        assert_eq!(
            decide(&rules, export, "rec-7", NOW, Authority::Approval("k3y"), &log, &used),
            Err(Refusal::Used { id: "ap-1".into(), seq: 50 })
        );
        assert_eq!(
            decide(&rules, export, "rec-7", 2_000, Authority::Approval("k3y"), &log, &none),
            Err(Refusal::Expired { id: "ap-1".into() })
        );
        assert_eq!(
            decide(&rules, export, "rec-7", NOW, Authority::Approval("k3y"), &[recorded("k3y", false)], &none),
            Err(Refusal::NotCheckpointed { id: "ap-1".into() })
        );
        // A command the policy does not gate runs without anything.
        assert_eq!(
            decide(&rules, NodeCommand::AgentTokenCreate, "office", NOW, Authority::None, &log, &none),
            Ok(Grant::NotNeeded)
        );
    }

    #[test]
    fn commands_are_judged_by_the_policy_the_node_runs() {
        assert_eq!(same_policy("aa", Some((3, "aa"))), Ok(()));
        assert_eq!(same_policy("aa", None), Ok(()));
        assert_eq!(
            same_policy("bb", Some((3, "aa"))),
            Err(Refusal::OtherPolicy { given: "bb".into(), running: "aa".into(), seq: 3 })
        );
    }

    #[test]
    fn break_glass_needs_the_credential_the_policy_holds() {
        let none = BTreeMap::new();
        let export = NodeCommand::RecordingExport;
        let glass = Authority::BreakGlass("correct horse battery staple\n");
        assert_eq!(decide(&rules(), export, "rec-7", NOW, glass, &[], &none), Ok(Grant::BreakGlass));
        assert_eq!(
            decide(&rules(), export, "rec-7", NOW, Authority::BreakGlass("wrong"), &[], &none),
            Err(Refusal::WrongBreakGlass)
        );
        let without = CommandRules { break_glass_sha256: None, ..rules() };
        assert_eq!(decide(&without, export, "rec-7", NOW, glass, &[], &none), Err(Refusal::NoBreakGlass));
    }

    #[test]
    fn a_table_naming_an_unknown_command_or_a_bad_hash_is_refused() {
        let unknown = CommandLineFile { needs_approval: vec!["recording.delete".into()], break_glass_sha256: None };
        assert!(CommandRules::from_file(unknown).unwrap_err().contains("unknown command \"recording.delete\""));
        let bad = CommandLineFile { needs_approval: vec![], break_glass_sha256: Some("abc".into()) };
        assert!(CommandRules::from_file(bad).unwrap_err().contains("break_glass_sha256"));
    }
}
