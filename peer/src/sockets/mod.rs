//! Where a peer connection's packets go: the sockets the webrtc crate would bind, replaced.
//!
//! Three ways, chosen per process:
//! - **Own sockets** ([`Sockets::Own`]): one ephemeral UDP port per connection, as the crate
//!   does it. Test peers use it.
//! - **Shared ports (the relay)** ([`Sockets::Shared`]): every connection uses one UDP port and
//!   one ICE-TCP port (RFC 6544), configured, so a firewall needs two rules and `ss` shows two
//!   sockets however many sessions run. The crate still binds a socket and a listener per
//!   connection; our [`Runtime`] wrapper takes them over, the connection's local description
//!   announces the shared ports instead (or the address the relay is reached by, behind NAT),
//!   and once that description exists the connection's own socket and listener are closed.
//!   The relay never dials: a remote description cannot make it open connections into the
//!   network it sits in.
//! - **Outbound (the agent)** ([`Sockets::Outbound`]): its own UDP port, and ICE-TCP streams it
//!   dials to the relay's TCP port, directly or through the corporate proxy ([`TcpDialer`]). It
//!   accepts nothing: the listener the crate binds is closed at once and not announced.

mod stun;
mod tcp;
mod udp;

pub use tcp::SharedTcpPort;
pub use udp::SharedUdpPort;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use webrtc::runtime::{AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime};

/// Opens TCP connections for the active side: directly, or through a proxy.
#[async_trait::async_trait]
pub trait TcpDialer: Send + Sync + Debug + 'static {
    /// A connected stream to `addr`, ready for ICE-TCP framing.
    async fn dial(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream>;
}

/// Dials the address itself.
#[derive(Debug, Default)]
pub struct DirectDialer;

#[async_trait::async_trait]
impl TcpDialer for DirectDialer {
    async fn dial(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect(addr).await
    }
}

/// How a peer connection gets its sockets.
#[derive(Debug, Clone, Default)]
pub enum Sockets {
    /// One ephemeral UDP port per connection; no TCP.
    #[default]
    Own,
    /// The relay's shared UDP and ICE-TCP ports.
    Shared(SharedPorts),
    /// Its own UDP port, and ICE-TCP dialled out through this dialer (the agent).
    Outbound(Arc<dyn TcpDialer>),
}

impl Sockets {
    /// Whether ICE also runs over TCP.
    pub(crate) fn tcp(&self) -> bool {
        !matches!(self, Sockets::Own)
    }
}

/// The relay's two media ports.
#[derive(Debug, Clone)]
pub struct SharedPorts {
    pub udp: SharedUdpPort,
    pub tcp: SharedTcpPort,
}

impl SharedPorts {
    /// Binds UDP `udp_port` and TCP `tcp_port` on `ip` (0: the OS picks); candidates announce
    /// `announce` instead of `ip` when given.
    pub async fn bind(ip: IpAddr, udp_port: u16, tcp_port: u16, announce: Option<IpAddr>) -> io::Result<SharedPorts> {
        let udp = SharedUdpPort::bind(SocketAddr::new(ip, udp_port), announce).await?;
        let tcp = SharedTcpPort::bind(SocketAddr::new(ip, tcp_port), announce).await?;
        Ok(SharedPorts { udp, tcp })
    }
}

/// Connections by the address of the socket the crate bound for them, until their username
/// fragment is known, and by that fragment after.
#[derive(Debug)]
struct Routes<R> {
    unclaimed: HashMap<SocketAddr, Weak<R>>,
    by_ufrag: HashMap<String, Weak<R>>,
}

impl<R> Default for Routes<R> {
    fn default() -> Self {
        Routes { unclaimed: HashMap::new(), by_ufrag: HashMap::new() }
    }
}

impl<R> Routes<R> {
    fn claim(&mut self, bound: SocketAddr, ufrag: &str) -> Option<Arc<R>> {
        self.by_ufrag.retain(|_, r| r.strong_count() > 0);
        self.unclaimed.retain(|_, r| r.strong_count() > 0);
        let route = self.unclaimed.remove(&bound)?.upgrade()?;
        self.by_ufrag.insert(ufrag.to_owned(), Arc::downgrade(&route));
        Some(route)
    }

    fn get(&self, ufrag: &str) -> Option<Arc<R>> {
        self.by_ufrag.get(ufrag).and_then(Weak::upgrade)
    }

