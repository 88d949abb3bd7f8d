//! Proof files: an inclusion proof in the C2SP tlog-proof format, and a consistency proof between
//! two signed checkpoints. Each verifies with nothing but its inputs and the node's public key.

use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;

use super::tree::{check_consistency, check_inclusion};
use super::{AuditError, Checkpoint, Record, leaf_hash};

const TLOG_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// C2SP tlog-proof: the record's index, its audit path and the signed checkpoint it is proved
/// against.
#[derive(Debug, Clone, PartialEq)]
pub struct InclusionProof {
    pub index: u64,
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

impl InclusionProof {
    pub fn to_text(&self) -> String {
        let mut out = format!("{TLOG_PROOF_HEADER}\nindex {}\n", self.index);
        for hash in &self.hashes {
            out.push_str(&format!("{hash}\n"));
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    pub fn parse(text: &str) -> Result<InclusionProof, AuditError> {
        let bad = |why: &str| AuditError::MalformedProof(why.to_owned());
        let (head, checkpoint) = text.split_once("\n\n").ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(TLOG_PROOF_HEADER) {
            return Err(bad("not a c2sp.org/tlog-proof@v1 file"));
        }
        let mut line = lines.next().ok_or_else(|| bad("no index line"))?;
        if line.starts_with("extra ") {
            // Opaque, unauthenticated application data: allowed by the format, unused here.
            line = lines.next().ok_or_else(|| bad("no index line"))?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(|n| n.parse::<u64>().ok().filter(|v| v.to_string() == n))
            .ok_or_else(|| bad("malformed index line"))?;
        let hashes = lines
            .map(|l| Hash::parse_hash(l).map_err(|_| bad(&format!("malformed hash line {l:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InclusionProof { index, hashes, checkpoint: checkpoint.to_owned() })
    }

    /// Verifies that `record` (its canonical bytes) is record `index` of the log whose checkpoint
    /// this proof carries, signed by `verifier_key`. Returns the checkpoint.
    pub fn verify(&self, record: &[u8], verifier_key: &str) -> Result<Checkpoint, AuditError> {
        let parsed = Record::from_canonical(record)?;
        if parsed.seq != self.index {
            return Err(AuditError::ProofFails(format!(
                "the record has sequence number {}, the proof is for index {}",
                parsed.seq, self.index
            )));
        }
        let checkpoint = Checkpoint::open(&self.checkpoint, verifier_key)?;
        if self.index >= checkpoint.size {
            return Err(AuditError::ProofFails(format!(
                "index {} is not below the checkpoint's size {}",
                self.index, checkpoint.size
            )));
        }
        check_inclusion(&self.hashes, checkpoint.size, checkpoint.root, self.index, leaf_hash(record))?;
        Ok(checkpoint)
    }
}

/// Proof that the log at an older checkpoint is a prefix of the log at a newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// The older signed checkpoint note.
    pub old: String,
    /// The newer signed checkpoint note.
    pub new: String,
    /// Base64 hashes of the RFC 6962 consistency proof.
    pub hashes: Vec<String>,
}

impl ConsistencyProof {
    pub fn new(old: String, new: String, hashes: &[Hash]) -> ConsistencyProof {
        ConsistencyProof { old, new, hashes: hashes.iter().map(|h| h.to_string()).collect() }
    }

    /// Verifies both signatures and the proof; returns (old, new).
    pub fn verify(&self, verifier_key: &str) -> Result<(Checkpoint, Checkpoint), AuditError> {
        let old = Checkpoint::open(&self.old, verifier_key)?;
        let new = Checkpoint::open(&self.new, verifier_key)?;
        if old.size > new.size {
            return Err(AuditError::ProofFails(format!("old size {} is above new size {}", old.size, new.size)));
        }
        let hashes = self
            .hashes
            .iter()
            .map(|h| Hash::parse_hash(h).map_err(|_| AuditError::MalformedProof(format!("malformed hash {h:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if old.size == 0 {
            // The empty log is a prefix of every log.
            return Ok((old, new));
        }
        check_consistency(&hashes, new.size, new.root, old.size, old.root)?;
        Ok((old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::tests::sample;
    use crate::audit::{AuditKey, Tree, origin_for_node};

    fn log(n: u64) -> (AuditKey, Tree, Vec<Vec<u8>>) {
        let key = AuditKey::from_seed(&origin_for_node("relay-a"), &[7; 32]).unwrap();
        let mut tree = Tree::new();
        let records: Vec<Vec<u8>> = (0..n).map(|i| sample(i).canonical()).collect();
        for r in &records {
            tree.push(leaf_hash(r));
        }
        (key, tree, records)
    }

    #[test]
    fn an_inclusion_proof_round_trips_through_its_text_and_verifies() {
        let (key, tree, records) = log(13);
        let checkpoint = key.sign(13, tree.root(13).unwrap()).unwrap();
        let proof = InclusionProof { index: 5, hashes: tree.inclusion_proof(5, 13).unwrap(), checkpoint };
        let text = proof.to_text();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nindex 5\n"), "{text}");
        let parsed = InclusionProof::parse(&text).unwrap();
        assert_eq!(parsed, proof);
        assert_eq!(parsed.verify(&records[5], key.verifier_key()).unwrap().size, 13);

        // Another record, a tampered hash, or another key: refused.
        assert!(parsed.verify(&records[6], key.verifier_key()).is_err());
        let mut tampered = parsed.clone();
        tampered.hashes[0] = leaf_hash(b"x");
        assert!(matches!(tampered.verify(&records[5], key.verifier_key()), Err(AuditError::ProofFails(_))));
        let other = AuditKey::from_seed(&origin_for_node("relay-a"), &[8; 32]).unwrap();
        assert!(parsed.verify(&records[5], other.verifier_key()).is_err());
        // A record edited after the fact.
        let mut edited = sample(5);
        edited.actor = "mallory".into();
        assert!(parsed.verify(&edited.canonical(), key.verifier_key()).is_err());
    }

    #[test]
    fn malformed_proof_files_are_refused() {
        for text in [
            "",
            "c2sp.org/tlog-proof@v1\n",
            "wrong-header\nindex 0\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex x\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 01\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 0\nnot-base64!\n\ncp\n",
        ] {
            assert!(matches!(InclusionProof::parse(text), Err(AuditError::MalformedProof(_))), "{text:?}");
        }
        let with_extra = InclusionProof::parse("c2sp.org/tlog-proof@v1\nextra eA==\nindex 3\n\ncp\n").unwrap();
        assert_eq!(with_extra.index, 3);
    }

    #[test]
    fn consistency_between_two_checkpoints_verifies_and_a_rewrite_does_not() {
        let (key, tree, _) = log(20);
        let old = key.sign(7, tree.root(7).unwrap()).unwrap();
        let new = key.sign(20, tree.root(20).unwrap()).unwrap();
        let proof = ConsistencyProof::new(old.clone(), new.clone(), &tree.consistency_proof(7, 20).unwrap());
        let (o, n) = proof.verify(key.verifier_key()).unwrap();
        assert_eq!((o.size, n.size), (7, 20));

        // A checkpoint of a rewritten log of the same size is not consistent with the new one.
        let mut rewritten = Tree::new();
        for i in 0..7 {
            let mut r = sample(i);
            if i == 3 {
                r.detail = "rewritten".into();
            }
            rewritten.push(leaf_hash(&r.canonical()));
        }
        let forged_old = key.sign(7, rewritten.root(7).unwrap()).unwrap();
        let bad = ConsistencyProof::new(forged_old, new, &tree.consistency_proof(7, 20).unwrap());
        assert!(matches!(bad.verify(key.verifier_key()), Err(AuditError::ProofFails(_))));
    }
}
