//! Publishing the screen: capture -> encode (a blocking thread) -> RTP on the peer connection.
//!
//! Capture and encoding run on a dedicated OS thread because both are CPU-bound and synchronous;
//! the async side only packetizes and writes. The relay's keyframe requests reach the encoder
//! through an atomic flag, so a viewer that joins gets a picture within one frame interval.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sightline_core::mask::{Audience, Masks};
use sightline_core::recording::SealChain;
use sightline_peer::{ChannelEvent, DataChannel, Outbox, Peer, PeerConfig, PeerError, VideoSender, Vp8Packetizer};
use sightline_proto::channel::ChannelMessage;
use sightline_proto::mask::MaskRule;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::capture::{self, CaptureError, Frame, FrameSource, SourceKind};
use crate::encoder::{EncodedFrame, EncoderConfig, EncoderError, Vp8Encoder};

/// On an unchanged screen the last frame is re-sent this often (as a tiny delta frame): a receiver
/// that sees no video for a few seconds declares a freeze and asks for a keyframe, which costs far
/// more than a heartbeat.
const IDLE_REFRESH: Duration = Duration::from_secs(1);

/// Encoded frames queued between the encoder thread and the network writer. Small on purpose:
/// if the network cannot keep up, old frames are worthless for a live screen.
const FRAME_QUEUE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("screen capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("encoder: {0}")]
    Encoder(#[from] EncoderError),
    #[error("peer connection: {0}")]
    Peer(#[from] PeerError),
    #[error("mask rules: {0}")]
    Masks(String),
}

/// What to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishConfig {
    pub source: SourceKind,
    pub synthetic_size: (u32, u32),
    pub encoder: EncoderConfig,
    pub media_ip: IpAddr,
}

/// How a publication signs what it sends (the agent's half of a verifiable recording): the
/// session's id, the device key, and the outbox its seals go through in order.
#[derive(Clone)]
pub struct Sealing {
    pub session_id: String,
    pub device: Arc<crate::device::Device>,
    pub outbox: Arc<Outbox>,
}

/// A seal goes out at least this often while frames flow.
const SEAL_EVERY: Duration = Duration::from_secs(1);
/// How long a seal may wait for the data channel; one that never arrives breaks the chain, and
/// verification then says so.
const SEAL_WAIT: Duration = Duration::from_secs(10);

/// Statistics of a publication, logged when it stops and used by benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    pub frames_encoded: u64,
    pub keyframes: u64,
    pub encode_time: Duration,
}

