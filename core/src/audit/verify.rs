//! Verifying a whole node log offline: every record canonical, numbered without gaps and chained
//! to the one before; every checkpoint signed by the node's key and equal to the tree of the
//! records it covers. The first fault is named by record sequence number or checkpoint.

use tlog_tiles::Hash;

use super::{AuditError, Checkpoint, Record, Tree, leaf_hash, origin_for_node};

/// The first thing wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("record {seq}: {why}")]
    Record { seq: u64, why: String },
    #[error("checkpoint #{number} (tree size {size}): {why}")]
    Checkpoint { number: usize, size: u64, why: String },
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReport {
    pub node: Option<String>,
    pub records: u64,
    pub checkpoints: usize,
    /// The newest verified checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the newest checkpoint (written since; covered by the chain only).
    pub uncovered: u64,
}

/// Checks a node log record by record (so a relay can rebuild its tree while it checks).
#[derive(Debug)]
pub struct LogVerifier {
    checkpoints: Vec<Checkpoint>,
    /// Index into `checkpoints` of the next one to compare.
    next_checkpoint: usize,
    /// Size of the last checkpoint that matched.
    verified_size: u64,
    tree: Tree,
    prev: Option<Hash>,
    node: Option<String>,
}

impl LogVerifier {
    /// Opens every checkpoint (signatures, origins, sizes that never shrink).
    pub fn new(checkpoint_notes: &[String], verifier_key: &str) -> Result<LogVerifier, VerifyError> {
        let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(checkpoint_notes.len());
        for (i, note) in checkpoint_notes.iter().enumerate() {
            let fail = |why: String| VerifyError::Checkpoint { number: i + 1, size: 0, why };
            let cp = Checkpoint::open(note, verifier_key).map_err(|e| fail(e.to_string()))?;
            if let Some(before) = checkpoints.last()
                && cp.size < before.size
            {
                return Err(VerifyError::Checkpoint {
                    number: i + 1,
                    size: cp.size,
                    why: format!(
                        "smaller than the checkpoint before it ({}): checkpoints were reordered or the log rolled back",
                        before.size
                    ),
                });
            }
            checkpoints.push(cp);
        }
        let mut verifier = LogVerifier {
            checkpoints,
            next_checkpoint: 0,
            verified_size: 0,
            tree: Tree::new(),
            prev: None,
            node: None,
        };
        verifier.compare_checkpoints()?;
        Ok(verifier)
    }

    /// Adds the next record (its canonical bytes, without the line end).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Record, VerifyError> {
        let seq = self.tree.size();
        let fail = |why: String| VerifyError::Record { seq, why };
        let record = Record::from_canonical(bytes).map_err(|e| match e {
            AuditError::NotCanonical => fail("altered: not in canonical form".into()),
            e => fail(format!("altered or damaged: {e}")),
        })?;
        if record.seq != seq {
            return Err(fail(format!(
                "the record here carries sequence number {}: records were removed, inserted or reordered",
                record.seq
            )));
        }
        let expected_prev = self.prev.map(|h| h.to_string()).unwrap_or_default();
        if record.prev != expected_prev {
            // The record before this one no longer hashes to what this one recorded for it.
            return Err(VerifyError::Record {
                seq: seq.saturating_sub(1),
                why: format!(
                    "altered, or the record after it inserted or forged: record {seq} holds another hash for it (hash chain broken)"
                ),
            });
        }
        match &self.node {
            None => self.node = Some(record.node.clone()),
            Some(node) if *node != record.node => {
                return Err(fail(format!("from node {:?} in the log of node {node:?}", record.node)));
            }
            Some(_) => {}
        }
        let leaf = leaf_hash(bytes);
        self.tree.push(leaf);
        self.prev = Some(leaf);
        self.compare_checkpoints()?;
        Ok(record)
    }

    /// Compares every checkpoint whose size the tree has reached.
    fn compare_checkpoints(&mut self) -> Result<(), VerifyError> {
        while let Some(cp) = self.checkpoints.get(self.next_checkpoint) {
            if cp.size > self.tree.size() {
                return Ok(());
            }
            let number = self.next_checkpoint + 1;
            if let Some(node) = &self.node
                && cp.origin != origin_for_node(node)
            {
                return Err(VerifyError::Checkpoint {
                    number,
                    size: cp.size,
                    why: format!("origin {:?} is not this log's node {node:?}", cp.origin),
                });
            }
            let root = self.tree.root(cp.size).map_err(|e| VerifyError::Checkpoint {
                number,
                size: cp.size,
                why: e.to_string(),
            })?;
            if root != cp.root {
                let why = if cp.size == self.verified_size {
                    "a second checkpoint of the same size with another root (forged or inconsistent)".to_owned()
                } else {
                    format!(
                        "the records {}..{} do not hash to its root: one of them was altered",
                        self.verified_size,
                        cp.size - 1
                    )
                };
                return Err(VerifyError::Checkpoint { number, size: cp.size, why });
            }
            self.verified_size = cp.size;
            self.next_checkpoint += 1;
        }
        Ok(())
    }

    /// Ends the log: a checkpoint beyond its end means records were cut off.
    pub fn finish(self) -> Result<(LogReport, Tree), VerifyError> {
        if let Some(cp) = self.checkpoints.get(self.next_checkpoint) {
            return Err(VerifyError::Checkpoint {
                number: self.next_checkpoint + 1,
                size: cp.size,
                why: format!(
                    "covers {} records but the log has {}: records from {} on were removed (truncated)",
                    cp.size,
                    self.tree.size(),
                    self.tree.size()
                ),
            });
        }
        let report = LogReport {
            node: self.node,
            records: self.tree.size(),
            checkpoints: self.checkpoints.len(),
            last_checkpoint: self.checkpoints.last().cloned(),
            uncovered: self.tree.size() - self.verified_size,
        };
        Ok((report, self.tree))
    }

    /// The last leaf hash (what the next record's `prev` must be).
    pub fn last_leaf(&self) -> Option<Hash> {
        self.prev
    }

    /// Verifies a whole log file: records as lines, each ending in `\n`.
    pub fn verify_file(
        log: &[u8],
        checkpoint_notes: &[String],
        verifier_key: &str,
    ) -> Result<(LogReport, Tree), VerifyError> {
        let mut verifier = LogVerifier::new(checkpoint_notes, verifier_key)?;
        for line in split_records(log)? {
            verifier.push(line)?;
        }
        verifier.finish()
    }
}

