//! The Sightline agent.
//!
//! Module map: `capture` (frame sources: synthetic and X11), `encoder` (libvpx VP8, the only
//! `unsafe`), `publisher` (capture -> encode -> RTP on a peer connection, keyframes on request),
//! `connection` (the outbound WebSocket to the relay, with reconnect and backoff).
//!
//! **Invariant:** the agent never listens. It dials the relay's WebSocket and its peer connection
//! answers only ICE checks on the flow it opened towards the relay.

pub mod capture;
pub mod connection;
pub mod decoder;
pub mod device;
pub mod encoder;
pub mod publisher;
