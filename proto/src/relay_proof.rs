//! How a relay node proves to an agent that it holds the node key the agent pinned at enrolment
//! (issue 23): the agent sends a fresh nonce when it dials (`?nonce=` on the agent socket), and
//! the relay's first message signs that nonce and its own challenge with the node's evidence key.
//! A relay that presents another key carries endorsements: each a key signed by a key the agent
//! already trusts, which is how a legitimate rotation (or a new node) reaches agents.

use serde::{Deserialize, Serialize};

/// The query parameter of the agent socket that carries the agent's nonce (hex).
pub const NONCE_PARAM: &str = "nonce";
/// Bytes of the agent's nonce.
pub const NONCE_BYTES: usize = 32;

/// The relay's proof, in its `challenge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayProof {
    /// The node's verifier key (signed-note form, `sightline.audit/<node>+id+base64`).
    pub key: String,
    /// Ed25519 (hex) by `key` over `proof_message(agent nonce, challenge)`.
    pub signature: String,
    /// Endorsements that lead from a key the agent pinned to `key` (empty when none were
    /// configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endorsements: Vec<KeyEndorsement>,
}

/// "`by` vouches for `key`": Ed25519 (hex) by `by` over `endorsement_message(key)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEndorsement {
    pub key: String,
    pub by: String,
    pub signature: String,
}

/// The exact bytes a relay signs for an agent: context, the agent's nonce, the relay's challenge.
pub fn proof_message(agent_nonce: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut m = b"sightline relay proof v1\0".to_vec();
    for part in [agent_nonce, challenge] {
        m.extend_from_slice(&(part.len() as u64).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// The exact bytes an endorsing key signs: context and the endorsed key.
pub fn endorsement_message(key: &str) -> Vec<u8> {
    let mut m = b"sightline relay key endorsement v1\0".to_vec();
    m.extend_from_slice(key.trim().as_bytes());
    m
}
