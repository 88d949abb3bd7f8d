//! Taking over a session whose relay node was lost (R43, issue 27).
//!
//! An endpoint that lost the node running its session keeps the session suspended (input
//! released, no picture) and reconnects to another node, naming the session and carrying its
//! user's signed receipts in its `hello`. This node then:
//!
//! 1. finds the session in a node record's `handovers` (what its node last published);
//! 2. checks the claim against it (`sightline_core::handover::check_claim`) and every receipt's
//!    signature against the device's enrolled key;
//! 3. waits until that node counts as lost (`cluster::NODE_LOST_MS` of a record standing still,
//!    by this node's clock), giving up if it keeps answering: a node that is alive ends the
//!    session itself when its agent goes (R22);
//! 4. claims the session in the store (`cluster::lost_claim`, the same claim survivors take to record
//!    a lost session's end, so exactly one node either takes the session over or ends it);
//! 5. runs it here (`LiveSession::resume`), which tells the endpoint to go on.
//!
//! A claim refused before step 4 leaves the session to the survivors, which record its end
//! (reason: node lost) once `TAKEOVER_WINDOW_MS` passed; after step 4 this node records the end
//! itself. Either way the endpoint is told (`resume_refused`) and ends its side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_core::cluster::NodeRecord;
use sightline_core::handover::{Handover, check_claim};
use sightline_proto::{RelayToAgent, ResumeClaim};

use crate::cluster::{Cluster, NODE_LOST_MS, decode_records};
use crate::hub::{Hub, OnlineAgent};
use crate::session::{LiveSession, LostNode};
use sightline_identity::Identity;
use sightline_recording::Recordings;
use sightline_store::Collection;

/// How often the lost node's record is read again while waiting for it to count as lost.
const POLL: Duration = Duration::from_millis(250);
/// How long past `NODE_LOST_MS` this node waits for a node that keeps answering.
const PATIENCE: Duration = Duration::from_secs(4);

/// What a takeover needs of the node.
#[derive(Clone)]
pub struct Takeover {
    pub hub: Arc<Hub>,
    pub cluster: Arc<Cluster>,
    pub identity: Arc<Identity>,
    pub recordings: Arc<Recordings>,
}

impl Takeover {
    /// Serves the claim of `agent` (just online here) and tells it the outcome. While it runs,
    /// no operator opens another session on the device.
    pub async fn serve(self, agent: Arc<OnlineAgent>, claim: ResumeClaim) {
        let session_id = claim.session_id.clone();
        agent.link.set_resuming(true);
        let outcome = self.take_over(&agent, claim).await;
        agent.link.set_resuming(false);
        // On success the session told the endpoint itself (`LiveSession::resume`).
        match outcome {
            Ok(()) => tracing::info!(session = %session_id, "took over a session of a lost node"),
            Err(refusal) => {
                tracing::warn!(session = %session_id, reason = %refusal.detail, "cannot take over the session");
                agent.link.send(RelayToAgent::ResumeRefused { session_id, reason: refusal.public });
            }
        }
    }

    /// Whether `agent` is still the device's live connection here.
    fn still_here(&self, agent: &Arc<OnlineAgent>) -> bool {
        self.hub.agent(&agent.link.info.agent_id).is_ok_and(|a| a.link.conn_id == agent.link.conn_id)
    }

