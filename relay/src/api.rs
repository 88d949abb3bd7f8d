//! The HTTP API: enrolment, login, sessions, step-up, administration, agent enrolment.
//!
//! Every route is listed in `ROUTES` with the access it requires; the authorisation-matrix test
//! checks each against every role and against the router itself, so a route cannot be added
//! without deciding who may call it.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sightline_core::roles::{Capability, Role, RoleChange};

use crate::state::AppState;
use sightline_audit::events::{EventKind, Outcome};
use sightline_identity::{
    AuthUser, Identity, IdentityError, PublicKeyCredential, RegisterPublicKeyCredential, User, require,
};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sightline_session";

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
    ("POST", "/api/enrol/start", Access::Public),
    ("POST", "/api/enrol/finish", Access::Public),
    ("POST", "/api/login/start", Access::Public),
    ("POST", "/api/login/finish", Access::Public),
    ("GET", "/ws/agent", Access::Public),
    ("GET", "/api/me", Access::SignedIn),
    ("POST", "/api/logout", Access::SignedIn),
    ("POST", "/api/session/refresh", Access::SignedIn),
    ("POST", "/api/step-up/start", Access::SignedIn),
    ("POST", "/api/step-up/finish", Access::SignedIn),
    ("GET", "/ws/viewer", Access::NeedsAny(VIEWER_SOCKET)),
    ("GET", "/api/admin/users", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/invitations", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/role-requests", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests/{id}/approve", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/role-requests/{id}/refuse", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/users/{id}/revoke-sessions", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/locks", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/locks/unlock", Access::Needs(Capability::Administer)),
    ("GET", "/api/admin/devices", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/revoke", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/maintenance-window", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/devices/{id}/maintenance-window/close", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/agent-tokens", Access::Needs(Capability::Administer)),
    ("POST", "/api/sessions/{id}/approve-elevation", Access::Needs(Capability::ApproveElevation)),
    ("GET", "/api/admin/sessions", Access::Needs(Capability::Administer)),
    ("POST", "/api/admin/sessions/{id}/kill", Access::Needs(Capability::Administer)),
    ("GET", "/api/audit/records", Access::NeedsAny(AUDIT_LOG)),
    ("GET", "/api/recordings", Access::NeedsAny(RECORDING_METADATA)),
    ("GET", "/api/recordings/{id}", Access::Needs(Capability::Audit)),
    ("GET", "/api/recordings/{id}/video", Access::Needs(Capability::Audit)),
];

/// Who may search recordings' metadata: auditors (all), operators (their own sessions').
pub const RECORDING_METADATA: &[Capability] = &[Capability::Audit, Capability::ViewSessions];

/// Who may read the audit log: auditors, and admins (who run the system it records).
pub const AUDIT_LOG: &[Capability] = &[Capability::Audit, Capability::Administer];

/// Errors as clients see them: a status, a stable code and a message for people. Internal
/// details (store failures) go to the log only.
pub struct ApiError(pub IdentityError);

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            IdentityError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            IdentityError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            IdentityError::StepUpRequired => (StatusCode::FORBIDDEN, "step_up_required"),
            IdentityError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            IdentityError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            IdentityError::Locked => (StatusCode::LOCKED, "locked"),
            IdentityError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            IdentityError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            IdentityError::Store(e) => {
                tracing::error!(error = %e, "request failed on the state store");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            IdentityError::AuditUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
        };
        let message = match &self.0 {
            IdentityError::Store(_) => "the relay cannot reach its state store; try again shortly".to_owned(),
            IdentityError::AuditUnavailable(_) => sightline_audit::AuditUnavailable::PUBLIC.to_owned(),
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": code, "message": message }))).into_response();
        if let IdentityError::Throttled { retry_after_s } = self.0
            && let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then(|| value.to_owned())
    })
}

