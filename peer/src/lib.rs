//! The Sightline side of WebRTC.
//!
//! The webrtc crate (0.21, pinned exactly) changes its API between minor versions, so only this
//! crate touches it. Relay and agent get:
//! - [`Peer`]: a peer connection bound to one concrete IP (loopback or the relay's media
//!   address), VP8 only, default interceptors (NACK, RTCP reports, TWCC feedback), mDNS off, and
//!   keyframe requests (PLI/FIR) from the remote side delivered to us instead of swallowed;
//! - [`PeerEvent`]: connection state, gathering, and remote tracks as our own enum;
//! - [`VideoSender`] and [`VideoReceiver`]: write and read VP8 RTP, send and see keyframe requests;
//! - [`Outbox`]: ordered, bounded delivery to a data channel that may not be open yet;
//! - [`vp8`]: keyframe starts and whole frames out of RTP packets.

mod keyframe_requests;
mod outbox;
mod sockets;
pub mod vp8;

pub use outbox::{OnDelivery, Outbox, Undelivered};
pub use sockets::{DirectDialer, SharedPorts, SharedTcpPort, SharedUdpPort, Sockets, TcpDialer};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::Slot;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel as RtcDataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

pub use rtc::rtp::Packet as RtpPacket;

/// Payload type we register VP8 under. Browsers may negotiate another one on their leg; senders
/// look the negotiated type up instead of assuming this.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// RTP clock rate of video.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Largest RTP packet we produce; leaves room for SRTP, TURN and VPN overheads below 1500.
pub const RTP_MTU: usize = 1200;
/// How long ICE gathering may take before we give up (host candidates take milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    #[error("ICE gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    #[error("peer connection closed before it was ready")]
    Closed,
    #[error("the remote description has no usable video (VP8) section")]
    NoVideo,
    #[error("no async runtime for WebRTC is compiled in")]
    NoRuntime,
}

/// Connection states we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Failed,
    Closed,
}

impl PeerState {
    fn from_rtc(state: RTCPeerConnectionState) -> Self {
        match state {
            RTCPeerConnectionState::Connecting => PeerState::Connecting,
            RTCPeerConnectionState::Connected => PeerState::Connected,
            RTCPeerConnectionState::Disconnected => PeerState::Disconnected,
            RTCPeerConnectionState::Failed => PeerState::Failed,
            RTCPeerConnectionState::Closed => PeerState::Closed,
            _ => PeerState::New,
        }
    }

    /// Whether the connection is gone for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, PeerState::Failed | PeerState::Closed)
    }
}

/// How a peer connection is built.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The one address media binds to; its host candidates are the only ones offered.
    pub bind_ip: IpAddr,
    /// Where its packets go: its own ports, the relay's shared ones, or dialled out.
    pub sockets: Sockets,
}

/// The path ICE selected for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPath {
    pub transport: Transport,
    pub remote: Option<std::net::SocketAddr>,
}

/// The transport of a selected path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A peer connection and what it reports.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    gathered: tokio::sync::Mutex<mpsc::Receiver<()>>,
    state: watch::Receiver<PeerState>,
    tracks: tokio::sync::Mutex<mpsc::Receiver<VideoReceiver>>,
    channels: tokio::sync::Mutex<mpsc::Receiver<DataChannel>>,
    sockets: Sockets,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("state", &*self.state.borrow()).finish_non_exhaustive()
    }
}

/// Our media stream ids are this prefix and the track's label.
const STREAM_PREFIX: &str = "sightline-";

