//! The agent's outbound connection to the relay: hello, publish on request, reconnect with
//! backoff when the relay goes away.
//!
//! The agent pings the relay every `PING_EVERY` (1 s) and treats `DEAD_AFTER` (4 s) without any
//! frame from it as a dead relay, even when TCP says nothing: held keys and buttons are released
//! and capture stops at once, the loss is logged, and the agent reconnects with exponential
//! backoff and jitter (250 ms to 10 s, `backon`); a connection that lasted `STABLE_AFTER` resets
//! the backoff. With one relay address the session ends with the relay (R22). With several
//! (R43), a session the user consented to is suspended instead (`Carried` keeps it across
//! connections): the agent tries the next node within half a second, claims the session in its
//! `hello` with the user's signed receipts, and goes on once that node answers `resumed`; a
//! refusal, or no node within `RESUME_GRACE_MS`, ends it here. Cleartext `ws://` is refused except to a relay on this
//! machine.
//!
//! This loop is the agent's second gate for media: `publish` is refused (`publish_failed`) unless
//! a session the user consented to runs. A request the endpoint cannot honour is declined before
//! its user is asked, with the reason: another session runs here, or the segment's mask rules
//! need windows this screen source does not have. A message about a session this endpoint does
//! not run is answered too, so the relay ends it instead of waiting.

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backon::BackoffBuilder;
use futures_util::{SinkExt, StreamExt};
use sightline_core::relay_proof::{RelayProofError, Trust};
use sightline_proto::{
    AGENT_WS_PATH, AgentToRelay, MAX_SIGNAL_BYTES, RelayToAgent, SessionEvent, decode, encode, relay_proof,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::Instrument;

use crate::capture::SourceKind;
use crate::device::{Device, DeviceInfo};
use crate::encoder::EncoderConfig;
use crate::frontend::FrontendEvent;
use crate::publisher::{Publication, PublishConfig, Sealing};
use crate::session::{Action, EndpointSession};
use sightline_peer::{DirectDialer, Outbox, Sockets};
use sightline_proto::channel::ChannelMessage;

/// Chat lines waiting for the data channel.
const CHANNEL_QUEUE: usize = 64;
/// How long a chat line may wait for the data channel before the user is told it was not sent.
const CHAT_WAIT: Duration = Duration::from_secs(10);
/// The `from` of a chat notice that a line did not reach the relay.
const NOT_DELIVERED: &str = "not delivered";

/// How often the session's local deadlines are checked.
const SESSION_TICK: Duration = Duration::from_millis(250);

/// How often the agent pings the relay, and how long silence means the relay is gone. A dead
/// relay behind a silent network is noticed within `DEAD_AFTER`.
const PING_EVERY: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(4);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What `agent run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The agent WebSocket URLs of the relay nodes, tried in turn (R43); never empty.
    pub relay_urls: Vec<url::Url>,
    /// The enrolled identity this agent proves on every connection.
    pub device: std::sync::Arc<Device>,
    pub source: SourceKind,
    pub synthetic_size: (u32, u32),
    /// Rate and quality; the frame size comes from the source.
    pub encoder: EncoderConfig,
    /// Whom TLS trusts, and the proxy on the way.
    pub route: Route,
    /// A server with nobody at the screen (R2): never asks, serves only what the relay serves
    /// unattended.
    pub unattended: bool,
}

/// How the agent reaches the relay: whom it trusts for TLS, and the proxy it goes through.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Extra CA certificate (PEM) trusted for `wss://` besides the system's.
    pub ca_cert: Option<std::path::PathBuf>,
    /// The corporate HTTP proxy (R1), for every relay host its `NO_PROXY` does not exclude.
    pub proxy: Option<crate::proxy::Proxy>,
}

impl Route {
    /// The proxy connections to `host` go through, if any.
    pub fn proxy_for(&self, host: &str) -> Option<&crate::proxy::Proxy> {
        self.proxy.as_ref().filter(|p| p.applies_to(host))
    }
}

