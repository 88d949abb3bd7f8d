//! Relay configuration: command-line flags (with environment fallbacks), validated at start.
//!
//! The relay serves beyond loopback only with TLS, and its public URL must be https (http only on
//! localhost). The policy file (`--policy`) is validated before anything is served
//! (`server::load_policy`): an invalid one stops the relay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;

/// Default session requests per minute, per operator and per device (checked at compile time).
const OPERATOR_REQUESTS_PER_MIN: std::num::NonZeroU32 = std::num::NonZeroU32::new(6).unwrap();
const DEVICE_REQUESTS_PER_MIN: std::num::NonZeroU32 = std::num::NonZeroU32::new(4).unwrap();

/// An age recipient given on the command line.
fn recipient(text: &str) -> Result<age::x25519::Recipient, String> {
    sightline_recording::parse_recipient(text).map_err(|e| e.to_string())
}

/// Sightline relay.
///
/// `--config FILE` reads a TOML file whose keys are these flags' long names (see
/// relay/config-sample.toml); flags on the command line override it.
#[derive(Debug, Clone, Parser)]
#[command(name = "relay-config", args_override_self = true)]
pub struct Config {
    /// How the relay writes its own log to stderr: `text` for a terminal, `json` (one object per
    /// line, with the spans that identify the work) for a log pipeline.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,

    /// Serve Prometheus metrics (`GET /metrics`, Prometheus text format) on this address, apart from
    /// the public port: a loopback or management address (off when not given).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,

    /// Address for HTTP and WebSocket (the viewer, /healthz, /readyz, /ws/agent, /ws/viewer).
    #[arg(long, env = "SIGHTLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory holding the viewer's page shell and the built wasm (`static/`).
    #[arg(long, env = "SIGHTLINE_STATIC_DIR", default_value = "static")]
    pub static_dir: PathBuf,

    /// Address WebRTC media binds to and advertises in its ICE candidates.
    #[arg(long, env = "SIGHTLINE_MEDIA_IP", default_value = "127.0.0.1")]
    pub media_ip: IpAddr,

    /// The one UDP port on `--media-ip` that every peer connection's media uses. 0 lets the OS
    /// choose one at start (logged); a deployment behind a firewall sets it.
    #[arg(long, env = "SIGHTLINE_MEDIA_UDP_PORT", default_value_t = 0)]
    pub media_udp_port: u16,

    /// The one TCP port on `--media-ip` where every peer connection accepts ICE-TCP (RFC 6544):
    /// media for agents without UDP (through their proxy) and browsers without UDP. 0 lets the
    /// OS choose one at start (logged).
    #[arg(long, env = "SIGHTLINE_MEDIA_TCP_PORT", default_value_t = 0)]
    pub media_tcp_port: u16,

    /// The address the network reaches `--media-ip` by, when the relay is behind NAT; ICE
    /// candidates announce it instead.
    #[arg(long, env = "SIGHTLINE_MEDIA_ANNOUNCE_IP")]
    pub media_announce_ip: Option<IpAddr>,

    /// TURN servers viewers may relay their media through (R42), as browsers spell them:
    /// `turn:HOST:3478?transport=tcp`, `turns:HOST:443?transport=tcp`. Repeat, or separate with
    /// commas. Each viewer gets credentials of its own (see `--turn-secret-file`).
    #[arg(long = "turn-url", env = "SIGHTLINE_TURN_URLS", value_delimiter = ',')]
    pub turn_urls: Vec<String>,

    /// The secret shared with the TURN servers (coturn's `static-auth-secret`), at least 32
    /// bytes; the relay derives each viewer's credentials from it.
    #[arg(long, env = "SIGHTLINE_TURN_SECRET_FILE")]
    pub turn_secret_file: Option<PathBuf>,

