//! X11 screen capture of the root window (the display named by `DISPLAY`).
//!
//! Uses core `GetImage`: it needs no shared memory and works against any X server, including
//! Xvfb in tests. Unchanged frames are detected by comparing with the previous frame and skipped,
//! so an idle desktop costs no encoding and no bandwidth.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat, Window};
use x11rb::rust_connection::RustConnection;

use super::{CaptureError, Frame, FrameSource};

/// Captures the root window of one X screen.
pub struct X11Source {
    conn: RustConnection,
    root: Window,
    width: u32,
    height: u32,
    /// The previous frame, to skip unchanged ones.
    last: Vec<u8>,
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
        Ok(X11Source { conn, root, width, height, last: Vec::new() })
    }
}

impl FrameSource for X11Source {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn capture(&mut self, now_ms: u64) -> Result<Option<Frame>, CaptureError> {
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
        if reply.data == self.last {
            return Ok(None);
        }
        self.last.clone_from(&reply.data);
        // ZPixmap at depth 24 is B, G, R, unused on little-endian servers: BGRA with junk alpha,
        // which the encoder ignores.
        Ok(Some(Frame { width: self.width, height: self.height, stride, bgra: reply.data, captured_at_ms: now_ms }))
    }
}
