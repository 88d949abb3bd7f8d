//! Start-up and the serve loop: opens the store, the audit log and the recordings, builds the
//! shared state, serves HTTP and WebSockets within the connection caps, and shuts down in order
//! (sessions end, a final checkpoint is signed).

use std::future::Future;

use anyhow::Context;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;

use crate::config::Config;
use crate::hub::Hub;
use crate::state::AppState;
use sightline_audit::AuditLog;
use sightline_audit::events::EventSink;
use sightline_identity::{Identity, IdentitySettings, Revocation, system_clock, tokens::TokenSettings};
use sightline_sfu::Media;
use sightline_store::{Store, embedded::Embedded, redis::RedisBackend};

/// The policy file, read once: what it says, and the SHA-256 (hex) of the very bytes it was read
/// from. Which policy a node runs goes on the record (`node.started`), and commands on its host
/// are judged by that one; a second read could digest a file changed after the first.
pub struct LoadedPolicy {
    pub policy: sightline_core::policy::Policy,
    pub sha256: String,
}

/// Reads and validates the policy file.
pub fn load_policy(path: &std::path::Path) -> anyhow::Result<LoadedPolicy> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).with_context(|| format!("policy file {} is not UTF-8", path.display()))?;
    let policy = sightline_core::policy::Policy::from_toml(text)
        .with_context(|| format!("invalid policy file {}", path.display()))?;
    Ok(LoadedPolicy { policy, sha256: sightline_core::command_approval::digest_bytes(&bytes) })
}

/// Opens the configured store: Redis when `--redis` is given, the embedded one otherwise.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(match &config.redis {
        Some(url) => Store::new(Arc::new(RedisBackend::connect(url).await?)),
        None => Store::new(Arc::new(Embedded::open(&config.data_dir)?)),
    })
}

/// Whether invited accounts sign in: what the SSO file says, or yes without one. (Commands on
/// the host read the file without discovering its providers.)
pub fn local_accounts(config: &Config) -> anyhow::Result<bool> {
    Ok(match &config.sso_config {
        Some(path) => {
            sightline_sso::SsoConfig::load(path)
                .with_context(|| format!("invalid SSO file {}", path.display()))?
                .local_accounts
                == sightline_sso::LocalAccounts::Allow
        }
        None => true,
    })
}

/// Builds the identity service for `config` on `store`; `local_accounts` comes from the SSO
/// file (allowed without one).
pub async fn identity(
    config: &Config,
    store: Store,
    events: Arc<dyn EventSink>,
    local_accounts: bool,
) -> anyhow::Result<Identity> {
    let public_url = config.public_url();
    let settings = IdentitySettings {
        tokens: TokenSettings {
            issuer: public_url.origin().ascii_serialization(),
            audience: "sightline".into(),
            ttl_s: config.token_ttl_s,
        },
        public_url,
        local_accounts,
    };
    Identity::new(store, settings, events, system_clock()).await
}

/// Builds the relay's shared state from its configuration (opens the store, loads keys).
pub async fn build(config: &Config, events: Arc<dyn EventSink>) -> anyhow::Result<AppState> {
    let store = open_store(config).await?;
    build_with_store(config, store, events).await
}