/// The session cookie: HttpOnly (no script reads it), Secure, SameSite=Strict (no cross-site
/// request carries it). It lives as long as the browser session; the token inside expires.
pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/"))
        .unwrap_or_else(|_| HeaderValue::from_static("sightline_session=; Path=/"))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("sightline_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// Verifies the session of a request; `None` when there is none or it is invalid.
pub async fn authenticate(identity: &Identity, headers: &HeaderMap) -> Result<AuthUser, IdentityError> {
    let token = cookie_value(headers).ok_or(IdentityError::Unauthenticated)?;
    identity.authenticate(&token).await
}

/// Middleware for signed-in routes: verifies the session, hands `AuthUser` to the handler, and
/// renews the cookie when the token is half-spent.
async fn signed_in(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let auth = match authenticate(&state.identity, request.headers()).await {
        Ok(auth) => auth,
        Err(e) => return ApiError(e).into_response(),
    };
    let renewed = auth.renewed.clone();
    request.extensions_mut().insert(auth);
    let mut response = next.run(request).await;
    if let Some(token) = renewed {
        response.headers_mut().append(header::SET_COOKIE, session_cookie(&token));
    }
    response
}

/// Middleware for routes that need one capability (after `signed_in`); refusals are security
/// events.
async fn needs_capability(
    State((state, capability)): State<(AppState, Capability)>,
    request: Request,
    next: Next,
) -> Response {
    needs_one_of(&state, std::slice::from_ref(&capability), request, next).await
}

async fn needs_any_capability(
    State((state, capabilities)): State<(AppState, &'static [Capability])>,
    request: Request,
    next: Next,
) -> Response {
    needs_one_of(&state, capabilities, request, next).await
}

/// Lets the request through if the caller holds one of `capabilities`; a refusal is an event.
async fn needs_one_of(state: &AppState, capabilities: &[Capability], request: Request, next: Next) -> Response {
    match request.extensions().get::<AuthUser>() {
        Some(auth) if capabilities.iter().any(|c| auth.allows(*c)) => next.run(request).await,
        Some(auth) => {
            let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            let path = request.uri().path().to_owned();
            state.identity.emit(
                EventKind::AccessDenied,
                Outcome::Failure,
                &auth.user.name,
                Some(&path),
                source,
                format!("route needs one of {capabilities:?}, which the caller's roles lack"),
            );
            ApiError(IdentityError::Forbidden("your roles do not allow this".into())).into_response()
        }
        None => ApiError(IdentityError::Unauthenticated).into_response(),
    }
}

fn with_cookie(token: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(token));
    response
}

/// The routes under `/api`, with their middleware. (`/healthz` and the sockets are in `server`.)
pub fn router(state: AppState) -> Router<AppState> {
    let public = Router::new()
        .route("/api/enrol/start", post(enrol_start))
        .route("/api/enrol/finish", post(enrol_finish))
        .route("/api/login/start", post(login_start))
        .route("/api/login/finish", post(login_finish));
    let signed_in_routes = Router::new()
        .route("/api/me", get(me))
        .route("/api/logout", post(logout))
        .route("/api/session/refresh", post(refresh))
        .route("/api/step-up/start", post(step_up_start))
        .route("/api/step-up/finish", post(step_up_finish))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    // Capability checks run before the body is even parsed: an unauthorised caller learns nothing
    // about what the route would accept. (Handlers check again.)
    let admin_routes = Router::new()
        .route("/api/admin/users", get(admin_users))
        .route("/api/admin/invitations", post(admin_invite))
        .route("/api/admin/role-requests", get(admin_role_requests).post(admin_request_role_change))
        .route("/api/admin/role-requests/{id}/approve", post(admin_approve))
        .route("/api/admin/role-requests/{id}/refuse", post(admin_refuse))
        .route("/api/admin/users/{id}/revoke-sessions", post(admin_revoke_sessions))
        .route("/api/admin/locks", get(admin_locks))
        .route("/api/admin/locks/unlock", post(admin_unlock))
        .route("/api/admin/devices", get(admin_devices))
        .route("/api/admin/devices/{id}/revoke", post(admin_revoke_device))
        .route("/api/admin/devices/{id}/maintenance-window", post(admin_open_window))
        .route("/api/admin/devices/{id}/maintenance-window/close", post(admin_close_window))
        .route("/api/admin/agent-tokens", post(admin_agent_token))
        .route("/api/admin/sessions", get(admin_sessions))
        .route("/api/admin/sessions/{id}/kill", post(admin_kill_session))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), Capability::Administer), needs_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    let senior_routes = Router::new()
        .route("/api/sessions/{id}/approve-elevation", post(approve_elevation))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), Capability::ApproveElevation),
            needs_capability,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    let audit_routes = Router::new()
        .route("/api/audit/records", get(audit_records))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), AUDIT_LOG), needs_any_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    let recording_search = Router::new()
        .route("/api/recordings", get(crate::http::recordings::search))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), RECORDING_METADATA), needs_any_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    // Viewing needs a step-up too; the handlers ask for it (and audit every view).
    let recording_views = Router::new()
        .route("/api/recordings/{id}", get(crate::http::recordings::open))
        .route("/api/recordings/{id}/video", get(crate::http::recordings::video))
        .route_layer(axum::middleware::from_fn_with_state((state.clone(), Capability::Audit), needs_capability))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), signed_in));
    public
        .merge(signed_in_routes)
        .merge(admin_routes)
        .merge(senior_routes)
        .merge(audit_routes)
        .merge(recording_search)
        .merge(recording_views)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
}

