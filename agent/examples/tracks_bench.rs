//! The cost of publishing two pictures (`cargo xtask bench`, R34, R36): a recorded session sends
//! the operator's picture (watermarked) and the recording's, each with its own VP8 encoder. Over
//! the same 1920x1080 synthetic frames this times, per captured frame, one encoder alone (what
//! one track cost before) against both tracks' work (a copy of the frame for the operator's
//! picture, the watermark, two encodes), and the watermark and the copy alone. Prints a summary and writes JSON to the file given as the first argument.

use std::time::{Duration, Instant};

use sightline_agent::capture::{self, SourceKind};
use sightline_agent::encoder::{EncoderConfig, Vp8Encoder};
use sightline_core::watermark::{Watermark, line};

const SCREEN: (u32, u32) = (1920, 1080);
const FRAMES: usize = 150;

fn config() -> EncoderConfig {
    // The agent's defaults (30 fps, 2500 kbit/s, cpu-used 12), one thread: the bench is pinned
    // to one core.
    EncoderConfig { width: SCREEN.0, height: SCREEN.1, fps: 30, bitrate_kbps: 2500, cpu_used: 12, threads: 1 }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: tracks_bench OUT.json");
    let mut source = capture::open(SourceKind::Synthetic, SCREEN).expect("synthetic source");
    let frames: Vec<_> = (0..FRAMES as u64)
        .map(|i| {
            loop {
                if let Some(f) = source.capture(1_000 + i * 33).expect("capture") {
                    break f;
                }
            }
        })
        .collect();
    let mark = Watermark::new(&line("Olga Operator (olga)", "0f3c2a9e-5b1d-4c7e-9a2f-6d8e1b4c7a30", 1_796_219_700_000));

    // Interleaved frame by frame, so both sides see the same machine.
    let mut single = Vp8Encoder::new(config()).expect("encoder");
    let (mut view, mut record) =
        (Vp8Encoder::new(config()).expect("encoder"), Vp8Encoder::new(config()).expect("encoder"));
    let mut one = Vec::with_capacity(FRAMES);
    let (mut two, mut stamp, mut copy) =
        (Vec::with_capacity(FRAMES), Vec::with_capacity(FRAMES), Vec::with_capacity(FRAMES));
    for f in &frames {
        let started = Instant::now();
        single.encode(&f.bgra, f.stride, f.captured_at_ms as i64, false).expect("encode");
        one.push(started.elapsed());

        let started = Instant::now();
        let mut operator = f.clone();
        copy.push(started.elapsed());
        let stamped = Instant::now();
        mark.stamp(&mut operator.bgra, operator.stride, operator.width, operator.height);
        stamp.push(stamped.elapsed());
        view.encode(&operator.bgra, operator.stride, f.captured_at_ms as i64, false).expect("encode");
        // Without masks for the recording, its encoder reads the captured frame as it is.
        record.encode(&f.bgra, f.stride, f.captured_at_ms as i64, false).expect("encode");
        two.push(started.elapsed());
    }

    let (one, two, stamp, copy) = (median(one), median(two), median(stamp), median(copy));
    println!("one track at 1920x1080: median {one:.2} ms per frame (encode)");
    println!("two tracks at 1920x1080: median {two:.2} ms per frame (copy, watermark, two encodes): {:.2}x", two / one);
    println!("watermark alone: median {stamp:.3} ms per frame; copying the frame for it: {copy:.3} ms");
    let json = serde_json::json!({
        "screen": [SCREEN.0, SCREEN.1],
        "frames": FRAMES,
        "one_track_median_ms": one,
        "two_tracks_median_ms": two,
        "ratio": two / one,
        "watermark_median_ms": stamp,
        "copy_median_ms": copy,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json")).expect("write results");
}
