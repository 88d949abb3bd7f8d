//! Every HTTP route and WebSocket endpoint, called with no identity and with each role, gets the
//! status the access table promises; and every route the router serves is in the table.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use sightline_core::roles::{self, Role};
use sightline_identity::User;
use sightline_relay::http::access::{Access, ROUTES};
use sightline_relay::http::auth::SESSION_COOKIE;
use tower::ServiceExt;

/// Routes registered in the sources: literal `.route("...")` paths plus the socket constants.
fn registered_routes() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for source in [include_str!("../src/http/mod.rs")] {
        for piece in source.split(".route(").skip(1) {
            let arg = piece.split([',', ')']).next().unwrap_or_default().trim();
            let path = match arg {
                "AGENT_WS_PATH" => sightline_proto::AGENT_WS_PATH.to_owned(),
                "VIEWER_WS_PATH" => sightline_proto::VIEWER_WS_PATH.to_owned(),
                literal => literal.trim_matches('"').to_owned(),
            };
            found.insert(path);
        }
    }
    found
}

#[test]
fn every_registered_route_is_in_the_access_table() {
    let table: BTreeSet<String> = ROUTES.iter().map(|(_, path, _)| (*path).to_owned()).collect();
    let registered = registered_routes();
    assert!(registered.len() >= 20, "route scan found too little: {registered:?}");
    let missing: Vec<_> = registered.difference(&table).collect();
    assert!(missing.is_empty(), "routes without an access rule: {missing:?}");
    let stale: Vec<_> = table.difference(&registered).collect();
    assert!(stale.is_empty(), "access rules for routes that do not exist: {stale:?}");
}

fn expected(access: Access, roles: Option<&BTreeSet<Role>>) -> Result<(), StatusCode> {
    match (access, roles) {
        (Access::Public, _) => Ok(()),
        (_, None) => Err(StatusCode::UNAUTHORIZED),
        (Access::SignedIn, Some(_)) => Ok(()),
        (Access::NeedsAny(caps), Some(r)) => {
            if caps.iter().any(|c| roles::allows(r, *c)) {
                Ok(())
            } else {
                Err(StatusCode::FORBIDDEN)
            }
        }
        (Access::Needs(cap), Some(r)) => {
            if roles::allows(r, cap) {
                Ok(())
            } else {
                Err(StatusCode::FORBIDDEN)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = common::config(dir.path(), addr, &[]);
    let state = sightline_relay::server::build(&config, Arc::new(sightline_audit::events::MemorySink::default()))
        .await
        .unwrap();

    // One user per role; each check gets a fresh session (logout is one of the routes).
    let mut identities: Vec<(String, Option<BTreeSet<Role>>, Option<User>)> = vec![("nobody".into(), None, None)];
    for role in Role::ALL {
        let user = User {
            id: format!("id-{}", role.as_str()),
            name: role.as_str().to_owned(),
            display_name: role.as_str().to_owned(),
            roles: BTreeSet::from([role]),
            passkeys: vec![],
            created_ms: 0,
            bootstrap: false,
            directory: None,
            segments: None,
        };
        state.identity.put_user_unchecked(&user).await.unwrap();
        identities.push((role.as_str().to_owned(), Some(user.roles.clone()), Some(user)));
    }
    let identity = state.identity.clone();
    let router = sightline_relay::http::app(state.clone(), &config)
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    tokio::spawn(sightline_relay::server::serve(listener, state, config.clone(), std::future::pending()));

    let mut failures = Vec::new();
    for (method, path, access) in ROUTES {
        for (who, roles, user) in &identities {
            let cookie = match user {
                Some(u) => Some(format!("{SESSION_COOKIE}={}", identity.start_session(u).await.unwrap())),
                None => None,
            };
            let status = if path.starts_with("/ws/") {
                websocket_status(addr, path, cookie.as_deref()).await
            } else {
                let uri = path.replace("{id}", "does-not-exist");
                let mut request =
                    Request::builder().method(*method).uri(uri).header("content-type", "application/json");
                if let Some(c) = &cookie {
                    request = request.header("cookie", c);
                }
                let body = if *method == "POST" { Body::from("{}") } else { Body::empty() };
                router.clone().oneshot(request.body(body).unwrap()).await.unwrap().status()
            };
            let ok = match expected(*access, roles.as_ref()) {
                // Allowed: the route ran and answered the probe (an empty body or an id that does
                // not exist is a 4xx of its own); never a refusal, never a server error.
                Ok(()) => {
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN && !status.is_server_error()
                }
                Err(want) => status == want,
            };
            if !ok {
                failures.push(format!(
                    "{method} {path} as {who}: got {status}, expected {:?}",
                    expected(*access, roles.as_ref())
                ));
            }
        }
    }
    assert!(failures.is_empty(), "authorisation matrix violations:\n{}", failures.join("\n"));
}

/// Opens a real WebSocket; returns 101 when the upgrade succeeded, else the HTTP status.
async fn websocket_status(addr: SocketAddr, path: &str, cookie: Option<&str>) -> StatusCode {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{}{path}", addr.port()).into_client_request().unwrap();
    if let Some(c) = cookie {
        request.headers_mut().insert("cookie", c.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => StatusCode::SWITCHING_PROTOCOLS,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status(),
        Err(e) => panic!("websocket to {path} failed oddly: {e}"),
    }
}
