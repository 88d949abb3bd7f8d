//! VP8 decoder over libvpx, to check what reaches the far end: integration tests and benchmarks
//! decode received frames and read the frame code back. The agent itself never decodes.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_uint};
use std::ptr;

use vpx_sys as vpx;

use crate::encoder::{EncoderError, vpx_check};

/// A decoded frame's luma plane (enough to read the frame code).
#[derive(Debug, Clone)]
pub struct DecodedLuma {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub y: Vec<u8>,
}

pub struct Vp8Decoder {
    // Boxed: libvpx keeps the context by address.
    ctx: Box<vpx::vpx_codec_ctx_t>,
}

// SAFETY: the context is owned exclusively and only used through `&mut self`.
unsafe impl Send for Vp8Decoder {}

impl std::fmt::Debug for Vp8Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Decoder").finish_non_exhaustive()
    }
}

impl Vp8Decoder {
    pub fn new() -> Result<Self, EncoderError> {
        // SAFETY: zeroed config means defaults; the result is checked.
        unsafe {
            let mut ctx: Box<vpx::vpx_codec_ctx_t> = Box::new(MaybeUninit::zeroed().assume_init());
            let cfg: vpx::vpx_codec_dec_cfg_t = MaybeUninit::zeroed().assume_init();
            vpx_check(
                "dec_init",
                None,
                vpx::vpx_codec_dec_init_ver(
                    &mut *ctx,
                    vpx::vpx_codec_vp8_dx(),
                    &cfg,
                    0,
                    vpx::VPX_DECODER_ABI_VERSION as c_int,
                ),
            )?;
            Ok(Vp8Decoder { ctx })
        }
    }

    /// Decodes one complete frame; returns the luma plane of each picture it produced.
    pub fn decode(&mut self, frame: &[u8]) -> Result<Vec<DecodedLuma>, EncoderError> {
        // SAFETY: `frame` outlives the call; images returned by get_frame are valid until the
        // next decode call and are copied before that.
        unsafe {
            let err = vpx::vpx_codec_decode(&mut *self.ctx, frame.as_ptr(), frame.len() as c_uint, ptr::null_mut(), 0);
            vpx_check("codec_decode", Some(&mut self.ctx), err)?;
            let mut out = Vec::new();
            let mut iter: vpx::vpx_codec_iter_t = ptr::null();
            loop {
                let img = vpx::vpx_codec_get_frame(&mut *self.ctx, &mut iter);
                if img.is_null() {
                    break;
                }
                let img = &*img;
                let (width, height, stride) = (img.d_w, img.d_h, img.stride[0] as usize);
                let y = std::slice::from_raw_parts(img.planes[0], stride * height as usize).to_vec();
                out.push(DecodedLuma { width, height, stride, y });
            }
            Ok(out)
        }
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe {
            vpx::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use sightline_core::framecode::{self, FrameStamp};

    use super::*;
    use crate::capture::FrameSource;
    use crate::capture::synthetic::Synthetic;
    use crate::encoder::{EncoderConfig, Vp8Encoder};

    #[test]
    fn frame_code_survives_encode_and_decode() {
        let mut source = Synthetic::new(1280, 720);
        let mut enc = Vp8Encoder::new(EncoderConfig {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2500,
            cpu_used: 12,
            threads: 2,
        })
        .unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        for i in 0..10u32 {
            let frame = source.capture(5_000 + u64::from(i) * 33).unwrap().unwrap();
            for encoded in enc.encode(&frame.bgra, frame.stride, frame.captured_at_ms as i64, false).unwrap() {
                for luma in dec.decode(&encoded.data).unwrap() {
                    assert_eq!((luma.width, luma.height), (1280, 720));
                    let stamp = framecode::read_luma_plane(&luma.y, luma.stride).unwrap();
                    assert_eq!(stamp, FrameStamp { counter: i, capture_ms: 5_000 + i * 33 });
                }
            }
        }
    }
}
