//! Selective forwarding: the agent's VP8 RTP is copied to every viewer's peer connection without
//! decoding. Keyframes are requested from the agent when a viewer connects, when a viewer's
//! browser asks (PLI/FIR), and when a slow viewer missed packets.
//!
//! The agent publishes the operator's picture (`view`) and, where the session is recorded, the
//! recording's (`record`); the two differ by the masks of each audience and the operator's
//! watermark (R34, R36). `view` goes to viewers only and `record` to the recorder only; a track
//! with any other label goes nowhere. While a recorder is attached, viewers get `view` only while
//! it is taking `record`: "no viewer sees the screen while it is not being recorded".
//!
//! A viewer without a decodable picture (just connected, lagged, or after a pause) gets nothing
//! until the start of a keyframe, and the relay asks again while it waits: one lost request
//! (on the way to the agent, or a keyframe sent before this viewer's leg was up) must not leave
//! a viewer staring at a black screen that it has no way to recover from itself.
//!
//! Each viewer's leg is subscribed only once its connection is up (packets written before DTLS
//! would be lost), asks for a keyframe at once and again every 500 ms while it waits, and sends
//! each packet as its own (its SSRC and payload type, no header extensions: those were
//! negotiated on another leg). Keyframe requests to the agent are coalesced to one per 200 ms.
//! Sessions pause and resume the fan-out by session id (`Fanout::begin_session`, `set_paused`),
//! so a session that ends just after the link's next one began cannot pause the new one.
//!
//! Owns the media legs on the relay's side (the agent's publisher, each viewer's subscriber), the
//! fan-out between them and the routing of each track to its audience. Refuses to know: the
//! webrtc crate (that is `sightline_peer`), sessions and consent (a session pauses and resumes
//! the fan-out it owns), and how a recording is written (the recorder is a [`RecorderGate`]).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_peer::{Peer, PeerConfig, PeerError, RtpPacket, SharedPorts, Sockets, vp8};
use sightline_proto::MediaTrack;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

/// Packets buffered per viewer before it counts as lagging (about 1 s of 1080p screen video).
const FANOUT_BUFFER: usize = 1024;
/// Minimum spacing of keyframe requests to the agent: several viewers joining at once, or a
/// browser repeating its PLI, cost one keyframe, not one each.
const KEYFRAME_REQUEST_SPACING: Duration = Duration::from_millis(200);
/// How often a viewer still waiting for its first keyframe asks again.
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("peer connection: {0}")]
    Peer(#[from] PeerError),
    #[error("the offer has {0} video tracks; an agent publishes one or two")]
    VideoTracks(usize),
}

/// What sits in front of the viewers while a session is recorded: its recorder. The fan-out gives
/// it every packet of `record` and lets `view` through only while it is taking (R26).
pub trait RecorderGate: Send + Sync {
    /// Whether it is taking the recording's track now.
    fn taking(&self) -> bool;
    /// Takes one RTP packet of the recording's track; `true` when it needs a keyframe.
    fn take(&self, packet: &RtpPacket) -> bool;
}

/// Builds peer connections for the relay's side of every media leg.
#[derive(Debug, Clone)]
pub struct Media {
    config: PeerConfig,
}

/// RTP from one agent to all its viewers and its recorder, and keyframe requests the other way.
pub struct Fanout {
    packets: broadcast::Sender<RtpPacket>,
    /// Keyframe requests for the `view` track (viewers) and the `record` track (the recorder).
    keyframe_view: Notify,
    keyframe_record: Notify,
    /// While a session is paused nothing reaches viewers (R8), whatever the agent still sends.
    paused: std::sync::atomic::AtomicBool,
    /// The session whose pause `paused` is. Every write of `paused` holds this lock and names
    /// its session, so a session that ends just as the next one starts cannot pause the new one.
    pause_owner: std::sync::Mutex<Option<String>>,
    /// The session's recorder, in front of the viewers. A closed one stays here until the next
    /// session on the link replaces or clears it: the screen must not reach viewers between a
    /// recorded session's end and their leaving.
    recorder: std::sync::RwLock<Option<Arc<dyn RecorderGate>>>,
    /// `view` packets not forwarded because the recorder was not taking: a viewer that sees this
    /// change has a gap in its picture and waits for a keyframe.
    view_gaps: std::sync::atomic::AtomicU64,
    /// Whether the last `view` packet was held back (a keyframe is asked for when they flow again).
    view_held: std::sync::atomic::AtomicBool,
}

