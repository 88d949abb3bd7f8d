//! HTTP surface: the viewer's static files, `/healthz`, and the two WebSocket endpoints.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::IntoResponse;
use axum::routing::get;
use sightline_proto::{AGENT_WS_PATH, MAX_SIGNAL_BYTES, VIEWER_WS_PATH};
use tower_http::services::ServeDir;

use crate::config::Config;
use crate::hub::Hub;
use crate::sfu::Media;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
}

/// Builds the router; tests call it without a listener.
pub fn app(state: AppState, config: &Config) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(AGENT_WS_PATH, get(agent_ws))
        .route(VIEWER_WS_PATH, get(viewer_ws))
        .fallback_service(ServeDir::new(&config.static_dir))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok", "agents_online": state.hub.roster().len() }))
}

async fn agent_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    ws.max_message_size(MAX_SIGNAL_BYTES)
        .max_frame_size(MAX_SIGNAL_BYTES)
        .on_upgrade(move |socket| crate::agent_socket::serve(state.hub, socket, peer))
}

async fn viewer_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ws: WebSocketUpgrade,
) -> impl IntoResponse {
    ws.max_message_size(MAX_SIGNAL_BYTES)
        .max_frame_size(MAX_SIGNAL_BYTES)
        .on_upgrade(move |socket| crate::viewer_socket::serve(state.hub, socket, peer))
}

/// Runs the relay on `listener` until `shutdown` completes, then closes every peer connection.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let media = Media::new(config.media_ip)?;
    let hub = Hub::new(media);
    let router = app(AppState { hub: hub.clone() }, &config);
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    hub.shutdown().await;
    Ok(())
}
