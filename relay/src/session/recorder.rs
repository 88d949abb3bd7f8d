//! The session's recording: started before the user is asked where the segment requires it
//! (R26), its news (chunk hashes into the audit log, R28; a stalled or failed recorder pauses or
//! ends the session), and what the viewers and the session bar say about it (R9).
//!
//! Where the segment says `recording = "required"` (the default; `"off"` is the only other value,
//! and the operator has no say), `LiveSession::open` starts the recorder before the user is
//! asked: the directory `<recordings>/<session id>/`, the manifest's signed opening line (session
//! facts, segment, the device's public key) and the index entry are written first, or the session
//! is refused with the reason (`recording_unavailable`, a `recording.unavailable` event). The
//! recorder then stands in front of the link's fan-out (`sightline_sfu::RecorderGate`). A stalled
//! recorder pauses the session as the relay's own pause, which only its recovery lifts; the bar
//! and the viewers stop saying "Recording"; if it has not recovered within
//! `sightline_recording::recorder::RECOVERY_LIMIT` (5 s) the session ends (`recorder_failed`).

use std::sync::Arc;

use sightline_core::handover::RunHead;
use sightline_core::recording::{Continuation, ManifestBody, TimelineEntry};
use sightline_core::session::Event;
use sightline_proto::channel::MediaSeal;
use sightline_proto::{Party, SessionEvent};

use super::LiveSession;
use sightline_audit::events::{EventKind, Outcome};
use sightline_recording::{Recorder, RecorderNews, Recordings};

impl LiveSession {
    /// Opens the recording: its directory and signed opening line are on disk, the recorder is
    /// in front of the fan-out, and the agent is told (R9). A session's first recording has the
    /// session's id; one that `continues` a recording cut by a lost node (R43) has an id of its
    /// own, and its opening line names the cut one and the gap.
    pub(super) async fn start_recording(
        self: &Arc<Self>,
        recordings: &Arc<Recordings>,
        continues: Option<Continuation>,
    ) -> Result<(), String> {
        let device_key = match self.identity.device(&self.link.info.agent_id).await {
            Ok(Some(device)) => device.public_key,
            Ok(None) => return Err("the device is not enrolled".into()),
            Err(e) => return Err(format!("cannot read the device's key: {e}")),
        };
        let recording_id = match continues {
            None => self.id.clone(),
            Some(_) => hex::encode(sightline_identity::random_bytes::<12>()),
        };
        let open = ManifestBody::Open {
            recording_id: recording_id.clone(),
            node: recordings.settings().node.clone(),
            segment: self.link.info.segment.clone(),
            session: Box::new(self.facts()),
            started_ms: self.identity.now_ms(),
            device_key,
            continues,
        };
        let (recordings, id) = (recordings.clone(), recording_id.clone());
        let starting = recordings.clone();
        let (recorder, mut news) = tokio::task::spawn_blocking(move || starting.start(&id, open))
            .await
            .map_err(|e| format!("recorder set-up panicked: {e}"))?
            .map_err(|e| format!("cannot write to the recordings directory: {e}"))?;
        // Findable by auditors from the start (R30): a recording nobody can find is no evidence.
        if let Err(e) = recordings.reindex(&recording_id).await {
            if !sightline_core::break_glass::is_break_glass(&self.request.operator.name) {
                recorder.close("the recordings index could not be written");
                return Err(format!("cannot index the recording: {e}"));
            }
            // Break-glass is for when the store is down (R43): the recording is on this node's
            // disk and in its audit log, and the index takes it once the store answers again.
            tracing::warn!(recording = %recording_id, error = %e, "break-glass session: the recording is indexed when the store answers");
            let (later, id) = (recordings.clone(), recording_id.clone());
            tokio::spawn(async move {
                while later.reindex(&id).await.is_err() {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
            });
        }
        let _ = self.recorder.set(recorder.clone());
        self.link.fanout.set_recorder(Arc::new(InFrontOfViewers(recorder)));
        *self.run_head.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(RunHead { recording_id: recording_id.clone(), chunks: 0, last_sha256: None });
        self.emit(EventKind::RecordingStarted, Outcome::Success, "system", format!("recording {recording_id}"));
        // The agent hears of it with the consent request (it has no session before that).
        self.status.send_modify(|s| s.recording = true);
        let session = self.clone();
        tokio::spawn(async move {
            while let Some(news) = news.recv().await {
                let closed = matches!(news, RecorderNews::Closed { .. });
                session.recorder_news(news);
                if closed && let Err(e) = recordings.reindex(&recording_id).await {
                    tracing::error!(recording = %recording_id, error = %e, "cannot mark the recording complete in the index");
                }
            }
        });
        Ok(())
    }

    /// Acts on what the recorder reports: chunk hashes into the audit log (R28), and a stalled
    /// or failed recorder pauses or ends the session (R26).
    fn recorder_news(&self, news: RecorderNews) {
        match news {
            RecorderNews::Chunk(c) => {
                if let Some(head) = self.run_head.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    head.chunks = c.index + 1;
                    head.last_sha256 = Some(c.sha256.clone());
                }
                self.emit(EventKind::RecordingChunk, Outcome::Success, "system", c.audit_detail())
            }
            RecorderNews::Stalled(why) => {
                self.emit(EventKind::RecordingStalled, Outcome::Failure, "system", why);
                self.set_recording(false);
                if !self.step(Event::RecorderStalled, "system").is_empty() {
                    self.tell_agent(SessionEvent::Pause { by: Party::System });
                }
            }
            RecorderNews::Recovered => {
                self.emit(EventKind::RecordingRecovered, Outcome::Success, "system", "writing again".into());
                self.set_recording(true);
                if !self.step(Event::RecorderRecovered, "system").is_empty() {
                    self.tell_agent(SessionEvent::Resume { by: Party::System });
                }
            }
            RecorderNews::Failed(why) => {
                self.emit(EventKind::RecordingFailed, Outcome::Failure, "system", why);
                self.set_recording(false);
                self.step(Event::RecorderFailed, "system");
            }
            RecorderNews::Closed { chunks } => {
                self.emit(EventKind::RecordingClosed, Outcome::Success, "system", format!("{chunks} chunks"));
            }
        }
    }

    /// What the viewers' status and the session bar say about recording (R9).
    fn set_recording(&self, on: bool) {
        self.status.send_if_modified(|s| std::mem::replace(&mut s.recording, on) != on);
        if !self.is_ended() {
            self.tell_agent(SessionEvent::Recording { on });
        }
    }

    /// The endpoint's signature over the frames it sent: kept with the recording.
    pub fn media_seal(&self, seal: MediaSeal) {
        if seal.session_id != self.id {
            tracing::warn!(session = %self.id, other = %seal.session_id, "media seal for another session; ignored");
            return;
        }
        if let Some(recorder) = self.recorder.get() {
            recorder.note(TimelineEntry::Seal { ts_ms: self.identity.now_ms(), seal });
        }
    }
}

/// The session's recorder as the fan-out sees it: the gate in front of the viewers (the fan-out
/// does not know how a recording is written).
struct InFrontOfViewers(Arc<Recorder>);

impl sightline_sfu::RecorderGate for InFrontOfViewers {
    fn taking(&self) -> bool {
        self.0.taking()
    }

    fn take(&self, packet: &sightline_peer::RtpPacket) -> bool {
        self.0.take(packet)
    }
}
