//! `agent`: the Sightline endpoint agent. It dials out to the relay and never listens.

use clap::{Parser, Subcommand};
use sightline_agent::capture::SourceKind;
use sightline_agent::connection::{self, RunConfig};
use sightline_agent::encoder::EncoderConfig;

#[derive(Debug, Parser)]
// `agent help` asks the service desk for help (R2); clap's own help stays `--help`.
#[command(
    name = "agent",
    version,
    about = "Sightline endpoint agent (outbound connections only)",
    disable_help_subcommand = true
)]
struct Cli {
    /// How the agent writes its own log to stderr: `text` for a terminal, `json` (one object per
    /// line, with the spans that identify the work) for a log pipeline.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: sightline_agent::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enrol this endpoint with a one-time token from the relay's admin (creates the device key).
    Enroll(EnrollArgs),
    /// Release remote support for this endpoint for a while (a maintenance window), e.g. `--for 30m`.
    Allow(AllowArgs),
    /// Withdraw remote support now: close this endpoint's open maintenance window early. Sessions
    /// that need the window end within seconds.
    CloseWindow(DeviceCallArgs),
    /// Ask the service desk for help: prints a one-time code to read to them over the phone
    /// (valid for 10 minutes, once). The session that follows still asks for your consent.
    /// With `--window`, a window with a "Request help" button shows the code instead.
    Help(HelpArgs),
    /// Connect to the relay and serve screen views until stopped. `--config FILE` reads a TOML
    /// file whose keys are these flags' long names; flags on the command line override it.
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// The consent window and session bar (started by `agent run`; speaks JSON lines on stdin
    /// and stdout).
    #[command(hide = true)]
    ConsentUi,
}

/// How the agent reaches the relay: TLS trust and the corporate proxy (R1).
#[derive(Debug, clap::Args)]
struct RouteArgs {
    /// Extra CA certificate (PEM) to trust for wss:// besides the system's.
    #[arg(long, env = "SIGHTLINE_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// The HTTP proxy to reach the relay through (http://host:port); without it, HTTPS_PROXY or
    /// https_proxy from the environment. Keep credentials out of it: see --proxy-credentials.
    #[arg(long, env = "SIGHTLINE_PROXY")]
    proxy: Option<String>,
    /// A file holding the proxy's Basic credentials on one line, user:password (else
    /// SIGHTLINE_PROXY_USER and SIGHTLINE_PROXY_PASSWORD from the environment).
    #[arg(long, env = "SIGHTLINE_PROXY_CREDENTIALS")]
    proxy_credentials: Option<std::path::PathBuf>,
    /// Hosts reached without the proxy, comma-separated (names, addresses, .domain suffixes, *);
    /// without it, NO_PROXY or no_proxy from the environment.
    #[arg(long)]
    no_proxy: Option<String>,
}

impl RouteArgs {
    fn route(&self) -> anyhow::Result<connection::Route> {
        let settings = sightline_agent::proxy::ProxySettings {
            proxy: self.proxy.clone(),
            credentials_file: self.proxy_credentials.clone(),
            no_proxy: self.no_proxy.clone(),
        };
        Ok(connection::Route {
            ca_cert: self.ca_cert.clone(),
            proxy: sightline_agent::proxy::Proxy::from_settings(&settings)?,
        })
    }
}

