//! One chunk of a recording: VP8 frames and timeline entries, in the order the recorder took
//! them, in a small binary framing (`MAGIC`, then items of tag, length and body).
//!
//! A frame item is its RTP timestamp (which the relay forwards unchanged, so it names the frame
//! in the endpoint's seals), the relay's arrival time, a keyframe flag and the frame's bytes. A
//! timeline item is one JSON entry. Decoding is strict: a chunk either decodes whole or is
//! refused, so two readers can never see different contents in the same bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sightline_proto::channel::MediaSeal;

/// What every chunk starts with.
pub const MAGIC: &[u8] = b"SLREC1\n";
/// Largest item accepted when decoding (a 4K keyframe is well below this).
pub const MAX_ITEM_BYTES: usize = 16 << 20;

const TAG_FRAME: u8 = 1;
const TAG_ENTRY: u8 = 2;
const FRAME_HEADER: usize = 4 + 8 + 1;

/// One encoded VP8 frame as the relay received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFrame {
    /// RTP timestamp (90 kHz).
    pub ts: u32,
    /// Unix ms when the relay took the frame.
    pub arrival_ms: u64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// One line of a recording's timeline (R27): never keystroke contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TimelineEntry {
    /// A session event, as the audit log has it (consent with its signed receipt, levels,
    /// elevations and approvals, pauses, observers, the end and its reason).
    Event { ts_ms: u64, kind: String, outcome: String, actor: String, detail: String },
    /// A chat line, as the other side received it (R24).
    Chat { ts_ms: u64, from: String, text: String },
    /// Input the operator sent in one second: counts by kind, never contents.
    Input { ts_ms: u64, counts: BTreeMap<String, u32> },
    /// The endpoint's signature over the frames it sent.
    Seal { ts_ms: u64, seal: MediaSeal },
    /// The recorder's own state: writing stalled or recovered.
    Recorder { ts_ms: u64, state: String, detail: String },
    /// Frames the recorder did not take (lost on the way, arrived incomplete, sent while it
    /// waited for a keyframe or could not write), between the recorded frames at RTP times
    /// `after_ts` (none: the recording's start) and `before_ts` (none: its end). The relay's own
    /// account of a gap in the endpoint's sealed frames: verification accepts a missing sealed
    /// frame only inside such a record, and names the reason.
    Gap { ts_ms: u64, after_ts: Option<u32>, before_ts: Option<u32>, reason: String },
}

