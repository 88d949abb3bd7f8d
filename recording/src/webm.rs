//! What an auditor plays and exports, derived from verified chunks: the screen as WebM/VP8
//! (R27; the agent's own frames, muxed without transcoding, with Cues and Duration so browsers
//! seek and ffprobe reports the length) and the timeline as JSON lines with each entry's place
//! in the video. Both are functions of the chunks alone, so `verify --dir` can recompute them
//! and refuse an exported copy that was edited.

use std::io::Cursor;

use serde::Serialize;
use sightline_core::recording::{Chunk, TimelineEntry, vp8};
use webm::mux::{SegmentBuilder, SegmentMode, VideoCodecId, Writer};

#[derive(Debug, thiserror::Error)]
pub enum WebmError {
    #[error("the recording holds no keyframe: there is no picture to show")]
    NoKeyframe,
    #[error("WebM muxer: {0}")]
    Mux(String),
}

/// Where the video starts on the relay's clock: the arrival of its first keyframe.
pub fn video_start_ms(chunks: &[Chunk]) -> Option<u64> {
    chunks.iter().flat_map(Chunk::frames).find(|f| f.keyframe).map(|f| f.arrival_ms)
}

/// The screen video of a recording.
pub fn webm(chunks: &[Chunk]) -> Result<Vec<u8>, WebmError> {
    let mut frames = chunks.iter().flat_map(Chunk::frames).skip_while(|f| !f.keyframe).peekable();
    let first = frames.peek().ok_or(WebmError::NoKeyframe)?;
    let (width, height) = vp8::keyframe_size(&first.data).ok_or(WebmError::NoKeyframe)?;
    let mux = |e: webm::mux::Error| WebmError::Mux(format!("{e:?}"));
    let writer = Writer::new(Cursor::new(Vec::new()));
    let builder = SegmentBuilder::new(writer).map_err(mux)?.set_mode(SegmentMode::File).map_err(mux)?;
    let builder = builder.set_writing_app("Sightline relay").map_err(mux)?;
    let (builder, track) = builder.add_video_track(width, height, VideoCodecId::VP8, None).map_err(mux)?;
    let mut segment = builder.build();
    // RTP time (90 kHz) since the first keyframe, unwrapped across the 32-bit wrap.
    let mut last_ts = first.ts;
    let mut elapsed: u64 = 0;
    let mut written = 0u64;
    for frame in frames {
        let step = frame.ts.wrapping_sub(last_ts);
        if written > 0 && (step == 0 || step > u32::MAX / 2) {
            continue; // not after the previous frame: a duplicate or a stray
        }
        elapsed += u64::from(step);
        last_ts = frame.ts;
        let ns = elapsed * 1_000_000_000 / 90_000;
        segment.add_frame(track, &frame.data, ns, frame.keyframe).map_err(mux)?;
        written += 1;
    }
    let writer = segment.finalize(None).map_err(|_| WebmError::Mux("finalizing the segment failed".into()))?;
    Ok(writer.into_inner().into_inner())
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
