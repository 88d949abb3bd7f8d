//! Relay + agent (synthetic screen) + a WebRTC subscriber, all on loopback: the subscriber gets
//! VP8 through the relay, reassembles and decodes frames, and the frame counters advance. A
//! second subscriber on the same agent gets frames too (fan-out). The agent enrols with a
//! one-time token and proves its key on connection; the viewers carry an operator session.

mod support;

use std::time::Duration;

use sightline_agent::decoder::Vp8Decoder;
use sightline_core::framecode;
use sightline_peer::vp8::FrameAssembler;
use support::{TestRelay, start_agent, start_relay};

/// A viewer: signaling socket plus a receive-only peer connection. Returns decoded frame counters.
async fn watch(relay: &TestRelay, agent_id: &str, frames_wanted: usize) -> Vec<u32> {
    let mut ws = support::operator_socket(relay, agent_id).await;
    let support::Watching { peer, track, .. } = support::watch(&mut ws, agent_id).await.expect("the relay answers");
    let mut assembler = FrameAssembler::default();
    let mut decoder = Vp8Decoder::new().unwrap();
    let mut counters = Vec::new();
    let mut first_frame = None;
    while counters.len() < frames_wanted {
        let packet = track.read().await.expect("track ended early");
        let Some(frame) = assembler.push(&packet) else { continue };
        if first_frame.is_none() {
            // The relay holds a new viewer's stream until a keyframe starts: nothing undecodable
            // is sent ahead of it.
            first_frame = Some(frame.keyframe);
        }
        // A frame after a lost one may not decode; the counters below prove the stream advances.
        let Ok(pictures) = decoder.decode(&frame.data) else { continue };
        for luma in pictures {
            assert_eq!((luma.width, luma.height), (1280, 720));
            counters.push(framecode::read_luma_plane(&luma.y, luma.stride).unwrap().counter);
        }
    }
    peer.close().await;
    assert_eq!(first_frame, Some(true), "the first frame a viewer gets is a keyframe");
    counters
}

fn assert_advancing(counters: &[u32]) {
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "frame counters must strictly increase: {counters:?}");
    assert!(counters.last().unwrap() - counters.first().unwrap() >= counters.len() as u32 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_receives_advancing_frames_through_the_relay_after_consent() {
    sightline_agent::frontend::scripted::answer_every_request(
        sightline_proto::Decision::Allow,
        vec![sightline_proto::Level::View],
    );
    let relay = start_relay().await;
    let device = start_agent(&relay, "synthetic-1").await;
    let counters = tokio::time::timeout(Duration::from_secs(30), watch(&relay, &device, 45))
        .await
        .expect("the viewer got its frames within 30 s");
    assert_advancing(&counters);
    // Where UDP reaches the relay, media takes it (the proxy test's control: the same record
    // says `tcp` there).
    let paths = relay.events_of("session.media_path");
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(
        paths[0].detail.starts_with(&sightline_audit::events::media_path_detail("udp", None)),
        "{}",
        paths[0].detail
    );
}