    async fn take_over(&self, agent: &Arc<OnlineAgent>, claim: ResumeClaim) -> Result<(), Refusal> {
        let info = &agent.link.info;
        // The claim is checked on the first read, before any waiting: a bogus one costs one read.
        let (_, handover) = self.holder(&claim.session_id).await?;
        check_claim(&claim, &handover, &info.agent_id, &info.user).map_err(|e| Refusal::said(e.to_string()))?;
        for receipt in &claim.receipts {
            let message = sightline_proto::agent_auth::consent_message(receipt);
            self.identity
                .verify_device_message(&info.agent_id, &message, &receipt.signature)
                .await
                .map_err(|e| Refusal::said(format!("a receipt does not verify: {e}")))?;
        }
        let (lost, handover) = self.wait_for_loss(agent, &claim.session_id).await?;
        // Checked again against what the lost node published last.
        let levels =
            check_claim(&claim, &handover, &info.agent_id, &info.user).map_err(|e| Refusal::said(e.to_string()))?;
        if !self.still_here(agent) {
            return Err(Refusal::said("the endpoint went away".into()));
        }
        let key = crate::cluster::lost_claim(&lost.name, &claim.session_id);
        let me = (self.cluster.me().to_owned(), crate::cluster::now_ms());
        match self.cluster.store().insert_new(Collection::Mutexes, &key, &me).await {
            Ok(true) => {}
            Ok(false) => return Err(Refusal::said("a surviving node already ended the session".into())),
            Err(e) => return Err(Refusal::store(e)),
        }
        let from = LostNode { name: lost.name.clone(), last_heard_ms: lost.heartbeat_ms };
        let resumed = LiveSession::resume(
            self.identity.clone(),
            agent.link.clone(),
            agent.sessions.clone(),
            &handover,
            levels,
            &self.recordings,
            &from,
        )
        .await;
        let session = match resumed {
            Ok(session) => session,
            Err(e) => {
                // Claimed here: this node records the end. A session that started here ended
                // itself (its machine recorded why); one that could not start did not.
                if matches!(e, crate::session::SessionError::Busy(_))
                    && let Some(summary) = lost.sessions.iter().find(|s| s.session_id == claim.session_id)
                {
                    self.cluster.record_lost_end(
                        &lost,
                        summary,
                        &format!("it could not move to {}: {e}", self.cluster.me()),
                    );
                }
                return Err(Refusal::said(e.to_string()));
            }
        };
        // The endpoint went away meanwhile: the session ends as on any agent loss.
        if !self.still_here(agent) {
            session.step(sightline_core::session::Event::AgentLost, "system");
            return Err(Refusal::said("the endpoint went away".into()));
        }
        Ok(())
    }

    /// The record that holds the session now, with its handover: of several (a session that
    /// moved before leaves the record of its first node behind), the newest.
    async fn holder(&self, session_id: &str) -> Result<(NodeRecord, Handover), Refusal> {
        let records =
            self.cluster.store().list::<serde_json::Value>(Collection::Nodes).await.map_err(Refusal::store)?;
        decode_records(records)
            .into_iter()
            .filter(|r| r.name != self.cluster.me())
            .filter_map(|r| {
                let handover = r.handovers.iter().find(|h| h.session_id == session_id).cloned();
                handover.map(|h| (r, h))
            })
            .max_by_key(|(r, _)| r.heartbeat_ms)
            .ok_or_else(|| Refusal::said("no relay node runs this session".into()))
    }

    /// The lost node's record holding the session, and its handover, once that node counts as
    /// lost: its record, as read here, has stood still that long by this node's clock. Refused
    /// when no node publishes the session any more, its node keeps answering, or the endpoint
    /// goes away meanwhile.
    async fn wait_for_loss(
        &self,
        agent: &Arc<OnlineAgent>,
        session_id: &str,
    ) -> Result<(NodeRecord, Handover), Refusal> {
        let deadline = Instant::now() + Duration::from_millis(NODE_LOST_MS) + PATIENCE;
        let lost_after = Duration::from_millis(NODE_LOST_MS);
        loop {
            let (record, handover) = self.holder(session_id).await?;
            if self.cluster.still_for(&record.name, record.heartbeat_ms).is_some_and(|still| still >= lost_after) {
                return Ok((record, handover));
            }
            if Instant::now() >= deadline {
                return Err(Refusal::said(format!(
                    "relay node {} still answers; it ends the session itself",
                    record.name
                )));
            }
            if !self.still_here(agent) {
                return Err(Refusal::said("the endpoint went away".into()));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Why a claim was refused: what the endpoint is told, and what the log says.
struct Refusal {
    public: String,
    detail: String,
}

impl Refusal {
    fn said(why: String) -> Refusal {
        Refusal { public: why.clone(), detail: why }
    }

    /// The store's own error stays in this node's log.
    fn store(e: sightline_store::StoreError) -> Refusal {
        Refusal {
            public: "the relay cannot reach its shared store; the session cannot move".into(),
            detail: format!("the shared store: {e}"),
        }
    }
}
