//! Reading the running log for the dashboard: the newest records that match a filter, each with
//! its inclusion proof against the newest signed checkpoint, so the browser can verify them with
//! the node's public key (sightline-core on wasm32) instead of trusting this server.

use std::io::{Read, Seek, SeekFrom};

use std::sync::{Arc, RwLock};

use serde::Serialize;
use sightline_core::audit::{Record, split_records};

use super::commands::Filter;
use super::files::{Index, LOG_FILE};

/// Records a search looks at before it gives up (a SIEM or `relay audit export` is the tool for
/// deep searches over very large logs).
const SCAN_LIMIT: u64 = 1_000_000;
/// Records read from the file at a time.
const BLOCK: u64 = 512;

/// One record as served: its canonical line and, if a checkpoint covers it, its audit path.
#[derive(Debug, Clone, Serialize)]
pub struct ProvedRecord {
    pub line: String,
    /// Base64 hashes of the inclusion proof against `AuditPage::checkpoint`.
    pub proof: Option<Vec<String>>,
}

/// Which page of the matches, and what to fold.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// At most this many records.
    pub limit: usize,
    /// Only records before this position (the next page of an earlier answer).
    pub before: Option<u64>,
    /// Records of this kind are counted per session instead of listed (`recording.chunk`, which
    /// would drown everything else).
    pub fold: Option<String>,
}

/// Records of the folded kind that matched: how many, per session, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Folded {
    pub kind: String,
    pub session: Option<String>,
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
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
    /// Where the next (older) page starts, if there are older records to look at.
    pub next_before: Option<u64>,
    /// The folded records among those looked at, per session, newest first.
    pub folded: Vec<Folded>,
    /// Every event kind a record can have, for the page's filter.
    pub kinds: Vec<String>,
}

pub fn search(
    dir: &std::path::Path,
    node: &str,
    verifier_key: &str,
    index: &Arc<RwLock<Index>>,
    filter: &Filter,
    page: &PageRequest,
) -> anyhow::Result<AuditPage> {
    let limit = page.limit;
    let read = || index.read().unwrap_or_else(|e| e.into_inner());
    // A snapshot: records the writer adds meanwhile are left for the next search.
    let (size, end, checkpoint) = {
        let index = read();
        (index.tree.size(), index.end, index.checkpoint.clone())
    };
    let covered = checkpoint.as_ref().map_or(0, |(size, _)| *size);
    let mut file = std::fs::File::open(dir.join(LOG_FILE))?;
    let mut records = Vec::new();
    let mut scanned = 0;
    let mut hi = page.before.map_or(size, |b| b.min(size));
    let mut folded: Vec<Folded> = Vec::new();
    let mut next_before = None;
    // Newest first, a block of records per read.
    while hi > 0 && records.len() < limit && scanned < SCAN_LIMIT {
        let lo = hi.saturating_sub(BLOCK);
        let (start, stop) = {
            let index = read();
            (index.offsets[lo as usize], index.offsets.get(hi as usize).copied().unwrap_or(end))
        };
        let mut bytes = vec![0; (stop - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut bytes)?;
        let lines = split_records(&bytes)?;
        for (i, line) in lines.iter().enumerate().rev() {
            let seq = lo + i as u64;
            scanned += 1;
            let record = Record::from_canonical(line)?;
            if !filter.matches(&record) {
                continue;
            }
            if page.fold.as_deref() == Some(record.kind.as_str()) {
                let session = record.session.as_ref().map(|s| s.session_id.clone());
                match folded.iter_mut().find(|f| f.session == session) {
                    Some(f) => {
                        f.count += 1;
                        f.first_seq = seq;
                    }
                    None => folded.push(Folded {
                        kind: record.kind.clone(),
                        session,
                        count: 1,
                        first_seq: seq,
                        last_seq: seq,
                    }),
                }
                continue;
            }
            let proof = if seq < covered {
                Some(read().tree.inclusion_proof(seq, covered)?.iter().map(|h| h.to_string()).collect())
            } else {
                None
            };
            records.push(ProvedRecord { line: String::from_utf8(line.to_vec())?, proof });
            if records.len() >= limit {
                // The next page starts just before the last record listed.
                next_before = (seq > 0).then_some(seq);
                break;
            }
        }
        if next_before.is_some() {
            break;
        }
        hi = lo;
    }
    Ok(AuditPage {
        node: node.to_owned(),
        verifier_key: verifier_key.to_owned(),
        checkpoint: checkpoint.map(|(_, note)| note),
        records,
        scanned,
        truncated: scanned >= SCAN_LIMIT && hi > 0,
        next_before,
        folded,
        kinds: crate::events::EventKind::ALL.iter().map(|k| k.name()).collect(),
    })
}