fn ip(addr: SocketAddr) -> IpAddr {
    addr.ip()
}

// ---------------------------------------------------------------- views of records

#[derive(Serialize)]
struct UserView {
    id: String,
    name: String,
    roles: Vec<Role>,
    passkeys: usize,
    bootstrap: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            name: u.name.clone(),
            roles: u.roles.iter().copied().collect(),
            passkeys: u.passkeys.len(),
            bootstrap: u.bootstrap,
        }
    }
}

// ---------------------------------------------------------------- public

#[derive(Deserialize)]
struct EnrolStart {
    token: String,
    /// Only for the bootstrap link: the first admin chooses their name.
    name: Option<String>,
}

async fn enrol_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<EnrolStart>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_enrolment(&body.token, body.name.as_deref(), ip(peer)).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}

#[derive(Deserialize)]
struct EnrolFinish {
    token: String,
    ceremony_id: String,
    credential: RegisterPublicKeyCredential,
}

async fn enrol_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<EnrolFinish>,
) -> ApiResult<Response> {
    let (user, token) =
        state.identity.finish_enrolment(&body.token, &body.ceremony_id, &body.credential, Some(ip(peer))).await?;
    Ok(with_cookie(&token, Json(UserView::from(&user))))
}

#[derive(Deserialize)]
struct LoginStart {
    name: String,
}

async fn login_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<LoginStart>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_login(&body.name, ip(peer)).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}

#[derive(Deserialize)]
struct Finish {
    ceremony_id: String,
    credential: PublicKeyCredential,
}

async fn login_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<Finish>,
) -> ApiResult<Response> {
    let (user, token) = state.identity.finish_login(&body.ceremony_id, &body.credential, ip(peer)).await?;
    Ok(with_cookie(&token, Json(UserView::from(&user))))
}

// ---------------------------------------------------------------- signed in

async fn me(State(state): State<AppState>, Extension(auth): Extension<AuthUser>) -> Json<serde_json::Value> {
    let capabilities: Vec<&str> = [
        (Capability::ViewSessions, "view_sessions"),
        (Capability::ObserveSessions, "observe_sessions"),
        (Capability::ApproveElevation, "approve_elevation"),
        (Capability::Administer, "administer"),
        (Capability::Audit, "audit"),
    ]
    .into_iter()
    .filter(|(c, _)| auth.allows(*c))
    .map(|(_, n)| n)
    .collect();
    Json(
        json!({ "user": UserView::from(&auth.user), "capabilities": capabilities, "session_expires": auth.claims.exp, "token_ttl_s": state.identity.settings.tokens.ttl_s }),
    )
}

