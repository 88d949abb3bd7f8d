//! X11 screen capture of the root window (the display named by `DISPLAY`).
//!
//! Uses core `GetImage`: it needs no shared memory and works against any X server, including
//! Xvfb in tests. Unchanged frames are detected by comparing with the previous frame and skipped,
//! so an idle desktop costs no encoding and no bandwidth.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

use sightline_core::mask::{Masks, Window as MaskWindow};

use super::windows::WindowTracker;
use super::{CaptureError, Frame, FrameSource};

/// Captures tried while windows keep appearing or vanishing before a frame is skipped: a frame
/// whose layout is unknown cannot be masked, so it is never sent.
const LAYOUT_TRIES: usize = 3;

/// Captures the root window of one X screen.
pub struct X11Source {
    conn: RustConnection,
    root: Window,
    width: u32,
    height: u32,
    /// The previous frame, to skip unchanged ones.
    last: Vec<u8>,
    /// Windows, when mask rules need them.
    tracker: Option<WindowTracker>,
    /// The tracker's generation at the previous frame.
    last_generation: u64,
}

impl std::fmt::Debug for X11Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Source").field("width", &self.width).field("height", &self.height).finish_non_exhaustive()
    }
}

impl X11Source {
    /// Connects to `display`, or to `DISPLAY` when `None`.
    pub fn open(display: Option<&str>) -> Result<Self, CaptureError> {
        let name = display.map(str::to_owned).or_else(|| std::env::var("DISPLAY").ok()).unwrap_or_default();
        let (conn, screen_num) = x11rb::connect(display)
            .map_err(|e| CaptureError::Connect { display: name.clone(), detail: e.to_string() })?;
        let screen = &conn.setup().roots[screen_num];
        let (root, depth) = (screen.root, screen.root_depth);
        let bpp = conn.setup().pixmap_formats.iter().find(|f| f.depth == depth).map(|f| f.bits_per_pixel);
        if !(depth == 24 || depth == 32) || bpp != Some(32) {
            return Err(CaptureError::Format(format!(
                "depth {depth}, {bpp:?} bits per pixel; need 24/32-bit true colour"
            )));
        }
        if conn.setup().image_byte_order != x11rb::protocol::xproto::ImageOrder::LSB_FIRST {
            return Err(CaptureError::Format("big-endian image byte order".into()));
        }
        let (width, height) = (u32::from(screen.width_in_pixels) & !1, u32::from(screen.height_in_pixels) & !1);
        Ok(X11Source { conn, root, width, height, last: Vec::new(), tracker: None, last_generation: 0 })
    }
}

impl FrameSource for X11Source {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn track_windows(&mut self, masks: Masks) -> Result<(), CaptureError> {
        self.tracker = Some(WindowTracker::new(&self.conn, self.root, masks)?);
        Ok(())
    }

    fn capture(&mut self, now_ms: u64) -> Result<Option<Frame>, CaptureError> {
        if self.tracker.is_none() {
            let data = self.image()?;
            return Ok(self.changed(data, 0).map(|bgra| self.frame(bgra, now_ms, None)));
        }
        for _ in 0..LAYOUT_TRIES {
            let tracker = self.tracker.as_mut().expect("checked above");
            tracker.absorb(&self.conn)?;
            tracker.refresh(&self.conn)?;
            let before: Vec<MaskWindow> = tracker.windows().cloned().collect();
            let data = self.image()?;
            // Changes the server made before it took the image are queued before its reply.
            let tracker = self.tracker.as_mut().expect("checked above");
            tracker.absorb(&self.conn)?;
            if tracker.dirty() {
                tracing::debug!("the window layout changed during capture; capturing again");
                continue;
            }
            // Every position a selected window had since just before the image (and a little
            // longer: see `WindowTracker::recent`), the one it moved to included.
            let windows = tracker.image_layout(before);
            let generation = tracker.generation;
            return Ok(self.changed(data, generation).map(|bgra| self.frame(bgra, now_ms, Some(windows))));
        }
        tracing::debug!("windows kept appearing or vanishing; frame skipped");
        Ok(None)
    }
}

impl X11Source {
    fn image(&self) -> Result<Vec<u8>, CaptureError> {
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, 0, 0, self.width as u16, self.height as u16, !0)
            .map_err(|e| CaptureError::X11(e.to_string()))?
            .reply()
            .map_err(|e| CaptureError::X11(e.to_string()))?;
        let stride = self.width as usize * 4;
        if reply.data.len() < stride * self.height as usize {
            return Err(CaptureError::X11(format!("short image: {} bytes", reply.data.len())));
        }
        Ok(reply.data)
    }

    /// The image, unless both it and the window layout are as in the previous frame.
    fn changed(&mut self, data: Vec<u8>, generation: u64) -> Option<Vec<u8>> {
        if data == self.last && generation == self.last_generation {
            return None;
        }
        self.last.clone_from(&data);
        self.last_generation = generation;
        Some(data)
    }

    fn frame(&self, bgra: Vec<u8>, now_ms: u64, windows: Option<Vec<MaskWindow>>) -> Frame {
        // ZPixmap at depth 24 is B, G, R, unused on little-endian servers: BGRA with junk alpha,
        // which the encoder ignores.
        Frame {
            width: self.width,
            height: self.height,
            stride: self.width as usize * 4,
            bgra,
            captured_at_ms: now_ms,
            windows,
        }
    }
}
