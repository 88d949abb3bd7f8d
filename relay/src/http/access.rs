//! Who may call each route: every route of the relay with the access it requires. The
//! authorisation-matrix test checks each against every role and against the router itself, so a
//! route cannot be added without deciding who may call it.

use sightline_core::roles::Capability;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Any signed-in user.
    SignedIn,
    Needs(Capability),
    /// Any one of these capabilities.
    NeedsAny(&'static [Capability]),
}
/// Who may open the viewer socket: operators (sessions), observers (join one), senior operators
/// (approve elevations).
pub const VIEWER_SOCKET: &[Capability] =
    &[Capability::ViewSessions, Capability::ObserveSessions, Capability::ApproveElevation];

/// Every route of the relay with its access rule (the WebSocket endpoints included).
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/healthz", Access::Public),
    ("GET", "/readyz", Access::Public),
    ("POST", "/api/enrol/start", Access::Public),
    ("POST", "/api/enrol/finish", Access::Public),
    ("POST", "/api/login/start", Access::Public),
    ("POST", "/api/login/finish", Access::Public),
    ("POST", "/api/break-glass/login", Access::Public),
    ("GET", "/ws/agent", Access::Public),
    ("GET", "/api/sso/providers", Access::Public),
    ("POST", "/api/sso/continue", Access::Public),
    ("POST", "/api/sso/enrol/finish", Access::Public),
    ("GET", "/api/sso/{provider}/start", Access::Public),
    ("GET", "/api/sso/{provider}/callback", Access::Public),
    ("POST", "/api/sso/{provider}/backchannel-logout", Access::Public),
    ("GET", "/api/me", Access::SignedIn),
    ("POST", "/api/logout", Access::SignedIn),
    ("POST", "/api/session/refresh", Access::SignedIn),
    ("GET", "/api/me/sessions", Access::SignedIn),
    ("POST", "/api/me/sessions/end-others", Access::SignedIn),
    ("POST", "/api/me/sessions/{id}/end", Access::SignedIn),
    ("POST", "/api/step-up/start", Access::SignedIn),
    ("POST", "/api/step-up/finish", Access::SignedIn),
    ("GET", "/ws/viewer", Access::NeedsAny(VIEWER_SOCKET)),
    ("GET", "/api/admin/users", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/invitations", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/role-requests", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests/{id}/approve", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests/{id}/refuse", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/passkey-resets", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/passkey-resets", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/passkey-resets/{id}/approve", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/passkey-resets/{id}/refuse", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/role-mappings", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-mappings", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-mappings/{id}/approve", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-mappings/{id}/refuse", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/users/{id}/revoke-sessions", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/locks", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/locks/unlock", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/devices", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/revoke", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/rekey-token", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/maintenance-window", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/maintenance-window/close", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/agent-tokens", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/pending", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/command-approvals", Access::Needs(Capability::Administer)),
    ("POST", "/api/sessions/{id}/approve-elevation", Access::Needs(Capability::ApproveElevation)),
    ("GET", "/api/admin/sessions", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/sessions/{id}/kill", Access::Needs(Capability::Administer)),
    ("GET", "/api/audit/records", Access::NeedsAny(AUDIT_LOG)),
    ("GET", "/api/recordings", Access::NeedsAny(RECORDING_METADATA)),
    ("GET", "/api/recordings/{id}", Access::Needs(Capability::Audit)),
    ("GET", "/api/recordings/{id}/chunks/{n}", Access::Needs(Capability::Audit)),
];
/// Who may search recordings' metadata: auditors (all), operators (their own sessions').
pub const RECORDING_METADATA: &[Capability] = &[Capability::Audit, Capability::ViewSessions];
/// Who may read the audit log: auditors, and admins (who run the system it records).
pub const AUDIT_LOG: &[Capability] = &[Capability::Audit, Capability::Administer];
