//! `relay`: the Sightline relay binary.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sightline_relay::config::Config;
use sightline_relay::events::LogSink;
use sightline_relay::server;

#[derive(Debug, Parser)]
#[command(name = "relay", version, about = "Sightline relay", args_override_self = true)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Agent enrolment tokens (for operators of the system; admins can also use the dashboard).
    AgentToken {
        #[command(subcommand)]
        action: AgentTokenAction,
    },
    /// Break-glass: lift a login lock when no admin can sign in (audited).
    Unlock {
        /// User name whose account lock to lift.
        #[arg(long, conflicts_with = "address")]
        account: Option<String>,
        /// Source address whose lock to lift.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
    },
}

#[derive(Debug, Subcommand)]
enum AgentTokenAction {
    /// Print a one-time token that enrols one agent into SEGMENT (valid 24 h).
    Create {
        #[arg(long)]
        segment: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .init();
    let args = sightline_core::config_file::expand(std::env::args().collect(), None, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .map_err(anyhow::Error::msg)?;
    let cli = Cli::parse_from(args);
    let config = cli.config;
    match cli.command {
        Some(Command::AgentToken { action: AgentTokenAction::Create { segment } }) => {
            let store = server::open_store(&config).await.context(
                "cannot open the relay's state (with the embedded store the running relay holds it: stop it, or create the token from the admin dashboard)",
            )?;
            let identity = server::identity(&config, store, Arc::new(LogSink)).await?;
            let token = identity.create_agent_token("cli", &segment, None).await?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Unlock { account, address }) => {
            let store = server::open_store(&config)
                .await
                .context("cannot open the relay's state (with the embedded store, stop the relay first)")?;
            let identity = server::identity(&config, store, Arc::new(LogSink)).await?;
            identity.unlock_from_cli(account.as_deref(), address).await?;
            println!("unlocked");
            Ok(())
        }
        None => {
            config.validate().context("invalid configuration")?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "relay listening; open {}", config.public_url());
            server::run(listener, config, shutdown_signal()).await
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("shutting down");
}
