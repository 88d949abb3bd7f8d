//! What an auditor plays and exports, derived from verified chunks: the screen as WebM/VP8
//! (R27; the agent's own frames, muxed without transcoding, with Cues and Duration so browsers
//! seek and ffprobe reports the length) and the timeline as JSON lines with each entry's place
//! in the video. Both are functions of the chunks alone, so `verify --dir` can recompute them
//! and refuse an exported copy that was edited: the timeline byte for byte, the video by what it
//! shows (`content`: the codec, the picture size, and every frame with its time and keyframe
//! flag), because libwebm gives each track a random id and so never writes the same file twice.

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
    #[error("cannot read the WebM: {0}")]
    Unreadable(String),
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

/// What a WebM shows: its codec, picture size and duration, and every frame of its video track
/// with its time (ms) and whether it is a keyframe. Read with `webm-iterable`.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub codec: Option<String>,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub duration: Option<f64>,
    pub frames: Vec<ShownFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownFrame {
    pub ms: i64,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Reads what `bytes`, a WebM, shows.
pub fn content(bytes: &[u8]) -> Result<Content, WebmError> {
    use webm_iterable::WebmIterator;
    use webm_iterable::matroska_spec::{MatroskaSpec, SimpleBlock};
    let bad = |why: String| WebmError::Unreadable(why);
    let mut reader = Cursor::new(bytes);
    let mut shown = Content { codec: None, width: None, height: None, duration: None, frames: Vec::new() };
    let mut cluster_ms: i64 = 0;
    for tag in WebmIterator::new(&mut reader, &[]) {
        match tag.map_err(|e| bad(e.to_string()))? {
            MatroskaSpec::CodecID(codec) => shown.codec = Some(codec),
            MatroskaSpec::PixelWidth(w) => shown.width = Some(w),
            MatroskaSpec::PixelHeight(h) => shown.height = Some(h),
            MatroskaSpec::Duration(d) => shown.duration = Some(d),
            MatroskaSpec::Timestamp(t) => cluster_ms = i64::try_from(t).map_err(|_| bad("cluster time".into()))?,
            tag @ MatroskaSpec::SimpleBlock(_) => {
                let block = SimpleBlock::try_from(&tag).map_err(|e| bad(e.to_string()))?;
                shown.frames.push(ShownFrame {
                    ms: cluster_ms + i64::from(block.timestamp),
                    keyframe: block.keyframe,
                    data: block.raw_frame_data().to_vec(),
                });
            }
            _ => {}
        }
    }
    Ok(shown)
}

impl Content {
    /// The first way `self` differs from `other`, for people; `None` if they show the same.
    pub fn difference(&self, other: &Content) -> Option<String> {
        if (&self.codec, self.width, self.height) != (&other.codec, other.width, other.height) {
            return Some(format!(
                "codec and size {:?} {:?}x{:?}, not {:?} {:?}x{:?}",
                self.codec, self.width, self.height, other.codec, other.width, other.height
            ));
        }
        if self.duration != other.duration {
            return Some(format!("duration {:?}, not {:?}", self.duration, other.duration));
        }
        if let Some(n) = self.frames.iter().zip(&other.frames).position(|(a, b)| a != b) {
            return Some(format!("frame {n} (at {} ms) differs", self.frames[n].ms));
        }
        (self.frames.len() != other.frames.len())
            .then(|| format!("{} frames, not {}", self.frames.len(), other.frames.len()))
    }
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
