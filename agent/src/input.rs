//! Input injection on X11 through the XTEST extension.
//!
//! The injector is dumb on purpose: whether input may be injected at all is decided by the
//! session machine (`core::session::Session::admit_input`) before an event gets here. What it does
//! own is the endpoint's physical state: it remembers every key and button it pressed, so
//! `release_all` (on pause, end, loss of control) leaves nothing stuck down.

use std::collections::BTreeSet;

use sightline_proto::channel::Input;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{self, ConnectionExt as _};
use x11rb::protocol::xtest::ConnectionExt as _;
use x11rb::rust_connection::RustConnection;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot connect to the X display {display:?}: {detail}")]
    Connect { display: String, detail: String },
    #[error("the X server has no XTEST extension")]
    NoXtest,
    #[error("X11: {0}")]
    X11(String),
}

fn x11<E: std::fmt::Display>(e: E) -> InputError {
    InputError::X11(e.to_string())
}

const SHIFT_L: u32 = 0xffe1;

/// Injects pointer and keyboard events into one X display.
pub struct Injector {
    conn: RustConnection,
    root: xproto::Window,
    width: u32,
    height: u32,
    min_keycode: u8,
    keysyms_per_keycode: u8,
    keysyms: Vec<u32>,
    held_keys: BTreeSet<u8>,
    held_buttons: BTreeSet<u8>,
    /// Events that had no mapping (unknown keys): counted, not injected.
    pub unmapped: u64,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector").field("held_keys", &self.held_keys).finish_non_exhaustive()
    }
}

/// The X keysym for a DOM `key` value, if we know one.
pub fn keysym_for(key: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        let cp = c as u32;
        return Some(match cp {
            0x20..=0x7e | 0xa0..=0xff => cp,
            _ => 0x0100_0000 + cp,
        });
    }
    let named = match key {
        "Enter" => 0xff0d,
        "Backspace" => 0xff08,
        "Tab" => 0xff09,
        "Escape" => 0xff1b,
        "Delete" => 0xffff,
        "Insert" => 0xff63,
        "Home" => 0xff50,
        "End" => 0xff57,
        "PageUp" => 0xff55,
        "PageDown" => 0xff56,
        "ArrowLeft" => 0xff51,
        "ArrowUp" => 0xff52,
        "ArrowRight" => 0xff53,
        "ArrowDown" => 0xff54,
        "Shift" => SHIFT_L,
        "Control" => 0xffe3,
        "Alt" => 0xffe9,
        "AltGraph" => 0xfe03,
        "Meta" => 0xffeb,
        "CapsLock" => 0xffe5,
        f if f.starts_with('F') => {
            let n: u32 = f[1..].parse().ok().filter(|n| (1..=12).contains(n))?;
            0xffbe + n - 1
        }
        _ => return None,
    };
    Some(named)
}

/// X button for a DOM button number (0 left, 1 middle, 2 right).
pub fn x_button(dom: u8) -> Option<u8> {
    match dom {
        0 => Some(1),
        1 => Some(2),
        2 => Some(3),
        _ => None,
    }
}

impl Injector {
    /// Connects to `DISPLAY` and checks for XTEST.
    pub fn open() -> Result<Injector, InputError> {
        let display = std::env::var("DISPLAY").unwrap_or_default();
        let (conn, screen_num) =
            x11rb::connect(None).map_err(|e| InputError::Connect { display, detail: e.to_string() })?;
        conn.xtest_get_version(2, 2).map_err(x11)?.reply().map_err(|_| InputError::NoXtest)?;
        let setup = conn.setup();
        let screen = &setup.roots[screen_num];
        let (root, width, height) =
            (screen.root, u32::from(screen.width_in_pixels), u32::from(screen.height_in_pixels));
        let (min_keycode, max_keycode) = (setup.min_keycode, setup.max_keycode);
        let mapping =
            conn.get_keyboard_mapping(min_keycode, max_keycode - min_keycode + 1).map_err(x11)?.reply().map_err(x11)?;
        Ok(Injector {
            conn,
            root,
            width,
            height,
            min_keycode,
            keysyms_per_keycode: mapping.keysyms_per_keycode,
            keysyms: mapping.keysyms,
            held_keys: BTreeSet::new(),
            held_buttons: BTreeSet::new(),
            unmapped: 0,
        })
    }

    /// The keycode producing `keysym`, and whether Shift is needed for it.
    fn keycode_for(&self, keysym: u32) -> Option<(u8, bool)> {
        let per = usize::from(self.keysyms_per_keycode.max(1));
        for column in 0..per.min(2) {
            for (i, syms) in self.keysyms.chunks(per).enumerate() {
                if syms.get(column) == Some(&keysym) {
                    return Some((self.min_keycode + i as u8, column == 1));
                }
            }
        }
        None
    }

