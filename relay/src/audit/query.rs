//! Reading the running log for the dashboard: the newest records that match a filter, each with
//! its inclusion proof against the newest signed checkpoint, so the browser can verify them with
//! the node's public key (sightline-core on wasm32) instead of trusting this server.

use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use sightline_core::audit::{Checkpoint, Record};

use super::commands::Filter;
use super::files::{CHECKPOINT_FILE, Index, LOG_FILE, read_checkpoints};

/// Records a search looks at before it gives up (a SIEM or `relay audit export` is the tool for
/// deep searches over very large logs).
const SCAN_LIMIT: u64 = 1_000_000;

/// One record as served: its canonical line and, if a checkpoint covers it, its audit path.
#[derive(Debug, Clone, Serialize)]
pub struct ProvedRecord {
    pub line: String,
    /// Base64 hashes of the inclusion proof against `AuditPage::checkpoint`.
    pub proof: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditPage {
    pub node: String,
    /// The signed-note verifier key the checkpoint must verify with.
    pub verifier_key: String,
    /// The newest signed checkpoint (note text), if any.
    pub checkpoint: Option<String>,
    /// Newest first.
    pub records: Vec<ProvedRecord>,
    /// Records looked at, and whether the search stopped at the scan limit.
    pub scanned: u64,
    pub truncated: bool,
}

pub fn search(
    dir: &std::path::Path,
    node: &str,
    verifier_key: &str,
    index: &Arc<RwLock<Index>>,
    filter: &Filter,
    limit: usize,
) -> anyhow::Result<AuditPage> {
    let notes = read_checkpoints(&dir.join(CHECKPOINT_FILE)).map_err(anyhow::Error::msg)?;
    let checkpoint = notes.last().cloned();
    let covered = match &checkpoint {
        Some(note) => Checkpoint::open(note, verifier_key)?.size,
        None => 0,
    };
    let (size, offsets_end) = {
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        (index.tree.size(), index.offsets.len())
    };
    let mut file = std::fs::File::open(dir.join(LOG_FILE))?;
    let mut records = Vec::new();
    let mut scanned = 0;
    let mut seq = size.min(offsets_end as u64);
    while seq > 0 && records.len() < limit && scanned < SCAN_LIMIT {
        seq -= 1;
        scanned += 1;
        let (start, end) = {
            let index = index.read().unwrap_or_else(|e| e.into_inner());
            let start = index.offsets[seq as usize];
            let end = index.offsets.get(seq as usize + 1).copied();
            (start, end)
        };
        let mut line = Vec::new();
        file.seek(SeekFrom::Start(start))?;
        match end {
            Some(end) => {
                line.resize((end - start) as usize, 0);
                file.read_exact(&mut line)?;
            }
            None => {
                file.read_to_end(&mut line)?;
            }
        }
        while line.last() == Some(&b'\n') {
            line.pop();
        }
        let record = Record::from_canonical(&line)?;
        if !filter.matches(&record) {
            continue;
        }
        let proof = if seq < covered {
            let index = index.read().unwrap_or_else(|e| e.into_inner());
            Some(index.tree.inclusion_proof(seq, covered)?.iter().map(|h| h.to_string()).collect())
        } else {
            None
        };
        records.push(ProvedRecord { line: String::from_utf8(line)?, proof });
    }
    Ok(AuditPage {
        node: node.to_owned(),
        verifier_key: verifier_key.to_owned(),
        checkpoint,
        records,
        scanned,
        truncated: scanned >= SCAN_LIMIT && seq > 0,
    })
}
