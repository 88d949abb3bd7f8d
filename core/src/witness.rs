//! Witnessing the other nodes' audit logs (R43), free of IO.
//!
//! Every node publishes each checkpoint it signs, and with it a consistency proof from the one
//! it published before (`CheckpointLinks`, the newest `MAX_LINKS`). Another node that saw a
//! checkpoint of size N accepts a larger one of size M only as the end of a chain of such proofs
//! from the one it saw: the larger log then holds the smaller as its beginning, record for
//! record. A node that publishes a smaller checkpoint, another root at the same size, or a
//! larger one that a proof shows does not extend the one seen, has cut back or rewritten its
//! history, and is reported at once. Now and then the newest checkpoint goes into the witness's
//! own log, so the other node cannot later present a history that contradicts it
//! (`relay audit verify` with both logs checks the whole logs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{Checkpoint, ConsistencyProof};

/// How many links a node keeps published: witnesses read every 2 s, so this covers a minute
/// of checkpoints even at one every second.
pub const MAX_LINKS: usize = 64;

/// The consistency proofs between a node's successive published checkpoints, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLinks {
    pub links: Vec<ConsistencyProof>,
}

impl CheckpointLinks {
    /// Adds the link to a newly published checkpoint, keeping the newest `MAX_LINKS`.
    pub fn push(&mut self, link: ConsistencyProof) {
        self.links.push(link);
        let extra = self.links.len().saturating_sub(MAX_LINKS);
        self.links.drain(..extra);
    }
}

/// Whether a chain of published proofs leads from one checkpoint to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// Every link verifies: the newer log extends the older.
    Proven,
    /// A link that starts at a checkpoint on the way does not verify, or the chain arrives at
    /// another root: the newer history does not extend the older.
    Broken(String),
    /// No chain (no links published, or none kept from that far back): nothing is proved
    /// either way.
    Missing,
}

/// Follows `links` (signed by `verifier_key`) from the checkpoint `from` (size, root as text)
/// to `to`.
///
/// A node writes the link to each checkpoint before the checkpoint itself, so while its links
/// reach back to `from` (the oldest starts at or before it), every checkpoint it published on
/// the way has a link onwards: no link where one is due is a node withholding its proofs (it
/// rewrote the history they would have to cover), and counts as a broken chain. Only links
/// trimmed since (a witness that was away for `MAX_LINKS` checkpoints) or never published (a
/// node from before links) leave the chain `Missing`. Where a publication failed halfway (link
/// written, checkpoint not), a second link starts at the same checkpoint; the one reaching
/// furthest towards `to` is followed.
pub fn prove_chain(links: &[ConsistencyProof], verifier_key: &str, from: (u64, &str), to: (u64, &str)) -> Chain {
    // A link whose start does not open with the node's key is not the node's: passed over.
    let opened: Vec<(Checkpoint, &ConsistencyProof)> =
        links.iter().filter_map(|link| Checkpoint::open(&link.old, verifier_key).ok().map(|old| (old, link))).collect();
    let covered = opened.iter().any(|(old, _)| old.size <= from.0);
    let mut at = (from.0, from.1.to_owned());
    // Each step goes to a larger size, so the chain has at most as many steps as links.
    for _ in 0..=links.len() {
        if at.0 == to.0 {
            return if at.1 == to.1 {
                Chain::Proven
            } else {
                Chain::Broken(format!("the proofs lead to root {} at {} records, not {}", at.1, at.0, to.1))
            };
        }
        let reach = |link: &ConsistencyProof| {
            Checkpoint::open(&link.new, verifier_key).ok().map(|new| new.size).filter(|size| *size <= to.0)
        };
        let next = opened
            .iter()
            .filter(|(old, _)| old.size == at.0 && old.root.to_string() == at.1)
            .max_by_key(|(_, link)| reach(link));
        let Some((_, link)) = next else {
            return if covered {
                Chain::Broken(format!(
                    "the node's published proofs reach back to the checkpoint of {} records, but none leads on from the one of {} records (root {}): it withholds them",
                    from.0, at.0, at.1
                ))
            } else {
                Chain::Missing
            };
        };
        match link.verify(verifier_key) {
            Ok((_, new)) if new.size > at.0 && new.size <= to.0 => at = (new.size, new.root.to_string()),
            Ok((_, new)) => return Chain::Broken(format!("a link from {} records goes to {}", at.0, new.size)),
            Err(e) => {
                return Chain::Broken(format!("the proof from the checkpoint of {} records does not hold: {e}", at.0));
            }
        }
    }
    Chain::Missing
}

/// What a node remembers of the checkpoints other nodes published.
#[derive(Debug, Clone, Default)]
pub struct Witness {
    seen: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone)]
struct Seen {
    size: u64,
    root: String,
    /// When this node last put one of the node's checkpoints into its own log.
    recorded_ms: u64,
    /// The contradicting checkpoint already reported, so it is reported once.
    flagged: Option<(u64, String)>,
}