impl Fanout {
    pub fn new() -> Arc<Fanout> {
        Arc::new(Fanout {
            packets: broadcast::channel(FANOUT_BUFFER).0,
            keyframe_view: Notify::new(),
            keyframe_record: Notify::new(),
            paused: false.into(),
            pause_owner: std::sync::Mutex::new(None),
            recorder: std::sync::RwLock::new(None),
            view_gaps: 0.into(),
            view_held: false.into(),
        })
    }

    /// Puts a session's recorder in front of the viewers.
    pub fn set_recorder(&self, recorder: Arc<dyn RecorderGate>) {
        *self.recorder.write().unwrap_or_else(|e| e.into_inner()) = Some(recorder);
    }

    /// An unrecorded session starts: no recorder (and none of an earlier session) holds its
    /// picture back.
    pub fn clear_recorder(&self) {
        *self.recorder.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// One packet of the agent's `track`, where `route` sends it.
    fn publish(&self, track: MediaTrack, packet: RtpPacket) {
        let recorder = self.recorder.read().unwrap_or_else(|e| e.into_inner()).clone();
        match route(track, recorder.as_ref().map(|r| r.taking())) {
            Route::Recorder => {
                if recorder.is_some_and(|r| r.take(&packet)) {
                    self.keyframe_record.notify_one();
                }
            }
            Route::Viewers => {
                use std::sync::atomic::Ordering::Relaxed;
                if self.view_held.swap(false, Relaxed) {
                    // Viewers missed packets: they wait for this keyframe.
                    self.request_keyframe();
                }
                // No receivers is normal between viewers; nothing to do.
                drop(self.packets.send(packet));
            }
            Route::Nowhere => {
                if track == MediaTrack::View {
                    use std::sync::atomic::Ordering::Relaxed;
                    self.view_gaps.fetch_add(1, Relaxed);
                    self.view_held.store(true, Relaxed);
                }
            }
        }
    }

    fn view_gaps(&self) -> u64 {
        self.view_gaps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Session `session_id` starts on the link: the fan-out is its, unpaused.
    pub fn begin_session(&self, session_id: &str) {
        let mut owner = self.pause_owner.lock().unwrap_or_else(|e| e.into_inner());
        *owner = Some(session_id.to_owned());
        self.paused.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Pauses or resumes for session `session_id`; a session that no longer owns the fan-out
    /// (the link's next one has begun) changes nothing.
    pub fn set_paused(&self, session_id: &str, paused: bool) {
        let owner = self.pause_owner.lock().unwrap_or_else(|e| e.into_inner());
        if owner.as_deref() == Some(session_id) {
            self.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn paused(&self) -> bool {
        self.paused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the agent for a keyframe of the viewers' track (coalesced with pending requests).
    pub fn request_keyframe(&self) {
        self.keyframe_view.notify_one();
    }

    fn keyframe_requests(&self, track: MediaTrack) -> &Notify {
        match track {
            MediaTrack::View => &self.keyframe_view,
            MediaTrack::Record => &self.keyframe_record,
        }
    }
}

/// Where a packet of the agent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Recorder,
    Viewers,
    Nowhere,
}

/// Where a packet of `track` goes, given the session's recorder: `None` without one, else
/// whether it is taking the recording's track. `record` reaches the recorder alone; `view`
/// reaches viewers alone, and while a recorder is attached only as long as it is taking.
fn route(track: MediaTrack, recorder_taking: Option<bool>) -> Route {
    match (track, recorder_taking) {
        (MediaTrack::Record, Some(_)) => Route::Recorder,
        // Between recorded sessions, or in an unrecorded one: nobody may have it.
        (MediaTrack::Record, None) => Route::Nowhere,
        (MediaTrack::View, Some(false)) => Route::Nowhere,
        (MediaTrack::View, Some(true) | None) => Route::Viewers,
    }
}

/// The agent's publishing peer connection and its forwarding task.
pub struct Publisher {
    peer: Arc<Peer>,
    task: JoinHandle<()>,
}

/// One viewer's peer connection and its forwarding tasks.
pub struct Subscriber {
    peer: Arc<Peer>,
    tasks: Vec<JoinHandle<()>>,
}

fn random_ssrc() -> u32 {
    // RandomState is seeded per instance from the OS: good enough for an SSRC, no extra crate.
    std::hash::RandomState::new().build_hasher().finish() as u32
}

impl Media {
    /// Media on `bind_ip`, every connection on the shared `ports` (or, without them, each on
    /// its own UDP port).
    pub fn new(bind_ip: IpAddr, ports: Option<SharedPorts>) -> Media {
        let sockets = ports.map_or(Sockets::Own, Sockets::Shared);
        Media { config: PeerConfig { bind_ip, sockets } }
    }

    /// Answers an agent's publish offer and starts forwarding its video into `fanout`.
    pub async fn accept_publisher(
        &self,
        offer_sdp: &str,
        fanout: Arc<Fanout>,
    ) -> Result<(Publisher, String), MediaError> {
        let videos = offer_sdp.lines().filter(|l| l.starts_with("m=video ")).count();
        if !(1..=2).contains(&videos) {
            return Err(MediaError::VideoTracks(videos));
        }
        let peer = Arc::new(Peer::new(self.config.clone()).await?);
        let answer = async {
            for _ in 0..videos {
                peer.add_video_receiver().await?;
            }
            peer.answer(offer_sdp).await
        }
        .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                peer.close().await;
                return Err(e.into());
            }
        };
        let task = tokio::spawn(forward_publisher(peer.clone(), fanout));
        Ok((Publisher { peer, task }, answer))
    }

    /// Answers a viewer's offer with a video track fed from `fanout`.
    pub async fn add_subscriber(
        &self,
        offer_sdp: &str,
        fanout: Arc<Fanout>,
    ) -> Result<(Subscriber, String), MediaError> {
        let peer = Arc::new(Peer::new(self.config.clone()).await?);
        let setup = async {
            let sender = peer.add_video_sender(random_ssrc(), "screen").await?;
            let answer = peer.answer(offer_sdp).await?;
            Ok::<_, PeerError>((Arc::new(sender), answer))
        }
        .await;
        let (sender, answer) = match setup {
            Ok(v) => v,
            Err(e) => {
                peer.close().await;
                return Err(e.into());
            }
        };
        let forward = tokio::spawn(forward_subscriber(peer.clone(), sender.clone(), fanout.clone()));
        let feedback = tokio::spawn(async move {
            while sender.keyframe_requested().await.is_some() {
                fanout.request_keyframe();
            }
        });
        Ok((Subscriber { peer, tasks: vec![forward, feedback] }, answer))
    }
}

async fn forward_publisher(peer: Arc<Peer>, fanout: Arc<Fanout>) {
    // Each track is read on its own; dropping the set (the publisher closes) stops them all.
    let mut tracks = tokio::task::JoinSet::new();
    while let Some(track) = peer.next_track().await {
        let label = track.label().map(str::to_owned);
        let Some(kind) = label.as_deref().and_then(MediaTrack::from_label) else {
            // Not forwarded anywhere, but read, so it does not pile up in the connection.
            tracing::warn!(ssrc = track.ssrc(), ?label, "agent track with an unknown label; dropped");
            tracks.spawn(async move { while track.read().await.is_some() {} });
            continue;
        };
        tracing::debug!(ssrc = track.ssrc(), track = kind.label(), "publisher track started");
        tracks.spawn(forward_track(kind, Arc::new(track), fanout.clone()));
    }
    while tracks.join_next().await.is_some() {}
}

/// Copies one of the agent's tracks into the fanout, and asks for its keyframes.
async fn forward_track(kind: MediaTrack, track: Arc<sightline_peer::VideoReceiver>, fanout: Arc<Fanout>) {
    let reader = async {
        while let Some(packet) = track.read().await {
            fanout.publish(kind, packet);
        }
    };
    let keyframes = async {
        loop {
            fanout.keyframe_requests(kind).notified().await;
            tracing::debug!(track = kind.label(), "asking the agent for a keyframe");
            if let Err(e) = track.request_keyframe().await {
                tracing::debug!(error = %e, "keyframe request to agent failed");
            }
            tokio::time::sleep(KEYFRAME_REQUEST_SPACING).await;
        }
    };
    tokio::select! {
        () = reader => {}
        () = keyframes => {}
    }
}

async fn forward_subscriber(peer: Arc<Peer>, sender: Arc<sightline_peer::VideoSender>, fanout: Arc<Fanout>) {
    // Packets written before DTLS is up are dropped, so subscribe only once connected.
    if peer.connected().await.is_err() {
        return;
    }
    let payload_type = match sender.payload_type().await {
        Ok(pt) => pt,
        Err(e) => {
            tracing::warn!(error = %e, "viewer leg has no VP8");
            return;
        }
    };
    let mut packets = fanout.packets.subscribe();
    let mut gaps = fanout.view_gaps();
    fanout.request_keyframe();
    // Since when this viewer has been waiting for a keyframe (`None`: it has a picture).
    let mut waiting: Option<Instant> = Some(Instant::now());
    let mut state = peer.state();
    loop {
        tokio::select! {
            packet = packets.recv() => match packet {
                Ok(_) if fanout.paused() => {
                    // What follows a pause is only decodable from the keyframe the resume asks for.
                    waiting.get_or_insert_with(Instant::now);
                }
                Ok(packet) => {
                    // Packets were held back since the last one (the recorder was not taking):
                    // what follows is only decodable from a keyframe.
                    let now_gaps = fanout.view_gaps();
                    if now_gaps != gaps {
                        gaps = now_gaps;
                        waiting.get_or_insert_with(Instant::now);
                    }
                    if let Some(asked) = waiting {
                        if !vp8::starts_keyframe(&packet.payload) {
                            if asked.elapsed() >= KEYFRAME_RETRY {
                                tracing::debug!("viewer still has no keyframe; asking again");
                                fanout.request_keyframe();
                                waiting = Some(Instant::now());
                            }
                            continue;
                        }
                        waiting = None;
                    }
                    if sender.write(packet, payload_type).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    // The viewer fell behind: its picture is broken until the next keyframe.
                    tracing::debug!(missed, "viewer lagged; requesting keyframe");
                    fanout.request_keyframe();
                    waiting = Some(Instant::now());
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = state.changed() => {
                if changed.is_err() || state.borrow().is_terminal() {
                    break;
                }
            }
        }
    }
}

impl Publisher {
    /// The agent's peer connection (to take its data channel).
    pub fn peer(&self) -> Arc<Peer> {
        self.peer.clone()
    }

    pub async fn close(self) {
        self.task.abort();
        self.peer.close().await;
    }
}

impl Subscriber {
    /// The viewer's peer connection (to take its data channel).
    pub fn peer(&self) -> Arc<Peer> {
        self.peer.clone()
    }

    pub async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.peer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_track_reaches_its_audience_only() {
        use MediaTrack::{Record, View};
        // The recording's picture never reaches a viewer, recorded or not.
        for recorder in [None, Some(false), Some(true)] {
            assert_ne!(route(Record, recorder), Route::Viewers, "{recorder:?}");
            assert_ne!(route(View, recorder), Route::Recorder, "{recorder:?}");
        }
        assert_eq!(route(Record, Some(false)), Route::Recorder, "the recorder takes it to start or resume");
        assert_eq!(route(Record, None), Route::Nowhere);
        // Viewers see the screen only while it is recorded, where it is recorded.
        assert_eq!(route(View, Some(true)), Route::Viewers);
        assert_eq!(route(View, Some(false)), Route::Nowhere);
        assert_eq!(route(View, None), Route::Viewers);
    }

    #[test]
    fn a_session_pauses_only_the_fan_out_it_owns() {
        let fanout = Fanout::new();
        fanout.begin_session("s1");
        fanout.set_paused("s1", true);
        assert!(fanout.paused(), "the control: the owner pauses");
        // The link's next session begins; the first one's end arrives late.
        fanout.begin_session("s2");
        assert!(!fanout.paused());
        fanout.set_paused("s1", true);
        assert!(!fanout.paused(), "an ended session paused its successor");
        fanout.set_paused("s2", true);
        assert!(fanout.paused());
    }
}