/// Maps the relay base URL given by the user to its agent WebSocket URL.
pub fn agent_socket_url(base: &url::Url) -> anyhow::Result<url::Url> {
    let mut url = base.clone();
    let scheme = match base.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        other => bail!("relay URL scheme {other:?} is not supported (use ws, wss, http or https)"),
    };
    // Without TLS the relay is not authenticated: anyone on the path could pose as it and ask
    // for the screen. Cleartext is for a relay on this very machine only.
    let local = match base.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if scheme == "ws" && !local {
        bail!("refusing a cleartext connection to {base}: use wss:// (https://) for a relay on another host");
    }
    url.set_scheme(scheme).map_err(|()| anyhow::anyhow!("cannot use scheme {scheme} with {base}"))?;
    url.set_path(AGENT_WS_PATH);
    Ok(url)
}

/// Connects, serves, and reconnects until `shutdown` completes.
///
/// With several relay addresses (R43), every attempt after a failure or a loss goes to the next
/// one: a node that just went away, or refused, is likely still gone, and the next is tried
/// first. A connection that worked for `STABLE_AFTER` and was lost is followed by a random pause
/// up to `SPREAD_AFTER_LOSS`, so the agents of a lost node do not all arrive at another in the
/// same second; failed attempts back off (250 ms to 10 s, with jitter). A name that resolves to
/// several addresses is tried address by address within one attempt.
pub async fn run(config: RunConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    anyhow::ensure!(!config.relay_urls.is_empty(), "no relay address to connect to");
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    // Agents start on a node of their own choosing, so that a service's agents spread over its
    // nodes instead of all starting on the first.
    let mut next = {
        let mut bytes = [0u8; 4];
        let _ = getrandom::fill(&mut bytes);
        u32::from_le_bytes(bytes) as usize % config.relay_urls.len()
    };
    let mut carried = Carried::new();
    loop {
        let url = &config.relay_urls[next % config.relay_urls.len()];
        let started = Instant::now();
        if let Some(s) = carried.endpoint.as_mut() {
            // A suspension past its grace ends here, relay or not (what it would tell the relay
            // goes nowhere: the next node knows of no such session).
            let _ = s.tick().await;
        }
        tokio::select! {
            () = &mut shutdown => break,
            result = session(&config, url, &mut carried).instrument(tracing::info_span!("relay_connection", relay = %url, device = %config.device.info.device_id)) => match result {
                Ok(()) => tracing::warn!(relay = %url, "relay closed the connection"),
                Err(e) => tracing::warn!(relay = %url, "relay connection lost: {e:#}"),
            },
        }
        next += 1;
        let delay = if carried.endpoint.as_ref().is_some_and(EndpointSession::is_suspended) {
            // A session waits for the next node: no spreading out, no backoff (R43). Only the
            // few agents with a running session skip the spread.
            backoff = new_backoff();
            random_below(SUSPENDED_RETRY)
        } else if started.elapsed() >= STABLE_AFTER {
            backoff = new_backoff();
            spread_after_loss()
        } else {
            backoff.next().unwrap_or(Duration::from_secs(10))
        };
        let url = &config.relay_urls[next % config.relay_urls.len()];
        tracing::info!(?delay, "reconnecting to {url}");
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// After a working connection was lost, each agent waits a random time up to this before it
/// connects again: a node's thousand agents reach the others over three seconds, not at once.
const SPREAD_AFTER_LOSS: Duration = Duration::from_secs(3);

fn spread_after_loss() -> Duration {
    random_below(SPREAD_AFTER_LOSS)
}

/// How soon an agent whose session is suspended tries the next node (R43): at random below this.
const SUSPENDED_RETRY: Duration = Duration::from_millis(500);

fn random_below(max: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    // Without randomness, no spread rather than no reconnection.
    let _ = getrandom::fill(&mut bytes);
    let max = u32::try_from(max.as_millis()).unwrap_or(u32::MAX).max(1);
    Duration::from_millis(u64::from(u32::from_le_bytes(bytes) % max))
}

/// What outlives one relay connection: the session (suspended while another relay node takes it
/// over, R43) and the events of its window.
struct Carried {
    endpoint: Option<EndpointSession>,
    frontend_tx: tokio::sync::mpsc::Sender<(String, FrontendEvent)>,
    frontend_rx: tokio::sync::mpsc::Receiver<(String, FrontendEvent)>,
}

impl Carried {
    fn new() -> Carried {
        let (frontend_tx, frontend_rx) = tokio::sync::mpsc::channel(16);
        Carried { endpoint: None, frontend_tx, frontend_rx }
    }
}

/// The local address that routes to the relay: media binds there, so its one ICE candidate is
/// one the relay can reach. (Connecting a UDP socket sends nothing.)
/// Behind `proxy` that is the proxy: the relay's name may not even resolve here, and the
/// proxy is the only way out.
async fn local_ip_towards(url: &url::Url, proxy: Option<&crate::proxy::Proxy>) -> anyhow::Result<IpAddr> {
    if let Some(proxy) = proxy {
        let (host, port) = proxy.address().rsplit_once(':').context("proxy address has no port")?;
        return local_ip_to(host, port.parse().context("proxy port")?).await;
    }
    let host = url.host_str().context("relay URL has no host")?;
    local_ip_to(host, url.port_or_known_default().unwrap_or(443)).await
}

async fn local_ip_to(host: &str, port: u16) -> anyhow::Result<IpAddr> {
    let target = tokio::net::lookup_host((host.trim_matches(|c| c == '[' || c == ']'), port))
        .await
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let bind: std::net::SocketAddr =
        if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(target).await?;
    Ok(socket.local_addr()?.ip())
}

/// The size operators see in the list. Opening the source also tells early when the display is
/// unreachable; publishing retries it, so a display that appears later still works.
async fn screen_size(config: &RunConfig) -> (u32, u32) {
    let (kind, size) = (config.source, config.synthetic_size);
    match tokio::task::spawn_blocking(move || crate::capture::open(kind, size).map(|s| s.size())).await {
        Ok(Ok(size)) => size,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "screen source not available yet");
            (0, 0)
        }
        Err(_) => (0, 0),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// TLS trust for `wss://`: the system's CA store plus an optional extra CA (a bank's internal one).
fn tls_connector(ca_cert: Option<&std::path::Path>) -> anyhow::Result<tokio_tungstenite::Connector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_cert {
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read CA certificate {}", path.display()))?
        {
            roots.add(cert.with_context(|| format!("invalid PEM in {}", path.display()))?)?;
        }
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config)))
}

