//! The log's Merkle tree (RFC 6962), kept as the stored hashes of `tlog_tiles`: the record hash
//! of every leaf and the hash of every complete subtree, in one array that only grows. Roots and
//! proofs for any earlier size come from the same array.

use tlog_tiles::{Hash, HashReader};

use super::AuditError;

/// The RFC 6962 leaf hash of a record's canonical bytes: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    tlog_tiles::record_hash(data)
}

/// An append-only Merkle tree of records.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Stored hashes in `tlog_tiles::stored_hash_index` order (about two per record).
    stored: Vec<Hash>,
    /// Number of records.
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| self.stored.get(i as usize).copied().ok_or(tlog_tiles::Error::IndexesNotInTree))
            .collect()
    }
}

fn tree_error(e: tlog_tiles::Error) -> AuditError {
    AuditError::Tree(e.to_string())
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Number of records in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a record given its leaf hash; returns the new size.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        // Reading from our own array cannot miss: tlog_tiles asks only for complete subtrees
        // that earlier pushes stored.
        let hashes = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf, self).unwrap_or_default();
        self.stored.extend(hashes);
        self.size += 1;
        self.size
    }

    /// The root hash of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash, AuditError> {
        if size > self.size {
            return Err(AuditError::Tree(format!("tree has {} records, not {size}", self.size)));
        }
        tlog_tiles::tree_hash(size, self).map_err(tree_error)
    }

    /// The audit path of record `index` in the tree of the first `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        if size > self.size {
            return Err(AuditError::Tree(format!("tree has {} records, not {size}", self.size)));
        }
        tlog_tiles::prove_record(size, index, self).map_err(tree_error)
    }

    /// The proof that the tree of `old` records is a prefix of the tree of `new` records.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        if new > self.size {
            return Err(AuditError::Tree(format!("tree has {} records, not {new}", self.size)));
        }
        tlog_tiles::prove_tree(new, old, self).map_err(tree_error)
    }
}

/// Checks that `leaf` is record `index` of the tree of `size` records whose root is `root`.
pub fn check_inclusion(proof: &[Hash], size: u64, root: Hash, index: u64, leaf: Hash) -> Result<(), AuditError> {
    tlog_tiles::check_record(&proof.to_vec(), size, root, index, leaf)
        .map_err(|e| AuditError::ProofFails(e.to_string()))
}

/// Checks that the tree (`old`, `old_root`) is a prefix of the tree (`new`, `new_root`).
pub fn check_consistency(proof: &[Hash], new: u64, new_root: Hash, old: u64, old_root: Hash) -> Result<(), AuditError> {
    if old == new {
        return if old_root == new_root && proof.is_empty() {
            Ok(())
        } else {
            Err(AuditError::ProofFails("same size, different roots".into()))
        };
    }
    tlog_tiles::check_tree(&proof.to_vec(), new, new_root, old, old_root)
        .map_err(|e| AuditError::ProofFails(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        h.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The leaves of the RFC 6962 reference tests (certificate-transparency's merkle_tree_test),
    /// and the roots of the trees of their first 1..=8 leaves.
    const LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_tree() -> Tree {
        let mut tree = Tree::new();
        for leaf in LEAVES {
            tree.push(leaf_hash(leaf));
        }
        tree
    }

    #[test]
    fn roots_match_the_rfc_6962_reference_vectors() {
        let tree = reference_tree();
        assert_eq!(hex(&tree.root(0).unwrap()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(hex(&tree.root(n as u64 + 1).unwrap()), *want, "root of {} leaves", n + 1);
        }
        assert!(tree.root(9).is_err());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        let tree = reference_tree();
        for size in 1..=8u64 {
            let root = tree.root(size).unwrap();
            for index in 0..size {
                let proof = tree.inclusion_proof(index, size).unwrap();
                let leaf = leaf_hash(LEAVES[index as usize]);
                check_inclusion(&proof, size, root, index, leaf).unwrap();
                // Another leaf, another index or another root fails.
                assert!(check_inclusion(&proof, size, root, index, leaf_hash(b"forged")).is_err());
                if size > 1 {
                    assert!(check_inclusion(&proof, size, root, (index + 1) % size, leaf).is_err());
                }
                assert!(check_inclusion(&proof, size, tree.root(size - 1).unwrap(), index, leaf).is_err());
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_prefix_does_not() {
        let tree = reference_tree();
        for new in 1..=8u64 {
            for old in 1..=new {
                let proof = tree.consistency_proof(old, new).unwrap();
                check_consistency(&proof, new, tree.root(new).unwrap(), old, tree.root(old).unwrap()).unwrap();
            }
        }
        // A log whose third record was rewritten is not an extension of the original's first 4.
        let mut other = Tree::new();
        for (i, leaf) in LEAVES.iter().enumerate() {
            other.push(leaf_hash(if i == 2 { b"rewritten" } else { leaf }));
        }
        let proof = other.consistency_proof(4, 8).unwrap();
        assert!(check_consistency(&proof, 8, other.root(8).unwrap(), 4, tree.root(4).unwrap()).is_err());
    }
}
