//! What a verified recording shows: its frames on the video's own clock, and its timeline with
//! each entry's place in the video. The relay's export muxes these frames into WebM; the
//! auditor's browser plays them; both place the timeline the same way.

use serde::Serialize;

use super::chunk::{Chunk, TimelineEntry};

/// One frame as shown: its time in the video (ms from the first keyframe) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownFrame<'a> {
    pub ms: u64,
    /// The same time in 90 kHz units (what a muxer writes in nanoseconds without rounding twice).
    pub ticks: u64,
    pub keyframe: bool,
    pub data: &'a [u8],
}

/// Where the video starts on the relay's clock: the arrival of its first keyframe.
pub fn video_start_ms(chunks: &[Chunk]) -> Option<u64> {
    chunks.iter().flat_map(Chunk::frames).find(|f| f.keyframe).map(|f| f.arrival_ms)
}

/// The frames from the first keyframe on, timed by their RTP timestamps (90 kHz) unwrapped
/// across the 32-bit wrap. A frame not after the one before it (a duplicate or a stray) is left
/// out, as a player would skip it.
pub fn shown_frames(chunks: &[Chunk]) -> Vec<ShownFrame<'_>> {
    let mut frames = chunks.iter().flat_map(Chunk::frames).skip_while(|f| !f.keyframe);
    let Some(first) = frames.next() else { return Vec::new() };
    let mut shown = vec![ShownFrame { ms: 0, ticks: 0, keyframe: first.keyframe, data: &first.data }];
    let (mut last_ts, mut ticks) = (first.ts, 0u64);
    for frame in frames {
        let step = frame.ts.wrapping_sub(last_ts);
        if step == 0 || step > u32::MAX / 2 {
            continue;
        }
        ticks += u64::from(step);
        last_ts = frame.ts;
        shown.push(ShownFrame { ms: ticks / 90, ticks, keyframe: frame.keyframe, data: &frame.data });
    }
    shown
}

/// One timeline line as exported and shown beside the player.
#[derive(Debug, Serialize)]
pub struct TimelineLine<'a> {
    /// Position in the video (ms), or where the entry falls before the first picture (negative).
    pub video_ms: i64,
    #[serde(flatten)]
    pub entry: &'a TimelineEntry,
}

/// The timeline as JSON lines, in time order (stable for equal times).
pub fn timeline_jsonl(chunks: &[Chunk]) -> String {
    let start = video_start_ms(chunks).unwrap_or(0) as i64;
    let mut entries: Vec<&TimelineEntry> = chunks.iter().flat_map(Chunk::timeline).collect();
    entries.sort_by_key(|e| e.ts_ms());
    let mut out = String::new();
    for entry in entries {
        let line = TimelineLine { video_ms: entry.ts_ms() as i64 - start, entry };
        out.push_str(&serde_json::to_string(&line).expect("timeline lines serialise"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{ChunkItem, RecordedFrame};

    fn frame(ts: u32, keyframe: bool) -> ChunkItem {
        ChunkItem::Frame(RecordedFrame { ts, arrival_ms: u64::from(ts) / 90, keyframe, data: vec![ts as u8] })
    }

    #[test]
    fn frames_start_at_the_first_keyframe_and_run_on_across_the_rtp_wrap() {
        let start = u32::MAX - 4_500;
        let chunk = Chunk {
            items: vec![
                frame(start - 9_000, false), // before the first keyframe: no picture yet
                frame(start, true),
                frame(start, false),                      // the same time again: left out
                frame(start.wrapping_add(9_000), false),  // past the wrap
                frame(start.wrapping_sub(90_000), false), // backwards: a stray
                frame(start.wrapping_add(18_000), true),
            ],
        };
        let shown: Vec<(u64, bool)> =
            shown_frames(std::slice::from_ref(&chunk)).iter().map(|f| (f.ms, f.keyframe)).collect();
        assert_eq!(shown, [(0, true), (100, false), (200, true)]);
    }
}