/// Dials the relay with the agent's fresh `nonce` (which the relay's first message signs),
/// through the proxy when one applies: TLS and the WebSocket then run inside its tunnel, so the
/// proxy sees only the relay's name and port.
async fn connect(url: &url::Url, route: &Route, nonce: &[u8]) -> anyhow::Result<Socket> {
    let ws_config =
        WebSocketConfig::default().max_message_size(Some(MAX_SIGNAL_BYTES)).max_frame_size(Some(MAX_SIGNAL_BYTES));
    let connector = if url.scheme() == "wss" { Some(tls_connector(route.ca_cert.as_deref())?) } else { None };
    let mut dialled = url.clone();
    dialled.query_pairs_mut().append_pair(relay_proof::NONCE_PARAM, &hex::encode(nonce));
    let host = url.host_str().context("relay URL has no host")?;
    let port = url.port_or_known_default().context("relay URL has no port")?;
    let (stream, failed) = match route.proxy_for(host) {
        Some(proxy) => (
            proxy.tunnel(host.trim_matches(['[', ']']), port).await?,
            format!("cannot connect to {url} through the proxy"),
        ),
        None => {
            let stream = connect_any(host.trim_matches(['[', ']']), port)
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            (stream, format!("cannot connect to {url}"))
        }
    };
    let handshake =
        tokio_tungstenite::client_async_tls_with_config(dialled.as_str(), stream, Some(ws_config), connector);
    // A node that takes the connection and then hangs is given up like one that is gone.
    let (ws, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| {
            anyhow::anyhow!("{url} did not complete TLS and the WebSocket handshake within {HANDSHAKE_TIMEOUT:?}")
        })?
        .context(failed)?;
    Ok(ws)
}

