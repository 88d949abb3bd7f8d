use super::*;

const SCREEN: (u32, u32) = (1280, 720);

fn rule(name: &str, audience: MaskAudience, target: MaskTarget) -> MaskRule {
    MaskRule { name: name.into(), audience, target }
}

fn titled(title: &str) -> WindowMatch {
    WindowMatch { class: None, title: Some(title.into()) }
}

fn window(class: &str, title: &str, x: i32, y: i32, w: u32, h: u32) -> Window {
    Window { instance: class.to_lowercase(), class: class.into(), title: title.into(), x, y, w, h, viewable: true }
}

#[test]
fn a_window_rule_covers_matching_windows_where_they_are_clipped_to_the_screen() {
    let masks =
        Masks::new(&[rule("statement", MaskAudience::Both, MaskTarget::Window { window: titled("*Kontoauszug*") })])
            .unwrap();
    let windows = [
        window("XTerm", "shell", 0, 0, 300, 300),
        window("Teller", "Kontoauszug 4711", -20, 700, 200, 100),
        window("Teller", "Kontoauszug 4712", 100, 100, 50, 60),
    ];
    let plan = masks.plan(SCREEN, &windows, Audience::Operator);
    assert_eq!(plan.rects, vec![Rect { x: 0, y: 700, w: 180, h: 20 }, Rect { x: 100, y: 100, w: 50, h: 60 }]);
    assert_eq!(plan.active, vec![0]);
    // The control: without a match nothing is hidden.
    assert_eq!(masks.plan(SCREEN, &windows[..1], Audience::Operator), Plan::default());
}

#[test]
fn a_class_pattern_matches_instance_or_class_and_both_patterns_must_match() {
    let sel = WindowMatch { class: Some("teller".into()), title: Some("*Kunde*".into()) };
    let masks = Masks::new(&[rule("k", MaskAudience::Both, MaskTarget::Window { window: sel })]).unwrap();
    let hit = window("Teller", "Kunde Meier", 10, 10, 10, 10);
    let wrong_title = window("Teller", "Menu", 10, 10, 10, 10);
    let wrong_class = Window { instance: "xterm".into(), ..window("XTerm", "Kunde Meier", 10, 10, 10, 10) };
    assert_eq!(masks.plan(SCREEN, &[hit], Audience::Recording).rects.len(), 1);
    assert!(masks.plan(SCREEN, &[wrong_title, wrong_class], Audience::Recording).rects.is_empty());
}

#[test]
fn a_hidden_window_is_not_covered_but_still_triggers_a_while_window_rule() {
    let masks = Masks::new(&[
        rule("w", MaskAudience::Both, MaskTarget::Window { window: titled("secret") }),
        rule("screen", MaskAudience::Recording, MaskTarget::WhileWindow { window: titled("secret"), area: None }),
    ])
    .unwrap();
    let hidden = Window { viewable: false, ..window("A", "secret", 10, 10, 10, 10) };
    assert!(masks.plan(SCREEN, std::slice::from_ref(&hidden), Audience::Operator).rects.is_empty());
    let rec = masks.plan(SCREEN, &[hidden], Audience::Recording);
    assert_eq!(rec.rects, vec![Rect { x: 0, y: 0, w: 1280, h: 720 }]);
    assert_eq!(rec.active, vec![1]);
}

#[test]
fn audiences_select_rules() {
    let area = Area::Pixels { x: 0, y: 0, w: 10, h: 10 };
    let masks = Masks::new(&[
        rule("op", MaskAudience::Operator, MaskTarget::Area { area }),
        rule("rec", MaskAudience::Recording, MaskTarget::Area { area }),
        rule("both", MaskAudience::Both, MaskTarget::Area { area }),
    ])
    .unwrap();
    assert_eq!(masks.plan(SCREEN, &[], Audience::Operator).active, vec![0, 2]);
    assert_eq!(masks.plan(SCREEN, &[], Audience::Recording).active, vec![1, 2]);
    assert!(masks.audiences_differ());
    assert!(!masks.needs_windows());
}

#[test]
fn fractions_round_outwards() {
    let quarter = Area::Fraction { x: 0, y: 0, w: 2_500, h: 10_000 };
    assert_eq!(area_rect(&quarter, (1001, 3)), Some(Rect { x: 0, y: 0, w: 251, h: 3 }));
    let third = Area::Fraction { x: 3_333, y: 3_333, w: 3_334, h: 3_334 };
    assert_eq!(area_rect(&third, (100, 100)), Some(Rect { x: 33, y: 33, w: 34, h: 34 }));
}

#[test]
fn invalid_rules_are_refused_with_the_rule_named() {
    let cases = [
        (
            MaskTarget::Window { window: WindowMatch { class: None, title: Some(String::new()) } },
            "needs a class or a title",
        ),
        (MaskTarget::Area { area: Area::Pixels { x: 0, y: 0, w: 0, h: 5 } }, "empty"),
        (MaskTarget::Area { area: Area::Fraction { x: 9_000, y: 0, w: 2_000, h: 5 } }, "within 0..1"),
    ];
    for (target, want) in cases {
        let err = Masks::new(&[rule("bad one", MaskAudience::Both, target)]).unwrap_err().to_string();
        assert!(err.contains("\"bad one\"") && err.contains(want), "{err}");
    }
    assert_eq!(
        Masks::new(&[rule(
            " ",
            MaskAudience::Both,
            MaskTarget::Area { area: Area::Pixels { x: 0, y: 0, w: 1, h: 1 } }
        )])
        .unwrap_err(),
        MaskError::NoName
    );
}

#[test]
fn fill_paints_exactly_the_rects() {
    let (w, h) = (8usize, 4usize);
    let stride = w * 4 + 8; // rows may be padded
    let mut frame = vec![0xffu8; stride * h];
    fill(&mut frame, stride, &[Rect { x: 2, y: 1, w: 3, h: 2 }, Rect { x: 7, y: 3, w: 1, h: 1 }]);
    for y in 0..h {
        for x in 0..w {
            let px = &frame[y * stride + x * 4..y * stride + x * 4 + 4];
            let inside = ((2..5).contains(&x) && (1..3).contains(&y)) || (x == 7 && y == 3);
            assert_eq!(px == FILL, inside, "pixel {x},{y}");
        }
        // Padding is left alone.
        assert!(frame[y * stride + w * 4..(y + 1) * stride].iter().all(|&b| b == 0xff));
    }
}