    /// How long a viewer's TURN credentials stay valid, in seconds (30 to 300); viewers get new
    /// ones halfway through.
    #[arg(long, env = "SIGHTLINE_TURN_TTL_S", default_value_t = 300)]
    pub turn_ttl_s: u64,

    /// The origin browsers use to reach the relay. WebAuthn binds passkeys to its host name (an
    /// IP address cannot be a relying party), and enrolment links point here. Defaults to
    /// `http://localhost:<port of --listen>`.
    #[arg(long, env = "SIGHTLINE_PUBLIC_URL")]
    pub public_url: Option<url::Url>,

    /// Directory for durable state (users, passkeys, roles, devices, tokens) with the embedded store.
    #[arg(long, env = "SIGHTLINE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Share state with other relay nodes through Redis (redis://host:port/db) instead of the
    /// embedded store.
    #[arg(long, env = "SIGHTLINE_REDIS")]
    pub redis: Option<String>,

    /// TLS certificate chain (PEM). With `--tls-key`, the relay serves HTTPS/WSS and may listen
    /// on non-loopback addresses.
    #[arg(long, env = "SIGHTLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM, PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SIGHTLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Session policy file (TOML; see relay/policy-sample.toml). Validated at start: the relay
    /// refuses to run without a valid one.
    #[arg(long, env = "SIGHTLINE_POLICY", default_value = "policy.toml")]
    pub policy: PathBuf,

    /// Name of this relay node: in every audit record, and the origin of its signed checkpoints.
    /// Defaults to the host name. Each node of a cluster needs its own name and audit directory.
    #[arg(long, env = "SIGHTLINE_NODE")]
    pub node: Option<String>,

    /// Where the other relay nodes reach this one (`http(s)://host:port`) when several share a
    /// Redis store (R43): a viewer connected to another node reaches this node's agents through
    /// it. Defaults to the `--listen` address when that names one (not a wildcard).
    #[arg(long, env = "SIGHTLINE_NODE_URL")]
    pub node_url: Option<url::Url>,

    /// With `--redis`, every audit record is also appended to a Redis stream before it is
    /// acknowledged (R43); this many Redis replicas must acknowledge it too (`WAIT`), where the
    /// Redis deployment has them.
    #[arg(long, env = "SIGHTLINE_AUDIT_COPY_REPLICAS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub audit_copy_replicas: u32,

    /// With several nodes, every this many seconds while another node's log grows, its newest
    /// published checkpoint goes into this node's audit log (`audit.checkpoint_witnessed`), so it
    /// cannot later present a history that contradicts it (R43).
    #[arg(long, env = "SIGHTLINE_AUDIT_WITNESS_S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub audit_witness_s: u64,

    /// Directory of this node's audit log (default: `<data-dir>/audit`).
    #[arg(long, env = "SIGHTLINE_AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,

    /// Sign an audit checkpoint after this many records...
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub audit_checkpoint_records: u64,

    /// ...or this many milliseconds after the first record not yet covered (and at shutdown).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub audit_checkpoint_ms: u64,

    /// Forward every audit record and checkpoint to a SIEM (repeatable, or comma-separated):
    /// `tcp://HOST:PORT` or `tls://HOST:PORT` (RFC 5424, octet counting) or `relp://HOST:PORT`.
    #[arg(long = "siem", env = "SIGHTLINE_SIEM", value_delimiter = ',')]
    pub siem: Vec<sightline_audit::siem::Destination>,

    /// Body of SIEM messages: the canonical record as JSON, or CEF.
    #[arg(long, value_enum, default_value = "json")]
    pub siem_format: sightline_audit::siem::Payload,

    /// CA certificate(s) (PEM) that `tls://` SIEM receivers must present a certificate from.
    #[arg(long, env = "SIGHTLINE_SIEM_CA")]
    pub siem_ca: Option<PathBuf>,