    fn fake(&self, kind: u8, detail: u8, x: i16, y: i16) -> Result<(), InputError> {
        self.conn.xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, self.root, x, y, 0).map_err(x11)?;
        Ok(())
    }

    fn clamp(&self, x: u32, y: u32) -> (i16, i16) {
        let cx = x.min(self.width.saturating_sub(1)).min(i16::MAX as u32) as i16;
        let cy = y.min(self.height.saturating_sub(1)).min(i16::MAX as u32) as i16;
        (cx, cy)
    }

    fn key(&mut self, keycode: u8, down: bool) -> Result<(), InputError> {
        if down {
            self.fake(xproto::KEY_PRESS_EVENT, keycode, 0, 0)?;
            self.held_keys.insert(keycode);
        } else if self.held_keys.remove(&keycode) {
            self.fake(xproto::KEY_RELEASE_EVENT, keycode, 0, 0)?;
        }
        Ok(())
    }

    fn button(&mut self, button: u8, down: bool) -> Result<(), InputError> {
        if down {
            self.fake(xproto::BUTTON_PRESS_EVENT, button, 0, 0)?;
            self.held_buttons.insert(button);
        } else if self.held_buttons.remove(&button) {
            self.fake(xproto::BUTTON_RELEASE_EVENT, button, 0, 0)?;
        }
        Ok(())
    }

    /// Injects one event.
    pub fn inject(&mut self, input: &Input) -> Result<(), InputError> {
        match input {
            Input::PointerMove { x, y } => {
                let (x, y) = self.clamp(*x, *y);
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, x, y)?;
            }
            Input::PointerButton { x, y, button, down } => {
                let (x, y) = self.clamp(*x, *y);
                self.fake(xproto::MOTION_NOTIFY_EVENT, 0, x, y)?;
                match x_button(*button) {
                    Some(b) => self.button(b, *down)?,
                    None => self.unmapped += 1,
                }
            }
            Input::Wheel { dx, dy } => {
                // X has no wheel axis: each step is a click of buttons 4-7.
                let steps = [(*dy, 5u8, 4u8), (*dx, 7, 6)];
                for (delta, positive, negative) in steps {
                    let button = if delta > 0 { positive } else { negative };
                    for _ in 0..delta.unsigned_abs().min(10) {
                        self.fake(xproto::BUTTON_PRESS_EVENT, button, 0, 0)?;
                        self.fake(xproto::BUTTON_RELEASE_EVENT, button, 0, 0)?;
                    }
                }
            }
            Input::Key { key, down } => {
                let Some((keycode, shifted)) = keysym_for(key).and_then(|k| self.keycode_for(k)) else {
                    self.unmapped += 1;
                    return Ok(());
                };
                let shift = self.keycode_for(SHIFT_L).map(|(k, _)| k);
                let wrap = shifted && *down && shift.is_some_and(|s| !self.held_keys.contains(&s));
                if let (true, Some(shift)) = (wrap, shift) {
                    self.fake(xproto::KEY_PRESS_EVENT, shift, 0, 0)?;
                    self.key(keycode, true)?;
                    self.fake(xproto::KEY_RELEASE_EVENT, shift, 0, 0)?;
                } else {
                    self.key(keycode, *down)?;
                }
            }
        }
        self.conn.flush().map_err(x11)?;
        Ok(())
    }

    /// Releases every key and button this injector holds down.
    pub fn release_all(&mut self) -> Result<(), InputError> {
        if !self.held_keys.is_empty() || !self.held_buttons.is_empty() {
            tracing::info!(keys = ?self.held_keys, buttons = ?self.held_buttons, "releasing held keys and buttons");
        }
        for keycode in std::mem::take(&mut self.held_keys) {
            self.fake(xproto::KEY_RELEASE_EVENT, keycode, 0, 0)?;
        }
        for button in std::mem::take(&mut self.held_buttons) {
            self.fake(xproto::BUTTON_RELEASE_EVENT, button, 0, 0)?;
        }
        // A round trip, not just a flush: the injector is often dropped right after this, and an
        // X server may close a connection before it processed requests still in its buffer, which
        // left keys held on the endpoint when the relay was lost (seen in the @R22 test).
        self.conn.get_input_focus().map_err(x11)?.reply().map_err(x11)?;
        Ok(())
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.release_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_dom_keys_to_keysyms() {
        assert_eq!(keysym_for("a"), Some(0x61));
        assert_eq!(keysym_for("A"), Some(0x41));
        assert_eq!(keysym_for(" "), Some(0x20));
        assert_eq!(keysym_for("é"), Some(0xe9));
        assert_eq!(keysym_for("€"), Some(0x0100_20ac));
        assert_eq!(keysym_for("Enter"), Some(0xff0d));
        assert_eq!(keysym_for("F12"), Some(0xffc9));
        assert_eq!(keysym_for("F13"), None);
        assert_eq!(keysym_for("Unidentified"), None);
        assert_eq!(x_button(0), Some(1));
        assert_eq!(x_button(2), Some(3));
        assert_eq!(x_button(7), None);
    }
}
