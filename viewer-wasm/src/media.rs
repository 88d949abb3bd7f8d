//! The receive-only peer connection to the relay for one view.
//!
//! The viewer offers (one receive-only video transceiver) and waits for ICE gathering to finish
//! before sending the offer: on the relay's networks host candidates gather in milliseconds, and
//! one offer/answer exchange is simpler and faster to first frame than trickling.

use sightline_proto::IceServer;
use sightline_proto::channel::{self, ChannelMessage};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MediaStream, MessageEvent, RtcConfiguration, RtcDataChannel, RtcDataChannelState, RtcIceGatheringState,
    RtcIceServer, RtcPeerConnection, RtcPeerConnectionState, RtcRtpTransceiverDirection, RtcRtpTransceiverInit,
    RtcSdpType, RtcSessionDescriptionInit, RtcTrackEvent,
};

/// Peer connection events the view reacts to.
pub enum MediaEvent {
    Stream(MediaStream),
    State(RtcPeerConnectionState),
    /// The `session` data channel is open: chat can be sent.
    ChannelOpen,
    /// The `session` data channel closed: chat cannot be sent.
    ChannelClosed,
    /// A chat line from the session (the user, the operator, or ourselves echoed).
    Chat {
        from: String,
        text: String,
    },
}

/// Sends one message on the session data channel; `false` if it is not open.
pub fn send(dc: &RtcDataChannel, msg: &ChannelMessage) -> bool {
    dc.ready_state() == RtcDataChannelState::Open && dc.send_with_str(&channel::encode(msg)).is_ok()
}

/// The configuration naming `servers` (TURN, R42), for a new connection or a renewal.
pub fn configuration(servers: &[IceServer]) -> RtcConfiguration {
    let list = js_sys::Array::new();
    for server in servers {
        let ice = RtcIceServer::new();
        let urls = js_sys::Array::new();
        for url in &server.urls {
            urls.push(&JsValue::from_str(url));
        }
        ice.set_urls(&urls);
        ice.set_username(&server.username);
        ice.set_credential(&server.credential);
        list.push(&ice);
    }
    let config = RtcConfiguration::new();
    config.set_ice_servers(&list);
    config
}

/// Creates the peer connection (with the TURN servers the relay gave) and its `session` data
/// channel (input and chat), and returns them with the complete offer SDP.
pub async fn offer(
    servers: &[IceServer],
    on_event: impl Fn(MediaEvent) + 'static,
) -> Result<(RtcPeerConnection, RtcDataChannel, String), JsValue> {
    let pc = RtcPeerConnection::new_with_configuration(&configuration(servers))?;
    let init = RtcRtpTransceiverInit::new();
    init.set_direction(RtcRtpTransceiverDirection::Recvonly);
    pc.add_transceiver_with_str_and_init("video", &init);
    let dc = pc.create_data_channel(channel::LABEL);

    let on_event = std::rc::Rc::new(on_event);
    let handler = on_event.clone();
    let ontrack = Closure::<dyn FnMut(RtcTrackEvent)>::new(move |ev: RtcTrackEvent| {
        let streams = ev.streams();
        let stream: MediaStream = if streams.length() > 0 {
            streams.get(0).unchecked_into()
        } else {
            let Ok(stream) = MediaStream::new() else { return };
            stream.add_track(&ev.track());
            stream
        };
        handler(MediaEvent::Stream(stream));
    });
    pc.set_ontrack(Some(ontrack.into_js_value().unchecked_ref()));
    let chat_handler = on_event.clone();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(text) = ev.data().as_string() else { return };
        match channel::decode(&text) {
            Ok(ChannelMessage::Chat { from, text }) => chat_handler(MediaEvent::Chat { from, text }),
            // Input and seals never travel to a viewer; the relay does not send them.
            Ok(ChannelMessage::Input { .. } | ChannelMessage::MediaSeal { .. }) => {}
            Err(e) => leptos::logging::warn!("bad data channel message: {e}"),
        }
    });
    dc.set_onmessage(Some(onmessage.into_js_value().unchecked_ref()));
    let open_handler = on_event.clone();
    let onopen = Closure::<dyn FnMut()>::new(move || open_handler(MediaEvent::ChannelOpen));
    dc.set_onopen(Some(onopen.into_js_value().unchecked_ref()));
    let close_handler = on_event.clone();
    let onclose = Closure::<dyn FnMut()>::new(move || close_handler(MediaEvent::ChannelClosed));
    dc.set_onclose(Some(onclose.into_js_value().unchecked_ref()));
    let pc_for_state = pc.clone();
    let onstate = Closure::<dyn FnMut()>::new(move || on_event(MediaEvent::State(pc_for_state.connection_state())));
    pc.set_onconnectionstatechange(Some(onstate.into_js_value().unchecked_ref()));

    let offer: RtcSessionDescriptionInit = JsFuture::from(pc.create_offer()).await?.unchecked_into();
    JsFuture::from(pc.set_local_description(&offer)).await?;
    gathering_complete(&pc).await?;
    let sdp = pc.local_description().map(|d| d.sdp()).ok_or_else(|| JsValue::from_str("no local description"))?;
    Ok((pc, dc, sdp))
}

/// Applies the relay's answer.
pub async fn accept_answer(pc: &RtcPeerConnection, sdp: &str) -> Result<(), JsValue> {
    let answer = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    answer.set_sdp(sdp);
    JsFuture::from(pc.set_remote_description(&answer)).await?;
    Ok(())
}

/// Closes the connection and detaches its handlers so nothing fires after the view is gone.
pub fn close(pc: &RtcPeerConnection) {
    pc.set_ontrack(None);
    pc.set_onconnectionstatechange(None);
    pc.set_onicegatheringstatechange(None);
    pc.close();
}

async fn gathering_complete(pc: &RtcPeerConnection) -> Result<(), JsValue> {
    if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
        return Ok(());
    }
    let pc_for_check = pc.clone();
    let done = js_sys::Promise::new(&mut |resolve, _reject| {
        let pc = pc_for_check.clone();
        let check = Closure::<dyn FnMut()>::new(move || {
            if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
                let _ = resolve.call0(&JsValue::NULL);
            }
        });
        pc_for_check.set_onicegatheringstatechange(Some(check.into_js_value().unchecked_ref()));
    });
    // The state may have completed between the first check and installing the handler.
    if pc.ice_gathering_state() != RtcIceGatheringState::Complete {
        JsFuture::from(done).await?;
    }
    pc.set_onicegatheringstatechange(None);
    Ok(())
}
