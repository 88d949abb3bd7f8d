//! The screen of an exported recording as WebM/VP8 (R27; the agent's own frames, timed by
//! `sightline_core::recording::shown_frames`, muxed without transcoding, with Cues and Duration so
//! browsers seek and ffprobe reports the length). A function of the chunks alone, so `verify
//! --dir` can recompute it and refuse an exported copy that was edited, by what it shows
//! (`content`: the codec, the picture size, and every frame with its time and keyframe flag),
//! because libwebm gives each track a random id and so never writes the same file twice.

use std::io::Cursor;

use sightline_core::recording::{Chunk, shown_frames, vp8};
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

/// The screen video of a recording.
pub fn webm(chunks: &[Chunk]) -> Result<Vec<u8>, WebmError> {
    let frames = shown_frames(chunks);
    let first = frames.first().ok_or(WebmError::NoKeyframe)?;
    let (width, height) = vp8::keyframe_size(first.data).ok_or(WebmError::NoKeyframe)?;
    let mux = |e: webm::mux::Error| WebmError::Mux(format!("{e:?}"));
    let writer = Writer::new(Cursor::new(Vec::new()));
    let builder = SegmentBuilder::new(writer).map_err(mux)?.set_mode(SegmentMode::File).map_err(mux)?;
    let builder = builder.set_writing_app("Sightline relay").map_err(mux)?;
    let (builder, track) = builder.add_video_track(width, height, VideoCodecId::VP8, None).map_err(mux)?;
    let mut segment = builder.build();
    for frame in &frames {
        let ns = frame.ticks * 1_000_000_000 / 90_000;
        segment.add_frame(track, frame.data, ns, frame.keyframe).map_err(mux)?;
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
