//! What the audit log's second copy costs (R43; `cargo xtask bench` runs it pinned to one core,
//! beside a real redis-server with `appendonly yes` and `appendfsync always`): durable appends
//! per second with 64 callers each awaiting its own commit, and the latency one event adds to an
//! acknowledgement on an idle log, each on the node's disk alone and on the disk plus the Redis
//! stream, in one run. Prints a summary and writes JSON to the file given as the first argument.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_audit::events::{Event, EventKind, Outcome, SessionFacts};
use sightline_audit::{AuditLog, AuditSettings, Replica};

/// A consent record of about the size the relay writes (facts plus a receipt, ~1.1 KB).
fn event(i: u64) -> Event {
    let facts = SessionFacts {
        session_id: format!("{i:024x}"),
        ticket: "INC-4711".into(),
        reason: "incident".into(),
        device_id: "dev-0042".into(),
        device: "front-desk-0042".into(),
        endpoint_user: "anna".into(),
        operator: "olga".into(),
        levels: vec![sightline_proto::Level::View, sightline_proto::Level::Control],
        unattended: false,
    };
    let detail = format!("levels: view, control; receipt {}", "A".repeat(700));
    Event::of_session(1_780_000_000_000 + i, EventKind::ConsentAllowed, Outcome::Success, "anna", facts, None, detail)
}

fn settings(dir: &Path) -> AuditSettings {
    AuditSettings {
        dir: dir.to_owned(),
        node: "bench".into(),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(1),
    }
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Appends per second with 64 waiting callers, then p50 and p95 of one acknowledgement.
async fn measure(log: Arc<AuditLog>, n: u64) -> anyhow::Result<(f64, f64, f64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 64 {
                log.append(event(t * (n / 64) + i));
                log.committed().await.expect("durable");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let rate = ((n / 64) * 64) as f64 / start.elapsed().as_secs_f64();
    let mut latency = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        log.append(event(n + i));
        log.committed().await?;
        latency.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    log.close();
    Ok((rate, percentile(&mut latency, 50), percentile(&mut latency, 95)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "bench-results/audit_copy.json".into());
    const N: u64 = 100_000;
    let tmp = tempfile::tempdir()?;

    let alone = Arc::new(AuditLog::open(&settings(&tmp.path().join("alone")))?);
    let (rate_alone, p50_alone, p95_alone) = measure(alone, N).await?;

    let redis = sightline_store::test_support::RedisServer::start_durable().await;
    let copy = sightline_relay::audit_copy::RedisCopy::open(redis.url(), "bench".into(), 0).await?;
    let described = copy.describe();
    let replica: Box<dyn Replica> = Box::new(copy);
    let copied = Arc::new(AuditLog::open_replicated(&settings(&tmp.path().join("copied")), None, Some(replica))?);
    let (rate_copy, p50_copy, p95_copy) = measure(copied, N).await?;

    let summary = serde_json::json!({
        "records_per_run": N,
        "second_copy": described,
        "disk_only_durable_appends_per_s_64_callers": rate_alone.round(),
        "disk_only_ack_latency_ms_p50": p50_alone,
        "disk_only_ack_latency_ms_p95": p95_alone,
        "disk_and_redis_durable_appends_per_s_64_callers": rate_copy.round(),
        "disk_and_redis_ack_latency_ms_p50": p50_copy,
        "disk_and_redis_ack_latency_ms_p95": p95_copy,
        "rate_ratio_copy_to_disk_only": (rate_copy / rate_alone * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}
