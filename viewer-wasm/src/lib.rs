//! The Sightline viewer: a Leptos client-side app on wasm32.
//!
//! `app` holds the components, `signaling` the WebSocket to the relay (with reconnect), and
//! `media` the receive-only RTCPeerConnection. On the host the crate holds only its IO-free parts,
//! unit-tested there: `session_words` (what the session bar says, from the relay's status),
//! `keyboard` (where keys go while the picture has the keyboard), `sso_words` (the directory
//! sign-in's routes and refusals) and `timeline_words` (what the
//! auditor's timeline says). Everything else needs a browser, and its behaviour is proven by the
//! Playwright suite in `e2e/`.

#[cfg(target_arch = "wasm32")]
mod admin;
#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod audit;
#[cfg(target_arch = "wasm32")]
mod auth;
#[cfg(target_arch = "wasm32")]
mod command_approvals;
#[cfg(target_arch = "wasm32")]
mod help;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod input;
// Used only by the app on wasm32; tested on the host.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod keyboard;
#[cfg(target_arch = "wasm32")]
mod media;
#[cfg(target_arch = "wasm32")]
mod own_sessions;
#[cfg(target_arch = "wasm32")]
mod passkey_resets;
#[cfg(target_arch = "wasm32")]
mod player;
#[cfg(target_arch = "wasm32")]
mod recordings;
#[cfg(target_arch = "wasm32")]
mod role_mappings;
// Used only by the app on wasm32; tested on the host.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod session_words;
#[cfg(target_arch = "wasm32")]
mod signaling;
// Used only by the app on wasm32; tested on the host.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod sso_words;
// Used only by the app on wasm32; tested on the host.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod timeline_words;
#[cfg(target_arch = "wasm32")]
mod webauthn;
#[cfg(target_arch = "wasm32")]
mod widgets;

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
