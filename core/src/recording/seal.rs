//! The endpoint's seals over the frames it sends (agent side: [`SealChain`]; verifier side:
//! [`verify_seal`], [`seal_head`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use sightline_proto::agent_auth::media_seal_message;
use sightline_proto::channel::{MAX_SEALED_FRAMES, MediaSeal, SealedFrame};

use super::RecordingError;

/// SHA-256 of an encoded frame, base64, as seals name it.
pub fn frame_hash(data: &[u8]) -> String {
    BASE64.encode(Sha256::digest(data))
}

/// The chain head after `seal`: SHA-256 (hex) of its signed message; the next seal's `prev`.
pub fn seal_head(seal: &MediaSeal) -> String {
    hex::encode(Sha256::digest(media_seal_message(seal)))
}

/// Checks a seal's signature with the device's public key.
pub fn verify_seal(seal: &MediaSeal, device_key: &VerifyingKey) -> Result<(), RecordingError> {
    let bad = |why: &str| RecordingError::Seal { seq: seal.seq, why: why.to_owned() };
    if seal.frames.len() > MAX_SEALED_FRAMES {
        return Err(bad("covers more frames than a seal may"));
    }
    let sig = hex::decode(&seal.signature)
        .ok()
        .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
        .ok_or_else(|| bad("signature is not 64 bytes of hex"))?;
    device_key.verify(&media_seal_message(seal), &sig).map_err(|_| bad("the device's signature does not verify"))
}

/// The agent's side: frames go in as they are sent; a seal comes out when asked (or when a
/// seal's worth of frames is waiting).
#[derive(Debug)]
pub struct SealChain {
    session_id: String,
    seq: u64,
    prev: String,
    pending: Vec<SealedFrame>,
}

impl SealChain {
    pub fn new(session_id: &str) -> SealChain {
        SealChain { session_id: session_id.to_owned(), seq: 0, prev: String::new(), pending: Vec::new() }
    }

    /// Notes a frame as sent; `true` when a seal is full and should be taken now.
    pub fn push(&mut self, ts: u32, data: &[u8]) -> bool {
        self.pending.push(SealedFrame { ts, sha256: frame_hash(data) });
        self.pending.len() >= MAX_SEALED_FRAMES
    }

    /// The next seal over the frames since the last one, signed with `sign` (which returns the
    /// hex signature of the message); `None` when no frame is waiting.
    pub fn take(&mut self, sign: impl FnOnce(&[u8]) -> String) -> Option<MediaSeal> {
        if self.pending.is_empty() {
            return None;
        }
        let mut seal = MediaSeal {
            session_id: self.session_id.clone(),
            seq: self.seq,
            prev: self.prev.clone(),
            frames: std::mem::take(&mut self.pending),
            signature: String::new(),
        };
        seal.signature = sign(&media_seal_message(&seal));
        self.seq += 1;
        self.prev = seal_head(&seal);
        Some(seal)
    }
}
