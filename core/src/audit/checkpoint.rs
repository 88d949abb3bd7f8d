//! Signed checkpoints: the C2SP tlog-checkpoint body (origin, size, root) in a C2SP signed note,
//! signed with the node's Ed25519 audit key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Hash;

use super::AuditError;

/// The checkpoint origin (and signed-note key name) of a relay node's audit log.
pub fn origin_for_node(node: &str) -> String {
    format!("sightline.audit/{node}")
}

/// A node's audit signing key.
pub struct AuditKey {
    signer: StandardSigner,
    /// The signed-note verifier key (`name+id+base64`), what auditors are given.
    verifier_key: String,
    /// The same key signs recording manifests (domain-separated there, `ManifestKey::of`): one
    /// public key vouches for all of a node's evidence.
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("verifier_key", &self.verifier_key).finish_non_exhaustive()
    }
}

impl AuditKey {
    /// The key of `origin` from a 32-byte Ed25519 seed.
    pub fn from_seed(origin: &str, seed: &[u8; 32]) -> Result<AuditKey, AuditError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(AuditError::MalformedKey(format!("{origin:?} cannot name a signed-note key")));
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let verifier_key = signed_note::new_ed25519_verifier_key(origin, &signing.verifying_key());
        let mut public = vec![1u8];
        public.extend_from_slice(signing.verifying_key().as_bytes());
        let mut private = vec![1u8];
        private.extend_from_slice(seed);
        let skey =
            format!("PRIVATE+KEY+{origin}+{:08x}+{}", signed_note::key_id(origin, &public), BASE64.encode(private));
        let signer = StandardSigner::new(&skey).map_err(|e| AuditError::MalformedKey(e.to_string()))?;
        Ok(AuditKey { signer, verifier_key, signing })
    }

    /// The Ed25519 key itself, for the evidence this key signs beside checkpoints.
    pub(crate) fn signing_key(&self) -> &ed25519_dalek::SigningKey {
        &self.signing
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Signs the checkpoint of a tree of `size` records with root `root`; returns the note text.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String, AuditError> {
        let body = tlog_tiles::Checkpoint::new(self.origin(), size, root, "")
            .map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
        let mut note = Note::new(&body.to_bytes(), &[]).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
        note.add_sigs(&[&self.signer]).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))
    }
}

/// A checkpoint whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// Parses a signed checkpoint and verifies it with `verifier_key`; the origin must be the
    /// key's name (one key per node log).
    pub fn open(note_text: &str, verifier_key: &str) -> Result<Checkpoint, AuditError> {
        let verifier = StandardVerifier::new(verifier_key)
            .map_err(|e| AuditError::MalformedKey(format!("{verifier_key:?}: {e}")))?;
        let expected_origin = signed_note::Verifier::name(&verifier).to_owned();
        let note =
            Note::from_bytes(note_text.as_bytes()).map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
        note.verify(&VerifierList::new(vec![Box::new(verifier)]))
            .map_err(|e| AuditError::BadSignature { key: expected_origin.clone(), why: e.to_string() })?;
        let body = tlog_tiles::Checkpoint::from_bytes(note.text())
            .map_err(|e| AuditError::MalformedCheckpoint(e.to_string()))?;
        if body.origin() != expected_origin {
            return Err(AuditError::WrongOrigin { expected: expected_origin, found: body.origin().to_owned() });
        }
        Ok(Checkpoint { origin: body.origin().to_owned(), size: body.size(), root: *body.hash() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::leaf_hash;

    pub(crate) fn key(seed: u8) -> AuditKey {
        AuditKey::from_seed(&origin_for_node("relay-a"), &[seed; 32]).unwrap()
    }

    #[test]
    fn a_signed_checkpoint_opens_with_the_nodes_key_only() {
        let k = key(1);
        let root = leaf_hash(b"x");
        let note = k.sign(1, root).unwrap();
        assert!(note.starts_with("sightline.audit/relay-a\n1\n"), "{note}");
        assert!(note.contains("\n\n\u{2014} sightline.audit/relay-a "), "{note}");
        let cp = Checkpoint::open(&note, k.verifier_key()).unwrap();
        assert_eq!(cp, Checkpoint { origin: "sightline.audit/relay-a".into(), size: 1, root });

        // Same name, other key: re-signed by someone else.
        let other = key(2);
        let forged = other.sign(1, root).unwrap();
        assert!(matches!(Checkpoint::open(&forged, k.verifier_key()), Err(AuditError::BadSignature { .. })));
        // An edited body no longer matches its signature.
        let edited = note.replacen("\n1\n", "\n2\n", 1);
        assert!(matches!(Checkpoint::open(&edited, k.verifier_key()), Err(AuditError::BadSignature { .. })));
        // Garbage is malformed, not a panic.
        assert!(matches!(Checkpoint::open("nonsense", k.verifier_key()), Err(AuditError::MalformedCheckpoint(_))));
        assert!(matches!(Checkpoint::open(&note, "not a key"), Err(AuditError::MalformedKey(_))));
    }

    #[test]
    fn names_that_cannot_be_note_keys_are_refused() {
        assert!(AuditKey::from_seed("two words", &[1; 32]).is_err());
        assert!(AuditKey::from_seed("a+b", &[1; 32]).is_err());
    }
}
