//! The Sightline relay.
//!
//! Module map: `config` (flags, validated at start), `server` (HTTP routes and the listener),
//! `hub` (who is online and who watches whom), `agent_socket` / `viewer_socket` (the two
//! WebSocket endpoints), `sfu` (the only module that knows the webrtc crate: publisher and
//! subscriber peer connections and RTP fan-out).

pub mod agent_socket;
pub mod config;
pub mod hub;
pub mod server;
pub mod sfu;
pub mod viewer_socket;
