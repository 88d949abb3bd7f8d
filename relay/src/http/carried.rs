//! A signed-in user's request carried from one node to another (R43), over HTTP: today the
//! auditor's view of a recording that another node holds on its disk. A load balancer places the
//! auditor on any node; that node asks the node holding the recording, with a fresh token of the
//! auditor's own login session under the carried requests' own audience (`Identity::forward_token`,
//! `Carrying::Request`) and a statement signed by its node key naming the auditor's address and
//! this one request (`sightline_core::cluster::Forwarded`, purpose `GET <path>`), as it carries a
//! viewer's socket (`sockets::forward`). Neither opens anything but that request: not the viewer
//! socket, not another chunk. The holding node checks both, takes the address from the
//! statement, and serves the request as its own: role, step-up and the `recording.viewed` record
//! are decided and written there, where the recording is.
//!
//! Only the paths `CARRIED_PATHS` names accept a carried request; any other path refuses one, so
//! a forward token opens nothing else.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sightline_audit::events::{EventKind, Outcome};
use sightline_core::cluster::{FORWARDED_HEADER, NodeRecord};
use sightline_identity::{AuthUser, Carrying, IdentityError, SESSION_COOKIE};

use crate::state::AppState;

/// How long the node holding the recording has to start its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole answer (a chunk of a few megabytes) may take between two nodes.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a carried request may ask for `path`: the auditor's view of one recording (its
/// manifest and its chunks), never the search (every node answers that from the shared index)
/// nor anything else.
pub fn carried_path(method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/recordings/") else { return false };
    let parts: Vec<&str> = rest.split('/').collect();
    *method == Method::GET
        && match parts.as_slice() {
            [id] => !id.is_empty(),
            [id, "chunks", n] => !id.is_empty() && !n.is_empty(),
            _ => false,
        }
}

/// Marks a request another node carried here: it is answered here or refused, never carried on.
#[derive(Debug, Clone, Copy)]
pub struct Carried;

/// Whether a request says another node carried it.
pub fn is_carried(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// The user another node forwards a socket or carries a request for, and the address that
/// node's statement names: the token must be one a node made for `carrying` (`forward_token`),
/// and the statement a live node's signature for this very login session, this node and
/// `purpose` (the socket, or the one request), within its validity.
pub async fn carried_user(
    state: &AppState,
    headers: &HeaderMap,
    carrying: Carrying,
    purpose: &str,
) -> Result<(AuthUser, Result<IpAddr, String>), IdentityError> {
    let token = super::auth::cookie_named(headers, SESSION_COOKIE).ok_or(IdentityError::Unauthenticated)?;
    let auth = state.identity.authenticate_forwarded(&token, carrying).await?;
    let client = match headers.get(FORWARDED_HEADER).map(|v| v.to_str()) {
        None => Err("the statement is missing".to_owned()),
        Some(Err(_)) => Err("the header is not text".to_owned()),
        Some(Ok(v)) => state
            .cluster
            .verify_forwarded(v, &auth.claims.sid, purpose)
            .await
            .map(|f| f.client)
            .map_err(|e| e.to_string()),
    };
    Ok((auth, client))
}

/// The error code with which a node refuses a carried request itself (its token or statement),
/// as opposed to answering it: the carrying node reports it as its own failure, never as the
/// user's (a 401 there would read as "signed out").
const CARRY_REFUSED: &str = "carry_refused";

fn carry_refused(why: String) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(serde_json::json!({ "error": CARRY_REFUSED, "message": why }))).into_response()
}

/// The part of `signed_in` for a request another node carried: accepted on `CARRIED_PATHS` only,
/// with the user's address taken from the statement (so the handlers record the auditor's
/// address, not the other node's), and never a renewed cookie (the token is the carrying node's,
/// for this one request).
pub(super) async fn accept(state: &AppState, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let purpose = sightline_core::cluster::request_purpose(request.method().as_str(), &path);
    let (auth, client) = match carried_user(state, request.headers(), Carrying::Request, &purpose).await {
        Ok(found) => found,
        Err(e) => return carry_refused(format!("the carried request's token: {e}")),
    };
    let refused = |why: String| {
        state.identity.emit(EventKind::AccessDenied, Outcome::Failure, &auth.user.name, Some(&path), source, &why);
        carry_refused(why)
    };
    if !carried_path(request.method(), &path) {
        return refused("a request carried from another node is taken only for a recording's view".into());
    }
    let client = match client {
        Ok(client) => client,
        Err(why) => return refused(format!("carried request refused: {why}")),
    };
    request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, 0)));
    request.extensions_mut().insert(auth);
    request.extensions_mut().insert(Carried);
    next.run(request).await
}