/// Builds the relay's shared state on a given store (tests hold the same store).
pub async fn build_with_store(config: &Config, store: Store, events: Arc<dyn EventSink>) -> anyhow::Result<AppState> {
    let LoadedPolicy { policy, sha256: policy_sha256 } = load_policy(&config.policy)?;
    let policy = Arc::new(policy);
    let index = store.clone();
    let help_store = store.clone();
    let sso = match &config.sso_config {
        Some(path) => Some(crate::sso::Sso::start(path, &config.public_url()).await?),
        None => None,
    };
    let local_accounts = sso.as_ref().is_none_or(|s| s.config.local_accounts == sightline_sso::LocalAccounts::Allow);
    let identity = Arc::new(identity(config, store.clone(), events.clone(), local_accounts).await?);
    if !policy.break_glass.is_empty() {
        let node = config.audit_settings().node;
        let desk =
            sightline_identity::break_glass::BreakGlassDesk::open(&node, policy.break_glass.clone(), &config.data_dir)
                .with_context(|| format!("cannot read the break-glass codes spent in {}", config.data_dir.display()))?;
        identity.set_break_glass(desk);
    }
    let sso = match sso {
        Some(mut sso) => {
            sso.settle(&identity, policy.segments.keys().cloned().collect())
                .await
                .context("the SSO file's role tables")?;
            let sso = Arc::new(sso);
            tokio::spawn(sso.clone().run_rechecks(identity.clone()));
            Some(sso)
        }
        None => None,
    };
    let audit_settings = config.audit_settings();
    let key = sightline_audit::evidence_key(&audit_settings).context("cannot load the node's evidence key")?;
    let recording_settings = config.recording_settings();
    // A recorded segment whose recordings nobody could open would record for nothing (R32).
    if recording_settings.recipients.is_empty()
        && let Some(segment) = policy.segments.iter().find(|(_, s)| s.terms.recording_required).map(|(n, _)| n)
    {
        anyhow::bail!(
            "segment {segment} is recorded, and no --recording-recipient says who can open its recordings: give the \
             auditors' age public keys (age-keygen; the relay never holds their secret keys)"
        );
    }
    let recordings = Arc::new(sightline_recording::Recordings::open(
        recording_settings,
        sightline_core::recording::ManifestKey::of(&key),
        key.verifier_key().to_owned(),
        index,
    ));
    let reconciling = recordings.clone();
    tokio::spawn(async move {
        match reconciling.reconcile().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(recordings = n, "recordings index brought up to date"),
            Err(e) => tracing::error!(error = %e, "cannot bring the recordings index up to date"),
        }
    });
    let ports = sightline_peer::SharedPorts::bind(
        config.media_ip,
        config.media_udp_port,
        config.media_tcp_port,
        config.media_announce_ip,
    )
    .await
    .with_context(|| {
        format!(
            "cannot bind the media ports (UDP {}, TCP {}) on {}",
            config.media_udp_port, config.media_tcp_port, config.media_ip
        )
    })?;
    tracing::info!(udp = %ports.udp.local_addr(), tcp = %ports.tcp.local_addr(), "media ports bound");
    let hub = Hub::new(Media::new(config.media_ip, Some(ports)));
    let cluster = crate::cluster::Cluster::new(
        audit_settings.node.clone(),
        config.node_url(),
        &key,
        store.clone(),
        events.clone(),
    );
    tokio::spawn(cluster.clone().run(hub.clone()));
    tokio::spawn(crate::witness::run(
        cluster.clone(),
        store.clone(),
        events.clone(),
        std::time::Duration::from_secs(config.audit_witness_s),
    ));
    tokio::spawn(follow_revocations(store.clone(), hub.clone(), identity.clone()));
    tokio::spawn(sightline_recording::retention::run(
        recordings.clone(),
        policy.clone(),
        events,
        std::time::Duration::from_secs(config.recording_retention_check_s),
    ));
    let limits = crate::request_limits::RequestLimits::new(
        config.session_requests_per_operator_per_min,
        config.session_requests_per_device_per_min,
    );
    // Several nodes share one store: an operator has one budget for the service (R43).
    let limits = Arc::new(match &config.redis {
        Some(_) => limits.shared_through(store.clone(), config.session_requests_per_operator_per_min),
        None => limits,
    });
    let idle = Arc::downgrade(&limits);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            let Some(limits) = idle.upgrade() else { break };
            limits.forget_idle();
        }
    });
    let help = crate::help::HelpDesk::start(
        help_store,
        identity.clone(),
        std::time::Duration::from_secs(config.help_request_ttl_s),
    );
    let endorsements = config.agent_key_endorsements().context("cannot read --agent-key-endorsements")?;
    let prover = Arc::new(
        sightline_core::relay_proof::RelayProver::new(&key, endorsements).context("--agent-key-endorsements")?,
    );
    let turn =
        crate::turn::Turn::from_config(&config.turn_urls, config.turn_secret_file.as_deref(), config.turn_ttl_s)?
            .map(Arc::new);
    Ok(AppState {
        hub,
        cluster,
        identity,
        policy,
        policy_sha256,
        audit: None,
        recordings,
        limits,
        help,
        prover,
        turn,
        sso,
        carrier: crate::http::carried::client()
            .context("cannot build the HTTP client nodes talk to each other with")?,
    })
}

