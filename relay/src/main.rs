//! `relay`: the Sightline relay binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sightline_audit::events::EventSink;
use sightline_audit::{CliSink, commands};
use sightline_core::command_approval::NodeCommand;
use sightline_relay::command_gate::{self, AuthorityArgs};
use sightline_relay::config::Config;
use sightline_relay::server;

#[derive(Debug, Parser)]
#[command(name = "relay", version, about = "Sightline relay", args_override_self = true)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Agent enrolment tokens (for operators of the system; admins can also use the dashboard).
    AgentToken {
        #[command(subcommand)]
        action: AgentTokenAction,
    },
    /// The audit log: verify it, prove records and consistency, export it (for auditors; works
    /// on copies of the audit directories and trusts only the node's public key).
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Recordings: list, verify, export (verification trusts only the node's public key).
    Recording {
        #[command(subcommand)]
        action: RecordingAction,
    },
    /// Break-glass: lift a login lock when no admin can sign in (audited).
    Unlock {
        /// User name whose account lock to lift.
        #[arg(long, conflicts_with = "address")]
        account: Option<String>,
        /// Source address whose lock to lift.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
    /// The node's break-glass credential, for commands the policy puts under an admin's approval
    /// when no admin can give one.
    BreakGlass {
        #[command(subcommand)]
        action: BreakGlassAction,
    },
}

#[derive(Debug, Subcommand)]
enum BreakGlassAction {
    /// Print a new credential (once: keep it offline, e.g. sealed in a safe) and the line that
    /// puts its SHA-256 in the policy's [command_line] table.
    Create,
    /// Print one-time sign-in codes for a named person, for when the store or the identity
    /// provider is down (R43; docs/break-glass.md): each code works once, on the node it names,
    /// for view and chat with a user's consent. Seal them; put the printed table in the policy.
    Codes {
        /// Who holds them (the audit log names them `break-glass:<holder>`).
        #[arg(long)]
        holder: String,
        /// The nodes they are for (each code names one); default: this node.
        #[arg(long = "for-node")]
        nodes: Vec<String>,
        /// How many codes per node.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Verify whole logs against your trusted keys; names the first altered record or bad
    /// checkpoint. Records after the newest checkpoint fail unless --accept-tail.
    Verify {
        /// Audit directories (one per node; default: this node's).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// A file of verifier keys you trust (one per node, one per line; repeatable). The
        /// audit.pub inside a directory is never used: it travels with the log.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Accept records after the newest checkpoint as unverified instead of failing.
        #[arg(long)]
        accept_tail: bool,
        /// Also check every consent receipt in the logs against the key its device enrolled
        /// with (the device.enrolled record, in any of the logs given).
        #[arg(long)]
        receipts: bool,
    },
    /// Rebuild a lost node's audit log from its second copy in Redis (R43) into a new
    /// directory, and verify it against the checkpoint that node published last and your
    /// trusted key for it; names every record the copy lacks.
    Recover {
        /// The lost node's name.
        #[arg(long)]
        node: String,
        /// Where to write the rebuilt audit directory (log.jsonl, checkpoints.jsonl).
        #[arg(long)]
        out: PathBuf,
        /// A file with your trusted verifier key for that node.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Vouch with this node's key for another node key (its replacement, or another node of the
    /// service): prints an endorsement line for that node's --agent-key-endorsements, so agents
    /// that pinned this node's key accept it. Recorded (node.key_endorsed), or not made.
    Endorse {
        /// The endorsed node's verifier key (its audit.pub), or a file holding it.
        #[arg(long)]
        key: String,
    },
    /// Print the C2SP tlog-proof that record SEQ is in the log (against the newest checkpoint).
    Prove {
        #[arg(long)]
        seq: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A file of verifier keys you trust.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Also write the record's canonical bytes here.
        #[arg(long)]
        record_out: Option<PathBuf>,
    },
    /// Check an inclusion proof with only the record, the proof and the public key.
    CheckProof {
        #[arg(long)]
        record: PathBuf,
        #[arg(long)]
        proof: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Print the newest signed checkpoint, verified (keep it to check the log later).
    Checkpoint {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A file of verifier keys you trust.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Prove that the log now extends the checkpoint in OLD_CHECKPOINT.
    Consistency {
        old_checkpoint: PathBuf,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A file of verifier keys you trust.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Check a consistency proof with only the proof and the public key.
    CheckConsistency {
        #[arg(long)]
        proof: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Export records (verified first against your trusted keys), merged by time across nodes.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: commands::Format,
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
        /// A file of verifier keys you trust (one per node, one per line; repeatable).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Export records after a node's newest checkpoint too, unverified, instead of failing.
        #[arg(long)]
        accept_tail: bool,
        /// From this time (RFC 3339 or Unix ms), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Until this time (RFC 3339 or Unix ms), exclusive.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        operator: Option<String>,
        /// Device id or name.
        #[arg(long)]
        device: Option<String>,
        /// Event kind, or a prefix such as `session`.
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RecordingAction {
    /// List this node's recordings (from their manifests; `verify` checks them).
    List,
    /// Verify recording ID: the manifest's signatures and chain, every chunk's hash, every frame
    /// against the endpoint's seals, and that the files are recording ID. With --audit-dir, also
    /// every chunk's hash, the session's facts and the device key against the audit logs. Names
    /// what fails; exit status 1 if anything does.
    Verify {
        /// Recording id (the session id): in this node's recordings directory, or the export in
        /// --dir.
        id: String,
        /// An exported recording instead (plaintext chunks, video and timeline are all checked).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A file of verifier keys you trust (the recording's node's key; repeatable). An
        /// export's relay.pub is never used: it travels with the export.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Audit directories to check the recording against (the node that recorded it, and the
        /// one that enrolled the device; repeatable), each verified with the trusted keys.
        #[arg(long = "audit-dir")]
        audit_dirs: Vec<PathBuf>,
        /// Forensic work: list sealed frames the recording lacks that nothing explains, instead
        /// of failing on them.
        #[arg(long)]
        list_gaps: bool,
        /// Your age identity (AGE-SECRET-KEY-1...), to open a stored recording: recordings are
        /// encrypted to the auditors' keys, and the relay has none.
        #[arg(long, required_unless_present = "dir")]
        identity: Option<PathBuf>,
        /// For a recording that continues one cut by a lost node (R43): that recording's
        /// directory (`<recordings>/<id>` on its node's disk), verified too (its node's key among
        /// --key) and checked to be the one this recording names, up to the chunk it names.
        #[arg(long, requires = "identity")]
        previous: Option<PathBuf>,
    },
    /// Decrypt and export a recording for an auditor (audited): plaintext chunks, manifest,
    /// recording.webm, timeline.jsonl, relay.pub and the verification report.
    Export {
        id: String,
        #[arg(long)]
        out: PathBuf,
        /// A file of verifier keys you trust (the node's key): the recording is verified with it
        /// before it is exported, and it is the relay.pub written beside the export.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Your age identity (AGE-SECRET-KEY-1...), which opens the recording.
        #[arg(long)]
        identity: PathBuf,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AgentTokenAction {
    /// Print a one-time token that enrols one agent into SEGMENT (valid 24 h).
    Create {
        #[arg(long)]
        segment: String,
        #[command(flatten)]
        authority: AuthorityArgs,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sightline_core::config_file::expand(std::env::args().collect(), None, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .map_err(anyhow::Error::msg)?;
    let cli = Cli::parse_from(args);
    let config = cli.config;
    sightline_relay::logging::init(config.log_format);
    match cli.command {
        Some(Command::AgentToken { action: AgentTokenAction::Create { segment, authority } }) => {
            let store = server::open_store(&config).await.context(
                "cannot open the relay's state (with the embedded store the running relay holds it: stop it, or create the token from the admin dashboard)",
            )?;
            let audit = Arc::new(CliSink::open(&config.audit_settings()).context("cannot open the audit log")?);
            command_gate::authorise(&config, &audit, NodeCommand::AgentTokenCreate, &segment, &authority).await?;
            let identity = server::identity(&config, store, audit.clone(), server::local_accounts(&config)?).await?;
            let token = identity.create_agent_token(&sightline_audit::cli_actor(), &segment, None).await;
            audit.close();
            println!("{}", token?);
            Ok(())
        }
        Some(Command::Unlock { account, address, authority }) => {
            let store = server::open_store(&config)
                .await
                .context("cannot open the relay's state (with the embedded store, stop the relay first)")?;
            let audit = Arc::new(CliSink::open(&config.audit_settings()).context("cannot open the audit log")?);
            let target = match (&account, address) {
                (Some(name), _) => format!("account:{name}"),
                (None, Some(ip)) => format!("address:{ip}"),
                (None, None) => String::new(),
            };
            command_gate::authorise(&config, &audit, NodeCommand::Unlock, &target, &authority).await?;
            let identity = server::identity(&config, store, audit.clone(), server::local_accounts(&config)?).await?;
            let unlocked = identity.unlock_from_cli(&sightline_audit::cli_actor(), account.as_deref(), address).await;
            audit.close();
            unlocked?;
            println!("unlocked");
            Ok(())
        }
        Some(Command::Audit { action }) => audit(&config, action).await,
        Some(Command::BreakGlass { action: BreakGlassAction::Create }) => {
            let (secret, line) = command_gate::new_break_glass();
            println!("{secret}");
            eprintln!(
                "The line above is the credential: keep it offline, shown to nobody who runs this node. Put this in the \
                 policy's [command_line] table:\n{line}"
            );
            Ok(())
        }
        Some(Command::BreakGlass { action: BreakGlassAction::Codes { holder, nodes, count } }) => {
            let nodes = if nodes.is_empty() { vec![config.audit_settings().node] } else { nodes };
            let (codes, table) = command_gate::new_break_glass_codes(&holder, &nodes, count)?;
            for code in codes {
                println!("{code}");
            }
            eprintln!(
                "The lines above are the codes, each good once on the node it names: print them, seal them, keep them                  offline. Add this to every node's policy:\n{table}"
            );
            Ok(())
        }
        Some(Command::Recording { action }) => recording(&config, action).await,
        None => {
            config.validate().context("invalid configuration")?;
            let listener = sightline_relay::connections::bind(config.listen)
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "relay listening; open {}", config.public_url());
            server::run(listener, config, shutdown_signal()).await
        }
    }
}

/// `relay audit endorse`: this node's key vouches for `key`, on the record.
async fn endorse(config: &Config, key: &str) -> anyhow::Result<()> {
    use sightline_audit::events::{Event, EventKind, Outcome};
    let key = match std::fs::read_to_string(key) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => key.trim().to_owned(),
    };
    let settings = config.audit_settings();
    // Never create a key to endorse with: only a node's existing key means anything to agents.
    if !settings.dir.join("audit.key").exists() {
        anyhow::bail!("{} holds no node key: run this on the node whose key the agents pinned", settings.dir.display());
    }
    let own = sightline_audit::evidence_key(&settings).context("cannot load this node's key")?;
    let endorsement = sightline_core::relay_proof::endorse(&own, &key)?;
    let audit = CliSink::open(&settings).context("cannot open the audit log")?;
    audit.emit(Event {
        ts_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
        kind: EventKind::NodeKeyEndorsed,
        outcome: Outcome::Success,
        actor: sightline_audit::cli_actor(),
        subject: Some(format!("node-key:{key}")),
        source: None,
        detail: format!("{} vouches for {key}", own.verifier_key()),
        session: None,
    });
    let committed = audit
        .committed()
        .await
        .map_err(|e| anyhow::anyhow!("the endorsement could not be audited, so it was not made: {e}"));
    audit.close();
    committed?;
    println!("{}", serde_json::to_string(&endorsement)?);
    Ok(())
}

async fn audit(config: &Config, action: AuditAction) -> anyhow::Result<()> {
    let own = || config.audit_settings().dir;
    let dirs = |dirs: Vec<PathBuf>| if dirs.is_empty() { vec![own()] } else { dirs };
    let trusted = |keys: &[PathBuf]| commands::TrustedKeys::load(keys);
    match action {
        AuditAction::Verify { dirs: d, keys, accept_tail, receipts } => {
            let (dirs, trusted) = (dirs(d), trusted(&keys)?);
            commands::verify(&dirs, &trusted, accept_tail)?;
            if receipts {
                let logs =
                    dirs.iter().map(|d| commands::NodeLog::load(d, &trusted)).collect::<anyhow::Result<Vec<_>>>()?;
                let report = sightline_audit::receipts::check_receipts(&logs)?;
                println!(
                    "OK receipts: {} signed receipts of {} devices, each by the device's key on record",
                    report.verified,
                    report.devices.len()
                );
            }
            Ok(())
        }
        AuditAction::Prove { seq, dir, keys, record_out } => {
            let proof = commands::prove(&dir.unwrap_or_else(own), &trusted(&keys)?, seq, record_out.as_deref())?;
            print!("{proof}");
            Ok(())
        }
        AuditAction::CheckProof { record, proof, key } => {
            println!("{}", commands::check_proof(&record, &proof, &key)?);
            Ok(())
        }
        AuditAction::Checkpoint { dir, keys } => {
            let log = commands::NodeLog::load(&dir.unwrap_or_else(own), &trusted(&keys)?)?;
            print!("{}", log.newest_checkpoint().context("the log has no checkpoint yet")?);
            Ok(())
        }
        AuditAction::Consistency { old_checkpoint, dir, keys } => {
            println!("{}", commands::consistency(&dir.unwrap_or_else(own), &trusted(&keys)?, &old_checkpoint)?);
            Ok(())
        }
        AuditAction::CheckConsistency { proof, key } => {
            println!("{}", commands::check_consistency(&proof, &key)?);
            Ok(())
        }
        AuditAction::Export {
            format,
            dirs: d,
            keys,
            accept_tail,
            from,
            to,
            session,
            ticket,
            operator,
            device,
            kind,
        } => {
            let filter = commands::Filter {
                from_ms: from.as_deref().map(commands::parse_time).transpose()?,
                to_ms: to.as_deref().map(commands::parse_time).transpose()?,
                session,
                ticket,
                operator,
                device,
                kind,
            };
            let anchors = commands::Anchors { trusted: trusted(&keys)?, accept_tail };
            let stdout = std::io::stdout();
            let n = commands::export(&dirs(d), &anchors, &filter, format, &mut stdout.lock())?;
            eprintln!("{n} records exported");
            Ok(())
        }
        AuditAction::Endorse { key } => endorse(config, &key).await,
        AuditAction::Recover { node, out, keys } => recover(config, &node, &out, &trusted(&keys)?).await,
    }
}

/// `relay audit recover`: a lost node's log rebuilt from its second copy in Redis, and proved
/// against the checkpoint it published there last (R43).
async fn recover(
    config: &Config,
    node: &str,
    out: &std::path::Path,
    trusted: &sightline_audit::commands::TrustedKeys,
) -> anyhow::Result<()> {
    let url = config.redis.clone().context("the second copy is in Redis: give --redis")?;
    let store = server::open_store(config).await?;
    let published: Option<String> = store
        .get(sightline_store::Collection::Checkpoints, node)
        .await
        .context("cannot read the checkpoint the node published")?;
    let node_name = node.to_owned();
    let records = tokio::task::spawn_blocking(move || {
        sightline_store::audit_copy::AuditCopy::open(&url, &node_name, 0)?.read_all()
    })
    .await?
    .context("cannot read the second copy")?;
    let recovered = sightline_audit::commands::recover(&records, published.as_deref(), trusted, out)?;
    println!(
        "OK {}: node {node}, {} records rebuilt from the second copy; the checkpoint it published covers {}, {} after it (chained, signed by nothing)",
        out.display(),
        recovered.records,
        recovered.published,
        recovered.tail
    );
    Ok(())
}

async fn recording(config: &Config, action: RecordingAction) -> anyhow::Result<()> {
    use sightline_audit::commands::{NodeLog, TrustedKeys};
    use sightline_recording::{self as recording, commands as rec};
    let settings = config.recording_settings();
    let report = |verified: &sightline_core::recording::Verified| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(&verified.report)?);
        let r = &verified.report;
        eprintln!(
            "verified: {} chunks, {} frames ({} matched to the endpoint's {} seals, {} missing ({} explained by nothing), {} after the last seal){}",
            r.chunks,
            r.frames,
            r.frames_matched,
            r.seals,
            r.gaps,
            r.unexplained_gaps,
            r.unsealed_tail,
            if r.complete {
                ""
            } else {
                "; INCOMPLETE: the recording was not closed (the relay stopped during the session)"
            }
        );
        if let Some(c) = &r.continues {
            eprintln!(
                "CONTINUES recording {} of node {} after {} chunks: nothing recorded for {} ms (Unix ms {} to {}): {}",
                c.previous,
                c.previous_node,
                c.previous_chunks,
                c.gap.end_ms.saturating_sub(c.gap.start_ms),
                c.gap.start_ms,
                c.gap.end_ms,
                c.gap.cause
            );
        }
        for gap in &r.gap_findings {
            eprintln!(
                "missing: {} frames, RTP time {} to {}: {}",
                gap.frames,
                gap.first_ts,
                gap.last_ts,
                gap.explained_by.as_deref().unwrap_or("UNEXPLAINED")
            );
        }
        Ok(())
    };
    match action {
        RecordingAction::List => {
            for listed in rec::list(&settings.dir)? {
                println!("{}", serde_json::to_string(&listed)?);
            }
            Ok(())
        }
        RecordingAction::Verify { id, dir, keys, audit_dirs, list_gaps, identity, previous } => {
            let trusted = TrustedKeys::load(&keys)?;
            let options = sightline_core::recording::Options { list_unexplained_gaps: list_gaps };
            let identity = identity.as_deref().map(recording::load_identity).transpose()?;
            let verified = match (dir, &identity) {
                (Some(dir), _) => rec::verify_exported(&dir, &id, &trusted, options)?,
                (None, Some(identity)) => {
                    rec::verify_stored(&settings.dir.join(&id), &id, identity, &trusted, options)?
                }
                (None, None) => anyhow::bail!("--identity is needed to open it"),
            };
            if let (Some(previous), Some(identity)) = (previous, &identity) {
                let cont = verified.report.continues.as_ref().context("this recording continues no other")?;
                let cut = rec::verify_stored(&previous, &cont.previous, identity, &trusted, options)
                    .context("the recording it continues does not verify")?;
                sightline_core::recording::check_continuation(&cut, &verified)?;
                eprintln!(
                    "continues {} of node {} as named: its first {} chunks are those that node published",
                    cont.previous, cont.previous_node, cont.previous_chunks
                );
            }
            if !audit_dirs.is_empty() {
                let logs = audit_dirs.iter().map(|d| NodeLog::load(d, &trusted)).collect::<anyhow::Result<Vec<_>>>()?;
                let check = rec::against_log(&verified, &logs)?;
                eprintln!(
                    "against the audit log: {} chunks on record{}, the session's facts and the device key as recorded",
                    check.chunks_on_record,
                    check.chunk_not_yet_on_record.map_or(String::new(), |c| format!(
                        " (chunk {c}, the last of a recording cut short, was written before its record)"
                    ))
                );
            }
            report(&verified)
        }
        RecordingAction::Export { id, out, keys, identity, authority } => {
            let trusted = TrustedKeys::load(&keys)?;
            let identity = recording::load_identity(&identity)?;
            let dir = settings.dir.join(&id);
            let verified = rec::verify_stored(&dir, &id, &identity, &trusted, Default::default())?;
            let vkey = trusted.for_node(&verified.report.node, Path::new("audit.pub"))?.to_owned();
            // An export hands the evidence out: it is itself evidence, and is refused if it
            // cannot be recorded (R29), or if the policy gates it and no approval was given.
            let audit = CliSink::open(&config.audit_settings()).context("cannot open the audit log")?;
            command_gate::authorise(config, &audit, NodeCommand::RecordingExport, &id, &authority).await?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            audit.emit(rec::export_event(&id, &verified, &out, &sightline_audit::cli_actor(), now));
            let committed = audit
                .committed()
                .await
                .map_err(|e| anyhow::anyhow!("the export could not be audited, so it was not made: {e}"));
            audit.close();
            committed?;
            rec::export_stored(&dir, &verified, &vkey, &out)?;
            report(&verified)
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
