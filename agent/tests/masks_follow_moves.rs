//! R35 under load: a masked window that moves after the agent read the window layout and before
//! the X server took the image is in the image at its new place. The agent learns of the move
//! only from the events it reads after the image; the mask must cover the place the window went
//! to, not only the places it was.
//!
//! The test holds the agent's capture still between reading the layout and taking the image (what
//! a busy machine does by chance) and moves the window meanwhile, from another client, as a
//! window manager would. The control: the image does show the window at its new place, and the
//! layout as read before the image alone leaves it visible.

// The X server alone: no relay, so none of the rest of `support` (which needs `test-consent`).
#[path = "support/xvfb.rs"]
mod xvfb;

use sightline_agent::capture::windows::WindowTracker;
use sightline_core::mask::{Audience, Masks, fill};
use sightline_proto::mask::{MaskAudience, MaskRule, MaskTarget, WindowMatch};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConfigureWindowAux, ConnectionExt, CreateWindowAux, ImageFormat, PropMode, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;
use xvfb::Xvfb;

const MAGENTA: u32 = 0xff00ff;
const SCREEN: (u32, u32) = (640, 480);

fn magenta_pixels(bgra: &[u8]) -> usize {
    bgra.chunks_exact(4).filter(|p| p[0] == 0xff && p[1] == 0 && p[2] == 0xff).count()
}

/// Waits until the server has handled everything `conn` sent.
fn sync(conn: &RustConnection) {
    conn.get_input_focus().unwrap().reply().unwrap();
}

#[test]
fn a_window_that_moved_before_the_image_is_masked_where_it_went() {
    let xvfb = Xvfb::start();
    let masks = Masks::new(&[MaskRule {
        name: "account statement".into(),
        audience: MaskAudience::Operator,
        target: MaskTarget::Window { window: WindowMatch { class: None, title: Some("*Kontoauszug*".into()) } },
    }])
    .unwrap();

    // The user's application: a magenta window the rule selects.
    let (app, screen_num) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = app.setup().roots[screen_num].root;
    let window = app.generate_id().unwrap();
    app.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        root,
        50,
        50,
        100,
        80,
        0,
        WindowClass::INPUT_OUTPUT,
        x11rb::COPY_FROM_PARENT,
        &CreateWindowAux::new().background_pixel(MAGENTA),
    )
    .unwrap();
    app.change_property8(PropMode::REPLACE, window, AtomEnum::WM_NAME, AtomEnum::STRING, b"Kontoauszug 4711").unwrap();
    app.change_property8(PropMode::REPLACE, window, AtomEnum::WM_CLASS, AtomEnum::STRING, b"teller\0Teller\0").unwrap();
    app.map_window(window).unwrap();
    sync(&app);

    // The agent reads the layout, as its capture does before each image.
    let (agent, _) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let mut tracker = WindowTracker::new(&agent, root, masks.clone()).unwrap();
    tracker.absorb(&agent).unwrap();
    tracker.refresh(&agent).unwrap();
    let before: Vec<_> = tracker.windows().cloned().collect();
    assert!(
        before.iter().any(|w| w.title == "Kontoauszug 4711" && (w.x, w.y) == (50, 50) && w.viewable),
        "the tracker sees the window where it is: {before:?}"
    );

    // Meanwhile the window moves, and only then is the image taken.
    app.configure_window(window, &ConfigureWindowAux::new().x(300).y(200)).unwrap();
    sync(&app);
    let image = agent
        .get_image(ImageFormat::Z_PIXMAP, root, 0, 0, SCREEN.0 as u16, SCREEN.1 as u16, !0)
        .unwrap()
        .reply()
        .unwrap()
        .data;
    let stride = SCREEN.0 as usize * 4;
    let at = |x: usize, y: usize| &image[y * stride + x * 4..y * stride + x * 4 + 3];
    assert_eq!(at(350, 240), [0xff, 0, 0xff], "the image shows the window at its new place");
    assert_eq!(magenta_pixels(&image), 100 * 80, "the image shows all of the window");
    tracker.absorb(&agent).unwrap();

    let masked = |windows: &[sightline_core::mask::Window]| {
        let mut bgra = image.clone();
        fill(&mut bgra, stride, &masks.plan(SCREEN, windows, Audience::Operator).rects);
        magenta_pixels(&bgra)
    };
    // The control: masking the layout as it was read leaves the window in view.
    assert_eq!(masked(&before), 100 * 80, "the layout read before the image does not know the move");
    let layout = tracker.image_layout(before);
    assert_eq!(masked(&layout), 0, "the mask covers the window where it went: {layout:?}");
    assert!(layout.iter().any(|w| (w.x, w.y) == (50, 50)), "and where it was: {layout:?}");
}
