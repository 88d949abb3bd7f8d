//! The audit log's second copy (R43): with several nodes on Redis, every record is also durable
//! in a Redis stream before anything it records is acknowledged, so a node whose disk is lost
//! loses no acknowledged record (`relay audit recover`). The audit writer drives it
//! (`sightline_audit::Replica`); the stream itself is `sightline_store::audit_copy`.

use anyhow::Context;
use sightline_store::audit_copy::AuditCopy;

/// The copy as the audit writer sees it.
pub struct RedisCopy {
    copy: AuditCopy,
    described: String,
}

impl RedisCopy {
    /// The copy of node `node`'s log at `url`; `replicas` Redis replicas must acknowledge each
    /// append. Warns when Redis itself does not sync its disk before answering.
    pub async fn open(url: String, node: String, replicas: u32) -> anyhow::Result<RedisCopy> {
        tokio::task::spawn_blocking(move || {
            let mut copy = AuditCopy::open(&url, &node, replicas)?;
            let durability = copy.settings();
            if !durability.contains("appendonly yes, appendfsync always") {
                tracing::warn!(%durability, "the audit log's second copy is in Redis memory until Redis writes its disk: for two durable copies, run Redis with appendonly yes and appendfsync always");
            }
            let described = format!("redis stream {} ({durability})", copy.key());
            Ok::<_, sightline_store::StoreError>(RedisCopy { copy, described })
        })
        .await
        .context("opening the audit log's second copy")?
        .map_err(Into::into)
    }
}

impl sightline_audit::Replica for RedisCopy {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn last_seq(&mut self) -> Result<Option<u64>, String> {
        self.copy.last_seq().map_err(|e| e.to_string())
    }

    fn record(&mut self, seq: u64) -> Result<Option<Vec<u8>>, String> {
        self.copy.record(seq).map_err(|e| e.to_string())
    }

    fn append(&mut self, first_seq: u64, records: &[Vec<u8>]) -> Result<(), String> {
        self.copy.append(first_seq, records).map_err(|e| e.to_string())
    }
}