/// A running publication: one peer connection, one capture thread.
pub struct Publication {
    peer: Arc<Peer>,
    sender: Arc<VideoSender>,
    source: Option<Box<dyn FrameSource>>,
    config: PublishConfig,
    stop: Arc<AtomicBool>,
    /// While the session is paused nothing is captured or sent (R8).
    paused: Arc<AtomicBool>,
    keyframe_wanted: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    capture_thread: Option<std::thread::JoinHandle<PublishStats>>,
    /// The `session` data channel: input and chat from the relay, chat to it.
    channel: DataChannel,
    /// Messages from the data channel, taken by the connection.
    pub incoming: Option<mpsc::Receiver<ChannelMessage>>,
    sealing: Sealing,
    masks: Masks,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The segment's mask rules as this agent applies them, or why it cannot: checked before the user
/// is asked (the request is then declined with the reason) and again when publishing starts.
pub fn applicable_masks(rules: &[MaskRule], source: SourceKind) -> Result<Masks, PublishError> {
    let masks = Masks::new(rules).map_err(|e| PublishError::Masks(e.to_string()))?;
    if masks.audiences_differ() {
        // One track serves operator and recording alike; a mask for one of them only would be
        // wrong for the other.
        return Err(PublishError::Masks("per-audience masks are not supported by this agent".into()));
    }
    if masks.needs_windows() && source == SourceKind::Synthetic {
        return Err(CaptureError::NoWindows.into());
    }
    Ok(masks)
}

impl Publication {
    /// Opens the screen source and the peer connection; returns the offer for the relay.
    /// The segment's mask rules are applied to every frame before it is encoded; a source that
    /// cannot apply them is refused (R33, R35).
    pub async fn start(
        config: PublishConfig,
        sealing: Sealing,
        rules: &[MaskRule],
    ) -> Result<(Publication, String), PublishError> {
        let masks = applicable_masks(rules, config.source)?;
        let tracked = masks.clone();
        let source = tokio::task::spawn_blocking(move || {
            let mut source = capture::open(config.source, config.synthetic_size)?;
            if tracked.needs_windows() {
                source.track_windows(tracked)?;
            }
            Ok::<_, CaptureError>(source)
        })
        .await
        .map_err(|e| CaptureError::X11(format!("capture set-up panicked: {e}")))??;
        let peer = Arc::new(Peer::new(PeerConfig { bind_ip: config.media_ip }).await?);
        let ssrc = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), now_ms()) as u32;
        let prepared = async {
            let sender = peer.add_video_sender(ssrc, "screen").await?;
            let channel = peer.create_data_channel(sightline_proto::channel::LABEL).await?;
            let offer = peer.offer().await?;
            Ok::<_, PeerError>((sender, channel, offer))
        }
        .await;
        let (sender, channel, offer) = match prepared {
            Ok(v) => v,
            Err(e) => {
                peer.close().await;
                return Err(e.into());
            }
        };
        let (incoming_tx, incoming) = mpsc::channel(256);
        let reader = tokio::spawn(read_channel(channel.clone(), incoming_tx));
        let publication = Publication {
            peer,
            sender: Arc::new(sender),
            source: Some(source),
            config,
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(false)),
            keyframe_wanted: Arc::new(AtomicBool::new(true)),
            tasks: vec![reader],
            capture_thread: None,
            channel,
            incoming: Some(incoming),
            sealing,
            masks,
        };
        Ok((publication, offer))
    }

    /// Applies the relay's answer and starts streaming once connected.
    pub async fn accept_answer(&mut self, sdp: &str) -> Result<(), PublishError> {
        self.peer.accept_answer(sdp).await?;
        let Some(source) = self.source.take() else {
            return Ok(()); // a repeated answer changes nothing
        };
        let keyframe_wanted = self.keyframe_wanted.clone();
        let (frames_tx, frames_rx) = mpsc::channel::<(EncodedFrame, u64)>(FRAME_QUEUE);
        let (size_w, size_h) = source.size();
        let encoder_config = EncoderConfig { width: size_w, height: size_h, ..self.config.encoder };

        // Keyframe requests from the relay (a viewer joined or lost packets).
        let sender = self.sender.clone();
        let wanted = keyframe_wanted.clone();
        self.tasks.push(tokio::spawn(async move {
            while sender.keyframe_requested().await.is_some() {
                tracing::debug!("relay asked for a keyframe");
                wanted.store(true, Ordering::Relaxed);
            }
        }));

        // Network writer: waits for the connection, then packetizes what the encoder produces.
        let (peer, sender) = (self.peer.clone(), self.sender.clone());
        self.tasks.push(tokio::spawn(write_frames(peer, sender, frames_rx, self.sealing.clone())));

        let stop = self.stop.clone();
        let paused = self.paused.clone();
        let masks = self.masks.clone();
        let connected = self.peer.clone();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        self.tasks.push(tokio::spawn(async move {
            let _ = go_tx.send(connected.connected().await.is_ok());
        }));
        self.capture_thread = Some(
            std::thread::Builder::new()
                .name("capture-encode".into())
                .spawn(move || {
                    // Encoding before the connection is up would only fill the queue.
                    if go_rx.recv() != Ok(true) {
                        return PublishStats::default();
                    }
                    capture_loop(source, &masks, encoder_config, &stop, &paused, &keyframe_wanted, &frames_tx)
                })
                .map_err(|e| CaptureError::X11(format!("cannot start capture thread: {e}")))?,
        );
        Ok(())
    }

    /// Pauses or resumes capture; a resumed stream starts with a keyframe.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.keyframe_wanted.store(true, Ordering::Relaxed);
        }
    }

    /// The `session` data channel to the relay.
    pub fn channel(&self) -> DataChannel {
        self.channel.clone()
    }

    /// Stops capture and closes the peer connection.
    pub async fn stop(mut self) -> PublishStats {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
        self.peer.close().await;
        match self.capture_thread.take() {
            Some(thread) => {
                tokio::task::spawn_blocking(move || thread.join().unwrap_or_default()).await.unwrap_or_default()
            }
            None => PublishStats::default(),
        }
    }
}

/// Decodes what the relay sends on the data channel; anything malformed is logged and dropped.
async fn read_channel(channel: DataChannel, incoming: mpsc::Sender<ChannelMessage>) {
    while let Some(event) = channel.recv().await {
        let ChannelEvent::Text(text) = event else { continue };
        match sightline_proto::channel::decode(&text) {
            Ok(msg) => {
                if incoming.send(msg).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "bad data channel message from the relay"),
        }
    }
}

