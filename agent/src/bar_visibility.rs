//! Whether the person at the endpoint can see the session bar (R8, "active confirmation"): a
//! session in a segment that asks for it pauses as soon as the bar is minimised, hidden or
//! pushed off the screen, because the user can then no longer see that someone is connected.
//!
//! The window's own toolkit cannot be trusted to tell (winit reports no visibility on X11, and
//! "minimised" only through one EWMH hint), so the consent window asks the X server directly,
//! from a thread of its own that keeps running while the window is iconified. What counts as
//! hidden is decided by `hidden`, a pure function of what X reports.

use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, MapState, Window};

/// How often the window's state is read: a hidden bar pauses the session well within a second.
const POLL: Duration = Duration::from_millis(200);
/// ICCCM `WM_STATE` value of an iconified window.
const ICONIC_STATE: u32 = 3;

/// What the X server says about the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowFacts {
    /// The window and all its ancestors are mapped.
    pub viewable: bool,
    /// A window manager iconified it (ICCCM `WM_STATE` is Iconic).
    pub iconic: bool,
    /// EWMH `_NET_WM_STATE` says hidden (minimised) or shaded (rolled up to its title).
    pub net_hidden: bool,
    /// Share of the window's area inside the screen, 0 to 1.
    pub on_screen: f32,
}

/// Hidden means the user cannot see the bar: not viewable, iconified, shaded, or mostly off the
/// screen. (Covered by other windows is not checked: the bar asks to stay on top.)
pub fn hidden(f: &WindowFacts) -> bool {
    !f.viewable || f.iconic || f.net_hidden || f.on_screen < 0.5
}

/// Share of the rectangle (x, y, w, h) that lies inside a screen of `screen_w` x `screen_h`.
pub fn on_screen_share(x: i32, y: i32, w: u32, h: u32, screen_w: u32, screen_h: u32) -> f32 {
    if w == 0 || h == 0 {
        return 0.0;
    }
    let (x0, y0) = (i64::from(x).max(0), i64::from(y).max(0));
    let x1 = (i64::from(x) + i64::from(w)).min(i64::from(screen_w));
    let y1 = (i64::from(y) + i64::from(h)).min(i64::from(screen_h));
    let inside = (x1 - x0).max(0) * (y1 - y0).max(0);
    inside as f32 / (f64::from(w) * f64::from(h)) as f32
}

/// Watches `window` on the display in `DISPLAY` from a new thread and calls `report(hidden)`
/// once at the start and on every change. If the display cannot be read the bar counts as
/// hidden: active confirmation fails closed. The thread ends, reporting hidden, when the window
/// is gone.
pub fn watch(window: Window, report: impl Fn(bool) + Send + 'static) {
    std::thread::spawn(move || {
        let reader = match Reader::connect(window) {
            Ok(reader) => reader,
            Err(e) => {
                eprintln!("consent-ui: cannot watch the window's visibility ({e}); counting it as hidden");
                report(true);
                return;
            }
        };
        let mut last = None;
        loop {
            let Ok(facts) = reader.facts() else {
                // The window is gone (or the display): nothing is visible any more.
                report(true);
                return;
            };
            let now = hidden(&facts);
            if last != Some(now) {
                report(now);
                last = Some(now);
            }
            std::thread::sleep(POLL);
        }
    });
}

/// An X connection reading one window's state.
struct Reader {
    conn: x11rb::rust_connection::RustConnection,
    root: Window,
    window: Window,
    wm_state: u32,
    net_wm_state: u32,
    net_hidden: u32,
    net_shaded: u32,
}

impl Reader {
    fn connect(window: Window) -> Result<Reader, Box<dyn std::error::Error>> {
        let (conn, screen) = x11rb::connect(None)?;
        let root = conn.setup().roots[screen].root;
        let atom = |name: &str| -> Result<u32, Box<dyn std::error::Error>> {
            Ok(conn.intern_atom(false, name.as_bytes())?.reply()?.atom)
        };
        let (wm_state, net_wm_state) = (atom("WM_STATE")?, atom("_NET_WM_STATE")?);
        let (net_hidden, net_shaded) = (atom("_NET_WM_STATE_HIDDEN")?, atom("_NET_WM_STATE_SHADED")?);
        Ok(Reader { conn, root, window, wm_state, net_wm_state, net_hidden, net_shaded })
    }

    /// The window's current state; an error once the window is gone.
    fn facts(&self) -> Result<WindowFacts, Box<dyn std::error::Error>> {
        let attributes = self.conn.get_window_attributes(self.window)?.reply()?;
        let wm_state = self.conn.get_property(false, self.window, self.wm_state, self.wm_state, 0, 2)?.reply()?;
        let iconic = wm_state.value32().and_then(|mut v| v.next()) == Some(ICONIC_STATE);
        let net = self.conn.get_property(false, self.window, self.net_wm_state, AtomEnum::ATOM, 0, 64)?.reply()?;
        let net_hidden = net.value32().is_some_and(|mut v| v.any(|a| a == self.net_hidden || a == self.net_shaded));
        let geometry = self.conn.get_geometry(self.window)?.reply()?;
        let at = self.conn.translate_coordinates(self.window, self.root, 0, 0)?.reply()?;
        let screen = self.conn.get_geometry(self.root)?.reply()?;
        Ok(WindowFacts {
            viewable: attributes.map_state == MapState::VIEWABLE,
            iconic,
            net_hidden,
            on_screen: on_screen_share(
                i32::from(at.dst_x),
                i32::from(at.dst_y),
                u32::from(geometry.width),
                u32::from(geometry.height),
                u32::from(screen.width),
                u32::from(screen.height),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: WindowFacts = WindowFacts { viewable: true, iconic: false, net_hidden: false, on_screen: 1.0 };

    #[test]
    fn what_counts_as_hidden() {
        let cases = [
            (SHOWN, false),
            (WindowFacts { viewable: false, ..SHOWN }, true),
            (WindowFacts { iconic: true, ..SHOWN }, true),
            (WindowFacts { net_hidden: true, ..SHOWN }, true),
            (WindowFacts { on_screen: 0.49, ..SHOWN }, true),
            (WindowFacts { on_screen: 0.5, ..SHOWN }, false),
        ];
        for (facts, expected) in cases {
            assert_eq!(hidden(&facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn share_of_the_window_on_screen() {
        let cases = [
            ((40, 40, 400, 300), 1.0),
            ((-200, 0, 400, 300), 0.5),
            ((1180, 620, 200, 200), 0.25),
            ((5000, 40, 400, 300), 0.0),
            ((0, 0, 0, 300), 0.0),
        ];
        for ((x, y, w, h), expected) in cases {
            assert_eq!(on_screen_share(x, y, w, h, 1280, 720), expected, "{x},{y} {w}x{h}");
        }
    }
}
