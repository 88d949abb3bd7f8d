//! `relay audit ...`: offline verification, proofs and exports for auditors. These read the audit
//! directories (a copy will do) and trust nothing in them but what the node's public key signed:
//! `relay audit verify | prove | check-proof | checkpoint | consistency | check-consistency |
//! export`. Verification names the first altered, removed, inserted or reordered record, or the
//! first forged, inconsistent or missing checkpoint; exports merge several nodes' logs by time.
//!
//! The trust anchors are the auditor's own (`TrustedKeys`, from `--key` files the auditor keeps):
//! the `audit.pub` inside a directory travels with the log it would vouch for, so a log re-signed
//! with another key, that key beside it, would verify against it. It is named in the refusal as a
//! hint and never used. Records after the newest checkpoint are signed by nothing yet: `verify`
//! and `export` fail on them unless the auditor accepts such a tail (`accept_tail`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sightline_core::audit::{
    ConsistencyProof, InclusionProof, LogReport, LogVerifier, Record, Tree, VerifyError, leaf_hash, origin_for_node,
    split_records,
};

use super::files::{CHECKPOINT_FILE, LOG_FILE, PUBLIC_KEY_FILE, read_checkpoints};

/// One node's log, read and verified.
pub struct NodeLog {
    pub dir: PathBuf,
    pub verifier_key: String,
    /// Canonical bytes of each record, in order.
    pub lines: Vec<Vec<u8>>,
    pub records: Vec<Record>,
    pub checkpoints: Vec<String>,
    pub tree: Tree,
    pub report: LogReport,
}

/// The verifier keys an auditor trusts: the only anchors any verification here uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<String>);

impl TrustedKeys {
    /// Reads signed-note verifier keys (`name+id+base64`), one per line, from the auditor's files.
    pub fn load(files: &[PathBuf]) -> anyhow::Result<TrustedKeys> {
        if files.is_empty() {
            bail!("no trusted key: pass each node's verifier key with --key FILE (a copy you keep yourself)");
        }
        let mut keys = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the verifier key {}", file.display()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if let Err(e) = sightline_core::recording::verifying_key_from_note(line) {
                    bail!("{}: {line:?} is not a verifier key (name+id+base64): {e}", file.display());
                }
                keys.push(line.to_owned());
            }
        }
        if keys.is_empty() {
            bail!(
                "no verifier key in {}",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        Ok(TrustedKeys(keys))
    }

    /// Trusts exactly these keys.
    pub fn new(keys: impl IntoIterator<Item = String>) -> TrustedKeys {
        TrustedKeys(keys.into_iter().map(|k| k.trim().to_owned()).collect())
    }

    /// The trusted key of node `node`. `travelling` is the key file that came with the data
    /// (a log's `audit.pub`, an export's `relay.pub`): named in the refusal, never used.
    pub fn for_node(&self, node: &str, travelling: &Path) -> anyhow::Result<&str> {
        let name = origin_for_node(node);
        if let Some(key) = self.0.iter().find(|k| k.split('+').next() == Some(name.as_str())) {
            return Ok(key);
        }
        let hint = match std::fs::read_to_string(travelling) {
            Ok(found) => format!(
                "; {} holds {}, which travels with the data it would vouch for and so is not trusted: compare \
                 it with the key the node's operator gave you before passing a copy of it with --key",
                travelling.display(),
                found.trim()
            ),
            Err(_) => String::new(),
        };
        bail!("no trusted key for node {node} (a key named {name}){hint}")
    }

    /// The one trusted key (for commands given a single key file).
    fn only(&self) -> anyhow::Result<&str> {
        match self.0.as_slice() {
            [key] => Ok(key),
            _ => bail!("give exactly one verifier key"),
        }
    }
}

