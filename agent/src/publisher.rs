//! Publishing the screen: capture -> encode (a blocking thread) -> RTP on the peer connection.
//!
//! Capture and encoding run on a dedicated OS thread because both are CPU-bound and synchronous;
//! the async side only packetizes and writes. The relay's keyframe requests reach the encoder
//! through an atomic flag, so a viewer that joins gets a picture within one frame interval.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sightline_core::mask::{Audience, Masks, Rect};
use sightline_core::recording::SealChain;
use sightline_core::watermark::{self, Watermark};
use sightline_peer::{
    ChannelEvent, DataChannel, Outbox, Peer, PeerConfig, PeerError, Sockets, Transport, VideoSender, Vp8Packetizer,
};
use sightline_proto::MediaTrack;
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

/// What to publish, and how media reaches the relay.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub source: SourceKind,
    pub synthetic_size: (u32, u32),
    pub encoder: EncoderConfig,
    pub media_ip: IpAddr,
    /// Its own UDP port, and ICE-TCP dialled to the relay, directly or through the proxy.
    pub sockets: Sockets,
    /// The proxy media's TCP goes through, for the log.
    pub proxy: Option<String>,
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

/// Who the session's pictures are for: the segment's masks, whether the relay records (then the
/// recording gets its own track, R34), and the operator whose identity the operator's picture
/// carries (R36).
#[derive(Debug, Clone)]
pub struct Audiences {
    pub masks: Vec<MaskRule>,
    pub recorded: bool,
    pub session_id: String,
    /// The operator as the watermark names them: display name and account.
    pub operator: String,
}

/// One published track: what it is for, its sender, and its own keyframe requests.
struct Track {
    kind: MediaTrack,
    sender: Arc<VideoSender>,
    keyframe_wanted: Arc<AtomicBool>,
}

/// The tracks a session publishes: always the operator's picture; the recording's as well when
/// the relay records. The watermark alone makes the two pictures differ, so a recorded session
/// always has both; the relay never gives either audience the other's.
pub fn tracks_for(audiences: &Audiences) -> Vec<MediaTrack> {
    if audiences.recorded { vec![MediaTrack::View, MediaTrack::Record] } else { vec![MediaTrack::View] }
}

