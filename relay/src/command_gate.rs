//! The gate in front of commands run on a node's host (`relay recording export`, `relay unlock`,
//! `relay agent-token create`): what the node's policy asks for them (`[command_line]`), checked
//! against the approvals on the node's own audit log, and the outcome recorded before the command
//! acts. The rules are `sightline_core::command_approval`; this module reads the log and writes
//! the records.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use sightline_audit::CliSink;
use sightline_audit::commands::{NodeLog, TrustedKeys};
use sightline_audit::events::{Event, EventKind, EventSink, Outcome};
use sightline_core::command_approval::{self, Approval, Authority, Grant, NodeCommand, Recorded, Refusal};

use crate::config::Config;

/// How long a command waits for an approval made a moment ago to come under a checkpoint, or
/// for a log being appended to to read whole.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the node's log says about commands: its approvals, the ids already consumed (with the
/// consuming record), and the policy the node runs (the newest `node.started`).
#[derive(Debug, Default)]
struct OnRecord {
    approvals: Vec<Recorded>,
    used: BTreeMap<String, u64>,
    running_policy: Option<(u64, String)>,
}

fn on_record(config: &Config) -> anyhow::Result<OnRecord> {
    let dir = config.audit_settings().dir;
    if std::fs::metadata(dir.join(sightline_audit::LOG_FILE)).map(|m| m.len() == 0).unwrap_or(true) {
        return Ok(OnRecord::default());
    }
    let own = std::fs::read_to_string(dir.join(sightline_audit::PUBLIC_KEY_FILE))
        .with_context(|| format!("{} holds a log but no node key", dir.display()))?;
    let log = NodeLog::load(&dir, &TrustedKeys::new([own.trim().to_owned()]))?;
    let covered = log.report.last_checkpoint.as_ref().map_or(0, |c| c.size);
    let mut found = OnRecord::default();
    for record in &log.records {
        match record.kind.as_str() {
            "command.approved" if record.outcome == Outcome::Success => {
                // A detail that is not an approval approves nothing.
                if let Ok(approval) = serde_json::from_str::<Approval>(&record.detail) {
                    found.approvals.push(Recorded {
                        seq: record.seq,
                        admin: record.actor.clone(),
                        checkpointed: record.seq < covered,
                        approval,
                    });
                }
            }
            "command.approval_used" => {
                if let Some(id) = record.subject.as_deref().and_then(|s| s.strip_prefix("approval:")) {
                    found.used.entry(id.to_owned()).or_insert(record.seq);
                }
            }
            "node.started" => {
                let started: Option<serde_json::Value> = serde_json::from_str(&record.detail).ok();
                if let Some(sha) = started.as_ref().and_then(|v| v["policy_sha256"].as_str()) {
                    found.running_policy = Some((record.seq, sha.to_owned()));
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

fn event(kind: EventKind, outcome: Outcome, command: NodeCommand, target: &str, detail: String) -> Event {
    Event {
        ts_ms: now_ms(),
        kind,
        outcome,
        actor: sightline_audit::cli_actor(),
        subject: Some(format!("command:{} {target}", command.name())),
        source: None,
        detail,
        session: None,
    }
}

/// Lets `command` on `target` run if the node's policy allows it with what `args` present, and
/// records (durably, before the command acts) the approval it consumed or the break-glass it used.
/// A refusal is recorded too, the sink closed (the command ends there), and the refusal returned.
pub async fn authorise(
    config: &Config,
    audit: &CliSink,
    command: NodeCommand,
    target: &str,
    args: &AuthorityArgs,
) -> anyhow::Result<Grant> {
    let decided = decide_and_record(config, audit, command, target, args).await;
    if decided.is_err() {
        audit.close();
    }
    decided
}

async fn decide_and_record(
    config: &Config,
    audit: &CliSink,
    command: NodeCommand,
    target: &str,
    args: &AuthorityArgs,
) -> anyhow::Result<Grant> {
    let secret = args.secret()?;
    let authority = args.authority(&secret);
    let crate::server::LoadedPolicy { policy, sha256: policy_sha256 } = crate::server::load_policy(&config.policy)
        .context("the node's policy (--policy) says which commands need an admin's approval")?;
    let deadline = tokio::time::Instant::now() + CHECKPOINT_WAIT;
    let decided = loop {
        // The running relay appends as this reads: a torn last line is read again.
        let found = match on_record(config) {
            Ok(found) => found,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => return Err(e.context("cannot read the node's audit log, where approvals are")),
        };
        let running = found.running_policy.as_ref().map(|(seq, sha)| (*seq, sha.as_str()));
        let decided = command_approval::same_policy(&policy_sha256, running).and_then(|()| {
            let rules = &policy.command_line;
            command_approval::decide(rules, command, target, now_ms(), authority, &found.approvals, &found.used)
        });
        match decided {
            Err(Refusal::NotCheckpointed { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            decided => break decided,
        }
    };
    let record = match &decided {
        Ok(Grant::NotNeeded) => return Ok(Grant::NotNeeded),
        Ok(Grant::Approved { id, admin, seq }) => {
            let mut e = event(
                EventKind::CommandApprovalUsed,
                Outcome::Success,
                command,
                target,
                format!("{} {target}, approved by {admin} (record {seq})", command.name()),
            );
            e.subject = Some(format!("approval:{id}"));
            e
        }
        Ok(Grant::BreakGlass) => event(
            EventKind::CommandBreakGlass,
            Outcome::Success,
            command,
            target,
            format!("{} {target} under the node's break-glass credential", command.name()),
        ),
        Err(refusal) => event(EventKind::CommandRefused, Outcome::Failure, command, target, refusal.to_string()),
    };
    let mut record = record;
    record.detail = format!("{}; policy SHA-256 {policy_sha256}", record.detail);
    audit.emit(record);
    let committed = audit.committed().await;
    let grant = decided?;
    committed.map_err(|e| anyhow::anyhow!("the command could not be audited, so it did not run: {e}"))?;
    Ok(grant)
}

/// The authority flags every gated command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthorityArgs {
    /// The one-time code of an admin's approval of this command on this target (admin page,
    /// "Approve a command on the node"), when the node's policy asks for one.
    #[arg(long, conflicts_with = "break_glass")]
    pub approval: Option<String>,
    /// A file holding the node's break-glass credential (`-` reads standard input): for when no
    /// admin can approve. Its use is recorded for the security team.
    #[arg(long)]
    pub break_glass: Option<std::path::PathBuf>,
}

impl AuthorityArgs {
    /// Reads the break-glass credential, if one was given.
    pub fn secret(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.break_glass else { return Ok(None) };
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read the break-glass credential")?
        } else {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        };
        Ok(Some(text))
    }

    /// What the person at the host presents (`secret` from `secret()`).
    pub fn authority<'a>(&'a self, secret: &'a Option<String>) -> Authority<'a> {
        match (&self.approval, secret) {
            (Some(code), _) => Authority::Approval(code),
            (None, Some(secret)) => Authority::BreakGlass(secret),
            (None, None) => Authority::None,
        }
    }
}

/// `relay break-glass create`: a new credential (printed once) and the policy line that names it.
pub fn new_break_glass() -> (String, String) {
    let secret = hex::encode(sightline_identity::random_bytes::<32>());
    let line = format!("break_glass_sha256 = \"{}\"", command_approval::digest(&secret));
    (secret, line)
}

/// `relay break-glass codes`: `count` sign-in codes per node for `holder` (printed once), and the
/// policy table that names their SHA-256 (R43, `sightline_core::break_glass`).
pub fn new_break_glass_codes(holder: &str, nodes: &[String], count: usize) -> anyhow::Result<(Vec<String>, String)> {
    use sightline_core::break_glass;
    let holder = sightline_identity::valid_name(holder).map_err(|e| anyhow::anyhow!("--holder: {e}"))?;
    anyhow::ensure!((1..=100).contains(&count), "--count: 1 to 100 codes per node");
    let mut codes = Vec::new();
    for node in nodes {
        anyhow::ensure!(sightline_audit::valid_node_name(node), "--for-node {node:?}: not a node name");
        codes.extend((0..count).map(|_| break_glass::code_for(node, sightline_identity::random_bytes::<16>())));
    }
    let hashes: Vec<String> = codes.iter().map(|c| format!("  \"{}\",", break_glass::digest(c))).collect();
    let table = format!("[[break_glass.holders]]\nname = \"{holder}\"\ncodes_sha256 = [\n{}\n]", hashes.join("\n"));
    Ok((codes, table))
}
