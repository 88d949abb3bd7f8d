//! Which relay an agent may talk to (issue 23): the node proves it holds the evidence key the
//! agent pinned at enrolment, by signing the agent's fresh nonce with the relay's own challenge
//! (`sightline_proto::relay_proof`). A relay that presents another key is refused unless a chain
//! of endorsements leads to it from a pinned key: that is how a node's key is replaced, or a node
//! added, without touching every endpoint. Whoever stands up a relay without a pinned key (a
//! copied store, a redirected name, a TLS-inspecting proxy that answers itself) is refused.
//!
//! What this does not stop: a party in the middle that forwards every message to the real relay
//! (the agent's TLS trust decides that), and a relay whose node key was stolen.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use sightline_proto::relay_proof::{KeyEndorsement, RelayProof, endorsement_message, proof_message};

use crate::audit::AuditKey;
use crate::recording::verifying_key_from_note;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayProofError {
    #[error("not a relay node key: {0}")]
    MalformedKey(String),
    #[error("the relay's proof for key {key} does not verify: it does not hold that key")]
    BadSignature { key: String },
    #[error("the endorsement of {key} by {by} does not verify")]
    BadEndorsement { key: String, by: String },
    #[error(
        "the relay presents node key {presented}, which this agent never pinned (pinned: {}); if the key was \
         replaced, the relay must carry an endorsement of it by a pinned key",
        pinned.join(", ")
    )]
    NotPinned { presented: String, pinned: Vec<String> },
    #[error("the relay sent no proof of its node key: it is older than this agent, or not a Sightline relay")]
    Missing,
}

/// A node's side: its key, and the endorsements that lead agents to it.
#[derive(Debug)]
pub struct RelayProver {
    key: SigningKey,
    verifier_key: String,
    endorsements: Vec<KeyEndorsement>,
}

impl RelayProver {
    /// The prover of `key`'s node. Every endorsement must verify, and the last must endorse this
    /// node's key: a node refuses to start with endorsements that would only fail at its agents.
    pub fn new(key: &AuditKey, endorsements: Vec<KeyEndorsement>) -> Result<RelayProver, RelayProofError> {
        for e in &endorsements {
            check_endorsement(e)?;
        }
        if let Some(last) = endorsements.last()
            && last.key.trim() != key.verifier_key()
        {
            return Err(RelayProofError::MalformedKey(format!(
                "the last endorsement vouches for {}, not for this node's key {}",
                last.key,
                key.verifier_key()
            )));
        }
        Ok(RelayProver { key: key.signing_key().clone(), verifier_key: key.verifier_key().to_owned(), endorsements })
    }

    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The proof for one connection.
    pub fn prove(&self, agent_nonce: &[u8], challenge: &[u8]) -> RelayProof {
        RelayProof {
            key: self.verifier_key.clone(),
            signature: hex::encode(self.key.sign(&proof_message(agent_nonce, challenge)).to_bytes()),
            endorsements: self.endorsements.clone(),
        }
    }
}

/// `by` vouches for `key` (a node's replacement key, or another node of the same service).
pub fn endorse(by: &AuditKey, key: &str) -> Result<KeyEndorsement, RelayProofError> {
    verifying_key_from_note(key).map_err(|e| RelayProofError::MalformedKey(e.to_string()))?;
    Ok(KeyEndorsement {
        key: key.trim().to_owned(),
        by: by.verifier_key().to_owned(),
        signature: hex::encode(by.signing_key().sign(&endorsement_message(key)).to_bytes()),
    })
}

fn verify(key: &str, message: &[u8], signature: &str) -> Result<bool, RelayProofError> {
    let public = verifying_key_from_note(key).map_err(|e| RelayProofError::MalformedKey(e.to_string()))?;
    let Some(bytes) = hex::decode(signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return Ok(false);
    };
    Ok(public.verify(message, &Signature::from_bytes(&bytes)).is_ok())
}

fn check_endorsement(e: &KeyEndorsement) -> Result<(), RelayProofError> {
    verifying_key_from_note(&e.key).map_err(|err| RelayProofError::MalformedKey(err.to_string()))?;
    if verify(&e.by, &endorsement_message(&e.key), &e.signature)? {
        Ok(())
    } else {
        Err(RelayProofError::BadEndorsement { key: e.key.clone(), by: e.by.clone() })
    }
}

/// How the agent came to trust the relay's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The key is pinned.
    Pinned,
    /// The key is new to this agent, endorsed (through `added`, in order) by a pinned key: the
    /// agent pins every key in `added`.
    Endorsed { added: Vec<String> },
}