struct Events {
    gathered: mpsc::Sender<()>,
    state: watch::Sender<PeerState>,
    tracks: mpsc::Sender<VideoReceiver>,
    channels: mpsc::Sender<DataChannel>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(PeerState::from_rtc(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // Runs on the connection's driver task: hand the track over, never block here.
        let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
        let label = track.stream_id().await.strip_prefix(STREAM_PREFIX).map(str::to_owned);
        let _ = self.tracks.try_send(VideoReceiver { track, ssrc, label });
    }

    async fn on_data_channel(&self, channel: Arc<dyn RtcDataChannel>) {
        // Same as tracks: hand over. A peer opening more channels than we read is dropped.
        let _ = self.channels.try_send(DataChannel { channel });
    }
}

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: VIDEO_CLOCK_RATE,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

impl Peer {
    /// Builds a peer connection on `config.bind_ip`.
    pub async fn new(config: PeerConfig) -> Result<Peer, PeerError> {
        let mut media = MediaEngine::default();
        // VP8 only: predictable payload types, no RTX, and nothing we cannot encode or forward.
        media.register_codec(
            RTCRtpCodecParameters { rtp_codec: vp8(), payload_type: VP8_PAYLOAD_TYPE },
            RtpCodecKind::Video,
        )?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?
            .with(Slot::from(14_000), keyframe_requests::Forwarder::default());
        let mut network_types = vec![NetworkType::Udp4, NetworkType::Udp6];
        if config.sockets.tcp() {
            network_types.extend([NetworkType::Tcp4, NetworkType::Tcp6]);
        }
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(MulticastDnsMode::Disabled)
            .with_network_types(network_types)
            .build();
        let (gathered_tx, gathered) = mpsc::channel(1);
        let (state_tx, state) = watch::channel(PeerState::New);
        let (tracks_tx, tracks) = mpsc::channel(4);
        let (channels_tx, channels) = mpsc::channel(4);
        let events =
            Arc::new(Events { gathered: gathered_tx, state: state_tx, tracks: tracks_tx, channels: channels_tx });
        // A concrete address, not a wildcard: the wildcard expansion skips loopback interfaces.
        let bind = std::net::SocketAddr::new(config.bind_ip, 0);
        let mut builder = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(events as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![bind]);
        if config.sockets.tcp() {
            let inner = webrtc::runtime::default_runtime().ok_or(PeerError::NoRuntime)?;
            let runtime = sockets::SocketsRuntime::new(inner, config.sockets.clone(), config.bind_ip);
            builder = builder.with_runtime(Arc::new(runtime)).with_tcp_addrs(vec![bind]);
        }
        let pc = builder.build().await?;
        Ok(Peer {
            pc: Arc::new(pc),
            gathered: tokio::sync::Mutex::new(gathered),
            state,
            tracks: tokio::sync::Mutex::new(tracks),
            channels: tokio::sync::Mutex::new(channels),
            sockets: config.sockets,
        })
    }

    /// Creates an ordered, reliable data channel (before the offer, so it is negotiated in it).
    pub async fn create_data_channel(&self, label: &str) -> Result<DataChannel, PeerError> {
        let channel = self.pc.create_data_channel(label, None).await?;
        Ok(DataChannel { channel })
    }

    /// The next data channel the remote side opened; `None` once closed.
    pub async fn next_data_channel(&self) -> Option<DataChannel> {
        self.channels.lock().await.recv().await
    }