/// A log file's records: its lines without their `\n`. A last line without one is a record cut
/// short (a torn write, or a truncation), named by its sequence number.
pub fn split_records(log: &[u8]) -> Result<Vec<&[u8]>, VerifyError> {
    let lines: Vec<&[u8]> = log.split_inclusive(|&b| b == b'\n').collect();
    if let Some(last) = lines.last()
        && last.last() != Some(&b'\n')
    {
        return Err(VerifyError::Record {
            seq: lines.len() as u64 - 1,
            why: "incomplete: the log ends inside this record (truncated or torn write)".into(),
        });
    }
    Ok(lines.into_iter().map(|line| &line[..line.len() - 1]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditKey;
    use crate::audit::record::tests::sample;

    struct Log {
        key: AuditKey,
        lines: Vec<Vec<u8>>,
        checkpoints: Vec<String>,
    }

    /// A log of `n` chained records with a checkpoint after every 4 records and at the end.
    fn log(n: u64) -> Log {
        let key = AuditKey::from_seed(&origin_for_node("relay-a"), &[3; 32]).unwrap();
        let mut tree = Tree::new();
        let mut lines = Vec::new();
        let mut checkpoints = Vec::new();
        let mut prev = String::new();
        for i in 0..n {
            let mut r = sample(i);
            r.prev = prev;
            let bytes = r.canonical();
            let leaf = leaf_hash(&bytes);
            prev = leaf.to_string();
            tree.push(leaf);
            lines.push(bytes);
            if (i + 1) % 4 == 0 || i + 1 == n {
                checkpoints.push(key.sign(i + 1, tree.root(i + 1).unwrap()).unwrap());
            }
        }
        Log { key, lines, checkpoints }
    }

    fn file(lines: &[Vec<u8>]) -> Vec<u8> {
        lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect()
    }

    fn check(log: &Log, bytes: &[u8]) -> Result<LogReport, VerifyError> {
        LogVerifier::verify_file(bytes, &log.checkpoints, log.key.verifier_key()).map(|(r, _)| r)
    }

    #[test]
    fn an_untouched_log_verifies() {
        let log = log(10);
        let report = check(&log, &file(&log.lines)).unwrap();
        assert_eq!(report.records, 10);
        assert_eq!(report.checkpoints, 3);
        assert_eq!(report.uncovered, 0);
        assert_eq!(report.node.as_deref(), Some("relay-a"));
    }

    #[test]
    fn a_flipped_byte_is_pinned_to_its_record() {
        let log = log(10);
        let mut bytes = file(&log.lines);
        // Flip one bit inside the actor of record 5 ("olga" -> "nlga"): still canonical JSON.
        let offset: usize = log.lines[..5].iter().map(|l| l.len() + 1).sum::<usize>()
            + String::from_utf8_lossy(&log.lines[5]).find("\"actor\":\"olga\"").unwrap()
            + 9;
        bytes[offset] ^= 0x01;
        assert_eq!(
            check(&log, &bytes).unwrap_err(),
            VerifyError::Record {
                seq: 5,
                why: "altered, or the record after it inserted or forged: record 6 holds another hash for it (hash chain broken)".into()
            }
        );
        // A flipped structural byte makes the record unreadable, named at once.
        let mut bytes = file(&log.lines);
        let offset: usize = log.lines[..2].iter().map(|l| l.len() + 1).sum::<usize>();
        bytes[offset] ^= 0x01;
        assert!(matches!(check(&log, &bytes).unwrap_err(), VerifyError::Record { seq: 2, .. }));
    }

    #[test]
    fn the_last_record_altered_is_caught_by_the_checkpoint() {
        let log = log(8);
        let mut lines = log.lines.clone();
        let mut r = Record::from_canonical(&lines[7]).unwrap();
        r.detail = "nothing happened".into();
        lines[7] = r.canonical();
        let err = check(&log, &file(&lines)).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Checkpoint {
                number: 2,
                size: 8,
                why: "the records 4..7 do not hash to its root: one of them was altered".into()
            }
        );
    }

    #[test]
    fn removed_inserted_and_reordered_records_are_named() {
        let log = log(10);
        let mut removed = log.lines.clone();
        removed.remove(3);
        assert!(matches!(check(&log, &file(&removed)).unwrap_err(), VerifyError::Record { seq: 3, .. }));

        let mut swapped = log.lines.clone();
        swapped.swap(6, 7);
        assert!(matches!(check(&log, &file(&swapped)).unwrap_err(), VerifyError::Record { seq: 6, .. }));

        let mut inserted = log.lines.clone();
        inserted.insert(2, sample(2).canonical());
        // The forged record's chain link does not hold: the fault is named at the link.
        assert!(matches!(check(&log, &file(&inserted)).unwrap_err(), VerifyError::Record { seq: 1, .. }));
        let mut renumbered = log.lines.clone();
        renumbered.insert(2, log.lines[2].clone());
        assert!(matches!(check(&log, &file(&renumbered)).unwrap_err(), VerifyError::Record { seq: 3, .. }));
    }

    #[test]
    fn a_truncated_tail_fails() {
        let log = log(10);
        // Whole records cut off below a checkpoint's size.
        let err = check(&log, &file(&log.lines[..7])).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Checkpoint { number: 2, size: 8, why } if why.contains("truncated")),
            "{err}"
        );
        // A torn last line.
        let mut bytes = file(&log.lines);
        bytes.truncate(bytes.len() - 5);
        assert!(matches!(check(&log, &bytes).unwrap_err(), VerifyError::Record { seq: 9, .. }));
    }

    #[test]
    fn forged_and_inconsistent_checkpoints_fail() {
        let log = log(10);
        let bytes = file(&log.lines);
        // Re-signed with another key.
        let other = AuditKey::from_seed(&origin_for_node("relay-a"), &[4; 32]).unwrap();
        let mut resigned = log.checkpoints.clone();
        let cp = Checkpoint::open(&resigned[1], log.key.verifier_key()).unwrap();
        resigned[1] = other.sign(cp.size, cp.root).unwrap();
        let err = LogVerifier::verify_file(&bytes, &resigned, log.key.verifier_key()).unwrap_err();
        assert!(matches!(err, VerifyError::Checkpoint { number: 2, .. }), "{err}");
        // Correctly signed but over another tree.
        let mut inconsistent = log.checkpoints.clone();
        inconsistent[1] = log.key.sign(8, leaf_hash(b"another tree")).unwrap();
        let err = LogVerifier::verify_file(&bytes, &inconsistent, log.key.verifier_key()).unwrap_err();
        assert!(matches!(err, VerifyError::Checkpoint { number: 2, size: 8, .. }), "{err}");
        // Rolled back.
        let mut reordered = log.checkpoints.clone();
        reordered.swap(0, 1);
        assert!(matches!(
            LogVerifier::verify_file(&bytes, &reordered, log.key.verifier_key()).unwrap_err(),
            VerifyError::Checkpoint { number: 2, .. }
        ));
        // Another node's key does not verify this node's checkpoints.
        let stranger = AuditKey::from_seed(&origin_for_node("relay-b"), &[3; 32]).unwrap();
        assert!(LogVerifier::verify_file(&bytes, &log.checkpoints, stranger.verifier_key()).is_err());
    }
}