/// Asks `node` for `path` on behalf of `auth` (connected here from `client`) and hands its answer
/// on as it came: the status, the JSON error or the body, streamed (a chunk is not held whole).
pub async fn fetch(state: &AppState, auth: &AuthUser, client: IpAddr, node: &NodeRecord, path: &str) -> Response {
    match ask(state, auth, client, node, path).await {
        Ok(response) => response,
        Err(why) => {
            tracing::warn!(node = %node.name, %path, "a carried request failed: {why}");
            let message = format!("relay node {} holds it and cannot be reached now: {why}", node.name);
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({ "error": "node_unreachable", "message": message })),
            )
                .into_response()
        }
    }
}

async fn ask(
    state: &AppState,
    auth: &AuthUser,
    client: IpAddr,
    node: &NodeRecord,
    path: &str,
) -> Result<Response, String> {
    let token =
        state.identity.forward_token(auth, Carrying::Request).await.map_err(|e| format!("your session: {e}"))?;
    let purpose = sightline_core::cluster::request_purpose("GET", path);
    let statement = state.cluster.forward_header(&purpose, &node.name, &auth.claims.sid, client);
    let url = format!("{}{path}", node.url.trim_end_matches('/'));
    let answer = state
        .carrier
        .get(&url)
        .header(header::COOKIE, format!("{SESSION_COOKIE}={token}"))
        .header(FORWARDED_HEADER, statement)
        .timeout(TRANSFER_TIMEOUT)
        .send();
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()))?
        .map_err(|e| e.without_url().to_string())?;
    let status = StatusCode::from_u16(answer.status().as_u16()).map_err(|e| e.to_string())?;
    let mut response = Response::builder().status(status);
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL, header::RETRY_AFTER] {
        if let Some(value) =
            answer.headers().get(name.as_str()).and_then(|v| header::HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            response = response.header(name, value);
        }
    }
    if status.is_success() {
        return response.body(Body::from_stream(answer.bytes_stream())).map_err(|e| e.to_string());
    }
    // A refusal is a small JSON answer: the node's refusal of the carrying itself is this node's
    // failure, anything else (the role, the step-up) the auditor's to see.
    let body = answer.bytes().await.map_err(|e| e.without_url().to_string())?;
    if let Ok(refusal) = serde_json::from_slice::<serde_json::Value>(&body)
        && refusal["error"] == CARRY_REFUSED
    {
        return Err(format!("it refused this node's request: {}", refusal["message"].as_str().unwrap_or("no reason")));
    }
    response.body(Body::from(body)).map_err(|e| e.to_string())
}

/// The HTTP client nodes carry requests with: no redirects followed (a node answers itself or
/// refuses), and the system's trust roots as for the sockets it carries.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    // No proxy either: nodes reach each other directly, as their sockets do, and a token between
    // them passes through nobody else.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recording_s_view_is_carried() {
        for path in ["/api/recordings/ab12", "/api/recordings/ab12/chunks/3"] {
            assert!(carried_path(&Method::GET, path), "{path}");
            assert!(!carried_path(&Method::POST, path), "{path}");
        }
        for path in [
            "/api/recordings",
            "/api/recordings/",
            "/api/recordings/ab12/chunks",
            "/api/recordings/ab12/chunks/",
            "/api/recordings/ab12/other/3",
            "/api/recordings/ab12/chunks/3/more",
            "/api/admin/users",
            "/api/audit/records",
            "/ws/viewer",
        ] {
            assert!(!carried_path(&Method::GET, path), "{path}");
        }
    }
}