    /// Adds a send-only VP8 track with our own SSRC; the remote side reads `label` back from
    /// [`VideoReceiver::label`] (it names what the track is for).
    pub async fn add_video_sender(&self, ssrc: u32, label: &str) -> Result<VideoSender, PeerError> {
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("{STREAM_PREFIX}{label}"),
            format!("{label}-{ssrc}"),
            label.to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                codec: vp8(),
                ..Default::default()
            }],
        )));
        // add_track (send-receive transceiver) rather than a send-only one: it is what matches a
        // browser's receive-only offer when answering, and the remote answer narrows it anyway.
        let sender = self.pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        Ok(VideoSender { track, sender, ssrc, payload_type: std::sync::atomic::AtomicU8::new(0) })
    }

    /// Adds a receive-only video transceiver (the relay's side of a publishing agent).
    pub async fn add_video_receiver(&self) -> Result<(), PeerError> {
        self.pc
            .add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                }),
            )
            .await?;
        Ok(())
    }

    /// Creates an offer and returns it with every candidate once gathering is complete.
    pub async fn offer(&self) -> Result<String, PeerError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        self.complete_local_description().await
    }

    /// Applies a remote offer and returns the complete answer.
    pub async fn answer(&self, offer_sdp: &str) -> Result<String, PeerError> {
        let (offer_sdp, passive) = sockets::take_remote_passive(offer_sdp, &self.sockets);
        self.pc.set_remote_description(RTCSessionDescription::offer(offer_sdp)?).await?;
        self.add_remote_candidates(passive).await?;
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer).await?;
        self.complete_local_description().await
    }

    /// Applies the remote answer to our offer.
    pub async fn accept_answer(&self, answer_sdp: &str) -> Result<(), PeerError> {
        let (answer_sdp, passive) = sockets::take_remote_passive(answer_sdp, &self.sockets);
        self.pc.set_remote_description(RTCSessionDescription::answer(answer_sdp)?).await?;
        self.add_remote_candidates(passive).await
    }

    async fn add_remote_candidates(&self, candidates: Vec<String>) -> Result<(), PeerError> {
        for candidate in candidates {
            let init = webrtc::peer_connection::RTCIceCandidateInit {
                candidate,
                sdp_mid: None,
                sdp_mline_index: Some(0),
                ..Default::default()
            };
            self.pc.add_ice_candidate(init).await?;
        }
        Ok(())
    }

    async fn complete_local_description(&self) -> Result<String, PeerError> {
        let mut gathered = self.gathered.lock().await;
        match tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => return Err(PeerError::Closed),
            Err(_) => return Err(PeerError::GatherTimeout(GATHER_TIMEOUT)),
        }
        let sdp = self.pc.local_description().await.map(|d| d.sdp).ok_or(PeerError::Closed)?;
        Ok(sockets::rewrite_local_description(&sdp, &self.sockets))
    }

    /// The candidate pair ICE selected: its transport and, where known, the remote address (for
    /// the relay, a proxy's when the remote side came through one); `None` before a pair is
    /// selected.
    pub async fn path(&self) -> Option<MediaPath> {
        use rtc::statistics::StatsSelector;
        use rtc::statistics::report::RTCStatsReportEntry;
        let report = self.pc.get_stats(std::time::Instant::now(), StatsSelector::None).await;
        let pair_id = report.transport()?.selected_candidate_pair_id.clone();
        let pair = report.candidate_pairs().find(|p| p.stats.id == pair_id)?;
        // The pair names candidates by their ICE ids; the report files them with a prefix.
        let local = match report.get(&format!("RTCLocalIceCandidate_{}", pair.local_candidate_id)) {
            Some(RTCStatsReportEntry::LocalCandidate(c)) => c,
            _ => return None,
        };
        let transport = if local.protocol.eq_ignore_ascii_case("tcp") { Transport::Tcp } else { Transport::Udp };
        let remote = match report.get(&format!("RTCRemoteIceCandidate_{}", pair.remote_candidate_id)) {
            Some(RTCStatsReportEntry::RemoteCandidate(c)) => {
                c.address.as_deref().and_then(|a| a.parse().ok()).map(|ip| std::net::SocketAddr::new(ip, c.port))
            }
            // Peer-reflexive: learnt from the connection itself, which on TCP is the shared port's.
            _ => match (&self.sockets, transport) {
                (Sockets::Shared(ports), Transport::Tcp) => {
                    let sdp = self.pc.local_description().await?.sdp;
                    ports.tcp.last_peer(sockets::local_ufrag(&sdp)?)
                }
                _ => None,
            },
        };
        Some(MediaPath { transport, remote })
    }

    /// Follows the connection state.
    pub fn state(&self) -> watch::Receiver<PeerState> {
        self.state.clone()
    }

    /// Waits until the connection is up; `Err` if it fails or closes first.
    pub async fn connected(&self) -> Result<(), PeerError> {
        let mut state = self.state.clone();
        let reached =
            state.wait_for(|s| *s == PeerState::Connected || s.is_terminal()).await.map_err(|_| PeerError::Closed)?;
        if *reached == PeerState::Connected { Ok(()) } else { Err(PeerError::Closed) }
    }

    /// The next remote video track (after its first packet arrived); `None` once closed.
    pub async fn next_track(&self) -> Option<VideoReceiver> {
        self.tracks.lock().await.recv().await
    }

    /// Closes the connection and its sockets. Idempotent.
    pub async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing peer connection");
        }
    }
}

