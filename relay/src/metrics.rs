//! Prometheus metrics (R46), served in Prometheus's text format (0.0.4, what every Prometheus
//! and `promtool check metrics` read) on a listener of their own
//! (`--metrics-listen`), never on the public port: they describe the service to its operators,
//! not to its users. The official client (`prometheus-client`) encodes them.
//!
//! Names follow Prometheus's conventions: `sightline_` first, base units, `_total` on counters;
//! labels have few values (an event kind, an outcome, an end reason, a session phase), never a
//! user, a device, a session or an address. Counters of things that happen are counted where
//! they happen (every security event as it goes to the audit log, every session end with its
//! reason); gauges of what holds now are read at each scrape from the hub and the audit log.
//!
//! One registry per process: the counters are statics, as a process has one relay.

use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sightline_audit::AuditLog;
use sightline_audit::events::{Event, EventSink};
use sightline_proto::{EndReason, SessionPhase};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CapLabel {
    cap: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

struct Metrics {
    registry: Registry,
    audit_events: Family<KindOutcome, Counter>,
    sessions_ended: Family<ReasonLabel, Counter>,
    connections_refused: Family<CapLabel, Counter>,
    viewer_sockets: Gauge,
    agents_connected: Gauge,
    sessions_running: Family<PhaseLabel, Gauge>,
    audit_records: Gauge,
    audit_committed: Counter,
    audit_queue: Gauge,
    audit_writable: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("sightline");
    let build = Family::<BuildLabels, Gauge>::default();
    build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
    registry.register("build_info", "The relay's version (the value is always 1)", build);
    fn registered<M: prometheus_client::registry::Metric + Clone>(
        registry: &mut Registry,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        registry.register(name, help, metric.clone());
        metric
    }
    let r = &mut registry;
    let audit_events = registered(
        r,
        "audit_events",
        "Security events this node sent to its audit log, by kind and outcome",
        Family::default(),
    );
    let sessions_ended =
        registered(r, "sessions_ended", "Sessions that ended on this node, by reason", Family::default());
    let connections_refused = registered(
        r,
        "connections_refused",
        "Connections closed at accept because a cap was reached, by cap (per_address, total)",
        Family::default(),
    );
    let viewer_sockets = registered(r, "viewer_sockets", "Viewer sockets open on this node", Gauge::default());
    let agents_connected = registered(r, "agents_connected", "Agents whose link this node holds", Gauge::default());
    let sessions_running =
        registered(r, "sessions_running", "Sessions running on this node, by phase", Family::default());
    let audit_records = registered(r, "audit_records", "Records in this node's audit log", Gauge::default());
    let audit_committed = registered(
        r,
        "audit_committed_events",
        "Events of this process that are durable (on disk, and in the second copy where there is one)",
        Counter::default(),
    );
    let audit_queue =
        registered(r, "audit_queue_events", "Events queued for the audit log and not yet durable", Gauge::default());
    let audit_writable =
        registered(r, "audit_writable", "Whether the audit log takes records now (1) or not (0)", Gauge::default());
    Metrics {
        registry,
        audit_events,
        sessions_ended,
        connections_refused,
        viewer_sockets,
        agents_connected,
        sessions_running,
        audit_records,
        audit_committed,
        audit_queue,
        audit_writable,
    }
});

/// A session ended on this node with `reason`.
pub fn session_ended(reason: &EndReason) {
    METRICS.sessions_ended.get_or_create(&ReasonLabel { reason: end_reason_label(reason) }).inc();
}

/// A connection was closed at accept: `cap` (per_address or total) was reached.
pub fn connection_refused(cap: &'static str) {
    METRICS.connections_refused.get_or_create(&CapLabel { cap }).inc();
}

/// The label of an end reason: its kind, without the name or text some reasons carry.
fn end_reason_label(reason: &EndReason) -> &'static str {
    match reason {
        EndReason::DeniedByUser => "denied_by_user",
        EndReason::ConsentTimedOut => "consent_timed_out",
        EndReason::ConsentClosed => "consent_closed",
        EndReason::EndedByUser => "ended_by_user",
        EndReason::EndedByOperator => "ended_by_operator",
        EndReason::KilledByAdmin(_) => "killed_by_admin",
        EndReason::MaxDuration => "max_duration",
        EndReason::Idle => "idle",
        EndReason::AgentLost => "agent_lost",
        EndReason::OperatorLost => "operator_lost",
        EndReason::RecorderFailed => "recorder_failed",
        EndReason::AuditUnavailable => "audit_unavailable",
        EndReason::NodeLost(_) => "node_lost",
        EndReason::DeclinedByEndpoint(_) => "declined_by_endpoint",
        EndReason::DeadlineReached(_) => "deadline_reached",
    }
}

/// A viewer socket is open while this lives.
pub struct ViewerSocket(());

impl ViewerSocket {
    pub fn open() -> ViewerSocket {
        METRICS.viewer_sockets.inc();
        ViewerSocket(())
    }
}

impl Drop for ViewerSocket {
    fn drop(&mut self) {
        METRICS.viewer_sockets.dec();
    }
}

/// The audit log as the relay's event sink, counting each event by kind and outcome on its way.
pub struct CountedSink(pub Arc<AuditLog>);

impl EventSink for CountedSink {
    fn emit(&self, event: Event) {
        let labels = KindOutcome { kind: event.kind.name(), outcome: event.outcome.as_str() };
        METRICS.audit_events.get_or_create(&labels).inc();
        self.0.emit(event);
    }

    fn committed(&self) -> sightline_audit::events::Commit<'_> {
        EventSink::committed(&*self.0)
    }

    fn available(&self) -> Result<(), sightline_audit::AuditUnavailable> {
        EventSink::available(&*self.0)
    }
}

/// What holds on the node now, read at each scrape.
pub struct Now {
    /// Agents whose link the node holds.
    pub agents: usize,
    /// The phase of each session running on the node.
    pub sessions: Vec<SessionPhase>,
}

/// The metrics now, in Prometheus's text format, with what holds `now` and the state of `audit`.
pub fn encode(now: &Now, audit: &AuditLog) -> String {
    let m = &*METRICS;
    m.agents_connected.set(i64::try_from(now.agents).unwrap_or(i64::MAX));
    for (phase, label) in [
        (SessionPhase::AwaitingConsent, "awaiting_consent"),
        (SessionPhase::Active, "active"),
        (SessionPhase::Paused, "paused"),
    ] {
        let n = now.sessions.iter().filter(|p| **p == phase).count();
        m.sessions_running.get_or_create(&PhaseLabel { phase: label }).set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let progress = audit.progress();
    m.audit_records.set(i64::try_from(progress.size).unwrap_or(i64::MAX));
    let counted = m.audit_committed.get();
    m.audit_committed.inc_by(progress.committed.saturating_sub(counted));
    m.audit_queue.set(i64::try_from(audit.accepted().saturating_sub(progress.committed)).unwrap_or(i64::MAX));
    m.audit_writable.set(i64::from(audit.available().is_ok()));
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry);
    text
}

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Serves `GET /metrics` on `listener` until the process ends; `now` reads what holds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    now: impl Fn() -> Now + Clone + Send + Sync + 'static,
    audit: Arc<AuditLog>,
) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (now, audit) = (now.clone(), audit.clone());
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], encode(&now(), &audit)) }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_are_labelled_without_what_they_carry() {
        assert_eq!(end_reason_label(&EndReason::KilledByAdmin("alice".into())), "killed_by_admin");
        assert_eq!(end_reason_label(&EndReason::DeclinedByEndpoint("busy".into())), "declined_by_endpoint");
    }
}
