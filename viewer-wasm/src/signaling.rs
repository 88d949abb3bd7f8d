//! The viewer's WebSocket to the relay: typed messages from `sightline-proto`, and a reconnect
//! loop so a restarted relay is picked up without reloading the page.

use leptos::prelude::*;
use sightline_proto::{RelayToViewer, VIEWER_WS_PATH, ViewerToRelay, decode, encode};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

/// Delay before reconnecting after the relay went away.
const RECONNECT_MS: i32 = 1000;

/// Whether the relay is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    Connecting,
    Online,
    Lost,
}

/// A handle to the signaling socket; cheap to copy into callbacks.
#[derive(Clone, Copy)]
pub struct Signaling {
    socket: StoredValue<Option<WebSocket>, LocalStorage>,
    pub state: ReadSignal<RelayState>,
}

impl Signaling {
    /// Opens the socket and keeps it open; `on_message` gets every decoded message.
    pub fn connect(on_message: impl Fn(RelayToViewer) + 'static, on_lost: impl Fn() + 'static) -> Signaling {
        let (state, set_state) = signal(RelayState::Connecting);
        let socket = StoredValue::new_local(None);
        let signaling = Signaling { socket, state };
        let on_message = std::rc::Rc::new(on_message);
        let on_lost = std::rc::Rc::new(on_lost);
        open(signaling, set_state, on_message, on_lost);
        signaling
    }

    /// Sends a message; `false` when the relay is not connected.
    pub fn send(&self, msg: &ViewerToRelay) -> bool {
        match self.socket.try_get_value().flatten() {
            Some(ws) if ws.ready_state() == WebSocket::OPEN => ws.send_with_str(&encode(msg)).is_ok(),
            _ => false,
        }
    }
}

fn ws_url() -> String {
    let loc = window().location();
    let scheme = if loc.protocol().unwrap_or_default() == "https:" { "wss" } else { "ws" };
    format!("{scheme}://{}{VIEWER_WS_PATH}", loc.host().unwrap_or_default())
}

fn open(
    signaling: Signaling,
    set_state: WriteSignal<RelayState>,
    on_message: std::rc::Rc<dyn Fn(RelayToViewer)>,
    on_lost: std::rc::Rc<dyn Fn()>,
) {
    let ws = match WebSocket::new(&ws_url()) {
        Ok(ws) => ws,
        Err(_) => {
            set_state.set(RelayState::Lost);
            retry_later(signaling, set_state, on_message, on_lost);
            return;
        }
    };
    let onopen = Closure::<dyn FnMut()>::new(move || set_state.set(RelayState::Online));
    let handler = on_message.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else { return };
        match decode::<RelayToViewer>(&text) {
            Ok(msg) => handler(msg),
            Err(e) => leptos::logging::warn!("relay sent a message this viewer does not understand: {e}"),
        }
    });
    let onclose = Closure::<dyn FnMut(CloseEvent)>::new(move |_ev: CloseEvent| {
        set_state.set(RelayState::Lost);
        on_lost();
        retry_later(signaling, set_state, on_message.clone(), on_lost.clone());
    });
    ws.set_onopen(Some(onopen.into_js_value().unchecked_ref()));
    ws.set_onmessage(Some(onmessage.into_js_value().unchecked_ref()));
    ws.set_onclose(Some(onclose.into_js_value().unchecked_ref()));
    signaling.socket.set_value(Some(ws));
}

fn retry_later(
    signaling: Signaling,
    set_state: WriteSignal<RelayState>,
    on_message: std::rc::Rc<dyn Fn(RelayToViewer)>,
    on_lost: std::rc::Rc<dyn Fn()>,
) {
    let retry = Closure::once(move || {
        set_state.set(RelayState::Connecting);
        open(signaling, set_state, on_message, on_lost);
    });
    let _ = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(retry.into_js_value().unchecked_ref(), RECONNECT_MS);
}
