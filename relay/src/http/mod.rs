//! The relay's HTTP surface: the router, health (`/healthz`, `/readyz`), the two WebSocket upgrades, and the API's
//! handlers by concept (`account`, `admin`, `sessions`, `audit`, `recordings`). Who may call
//! what is one table (`access::ROUTES`); authentication and capability checks are middleware
//! (`auth`); errors become responses in one place (`error`); every response gets the security
//! headers (`headers`). Handlers translate HTTP to calls on the concept crates and back; the
//! rules live in those crates.

pub mod access;
mod account;
mod admin;
mod audit;
pub mod auth;
pub mod break_glass;
pub mod carried;
pub mod error;
pub mod headers;
pub mod health;
pub mod recordings;
pub mod request_span;
mod sessions;
mod sockets;
mod sso;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use sightline_core::roles::Capability;
use sightline_proto::{AGENT_WS_PATH, VIEWER_WS_PATH};
use tower_http::services::ServeDir;

use crate::config::Config;
use crate::state::AppState;
use access::{AUDIT_LOG, RECORDING_METADATA};

/// Builds the router; tests call it without a listener.
pub fn app(state: AppState, config: &Config) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(AGENT_WS_PATH, get(sockets::agent_ws))
        .route(VIEWER_WS_PATH, get(sockets::viewer_ws))
        .merge(api(state.clone()))
        .fallback_service(ServeDir::new(&config.static_dir))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(headers::SecurityHeaders::new(&config.public_url(), config.tls())),
            headers::add,
        ))
        .layer(axum::middleware::from_fn(request_span::add))
        .with_state(state)
}

/// The routes under `/api`, with their middleware.
fn api(state: AppState) -> Router<AppState> {
    let public = Router::new()
        .route("/api/enrol/start", post(account::enrol_start))
        .route("/api/enrol/finish", post(account::enrol_finish))
        .route("/api/login/start", post(account::login_start))
        .route("/api/login/finish", post(account::login_finish))
        .route("/api/break-glass/login", post(break_glass::sign_in))
        .route("/api/sso/providers", get(sso::providers))
        .route("/api/sso/continue", post(sso::continue_sign_in))
        .route("/api/sso/enrol/finish", post(sso::enrol_finish))
        .route("/api/sso/{provider}/start", get(sso::start))
        .route("/api/sso/{provider}/callback", get(sso::callback))
        .route("/api/sso/{provider}/backchannel-logout", post(sso::backchannel_logout));
    let signed_in_routes = Router::new()
        .route("/api/me", get(account::me))
        .route("/api/logout", post(account::logout))
        .route("/api/session/refresh", post(account::refresh))
        .route("/api/me/sessions", get(account::own_sessions))
        .route("/api/me/sessions/end-others", post(account::end_other_sessions))
        .route("/api/me/sessions/{id}/end", post(account::end_own_session))
        .route("/api/step-up/start", post(account::step_up_start))
        .route("/api/step-up/finish", post(account::step_up_finish))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    // Capability checks run before the body is even parsed: an unauthorised caller learns nothing
    // about what the route would accept. (Handlers check again.)
    let admin_routes = Router::new()
        .route("/api/admin/users", get(admin::users))
        .route("/api/admin/invitations", post(admin::invite))
        .route("/api/admin/role-requests", get(admin::role_requests).post(admin::request_role_change))
        .route("/api/admin/role-requests/{id}/approve", post(admin::approve))
        .route("/api/admin/role-requests/{id}/refuse", post(admin::refuse))
        .route("/api/admin/passkey-resets", get(admin::passkey_resets).post(admin::request_passkey_reset))
        .route("/api/admin/passkey-resets/{id}/approve", post(admin::approve_passkey_reset))
        .route("/api/admin/passkey-resets/{id}/refuse", post(admin::refuse_passkey_reset))
        .route("/api/admin/role-mappings", get(admin::role_mappings).post(admin::request_mapping_change))
        .route("/api/admin/role-mappings/{id}/approve", post(admin::approve_mapping_change))
        .route("/api/admin/role-mappings/{id}/refuse", post(admin::refuse_mapping_change))
        .route("/api/admin/users/{id}/revoke-sessions", post(admin::revoke_sessions))
        .route("/api/admin/locks", get(admin::locks))
        .route("/api/admin/locks/unlock", post(admin::unlock))
        .route("/api/admin/devices", get(admin::devices))
        .route("/api/admin/devices/{id}/revoke", post(admin::revoke_device))
        .route("/api/admin/devices/{id}/rekey-token", post(admin::rekey_token))
        .route("/api/admin/devices/{id}/maintenance-window", post(admin::open_window))
        .route("/api/admin/devices/{id}/maintenance-window/close", post(admin::close_window))
        .route("/api/admin/agent-tokens", post(admin::agent_token))
        .route("/api/admin/pending", get(admin::pending))
        .route("/api/admin/command-approvals", post(admin::approve_command))
        .route("/api/admin/sessions", get(sessions::list))
        .route("/api/admin/sessions/{id}/kill", post(sessions::kill))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Capability::Administer),
            auth::needs_capability,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    let senior_routes = Router::new()
        .route("/api/sessions/{id}/approve-elevation", post(sessions::approve_elevation))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Capability::ApproveElevation),
            auth::needs_capability,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    let audit_routes = Router::new()
        .route("/api/audit/records", get(audit::records))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), AUDIT_LOG), auth::needs_any_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    let recording_search = Router::new()
        .route("/api/recordings", get(recordings::search))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), RECORDING_METADATA),
            auth::needs_any_capability,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    // Viewing needs a step-up too; the handlers ask for it (and audit every view).
    let recording_views = Router::new()
        .route("/api/recordings/{id}", get(recordings::open))
        .route("/api/recordings/{id}/chunks/{n}", get(recordings::chunk))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), Capability::Audit), auth::needs_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::signed_in));
    public
        .merge(signed_in_routes)
        .merge(admin_routes)
        .merge(senior_routes)
        .merge(audit_routes)
        .merge(recording_search)
        .merge(recording_views)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
}