    /// Endorsements (JSON lines, from `relay audit endorse`) that lead agents from the node key
    /// they pinned at enrolment to this node's key: needed after this node's key was replaced,
    /// or on a node whose agents enrolled with another node. Each must verify, and the last must
    /// endorse this node's key, or the relay does not start.
    #[arg(long, env = "SIGHTLINE_AGENT_KEY_ENDORSEMENTS")]
    pub agent_key_endorsements: Option<PathBuf>,

    /// Directory of this node's recordings (default: `<data-dir>/recordings`).
    #[arg(long, env = "SIGHTLINE_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,

    /// Who can open recordings (R32): an auditor's age X25519 public key (`age1...`, from
    /// `age-keygen`), repeatable or comma-separated; add an escrow key kept offline if your rules
    /// ask for one. Every chunk is encrypted to all of them. The relay holds no key that
    /// decrypts: a relay taken over exposes no recording made before. A policy that records a
    /// segment needs at least one.
    #[arg(long = "recording-recipient", env = "SIGHTLINE_RECORDING_RECIPIENTS", value_delimiter = ',', value_parser = recipient)]
    pub recording_recipients: Vec<age::x25519::Recipient>,

    /// Free space (MB) the recordings volume must keep: below it no recorded session starts,
    /// and a running one pauses and then ends (R26).
    #[arg(long, default_value_t = 256)]
    pub recording_min_free_mb: u64,

    /// Length of a recording chunk in milliseconds: at most this much of a session is lost if
    /// the relay dies.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(200..=10_000))]
    pub recording_chunk_ms: u64,

    /// How often the retention job looks for recordings past their segment's
    /// `recording_retention_days` (and deletes them, each deletion an audit event).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub recording_retention_check_s: u64,

    /// How long a help request (`agent help`, R2) and its one-time code stay open.
    #[arg(long, default_value_t = sightline_core::help::DEFAULT_TTL_S, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub help_request_ttl_s: u64,

    /// Session requests one operator may make per minute (a burst of this many, then one each
    /// 60/N seconds). Refusals are audit events.
    #[arg(long, default_value_t = OPERATOR_REQUESTS_PER_MIN, value_parser = clap::value_parser!(std::num::NonZeroU32))]
    pub session_requests_per_operator_per_min: std::num::NonZeroU32,

    /// Session requests one device's user may be asked per minute, counted only for requests
    /// that pass every other check (so a refused flood costs the device nothing).
    #[arg(long, default_value_t = DEVICE_REQUESTS_PER_MIN, value_parser = clap::value_parser!(std::num::NonZeroU32))]
    pub session_requests_per_device_per_min: std::num::NonZeroU32,

    /// Open connections (HTTP and WebSocket, TLS handshakes included) one address may hold;
    /// more are closed at accept, unread.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_address: u64,

    /// Open connections all clients together may hold.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Seconds a client may take to send a request's headers, and a new connection to send its
    /// first byte: idle and slowloris connections are closed after this.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_timeout_s: u64,

    /// Seconds a connection may stay without traffic either way (WebSockets ping every 2 s).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=3600))]
    pub idle_timeout_s: u64,

    /// The SSO file (R12): identity providers operators sign in through, their groups' roles,
    /// and whether invited accounts still sign in (`sightline_sso::config` documents it). The
    /// relay discovers every provider at start and does not start without them.
    #[arg(long, env = "SIGHTLINE_SSO_CONFIG")]
    pub sso_config: Option<PathBuf>,