/// A running publication: one peer connection, one capture thread, one encoder per track.
pub struct Publication {
    peer: Arc<Peer>,
    tracks: Vec<Track>,
    source: Option<Box<dyn FrameSource>>,
    config: PublishConfig,
    stop: Arc<AtomicBool>,
    /// While the session is paused nothing is captured or sent (R8).
    paused: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    capture_thread: Option<std::thread::JoinHandle<PublishStats>>,
    /// The `session` data channel: input and chat from the relay, chat to it.
    channel: DataChannel,
    /// Messages from the data channel, taken by the connection.
    pub incoming: Option<mpsc::Receiver<ChannelMessage>>,
    sealing: Sealing,
    masks: Masks,
    operator: String,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The segment's mask rules as this agent applies them, or why it cannot: checked before the user
/// is asked (the request is then declined with the reason) and again when publishing starts.
pub fn applicable_masks(rules: &[MaskRule], source: SourceKind) -> Result<Masks, PublishError> {
    let masks = Masks::new(rules).map_err(|e| PublishError::Masks(e.to_string()))?;
    if masks.needs_windows() && source == SourceKind::Synthetic {
        return Err(CaptureError::NoWindows.into());
    }
    Ok(masks)
}

impl Publication {
    /// Opens the screen source and the peer connection; returns the offer for the relay.
    /// The segment's mask rules are applied to every frame before it is encoded, for each
    /// audience its own; a source that cannot apply them is refused (R33, R34, R35).
    pub async fn start(
        config: PublishConfig,
        sealing: Sealing,
        audiences: &Audiences,
    ) -> Result<(Publication, String), PublishError> {
        let masks = applicable_masks(&audiences.masks, config.source)?;
        let tracked = masks.clone();
        let (kind, size) = (config.source, config.synthetic_size);
        let source = tokio::task::spawn_blocking(move || {
            let mut source = capture::open(kind, size)?;
            if tracked.needs_windows() {
                source.track_windows(tracked)?;
            }
            Ok::<_, CaptureError>(source)
        })
        .await
        .map_err(|e| CaptureError::X11(format!("capture set-up panicked: {e}")))??;
        let peer = Arc::new(Peer::new(PeerConfig { bind_ip: config.media_ip, sockets: config.sockets.clone() }).await?);
        let ssrc = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), now_ms()) as u32;
        let prepared = async {
            let mut tracks = Vec::new();
            for (i, kind) in tracks_for(audiences).into_iter().enumerate() {
                let sender = peer.add_video_sender(ssrc.wrapping_add(i as u32), kind.label()).await?;
                tracks.push(Track { kind, sender: Arc::new(sender), keyframe_wanted: Arc::new(AtomicBool::new(true)) });
            }
            let channel = peer.create_data_channel(sightline_proto::channel::LABEL).await?;
            let offer = peer.offer().await?;
            Ok::<_, PeerError>((tracks, channel, offer))
        }
        .await;
        let (tracks, channel, offer) = match prepared {
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
            tracks,
            source: Some(source),
            config,
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(false)),
            tasks: vec![reader],
            capture_thread: None,
            channel,
            incoming: Some(incoming),
            sealing,
            masks,
            operator: audiences.operator.clone(),
        };
        Ok((publication, offer))
    }

    /// Applies the relay's answer and starts streaming once connected.
    pub async fn accept_answer(&mut self, sdp: &str) -> Result<(), PublishError> {
        self.peer.accept_answer(sdp).await?;
        let Some(source) = self.source.take() else {
            return Ok(()); // a repeated answer changes nothing
        };
        let (size_w, size_h) = source.size();
        let encoder_config = EncoderConfig { width: size_w, height: size_h, ..self.config.encoder };
        let mut outputs = Vec::new();
        for track in &self.tracks {
            // Keyframe requests from the relay (a viewer joined or lost packets; the recorder
            // starts or lost part of a frame), each for its own track.
            let (sender, wanted) = (track.sender.clone(), track.keyframe_wanted.clone());
            let kind = track.kind;
            self.tasks.push(tokio::spawn(async move {
                while sender.keyframe_requested().await.is_some() {
                    tracing::debug!(track = kind.label(), "relay asked for a keyframe");
                    wanted.store(true, Ordering::Relaxed);
                }
            }));
            // Network writer: waits for the connection, then packetizes what the encoder produces.
            let (frames_tx, frames_rx) = mpsc::channel::<(EncodedFrame, u64)>(FRAME_QUEUE);
            // The seals vouch for the recording: they cover the track the recorder takes.
            let sealing = (track.kind == MediaTrack::Record).then(|| self.sealing.clone());
            self.tasks.push(tokio::spawn(write_frames(self.peer.clone(), track.sender.clone(), frames_rx, sealing)));
            outputs.push(Output {
                kind: track.kind,
                masks: self.masks.clone(),
                // The operator's identity is only for the operator's picture (R36).
                watermark: (track.kind == MediaTrack::View)
                    .then(|| (self.operator.clone(), self.sealing.session_id.clone())),
                keyframe_wanted: track.keyframe_wanted.clone(),
                frames: frames_tx,
            });
        }

        let stop = self.stop.clone();
        let paused = self.paused.clone();
        let connected = self.peer.clone();
        let proxy = self.config.proxy.clone();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<bool>();
        self.tasks.push(tokio::spawn(async move {
            let up = connected.connected().await.is_ok();
            let _ = go_tx.send(up);
            if up {
                let transport = connected.path().await.map(|p| p.transport);
                match (transport, proxy) {
                    (Some(Transport::Tcp), Some(proxy)) => tracing::info!(%proxy, "media path: TCP through the proxy"),
                    (Some(t), _) => tracing::info!(transport = t.as_str(), "media path: direct"),
                    (None, _) => tracing::info!("media path: not reported by ICE"),
                }
            }
        }));
        self.capture_thread = Some(
            std::thread::Builder::new()
                .name("capture-encode".into())
                .spawn(move || {
                    // Encoding before the connection is up would only fill the queue.
                    if go_rx.recv() != Ok(true) {
                        return PublishStats::default();
                    }
                    capture_loop(source, outputs, encoder_config, &stop, &paused)
                })
                .map_err(|e| CaptureError::X11(format!("cannot start capture thread: {e}")))?,
        );
        Ok(())
    }

    /// Pauses or resumes capture; a resumed stream starts with a keyframe.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            for track in &self.tracks {
                track.keyframe_wanted.store(true, Ordering::Relaxed);
            }
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
    sealing: Option<Sealing>,
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
    let mut chain = sealing.as_ref().map(|s| SealChain::new(&s.session_id));
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
        let full = chain.as_mut().is_some_and(|c| c.push(ts, &data));
        for packet in packets {
            if sender.write(packet, payload_type).await.is_err() {
                seal(chain.as_mut(), sealing.as_ref());
                return;
            }
        }
        if full || last_seal.elapsed() >= SEAL_EVERY {
            seal(chain.as_mut(), sealing.as_ref());
            last_seal = Instant::now();
        }
    }
    seal(chain.as_mut(), sealing.as_ref());
}