/// Runs the relay on `listener` until `shutdown` completes, then closes every peer connection.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = config.audit_settings();
    let store = open_store(&config).await?;
    crate::cluster::refuse_if_name_taken(&store, &settings.node).await?;
    // The log must hold everything this node ever published a checkpoint of (`publish_checkpoints`).
    let published: Option<String> = store
        .get(sightline_store::Collection::Checkpoints, &settings.node)
        .await
        .context("cannot read the audit checkpoint this node published last")?;
    // With several nodes, every record is also durable in Redis before it is acknowledged: a
    // node's lost disk loses no acknowledged record (R43, `relay audit recover`).
    let copy = match &config.redis {
        Some(url) => Some(
            crate::audit_copy::RedisCopy::open(url.clone(), settings.node.clone(), config.audit_copy_replicas)
                .await
                .context("the audit log's second copy")?,
        ),
        None => None,
    };
    let copy_described = copy.as_ref().map(sightline_audit::Replica::describe);
    let replica = copy.map(|c| Box::new(c) as Box<dyn sightline_audit::Replica>);
    let audit = Arc::new(
        AuditLog::open_replicated(&settings, published.as_deref(), replica).context("cannot open the audit log")?,
    );
    tracing::info!(node = %audit.node(), dir = %settings.dir.display(), size = audit.progress().size, key = %audit.verifier_key(), "audit log open");
    // Without the socket, CLI commands beside this relay refuse to act (they cannot record).
    let ingest = match sightline_audit::serve_ingest(&settings.dir, audit.clone()) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(error = %e, dir = %settings.dir.display(), "no audit ingest socket: CLI commands cannot run beside this relay");
            None
        }
    };
    let siem = sightline_audit::siem::spawn(config.siem_settings(), audit.subscribe())
        .context("cannot start SIEM forwarding")?;
    let counted: Arc<dyn EventSink> = Arc::new(crate::metrics::CountedSink(audit.clone()));
    let mut state = build_with_store(&config, store, counted).await?;
    state.audit = Some(audit.clone());
    let policy_sha256 = state.policy_sha256.clone();
    audit.append(sightline_audit::events::Event {
        ts_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
        kind: sightline_audit::events::EventKind::NodeStarted,
        outcome: sightline_audit::events::Outcome::Success,
        actor: "system".into(),
        subject: None,
        source: None,
        detail: serde_json::json!({
            "policy": config.policy.display().to_string(),
            "policy_sha256": policy_sha256,
            "sso": state.sso.as_ref().map(|s| s.describe()),
            "audit_copy": copy_described,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string(),
        session: None,
    });
    let store = state.identity.store().clone();
    let mut last_published = Published::Known(published);
    publish_newest_checkpoint(&audit, &store, &mut last_published).await;
    let publisher = tokio::spawn(publish_checkpoints(audit.clone(), store.clone(), last_published.clone()));
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr} (--metrics-listen)"))?;
            tracing::info!(%addr, "Prometheus metrics on /metrics");
            let hub = state.hub.clone();
            let now = move || crate::metrics::Now {
                agents: hub.held_agents().len(),
                sessions: hub.sessions().into_iter().map(|s| s.phase).collect(),
            };
            Some(tokio::spawn(crate::metrics::serve(listener, now, audit.clone())))
        }
        None => None,
    };
    tokio::spawn(end_sessions_while_unaudited(audit.clone(), state.hub.clone()));
    tokio::spawn(crate::http::break_glass::follow(state.clone()));
    if let Some(token) = state.identity.bootstrap_token().await? {
        // The one way in on a fresh relay: printed where the person who started it looks.
        println!(
            "\n  No users yet. Enrol the first admin (one-time link, expires in 72 h):\n  {}\n",
            state.identity.enrolment_link(&token)
        );
    }
    let cluster = state.cluster.clone();
    let served = serve(listener, state, config, shutdown).await;
    cluster.leave().await;
    if let Some(ingest) = ingest {
        ingest.abort();
    }
    for forwarder in siem {
        forwarder.abort();
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // Everything written, and a final checkpoint signed and published, by this path alone: two
    // publishers could each write the links list and leave it out of order.
    publisher.abort();
    let _ = publisher.await;
    let closing = audit.clone();
    tokio::task::spawn_blocking(move || closing.close()).await?;
    // From what the store holds now: the publisher may have failed halfway before it stopped.
    let mut before = Published::Unknown;
    publish_newest_checkpoint(&audit, &store, &mut before).await;
    served
}