/// How long a TCP connection to one address of the relay may take to open. A node that lost its
/// power answers nothing (no refusal), and the system would wait minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long TLS and the WebSocket upgrade may take once TCP is open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens TCP to `host`, trying each address it resolves to in turn, `CONNECT_TIMEOUT` each: a
/// name that resolves to the nodes of a service reaches the first that answers (R43).
async fn connect_any(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpStream> {
    let addresses: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("cannot resolve the relay's name {host}"))?
        .collect();
    let mut failures = Vec::new();
    for address in &addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => failures.push(format!("{address}: {e}")),
            Err(_) => failures.push(format!("{address}: no answer within {CONNECT_TIMEOUT:?}")),
        }
    }
    bail!("cannot reach the relay {host}:{port} at any of its addresses ({})", failures.join("; "))
}

/// Which relay node the agent will talk to.
enum Expect<'a> {
    /// Enrolment: the key the admin gave (`--relay-key`), or else the one the relay proves it
    /// holds (trust on first use), which the agent pins.
    FirstUse(Option<&'a str>),
    /// An enrolled device: a key it pinned, or one a pinned key endorsed (then pinned too).
    Pinned(&'a Device),
}

/// A connection to a relay that proved it holds the node key `expect` allows: the socket, the
/// relay's challenge for this connection, and the node key.
async fn dial(url: &url::Url, route: &Route, expect: Expect<'_>) -> anyhow::Result<(Socket, Vec<u8>, String)> {
    let mut nonce = [0u8; relay_proof::NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("operating system RNG failed: {e}"))?;
    let mut ws = connect(url, route, &nonce).await?;
    let RelayToAgent::Challenge { nonce: challenge, relay } = expect_message(&mut ws, "challenge").await? else {
        bail!("relay did not start with a challenge")
    };
    let challenge = hex::decode(&challenge).context("relay challenge is not hex")?;
    if challenge.len() < 16 {
        bail!("relay challenge is too short");
    }
    let refused = || format!("refusing the relay at {url}");
    let proof = relay.ok_or(RelayProofError::Missing).with_context(refused)?;
    let pinned = match expect {
        Expect::FirstUse(given) => vec![given.unwrap_or(&proof.key).trim().to_owned()],
        Expect::Pinned(device) => device.relay_pins().keys(),
    };
    match sightline_core::relay_proof::check(&pinned, &nonce, &challenge, Some(&proof)).with_context(refused)? {
        Trust::Pinned => {}
        Trust::Endorsed { added } => {
            if let Expect::Pinned(device) = expect {
                device.relay_pins().add(&added).context("cannot pin the relay's endorsed key")?;
            }
            tracing::warn!(relay = %url, key = %proof.key, ?added, "the relay's node key is new to this agent and endorsed by a key it pinned: pinned it too");
        }
    }
    Ok((ws, challenge, proof.key))
}

/// Waits for the next relay message, with a deadline.
async fn expect_message(ws: &mut Socket, what: &str) -> anyhow::Result<RelayToAgent> {
    let deadline = Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("relay sent no {what} within {deadline:?}"))?
            .ok_or_else(|| anyhow::anyhow!("relay closed the connection before {what}"))??;
        match msg {
            Message::Text(text) => return Ok(decode::<RelayToAgent>(&text)?),
            Message::Close(_) => bail!("relay closed the connection before {what}"),
            _ => continue,
        }
    }
}

/// `agent enroll`: creates a key pair, registers it with a one-time token, saves it.
pub async fn enroll(
    relay_url: &url::Url,
    token: &str,
    name: &str,
    data_dir: &std::path::Path,
    route: &Route,
    relay_key: Option<&str>,
) -> anyhow::Result<DeviceInfo> {
    let (key, public_key) = crate::device::new_key()?;
    let (mut ws, _, relay_key) = dial(relay_url, route, Expect::FirstUse(relay_key)).await?;
    let msg = AgentToRelay::Enrol { token: token.to_owned(), public_key, name: name.to_owned() };
    ws.send(Message::Text(encode(&msg).into())).await?;
    match expect_message(&mut ws, "enrolment answer").await? {
        RelayToAgent::Enrolled { device_id, name, segment } => {
            let info = DeviceInfo { device_id, name, segment };
            Device::save(data_dir, key, info.clone(), &relay_key)?;
            tracing::info!(relay = %relay_url, key = %relay_key, "pinned the relay's node key");
            Ok(info)
        }
        RelayToAgent::Error { message, .. } => bail!("the relay refused enrolment: {message}"),
        other => bail!("unexpected answer to enrolment: {other:?}"),
    }
}

