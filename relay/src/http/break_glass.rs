//! `POST /api/break-glass/login` (R43): a named person's sealed one-time code lets them in on
//! this node, only while the normal sign-in cannot work (the store or an identity provider does
//! not answer). The code is spent on the node's disk and the sign-in recorded before the cookie
//! is handed out; what such a person may then do is `sightline_core::break_glass`'s rules, held
//! by `auth::signed_in` (routes) and the viewer socket (sessions).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use serde::Deserialize;

use super::auth::with_cookie;
use super::error::ApiResult;
use crate::state::AppState;

/// How long the store and each identity provider get to answer before they count as down.
const PROBE_WITHIN: Duration = Duration::from_secs(3);

/// The routes a break-glass sign-in may call besides the viewer socket: who am I, stay signed
/// in, sign out. Everything else is refused with the break-glass reason.
pub(super) const ALLOWED_PATHS: [&str; 3] = ["/api/me", "/api/session/refresh", "/api/logout"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    holder: String,
    code: String,
}

/// Why the normal sign-in cannot work now, if it cannot: the store does not answer (`true`), or
/// an identity provider does not (its people cannot sign in).
async fn why_needed(state: &AppState) -> Option<(bool, String)> {
    if let Err(e) = state.identity.store_reachable(PROBE_WITHIN).await {
        return Some((true, format!("the shared store does not answer: {e}")));
    }
    for provider in state.sso.iter().flat_map(|s| s.providers()) {
        if let Err(e) = provider.reachable(PROBE_WITHIN).await {
            return Some((false, format!("the identity provider does not answer: {e}")));
        }
    }
    None
}

pub(super) async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<SignIn>,
) -> ApiResult<Response> {
    let needed = why_needed(&state).await;
    let why = needed.as_ref().map_or("", |(_, why)| why.as_str());
    let (token, auth) =
        state.identity.break_glass_sign_in(&body.holder, &body.code, peer.ip(), needed.is_none(), why).await?;
    // With the store down, the second copy of the audit log is too: while this person is in, the
    // node's disk alone acknowledges records, and the copy gets them when it is back. (With only
    // an identity provider down, the copy works and is waited for as always.)
    if let (Some(audit), Some((true, _))) = (&state.audit, &needed) {
        audit.acknowledge_on_disk_alone(true);
    }
    if let Err(e) = state.identity.audit_committed().await {
        // Not recorded, so not in: the code stays spent.
        state.identity.logout(&auth, Some(peer.ip())).await.ok();
        return Err(e.into());
    }
    tracing::warn!(holder = %auth.user.name, %peer, "break-glass sign-in");
    Ok(with_cookie(&token, Json(super::account::UserView::from(&auth.user))))
}

/// Keeps the audit log's "disk alone" switch on exactly while someone is in through break-glass
/// and the store does not answer.
pub async fn follow(state: AppState) {
    let Some(audit) = state.audit.clone() else { return };
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        let on = state.identity.break_glass_in_use()
            && state.identity.store_reachable(Duration::from_millis(800)).await.is_err();
        audit.acknowledge_on_disk_alone(on);
    }
}
