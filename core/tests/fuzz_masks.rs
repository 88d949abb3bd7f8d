//! Property tests of the mask planner (R35): for any rules the agent accepts and any window
//! layout, nothing a rule selects is left uncovered and no rectangle leaves the screen.

use proptest::prelude::*;
use sightline_core::mask::{Area, Audience, MaskAudience, MaskRule, MaskTarget, Masks, Window, WindowMatch, area_rect};
use sightline_proto::mask::FRACTION_UNITS;

fn area() -> impl Strategy<Value = Area> {
    let units = FRACTION_UNITS;
    let valid_fraction = (0..units, 0..units)
        .prop_flat_map(move |(x, y)| (Just(x), Just(y), 1..=units - x, 1..=units - y))
        .prop_map(|(x, y, w, h)| Area::Fraction { x, y, w, h });
    prop_oneof![
        3 => (0u32..80, 0u32..80, 0u32..80, 0u32..80).prop_map(|(x, y, w, h)| Area::Pixels { x, y, w, h }),
        3 => valid_fraction,
        // Out of range or empty: the planner must refuse these, never plan with them.
        1 => (0u32..=2 * units, 0u32..=2 * units, 0u32..=2 * units, 0u32..=2 * units)
            .prop_map(|(x, y, w, h)| Area::Fraction { x, y, w, h }),
    ]
}

/// Cases per property: many by default (a leak may need a rare layout), more under
/// `cargo xtask fuzz` (PROPTEST_CASES).
fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn selector() -> impl Strategy<Value = WindowMatch> {
    let class = prop::option::of(prop::sample::select(vec!["secret", "*", "s?cret", "term"]));
    let title = prop::option::of(prop::sample::select(vec!["*Konto*", "*", "Mail"]));
    (class, title)
        .prop_map(|(class, title)| WindowMatch { class: class.map(str::to_owned), title: title.map(str::to_owned) })
}

fn rule() -> impl Strategy<Value = MaskRule> {
    let target = prop_oneof![
        area().prop_map(|area| MaskTarget::Area { area }),
        selector().prop_map(|window| MaskTarget::Window { window }),
        (selector(), prop::option::of(area())).prop_map(|(window, area)| MaskTarget::WhileWindow { window, area }),
    ];
    (target, prop_oneof![Just(MaskAudience::Both), Just(MaskAudience::Operator), Just(MaskAudience::Recording)])
        .prop_map(|(target, audience)| MaskRule { name: "m".into(), audience, target })
}

fn window() -> impl Strategy<Value = Window> {
    (
        prop::sample::select(vec!["secret", "term", "other"]),
        prop::sample::select(vec!["Kontoauszug 2026", "Mail", ""]),
        -40i32..90,
        -40i32..90,
        0u32..120,
        0u32..120,
        any::<bool>(),
    )
        .prop_map(|(class, title, x, y, w, h, viewable)| Window {
            instance: class.to_owned(),
            class: class.to_owned(),
            title: title.to_owned(),
            x,
            y,
            w,
            h,
            viewable,
        })
}

/// Which pixels of a `w`x`h` screen the rectangles cover.
fn covered(rects: &[sightline_core::mask::Rect], w: u32, h: u32) -> Vec<bool> {
    let mut grid = vec![false; (w * h) as usize];
    for r in rects {
        assert!(r.x + r.w <= w && r.y + r.h <= h, "{r:?} leaves the {w}x{h} screen");
        for y in r.y..r.y + r.h {
            for x in r.x..r.x + r.w {
                grid[(y * w + x) as usize] = true;
            }
        }
    }
    grid
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn fuzz_masks_cover_everything_they_select(
        rules in proptest::collection::vec(rule(), 1..5),
        windows in proptest::collection::vec(window(), 0..5),
        screen in (1u32..64, 1u32..64),
        operator in any::<bool>(),
    ) {
        let Ok(masks) = Masks::new(&rules) else { return Ok(()) };
        let audience = if operator { Audience::Operator } else { Audience::Recording };
        let plan = masks.plan(screen, &windows, audience);
        let grid = covered(&plan.rects, screen.0, screen.1);
        let (sw, sh) = screen;
        for rule in &rules {
            let applies = match (rule.audience, audience) {
                (MaskAudience::Both, _) => true,
                (MaskAudience::Operator, a) => a == Audience::Operator,
                (MaskAudience::Recording, a) => a == Audience::Recording,
            };
            if !applies {
                continue;
            }
            let one = Masks::new(std::slice::from_ref(rule)).unwrap();
            // The pixels this rule alone must hide.
            let mut must = Vec::new();
            match &rule.target {
                MaskTarget::Area { area } => must.extend(area_rect(area, screen)),
                MaskTarget::Window { .. } => {
                    for w in windows.iter().filter(|w| w.viewable && one.selects(w)) {
                        let x0 = w.x.clamp(0, sw as i32) as u32;
                        let y0 = w.y.clamp(0, sh as i32) as u32;
                        let x1 = (i64::from(w.x) + i64::from(w.w)).clamp(0, i64::from(sw)) as u32;
                        let y1 = (i64::from(w.y) + i64::from(w.h)).clamp(0, i64::from(sh)) as u32;
                        if x1 > x0 && y1 > y0 {
                            must.push(sightline_core::mask::Rect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 });
                        }
                    }
                }
                MaskTarget::WhileWindow { area, .. } => {
                    if windows.iter().any(|w| one.selects(w)) {
                        let whole = Area::Pixels { x: 0, y: 0, w: sw, h: sh };
                        must.extend(area_rect(area.as_ref().unwrap_or(&whole), screen));
                    }
                }
            }
            let need = covered(&must, sw, sh);
            for (i, (&n, &c)) in need.iter().zip(&grid).enumerate() {
                prop_assert!(!n || c, "pixel ({}, {}) of {:?} is not covered: {:?}", i as u32 % sw, i as u32 / sw, rule, plan);
            }
        }
    }

    /// Fractions round outwards: the covered rectangle contains the exact fraction of the screen.
    #[test]
    fn fuzz_fractions_round_outwards(a in area(), screen in (1u32..5000, 1u32..5000)) {
        let Area::Fraction { x, y, w, h } = a else { return Ok(()) };
        if w == 0 || h == 0 || x + w > FRACTION_UNITS || y + h > FRACTION_UNITS {
            let rule = MaskRule { name: "m".into(), audience: MaskAudience::Both, target: MaskTarget::Area { area: a } };
            prop_assert!(Masks::new(&[rule]).is_err());
            return Ok(());
        }
        let units = f64::from(FRACTION_UNITS);
        let exact = (
            f64::from(x) * f64::from(screen.0) / units,
            f64::from(y) * f64::from(screen.1) / units,
            f64::from(x + w) * f64::from(screen.0) / units,
            f64::from(y + h) * f64::from(screen.1) / units,
        );
        match area_rect(&a, screen) {
            Some(r) => {
                prop_assert!(f64::from(r.x) <= exact.0 && f64::from(r.y) <= exact.1);
                prop_assert!(f64::from(r.x + r.w) >= exact.2 && f64::from(r.y + r.h) >= exact.3);
                prop_assert!(r.x + r.w <= screen.0 && r.y + r.h <= screen.1);
            }
            // Only a fraction too thin to reach a pixel boundary may be empty... which outward
            // rounding never makes: a non-empty fraction always covers at least one pixel.
            None => prop_assert!(false, "{:?} on {:?} covers nothing", a, screen),
        }
    }
}
