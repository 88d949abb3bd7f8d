//! Sightline's sans-IO core.
//!
//! Nothing here opens a socket, reads a clock or draws a random number: inputs come in as plain
//! values and decisions go out as plain values, so every rule is unit-testable and the crate
//! builds for wasm32 as well as for the relay and the agent.

pub mod audit;
pub mod break_glass;
pub mod cluster;
pub mod command_approval;
pub mod config_file;
pub mod framecode;
pub mod handover;
pub mod help;
pub mod lockout;
pub mod mask;
pub mod passkey_reset;
pub mod policy;
pub mod recording;
pub mod relay_proof;
pub mod renewal;
pub mod request_budget;
pub mod role_mapping;
pub mod roles;
pub mod session;
pub mod turn;
pub mod watermark;
pub mod witness;