    fn live(&self) -> usize {
        self.by_ufrag.values().filter(|r| r.strong_count() > 0).count()
    }
}

/// The crate's runtime with our sockets: every other call goes to `inner`.
#[derive(Debug)]
pub(crate) struct SocketsRuntime {
    inner: Arc<dyn Runtime>,
    sockets: Sockets,
    /// The address media binds to; an active stream reports it as its local address, which is
    /// how ICE finds the local candidate the stream belongs to.
    bind_ip: IpAddr,
}

impl SocketsRuntime {
    pub(crate) fn new(inner: Arc<dyn Runtime>, sockets: Sockets, bind_ip: IpAddr) -> SocketsRuntime {
        SocketsRuntime { inner, sockets, bind_ip }
    }
}

impl Runtime for SocketsRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        match &self.sockets {
            Sockets::Shared(ports) => ports.udp.adopt(socket),
            _ => self.inner.wrap_udp_socket(socket),
        }
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        match &self.sockets {
            Sockets::Shared(ports) => ports.tcp.adopt(listener),
            // Dropping the listener closes it: the agent accepts nothing.
            Sockets::Outbound(_) => Ok(Arc::new(tcp::NoListener { local: listener.local_addr()? })),
            Sockets::Own => self.inner.wrap_tcp_listener(listener),
        }
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move {
            let Sockets::Outbound(dialer) = &self.sockets else {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "only the agent dials ICE-TCP"));
            };
            let stream = dialer.dial(remote_addr).await?;
            Ok(Arc::new(tcp::Stream::dialled(stream, self.bind_ip, remote_addr)?) as Arc<dyn AsyncTcpStream>)
        })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "sightline-ice-tcp"
    }
}

/// Rewrites a complete local description: with shared ports each per-connection candidate
/// becomes the shared port (and the connection's own socket or listener is released), and
/// active TCP candidates go (the relay does not dial); outbound, passive TCP candidates go (the
/// agent accepts nothing).
pub(crate) fn rewrite_local_description(sdp: &str, sockets: &Sockets) -> String {
    let ufrag = local_ufrag(sdp);
    // One listener may stand behind several lines (one per component, and per bundled section).
    let mut claimed: HashMap<(bool, SocketAddr), Option<SocketAddr>> = HashMap::new();
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let Some(candidate) = Candidate::parse(line) else {
            out.push_str(line);
            continue;
        };
        match (sockets, candidate.tcp_type) {
            (Sockets::Shared(ports), None | Some("passive")) => {
                let shared = *claimed.entry((candidate.tcp_type.is_some(), candidate.addr)).or_insert_with(|| {
                    let ufrag = ufrag?;
                    match candidate.tcp_type {
                        None => ports.udp.claim(candidate.addr, ufrag),
                        Some(_) => ports.tcp.claim(candidate.addr, ufrag),
                    }
                });
                match shared {
                    Some(shared) => out.push_str(&candidate.with_addr(line, shared)),
                    None => tracing::warn!(
                        candidate = line.trim_end(),
                        "candidate without a route on the shared ports dropped"
                    ),
                }
            }
            (Sockets::Shared(_), Some(_)) => {}
            (Sockets::Outbound(_), Some("passive")) => {}
            _ => out.push_str(line),
        }
    }
    out
}

/// The ICE username fragment a description names (`a=ice-ufrag:`).
pub(crate) fn local_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// For the active side: the remote description without its passive TCP candidates, and those
/// candidates (`candidate:...`, one per address). The crate dials a passive candidate only when it
/// arrives on its own, as a trickled one, not inside a description.
pub(crate) fn take_remote_passive(sdp: &str, sockets: &Sockets) -> (String, Vec<String>) {
    if !matches!(sockets, Sockets::Outbound(_)) {
        return (sdp.to_owned(), Vec::new());
    }
    let mut seen = std::collections::HashSet::new();
    let mut candidates = Vec::new();
    let mut rest = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        match Candidate::parse(line) {
            Some(c) if c.tcp_type == Some("passive") => {
                if seen.insert(c.addr) {
                    candidates.push(line.trim_end().trim_start_matches("a=").to_owned());
                }
            }
            _ => rest.push_str(line),
        }
    }
    (rest, candidates)
}

