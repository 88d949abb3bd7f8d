//! Lines queued before a data channel opens arrive, in order, once it does (the lost-chat race
//! of R24: media flows before SCTP is up, and the webrtc crate refuses sends until then).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightline_peer::{ChannelEvent, Outbox, Peer, PeerConfig, Undelivered};

/// What each message's delivery callback reported, by message number.
type Outcomes = Arc<Mutex<Vec<(u32, Result<(), Undelivered>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_before_the_channel_opens_arrive_in_order() {
    let config = PeerConfig { bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), sockets: Default::default() };
    let offerer = Peer::new(config.clone()).await.unwrap();
    let answerer = Peer::new(config).await.unwrap();
    let channel = offerer.create_data_channel("session").await.unwrap();

    // Installed and written to before any negotiation: nothing can be open yet.
    let outbox = Outbox::new(8);
    outbox.set_channel(Some(channel.clone()));
    let outcomes: Outcomes = Arc::default();
    for i in 0..3u32 {
        let outcomes = outcomes.clone();
        outbox.send(
            format!("line {i}"),
            Duration::from_secs(10),
            Box::new(move |r| outcomes.lock().unwrap().push((i, r))),
        );
    }
    // The offerer's own reader must run for the channel to see its open event.
    tokio::spawn(async move { while channel.recv().await.is_some() {} });

    let offer = offerer.offer().await.unwrap();
    let answer = answerer.answer(&offer).await.unwrap();
    offerer.accept_answer(&answer).await.unwrap();

    let remote = tokio::time::timeout(Duration::from_secs(10), answerer.next_data_channel()).await.unwrap().unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), remote.recv()).await.unwrap() {
            Some(ChannelEvent::Text(text)) => got.push(text),
            Some(_) => {}
            None => panic!("channel closed after {got:?}"),
        }
    }
    assert_eq!(got, ["line 0", "line 1", "line 2"]);
    assert_eq!(*outcomes.lock().unwrap(), vec![(0, Ok(())), (1, Ok(())), (2, Ok(()))]);
    offerer.close().await;
    answerer.close().await;
}
