//! ICE over TCP (RFC 6544, framed per RFC 4571) for networks without UDP.
//!
//! Two roles, never both in one process:
//! - **Passive (the relay).** Every peer connection accepts ICE-TCP on one shared, configured
//!   port ([`SharedTcpPort`]), so a firewall needs one rule. The webrtc crate binds a listener
//!   per connection; our [`Runtime`] wrapper takes that listener over, closes it once the
//!   connection's ICE username fragment is known, and from then on receives that connection's
//!   streams from the shared port, routed by the USERNAME of the first STUN request on each
//!   stream (`<our ufrag>:<their ufrag>`). The local description announces the shared port
//!   instead of the per-connection one. The relay never dials out: a remote description cannot
//!   make it open connections into the network it sits in.
//! - **Active (the agent).** The agent dials the relay's passive candidate, directly or through
//!   the corporate proxy's CONNECT tunnel ([`TcpDialer`]). It accepts nothing: the listener the
//!   crate binds is closed at once and its passive candidate is not announced, so the endpoint
//!   stays outbound-only.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime};

/// How long a new stream on the shared port may take to send its first STUN request.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(10);
/// Streams on the shared port still waiting for their first request; more are closed at once.
const MAX_UNIDENTIFIED: usize = 256;
/// Largest first frame accepted on the shared port (a STUN binding request is ~100 bytes).
const MAX_FIRST_FRAME: usize = 1500;
/// Streams routed to one connection and not yet accepted by it.
const ACCEPT_QUEUE: usize = 8;

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

/// How a peer connection uses TCP.
#[derive(Debug, Clone, Default)]
pub enum IceTcp {
    /// UDP only.
    #[default]
    Off,
    /// Accept ICE-TCP on the shared port (the relay).
    Passive(SharedTcpPort),
    /// Dial the remote side's passive candidates through this dialer (the agent).
    Active(Arc<dyn TcpDialer>),
}

/// One listening TCP port shared by every peer connection of this process.
#[derive(Debug, Clone)]
pub struct SharedTcpPort {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Where the shared listener is bound.
    local: SocketAddr,
    /// What the local descriptions announce (differs from `local` behind NAT).
    announced: SocketAddr,
    routes: Mutex<Routes>,
    unidentified: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Connections whose listener is bound but whose ufrag is not known yet, by that listener's
    /// own address.
    unclaimed: HashMap<SocketAddr, Weak<Route>>,
    /// Connections by their local ICE username fragment.
    by_ufrag: HashMap<String, Weak<Route>>,
}

/// Where one peer connection takes its streams.
#[derive(Debug)]
struct Route {
    /// The address the connection believes it listens on (its candidate's address).
    local: SocketAddr,
    streams: mpsc::Sender<(Arc<dyn AsyncTcpStream>, SocketAddr)>,
    /// Where the newest stream routed here came from (ICE knows it only as peer-reflexive).
    last_peer: Mutex<Option<SocketAddr>>,
    /// The per-connection listener the crate bound, held until the connection is claimed so
    /// its port cannot be handed to another connection meanwhile.
    bound: Mutex<Option<std::net::TcpListener>>,
}

