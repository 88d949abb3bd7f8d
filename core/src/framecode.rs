//! The frame code: a frame counter and a capture time written into the pixels of a frame.
//!
//! Layout (design.md, "Media"): a row of 64 blocks of 16x16 px from pixel (0,0); block `i` is
//! white for bit 1 and black for bit 0, most significant bit first. Bits 0-31 hold the frame
//! counter, bits 32-63 the capture time as Unix milliseconds modulo 2^32. A reader samples the
//! centre pixel of each block and thresholds luma at 128, which survives VP8 at any sane bitrate.

/// Side of one block in pixels.
pub const BLOCK: u32 = 16;
/// Number of blocks (bits) in the code.
pub const BITS: u32 = 64;
/// Width of the strip the code occupies; frames narrower than this cannot carry it.
pub const STRIP_WIDTH: u32 = BLOCK * BITS;

/// What a frame code carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStamp {
    /// Counter of captured frames since the source started.
    pub counter: u32,
    /// Capture time, Unix milliseconds modulo 2^32.
    pub capture_ms: u32,
}

impl FrameStamp {
    fn bits(self) -> u64 {
        (u64::from(self.counter) << 32) | u64::from(self.capture_ms)
    }

    /// Whether bit `i` (0 = first block on the left) is set.
    pub fn bit(self, i: u32) -> bool {
        (self.bits() >> (BITS - 1 - i)) & 1 == 1
    }
}

/// Paints the code into a BGRA (or RGBA: the code is grey) frame buffer with `stride` bytes per row.
///
/// Returns `false` and paints nothing when the frame is too small to carry the code.
pub fn paint(frame: &mut [u8], stride: usize, height: u32, stamp: FrameStamp) -> bool {
    if height < BLOCK || stride < STRIP_WIDTH as usize * 4 || frame.len() < stride * BLOCK as usize {
        return false;
    }
    for row in frame.chunks_exact_mut(stride).take(BLOCK as usize) {
        for i in 0..BITS {
            let value = if stamp.bit(i) { 255 } else { 0 };
            let start = (i * BLOCK * 4) as usize;
            row[start..start + (BLOCK * 4) as usize].fill(value);
        }
    }
    true
}

/// Reads the code back through `luma(x, y)`, which returns the brightness (0-255) of a pixel.
pub fn read(mut luma: impl FnMut(u32, u32) -> u8) -> FrameStamp {
    let mut bits = 0u64;
    for i in 0..BITS {
        let bit = luma(i * BLOCK + BLOCK / 2, BLOCK / 2) >= 128;
        bits = (bits << 1) | u64::from(bit);
    }
    FrameStamp { counter: (bits >> 32) as u32, capture_ms: bits as u32 }
}

/// Reads the code from an I420 (planar YUV) luma plane.
pub fn read_luma_plane(y_plane: &[u8], y_stride: usize) -> Option<FrameStamp> {
    if y_stride < STRIP_WIDTH as usize || y_plane.len() < y_stride * BLOCK as usize {
        return None;
    }
    Some(read(|x, y| y_plane[y as usize * y_stride + x as usize]))
}

/// Milliseconds elapsed from `from` to `to` on the wrapped 32-bit millisecond clock.
pub fn elapsed_ms(from: u32, to: u32) -> u32 {
    to.wrapping_sub(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(stamp: FrameStamp) -> FrameStamp {
        let (w, h) = (1280usize, 720u32);
        let mut frame = vec![90u8; w * 4 * h as usize];
        assert!(paint(&mut frame, w * 4, h, stamp));
        read(|x, y| frame[(y as usize * w + x as usize) * 4])
    }

    #[test]
    fn paints_and_reads_back() {
        for stamp in [
            FrameStamp { counter: 0, capture_ms: 0 },
            FrameStamp { counter: 1, capture_ms: 1 },
            FrameStamp { counter: 0xDEAD_BEEF, capture_ms: 0x1234_5678 },
            FrameStamp { counter: u32::MAX, capture_ms: u32::MAX },
        ] {
            assert_eq!(round_trip(stamp), stamp);
        }
    }

    #[test]
    fn first_block_is_most_significant_bit_of_counter() {
        let stamp = FrameStamp { counter: 0x8000_0000, capture_ms: 1 };
        assert!(stamp.bit(0));
        assert!(!stamp.bit(1));
        assert!(stamp.bit(63));
    }

    #[test]
    fn survives_noise_below_threshold() {
        let stamp = FrameStamp { counter: 4242, capture_ms: 987_654 };
        let (w, h) = (1280usize, 720u32);
        let mut frame = vec![0u8; w * 4 * h as usize];
        paint(&mut frame, w * 4, h, stamp);
        // Lossy coding blurs edges and shifts levels; the centre sample must still read right.
        let noisy = |x: u32, y: u32| {
            let v = frame[(y as usize * w + x as usize) * 4];
            if v > 128 { v - 60 } else { v + 60 }
        };
        assert_eq!(read(noisy), stamp);
    }

    #[test]
    fn refuses_frames_too_small() {
        let mut frame = vec![0u8; 512 * 4 * 720];
        assert!(!paint(&mut frame, 512 * 4, 720, FrameStamp { counter: 1, capture_ms: 1 }));
        assert_eq!(read_luma_plane(&[0u8; 100], 10), None);
    }

    #[test]
    fn elapsed_wraps() {
        assert_eq!(elapsed_ms(u32::MAX - 1, 3), 5);
        assert_eq!(elapsed_ms(10, 25), 15);
    }
}