async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Response> {
    state.identity.logout(&auth, Some(ip(peer))).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

/// Called by the viewer while its user is active: renews the token (the middleware has already
/// recorded the activity).
/// The browser renews on a schedule derived from these two (`core::renewal`). When this request
/// renewed the token, the expiry is still the old one's: the browser then asks again sooner,
/// never later.
async fn refresh(State(state): State<AppState>, Extension(auth): Extension<AuthUser>) -> Json<serde_json::Value> {
    Json(json!({ "session_expires": auth.claims.exp, "token_ttl_s": state.identity.settings.tokens.ttl_s }))
}

async fn step_up_start(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ceremony_id, options) = state.identity.start_step_up(&auth).await?;
    Ok(Json(json!({ "ceremony_id": ceremony_id, "options": options })))
}

async fn step_up_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Finish>,
) -> ApiResult<StatusCode> {
    state.identity.finish_step_up(&auth, &body.ceremony_id, &body.credential, ip(peer)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- admin

async fn admin_users(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<UserView>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.identity.users().await?.iter().map(UserView::from).collect()))
}

#[derive(Deserialize)]
struct Invite {
    name: String,
    role: Role,
}

async fn admin_invite(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Invite>,
) -> ApiResult<Json<serde_json::Value>> {
    let link = state.identity.invite(&auth, &body.name, body.role, Some(ip(peer))).await?;
    Ok(Json(json!({ "link": link })))
}

async fn admin_role_requests(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(serde_json::to_value(state.identity.role_requests().await?).unwrap_or_default()))
}

#[derive(Deserialize)]
struct RoleChangeBody {
    user_id: String,
    change: RoleChange,
}

async fn admin_request_role_change(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<RoleChangeBody>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let request = state.identity.request_role_change(&auth, &body.user_id, body.change, Some(ip(peer))).await?;
    Ok(Json(serde_json::to_value(request).unwrap_or_default()))
}

