//! Where the operator's keys go while the picture of the remote screen has the keyboard, and
//! which keys it holds down there (IO-free, so it is tested on the host).

use sightline_proto::channel::Input;

/// Where a key pressed on the remote screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRoute {
    /// To the remote screen; the page does nothing with it.
    Remote,
    /// To the page: without control, Tab moves on to the next control as everywhere else (the key
    /// would be refused anyway, and a keyboard must never be trapped in the picture).
    Page,
    /// Shift+Escape, the way out while the operator controls the screen (and Tab belongs to it).
    Leave,
}

pub fn route(key: &str, shift: bool, control: bool) -> KeyRoute {
    match key {
        "Escape" if shift => KeyRoute::Leave,
        "Tab" if !control => KeyRoute::Page,
        _ => KeyRoute::Remote,
    }
}

/// Keys sent down and not yet up, to let go of when the picture loses the keyboard (a Shift
/// held while leaving must not stay held on the remote screen).
#[derive(Debug, Default)]
pub struct HeldKeys(Vec<String>);

impl HeldKeys {
    pub fn note(&mut self, input: &Input) {
        if let Input::Key { key, down } = input {
            self.0.retain(|k| k != key);
            if *down {
                self.0.push(key.clone());
            }
        }
    }

    /// The releases for every key still held, in the reverse order they went down.
    pub fn release(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.0).into_iter().rev().map(|key| Input::Key { key, down: false }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tab_leaves_the_picture_without_control_and_shift_escape_always() {
        assert_eq!(route("Tab", false, false), KeyRoute::Page);
        assert_eq!(route("Tab", true, false), KeyRoute::Page);
        assert_eq!(route("Tab", false, true), KeyRoute::Remote);
        assert_eq!(route("Escape", true, true), KeyRoute::Leave);
        assert_eq!(route("Escape", true, false), KeyRoute::Leave);
        assert_eq!(route("Escape", false, true), KeyRoute::Remote);
        assert_eq!(route("a", false, true), KeyRoute::Remote);
    }

    #[test]
    fn held_keys_are_released_once_in_reverse() {
        let key = |key: &str, down| Input::Key { key: key.into(), down };
        let mut held = HeldKeys::default();
        held.note(&key("Shift", true));
        held.note(&key("Control", true));
        held.note(&key("a", true));
        held.note(&key("a", false));
        held.note(&Input::Wheel { dx: 0, dy: 1 });
        assert_eq!(held.release(), vec![key("Control", false), key("Shift", false)]);
        assert_eq!(held.release(), vec![]);
    }
}
