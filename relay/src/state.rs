//! The state every HTTP handler and socket shares. Its own module, so the handlers (`http`, the
//! sockets in `sockets`) and the server that wires them depend on it, not on each other.

use std::sync::Arc;

use crate::hub::Hub;
use sightline_audit::AuditLog;
use sightline_identity::Identity;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// The other nodes of the service, and this node's place among them (R43).
    pub cluster: Arc<crate::cluster::Cluster>,
    pub identity: Arc<Identity>,
    /// The session policy, validated at start.
    pub policy: Arc<sightline_core::policy::Policy>,
    /// The SHA-256 of the policy file's bytes `policy` was read from.
    pub policy_sha256: String,
    /// This node's audit log, for the dashboard's audit page (in-process test harnesses that
    /// collect events in memory have none).
    pub audit: Option<Arc<AuditLog>>,
    /// This node's recordings.
    pub recordings: Arc<sightline_recording::Recordings>,
    /// How often operators may ask for sessions, and devices be asked.
    pub limits: Arc<crate::request_limits::RequestLimits>,
    /// Help requests from endpoints (R2).
    pub help: Arc<crate::help::HelpDesk>,
    /// Proves this node's key to agents, which pinned it at enrolment.
    pub prover: Arc<sightline_core::relay_proof::RelayProver>,
    /// The TURN servers viewers get credentials for, if any (R42).
    pub turn: Option<Arc<crate::turn::Turn>>,
    /// The identity providers operators sign in through, if any (R12).
    pub sso: Option<Arc<crate::sso::Sso>>,
    /// Carries a user's request to the node that can answer it (R43, `http::carried`).
    pub carrier: reqwest::Client,
}
