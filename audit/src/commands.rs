//! `relay audit ...`: offline verification, proofs and exports for auditors. These read the audit
//! directories (a copy will do) and trust nothing in them but what the node's public key signed:
//! `relay audit verify | prove | check-proof | checkpoint | consistency | check-consistency |
//! export`. Verification names the first altered, removed, inserted or reordered record, or the
//! first forged, inconsistent or missing checkpoint; exports merge several nodes' logs by time.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sightline_core::audit::{
    ConsistencyProof, InclusionProof, LogReport, LogVerifier, Record, Tree, VerifyError, leaf_hash, split_records,
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

/// The verifier key to trust: given by the auditor (`--key`), else the directory's `audit.pub`.
pub fn verifier_key(dir: &Path, key: Option<&Path>) -> anyhow::Result<String> {
    let path = key.map_or_else(|| dir.join(PUBLIC_KEY_FILE), Path::to_path_buf);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the verifier key {}", path.display()))?
        .trim()
        .to_owned())
}

impl NodeLog {
    /// Reads and verifies a node's audit directory; the error names the first bad record or
    /// checkpoint.
    pub fn load(dir: &Path, key: Option<&Path>) -> anyhow::Result<NodeLog> {
        let verifier_key = verifier_key(dir, key)?;
        let log_path = dir.join(LOG_FILE);
        let bytes = std::fs::read(&log_path).with_context(|| format!("cannot read {}", log_path.display()))?;
        let checkpoints = read_checkpoints(&dir.join(CHECKPOINT_FILE)).map_err(anyhow::Error::msg)?;
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
}

/// `relay audit verify`: every directory verified; a line per node.
pub fn verify(dirs: &[PathBuf], key: Option<&Path>) -> anyhow::Result<()> {
    for dir in dirs {
        let log = NodeLog::load(dir, key)?;
        let r = &log.report;
        let last = r.last_checkpoint.as_ref().map_or("none".to_owned(), |c| format!("size {} root {}", c.size, c.root));
        println!(
            "OK {}: node {}, {} records, {} checkpoints (newest: {last}), {} records after it, key {}",
            dir.display(),
            r.node.as_deref().unwrap_or("-"),
            r.records,
            r.checkpoints,
            r.uncovered,
            log.verifier_key
        );
    }
    Ok(())
}

/// `relay audit prove --seq N`: the C2SP tlog-proof of record N against the newest checkpoint.
pub fn prove(dir: &Path, key: Option<&Path>, seq: u64, record_out: Option<&Path>) -> anyhow::Result<String> {
    let log = NodeLog::load(dir, key)?;
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
    let record = std::fs::read(record).with_context(|| format!("cannot read {}", record.display()))?;
    let record = record.strip_suffix(b"\n").unwrap_or(&record);
    let text = std::fs::read_to_string(proof).with_context(|| format!("cannot read {}", proof.display()))?;
    let key = verifier_key(Path::new("."), Some(key))?;
    let cp = InclusionProof::parse(&text)?.verify(record, &key)?;
    Ok(format!(
        "OK: record {} is in the log of {} at size {} (root {})",
        Record::from_canonical(record)?.seq,
        cp.origin,
        cp.size,
        cp.root
    ))
}

/// `relay audit consistency OLD`: proof that the current log extends an old checkpoint.
pub fn consistency(dir: &Path, key: Option<&Path>, old: &Path) -> anyhow::Result<String> {
    let log = NodeLog::load(dir, key)?;
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
    let text = std::fs::read_to_string(proof).with_context(|| format!("cannot read {}", proof.display()))?;
    let proof: ConsistencyProof = sightline_proto::strict::from_str(&text).context("not a consistency proof")?;
    let key = verifier_key(Path::new("."), Some(key))?;
    let (old, new) = proof.verify(&key)?;
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

/// `relay audit export`: the records of every node that match, merged by time (then node and
/// sequence number), as canonical JSON lines or CEF. Each log is verified first.
pub fn export(
    dirs: &[PathBuf],
    key: Option<&Path>,
    filter: &Filter,
    format: Format,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    let mut all: Vec<(Record, Vec<u8>)> = Vec::new();
    for dir in dirs {
        let log = NodeLog::load(dir, key)?;
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