/// Publishes each checkpoint the node signs to the shared store (with Redis, outside the node),
/// where the node cannot take it back: a log or checkpoint file cut back or rewritten later is
/// refused at the next start (`AuditLog::check_published`). A publication that fails is logged
/// and tried again with the next checkpoint; the log itself does not depend on it.
async fn publish_checkpoints(audit: Arc<AuditLog>, store: Store, mut last: Published) {
    let mut progress = audit.subscribe();
    let mut published = progress.borrow_and_update().checkpointed;
    while progress.changed().await.is_ok() {
        let signed = progress.borrow_and_update().checkpointed;
        if signed > published && publish_newest_checkpoint(&audit, &store, &mut last).await {
            published = signed;
        }
    }
}

/// Publishes the newest checkpoint (at start, and after the final one at shutdown too), and
/// first the consistency proof to it from `last`, the one published before, which it replaces;
/// whether it was published. Other nodes take the new checkpoint as an extension of the one
/// they saw only through these proofs (`sightline_core::witness`).
async fn publish_newest_checkpoint(audit: &AuditLog, store: &Store, published: &mut Published) -> bool {
    use sightline_store::Collection;
    let Some(newest) = audit.newest_checkpoint() else { return true };
    // After a publication that failed (a write may have landed though it timed out), the next
    // proof starts at what the store holds, or nothing is published: a proof from an older
    // checkpoint than the one witnesses saw reads to them as proofs withheld.
    let last = match published {
        Published::Known(last) => last.clone(),
        Published::Unknown => match store.get::<String>(Collection::Checkpoints, audit.node()).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the checkpoint published before; will try with the next");
                return false;
            }
        },
    };
    if last.as_deref() == Some(newest.as_str()) {
        *published = Published::Known(last);
        return true;
    }
    let link = match last.as_deref().map(|old| audit.consistency_from(old)) {
        Some(Ok(link)) => link,
        Some(Err(e)) => {
            // The store's checkpoint is not one of this log's: start-up refuses such a log, so
            // this is a store someone wrote into. The new checkpoint goes out without a proof.
            tracing::error!(error = %e, "the checkpoint published before does not open with this node's key");
            None
        }
        None => None,
    };
    // The checkpoint the proof leads to, not one read again: the writer may have signed a newer
    // one meanwhile, and a proof past the published checkpoint reads as a fork to witnesses.
    let note = link.as_ref().map_or(newest, |l| l.new.clone());
    let linked = async {
        if let Some(link) = link {
            let mut links: sightline_core::witness::CheckpointLinks =
                store.get(Collection::CheckpointLinks, audit.node()).await?.unwrap_or_default();
            links.push(link);
            store.put(Collection::CheckpointLinks, audit.node(), &links).await?;
        }
        store.put(Collection::Checkpoints, audit.node(), &note).await
    };
    match linked.await {
        Ok(()) => {
            *published = Published::Known(Some(note));
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot publish the audit checkpoint; will try with the next");
            *published = Published::Unknown;
            false
        }
    }
}

/// The checkpoint this node published last, as far as it knows.
#[derive(Debug, Clone)]
enum Published {
    /// This one (none yet: `None`).
    Known(Option<String>),
    /// A publication failed: the store is read again first.
    Unknown,
}

