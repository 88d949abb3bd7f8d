//! A synthetic screen: a moving scene with the frame code (counter and capture time) in its top
//! strip, so tests and benchmarks can read both back from decoded video.

use sightline_core::framecode::{self, FrameStamp};

use super::{CaptureError, Frame, FrameSource};

/// Moving test scene.
#[derive(Debug)]
pub struct Synthetic {
    width: u32,
    height: u32,
    counter: u32,
    /// The static background, drawn once: each frame starts as a copy of it, so the source costs
    /// a memcpy per frame and benchmarks measure the pipeline, not the test pattern.
    background: Vec<u8>,
}

impl Synthetic {
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        let stride = w * 4;
        let mut background = vec![0u8; stride * h];
        // A dark desktop-like gradient: flat enough to look like a screen rather than noise.
        for (y, row) in background.chunks_exact_mut(stride).enumerate() {
            let shade = 40 + (y * 60 / h.max(1)) as u8;
            for px in row.chunks_exact_mut(4) {
                px.copy_from_slice(&[shade, shade / 2 + 20, 30, 255]);
            }
        }
        Synthetic { width, height, counter: 0, background }
    }
}

impl FrameSource for Synthetic {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn capture(&mut self, now_ms: u64) -> Result<Option<Frame>, CaptureError> {
        let (w, h) = (self.width as usize, self.height as usize);
        let stride = w * 4;
        let mut bgra = self.background.clone();
        // A bright square sweeping across: enough motion to exercise the encoder.
        let side = (h / 4).max(8);
        let span = w.saturating_sub(side).max(1);
        let x0 = (self.counter as usize * 8) % span;
        let y0 = h / 2 - side / 2;
        for row in bgra.chunks_exact_mut(stride).skip(y0).take(side) {
            for px in row[x0 * 4..(x0 + side) * 4].chunks_exact_mut(4) {
                px.copy_from_slice(&[60, 180, 240, 255]);
            }
        }
        let stamp = FrameStamp { counter: self.counter, capture_ms: now_ms as u32 };
        framecode::paint(&mut bgra, stride, self.height, stamp);
        self.counter = self.counter.wrapping_add(1);
        Ok(Some(Frame { width: self.width, height: self.height, stride, bgra, captured_at_ms: now_ms, windows: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_counter_and_time() {
        let mut src = Synthetic::new(1280, 720);
        for expected in 0..3u32 {
            let frame = src.capture(1_000 + u64::from(expected)).unwrap().unwrap();
            let stamp = framecode::read(|x, y| frame.bgra[y as usize * frame.stride + x as usize * 4]);
            assert_eq!(stamp, FrameStamp { counter: expected, capture_ms: 1_000 + expected });
        }
    }
}