/// Our outgoing VP8 track on one peer connection.
pub struct VideoSender {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    /// The payload type negotiated for VP8 on this connection (0 until looked up).
    payload_type: std::sync::atomic::AtomicU8,
}

impl std::fmt::Debug for VideoSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoSender").field("ssrc", &self.ssrc).finish_non_exhaustive()
    }
}

impl VideoSender {
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The negotiated VP8 payload type; call after the remote description is applied.
    pub async fn payload_type(&self) -> Result<u8, PeerError> {
        let cached = self.payload_type.load(std::sync::atomic::Ordering::Relaxed);
        if cached != 0 {
            return Ok(cached);
        }
        let params = self.sender.get_parameters().await?;
        let pt = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_VP8))
            .map(|c| c.payload_type)
            .ok_or(PeerError::NoVideo)?;
        self.payload_type.store(pt, std::sync::atomic::Ordering::Relaxed);
        Ok(pt)
    }

    /// Sends one RTP packet as ours: our SSRC, this leg's payload type, no header extensions
    /// (their ids were negotiated on another leg, if at all).
    pub async fn write(&self, mut packet: RtpPacket, payload_type: u8) -> Result<(), PeerError> {
        packet.header.ssrc = self.ssrc;
        packet.header.payload_type = payload_type;
        packet.header.extension = false;
        packet.header.extensions.clear();
        packet.header.extensions_padding = 0;
        self.track.write_rtp(packet).await?;
        Ok(())
    }

    /// Waits for the next keyframe request (PLI or FIR) from the remote side; `None` once closed.
    pub async fn keyframe_requested(&self) -> Option<()> {
        loop {
            match self.track.poll().await? {
                TrackLocalEvent::OnRtcpPacket(packets) => {
                    if packets
                        .iter()
                        .any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                    {
                        return Some(());
                    }
                }
                _ => continue,
            }
        }
    }
}

/// A remote video track.
pub struct VideoReceiver {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    label: Option<String>,
}

impl std::fmt::Debug for VideoReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoReceiver").field("ssrc", &self.ssrc).finish_non_exhaustive()
    }
}

impl VideoReceiver {
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The sender's label for this track (`None` for a stream not sent by [`Peer::add_video_sender`]).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The next RTP packet; `None` once the track ended.
    pub async fn read(&self) -> Option<RtpPacket> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(packet) => return Some(packet),
                TrackRemoteEvent::OnEnded => return None,
                _ => continue,
            }
        }
    }

    /// Asks the sender for a keyframe.
    pub async fn request_keyframe(&self) -> Result<(), PeerError> {
        self.track.write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: self.ssrc })]).await?;
        Ok(())
    }
}

/// A data channel carrying text messages. Clones share the channel.
#[derive(Clone)]
pub struct DataChannel {
    channel: Arc<dyn RtcDataChannel>,
}

impl std::fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannel").finish_non_exhaustive()
    }
}

/// What a data channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    Open,
    /// A text message. Binary messages are reported as `Binary` with their size and never parsed.
    Text(String),
    Binary(usize),
}

