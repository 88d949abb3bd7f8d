//! `relay`: the Sightline relay binary.

use anyhow::Context;
use clap::Parser;
use sightline_relay::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .init();
    let args = sightline_core::config_file::expand(std::env::args().collect(), None, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .map_err(anyhow::Error::msg)?;
    let config = Config::parse_from(args);
    config.validate().context("invalid configuration")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "relay listening; open http://{addr}/");
    sightline_relay::server::run(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
