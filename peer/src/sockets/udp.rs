//! The relay's one UDP media port.
//!
//! The webrtc crate binds a UDP socket per connection; [`SharedUdpPort::adopt`] takes it over,
//! holds it until the connection is claimed, then closes it, and gives the crate a socket that
//! sends from the shared port and receives what is routed to it. A STUN binding request goes to
//! the connection its USERNAME names (the crate then checks its integrity); any other datagram
//! goes to the connection its source address is tied to. An address is tied to a connection when
//! that connection answers a check from it with a binding success (sent only after the crate
//! verified the check, so an address is taken over only by proving the connection's password),
//! or, if no connection holds it, when the connection sends to it first (its own checks).

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use super::Routes;
use super::stun::{binding_request_ufrag, is_binding_success};

/// Datagrams waiting for one connection; beyond this they are dropped, as a full socket would.
const QUEUE: usize = 512;
/// Largest datagram read (media packets stay below 1500 bytes).
const MAX_DATAGRAM: usize = 4096;
/// Source addresses remembered before the dead ones are first pruned; after each pruning the
/// next one waits until the map has doubled, so pruning costs amortised constant time.
const PRUNE_AT: usize = 4096;

/// One UDP socket shared by every peer connection of this process.
#[derive(Debug, Clone)]
pub struct SharedUdpPort {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
    announced: SocketAddr,
    routes: Mutex<UdpRoutes>,
}

#[derive(Debug)]
struct UdpRoutes {
    routes: Routes<Route>,
    /// Which connection a remote address belongs to.
    by_remote: HashMap<SocketAddr, Weak<Route>>,
    prune_at: usize,
}

impl Default for UdpRoutes {
    fn default() -> Self {
        UdpRoutes { routes: Routes::default(), by_remote: HashMap::new(), prune_at: PRUNE_AT }
    }
}

type Datagram = (Vec<u8>, SocketAddr);

#[derive(Debug)]
struct Route {
    /// The address the connection believes its socket has (its candidate's address).
    local: SocketAddr,
    datagrams: mpsc::Sender<Datagram>,
    /// The per-connection socket the crate bound, held until the connection is claimed.
    bound: Mutex<Option<std::net::UdpSocket>>,
}

impl SharedUdpPort {
    /// Binds `listen`; local descriptions announce `announce` (the address the network reaches
    /// this one by), or `listen` itself.
    pub async fn bind(listen: SocketAddr, announce: Option<IpAddr>) -> io::Result<SharedUdpPort> {
        let socket = tokio::net::UdpSocket::bind(listen).await?;
        let local = socket.local_addr()?;
        let announced = SocketAddr::new(announce.unwrap_or(local.ip()), local.port());
        let inner = Arc::new(Shared { socket, local, announced, routes: Mutex::new(UdpRoutes::default()) });
        tokio::spawn(receive_loop(Arc::downgrade(&inner)));
        Ok(SharedUdpPort { inner })
    }

    /// The address the shared socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Takes over a socket the crate bound for one connection.
    pub(super) fn adopt(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let route = Arc::new(Route { local, datagrams: tx, bound: Mutex::new(Some(socket)) });
        self.inner.routes().routes.unclaimed.insert(local, Arc::downgrade(&route));
        Ok(Arc::new(RoutedSocket {
            route,
            datagrams: Mutex::new(rx),
            shared: self.inner.clone(),
            sent_to: Mutex::new(None),
        }))
    }

    /// Routes checks naming `ufrag` to the connection whose own socket is `bound`, closes that
    /// socket, and returns the address to announce instead.
    pub(super) fn claim(&self, bound: SocketAddr, ufrag: &str) -> Option<SocketAddr> {
        let route = self.inner.routes().routes.claim(bound, ufrag)?;
        route.bound.lock().unwrap_or_else(|e| e.into_inner()).take();
        Some(self.inner.announced)
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, UdpRoutes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection a datagram from `from` belongs to.
    fn route(&self, datagram: &[u8], from: SocketAddr) -> Option<Arc<Route>> {
        let routes = self.routes();
        match binding_request_ufrag(datagram) {
            // Not tied yet: the check is unverified until the connection answers it.
            Some(ufrag) => routes.routes.get(ufrag),
            None => routes.by_remote.get(&from).and_then(Weak::upgrade),
        }
    }
}

impl UdpRoutes {
    /// Ties `remote` to `route`: always when the route answered a verified check from it, and
    /// for its own sending only when nothing live holds it (a remote description cannot take
    /// over another connection's peer).
    fn remember(&mut self, remote: SocketAddr, route: &Arc<Route>, verified: bool) {
        let held = self.by_remote.get(&remote).and_then(Weak::upgrade);
        if held.as_ref().is_some_and(|h| Arc::ptr_eq(h, route)) || !(verified || held.is_none()) {
            return;
        }
        if self.by_remote.len() >= self.prune_at {
            self.by_remote.retain(|_, r| r.strong_count() > 0);
            self.prune_at = PRUNE_AT.max(self.by_remote.len() * 2);
        }
        self.by_remote.insert(remote, Arc::downgrade(route));
    }
}

async fn receive_loop(shared: Weak<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Some(port) = shared.upgrade() else { return };
        let received = tokio::select! {
            received = port.socket.recv_from(&mut buf) => received,
            // Let go now and then, so a port nobody holds any more is dropped.
            _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
        };
        match received {
            Ok((n, from)) => {
                if let Some(route) = port.route(&buf[..n], from) {
                    // A full queue drops the datagram, as a full socket buffer would.
                    let _ = route.datagrams.try_send((buf[..n].to_vec(), from));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "shared UDP port receive error");
                drop(port);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A connection's view of the shared port.
#[derive(Debug)]
struct RoutedSocket {
    route: Arc<Route>,
    datagrams: Mutex<mpsc::Receiver<Datagram>>,
    shared: Arc<Shared>,
    /// The last address this connection sent to, already remembered: every media packet goes
    /// to the same peer, and the shared table's lock is not taken again for it.
    sent_to: Mutex<Option<SocketAddr>>,
}

impl AsyncUdpSocket for RoutedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.route.local)
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        // What comes back from where this connection sends belongs to it; an answered check
        // proved the sender knows its password.
        // Sending again to the address last remembered changes nothing (an entry pointing at a
        // live connection is never pruned, and only an answered check moves it); only answers
        // and new addresses go to the shared table.
        let verified = is_binding_success(transmit.contents);
        let mut sent_to = self.sent_to.lock().unwrap_or_else(|e| e.into_inner());
        if verified || *sent_to != Some(transmit.destination) {
            self.shared.routes().remember(transmit.destination, &self.route, verified);
            *sent_to = Some(transmit.destination);
        }
        drop(sent_to);
        self.shared.socket.poll_send_to(cx, transmit.contents, transmit.destination)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else { return Poll::Ready(Ok(0)) };
        let mut datagrams = self.datagrams.lock().unwrap_or_else(|e| e.into_inner());
        match datagrams.poll_recv(cx) {
            Poll::Ready(Some((datagram, from))) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                let mut received = RecvMeta::default();
                received.addr = from;
                received.len = n;
                received.stride = n;
                received.dst_ip = Some(self.route.local.ip());
                *slot = received;
                Poll::Ready(Ok(1))
            }
            // The route holds the sender while we exist; nothing more will come.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::tests::{binding_request, binding_success};
    use super::*;

    async fn recv(socket: &Arc<dyn AsyncUdpSocket>) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2048];
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await.unwrap().unwrap();
        buf.truncate(n);
        (buf, from)
    }