/// The parts of an `a=candidate:` line we rewrite.
struct Candidate<'a> {
    addr: SocketAddr,
    tcp_type: Option<&'a str>,
    /// Field positions of the address and port in the line's whitespace split.
    fields: Vec<&'a str>,
}

impl<'a> Candidate<'a> {
    /// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...`
    fn parse(line: &'a str) -> Option<Candidate<'a>> {
        let fields: Vec<&str> = line.trim_end().strip_prefix("a=candidate:")?.split(' ').collect();
        let ip: IpAddr = fields.get(4)?.parse().ok()?;
        let port: u16 = fields.get(5)?.parse().ok()?;
        let tcp = fields.get(2)?.eq_ignore_ascii_case("tcp");
        let tcp_type = if tcp {
            let at = fields.iter().position(|f| *f == "tcptype")?;
            Some(*fields.get(at + 1)?)
        } else {
            None
        };
        Some(Candidate { addr: SocketAddr::new(ip, port), tcp_type, fields })
    }

    fn with_addr(&self, line: &str, addr: SocketAddr) -> String {
        let mut fields = self.fields.clone();
        let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
        fields[4] = &ip;
        fields[5] = &port;
        let ending = &line[line.trim_end().len()..];
        format!("a=candidate:{}{ending}", fields.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\n\
        a=ice-ufrag:OURS\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
        a=candidate:2 1 tcp 1671430143 127.0.0.1 40001 typ host tcptype passive\r\n\
        a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
        a=candidate:2 2 tcp 1671430142 127.0.0.1 40001 typ host tcptype passive\r\n\
        a=end-of-candidates\r\n";

    #[tokio::test]
    async fn the_relay_announces_its_shared_ports_and_never_an_active_candidate() {
        let announce = Some("198.18.0.1".parse().unwrap());
        let ports = SharedPorts::bind("127.0.0.1".parse().unwrap(), 0, 0, announce).await.unwrap();
        let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own = bound.local_addr().unwrap();
        let _listener = ports.tcp.adopt(bound).unwrap();
        let bound_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let own_udp = bound_udp.local_addr().unwrap();
        let _socket = ports.udp.adopt(bound_udp).unwrap();
        let sdp = SDP.replace("40001", &own.port().to_string()).replace("50000", &own_udp.port().to_string());
        let rewritten = rewrite_local_description(&sdp, &Sockets::Shared(ports.clone()));
        let (port, shared, shared_udp) = (&ports.tcp, ports.tcp.local_addr().port(), ports.udp.local_addr().port());
        assert!(
            rewritten
                .contains(&format!("a=candidate:2 1 tcp 1671430143 198.18.0.1 {shared} typ host tcptype passive\r\n"))
        );
        assert!(
            rewritten
                .contains(&format!("a=candidate:2 2 tcp 1671430142 198.18.0.1 {shared} typ host tcptype passive\r\n"))
        );
        assert!(rewritten.contains(&format!("a=candidate:1 1 udp 2130706431 198.18.0.1 {shared_udp} typ host\r\n")));
        assert!(!rewritten.contains("tcptype active"));
        assert_eq!(port.connections(), 1);
        // The per-connection ports were released.
        assert!(std::net::TcpStream::connect(own).is_err());
        assert!(std::net::UdpSocket::bind(own_udp).is_ok());
    }

    #[test]
    fn the_active_side_takes_the_remote_passive_candidates_out_to_dial_them() {
        let active = Sockets::Outbound(Arc::new(DirectDialer));
        let (rest, passive) = take_remote_passive(SDP, &active);
        assert_eq!(passive, ["candidate:2 1 tcp 1671430143 127.0.0.1 40001 typ host tcptype passive"]);
        assert!(!rest.contains("tcptype passive") && rest.contains("udp") && rest.contains("tcptype active"));
        assert_eq!(take_remote_passive(SDP, &Sockets::Own), (SDP.to_owned(), vec![]));
    }

    #[test]
    fn the_active_side_announces_no_passive_candidate() {
        let rewritten = rewrite_local_description(SDP, &Sockets::Outbound(Arc::new(DirectDialer)));
        assert!(!rewritten.contains("tcptype passive"));
        assert!(rewritten.contains("127.0.0.1 9 typ host tcptype active"));
        assert!(rewritten.contains("udp"));
    }
}