/// The agent's check of the relay's first message: the proof verifies for the agent's `nonce`
/// and the relay's `challenge`, and its key is pinned or endorsed by a pinned key.
pub fn check(
    pinned: &[String],
    nonce: &[u8],
    challenge: &[u8],
    proof: Option<&RelayProof>,
) -> Result<Trust, RelayProofError> {
    let proof = proof.ok_or(RelayProofError::Missing)?;
    if !verify(&proof.key, &proof_message(nonce, challenge), &proof.signature)? {
        return Err(RelayProofError::BadSignature { key: proof.key.clone() });
    }
    let presented = proof.key.trim();
    let mut trusted: Vec<&str> = pinned.iter().map(|k| k.trim()).collect();
    if trusted.contains(&presented) {
        return Ok(Trust::Pinned);
    }
    // Endorsements may come in any order: follow them from the pinned keys until none adds one.
    let mut added = Vec::new();
    loop {
        let next = proof.endorsements.iter().find(|e| {
            trusted.contains(&e.by.trim()) && !trusted.contains(&e.key.trim()) && check_endorsement(e).is_ok()
        });
        let Some(e) = next else { break };
        trusted.push(e.key.trim());
        added.push(e.key.trim().to_owned());
        if e.key.trim() == presented {
            return Ok(Trust::Endorsed { added });
        }
    }
    Err(RelayProofError::NotPinned { presented: presented.to_owned(), pinned: pinned.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str, seed: u8) -> AuditKey {
        AuditKey::from_seed(&crate::audit::origin_for_node(node), &[seed; 32]).unwrap()
    }

    const NONCE: &[u8] = &[7; 32];
    const CHALLENGE: &[u8] = &[9; 32];

    #[test]
    fn a_pinned_node_is_trusted_for_this_connection_only() {
        let node = key("relay-a", 1);
        let pins = vec![node.verifier_key().to_owned()];
        let proof = RelayProver::new(&node, vec![]).unwrap().prove(NONCE, CHALLENGE);
        assert_eq!(check(&pins, NONCE, CHALLENGE, Some(&proof)), Ok(Trust::Pinned));
        // A proof recorded on one connection answers no other nonce: it cannot be replayed.
        let other_nonce = [8u8; 32];
        assert_eq!(
            check(&pins, &other_nonce, CHALLENGE, Some(&proof)),
            Err(RelayProofError::BadSignature { key: node.verifier_key().to_owned() })
        );
        assert_eq!(check(&pins, NONCE, CHALLENGE, None), Err(RelayProofError::Missing));
    }

    #[test]
    fn a_relay_with_another_key_is_refused_and_named() {
        let pinned = key("relay-a", 1);
        let rogue = key("relay-a", 2);
        let proof = RelayProver::new(&rogue, vec![]).unwrap().prove(NONCE, CHALLENGE);
        let err = check(&[pinned.verifier_key().to_owned()], NONCE, CHALLENGE, Some(&proof)).unwrap_err();
        assert_eq!(
            err,
            RelayProofError::NotPinned {
                presented: rogue.verifier_key().to_owned(),
                pinned: vec![pinned.verifier_key().to_owned()]
            }
        );
        // Presenting the pinned key without holding it fails on the signature.
        let mut forged = proof;
        forged.key = pinned.verifier_key().to_owned();
        assert!(matches!(
            check(&[pinned.verifier_key().to_owned()], NONCE, CHALLENGE, Some(&forged)),
            Err(RelayProofError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_rotation_reaches_agents_through_a_chain_of_endorsements() {
        let (old, middle, new) = (key("relay-a", 1), key("relay-a", 2), key("relay-a", 3));
        let chain = vec![endorse(&old, middle.verifier_key()).unwrap(), endorse(&middle, new.verifier_key()).unwrap()];
        let proof = RelayProver::new(&new, chain.clone()).unwrap().prove(NONCE, CHALLENGE);
        assert_eq!(
            check(&[old.verifier_key().to_owned()], NONCE, CHALLENGE, Some(&proof)),
            Ok(Trust::Endorsed { added: vec![middle.verifier_key().to_owned(), new.verifier_key().to_owned()] })
        );
        // The control: an endorsement by a key the agent never pinned leads nowhere.
        let stranger = key("relay-x", 4);
        let rogue = RelayProver::new(&new, vec![endorse(&stranger, new.verifier_key()).unwrap()]).unwrap();
        assert!(matches!(
            check(&[old.verifier_key().to_owned()], NONCE, CHALLENGE, Some(&rogue.prove(NONCE, CHALLENGE))),
            Err(RelayProofError::NotPinned { .. })
        ));
        // An endorsement whose signature was made for another key is refused at the node's start.
        let mut tampered = chain;
        tampered[1].key = stranger.verifier_key().to_owned();
        assert!(matches!(RelayProver::new(&stranger, tampered), Err(RelayProofError::BadEndorsement { .. })));
        // And endorsements that end at another key than the node's would only fail at its agents.
        let wrong_end = vec![endorse(&old, middle.verifier_key()).unwrap()];
        assert!(matches!(RelayProver::new(&new, wrong_end), Err(RelayProofError::MalformedKey(_))));
    }
}