impl SharedTcpPort {
    /// Binds `listen` and starts routing its streams; local descriptions announce `announce`
    /// (the address the network reaches this one by), or `listen` itself.
    pub async fn bind(listen: SocketAddr, announce: Option<IpAddr>) -> io::Result<SharedTcpPort> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let announced = SocketAddr::new(announce.unwrap_or(local.ip()), local.port());
        let inner = Arc::new(Shared {
            local,
            announced,
            routes: Mutex::new(Routes::default()),
            unidentified: Arc::new(tokio::sync::Semaphore::new(MAX_UNIDENTIFIED)),
        });
        tokio::spawn(accept_loop(listener, Arc::downgrade(&inner)));
        Ok(SharedTcpPort { inner })
    }

    /// The address the shared listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// How many peer connections take streams from this port.
    pub fn connections(&self) -> usize {
        let routes = self.inner.routes();
        routes.by_ufrag.values().filter(|r| r.strong_count() > 0).count()
    }

    /// Where the newest stream for the connection with local username fragment `ufrag` came from.
    pub(crate) fn last_peer(&self, ufrag: &str) -> Option<SocketAddr> {
        let route = self.inner.routes().by_ufrag.get(ufrag).and_then(Weak::upgrade)?;
        *route.last_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over a listener the crate bound for one connection.
    fn adopt(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let route =
            Arc::new(Route { local, streams: tx, last_peer: Mutex::new(None), bound: Mutex::new(Some(listener)) });
        self.inner.routes().unclaimed.insert(local, Arc::downgrade(&route));
        Ok(Arc::new(RoutedListener { route, streams: tokio::sync::Mutex::new(rx) }))
    }

    /// Routes streams whose first request names `ufrag` to the connection listening on `bound`,
    /// releases that connection's own port, and returns the address to announce instead.
    fn claim(&self, bound: SocketAddr, ufrag: &str) -> Option<SocketAddr> {
        let mut routes = self.inner.routes();
        routes.by_ufrag.retain(|_, r| r.strong_count() > 0);
        let route = routes.unclaimed.remove(&bound)?.upgrade()?;
        route.bound.lock().unwrap_or_else(|e| e.into_inner()).take();
        routes.by_ufrag.insert(ufrag.to_owned(), Arc::downgrade(&route));
        Some(self.inner.announced)
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Weak<Shared>) {
    loop {
        let accepted = listener.accept().await;
        let Some(shared) = shared.upgrade() else { return };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: wait rather than spin.
                tracing::warn!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.unidentified.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "ICE-TCP stream closed: too many streams have not identified themselves");
            continue;
        };
        tokio::spawn(async move {
            let routed = tokio::time::timeout(FIRST_REQUEST_WAIT, route_stream(&shared, stream, peer)).await;
            drop(permit);
            match routed {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => tracing::debug!(%peer, reason, "ICE-TCP stream closed"),
                Err(_) => tracing::debug!(%peer, "ICE-TCP stream closed: no STUN request in time"),
            }
        });
    }
}

async fn route_stream(
    shared: &Shared,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<(), &'static str> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).await.map_err(|_| "closed before its first frame")?;
    let length = usize::from(u16::from_be_bytes(length));
    if length > MAX_FIRST_FRAME {
        return Err("first frame too large");
    }
    let mut first = vec![0u8; 2 + length];
    first[..2].copy_from_slice(&(length as u16).to_be_bytes());
    stream.read_exact(&mut first[2..]).await.map_err(|_| "closed inside its first frame")?;
    let ufrag = binding_request_ufrag(&first[2..]).ok_or("first frame is not a STUN binding request")?;
    let route = shared.routes().by_ufrag.get(ufrag).and_then(Weak::upgrade).ok_or("unknown ICE username")?;
    let (read, write) = stream.into_split();
    let stream = Stream { read: tokio::sync::Mutex::new((first, read)), write, local: route.local, peer };
    *route.last_peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
    route.streams.try_send((Arc::new(stream), peer)).map_err(|_| "the connection is not accepting")
}

/// The recipient's username fragment out of a STUN binding request's USERNAME
/// (`<recipient ufrag>:<sender ufrag>`, RFC 8445 7.2.2).
fn binding_request_ufrag(message: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: u16 = 0x0001;
    const MAGIC_COOKIE: u32 = 0x2112_A442;
    const USERNAME: u16 = 0x0006;
    let header = message.get(..20)?;
    if u16::from_be_bytes([header[0], header[1]]) != BINDING_REQUEST
        || u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attributes = message.get(20..20 + body_len)?;
    while attributes.len() >= 4 {
        let kind = u16::from_be_bytes([attributes[0], attributes[1]]);
        let len = usize::from(u16::from_be_bytes([attributes[2], attributes[3]]));
        let value = attributes.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(ours, _)| ours).filter(|u| !u.is_empty());
        }
        attributes = attributes.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

/// A connection's view of the shared port: the streams routed to it.
#[derive(Debug)]
struct RoutedListener {
    route: Arc<Route>,
    streams: tokio::sync::Mutex<mpsc::Receiver<(Arc<dyn AsyncTcpStream>, SocketAddr)>>,
}

