//! This node as a witness of the others' audit logs (R43): every 2 s it reads the checkpoints
//! the other nodes published to the store and checks each against the node's key (from its
//! record) and against what it saw before (`sightline_core::witness`). A checkpoint that
//! contradicts an earlier one is `audit.checkpoint_inconsistent` in this node's log (and the
//! SIEM's, at the highest severity); every `--audit-witness-s` while a node's log grows, its
//! newest checkpoint goes into this node's log as `audit.checkpoint_witnessed`, so the node
//! cannot later present a shorter or different history than the one this log holds
//! (`relay audit verify` with both logs checks it).

use std::collections::HashMap;
use std::sync::Arc;

use sightline_audit::events::{Event, EventKind, EventSink, Outcome};
use sightline_core::audit::Checkpoint;
use sightline_core::witness::{Chain, CheckpointLinks, Verdict, Witness, prove_chain};
use sightline_store::{Collection, Store};

use crate::cluster::{Cluster, now_ms};

/// How often the published checkpoints are read.
const READ_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Watches the other nodes' published checkpoints until the process ends.
pub async fn run(cluster: Arc<Cluster>, store: Store, events: Arc<dyn EventSink>, record_every: std::time::Duration) {
    let every_ms = u64::try_from(record_every.as_millis()).unwrap_or(u64::MAX);
    let mut witness = Witness::default();
    // Each node's key as its records named it (a node gone keeps the key it had).
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut tick = tokio::time::interval(READ_EVERY);
    let mut failing = false;
    loop {
        tick.tick().await;
        for node in cluster.view().nodes() {
            keys.insert(node.name.clone(), node.key.clone());
        }
        let published = match store.list::<String>(Collection::Checkpoints).await {
            Ok(published) => {
                failing = false;
                published
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the other nodes' checkpoints to witness them");
                }
                failing = true;
                continue;
            }
        };
        for (node, note) in published {
            if node == cluster.me() {
                continue;
            }
            let Some(key) = keys.get(&node) else { continue };
            let emit = |kind, outcome, detail: String| {
                events.emit(Event {
                    ts_ms: now_ms(),
                    kind,
                    outcome,
                    actor: "system".into(),
                    subject: Some(format!("node:{node}")),
                    source: None,
                    detail,
                    session: None,
                });
            };
            let checkpoint = match Checkpoint::open(&note, key) {
                Ok(checkpoint) => checkpoint,
                Err(e) => {
                    tracing::warn!(%node, error = %e, "a published checkpoint does not open with its node's key");
                    continue;
                }
            };
            let root = checkpoint.root.to_string();
            // Grown since the checkpoint seen: the node's own proofs must lead from that one to
            // this (read only then: most reads find nothing new).
            let chain = match witness.seen(&node) {
                Some((size, seen_root)) if size < checkpoint.size => {
                    match store.get::<CheckpointLinks>(Collection::CheckpointLinks, &node).await {
                        Ok(links) => prove_chain(
                            &links.unwrap_or_default().links,
                            key,
                            (size, seen_root),
                            (checkpoint.size, &root),
                        ),
                        Err(e) => {
                            tracing::warn!(%node, error = %e, "cannot read the proofs between a node's checkpoints");
                            continue;
                        }
                    }
                }
                _ => Chain::Missing,
            };
            if chain == Chain::Missing && witness.seen(&node).is_some_and(|(size, _)| size < checkpoint.size) {
                tracing::debug!(%node, size = checkpoint.size, "the published proofs no longer reach back to the checkpoint seen: taken on size and root");
            }
            match witness.observe(&node, checkpoint.size, &root, now_ms(), every_ms, |_, _| chain) {
                Verdict::Nothing => {}
                Verdict::Record => emit(EventKind::CheckpointWitnessed, Outcome::Success, note),
                Verdict::Forked { seen_size, seen_root, why } => {
                    tracing::error!(%node, size = checkpoint.size, seen_size, %why, "a node's published checkpoint does not extend one seen before");
                    emit(
                        EventKind::CheckpointInconsistent,
                        Outcome::Failure,
                        format!(
                            "node {node} published a checkpoint of {} records (root {root}) that does not extend the one of {seen_size} (root {seen_root}) this node saw: {why}",
                            checkpoint.size
                        ),
                    );
                }
                Verdict::Inconsistent { seen_size, seen_root } => {
                    tracing::error!(%node, size = checkpoint.size, seen_size, "a node's published checkpoint contradicts one seen before");
                    emit(
                        EventKind::CheckpointInconsistent,
                        Outcome::Failure,
                        format!(
                            "node {node} published a checkpoint of {} records (root {root}) after this node saw one of {seen_size} (root {seen_root}): its history was cut back or rewritten",
                            checkpoint.size
                        ),
                    );
                }
            }
        }
    }
}