/// Fails closed (R41): while the audit log cannot be written, running sessions end (and new ones
/// are refused where they start).
async fn end_sessions_while_unaudited(audit: Arc<AuditLog>, hub: Arc<Hub>) {
    let mut progress = audit.subscribe();
    loop {
        progress.borrow_and_update();
        // `available` and not the failure alone: with break-glass, the disk alone may carry on.
        if let Err(sightline_audit::AuditUnavailable(why)) = audit.available() {
            for summary in hub.sessions() {
                if let Some(session) = hub.session(&summary.session_id) {
                    tracing::error!(session = %session.id, %why, "ending a session: the audit log cannot be written");
                    session.step(sightline_core::session::Event::AuditUnavailable, "system");
                }
            }
        }
        if progress.changed().await.is_err() {
            return;
        }
    }
}

/// Serves HTTP and WebSockets with `state` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let rotation = {
        let identity = state.identity.clone();
        tokio::spawn(async move {
            let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
            every_hour.tick().await;
            loop {
                every_hour.tick().await;
                if let Err(e) = identity.rotate_keys_if_due().await {
                    tracing::error!(error = %e, "signing key rotation failed");
                }
            }
        })
    };
    let hub = state.hub.clone();
    let router = crate::http::app(state, &config);
    let limits = crate::connections::ConnectionLimits::new(config.connection_caps());
    let header_timeout = std::time::Duration::from_secs(config.header_timeout_s);
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = crate::tls::TlsListener::new(listener, crate::tls::server_config(cert, key)?, limits)?;
            serve_connections(tls, router, header_timeout, shutdown).await;
        }
        _ => serve_connections(LimitedTcp { listener, limits }, router, header_timeout, shutdown).await,
    }
    rotation.abort();
    hub.shutdown().await;
    Ok(())
}

/// Plain TCP within the connection caps.
struct LimitedTcp {
    listener: tokio::net::TcpListener,
    limits: Arc<crate::connections::ConnectionLimits>,
}

impl axum::serve::Listener for LimitedTcp {
    type Io = crate::connections::Limited<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        crate::connections::accept_limited(&self.listener, &self.limits).await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// How long shutdown waits for connections to finish their requests.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The HTTP server loop (`axum::serve` with a header read timeout, which it does not offer):
/// HTTP/1 on each accepted connection, WebSocket upgrades, the client's address as
/// `ConnectInfo`, and on `shutdown` no new connections and a bounded drain of the open ones.
async fn serve_connections<L>(
    mut listener: L,
    router: Router,
    header_timeout: std::time::Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks as we go, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let router = router.clone();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request)
            });
            // HTTP/1 only: browsers speak HTTP/2 only over TLS with ALPN, which the relay does not
            // offer, and the auto builder's protocol sniffing would wait for bytes without the
            // header timeout (an idle socket would never be closed).
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    let _ = stop.send(true);
    if tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!(open = connections.len(), "connections still open after the drain; closing them");
        connections.abort_all();
    }
}

/// Applies revocations published by any node: sockets of revoked sessions, users and devices on
/// this node close at once.
async fn follow_revocations(store: Store, hub: Arc<Hub>, identity: Arc<Identity>) {
    let mut events = store.subscribe();
    loop {
        match events.recv().await {
            Ok(bytes) => match serde_json::from_slice::<Revocation>(&bytes) {
                Ok(revocation) => {
                    if let Revocation::Device { device_id } = &revocation {
                        identity.forget_device(device_id);
                    }
                    hub.revoke(&revocation)
                }
                // Followed by `cluster`.
                Err(_) if serde_json::from_slice::<crate::cluster::ClusterEvent>(&bytes).is_ok() => {}
                Err(e) => tracing::warn!(error = %e, "ignoring an unknown relay event"),
            },
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                // Missed events: sockets re-check their sessions periodically, so nothing stays open for long.
                tracing::warn!(missed = n, "relay events lagged");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_and_its_digest_come_from_one_read() {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/policy-sample.toml");
        let bytes = std::fs::read(sample).unwrap();
        let loaded = load_policy(std::path::Path::new(sample)).unwrap();
        assert_eq!(loaded.sha256, sightline_core::command_approval::digest_bytes(&bytes));
        assert!(!loaded.policy.segments.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let latin1 = dir.path().join("policy.toml");
        std::fs::write(&latin1, b"reasons = [\"caf\xe9\"]\n").unwrap();
        let refused = load_policy(&latin1).err().unwrap();
        assert!(format!("{refused:#}").contains("is not UTF-8"), "{refused:#}");
    }
}