/// `agent allow --for D`: the person at the endpoint releases remote support for a period (R3).
/// Signed with the device key over the relay's challenge and the exact window.
pub async fn open_window(
    relay_url: &url::Url,
    device: &Device,
    duration: Duration,
    route: &Route,
) -> anyhow::Result<(u64, u64)> {
    let (mut ws, challenge, _) = dial(relay_url, route, Expect::Pinned(device)).await?;
    let start_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let end_ms = start_ms + duration.as_millis() as u64;
    let signature = device.sign_window(&challenge, start_ms, end_ms);
    let msg = AgentToRelay::OpenWindow { device_id: device.info.device_id.clone(), signature, start_ms, end_ms };
    ws.send(Message::Text(encode(&msg).into())).await?;
    match expect_message(&mut ws, "window confirmation").await? {
        RelayToAgent::WindowOpened { start_ms, end_ms } => Ok((start_ms, end_ms)),
        RelayToAgent::Error { message, .. } => bail!("the relay refused the window: {message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Closes this device's open maintenance windows now (R3); whether one was open.
pub async fn close_window(relay_url: &url::Url, device: &Device, route: &Route) -> anyhow::Result<bool> {
    let (mut ws, challenge, _) = dial(relay_url, route, Expect::Pinned(device)).await?;
    let msg = AgentToRelay::CloseWindow {
        device_id: device.info.device_id.clone(),
        signature: device.sign_close_window(&challenge),
    };
    ws.send(Message::Text(encode(&msg).into())).await?;
    match expect_message(&mut ws, "window close confirmation").await? {
        RelayToAgent::WindowsClosed { closed } => Ok(closed),
        RelayToAgent::Error { message, .. } => bail!("the relay refused to close the window: {message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// Asks the service desk for help (R2): returns the one-time code the user reads out over the
/// phone, and when it lapses (Unix ms).
pub async fn ask_help(relay_url: &url::Url, device: &Device, route: &Route) -> anyhow::Result<(String, u64)> {
    let (mut ws, challenge, _) = dial(relay_url, route, Expect::Pinned(device)).await?;
    let msg = AgentToRelay::AskHelp {
        device_id: device.info.device_id.clone(),
        signature: device.sign_help(&challenge),
        user: crate::endpoint_user(),
    };
    ws.send(Message::Text(encode(&msg).into())).await?;
    match expect_message(&mut ws, "help code").await? {
        RelayToAgent::HelpCode { code, expires_ms } => Ok((code, expires_ms)),
        RelayToAgent::Error { message, .. } => bail!("the relay refused the help request: {message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

async fn session(config: &RunConfig, relay_url: &url::Url, carried: &mut Carried) -> anyhow::Result<()> {
    // Media goes the way signaling does: through the proxy when one applies to the relay.
    let media_proxy = config.route.proxy_for(relay_url.host_str().unwrap_or_default());
    let media_ip = local_ip_towards(relay_url, media_proxy).await?;
    let (mut ws, challenge, _) = dial(relay_url, &config.route, Expect::Pinned(&config.device)).await?;
    let (width, height) = screen_size(config).await;
    let hello = AgentToRelay::Hello {
        device_id: config.device.info.device_id.clone(),
        signature: config.device.sign_challenge(&challenge),
        width,
        height,
        user: crate::endpoint_user(),
        unattended: config.unattended,
        resume: carried.endpoint.as_ref().and_then(EndpointSession::resume_claim),
    };
    ws.send(Message::Text(encode(&hello).into())).await?;
    match expect_message(&mut ws, "welcome").await? {
        RelayToAgent::Welcome { name, segment } => {
            tracing::info!(relay = %relay_url, device = %config.device.info.device_id, %name, %segment, "connected and authenticated");
        }
        RelayToAgent::Error { message, .. } => bail!("the relay refused this device: {message}"),
        other => bail!("unexpected answer to hello: {other:?}"),
    }
    let (mut tx, mut rx) = ws.split();

    let publish_config = PublishConfig {
        source: config.source,
        synthetic_size: config.synthetic_size,
        encoder: config.encoder,
        media_ip,
        sockets: match media_proxy {
            Some(proxy) => Sockets::Outbound(std::sync::Arc::new(crate::proxy::ProxyDialer(proxy.clone()))),
            None => Sockets::Outbound(std::sync::Arc::new(DirectDialer)),
        },
        proxy: media_proxy.map(|p| p.address().to_owned()),
    };
    let mut publication: Option<Publication> = None;
    let Carried { endpoint, frontend_tx, frontend_rx } = carried;
    // The user's chat lines wait here for the publication's data channel to open; a line that
    // cannot be delivered comes back (session id, text) so the bar says so.
    let outbox = std::sync::Arc::new(Outbox::new(CHANNEL_QUEUE));
    let (undelivered_tx, mut undelivered_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut tick = tokio::time::interval(SESSION_TICK);
    let mut last_heard = Instant::now();
    let result = loop {
        let channel_message = async {
            match publication.as_mut().and_then(|p| p.incoming.as_mut()) {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let actions: Vec<Action> = tokio::select! {
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    break Err(anyhow::anyhow!("no answer from relay for {DEAD_AFTER:?}"));
                }
                if let Err(e) = tx.send(Message::Ping(Vec::new().into())).await {
                    break Err(e.into());
                }
                continue;
            }
            _ = tick.tick() => match endpoint.as_mut() {
                Some(s) => s.tick().await,
                None => continue,
            },
            line = undelivered_rx.recv() => match (line, endpoint.as_mut()) {
                (Some((id, text)), Some(s)) if s.id == id => {
                    s.on_chat(NOT_DELIVERED.into(), text).await;
                    continue;
                }
                _ => continue,
            },
            event = frontend_rx.recv() => match (event, endpoint.as_mut()) {
                (Some((id, event)), Some(s)) if s.id == id => s.on_frontend(event).await,
                // A window of an earlier session (lingering, or dying late) acts on nothing.
                _ => continue,
            },
            msg = channel_message => match (msg, endpoint.as_mut()) {
                (Some(ChannelMessage::Input { input }), Some(s)) => s.on_input(&input),
                (Some(ChannelMessage::Chat { from, text }), Some(s)) => s.on_operator_chat(from, text).await,
                (Some(ChannelMessage::MediaSeal { .. }), Some(_)) => {
                    tracing::warn!("the relay sent a media seal; only this endpoint makes them");
                    continue;
                }
                (Some(_), None) => continue,
                (None, _) => {
                    // The data channel closed: no more input can come; media stays up.
                    if let Some(p) = publication.as_mut() { p.incoming = None; }
                    continue;
                }
            },
            incoming = rx.next() => {
                last_heard = Instant::now();
                let text = match incoming {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) => break Ok(()),
                    Some(Ok(_)) => continue,
                };
                let msg = match decode::<RelayToAgent>(&text) {
                    Ok(msg) => msg,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring a message from the relay");
                        continue;
                    }
                };
                match msg {
                    RelayToAgent::ConsentRequest { request } => {
                        if endpoint.as_ref().is_some_and(|s| !s.is_ended()) {
                            // Answered, never ignored: the relay ends the request with the reason.
                            tracing::warn!(session = %request.session_id, "a second session request while one runs; declined");
                            let reason = "another session is running on this endpoint".to_owned();
                            vec![Action::Signal(AgentToRelay::Declined { session_id: request.session_id, reason })]
                        } else if let Some(reason) = cannot_apply(&request.masks, config.source) {
                            // Not even asked: the user would consent to a screen this endpoint
                            // cannot mask as the segment requires (R33).
                            tracing::warn!(session = %request.session_id, %reason, "a request whose masks cannot be applied; declined");
                            vec![Action::Signal(AgentToRelay::Declined { session_id: request.session_id, reason })]
                        } else {
                            let (session, actions) =
                                EndpointSession::ask(*request, config.device.clone(), frontend_tx.clone(), config.unattended)
                                    .await;
                            *endpoint = Some(session);
                            actions
                        }
                    }
                    // A request about a session this endpoint does not run is answered too, so
                    // the relay ends it rather than waiting on it.
                    RelayToAgent::ElevationRequest { session_id, levels } => match endpoint.as_mut() {
                        Some(s) if s.id == session_id => s.on_elevation_request(levels).await,
                        _ => vec![not_here(session_id)],
                    },
                    RelayToAgent::Session { session_id, event } => match endpoint.as_mut() {
                        Some(s) if s.id == session_id => s.on_relay(event).await,
                        _ if matches!(event, SessionEvent::Ended { .. }) => continue,
                        _ => vec![not_here(session_id)],
                    },
                    RelayToAgent::Publish => {
                        if let Some(old) = publication.take() {
                            old.stop().await;
                        }
                        // The second gate: no screen leaves without the user's consent.
                        if let Some(consented) = endpoint.as_ref().filter(|s| s.consented() && !s.is_suspended()) {
                            let sealing = Sealing {
                                session_id: consented.id.clone(),
                                device: config.device.clone(),
                                outbox: outbox.clone(),
                            };
                            let audiences = consented.audiences();
                            match Publication::start(publish_config.clone(), sealing, &audiences).await {
                                Ok((p, offer)) => {
                                    tracing::info!("session consented: publishing");
                                    if endpoint.as_ref().is_some_and(EndpointSession::is_paused) {
                                        p.set_paused(true);
                                    }
                                    publication = Some(p);
                                    vec![Action::Signal(AgentToRelay::PublishOffer { sdp: offer })]
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot publish");
                                    vec![Action::Signal(AgentToRelay::PublishFailed { reason: e.to_string() })]
                                }
                            }
                        } else {
                            tracing::warn!("relay asked to publish without a consented session; refused");
                            vec![Action::Signal(AgentToRelay::PublishFailed { reason: "no session the user consented to".into() })]
                        }
                    }
                    RelayToAgent::PublishAnswer { sdp } => {
                        let Some(p) = publication.as_mut() else { continue };
                        let Err(e) = p.accept_answer(&sdp).await else { continue };
                        tracing::error!(error = %e, "cannot start publishing");
                        if let Some(p) = publication.take() {
                            p.stop().await;
                        }
                        vec![Action::Signal(AgentToRelay::PublishFailed { reason: e.to_string() })]
                    }
                    RelayToAgent::Unpublish => {
                        if let Some(p) = publication.take() {
                            let stats = p.stop().await;
                            tracing::info!(frames = stats.frames_encoded, keyframes = stats.keyframes, encode_ms = stats.encode_time.as_millis() as u64, "no viewers: capture stopped");
                        }
                        continue;
                    }
                    RelayToAgent::Resumed { session_id } => match endpoint.as_mut() {
                        Some(s) if s.id == session_id && !s.is_ended() => {
                            s.resumed().await;
                            continue;
                        }
                        // It ended here while it moved (the user ended it, or the grace ran out):
                        // the node that took it over hears how, and ends it the same way.
                        Some(s) if s.id == session_id => s.end_told_to_relay().into_iter().collect(),
                        _ => vec![not_here(session_id)],
                    },
                    RelayToAgent::ResumeRefused { session_id, reason } => match endpoint.as_mut() {
                        Some(s) if s.id == session_id => {
                            tracing::warn!(session = %session_id, %reason, "the relay node cannot take the session over");
                            s.resume_refused(&reason).await
                        }
                        _ => continue,
                    },
                    RelayToAgent::Error { code, message } => {
                        tracing::warn!(?code, %message, "relay refused");
                        continue;
                    }
                    RelayToAgent::Challenge { .. }
                    | RelayToAgent::Welcome { .. }
                    | RelayToAgent::Enrolled { .. }
                    | RelayToAgent::WindowOpened { .. }
                    | RelayToAgent::WindowsClosed { .. }
                    | RelayToAgent::HelpCode { .. } => {
                        tracing::warn!("ignoring an out-of-order handshake message");
                        continue;
                    }
                }
            }
        };
        let session_id = endpoint.as_ref().map(|s| s.id.clone()).unwrap_or_default();
        let chat = Chat { outbox: &outbox, session_id, undelivered: &undelivered_tx };
        if let Err(e) = carry_out(actions, &mut tx, &mut publication, chat).await {
            break Err(e);
        }
        // The outbox writes to the channel of the publication running now (or waits for one).
        let current = publication.as_ref().map(Publication::channel);
        let installed = outbox.channel();
        if !matches!((&current, &installed), (Some(a), Some(b)) if a.same(b))
            && (current.is_some() || installed.is_some())
        {
            outbox.set_channel(current);
        }
    };
    if let Some(s) = endpoint.as_mut().filter(|s| !s.is_ended()) {
        // Capture stops below and held keys are released now, not when the relay returns. With
        // other relay nodes to go to, a running session waits for one of them (R43).
        if s.may_move() && config.relay_urls.len() > 1 {
            let _ = s.suspend().await;
        } else {
            let _ = s.relay_lost().await;
        }
    }
    if endpoint.as_ref().is_some_and(EndpointSession::is_ended) {
        *endpoint = None;
    }
    if let Some(p) = publication.take() {
        p.stop().await;
        tracing::warn!("relay gone: screen capture stopped");
    }
    result
}

/// Where the user's chat lines go: the data channel's outbox, with a way back for lines that
/// could not be delivered.
struct Chat<'a> {
    outbox: &'a std::sync::Arc<Outbox>,
    session_id: String,
    undelivered: &'a tokio::sync::mpsc::UnboundedSender<(String, String)>,
}

/// Does what the session asked for: messages to the relay, media pause/resume/stop.
/// Why this endpoint cannot apply a request's mask rules, if it cannot.
fn cannot_apply(rules: &[sightline_proto::mask::MaskRule], source: SourceKind) -> Option<String> {
    crate::publisher::applicable_masks(rules, source).err().map(|e| e.to_string())
}

/// The answer to a request about a session this endpoint does not run (any more).
fn not_here(session_id: String) -> Action {
    tracing::warn!(session = %session_id, "a request about a session this endpoint does not run; declined");
    Action::Signal(AgentToRelay::Declined { session_id, reason: "no such session on this endpoint".into() })
}

async fn carry_out(
    actions: Vec<Action>,
    tx: &mut futures_util::stream::SplitSink<Socket, Message>,
    publication: &mut Option<Publication>,
    chat: Chat<'_>,
) -> anyhow::Result<()> {
    for action in actions {
        match action {
            Action::Signal(msg) => tx.send(Message::Text(encode(&msg).into())).await?,
            Action::Channel(msg) => {
                // Waits (bounded) for the publication's channel; the user learns of a failure.
                let text = match &msg {
                    ChannelMessage::Chat { text, .. } => text.clone(),
                    ChannelMessage::Input { .. } | ChannelMessage::MediaSeal { .. } => String::new(),
                };
                let back = chat.undelivered.clone();
                let session_id = chat.session_id.clone();
                let on_delivery: sightline_peer::OnDelivery = Box::new(move |result| {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "chat line not delivered to the relay");
                        let _ = back.send((session_id, format!("{text} ({e})")));
                    }
                });
                chat.outbox.send(sightline_proto::channel::encode(&msg), CHAT_WAIT, on_delivery);
            }
            Action::PauseMedia => {
                if let Some(p) = publication.as_ref() {
                    p.set_paused(true);
                }
            }
            Action::ResumeMedia => {
                if let Some(p) = publication.as_ref() {
                    p.set_paused(false);
                }
            }
            Action::StopMedia => {
                if let Some(p) = publication.take() {
                    p.stop().await;
                    tracing::info!("session over: screen capture stopped");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_relay_urls_to_the_agent_socket() {
        let cases = [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/ws/agent"),
            ("http://localhost:8080/", "ws://localhost:8080/ws/agent"),
            ("https://relay.example", "wss://relay.example/ws/agent"),
            ("wss://relay.example/some/path", "wss://relay.example/ws/agent"),
        ];
        for (input, expected) in cases {
            assert_eq!(agent_socket_url(&input.parse().unwrap()).unwrap().as_str(), expected);
        }
        assert!(agent_socket_url(&"ftp://relay".parse().unwrap()).is_err());
        // Cleartext only to this machine.
        for remote in ["ws://relay.example", "http://192.0.2.7:8080", "ws://[2001:db8::1]/"] {
            let err = agent_socket_url(&remote.parse().unwrap()).unwrap_err().to_string();
            assert!(err.contains("wss://"), "{remote}: {err}");
        }
    }
}
