//! One UDP port and one TCP port for every connection (issue 25, item 4): three connections on
//! the relay's side of shared ports all carry data, and the kernel's own socket tables show one
//! UDP socket and one TCP listener on the media address; the control, the same three on their
//! own sockets, shows three UDP sockets.
//!
//! Each side binds its own loopback address (127.0.0.2 and 127.0.0.3 for the relay's side,
//! 127.0.0.1 for the remote peers), so the tables can be read per address; this file holds one
//! test, so nothing else of this binary binds them meanwhile.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sightline_peer::{ChannelEvent, Peer, PeerConfig, SharedPorts, Sockets};

/// Local addresses of the sockets in a `/proc/net/{udp,tcp}` table bound to `ip`; for TCP only
/// listeners (state 0A).
fn bound(table: &str, ip: Ipv4Addr) -> Vec<u16> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = fields.get(1)?.split_once(':')?;
            // The kernel prints the network-order address as a host integer.
            let addr = Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.to_le_bytes());
            let listening = table != "tcp" || fields.get(3) == Some(&"0A");
            (addr == ip && listening).then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

/// Three remote peers connect to three connections built with `sockets` on `ip`, and a line
/// crosses each; returns the connections, still open.
async fn three_connections(ip: Ipv4Addr, sockets: Sockets) -> Vec<Peer> {
    let mut open = Vec::new();
    for i in 0..3 {
        let remote =
            Peer::new(PeerConfig { bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), sockets: Sockets::Own }).await.unwrap();
        let ours = Peer::new(PeerConfig { bind_ip: IpAddr::V4(ip), sockets: sockets.clone() }).await.unwrap();
        let channel = remote.create_data_channel("session").await.unwrap();
        let answer = ours.answer(&remote.offer().await.unwrap()).await.unwrap();
        remote.accept_answer(&answer).await.unwrap();
        let theirs = tokio::time::timeout(Duration::from_secs(10), ours.next_data_channel()).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), ours.connected()).await.unwrap().unwrap();
        // Ours opened when the remote's channel reached it: a line back proves the path.
        let line = format!("line {i}");
        theirs.send(&line).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), channel.recv()).await.unwrap() {
                Some(ChannelEvent::Text(text)) => break assert_eq!(text, line),
                Some(_) => continue,
                None => panic!("the channel closed"),
            }
        }
        open.push(ours);
        open.push(remote);
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_uses_the_one_udp_port_and_the_one_tcp_port() {
    let shared_ip = Ipv4Addr::new(127, 0, 0, 2);
    let ports = SharedPorts::bind(IpAddr::V4(shared_ip), 0, 0, None).await.unwrap();
    let open = three_connections(shared_ip, Sockets::Shared(ports.clone())).await;
    assert_eq!(bound("udp", shared_ip), [ports.udp.local_addr().port()]);
    assert_eq!(bound("tcp", shared_ip), [ports.tcp.local_addr().port()]);

    // The control: connections on their own sockets hold one UDP port each.
    let own_ip = Ipv4Addr::new(127, 0, 0, 3);
    let control = three_connections(own_ip, Sockets::Own).await;
    assert_eq!(bound("udp", own_ip).len(), 3);

    for peer in open.iter().chain(&control) {
        peer.close().await;
    }
}
