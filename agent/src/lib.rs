//! The Sightline agent.
//!
//! Module map: `capture` (frame sources: synthetic and X11), `encoder` (libvpx VP8, the only
//! `unsafe`), `publisher` (capture -> encode -> RTP on a peer connection, keyframes on request),
//! `connection` (the outbound WebSocket to the relay, with reconnect and backoff), `session` (the
//! endpoint's copy of the session machine, the second gate for input), `frontend` (who is asked:
//! window or terminal), `ui` (the consent window and session bar, `agent consent-ui`),
//! `bar_visibility` (whether the user can see the bar: active confirmation), `prompt` (what the
//! user is shown, and the window's line protocol), `input` (XTEST injection), `help_window` (the
//! user's "Request help" button, `agent help --window`).
//!
//! **Invariant:** the agent never listens. It dials the relay's WebSocket and its peer connection
//! answers only ICE checks on the flow it opened towards the relay.
//!
//! **Invariant:** the screen is published only while a session the user consented to runs, and
//! input is injected only while this side's session machine says control is granted.

pub mod bar_visibility;
pub mod capture;
pub mod connection;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod frontend;
pub mod help_window;
pub mod input;
pub mod logging;
pub mod prompt;
pub mod proxy;
pub mod publisher;
pub mod session;
pub mod ui;
pub mod window_fit;

/// Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The account logged in at this endpoint (the agent runs as the person it asks), named in the
/// agent's hello and in every consent receipt it signs.
pub fn endpoint_user() -> String {
    whoami::username()
}
