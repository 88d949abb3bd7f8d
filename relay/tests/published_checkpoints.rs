//! A node publishes each audit checkpoint it signs where it cannot take it back (the store), and
//! refuses to start on a log cut back since, naming the difference (R39, R41).

mod common;

use std::path::Path;
use std::time::Duration;

use sightline_audit::events::{Event, EventKind, Outcome};
use sightline_audit::{AuditLog, AuditSettings};

fn settings(data: &Path) -> AuditSettings {
    AuditSettings {
        dir: data.join("audit"),
        node: "test".into(),
        checkpoint_records: 1000,
        checkpoint_interval: Duration::from_secs(60),
    }
}

fn event(i: u64) -> Event {
    Event {
        ts_ms: 1_780_000_000_000 + i,
        kind: EventKind::DeviceTokenCreated,
        outcome: Outcome::Success,
        actor: "cli".into(),
        subject: None,
        source: None,
        detail: format!("segment office; token {i:016x}"),
        session: None,
    }
}

/// Runs the relay on `data` (state in `redis`) until it has published a checkpoint of at least
/// `size` records, then stops it; returns what `run` returned.
async fn run_until_published(data: &Path, redis: &str, size: u64) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = common::config(data, listener.local_addr().unwrap(), &[&format!("--redis={redis}")]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(sightline_relay::server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !relay.is_finished() && published_size(data, redis).await.is_none_or(|s| s < size) {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint of {size} records was published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    relay.await.unwrap()
}

/// The size of the checkpoint the node published in the shared store.
async fn published_size(data: &Path, redis: &str) -> Option<u64> {
    let backend = sightline_store::redis::RedisBackend::connect(redis).await.ok()?;
    let store = sightline_store::Store::new(std::sync::Arc::new(backend));
    let note: String = store.get(sightline_store::Collection::Checkpoints, "test").await.ok()??;
    let key = std::fs::read_to_string(data.join("audit/audit.pub")).ok()?;
    Some(sightline_core::audit::Checkpoint::open(&note, key.trim()).ok()?.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_after_its_checkpoint_was_published_stops_the_node() {
    let redis = sightline_store::test_support::RedisServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    // Twelve records written by the command line before the relay ever ran.
    let log = AuditLog::open(&settings(data)).unwrap();
    for i in 0..12 {
        log.append(event(i));
    }
    log.close();

    // The relay publishes the checkpoint it finds, then the one it signs at shutdown.
    run_until_published(data, &redis.url(), 12).await.expect("the relay runs on its log");
    let published = published_size(data, &redis.url()).await.expect("a checkpoint is in the store");
    assert!(published >= 12, "published {published}");
    // Control: the untouched log starts again.
    run_until_published(data, &redis.url(), published).await.expect("the same log starts again");
    let published = published_size(data, &redis.url()).await.unwrap();

    // Cut back to nine records, every checkpoint gone. On its own the cut log verifies (a shorter
    // log whose tail no checkpoint covers)...
    let text = std::fs::read_to_string(data.join("audit/log.jsonl")).unwrap();
    std::fs::write(data.join("audit/log.jsonl"), text.lines().take(9).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    std::fs::write(data.join("audit/checkpoints.jsonl"), "").unwrap();
    let key = std::fs::read_to_string(data.join("audit/audit.pub")).unwrap();
    let trusted = sightline_audit::commands::TrustedKeys::new([key]);
    sightline_audit::commands::NodeLog::load(&data.join("audit"), &trusted).expect("on its own, the cut log verifies");

    // ...but the checkpoint the node published says more.
    let err = run_until_published(data, &redis.url(), u64::MAX).await.expect_err("a node does not start on a cut log");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("the log holds 9 records, but the node published a checkpoint of {published}")),
        "{err}"
    );
    // Nothing was signed over the cut log on the way out.
    assert_eq!(std::fs::read_to_string(data.join("audit/checkpoints.jsonl")).unwrap(), "");
}