async fn admin_approve(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_role_request(&auth, &id, true, Some(ip(peer))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_refuse(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.decide_role_request(&auth, &id, false, Some(ip(peer))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_revoke_sessions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.identity.revoke_sessions(&auth, &id, Some(ip(peer))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_locks(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let locks: Vec<serde_json::Value> = state
        .identity
        .locked_subjects()
        .await?
        .into_iter()
        .map(|(key, a)| json!({ "key": key, "failures": a.failures, "last_failure_ms": a.last_failure_ms }))
        .collect();
    Ok(Json(json!(locks)))
}

#[derive(Deserialize)]
struct Unlock {
    key: String,
}

async fn admin_unlock(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<Unlock>,
) -> ApiResult<StatusCode> {
    state.identity.unlock(&auth, &body.key, Some(ip(peer))).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_devices(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(serde_json::to_value(state.identity.devices().await?).unwrap_or_default()))
}

async fn admin_revoke_device(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require(&auth, Capability::Administer)?;
    state.identity.revoke_device(&auth.user.name, &id, Some(ip(peer))).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct WindowBody {
    /// Unix milliseconds.
    start_ms: u64,
    end_ms: u64,
}

async fn admin_open_window(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
    Json(body): Json<WindowBody>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let window = state.identity.open_window(&id, body.start_ms, body.end_ms, &auth.user.name, Some(ip(peer))).await?;
    Ok(Json(serde_json::to_value(window).unwrap_or_default()))
}

async fn admin_close_window(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let closed = state.identity.close_windows(&id, &auth.user.name, Some(ip(peer))).await?;
    Ok(Json(json!({ "closed": closed })))
}

#[derive(Deserialize)]
struct AgentToken {
    segment: String,
}

async fn admin_agent_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(auth): Extension<AuthUser>,
    Json(body): Json<AgentToken>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let token = state.identity.create_agent_token(&auth.user.name, &body.segment, Some(ip(peer))).await?;
    Ok(Json(json!({ "token": token })))
}

/// Filters of the audit page (all optional; times RFC 3339 or Unix ms).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    kind: Option<String>,
    session: Option<String>,
    ticket: Option<String>,
    operator: Option<String>,
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// The newest audit records that match, each with its inclusion proof against the newest signed
/// checkpoint: the browser verifies them itself. Reading the log is itself an event.
async fn audit_records(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> ApiResult<Json<sightline_audit::AuditPage>> {
    if !AUDIT_LOG.iter().any(|c| auth.allows(*c)) {
        return Err(IdentityError::Forbidden("your roles do not allow reading the audit log".into()).into());
    }
    let Some(audit) = state.audit.clone() else {
        return Err(IdentityError::NotFound.into());
    };
    let time = crate::http::recordings::time;
    let nonempty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let filter = sightline_audit::commands::Filter {
        from_ms: time(&q.from)?,
        to_ms: time(&q.to)?,
        session: nonempty(q.session),
        ticket: nonempty(q.ticket),
        operator: nonempty(q.operator),
        device: nonempty(q.device),
        kind: nonempty(q.kind),
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 500);
    state.identity.emit(
        EventKind::AuditViewed,
        Outcome::Success,
        &auth.user.name,
        None,
        Some(peer.ip()),
        format!("{filter:?}"),
    );
    state.identity.audit_committed().await?;
    let page = tokio::task::spawn_blocking(move || audit.search(&filter, limit))
        .await
        .map_err(|e| IdentityError::BadRequest(format!("search failed: {e}")))?
        .map_err(|e| IdentityError::BadRequest(format!("search failed: {e:#}")))?;
    Ok(Json(page))
}

/// Sessions running on this node (who, on what, under which ticket; never the screen: admins
/// do not view sessions).
async fn admin_sessions(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
) -> ApiResult<Json<Vec<sightline_proto::SessionSummary>>> {
    require(&auth, Capability::Administer)?;
    Ok(Json(state.hub.sessions()))
}

/// Ends a session at once (R22); recorded with the admin's name.
async fn admin_kill_session(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::Administer)?;
    let session = state.hub.session(&id).ok_or(IdentityError::NotFound)?;
    session.note_address(&auth.user.name, peer.ip());
    session.kill(&auth.user.name);
    Ok(Json(json!({ "ended": id })))
}

#[derive(Deserialize)]
struct Approval {
    /// The levels the senior operator saw pending: the approval applies to exactly those.
    levels: Vec<sightline_proto::Level>,
}

/// A senior operator approves a pending elevation in a segment that requires it (R7), with a
/// fresh passkey step-up (R14). Nobody approves their own session's elevation.
async fn approve_elevation(
    State(state): State<AppState>,
    Extension(auth): Extension<AuthUser>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Json(body): Json<Approval>,
) -> ApiResult<Json<serde_json::Value>> {
    require(&auth, Capability::ApproveElevation)?;
    let session = state.hub.session(&id).filter(|s| !s.is_ended()).ok_or(IdentityError::NotFound)?;
    if session.request.operator.name == auth.user.name {
        return Err(IdentityError::Forbidden("the operator cannot approve their own elevation".into()).into());
    }
    let levels = body.levels.into_iter().collect();
    let conflict = |e: crate::session::SessionError| IdentityError::Conflict(e.to_string());
    // Checked before the step-up so a stale approval costs the senior no passkey prompt; checked
    // again when it is applied.
    session.check_approval(&levels).map_err(conflict)?;
    state.identity.require_step_up(&auth).await?;
    session.note_address(&auth.user.name, peer.ip());
    session.approve(&auth.user.name, &levels).map_err(conflict)?;
    Ok(Json(json!({ "approved": id })))
}