/// Signs the frames sent since the last seal and queues the seal for the relay (on the track
/// that has a chain: the recording's).
fn seal(chain: Option<&mut SealChain>, sealing: Option<&Sealing>) {
    let (Some(chain), Some(sealing)) = (chain, sealing) else { return };
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

/// One encoded picture of the screen: its audience's masks, the watermark if it is the
/// operator's, its encoder's input, and where its frames go.
struct Output {
    kind: MediaTrack,
    masks: Masks,
    /// The operator and the session burned in, with the time of each frame.
    watermark: Option<(String, String)>,
    keyframe_wanted: Arc<AtomicBool>,
    frames: mpsc::Sender<(EncodedFrame, u64)>,
}

impl Output {
    fn audience(&self) -> Audience {
        match self.kind {
            MediaTrack::View => Audience::Operator,
            MediaTrack::Record => Audience::Recording,
        }
    }

    /// This audience's picture of a raw frame, encoded at `now_ms`: masked (R35), then stamped
    /// (R36), on a copy. The raw frame is kept, so a heartbeat or keyframe re-encode shows the
    /// same masks and the current time; a picture that hides nothing and carries nothing is the
    /// raw frame itself (no copy).
    fn prepare<'a>(&self, raw: &'a Frame, now_ms: u64) -> Result<Cow<'a, Frame>, CaptureError> {
        let rects = mask_rects(&self.masks, raw, self.audience())?;
        if rects.is_empty() && self.watermark.is_none() {
            return Ok(Cow::Borrowed(raw));
        }
        let mut frame = raw.clone();
        sightline_core::mask::fill(&mut frame.bgra, frame.stride, &rects);
        if let Some((operator, session)) = &self.watermark {
            Watermark::new(&watermark::line(operator, session, now_ms)).stamp(
                &mut frame.bgra,
                frame.stride,
                frame.width,
                frame.height,
            );
        }
        Ok(Cow::Owned(frame))
    }
}

/// What the rules hide from `audience` in this frame (R35).
fn mask_rects(masks: &Masks, frame: &Frame, audience: Audience) -> Result<Vec<Rect>, CaptureError> {
    if masks.is_empty() {
        return Ok(Vec::new());
    }
    let windows = match (&frame.windows, masks.needs_windows()) {
        (Some(w), _) => w.as_slice(),
        (None, false) => &[],
        (None, true) => return Err(CaptureError::NoWindows),
    };
    Ok(masks.plan((frame.width, frame.height), windows, audience).rects)
}

/// Why one output stopped the publication.
enum Stop {
    /// The writer is gone (the publication is being torn down).
    Closed,
    Failed,
}