/// What to do about a checkpoint another node published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Seen before, or grown since the last record and not due yet.
    Nothing,
    /// Put it into this node's log.
    Record,
    /// It contradicts the one seen before: report it.
    Inconsistent { seen_size: u64, seen_root: String },
    /// It is larger, and the node's own proofs show it does not extend the one seen before.
    Forked { seen_size: u64, seen_root: String, why: String },
}

impl Witness {
    /// The checkpoint of `node` this witness holds it to (size, root), if it saw one.
    pub fn seen(&self, node: &str) -> Option<(u64, &str)> {
        self.seen.get(node).map(|s| (s.size, s.root.as_str()))
    }

    /// `node` published a checkpoint of `size` records with `root`, seen at `now_ms`; records
    /// are due every `every_ms` while the node's log grows. `chain` says whether the node's
    /// published proofs lead from the checkpoint seen before (size, root) to this one.
    pub fn observe(
        &mut self,
        node: &str,
        size: u64,
        root: &str,
        now_ms: u64,
        every_ms: u64,
        chain: impl FnOnce(u64, &str) -> Chain,
    ) -> Verdict {
        let Some(seen) = self.seen.get_mut(node) else {
            self.seen.insert(node.to_owned(), Seen { size, root: root.to_owned(), recorded_ms: now_ms, flagged: None });
            return Verdict::Record;
        };
        let this = (size, root.to_owned());
        if seen.flagged.as_ref() == Some(&this) {
            return Verdict::Nothing;
        }
        if size < seen.size || (size == seen.size && root != seen.root) {
            seen.flagged = Some(this);
            return Verdict::Inconsistent { seen_size: seen.size, seen_root: seen.root.clone() };
        }
        if size == seen.size {
            return Verdict::Nothing;
        }
        match chain(seen.size, &seen.root) {
            Chain::Broken(why) => {
                seen.flagged = Some(this);
                return Verdict::Forked { seen_size: seen.size, seen_root: seen.root.clone(), why };
            }
            // Nothing proved against it: taken as the size and root rules allow, and the logs
            // verified together later decide (`relay audit verify`).
            Chain::Proven | Chain::Missing => {}
        }
        (seen.size, seen.root) = (size, root.to_owned());
        if now_ms.saturating_sub(seen.recorded_ms) >= every_ms {
            seen.recorded_ms = now_ms;
            return Verdict::Record;
        }
        Verdict::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditKey, Tree};

    fn proven(_: u64, _: &str) -> Chain {
        Chain::Proven
    }

    #[test]
    fn a_witness_records_growth_now_and_then_and_reports_a_history_cut_back_or_rewritten_once() {
        let mut w = Witness::default();
        assert_eq!(w.observe("b", 10, "r10", 0, 1_000, proven), Verdict::Record);
        assert_eq!(w.observe("b", 10, "r10", 500, 1_000, proven), Verdict::Nothing);
        // Grown, but the last record is recent: remembered, not recorded.
        assert_eq!(w.observe("b", 20, "r20", 600, 1_000, proven), Verdict::Nothing);
        assert_eq!(w.observe("b", 30, "r30", 1_000, 1_000, proven), Verdict::Record);
        // Cut back below what was seen (even unrecorded), or rewritten at the same size: once.
        let cut = Verdict::Inconsistent { seen_size: 30, seen_root: "r30".into() };
        assert_eq!(w.observe("b", 25, "r25", 1_100, 1_000, proven), cut);
        assert_eq!(w.observe("b", 25, "r25", 1_200, 1_000, proven), Verdict::Nothing);
        assert_eq!(w.observe("b", 30, "other", 1_300, 1_000, proven), cut);
        // Control: another node is judged on its own history.
        assert_eq!(w.observe("c", 5, "c5", 1_300, 1_000, proven), Verdict::Record);
        assert_eq!(w.observe("b", 40, "r40", 2_500, 1_000, proven), Verdict::Record);
    }

    /// A node's log as its checkpoints: the key, and the signed note and root at each size.
    struct Log {
        key: AuditKey,
        tree: Tree,
    }

    impl Log {
        fn new(records: usize, salt: &str) -> Log {
            let mut tree = Tree::default();
            for i in 0..records {
                tree.push(crate::audit::leaf_hash(format!("{salt}{i}").as_bytes()));
            }
            let key = AuditKey::from_seed(&crate::audit::origin_for_node("node-b"), &[7; 32]).unwrap();
            Log { key, tree }
        }
        fn note(&self, size: u64) -> String {
            self.key.sign(size, self.tree.root(size).unwrap()).unwrap()
        }
        fn root(&self, size: u64) -> String {
            self.tree.root(size).unwrap().to_string()
        }
        fn link(&self, old: u64, new: u64) -> ConsistencyProof {
            ConsistencyProof::new(self.note(old), self.note(new), &self.tree.consistency_proof(old, new).unwrap())
        }
    }