/// The node whose log `dir` holds: its first checkpoint's origin, or its first record's node.
fn node_of(dir: &Path, checkpoints: &[String], log: &[u8]) -> anyhow::Result<String> {
    if let Some(origin) = checkpoints.first().and_then(|n| n.lines().next()) {
        return origin
            .strip_prefix("sightline.audit/")
            .map(str::to_owned)
            .with_context(|| format!("{}: checkpoint origin {origin:?} is not a Sightline node's", dir.display()));
    }
    let first = log.split(|&b| b == b'\n').next().filter(|l| !l.is_empty());
    match first.map(Record::from_canonical) {
        Some(Ok(record)) => Ok(record.node),
        Some(Err(e)) => Err(anyhow::anyhow!("{}: record 0: {e}", dir.display())),
        None => bail!("{}: the log is empty", dir.display()),
    }
}

impl NodeLog {
    /// Reads and verifies a node's audit directory against the auditor's trusted key for that
    /// node; the error names the first bad record or checkpoint.
    pub fn load(dir: &Path, trusted: &TrustedKeys) -> anyhow::Result<NodeLog> {
        let log_path = dir.join(LOG_FILE);
        let bytes = std::fs::read(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
        let checkpoints = read_checkpoints(&dir.join(CHECKPOINT_FILE)).map_err(anyhow::Error::msg)?;
        let node = node_of(dir, &checkpoints, &bytes)?;
        let verifier_key =
            trusted.for_node(&node, &dir.join(PUBLIC_KEY_FILE)).with_context(|| dir.display().to_string())?.to_owned();
        let fail = |e: VerifyError| anyhow::anyhow!("{}: {e}", dir.display());
        let mut verifier = LogVerifier::new(&checkpoints, &verifier_key).map_err(fail)?;
        let lines = split_records(&bytes).map_err(fail)?;
        let records = lines.iter().map(|line| verifier.push(line)).collect::<Result<Vec<_>, _>>().map_err(fail)?;
        let lines = lines.into_iter().map(<[u8]>::to_vec).collect();
        let (report, tree) = verifier.finish().map_err(fail)?;
        Ok(NodeLog { dir: dir.to_owned(), verifier_key, lines, records, checkpoints, tree, report })
    }

    /// The newest checkpoint note, if any.
    pub fn newest_checkpoint(&self) -> Option<&String> {
        self.checkpoints.last()
    }

    /// Fails if records follow the newest checkpoint, unless `accept_tail`: they are chained to
    /// the signed part but signed by nothing themselves, so anyone who can write the file can
    /// append them.
    pub fn require_anchored(&self, accept_tail: bool) -> anyhow::Result<()> {
        let r = &self.report;
        if r.uncovered == 0 || accept_tail {
            return Ok(());
        }
        let covered = r.last_checkpoint.as_ref().map_or(0, |c| c.size);
        bail!(
            "{}: records {covered} to {} follow the newest checkpoint and are signed by nothing yet; a running \
             relay signs the next checkpoint within --audit-checkpoint-ms, and one at shutdown. Verify again \
             then, or pass --accept-tail to take them as unverified",
            self.dir.display(),
            r.records - 1
        )
    }
}

/// `relay audit verify`: every directory verified against the trusted keys; a line per node.
/// Records after a node's newest checkpoint fail it unless `accept_tail`.
pub fn verify(dirs: &[PathBuf], trusted: &TrustedKeys, accept_tail: bool) -> anyhow::Result<()> {
    let mut logs = Vec::new();
    for dir in dirs {
        let log = NodeLog::load(dir, trusted)?;
        log.require_anchored(accept_tail)?;
        let r = &log.report;
        let last = r.last_checkpoint.as_ref().map_or("none".to_owned(), |c| format!("size {} root {}", c.size, c.root));
        let unverified = if r.uncovered > 0 { " (accepted unverified)" } else { "" };
        println!(
            "OK {}: node {}, {} records, {} checkpoints (newest: {last}), {} records after it{unverified}, key {}",
            dir.display(),
            r.node.as_deref().unwrap_or("-"),
            r.records,
            r.checkpoints,
            r.uncovered,
            log.verifier_key
        );
        logs.push(log);
    }
    let witnessed = check_witnessed(&logs, trusted)?;
    if witnessed > 0 {
        println!("OK: {witnessed} checkpoints one node witnessed of another match that node's log");
    }
    Ok(())
}

/// Every checkpoint one of `logs` witnessed of another node whose log is among them
/// (`audit.checkpoint_witnessed`, R43) must open with that node's trusted key and match its log:
/// at least as many records, the same root at that size. Returns how many were checked.
pub fn check_witnessed(logs: &[NodeLog], trusted: &TrustedKeys) -> anyhow::Result<usize> {
    let mut checked = 0;
    for witness in logs {
        for record in witness.records.iter().filter(|r| r.kind == "audit.checkpoint_witnessed") {
            let Some(node) = record.subject.as_deref().and_then(|s| s.strip_prefix("node:")) else { continue };
            let Some(log) = logs.iter().find(|l| l.report.node.as_deref() == Some(node)) else { continue };
            let at = format!("{} record {}", witness.dir.display(), record.seq);
            let key = trusted.for_node(node, &log.dir.join(PUBLIC_KEY_FILE))?;
            let seen = sightline_core::audit::Checkpoint::open(&record.detail, key)
                .map_err(|e| anyhow::anyhow!("{at}: the checkpoint it witnessed of node {node} does not open: {e}"))?;
            let held = log.tree.size();
            if held < seen.size {
                bail!(
                    "{}: node {node}'s log holds {held} records, fewer than the checkpoint of {} that {at} witnessed: records were cut off",
                    log.dir.display(),
                    seen.size
                );
            }
            let root = log.tree.root(seen.size)?;
            if root != seen.root {
                bail!(
                    "{}: node {node}'s first {} records have root {root}, but {at} witnessed root {}: records were rewritten",
                    log.dir.display(),
                    seen.size,
                    seen.root
                );
            }
            checked += 1;
        }
    }
    Ok(checked)
}

/// What `relay audit recover` rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub records: u64,
    /// Size of the checkpoint the node published last (as every node and the auditor saw it).
    pub published: u64,
    /// Records after it, chained to it and signed by nothing.
    pub tail: u64,
}

