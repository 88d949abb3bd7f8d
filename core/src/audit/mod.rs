//! The audit log's evidence logic (R39): records, their Merkle tree, signed checkpoints and
//! proofs, and the verification of a whole log.
//!
//! Every record is a leaf of an RFC 6962 Merkle tree (leaf hash `SHA-256(0x00 || record)`, node
//! hash `SHA-256(0x01 || left || right)`). A relay node signs checkpoints of the tree in the C2SP
//! tlog-checkpoint format (a signed note: origin, size, root; Ed25519). With a checkpoint and
//! O(log n) hashes anyone holding the node's public key proves that one record is in the log
//! (C2SP tlog-proof) or that an older checkpoint's log is a prefix of a newer one. Each record
//! also names the leaf hash of the one before it, so an edit is pinned to the first record whose
//! chain breaks even between checkpoints.
//!
//! The tree arithmetic and the note format come from `tlog_tiles` and `signed_note` (Cloudflare's
//! ports of Go's `sumdb/tlog` and `note`, the reference implementations of those formats); this
//! module adds the record format, the proof files and the verifier's reasoning. Nothing here does
//! IO, so the relay, the CLI and the browser (wasm32) verify with the same code.

mod checkpoint;
mod proof;
mod record;
mod tree;
mod verify;

pub use checkpoint::{AuditKey, Checkpoint, origin_for_node};
pub use proof::{ConsistencyProof, InclusionProof};
pub use record::{Outcome, Record, SessionFacts, break_glass_mark};
pub use tlog_tiles::Hash;
pub use tree::{Tree, leaf_hash};
pub use verify::{LogReport, LogVerifier, VerifyError, split_records};

/// Why a piece of audit evidence is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("record is not valid JSON of the audit record format: {0}")]
    MalformedRecord(String),
    #[error("record is not in canonical form (re-encoding it gives other bytes)")]
    NotCanonical,
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
    #[error("checkpoint signature does not verify with key {key}: {why}")]
    BadSignature { key: String, why: String },
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
    #[error("malformed key: {0}")]
    MalformedKey(String),
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    #[error("proof does not verify: {0}")]
    ProofFails(String),
    #[error("{0}")]
    Tree(String),
}
