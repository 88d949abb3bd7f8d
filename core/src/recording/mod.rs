//! A recording's evidence (R27, R28): what a chunk holds, the signed manifest that chains the
//! chunks, the endpoint's seals over the frames it sent, and the verifier that checks all three.
//!
//! A recording is a directory of chunks (each about a second of the session: its VP8 frames and
//! the timeline entries of that second) and a manifest. Every manifest line is signed by the
//! relay node's key and names the hash of the line before it; chunk lines carry the SHA-256 of
//! the chunk. The agent hashes every encoded frame it sends and signs the chain of those hashes
//! with its device key (a seal, about once a second); the seals travel in the timeline, so a
//! frame the relay altered, injected or reordered fails verification even though the relay
//! signs the manifest, and a frame lost in transit shows as a gap. Nothing here does IO: the
//! relay writes, the CLI verifies and exports, and an auditor's browser could verify too.

mod chunk;
mod manifest;
mod seal;
mod verify;
mod video;
pub mod vp8;

pub use chunk::{Chunk, ChunkItem, MAGIC, MAX_ITEM_BYTES, RecordedFrame, TimelineEntry};
pub use manifest::{
    Continuation, Gap, ManifestBody, ManifestKey, ManifestLine, ManifestWriter, verifying_key_from_note,
};
pub use seal::{SealChain, frame_hash, seal_head, verify_seal};
pub use verify::{
    GapFinding, MAX_UNSEALED_TAIL_MS, Options, RecordingReport, Verified, check_continuation, verify, verify_with,
};
pub use video::{ShownFrame, TimelineLine, shown_frames, timeline_jsonl, video_start_ms};

/// Why a recording is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    #[error("chunk {chunk}: malformed: {why}")]
    MalformedChunk { chunk: u64, why: String },
    #[error("manifest line {line}: {why}")]
    Manifest { line: u64, why: String },
    #[error("manifest line {line}: the relay's signature does not verify")]
    BadManifestSignature { line: u64 },
    #[error("chunk {chunk} is missing")]
    MissingChunk { chunk: u64 },
    #[error("chunk {chunk} is not in the manifest (added)")]
    ExtraChunk { chunk: u64 },
    #[error("chunk {chunk}: SHA-256 {found} differs from the manifest's {expected}")]
    ChunkHash { chunk: u64, expected: String, found: String },
    #[error("seal {seq}: {why}")]
    Seal { seq: u64, why: String },
    #[error("chunk {chunk}: frame at RTP time {ts} differs from the frame the endpoint signed")]
    FrameAltered { chunk: u64, ts: u32 },
    #[error("chunk {chunk}: frame at RTP time {ts} was never signed by the endpoint (injected)")]
    FrameNotSealed { chunk: u64, ts: u32 },
    #[error("chunk {chunk}: frame at RTP time {ts} is out of the order the endpoint sent it in")]
    FrameReordered { chunk: u64, ts: u32 },
    #[error("malformed key: {0}")]
    MalformedKey(String),
    #[error(
        "{frames} frames the endpoint sealed (RTP time {first_ts} to {last_ts}) are missing, and no record of the recorder explains them: removed on the way?"
    )]
    UnexplainedGap { frames: u64, first_ts: u32, last_ts: u32 },
    #[error("this recording does not continue the one given before it: {0}")]
    NotAContinuation(String),
}
