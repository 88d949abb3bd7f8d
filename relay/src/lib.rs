//! The Sightline relay.
//!
//! Module map: `config` (flags, validated at start), `server` (router, listener, start-up),
//! `api` (HTTP API and its access table), `identity` (users, passkeys, sessions, roles, devices),
//! `store` (embedded or Redis state), `events` (security event sink), `hub` (who is online and
//! who watches whom), `agent_socket` / `viewer_socket` (the two WebSocket endpoints), `sfu`
//! (publisher and subscriber media legs and RTP fan-out).

pub mod config;
pub mod connections;
pub mod help;
pub mod http;
pub mod hub;
pub mod link;
pub mod request_limits;
pub mod server;
pub mod session;
pub mod sockets;
pub mod state;
pub mod tls;
