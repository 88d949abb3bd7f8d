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
    /// Serves the claim of `agent` (just online here) and tells it the outcome.
    pub async fn serve(self, agent: Arc<OnlineAgent>, claim: ResumeClaim) {
        let session_id = claim.session_id.clone();
        // On success the session told the endpoint itself (`LiveSession::resume`).
        match self.take_over(&agent, claim).await {
            Ok(()) => tracing::info!(session = %session_id, "took over a session of a lost node"),
            Err(reason) => {
                tracing::warn!(session = %session_id, %reason, "cannot take over the session");
                agent.link.send(RelayToAgent::ResumeRefused { session_id, reason });
            }
        }
    }

    async fn take_over(&self, agent: &Arc<OnlineAgent>, claim: ResumeClaim) -> Result<(), String> {
        let info = &agent.link.info;
        let (lost, handover) = self.wait_for_loss(&claim.session_id).await?;
        let levels = check_claim(&claim, &handover, &info.agent_id, &info.user).map_err(|e| e.to_string())?;
        for receipt in &claim.receipts {
            let message = sightline_proto::agent_auth::consent_message(receipt);
            self.identity
                .verify_device_message(&info.agent_id, &message, &receipt.signature)
                .await
                .map_err(|e| format!("a receipt does not verify: {e}"))?;
        }
        let key = crate::cluster::lost_claim(&lost.name, &claim.session_id);
        let me = (self.cluster.me().to_owned(), crate::cluster::now_ms());
        match self.cluster.store().insert_new(Collection::Mutexes, &key, &me).await {
            Ok(true) => {}
            Ok(false) => return Err("a surviving node already ended the session".into()),
            Err(e) => return Err(format!("the shared store cannot claim the session: {e}")),
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
                return Err(e.to_string());
            }
        };
        // The endpoint went away while this node waited: the session ends as on any agent loss.
        if !self.hub.agent(&info.agent_id).is_ok_and(|a| a.link.conn_id == agent.link.conn_id) {
            session.step(sightline_core::session::Event::AgentLost, "system");
            return Err("the endpoint went away".into());
        }
        Ok(())
    }

    /// The lost node's record holding the session, and its handover, once that node counts as
    /// lost. Refused when no node published the session, or its node keeps answering.
    async fn wait_for_loss(&self, session_id: &str) -> Result<(NodeRecord, Handover), String> {
        let deadline = Instant::now() + Duration::from_millis(NODE_LOST_MS) + PATIENCE;
        loop {
            let records = self
                .cluster
                .store()
                .list::<serde_json::Value>(Collection::Nodes)
                .await
                .map_err(|e| format!("the shared store cannot be read: {e}"))?;
            let holder = decode_records(records).into_iter().filter(|r| r.name != self.cluster.me()).find_map(|r| {
                let handover = r.handovers.iter().find(|h| h.session_id == session_id).cloned();
                handover.map(|h| (r, h))
            });
            let Some((record, handover)) = holder else {
                return Err("no relay node runs this session".into());
            };
            let lost_after = Duration::from_millis(NODE_LOST_MS);
            if self.cluster.silent_for(&record.name).is_some_and(|silent| silent >= lost_after) {
                return Ok((record, handover));
            }
            if Instant::now() >= deadline {
                return Err(format!("relay node {} still answers; it ends the session itself", record.name));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
