//! The Sightline relay node: what is left once the concepts are crates of their own.
//!
//! Owns the node's configuration (`config`), start-up and the serve loop (`server`), connection
//! discipline (`connections`: caps per address, header timeouts; `tls`), the HTTP surface
//! (`http`: the router, the route table, authentication, every handler by concept), the two
//! WebSocket endpoints (`sockets`), the agents online and who watches them (`link`, `hub`), live
//! sessions around the core session machine (`session`), help requests (`help`), session-request
//! limits (`request_limits`) and the state the handlers share (`state`).
//!
//! Refuses to own what the concept crates do: the audit log (`sightline_audit`), the store
//! (`sightline_store`), identities (`sightline_identity`), recordings (`sightline_recording`),
//! media forwarding (`sightline_sfu`), and every rule that needs no IO (`sightline_core`).
//! Modules depend one way, lowest first: `connections`, `tls`, `link`, `help`,
//! `request_limits` < `config`, `session` < `hub` < `state` < `sockets` < `http` < `server`
//! (xtask's tidy test fails on an import circle between them).

pub mod audit_copy;
pub mod cluster;
pub mod command_gate;
pub mod config;
pub mod connections;
pub mod help;
pub mod http;
pub mod hub;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod request_limits;
pub mod server;
pub mod session;
pub mod sockets;
pub mod sso;
pub mod state;
pub mod takeover;
pub mod tls;
pub mod turn;
pub mod witness;