    /// Lifetime of session tokens in seconds (at most 600).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(30..=600))]
    pub token_ttl_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve on {0} without TLS: WebAuthn and session cookies need a secure context (give --tls-cert and --tls-key, or use 127.0.0.1)"
    )]
    NotLoopback(IpAddr),
    #[error("static directory {0} has no index.html (build the viewer with `cargo xtask build`)")]
    NoViewer(PathBuf),
    #[error("public URL {0} must be https, or http on localhost")]
    InsecurePublicUrl(url::Url),
    #[error(
        "--media-ip {0} is a wildcard: candidates would announce it and every interface would get its own socket; give the interface's address (and --media-announce-ip behind NAT)"
    )]
    WildcardMediaIp(IpAddr),
    #[error(
        "--listen {0} is a wildcard and several nodes share the store: give --node-url, the address the other nodes reach this one at"
    )]
    NoNodeUrl(SocketAddr),
    #[error("--node-url {0} must be https with a host (http only on this machine)")]
    BadNodeUrl(url::Url),
    #[error("node name {0:?} may not contain ';', '/' or white space")]
    BadNodeName(String),
}

impl Config {
    /// The connection caps, for the listener.
    pub fn connection_caps(&self) -> crate::connections::Caps {
        crate::connections::Caps {
            per_address: usize::try_from(self.max_connections_per_address).unwrap_or(usize::MAX),
            total: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            first_byte: std::time::Duration::from_secs(self.header_timeout_s),
            idle: std::time::Duration::from_secs(self.idle_timeout_s),
        }
    }