impl DataChannel {
    pub async fn label(&self) -> Result<String, PeerError> {
        Ok(self.channel.label().await?)
    }

    /// The next event; `None` once the channel closed.
    pub async fn recv(&self) -> Option<ChannelEvent> {
        loop {
            match self.channel.poll().await? {
                DataChannelEvent::OnOpen => return Some(ChannelEvent::Open),
                DataChannelEvent::OnMessage(msg) if msg.is_string => {
                    return Some(match String::from_utf8(msg.data.to_vec()) {
                        Ok(text) => ChannelEvent::Text(text),
                        Err(e) => ChannelEvent::Binary(e.into_bytes().len()),
                    });
                }
                DataChannelEvent::OnMessage(msg) => return Some(ChannelEvent::Binary(msg.data.len())),
                DataChannelEvent::OnClose => return None,
                _ => continue,
            }
        }
    }

    pub async fn send(&self, text: &str) -> Result<(), PeerError> {
        Ok(self.channel.send_text(text).await?)
    }

    /// Whether both handles are the same channel.
    pub fn same(&self, other: &DataChannel) -> bool {
        Arc::ptr_eq(&self.channel, &other.channel)
    }
}

/// Splits encoded VP8 frames into RTP packets (payload descriptor with picture id, marker on the
/// last packet of a frame, 90 kHz timestamps that follow the capture clock).
pub struct Vp8Packetizer {
    inner: Box<dyn rtc::rtp::packetizer::Packetizer + Send>,
    /// Whether a frame went out already (the first keeps the initial timestamp).
    started: bool,
}

impl std::fmt::Debug for Vp8Packetizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vp8Packetizer").finish_non_exhaustive()
    }
}

impl Vp8Packetizer {
    pub fn new(ssrc: u32, payload_type: u8) -> Self {
        let mut payloader = rtc::rtp::codec::vp8::Vp8Payloader::default();
        payloader.enable_picture_id = true;
        Vp8Packetizer {
            inner: Box::new(rtc::rtp::packetizer::new_packetizer(
                std::time::Instant::now(),
                RTP_MTU,
                payload_type,
                ssrc,
                Box::new(payloader),
                Box::new(rtc::rtp::sequence::new_random_sequencer()),
                VIDEO_CLOCK_RATE,
            )),
            started: false,
        }
    }

    /// Packetizes one frame; `elapsed` is the time since the previous frame was captured.
    ///
    /// The timestamp advances before the frame (rtc's packetizer advances after, which gave the
    /// first two frames one timestamp), and by at least one tick: two frames never share a
    /// timestamp, which receivers would take for one frame and seals use to name frames.
    pub fn packetize(&mut self, frame: bytes::Bytes, elapsed: Duration) -> Result<Vec<RtpPacket>, PeerError> {
        let samples = (elapsed.as_micros() * u128::from(VIDEO_CLOCK_RATE) / 1_000_000) as u32;
        if self.started {
            self.inner.skip_samples(samples.max(1));
        }
        self.started = true;
        Ok(self.inner.packetize(std::time::Instant::now(), &frame, 0)?)
    }
}

#[cfg(test)]
mod packetizer_tests {
    use super::*;

    #[test]
    fn every_frame_gets_its_own_timestamp_at_its_capture_time() {
        let mut p = Vp8Packetizer::new(1, VP8_PAYLOAD_TYPE);
        let frame = bytes::Bytes::from_static(&[0x50, 1, 2, 3, 4, 5]);
        let ts = |p: &mut Vp8Packetizer, ms| {
            p.packetize(frame.clone(), Duration::from_millis(ms)).unwrap()[0].header.timestamp
        };
        let first = ts(&mut p, 0);
        let second = ts(&mut p, 33);
        let third = ts(&mut p, 0); // two frames from one capture still differ
        assert_eq!(second.wrapping_sub(first), 33 * 90);
        assert_eq!(third.wrapping_sub(second), 1);
    }
}
