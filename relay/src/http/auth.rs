//! Who is calling: the session cookie, its verification on every request (renewed when half
//! spent), and the capability checks in front of routes, whose refusals are security events.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sightline_audit::events::{EventKind, Outcome};
use sightline_core::roles::Capability;
use sightline_identity::{AuthUser, Identity, IdentityError};

use super::error::ApiError;
use crate::state::AppState;

pub use sightline_identity::SESSION_COOKIE;
/// The value of the cookie `wanted`, if the request carries it.
pub(super) fn cookie_named(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == wanted).then(|| value.to_owned())
    })
}
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, SESSION_COOKIE)
}
/// The session cookie: HttpOnly (no script reads it), Secure, SameSite=Strict (no cross-site
/// request carries it). It lives as long as the browser session; the token inside expires.
pub fn session_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/"))
        .unwrap_or_else(|_| HeaderValue::from_static("sightline_session=; Path=/"))
}
pub(super) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("sightline_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}
/// Verifies the session of a request; `None` when there is none or it is invalid.
pub async fn authenticate(identity: &Identity, headers: &HeaderMap) -> Result<AuthUser, IdentityError> {
    let token = cookie_value(headers).ok_or(IdentityError::Unauthenticated)?;
    identity.authenticate(&token).await
}
/// Middleware for signed-in routes: verifies the session, hands `AuthUser` to the handler, and
/// renews the cookie when the token is half-spent.
pub(super) async fn signed_in(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Another node carrying its user's request here (R43) presents a token made for that alone.
    if super::carried::is_carried(request.headers()) {
        return super::carried::accept(&state, request, next).await;
    }
    let auth = match authenticate(&state.identity, request.headers()).await {
        Ok(auth) => auth,
        Err(e) => return ApiError(e).into_response(),
    };
    // A break-glass sign-in (R43) calls only what it needs to view and chat.
    if sightline_identity::break_glass::is_break_glass(&auth)
        && !super::break_glass::ALLOWED_PATHS.contains(&request.uri().path())
    {
        let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let path = request.uri().path().to_owned();
        let why = "break-glass: this is not available to a break-glass sign-in (view and chat only)";
        state.identity.emit(EventKind::AccessDenied, Outcome::Failure, &auth.user.name, Some(&path), source, why);
        return ApiError(IdentityError::Forbidden(why.into())).into_response();
    }
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
pub(super) async fn needs_capability(
    State((state, capability)): State<(AppState, Capability)>,
    request: Request,
    next: Next,
) -> Response {
    needs_one_of(&state, std::slice::from_ref(&capability), request, next).await
}
pub(super) async fn needs_any_capability(
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
pub(super) fn with_cookie(token: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response.headers_mut().append(header::SET_COOKIE, session_cookie(token));
    response
}