impl AsyncTcpListener for RoutedListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>> {
        Box::pin(async move {
            match self.streams.lock().await.recv().await {
                Some(stream) => Ok(stream),
                // The route holds the sender, so this cannot end while we exist; an error here
                // would make the crate re-arm the accept in a tight loop.
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.route.local)
    }
}

/// The active side's listener: bound by the crate, closed here, accepting nothing.
#[derive(Debug)]
struct NoListener {
    local: SocketAddr,
}

impl AsyncTcpListener for NoListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>> {
        Box::pin(std::future::pending())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A TCP stream as the crate sees it: bytes already read (the first frame, on the shared port)
/// come first, and the addresses are the ones ICE knows (the candidate's, not the proxy's).
#[derive(Debug)]
struct Stream {
    read: tokio::sync::Mutex<(Vec<u8>, OwnedReadHalf)>,
    write: OwnedWriteHalf,
    local: SocketAddr,
    peer: SocketAddr,
}

impl AsyncTcpStream for Stream {
    fn read<'a, 'b>(&'a self, buf: &'b mut [u8]) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let mut guard = self.read.lock().await;
            let (pending, half) = &mut *guard;
            if !pending.is_empty() {
                let n = pending.len().min(buf.len());
                buf[..n].copy_from_slice(&pending[..n]);
                pending.drain(..n);
                return Ok(n);
            }
            half.read(buf).await
        })
    }

    fn write_all<'a, 'b>(&'a self, buf: &'b [u8]) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let mut remaining = buf;
            while !remaining.is_empty() {
                self.write.writable().await?;
                match self.write.try_write(remaining) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => remaining = &remaining[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// The crate's runtime with our TCP: every call but the TCP ones goes to `inner`.
#[derive(Debug)]
pub(crate) struct TcpRuntime {
    inner: Arc<dyn Runtime>,
    tcp: IceTcp,
    /// The address media binds to; an active stream reports it as its local address, which is
    /// how ICE finds the local candidate the stream belongs to.
    bind_ip: IpAddr,
}

impl TcpRuntime {
    pub(crate) fn new(inner: Arc<dyn Runtime>, tcp: IceTcp, bind_ip: IpAddr) -> TcpRuntime {
        TcpRuntime { inner, tcp, bind_ip }
    }
}

impl Runtime for TcpRuntime {
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
        self.inner.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        match &self.tcp {
            IceTcp::Passive(port) => port.adopt(listener),
            // Dropping the listener closes it: the active side accepts nothing.
            IceTcp::Active(_) => Ok(Arc::new(NoListener { local: listener.local_addr()? })),
            IceTcp::Off => self.inner.wrap_tcp_listener(listener),
        }
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move {
            let IceTcp::Active(dialer) = &self.tcp else {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "this side of ICE-TCP does not dial"));
            };
            let stream = dialer.dial(remote_addr).await?;
            stream.set_nodelay(true)?;
            let local = SocketAddr::new(self.bind_ip, stream.local_addr()?.port());
            let (read, write) = stream.into_split();
            Ok(Arc::new(Stream { read: tokio::sync::Mutex::new((Vec::new(), read)), write, local, peer: remote_addr })
                as Arc<dyn AsyncTcpStream>)
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

/// Rewrites a complete local description for `tcp`: on the passive side the per-connection TCP
/// candidate becomes the shared port (and its own listener is released), and active
/// candidates go (the relay does not dial); on the active side passive candidates go (the agent
/// accepts nothing).
pub(crate) fn rewrite_local_description(sdp: &str, tcp: &IceTcp) -> String {
    let ufrag = sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:")).map(str::to_owned);
    // One listener may stand behind several lines (one per component, and per bundled section).
    let mut claimed: HashMap<SocketAddr, Option<SocketAddr>> = HashMap::new();
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let Some(candidate) = Candidate::parse(line) else {
            out.push_str(line);
            continue;
        };
        match (tcp, candidate.tcp_type) {
            (_, None) => out.push_str(line),
            (IceTcp::Passive(port), Some("passive")) => {
                let shared = *claimed
                    .entry(candidate.addr)
                    .or_insert_with(|| ufrag.as_deref().and_then(|u| port.claim(candidate.addr, u)));
                match shared {
                    Some(shared) => out.push_str(&candidate.with_addr(line, shared)),
                    None => tracing::warn!(candidate = line.trim_end(), "ICE-TCP candidate without a route dropped"),
                }
            }
            (IceTcp::Passive(_), _) => {}
            (IceTcp::Active(_), Some("passive")) => {}
            _ => out.push_str(line),
        }
    }
    out
}

/// For the active side: the remote description without its passive TCP candidates, and those
/// candidates (`candidate:...`, one per address). The crate dials a passive candidate only when it
/// arrives on its own, as a trickled one, not inside a description.
pub(crate) fn take_remote_passive(sdp: &str, tcp: &IceTcp) -> (String, Vec<String>) {
    if !matches!(tcp, IceTcp::Active(_)) {
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

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attributes = vec![0x00, 0x06];
        attributes.extend((username.len() as u16).to_be_bytes());
        attributes.extend(username);
        attributes.resize(4 + username.len().next_multiple_of(4), 0);
        // PRIORITY after it, as a browser sends it.
        attributes.extend([0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut message = vec![0x00, 0x01];
        message.extend((attributes.len() as u16).to_be_bytes());
        message.extend(0x2112_A442u32.to_be_bytes());
        message.extend([7; 12]);
        message.extend(attributes);
        message
    }

    #[test]
    fn the_recipients_ufrag_is_read_from_a_binding_request() {
        assert_eq!(binding_request_ufrag(&binding_request(b"relayUfrag:agentUfrag")), Some("relayUfrag"));
    }

    #[test]
    fn anything_but_a_binding_request_with_a_username_is_not_routed() {
        let mut response = binding_request(b"a:b");
        // 0x0101: a binding success response.
        response[0] = 0x01;
        response[1] = 0x01;
        assert_eq!(binding_request_ufrag(&response), None);
        let mut no_cookie = binding_request(b"a:b");
        no_cookie[4] = 0;
        assert_eq!(binding_request_ufrag(&no_cookie), None);
        assert_eq!(binding_request_ufrag(&binding_request(b":b")), None);
        assert_eq!(binding_request_ufrag(&binding_request(b"nocolon")), None);
        let mut truncated = binding_request(b"a:b");
        truncated.truncate(24);
        assert_eq!(binding_request_ufrag(&truncated), None);
        assert_eq!(binding_request_ufrag(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    const SDP: &str = "v=0\r\n\
        a=ice-ufrag:OURS\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n\
        a=candidate:2 1 tcp 1671430143 127.0.0.1 40001 typ host tcptype passive\r\n\
        a=candidate:3 1 tcp 1671430143 127.0.0.1 9 typ host tcptype active\r\n\
        a=candidate:2 2 tcp 1671430142 127.0.0.1 40001 typ host tcptype passive\r\n\
        a=end-of-candidates\r\n";

    #[tokio::test]
    async fn the_passive_side_announces_the_shared_port_and_never_an_active_candidate() {
        let port =
            SharedTcpPort::bind("127.0.0.1:0".parse().unwrap(), Some("198.18.0.1".parse().unwrap())).await.unwrap();
        let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own = bound.local_addr().unwrap();
        let _listener = port.adopt(bound).unwrap();
        let sdp = SDP.replace("40001", &own.port().to_string());
        let rewritten = rewrite_local_description(&sdp, &IceTcp::Passive(port.clone()));
        let shared = port.local_addr().port();
        assert!(
            rewritten
                .contains(&format!("a=candidate:2 1 tcp 1671430143 198.18.0.1 {shared} typ host tcptype passive\r\n"))
        );
        assert!(
            rewritten
                .contains(&format!("a=candidate:2 2 tcp 1671430142 198.18.0.1 {shared} typ host tcptype passive\r\n"))
        );
        assert!(rewritten.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n"));
        assert!(!rewritten.contains("tcptype active"));
        assert_eq!(port.connections(), 1);
        // The per-connection port was released.
        assert!(std::net::TcpStream::connect(own).is_err());
    }

    #[test]
    fn the_active_side_takes_the_remote_passive_candidates_out_to_dial_them() {
        let active = IceTcp::Active(Arc::new(DirectDialer));
        let (rest, passive) = take_remote_passive(SDP, &active);
        assert_eq!(passive, ["candidate:2 1 tcp 1671430143 127.0.0.1 40001 typ host tcptype passive"]);
        assert!(!rest.contains("tcptype passive") && rest.contains("udp") && rest.contains("tcptype active"));
        assert_eq!(take_remote_passive(SDP, &IceTcp::Off), (SDP.to_owned(), vec![]));
    }

    #[test]
    fn the_active_side_announces_no_passive_candidate() {
        let rewritten = rewrite_local_description(SDP, &IceTcp::Active(Arc::new(DirectDialer)));
        assert!(!rewritten.contains("tcptype passive"));
        assert!(rewritten.contains("127.0.0.1 9 typ host tcptype active"));
        assert!(rewritten.contains("udp"));
    }
}
