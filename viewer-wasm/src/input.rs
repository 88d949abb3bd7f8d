//! Operator input on the video element: pointer and keyboard events mapped to the remote screen's
//! pixels and sent as typed messages on the session data channel. The relay and the agent decide
//! whether any of it is injected; the viewer sends what the operator does.

use sightline_proto::channel::Input;
use web_sys::{HtmlVideoElement, KeyboardEvent, MouseEvent, WheelEvent};

/// Maps a point in the page to the remote screen, honouring the letterboxing of the video
/// (`object-fit: contain`). `None` outside the picture or before the first frame.
pub fn remote_point(video: &HtmlVideoElement, client_x: f64, client_y: f64) -> Option<(u32, u32)> {
    let (vw, vh) = (f64::from(video.video_width()), f64::from(video.video_height()));
    if vw == 0.0 || vh == 0.0 {
        return None;
    }
    let rect = video.get_bounding_client_rect();
    let scale = (rect.width() / vw).min(rect.height() / vh);
    if scale <= 0.0 {
        return None;
    }
    let off_x = (rect.width() - vw * scale) / 2.0;
    let off_y = (rect.height() - vh * scale) / 2.0;
    let x = (client_x - rect.left() - off_x) / scale;
    let y = (client_y - rect.top() - off_y) / scale;
    (x >= 0.0 && y >= 0.0 && x < vw && y < vh).then_some((x as u32, y as u32))
}

pub fn pointer_move(video: &HtmlVideoElement, ev: &MouseEvent) -> Option<Input> {
    let (x, y) = remote_point(video, f64::from(ev.client_x()), f64::from(ev.client_y()))?;
    Some(Input::PointerMove { x, y })
}

pub fn pointer_button(video: &HtmlVideoElement, ev: &MouseEvent, down: bool) -> Option<Input> {
    let (x, y) = remote_point(video, f64::from(ev.client_x()), f64::from(ev.client_y()))?;
    let button = u8::try_from(ev.button()).ok()?;
    Some(Input::PointerButton { x, y, button, down })
}

pub fn wheel(ev: &WheelEvent) -> Option<Input> {
    // One step per notch (about 100 px in Chromium); small touchpad deltas still count once.
    let step = |d: f64| {
        let n = (d / 100.0).round().clamp(-10.0, 10.0) as i32;
        if n == 0 && d != 0.0 { d.signum() as i32 } else { n }
    };
    let (dx, dy) = (step(ev.delta_x()), step(ev.delta_y()));
    (dx != 0 || dy != 0).then_some(Input::Wheel { dx, dy })
}

pub fn key(ev: &KeyboardEvent, down: bool) -> Option<Input> {
    let key = ev.key();
    (!key.is_empty() && key.len() <= 32).then_some(Input::Key { key, down })
}