    #[test]
    fn a_chain_of_published_proofs_proves_growth_and_a_rewritten_history_breaks_it() {
        let log = Log::new(40, "r");
        let key = log.key.verifier_key().to_owned();
        let mut links = CheckpointLinks::default();
        for (old, new) in [(5, 12), (12, 20), (20, 33)] {
            links.push(log.link(old, new));
        }
        let chain = |from: u64, to: u64| prove_chain(&links.links, &key, (from, &log.root(from)), (to, &log.root(to)));
        assert_eq!(chain(12, 33), Chain::Proven);
        assert_eq!(chain(5, 20), Chain::Proven);
        assert_eq!(chain(12, 12), Chain::Proven);
        // A checkpoint inside what the links cover that no link leads on from: withheld.
        assert!(matches!(chain(7, 33), Chain::Broken(ref why) if why.contains("withholds")));
        // Links from before the one seen were trimmed since: nothing is proved either way.
        assert_eq!(prove_chain(&links.links[1..], &key, (5, &log.root(5)), (33, &log.root(33))), Chain::Missing);
        assert_eq!(prove_chain(&[], &key, (12, &log.root(12)), (33, &log.root(33))), Chain::Missing);
        // A node that rewrote its history after 12 publishes proofs from its new checkpoint of
        // 12, none from the one the witness saw: withheld, so a fork.
        let other = Log::new(40, "x");
        let mut forked = CheckpointLinks::default();
        forked.push(other.link(12, 33));
        let seen = log.root(12);
        let withheld = prove_chain(&forked.links, &key, (12, &seen), (33, &other.root(33)));
        assert!(matches!(withheld, Chain::Broken(ref why) if why.contains("withholds")), "{withheld:?}");
        // The same proofs with the root the witness saw put in: they do not hold.
        let mut lying = other.link(12, 33);
        lying.old = log.note(12);
        let broken = prove_chain(&[lying], &key, (12, &seen), (33, &other.root(33)));
        assert!(matches!(broken, Chain::Broken(ref why) if why.contains("does not hold")), "{broken:?}");
        // A true chain that ends at another root than the checkpoint published.
        let wrong_end = prove_chain(&links.links, &key, (12, &log.root(12)), (33, &other.root(33)));
        assert!(matches!(wrong_end, Chain::Broken(ref why) if why.contains("lead to root")), "{wrong_end:?}");
    }

    #[test]
    fn a_publication_that_failed_halfway_leaves_a_second_link_from_the_same_checkpoint() {
        let log = Log::new(40, "r");
        let key = log.key.verifier_key().to_owned();
        // 12 -> 20 was written, checkpoint 20 was not; the next publication links 12 -> 33.
        let mut links = CheckpointLinks::default();
        for (old, new) in [(5, 12), (12, 20), (12, 33), (33, 38)] {
            links.push(log.link(old, new));
        }
        let chain = |from: u64, to: u64| prove_chain(&links.links, &key, (from, &log.root(from)), (to, &log.root(to)));
        assert_eq!(chain(5, 38), Chain::Proven);
        assert_eq!(chain(12, 33), Chain::Proven);
        assert_eq!(chain(5, 20), Chain::Proven);
    }

    #[test]
    fn only_the_newest_links_are_kept() {
        let log = Log::new(MAX_LINKS + 10, "r");
        let mut links = CheckpointLinks::default();
        for size in 1..(MAX_LINKS as u64 + 5) {
            links.push(log.link(size, size + 1));
        }
        assert_eq!(links.links.len(), MAX_LINKS);
        assert!(links.links[0].old.contains('\n'));
        let key = log.key.verifier_key().to_owned();
        assert_eq!(prove_chain(&links.links, &key, (1, &log.root(1)), (3, &log.root(3))), Chain::Missing);
        let last = MAX_LINKS as u64 + 5;
        assert_eq!(
            prove_chain(&links.links, &key, (last - 3, &log.root(last - 3)), (last, &log.root(last))),
            Chain::Proven
        );
    }

    #[test]
    fn a_witness_reports_a_larger_checkpoint_that_its_proofs_show_is_a_fork_once() {
        let mut w = Witness::default();
        assert_eq!(w.observe("b", 10, "r10", 0, 1_000, proven), Verdict::Record);
        let fork = |_: u64, _: &str| Chain::Broken("does not hold".into());
        let forked = Verdict::Forked { seen_size: 10, seen_root: "r10".into(), why: "does not hold".into() };
        assert_eq!(w.observe("b", 20, "f20", 2_000, 1_000, fork), forked);
        assert_eq!(w.observe("b", 20, "f20", 2_500, 1_000, fork), Verdict::Nothing);
        // What was seen stays what it is held to: a proven extension of it is taken.
        assert_eq!(w.observe("b", 30, "r30", 3_000, 1_000, proven), Verdict::Record);
        // Control: without proofs published, growth is taken as before.
        assert_eq!(w.observe("b", 40, "r40", 5_000, 1_000, |_, _| Chain::Missing), Verdict::Record);
    }
}