    /// Checks what flags alone cannot: the relay has no authentication yet, so anything but
    /// loopback would expose screens to the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.tls() {
            for ip in [self.listen.ip(), self.media_ip] {
                if !ip.is_loopback() {
                    return Err(ConfigError::NotLoopback(ip));
                }
            }
        }
        if self.media_ip.is_unspecified() {
            return Err(ConfigError::WildcardMediaIp(self.media_ip));
        }
        if self.redis.is_some() && self.node_url.is_none() && self.listen.ip().is_unspecified() {
            return Err(ConfigError::NoNodeUrl(self.listen));
        }
        let node_url = self.node_url();
        if !matches!(node_url.scheme(), "http" | "https") || node_url.host_str().is_none() {
            return Err(ConfigError::BadNodeUrl(node_url));
        }
        // Forwarded viewers carry a login token between nodes: only over TLS, or on this machine.
        let loopback = match node_url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if node_url.scheme() == "http" && !loopback {
            return Err(ConfigError::BadNodeUrl(node_url));
        }
        if let Some(node) = &self.node
            && node.chars().any(|c| c == ';' || c == '/' || c.is_whitespace())
        {
            return Err(ConfigError::BadNodeName(node.clone()));
        }
        if !self.static_dir.join("index.html").is_file() {
            return Err(ConfigError::NoViewer(self.static_dir.clone()));
        }
        let public = self.public_url();
        let local = matches!(public.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if public.scheme() != "https" && !(public.scheme() == "http" && local && !self.tls()) {
            return Err(ConfigError::InsecurePublicUrl(public));
        }
        Ok(())
    }

    /// Whether the relay serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// The endorsements in `--agent-key-endorsements`, in order (none without it).
    pub fn agent_key_endorsements(&self) -> anyhow::Result<Vec<sightline_proto::relay_proof::KeyEndorsement>> {
        use anyhow::Context;
        let Some(path) = &self.agent_key_endorsements else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: not an endorsement", path.display(), i + 1))
            })
            .collect()
    }

    /// How this node keeps its audit log.
    pub fn audit_settings(&self) -> sightline_audit::AuditSettings {
        let dir = self.audit_dir.clone().unwrap_or_else(|| self.data_dir.join("audit"));
        sightline_audit::AuditSettings {
            // Without --node, a log keeps the name it was started with (host names change).
            node: self
                .node
                .clone()
                .or_else(|| sightline_audit::node_of_dir(&dir))
                .unwrap_or_else(sightline_audit::default_node_name),
            dir,
            checkpoint_records: self.audit_checkpoint_records,
            checkpoint_interval: std::time::Duration::from_millis(self.audit_checkpoint_ms),
        }
    }

    /// Where the audit log is forwarded.
    pub fn siem_settings(&self) -> sightline_audit::siem::SiemSettings {
        let audit = self.audit_settings();
        sightline_audit::siem::SiemSettings {
            destinations: self.siem.clone(),
            payload: self.siem_format,
            ca_cert: self.siem_ca.clone(),
            dir: audit.dir,
            node: audit.node,
        }
    }

    /// Where and how this node records sessions.
    pub fn recording_settings(&self) -> sightline_recording::RecordingSettings {
        sightline_recording::RecordingSettings {
            dir: self.recordings_dir.clone().unwrap_or_else(|| self.data_dir.join("recordings")),
            recipients: self.recording_recipients.clone(),
            min_free_bytes: self.recording_min_free_mb << 20,
            chunk_every: std::time::Duration::from_millis(self.recording_chunk_ms),
            node: self.audit_settings().node,
        }
    }

    /// Where the other nodes reach this one (see `--node-url`).
    pub fn node_url(&self) -> url::Url {
        self.node_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls() { "https" } else { "http" };
            let host =
                if self.listen.ip().is_unspecified() { "localhost".to_owned() } else { self.listen.ip().to_string() };
            let host =
                if self.listen.is_ipv6() && !self.listen.ip().is_unspecified() { format!("[{host}]") } else { host };
            format!("{scheme}://{host}:{}/", self.listen.port())
                .parse()
                .unwrap_or_else(|e| unreachable!("valid URL: {e}"))
        })
    }

    /// The origin browsers use (see `--public-url`).
    pub fn public_url(&self) -> url::Url {
        self.public_url.clone().unwrap_or_else(|| {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://localhost:{}/", self.listen.port())
                .parse()
                .unwrap_or_else(|e| unreachable!("valid URL: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("relay").chain(args.iter().copied()))
    }

    #[test]
    fn refuses_non_loopback_binds() {
        let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../static");
        assert!(parse(&["--static-dir", static_dir]).validate().is_ok());
        for args in [["--listen", "0.0.0.0:8080"], ["--listen", "192.0.2.1:8080"], ["--media-ip", "0.0.0.0"]] {
            let mut all = args.to_vec();
            all.extend(["--static-dir", static_dir]);
            assert!(matches!(parse(&all).validate(), Err(ConfigError::NotLoopback(_))), "{args:?}");
        }
    }

    #[test]
    fn sample_config_file_loads_and_flags_override_it() {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/config-sample.toml");
        let args = sightline_core::config_file::expand(
            vec!["relay".into(), "--config".into(), sample.into(), "--listen".into(), "127.0.0.1:9999".into()],
            None,
            |p| std::fs::read_to_string(p).map_err(|e| e.to_string()),
        )
        .unwrap();
        let config = Config::try_parse_from(args).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9999".parse::<SocketAddr>().unwrap());
        assert_eq!(config.static_dir, PathBuf::from("static"));
    }

    #[test]
    fn non_loopback_needs_tls_and_tls_needs_https() {
        let static_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../static");
        let tls = ["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--static-dir", static_dir];
        let mut args = vec!["--listen", "0.0.0.0:8443", "--media-ip", "192.0.2.10"];
        args.extend(tls);
        let config = parse(&args);
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        assert_eq!(config.public_url().scheme(), "https");
        let mut args = vec!["--public-url", "http://relay.example/"];
        args.extend(tls);
        assert!(matches!(parse(&args).validate(), Err(ConfigError::InsecurePublicUrl(_))));
        assert!(Config::try_parse_from(["relay", "--tls-cert", "/c.pem"]).is_err(), "a certificate needs its key");
        let mut args = vec!["--listen", "0.0.0.0:8443", "--media-ip", "0.0.0.0"];
        args.extend(tls);
        assert!(matches!(parse(&args).validate(), Err(ConfigError::WildcardMediaIp(_))));
    }

    #[test]
    fn refuses_missing_viewer() {
        assert!(matches!(parse(&["--static-dir", "/nonexistent"]).validate(), Err(ConfigError::NoViewer(_))));
    }
}