/// `relay audit recover`: rebuilds a lost node's audit directory in `out` from the second copy
/// of its records (`records`, with their sequence numbers) and the checkpoint it published last,
/// and verifies it against the auditor's key: the copy must hold every record from 0 on (a
/// record it lacks is named), chained and hashed to exactly the published checkpoint.
pub fn recover(
    records: &[(u64, Vec<u8>)],
    published: Option<&str>,
    trusted: &TrustedKeys,
    out: &Path,
) -> anyhow::Result<Recovered> {
    if std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} is not empty: give a new directory to rebuild the log in", out.display());
    }
    // What the copy lacks, as ranges (a corrupt id must not make a list of billions).
    let mut missing: Vec<std::ops::Range<u64>> = Vec::new();
    let mut expected = 0u64;
    for (seq, _) in records {
        if *seq < expected {
            bail!("the copy holds record {seq} twice or out of order");
        }
        if *seq > expected {
            missing.push(expected..*seq);
        }
        expected = seq.checked_add(1).context("a record number at the end of the range")?;
    }
    let published_size = match published {
        Some(note) => {
            sightline_core::audit::Checkpoint::open(note, trusted.only()?)
                .map_err(|e| anyhow::anyhow!("the published checkpoint does not open with the trusted key: {e}"))?
                .size
        }
        None => 0,
    };
    if published_size > expected {
        missing.push(expected..published_size);
    }
    if !missing.is_empty() {
        let count: u64 = missing.iter().map(|r| r.end - r.start).sum();
        let shown: Vec<String> = missing
            .iter()
            .take(20)
            .map(|r| if r.end - r.start == 1 { r.start.to_string() } else { format!("{} to {}", r.start, r.end - 1) })
            .collect();
        let more = if missing.len() > 20 { format!(" and {} more ranges", missing.len() - 20) } else { String::new() };
        bail!(
            "the second copy lacks {count} record(s) the node wrote: {}{more}; nothing was rebuilt",
            shown.join(", ")
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut log = Vec::new();
    for (_, record) in records {
        log.extend_from_slice(record);
        log.push(b'\n');
    }
    std::fs::write(out.join(LOG_FILE), log).with_context(|| format!("cannot write {}", out.display()))?;
    let checkpoints = published.map(|note| serde_json::to_string(note).unwrap_or_default() + "\n").unwrap_or_default();
    std::fs::write(out.join(CHECKPOINT_FILE), checkpoints)?;
    std::fs::write(out.join(PUBLIC_KEY_FILE), format!("{}\n", trusted.only()?))?;
    let log = NodeLog::load(out, trusted)?;
    let covered = log.report.last_checkpoint.as_ref().map_or(0, |c| c.size);
    Ok(Recovered { records: log.report.records, published: covered, tail: log.report.uncovered })
}

/// `relay audit prove --seq N`: the C2SP tlog-proof of record N against the newest checkpoint.
pub fn prove(dir: &Path, trusted: &TrustedKeys, seq: u64, record_out: Option<&Path>) -> anyhow::Result<String> {
    let log = NodeLog::load(dir, trusted)?;
    let note = log.newest_checkpoint().context("the log has no checkpoint yet")?;
    let checkpoint = sightline_core::audit::Checkpoint::open(note, &log.verifier_key)?;
    if seq >= checkpoint.size {
        bail!(
            "record {seq} is not covered by the newest checkpoint (size {}) yet; try again in a moment",
            checkpoint.size
        );
    }
    let proof = InclusionProof {
        index: seq,
        hashes: log.tree.inclusion_proof(seq, checkpoint.size)?,
        checkpoint: note.clone(),
    };
    let line = &log.lines[seq as usize];
    // Check our own work before handing it out.
    proof.verify(line, &log.verifier_key)?;
    if let Some(path) = record_out {
        std::fs::write(path, line).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(proof.to_text())
}

/// `relay audit check-proof`: a record, its proof, the public key; nothing else.
pub fn check_proof(record: &Path, proof: &Path, key: &Path) -> anyhow::Result<String> {
    let key = TrustedKeys::load(&[key.to_owned()])?;
    let key = key.only()?;
    let record = std::fs::read(record).with_context(|| format!("cannot read {}", record.display()))?;
    let record = record.strip_suffix(b"\n").unwrap_or(&record);
    let text = std::fs::read_to_string(proof).with_context(|| format!("cannot read {}", proof.display()))?;
    let cp = InclusionProof::parse(&text)?.verify(record, key)?;
    Ok(format!(
        "OK: record {} is in the log of {} at size {} (root {})",
        Record::from_canonical(record)?.seq,
        cp.origin,
        cp.size,
        cp.root
    ))
}

/// `relay audit consistency OLD`: proof that the current log extends an old checkpoint.
pub fn consistency(dir: &Path, trusted: &TrustedKeys, old: &Path) -> anyhow::Result<String> {
    let log = NodeLog::load(dir, trusted)?;
    let old_note = std::fs::read_to_string(old).with_context(|| format!("cannot read {}", old.display()))?;
    let old_cp = sightline_core::audit::Checkpoint::open(&old_note, &log.verifier_key)
        .with_context(|| format!("{} is not a checkpoint of this node", old.display()))?;
    let new_note = log.newest_checkpoint().context("the log has no checkpoint")?.clone();
    let new_cp = sightline_core::audit::Checkpoint::open(&new_note, &log.verifier_key)?;
    if old_cp.size > new_cp.size {
        bail!(
            "the old checkpoint (size {}) is larger than the log's newest (size {}): the log was cut back",
            old_cp.size,
            new_cp.size
        );
    }
    if old_cp.size > 0 && log.tree.root(old_cp.size)? != old_cp.root {
        bail!("the log's first {} records do not match the old checkpoint: they were rewritten", old_cp.size);
    }
    let hashes = if old_cp.size == 0 { Vec::new() } else { log.tree.consistency_proof(old_cp.size, new_cp.size)? };
    let proof = ConsistencyProof::new(old_note, new_note, &hashes);
    proof.verify(&log.verifier_key)?;
    Ok(serde_json::to_string_pretty(&proof)?)
}

/// `relay audit check-consistency`: a consistency proof and the public key.
pub fn check_consistency(proof: &Path, key: &Path) -> anyhow::Result<String> {
    let key = TrustedKeys::load(&[key.to_owned()])?;
    let key = key.only()?;
    let text = std::fs::read_to_string(proof).with_context(|| format!("cannot read {}", proof.display()))?;
    let proof: ConsistencyProof = sightline_proto::strict::from_str(&text).context("not a consistency proof")?;
    let (old, new) = proof.verify(key)?;
    Ok(format!("OK: the log of {} at size {} extends its checkpoint of size {}", new.origin, new.size, old.size))
}

/// Which records an export includes.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub session: Option<String>,
    pub ticket: Option<String>,
    pub operator: Option<String>,
    pub device: Option<String>,
    pub kind: Option<String>,
}

/// What a search asked for, as its `audit.viewed` record says it: `kind session.start, ticket
/// INC-1, from 2026-12-01T00:00:00Z`, or `everything`.
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time =
            |ms: u64| jiff::Timestamp::from_millisecond(ms as i64).map_or_else(|_| ms.to_string(), |t| t.to_string());
        let mut parts = Vec::new();
        for (name, value) in [
            ("kind", &self.kind),
            ("session", &self.session),
            ("ticket", &self.ticket),
            ("operator", &self.operator),
            ("device", &self.device),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name} {v}"));
            }
        }
        parts.extend(self.from_ms.map(|ms| format!("from {}", time(ms))));
        parts.extend(self.to_ms.map(|ms| format!("to {}", time(ms))));
        if parts.is_empty() { f.write_str("everything") } else { f.write_str(&parts.join(", ")) }
    }
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        let s = r.session.as_ref();
        self.from_ms.is_none_or(|t| r.ts_ms >= t)
            && self.to_ms.is_none_or(|t| r.ts_ms < t)
            && self.kind.as_ref().is_none_or(|k| r.kind == *k || r.kind.starts_with(&format!("{k}.")))
            && self.session.as_ref().is_none_or(|v| s.is_some_and(|s| s.session_id == *v))
            && self.ticket.as_ref().is_none_or(|v| {
                s.is_some_and(|s| s.ticket == *v)
                    || r.subject.as_deref().is_some_and(|x| x.contains(&format!("ticket:{v}")))
            })
            && self
                .operator
                .as_ref()
                .is_none_or(|v| s.is_some_and(|s| s.operator == *v) || (s.is_none() && r.actor == *v))
            && self.device.as_ref().is_none_or(|v| {
                s.is_some_and(|s| s.device_id == *v || s.device == *v)
                    || r.subject.as_deref().is_some_and(|x| x.contains(&format!("device:{v}")))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    Jsonl,
    Cef,
}

/// How an export reads the logs: the auditor's trusted keys, and whether records after a node's
/// newest checkpoint are taken (unverified) instead of failing the export.
#[derive(Debug, Clone)]
pub struct Anchors {
    pub trusted: TrustedKeys,
    pub accept_tail: bool,
}

/// `relay audit export`: the records of every node that match, merged by time (then node and
/// sequence number), as canonical JSON lines or CEF. Each log is verified first.
pub fn export(
    dirs: &[PathBuf],
    anchors: &Anchors,
    filter: &Filter,
    format: Format,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    let mut all: Vec<(Record, Vec<u8>)> = Vec::new();
    for dir in dirs {
        let log = NodeLog::load(dir, &anchors.trusted)?;
        log.require_anchored(anchors.accept_tail)?;
        for (record, line) in log.records.into_iter().zip(log.lines) {
            if filter.matches(&record) {
                all.push((record, line));
            }
        }
    }
    all.sort_by(|(a, _), (b, _)| a.ts_ms.cmp(&b.ts_ms).then(a.node.cmp(&b.node)).then(a.seq.cmp(&b.seq)));
    for (record, line) in &all {
        match format {
            Format::Jsonl => {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            }
            Format::Cef => writeln!(out, "{}", super::cef::format(record, &leaf_hash(line).to_string()))?,
        }
    }
    Ok(all.len())
}

/// Parses an RFC 3339 time (or Unix milliseconds) for export filters.
pub fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let t: jiff::Timestamp =
        text.parse().with_context(|| format!("{text:?} is neither RFC 3339 nor Unix milliseconds"))?;
    Ok(t.as_millisecond().max(0) as u64)
}
