//! An Xvfb for the tests that need an X server.

#![allow(dead_code)] // each test uses its own part

use std::time::{Duration, Instant};

use x11rb::connection::Connection;
use x11rb::protocol::xproto::ConnectionExt;

/// An Xvfb on a display nobody uses; killed on drop.
pub struct Xvfb {
    child: std::process::Child,
    pub display: String,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        for attempt in 0..20u64 {
            let n = 100 + (seed.wrapping_mul(31).wrapping_add(attempt * 97)) % 800;
            if std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                continue;
            }
            let display = format!(":{n}");
            let mut child = std::process::Command::new("Xvfb")
                .args([display.as_str(), "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("Xvfb runs (Debian: xvfb; `cargo xtask test` installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if x11rb::connect(Some(&display)).is_ok() {
                    return Xvfb { child, display };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start Xvfb");
    }

    /// Whether Shift_L is down on the display (the core keyboard state includes XTEST's).
    pub fn shift_held(&self) -> bool {
        const XK_SHIFT_L: u32 = 0xffe1;
        let (conn, _) = x11rb::connect(Some(&self.display)).unwrap();
        let setup = conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let mapping = conn.get_keyboard_mapping(min, max - min + 1).unwrap().reply().unwrap();
        let per = usize::from(mapping.keysyms_per_keycode);
        let index = mapping.keysyms.chunks(per).position(|syms| syms.contains(&XK_SHIFT_L)).expect("Shift_L mapped");
        let keycode = usize::from(min) + index;
        let keys = conn.query_keymap().unwrap().reply().unwrap().keys;
        keys[keycode / 8] & (1 << (keycode % 8)) != 0
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
