//! The relay's input gate (R19): input reaches the agent only while the machine admits it
//! (control granted and unexpired, not paused, an observer present where required, no elevation
//! waiting), and passes here and nowhere else. The recording keeps only the kind of each event.

use sightline_proto::channel::{ChannelMessage, Input};

use super::LiveSession;

impl LiveSession {
    /// One input event from the operator: forwarded only if the machine admits it (R19).
    pub fn input(&self, input: Input) -> bool {
        let admitted = self.lock().admit_input(self.identity.now_ms());
        if admitted {
            if let Some(recorder) = self.recorder.get() {
                recorder.count_input(input_kind(&input));
            }
            self.link.send_input(&ChannelMessage::Input { input });
        }
        admitted
    }

    /// Input that arrived where none may come from (an observer's connection): counted.
    pub fn drop_input(&self) {
        self.lock().dropped_input += 1;
    }
}

/// The kind of an input event, all the recording keeps of it (never keys or positions).
fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::PointerMove { .. } => "pointer_move",
        Input::PointerButton { .. } => "pointer_button",
        Input::Wheel { .. } => "wheel",
        Input::Key { .. } => "key",
    }
}