#[derive(Debug, clap::Args)]
struct EnrollArgs {
    /// Relay base URL (ws://, wss://, http:// or https://).
    #[arg(long, env = "SIGHTLINE_RELAY_URL")]
    relay_url: url::Url,
    /// The one-time enrolment token.
    #[arg(long)]
    token: String,
    /// Name operators will see (defaults to the host name).
    #[arg(long)]
    name: Option<String>,
    /// Where the device key is kept.
    #[arg(long, env = "SIGHTLINE_AGENT_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    route: RouteArgs,
    /// The relay node's key as its admin gave it to you (the node's audit.pub, or a file holding
    /// it). Without it, the agent pins the key the relay proves it holds now (trust on first use).
    /// Every later connection is refused unless the relay proves this key, or one it endorsed.
    #[arg(long, env = "SIGHTLINE_RELAY_KEY")]
    relay_key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct AllowArgs {
    /// Relay base URL (ws://, wss://, http:// or https://).
    #[arg(long, env = "SIGHTLINE_RELAY_URL")]
    relay_url: url::Url,
    /// How long, e.g. 30m, 2h, 90s (at most 12h).
    #[arg(long = "for", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Where the device key is kept (as given to `agent enroll`).
    #[arg(long, env = "SIGHTLINE_AGENT_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    route: RouteArgs,
}

/// A one-shot call to the relay with the device key (`help`, `close-window`).
#[derive(Debug, clap::Args)]
struct DeviceCallArgs {
    /// Relay base URL (ws://, wss://, http:// or https://).
    #[arg(long, env = "SIGHTLINE_RELAY_URL")]
    relay_url: url::Url,
    /// Where the device key is kept (as given to `agent enroll`).
    #[arg(long, env = "SIGHTLINE_AGENT_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    route: RouteArgs,
}

#[derive(Debug, clap::Args)]
struct HelpArgs {
    #[command(flatten)]
    call: DeviceCallArgs,
    /// Open a window with a "Request help" button (for a desktop shortcut) instead of printing.
    #[arg(long)]
    window: bool,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a number with s, m or h"))?;
    let seconds = match unit {
        "s" => n,
        "m" | "" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    if seconds == 0 || seconds > 12 * 3600 {
        return Err("a window lasts between 1 s and 12 h".into());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where the device key is kept (as given to `agent enroll`).
    #[arg(long, env = "SIGHTLINE_AGENT_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    route: RouteArgs,
    /// Relay base URL (ws:// or wss://, or http(s):// which is mapped to ws(s)://). Repeat it
    /// (or separate by commas) for the nodes of a service: each is tried in turn when the one in
    /// use is gone (R43).
    #[arg(long = "relay-url", env = "SIGHTLINE_RELAY_URL", value_delimiter = ',', required = true)]
    relay_urls: Vec<url::Url>,
    /// Screen source.
    #[arg(long, value_enum, default_value = "x11")]
    source: SourceKind,
    /// Capture rate in frames per second.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=60))]
    fps: u32,
    /// Target video bitrate in kbit/s.
    #[arg(long, default_value_t = 2500, value_parser = clap::value_parser!(u32).range(100..=50_000))]
    bitrate_kbps: u32,
    /// libvpx cpu-used for VP8 (higher is faster, 0-16).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(0..=16))]
    cpu_used: u32,
    /// Synthetic source size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    synthetic_size: (u32, u32),
    /// For a server with nobody at the screen: never ask for consent. The relay then serves this
    /// endpoint only in segments that allow unattended access, inside an open maintenance
    /// window, recorded; every other request is refused (R2).
    #[arg(long)]
    unattended: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| "bad width")?, h.parse().map_err(|_| "bad height")?);
    if !(64..=7680).contains(&w) || !(64..=4320).contains(&h) || w % 2 != 0 || h % 2 != 0 {
        return Err("size must be even, 64x64 to 7680x4320".into());
    }
    Ok((w, h))
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "endpoint".into())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = sightline_core::config_file::expand(std::env::args().collect(), Some("run"), |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .map_err(anyhow::Error::msg)?;
    let cli = Cli::parse_from(args);
    sightline_agent::logging::init(cli.log_format);
    match cli.command {
        Command::Enroll(args) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let name = args.name.unwrap_or_else(host_name);
            let relay_key = args.relay_key.map(|k| std::fs::read_to_string(&k).unwrap_or(k).trim().to_owned());
            let info = connection::enroll(
                &connection::agent_socket_url(&args.relay_url)?,
                &args.token,
                &name,
                &dir,
                &args.route.route()?,
                relay_key.as_deref(),
            )
            .await?;
            println!(
                "enrolled as {} (device {}) in segment {}; key saved in {}",
                info.name,
                info.device_id,
                info.segment,
                dir.display()
            );
            Ok(())
        }
        Command::Allow(args) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let device = sightline_agent::device::Device::load(&dir)?;
            let (_, end_ms) = connection::open_window(
                &connection::agent_socket_url(&args.relay_url)?,
                &device,
                args.duration,
                &args.route.route()?,
            )
            .await?;
            println!("remote support allowed for {} s (until {end_ms} Unix ms)", args.duration.as_secs());
            Ok(())
        }
        Command::CloseWindow(args) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let device = sightline_agent::device::Device::load(&dir)?;
            let url = connection::agent_socket_url(&args.relay_url)?;
            if connection::close_window(&url, &device, &args.route.route()?).await? {
                println!("remote support withdrawn: the maintenance window is closed");
            } else {
                println!("no maintenance window was open");
            }
            Ok(())
        }
        Command::Help(HelpArgs { call: args, window: true }) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let device = std::sync::Arc::new(sightline_agent::device::Device::load(&dir)?);
            let url = connection::agent_socket_url(&args.relay_url)?;
            let route = args.route.route()?;
            let ask: sightline_agent::help_window::Ask = Box::new(move || {
                let (device, url, route) = (device.clone(), url.clone(), route.clone());
                Box::pin(async move { connection::ask_help(&url, &device, &route).await })
            });
            sightline_agent::help_window::run(tokio::runtime::Handle::current(), ask)
        }
        Command::Help(HelpArgs { call: args, window: false }) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let device = sightline_agent::device::Device::load(&dir)?;
            let (code, expires_ms) =
                connection::ask_help(&connection::agent_socket_url(&args.relay_url)?, &device, &args.route.route()?)
                    .await?;
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            let minutes = expires_ms.saturating_sub(now_ms).div_ceil(60_000);
            println!("Your help code: {}", sightline_core::help::spoken(&code));
            println!(
                "Read it to the service desk; it is valid for {minutes} more minute(s) (until {expires_ms} Unix ms), once."
            );
            Ok(())
        }
        Command::ConsentUi => sightline_agent::ui::run(),
        Command::Run(args) => {
            let dir = args.data_dir.unwrap_or_else(sightline_agent::device::default_data_dir);
            let device = std::sync::Arc::new(sightline_agent::device::Device::load(&dir)?);
            let config = RunConfig {
                relay_urls: args.relay_urls.iter().map(connection::agent_socket_url).collect::<anyhow::Result<_>>()?,
                device,
                source: args.source,
                route: args.route.route()?,
                unattended: args.unattended,
                synthetic_size: args.synthetic_size,
                encoder: EncoderConfig {
                    width: 0,
                    height: 0,
                    fps: args.fps,
                    bitrate_kbps: args.bitrate_kbps,
                    cpu_used: args.cpu_used,
                    threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32),
                },
            };
            connection::run(config, shutdown_signal()).await
        }
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