/// Captures at the configured rate and encodes changed frames (or any frame when a keyframe is
/// wanted) for every output, until `stop` is set or a writer is gone. Every output's picture
/// comes from the same captured frame, so the operator's and the recording's stay in step.
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    outputs: Vec<Output>,
    config: EncoderConfig,
    stop: &AtomicBool,
    paused: &AtomicBool,
) -> PublishStats {
    let mut stats = PublishStats::default();
    let mut encoders = Vec::with_capacity(outputs.len());
    for output in &outputs {
        match Vp8Encoder::new(config) {
            Ok(e) => encoders.push(e),
            Err(e) => {
                tracing::error!(track = output.kind.label(), error = %e, "cannot create encoder");
                return stats;
            }
        }
    }
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
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, "capture failed; stopping publication");
                break;
            }
        };
        let heartbeat = last_sent.elapsed() >= IDLE_REFRESH;
        let mut sent = false;
        let mut stopped = None;
        for (output, encoder) in outputs.iter().zip(encoders.iter_mut()) {
            let force_key = output.keyframe_wanted.swap(false, Ordering::Relaxed);
            // An unchanged screen costs nothing, unless a viewer or the recorder needs a keyframe
            // of it or the stream needs its heartbeat.
            let raw = match (&frame, force_key || heartbeat) {
                (Some(f), _) => f,
                (None, true) => match &last {
                    Some(f) => f,
                    None => continue,
                },
                (None, false) => continue,
            };
            sent = true;
            if let Err(why) = encode_one(output, encoder, raw, now, force_key, &mut stats) {
                stopped = Some(why);
                break;
            }
        }
        match stopped {
            Some(Stop::Closed) => return stats,
            Some(Stop::Failed) => break,
            None => {}
        }
        if sent {
            last_sent = Instant::now();
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

/// Prepares and encodes one output's picture of `raw` and queues it for its writer.
fn encode_one(
    output: &Output,
    encoder: &mut Vp8Encoder,
    raw: &Frame,
    now: u64,
    force_key: bool,
    stats: &mut PublishStats,
) -> Result<(), Stop> {
    let started = Instant::now();
    let picture = output.prepare(raw, now).map_err(|e| {
        tracing::error!(track = output.kind.label(), error = %e, "cannot mask; stopping publication");
        Stop::Failed
    })?;
    let encoded = encoder.encode(&picture.bgra, picture.stride, raw.captured_at_ms as i64, force_key).map_err(|e| {
        tracing::error!(track = output.kind.label(), error = %e, "encoding failed; stopping publication");
        Stop::Failed
    })?;
    stats.encode_time += started.elapsed();
    for e in encoded {
        stats.frames_encoded += 1;
        stats.keyframes += u64::from(e.keyframe);
        match output.frames.try_send((e, now)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The network is behind: drop this frame and resync with a keyframe.
                output.keyframe_wanted.store(true, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Closed),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_core::mask::FILL;
    use sightline_proto::mask::{Area, MaskAudience, MaskTarget};

    const GREY: u8 = 0x80;
    const SIZE: (u32, u32) = (400, 100);

    fn area(name: &str, audience: MaskAudience, x: u32) -> MaskRule {
        MaskRule {
            name: name.into(),
            audience,
            target: MaskTarget::Area { area: Area::Pixels { x, y: 0, w: 10, h: 10 } },
        }
    }

    fn output(kind: MediaTrack, masks: &Masks) -> Output {
        Output {
            kind,
            masks: masks.clone(),
            watermark: (kind == MediaTrack::View).then(|| ("Olga (olga)".into(), "s-1".into())),
            keyframe_wanted: Arc::new(AtomicBool::new(false)),
            frames: mpsc::channel(1).0,
        }
    }

    fn pixel(frame: &Frame, x: usize, y: usize) -> [u8; 4] {
        let at = y * frame.stride + x * 4;
        frame.bgra[at..at + 4].try_into().unwrap()
    }

    #[test]
    fn each_audience_gets_its_masks_and_only_the_operator_the_watermark() {
        let masks = Masks::new(&[
            area("op", MaskAudience::Operator, 0),
            area("rec", MaskAudience::Recording, 20),
            area("both", MaskAudience::Both, 40),
        ])
        .unwrap();
        let raw = Frame {
            width: SIZE.0,
            height: SIZE.1,
            stride: SIZE.0 as usize * 4,
            bgra: vec![GREY; (SIZE.0 * SIZE.1 * 4) as usize],
            captured_at_ms: 1,
            windows: None,
        };
        let view = output(MediaTrack::View, &masks).prepare(&raw, 0).unwrap();
        let record = output(MediaTrack::Record, &masks).prepare(&raw, 0).unwrap();
        let untouched = [GREY; 4];
        assert_eq!([pixel(&view, 5, 5), pixel(&view, 25, 5), pixel(&view, 45, 5)], [FILL, untouched, FILL]);
        assert_eq!([pixel(&record, 5, 5), pixel(&record, 25, 5), pixel(&record, 45, 5)], [untouched, FILL, FILL]);
        // Outside the masks: the operator's picture is stamped, the recording's is the screen.
        let changed = |f: &Frame| f.bgra.chunks(4).skip(SIZE.0 as usize * 20).filter(|p| p[0] != GREY).count();
        assert!(changed(&view) > 500, "the watermark is missing");
        assert_eq!(changed(&record), 0);
        // The raw frame is kept as captured, for re-encodes; a recording nothing is hidden from
        // is encoded from it without a copy.
        assert!(raw.bgra.iter().all(|&v| v == GREY));
        let unmasked = output(MediaTrack::Record, &Masks::new(&[]).unwrap());
        assert!(matches!(unmasked.prepare(&raw, 0).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_recorded_session_publishes_both_pictures() {
        let audiences = |recorded| Audiences { masks: vec![], recorded, session_id: "s".into(), operator: "o".into() };
        assert_eq!(tracks_for(&audiences(true)), [MediaTrack::View, MediaTrack::Record]);
        assert_eq!(tracks_for(&audiences(false)), [MediaTrack::View]);
    }
}
