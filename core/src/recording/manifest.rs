//! The manifest: one signed line per step of a recording (opened, each chunk, closed).
//!
//! Each line is the canonical JSON of [`ManifestLine`]; its signature is Ed25519 by the relay
//! node's key (the audit key: one key for the node's evidence, with domain separation) over the
//! line's fields except the signature, and `prev` is the SHA-256 of the previous line's bytes.
//! A removed, reordered or edited line breaks the chain or a signature; the close line says how
//! many chunks there are, so a recording cut short is visible as incomplete, never as whole.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RecordingError;
use crate::audit::SessionFacts;

const DOMAIN: &[u8] = b"sightline recording manifest v1\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ManifestBody {
    /// The recording began: whose session, and the device key that signs its media.
    Open {
        recording_id: String,
        node: String,
        segment: String,
        session: Box<SessionFacts>,
        started_ms: u64,
        /// The endpoint's Ed25519 public key (hex), which signs the seals.
        device_key: String,
        /// This recording goes on with a session whose relay node was lost (R43): the cut
        /// recording it follows, and the gap between them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        continues: Option<Continuation>,
    },
    /// Chunk `index` (from 0) was written: its plaintext's SHA-256 (hex) and size.
    Chunk { index: u64, sha256: String, bytes: u64, frames: u64, written_ms: u64 },
    /// The recording ended with the session.
    Close { chunks: u64, ended_ms: u64, reason: String },
}

/// Where a recording continues a session's recording cut by the loss of its relay node (R43):
/// the cut recording (its id and node, the chunks it had written and the last one's hash, as
/// that node last published them) and the time nothing was recorded, with its cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Continuation {
    pub previous: String,
    pub previous_node: String,
    pub previous_chunks: u64,
    pub previous_last_sha256: Option<String>,
    pub gap: Gap,
}

/// A stretch of a session nobody recorded (Unix ms), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    pub start_ms: u64,
    pub end_ms: u64,
    pub cause: String,
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLine {
    pub seq: u64,
    /// SHA-256 (hex) of the previous line's bytes; empty on the first line.
    pub prev: String,
    pub body: ManifestBody,
    /// Ed25519 signature (base64) over [`ManifestLine::signed_bytes`].
    pub sig: String,
}

impl ManifestLine {
    /// What the relay signs: the domain, then the line without its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Unsigned<'a> {
            seq: u64,
            prev: &'a str,
            body: &'a ManifestBody,
        }
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(
            &serde_json::to_vec(&Unsigned { seq: self.seq, prev: &self.prev, body: &self.body })
                .expect("manifest bodies serialise"),
        );
        m
    }

    /// Parses one line; refuses anything but the canonical encoding.
    pub fn parse(line_no: u64, text: &str) -> Result<ManifestLine, RecordingError> {
        let bad = |why: String| RecordingError::Manifest { line: line_no, why };
        let line: ManifestLine = serde_json::from_str(text).map_err(|e| bad(format!("not a manifest line: {e}")))?;
        if serde_json::to_string(&line).map_err(|e| bad(e.to_string()))? != text {
            return Err(bad("not in canonical form".into()));
        }
        Ok(line)
    }

    pub fn verify(&self, line_no: u64, key: &VerifyingKey) -> Result<(), RecordingError> {
        let sig = BASE64
            .decode(&self.sig)
            .ok()
            .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
            .ok_or(RecordingError::BadManifestSignature { line: line_no })?;
        key.verify(&self.signed_bytes(), &sig).map_err(|_| RecordingError::BadManifestSignature { line: line_no })
    }
}

/// The relay node's signing key for manifests.
#[derive(Clone)]
pub struct ManifestKey(SigningKey);

impl std::fmt::Debug for ManifestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ManifestKey").field(&hex::encode(self.0.verifying_key().as_bytes())).finish()
    }
}

impl ManifestKey {
    pub fn from_seed(seed: &[u8; 32]) -> ManifestKey {
        ManifestKey(SigningKey::from_bytes(seed))
    }

    /// The node's evidence key: manifests are signed with its audit key (domain-separated), so
    /// one public key, `audit.pub`, checks a node's log and its recordings.
    pub fn of(key: &crate::audit::AuditKey) -> ManifestKey {
        ManifestKey(key.signing_key().clone())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.0.verifying_key()
    }
}

/// The public key inside a signed-note verifier key (`name+id+base64(0x01 || key)`), the form
/// a relay node's `audit.pub` has.
pub fn verifying_key_from_note(vkey: &str) -> Result<VerifyingKey, RecordingError> {
    let bad = |why: &str| RecordingError::MalformedKey(format!("{why}: {vkey:?}"));
    // `name+id+key`: neither name nor id has a '+', the base64 key may.
    let encoded = vkey.trim().splitn(3, '+').nth(2).ok_or_else(|| bad("not a verifier key"))?;
    let bytes = BASE64.decode(encoded).map_err(|_| bad("key is not base64"))?;
    match bytes.split_first() {
        Some((1, key)) => {
            let key: [u8; 32] = key.try_into().map_err(|_| bad("not an Ed25519 key"))?;
            VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 key"))
        }
        _ => Err(bad("not an Ed25519 verifier key")),
    }
}

/// Produces the manifest's lines in order, chained and signed.
#[derive(Debug)]
pub struct ManifestWriter {
    key: ManifestKey,
    seq: u64,
    prev: String,
}

impl ManifestWriter {
    pub fn new(key: ManifestKey) -> ManifestWriter {
        ManifestWriter { key, seq: 0, prev: String::new() }
    }

    /// The next line (without its newline). The writer advances only when the caller says the
    /// line is stored ([`ManifestWriter::stored`]), so a failed write can be retried as is.
    pub fn line(&self, body: ManifestBody) -> String {
        let mut line = ManifestLine { seq: self.seq, prev: self.prev.clone(), body, sig: String::new() };
        line.sig = BASE64.encode(self.key.0.sign(&line.signed_bytes()).to_bytes());
        serde_json::to_string(&line).expect("manifest lines serialise")
    }

    /// `line` is on disk: the next one chains to it.
    pub fn stored(&mut self, line: &str) {
        self.seq += 1;
        self.prev = hex::encode(Sha256::digest(line.as_bytes()));
    }
}

pub(super) fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_comes_out_of_a_verifier_key_even_with_plus_signs_in_its_base64() {
        for seed in 0..=255u8 {
            let key = crate::audit::AuditKey::from_seed("sightline.audit/n1", &[seed; 32]).unwrap();
            let public = super::verifying_key_from_note(key.verifier_key()).unwrap();
            assert_eq!(public, super::ManifestKey::of(&key).verifying_key());
        }
        assert!(super::verifying_key_from_note("nothing").is_err());
    }
}