impl TimelineEntry {
    pub fn ts_ms(&self) -> u64 {
        match self {
            TimelineEntry::Event { ts_ms, .. }
            | TimelineEntry::Chat { ts_ms, .. }
            | TimelineEntry::Input { ts_ms, .. }
            | TimelineEntry::Seal { ts_ms, .. }
            | TimelineEntry::Recorder { ts_ms, .. }
            | TimelineEntry::Gap { ts_ms, .. } => *ts_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkItem {
    Frame(RecordedFrame),
    Entry(TimelineEntry),
}

/// A chunk's contents in the order they were taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    pub items: Vec<ChunkItem>,
}

impl Chunk {
    pub fn frames(&self) -> impl Iterator<Item = &RecordedFrame> {
        self.items.iter().filter_map(|i| match i {
            ChunkItem::Frame(f) => Some(f),
            ChunkItem::Entry(_) => None,
        })
    }

    pub fn timeline(&self) -> impl Iterator<Item = &TimelineEntry> {
        self.items.iter().filter_map(|i| match i {
            ChunkItem::Entry(e) => Some(e),
            ChunkItem::Frame(_) => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .items
            .iter()
            .map(|i| match i {
                ChunkItem::Frame(f) => 5 + FRAME_HEADER + f.data.len(),
                ChunkItem::Entry(_) => 256,
            })
            .sum();
        let mut out = Vec::with_capacity(MAGIC.len() + size);
        out.extend_from_slice(MAGIC);
        for item in &self.items {
            match item {
                ChunkItem::Frame(f) => {
                    out.push(TAG_FRAME);
                    out.extend_from_slice(&((FRAME_HEADER + f.data.len()) as u32).to_be_bytes());
                    out.extend_from_slice(&f.ts.to_be_bytes());
                    out.extend_from_slice(&f.arrival_ms.to_be_bytes());
                    out.push(u8::from(f.keyframe));
                    out.extend_from_slice(&f.data);
                }
                ChunkItem::Entry(e) => {
                    let json = serde_json::to_vec(e).expect("timeline entries serialise");
                    out.push(TAG_ENTRY);
                    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
                    out.extend_from_slice(&json);
                }
            }
        }
        out
    }

    /// Decodes chunk number `index` (the number only names the chunk in errors).
    pub fn decode(index: u64, bytes: &[u8]) -> Result<Chunk, super::RecordingError> {
        let bad = |why: String| super::RecordingError::MalformedChunk { chunk: index, why };
        let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("does not start with the chunk magic".into()))?;
        let mut items = Vec::new();
        while let Some((&tag, after)) = rest.split_first() {
            let (len, after) = after.split_first_chunk::<4>().ok_or_else(|| bad("truncated item length".into()))?;
            let len = u32::from_be_bytes(*len) as usize;
            if len > MAX_ITEM_BYTES {
                return Err(bad(format!("item of {len} bytes exceeds {MAX_ITEM_BYTES}")));
            }
            let (body, after) = after.split_at_checked(len).ok_or_else(|| bad("truncated item".into()))?;
            rest = after;
            items.push(match tag {
                TAG_FRAME => {
                    if body.len() < FRAME_HEADER {
                        return Err(bad("frame item shorter than its header".into()));
                    }
                    let keyframe = match body[12] {
                        0 => false,
                        1 => true,
                        other => return Err(bad(format!("keyframe flag {other}"))),
                    };
                    ChunkItem::Frame(RecordedFrame {
                        ts: u32::from_be_bytes(body[0..4].try_into().expect("4 bytes")),
                        arrival_ms: u64::from_be_bytes(body[4..12].try_into().expect("8 bytes")),
                        keyframe,
                        data: body[FRAME_HEADER..].to_vec(),
                    })
                }
                TAG_ENTRY => ChunkItem::Entry(
                    sightline_proto::strict::from_slice(body).map_err(|e| bad(format!("timeline entry: {e}")))?,
                ),
                other => return Err(bad(format!("unknown item tag {other}"))),
            });
        }
        Ok(Chunk { items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Chunk {
        Chunk {
            items: vec![
                ChunkItem::Entry(TimelineEntry::Event {
                    ts_ms: 1000,
                    kind: "session.granted".into(),
                    outcome: "success".into(),
                    actor: "user@pc".into(),
                    detail: "levels: view".into(),
                }),
                ChunkItem::Frame(RecordedFrame { ts: 90, arrival_ms: 1001, keyframe: true, data: vec![0x50, 1, 2, 3] }),
                ChunkItem::Entry(TimelineEntry::Chat { ts_ms: 1002, from: "op".into(), text: "hello".into() }),
                ChunkItem::Frame(RecordedFrame { ts: 3090, arrival_ms: 1034, keyframe: false, data: vec![0x51; 9] }),
            ],
        }
    }

    #[test]
    fn a_chunk_decodes_to_what_was_encoded() {
        let chunk = sample();
        let bytes = chunk.encode();
        assert_eq!(Chunk::decode(0, &bytes).unwrap(), chunk);
        assert_eq!(chunk.frames().count(), 2);
        assert_eq!(chunk.timeline().count(), 2);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_refused() {
        let bytes = sample().encode();
        for cut in [0, 3, MAGIC.len() + 2, bytes.len() - 1] {
            assert!(Chunk::decode(4, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut tagged = bytes.clone();
        tagged[MAGIC.len()] = 9;
        assert!(matches!(
            Chunk::decode(4, &tagged),
            Err(super::super::RecordingError::MalformedChunk { chunk: 4, .. })
        ));
        let mut huge = MAGIC.to_vec();
        huge.push(TAG_FRAME);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Chunk::decode(0, &huge).is_err());
        assert_eq!(Chunk::decode(0, MAGIC).unwrap(), Chunk::default());
    }
}