async fn write_frames(
    peer: Arc<Peer>,
    sender: Arc<VideoSender>,
    mut frames: mpsc::Receiver<(EncodedFrame, u64)>,
    sealing: Sealing,
) {
    if peer.connected().await.is_err() {
        return;
    }
    let payload_type = match sender.payload_type().await {
        Ok(pt) => pt,
        Err(e) => {
            tracing::warn!(error = %e, "no VP8 on the publishing connection");
            return;
        }
    };
    let mut packetizer = Vp8Packetizer::new(sender.ssrc(), payload_type);
    let mut last_capture_ms: Option<u64> = None;
    let mut chain = SealChain::new(&sealing.session_id);
    let mut last_seal = Instant::now();
    while let Some((frame, capture_ms)) = frames.recv().await {
        let elapsed = Duration::from_millis(last_capture_ms.map_or(0, |last| capture_ms.saturating_sub(last)));
        last_capture_ms = Some(capture_ms);
        let data: bytes::Bytes = frame.data.into();
        let packets = match packetizer.packetize(data.clone(), elapsed) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "packetizing failed");
                continue;
            }
        };
        let Some(ts) = packets.first().map(|p| p.header.timestamp) else { continue };
        // Noted before it leaves: the seal covers what was sent, in the order it was sent.
        let full = chain.push(ts, &data);
        for packet in packets {
            if sender.write(packet, payload_type).await.is_err() {
                seal(&mut chain, &sealing);
                return;
            }
        }
        if full || last_seal.elapsed() >= SEAL_EVERY {
            seal(&mut chain, &sealing);
            last_seal = Instant::now();
        }
    }
    seal(&mut chain, &sealing);
}

/// Signs the frames sent since the last seal and queues the seal for the relay.
fn seal(chain: &mut SealChain, sealing: &Sealing) {
    let Some(seal) = chain.take(|m| sealing.device.sign_media_seal(m)) else { return };
    let seq = seal.seq;
    let text = sightline_proto::channel::encode(&ChannelMessage::MediaSeal { seal });
    sealing.outbox.send(
        text,
        SEAL_WAIT,
        Box::new(move |result| {
            if let Err(e) = result {
                tracing::warn!(seq, error = %e, "a media seal did not reach the relay: the recording will show the gap");
            }
        }),
    );
}

/// Hides what the rules say in the raw frame, before it is converted or encoded (R35). `last`
/// keeps the masked frame, so a heartbeat or keyframe re-encode never shows more.
fn apply_masks(masks: &Masks, frame: &mut Frame) -> Result<(), CaptureError> {
    if masks.is_empty() {
        return Ok(());
    }
    let windows = match (&frame.windows, masks.needs_windows()) {
        (Some(w), _) => w.as_slice(),
        (None, false) => &[],
        (None, true) => return Err(CaptureError::NoWindows),
    };
    let plan = masks.plan((frame.width, frame.height), windows, Audience::Operator);
    sightline_core::mask::fill(&mut frame.bgra, frame.stride, &plan.rects);
    Ok(())
}

/// Captures at the configured rate and encodes changed frames (or any frame when a keyframe is
/// wanted) until `stop` is set or the writer is gone.
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    masks: &Masks,
    config: EncoderConfig,
    stop: &AtomicBool,
    paused: &AtomicBool,
    keyframe_wanted: &AtomicBool,
    frames: &mpsc::Sender<(EncodedFrame, u64)>,
) -> PublishStats {
    let mut stats = PublishStats::default();
    let mut encoder = match Vp8Encoder::new(config) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot create encoder");
            return stats;
        }
    };
    let interval = Duration::from_secs(1) / config.fps.max(1);
    let mut next = Instant::now();
    let mut last: Option<Frame> = None;
    let mut last_sent = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::Relaxed) {
            // Nothing leaves the endpoint while paused; resuming asks for a keyframe.
            std::thread::sleep(interval);
            next = Instant::now();
            continue;
        }
        let now = now_ms();
        let frame = match source.capture(now) {
            Ok(Some(mut frame)) => {
                if let Err(e) = apply_masks(masks, &mut frame) {
                    tracing::error!(error = %e, "cannot mask; stopping publication");
                    break;
                }
                Some(frame)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "capture failed; stopping publication");
                break;
            }
        };
        let force_key = keyframe_wanted.swap(false, Ordering::Relaxed);
        // An unchanged screen costs nothing, unless a new viewer needs a keyframe of it or the
        // stream needs its heartbeat.
        let to_encode = match (&frame, force_key || last_sent.elapsed() >= IDLE_REFRESH) {
            (Some(f), _) => Some(f),
            (None, true) => last.as_ref(),
            (None, false) => None,
        };
        if let Some(f) = to_encode {
            last_sent = Instant::now();
            let started = Instant::now();
            match encoder.encode(&f.bgra, f.stride, f.captured_at_ms as i64, force_key) {
                Ok(encoded) => {
                    stats.encode_time += started.elapsed();
                    for e in encoded {
                        stats.frames_encoded += 1;
                        stats.keyframes += u64::from(e.keyframe);
                        match frames.try_send((e, now)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                // The network is behind: drop this frame and resync with a keyframe.
                                keyframe_wanted.store(true, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return stats,
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "encoding failed; stopping publication");
                    break;
                }
            }
        }
        if frame.is_some() {
            last = frame;
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Running late: do not try to catch up with a burst.
            next = now;
        }
    }
    stats
}