    /// A shared port with two connections claimed as `ufragA` and `ufragB`.
    struct Claimed {
        port: SharedUdpPort,
        a: Arc<dyn AsyncUdpSocket>,
        b: Arc<dyn AsyncUdpSocket>,
        /// The addresses of the sockets the crate had bound for them.
        own: (SocketAddr, SocketAddr),
    }

    async fn two_connections() -> Claimed {
        let port = SharedUdpPort::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let (a_own, b_own) =
            (std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let own = (a_own.local_addr().unwrap(), b_own.local_addr().unwrap());
        let (a, b) = (port.adopt(a_own).unwrap(), port.adopt(b_own).unwrap());
        assert_eq!(port.claim(own.0, "ufragA"), Some(port.local_addr()));
        assert_eq!(port.claim(own.1, "ufragB"), Some(port.local_addr()));
        Claimed { port, a, b, own }
    }

    #[tokio::test]
    async fn datagrams_reach_the_connection_their_check_names_and_answers_leave_from_the_shared_port() {
        let Claimed { port, a, b, own: (a_addr, b_addr) } = two_connections().await;
        // The connections' own sockets are closed: only the shared one is left.
        assert!(std::net::UdpSocket::bind(a_addr).is_ok() && std::net::UdpSocket::bind(b_addr).is_ok());

        let remote_a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let remote_b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        remote_b.send_to(&binding_request(b"ufragB:x"), port.local_addr()).await.unwrap();
        remote_a.send_to(&binding_request(b"ufragA:y"), port.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await, (binding_request(b"ufragA:y"), remote_a.local_addr().unwrap()));
        assert_eq!(recv(&b).await, (binding_request(b"ufragB:x"), remote_b.local_addr().unwrap()));
        // Once A answered the check, that remote's other datagrams (DTLS, SRTP) follow it.
        a.send_to(&binding_success(), remote_a.local_addr().unwrap()).await.unwrap();
        remote_a.send_to(b"srtp for a", port.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.0, b"srtp for a");

        // What a connection sends leaves from the shared port.
        b.send_to(b"answer", remote_b.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = remote_b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"answer"[..], port.local_addr()));
        remote_b.send_to(b"srtp for b", port.local_addr()).await.unwrap();
        assert_eq!(recv(&b).await.0, b"srtp for b");
    }

    #[tokio::test]
    async fn a_stranger_reaches_no_connection_and_sending_does_not_take_over_anothers_peer() {
        let Claimed { port, a, b, .. } = two_connections().await;
        let remote = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        remote.send_to(&binding_request(b"ufragA:y"), port.local_addr()).await.unwrap();
        recv(&a).await;
        a.send_to(&binding_success(), remote.local_addr().unwrap()).await.unwrap();
        // B sends to A's peer (a remote description can name any address)...
        b.send_to(b"probe", remote.local_addr().unwrap()).await.unwrap();
        // ...and the peer (or someone spoofing it) sends a check naming B, which B has not
        // answered...
        remote.send_to(&binding_request(b"ufragB:q"), port.local_addr()).await.unwrap();
        assert_eq!(recv(&b).await.0, binding_request(b"ufragB:q"));
        // ...yet the peer's next datagram still goes to A.
        remote.send_to(b"for a", port.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.0, b"for a");
        // A stranger's unchecked datagram goes nowhere: the marker sent after it arrives first.
        let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"unchecked", port.local_addr()).await.unwrap();
        stranger.send_to(&binding_request(b"ufragB:z"), port.local_addr()).await.unwrap();
        assert_eq!(recv(&b).await.0, binding_request(b"ufragB:z"));
        remote.send_to(b"marker", port.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.0, b"marker");
        // Only B's answer to a check moves the address to B.
        b.send_to(&binding_success(), remote.local_addr().unwrap()).await.unwrap();
        remote.send_to(b"for b", port.local_addr()).await.unwrap();
        assert_eq!(recv(&b).await.0, b"for b");
    }
}
