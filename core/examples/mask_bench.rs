//! Masking cost per frame (`cargo xtask bench`): planning and painting the masks of 1, 10 and 50
//! window rules on a 1920x1080 BGRA frame, each rule matching one window, with the window list an
//! X server of that many windows would give. Prints a summary and writes JSON to the file given as
//! the first argument. (The X round trips of the window tracker are not in this number: they
//! happen only when the layout changes.)

use std::time::{Duration, Instant};

use sightline_core::mask::{Audience, MaskAudience, MaskRule, MaskTarget, Masks, Window, WindowMatch, fill};

const SCREEN: (u32, u32) = (1920, 1080);
const ROUNDS: usize = 300;

fn case(rules: usize) -> (Masks, Vec<Window>) {
    let masks: Vec<MaskRule> = (0..rules)
        .map(|i| MaskRule {
            name: format!("rule {i}"),
            audience: MaskAudience::Both,
            target: MaskTarget::Window {
                window: WindowMatch { class: Some("Teller*".into()), title: Some(format!("*Kunde {i} *")) },
            },
        })
        .collect();
    // Each rule's window (320x200, spread over the screen) plus as many windows no rule matches.
    let mut windows: Vec<Window> = (0..rules)
        .map(|i| Window {
            instance: "teller".into(),
            class: "TellerApp".into(),
            title: format!("Kunde {i} - Konto"),
            x: (i as i32 * 97) % 1600,
            y: (i as i32 * 53) % 880,
            w: 320,
            h: 200,
            viewable: true,
        })
        .collect();
    windows.extend((0..rules).map(|i| Window {
        instance: "xterm".into(),
        class: "XTerm".into(),
        title: format!("shell {i}"),
        x: 10,
        y: 10,
        w: 600,
        h: 400,
        viewable: true,
    }));
    (Masks::new(&masks).expect("valid rules"), windows)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: mask_bench OUT.json");
    let stride = SCREEN.0 as usize * 4;
    let mut frame = vec![0x80u8; stride * SCREEN.1 as usize];
    let mut results = Vec::new();
    for rules in [1usize, 10, 50] {
        let (masks, windows) = case(rules);
        let mut times = Vec::with_capacity(ROUNDS);
        let mut masked_px = 0u64;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let plan = masks.plan(SCREEN, &windows, Audience::Operator);
            fill(&mut frame, stride, &plan.rects);
            times.push(started.elapsed());
            masked_px = plan.rects.iter().map(|r| u64::from(r.w) * u64::from(r.h)).sum();
        }
        let med = median(times);
        println!(
            "masking, {rules:>2} window rules at 1920x1080: median {:.3} ms per frame ({masked_px} px painted)",
            med.as_secs_f64() * 1000.0
        );
        results.push(serde_json::json!({
            "rules": rules,
            "windows": windows.len(),
            "median_ms": med.as_secs_f64() * 1000.0,
            "painted_px": masked_px,
            "rounds": ROUNDS,
        }));
    }
    let json = serde_json::json!({ "screen": [SCREEN.0, SCREEN.1], "cases": results });
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json")).expect("write results");
}
