//! Screen sources. Each yields BGRA frames; masking and encoding happen downstream.

pub mod synthetic;
pub mod windows;
pub mod x11;

use sightline_core::mask::Masks;

/// One captured frame in BGRA, top row first.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Bytes per row.
    pub stride: usize,
    pub bgra: Vec<u8>,
    /// Unix milliseconds at capture.
    pub captured_at_ms: u64,
    /// The windows on the screen while this frame was taken (every position a window selected by
    /// a mask rule had), when the source tracks them.
    pub windows: Option<Vec<sightline_core::mask::Window>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot connect to X display {display:?}: {detail}")]
    Connect { display: String, detail: String },
    #[error("X11 request failed: {0}")]
    X11(String),
    #[error("unsupported screen format: {0}")]
    Format(String),
    #[error("this screen source has no windows, so window mask rules cannot be applied")]
    NoWindows,
}

/// A source of screen frames, polled by the capture loop at its own pace.
pub trait FrameSource: Send {
    /// Size of the frames this source yields.
    fn size(&self) -> (u32, u32);
    /// Captures a frame now. `Ok(None)` means the screen has not changed since the last frame,
    /// so there is nothing to encode.
    fn capture(&mut self, now_ms: u64) -> Result<Option<Frame>, CaptureError>;
    /// Starts tracking windows for `masks`; every frame from now on carries its windows.
    fn track_windows(&mut self, _masks: Masks) -> Result<(), CaptureError> {
        Err(CaptureError::NoWindows)
    }
}

/// Which source to capture from, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// A moving test scene with the frame code; for tests, demos and latency measurement.
    Synthetic,
    /// The X11 display named by `DISPLAY`.
    X11,
}

/// Opens the chosen source.
pub fn open(kind: SourceKind, synthetic_size: (u32, u32)) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(match kind {
        SourceKind::Synthetic => Box::new(synthetic::Synthetic::new(synthetic_size.0, synthetic_size.1)),
        SourceKind::X11 => Box::new(x11::X11Source::open(None)?),
    })
}
