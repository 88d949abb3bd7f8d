//! The relay's one ICE-TCP port (RFC 6544, framed per RFC 4571), and the agent's dialled streams.
//!
//! The webrtc crate binds a listener per connection; [`SharedTcpPort::adopt`] takes it over and
//! holds it until the connection is claimed, then closes it. Each stream on the shared port is
//! routed by the USERNAME of its first STUN request (`<our ufrag>:<their ufrag>`).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

use super::Routes;
use super::stun::{binding_request_ufrag, is_binding_success};

/// How long a new stream on the shared port may take to send its first STUN request.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(3);
/// Streams on the shared port still waiting for their first request; more are closed at once.
const MAX_UNIDENTIFIED: usize = 256;
/// Of those, from one address: one host cannot take every slot.
const MAX_UNIDENTIFIED_PER_ADDRESS: usize = 8;
/// Streams one connection holds (ICE-TCP needs one; a reconnect or a second path another).
const MAX_STREAMS_PER_CONNECTION: usize = 4;
/// Largest first frame accepted on the shared port (a STUN binding request is ~100 bytes).
const MAX_FIRST_FRAME: usize = 1500;
/// Streams routed to one connection and not yet accepted by it.
const ACCEPT_QUEUE: usize = 8;

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
    routes: Mutex<Routes<Route>>,
    unidentified: Arc<tokio::sync::Semaphore>,
    /// Unidentified streams by source address.
    waiting: Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// Where one peer connection takes its streams.
#[derive(Debug)]
struct Route {
    /// The address the connection believes it listens on (its candidate's address).
    local: SocketAddr,
    streams: mpsc::Sender<(Arc<dyn AsyncTcpStream>, SocketAddr)>,
    /// Where the newest stream this connection answered a check on came from (ICE knows it only
    /// as peer-reflexive).
    last_peer: Arc<Mutex<Option<SocketAddr>>>,
    /// Streams routed here and still open.
    open: Arc<std::sync::atomic::AtomicUsize>,
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
            waiting: Mutex::default(),
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
        self.inner.routes().live()
    }

    /// Where the newest stream for the connection with local username fragment `ufrag` came from.
    pub(crate) fn last_peer(&self, ufrag: &str) -> Option<SocketAddr> {
        let route = self.inner.routes().get(ufrag)?;
        *route.last_peer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over a listener the crate bound for one connection.
    pub(super) fn adopt(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let route = Arc::new(Route {
            local,
            streams: tx,
            last_peer: Arc::default(),
            open: Arc::default(),
            bound: Mutex::new(Some(listener)),
        });
        self.inner.routes().unclaimed.insert(local, Arc::downgrade(&route));
        Ok(Arc::new(RoutedListener { route, streams: tokio::sync::Mutex::new(rx) }))
    }

    /// Routes streams whose first request names `ufrag` to the connection listening on `bound`,
    /// releases that connection's own port, and returns the address to announce instead.
    pub(super) fn claim(&self, bound: SocketAddr, ufrag: &str) -> Option<SocketAddr> {
        let route = self.inner.routes().claim(bound, ufrag)?;
        route.bound.lock().unwrap_or_else(|e| e.into_inner()).take();
        Some(self.inner.announced)
    }
}

impl Shared {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes<Route>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Weak<Shared>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Look up now and then, so a port nobody holds any more stops listening.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if shared.strong_count() == 0 { return }
                continue;
            }
        };
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
        let Some(waiting) = Waiting::enter(&shared, peer.ip()) else {
            tracing::debug!(%peer, "ICE-TCP stream closed: too many streams from this address have not identified themselves");
            continue;
        };
        let Ok(permit) = shared.unidentified.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "ICE-TCP stream closed: too many streams have not identified themselves");
            continue;
        };
        tokio::spawn(async move {
            let routed = tokio::time::timeout(FIRST_REQUEST_WAIT, route_stream(&shared, stream, peer)).await;
            drop((permit, waiting));
            match routed {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => tracing::debug!(%peer, reason, "ICE-TCP stream closed"),
                Err(_) => tracing::debug!(%peer, "ICE-TCP stream closed: no STUN request in time"),
            }
        });
    }
}

/// One unidentified stream from an address, counted while it waits for its first request.
struct Waiting {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Waiting {
    fn enter(shared: &Arc<Shared>, ip: IpAddr) -> Option<Waiting> {
        let mut waiting = shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let count = waiting.entry(ip).or_default();
        if *count >= MAX_UNIDENTIFIED_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Waiting { shared: shared.clone(), ip })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = waiting.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.ip);
            }
        }
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
    let route = shared.routes().get(ufrag).ok_or("unknown ICE username")?;
    let opened = route.open.fetch_add(1, Ordering::AcqRel);
    let open = Opened(route.open.clone());
    if opened >= MAX_STREAMS_PER_CONNECTION {
        return Err("the connection holds as many streams as it may");
    }
    let (read, write) = stream.into_split();
    let routed = Routed { last_peer: route.last_peer.clone(), answered: AtomicBool::new(false), _open: open };
    let stream =
        Stream { read: tokio::sync::Mutex::new((first, read)), write, local: route.local, peer, routed: Some(routed) };
    route.streams.try_send((Arc::new(stream), peer)).map_err(|_| "the connection is not accepting")
}

/// A stream's place in its connection's count of open streams, given back when it closes.
#[derive(Debug)]
struct Opened(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a stream on the shared port reports to its connection.
#[derive(Debug)]
struct Routed {
    last_peer: Arc<Mutex<Option<SocketAddr>>>,
    /// Whether the connection answered a check on this stream yet.
    answered: AtomicBool,
    _open: Opened,
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
pub(super) struct NoListener {
    pub(super) local: SocketAddr,
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
pub(super) struct Stream {
    read: tokio::sync::Mutex<(Vec<u8>, OwnedReadHalf)>,
    write: OwnedWriteHalf,
    local: SocketAddr,
    peer: SocketAddr,
    /// For a stream on the shared port: its connection's bookkeeping.
    routed: Option<Routed>,
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
            // The connection answered a check here (the crate verified it first): this is where
            // its peer really is, for the session's record.
            if let Some(routed) = &self.routed
                && !routed.answered.load(Ordering::Relaxed)
                && buf.get(2..).is_some_and(is_binding_success)
            {
                routed.answered.store(true, Ordering::Relaxed);
                *routed.last_peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.peer);
            }
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

impl Stream {
    /// A stream the active side dialled: ICE knows it by the candidate's address (`local_ip`)
    /// and the remote candidate's (`peer`), not by the proxy's.
    pub(super) fn dialled(stream: tokio::net::TcpStream, local_ip: IpAddr, peer: SocketAddr) -> io::Result<Stream> {
        stream.set_nodelay(true)?;
        let local = SocketAddr::new(local_ip, stream.local_addr()?.port());
        let (read, write) = stream.into_split();
        Ok(Stream { read: tokio::sync::Mutex::new((Vec::new(), read)), write, local, peer, routed: None })
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::tests::binding_request;
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend(message);
        out
    }

    /// A port with one connection claimed as `ufrag`; its listener as the crate sees it.
    async fn port_with(ufrag: &str) -> (SharedTcpPort, Arc<dyn AsyncTcpListener>) {
        let port = SharedTcpPort::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own = bound.local_addr().unwrap();
        let listener = port.adopt(bound).unwrap();
        port.claim(own, ufrag).unwrap();
        (port, listener)
    }

    async fn closed_by_relay(stream: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn one_address_cannot_hold_every_unidentified_slot() {
        let (port, listener) = port_with("U").await;
        let mut idle = Vec::new();
        for _ in 0..MAX_UNIDENTIFIED_PER_ADDRESS {
            idle.push(tokio::net::TcpStream::connect(port.local_addr()).await.unwrap());
        }
        // The one past the limit is closed at once...
        let mut extra = tokio::net::TcpStream::connect(port.local_addr()).await.unwrap();
        assert!(closed_by_relay(&mut extra).await);
        // ...while the waiting ones still count: one of them identifies itself and is routed.
        idle[0].write_all(&framed(&binding_request(b"U:x"))).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        assert_eq!(accepted.1, idle[0].local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_connection_holds_a_bounded_number_of_streams() {
        let (port, listener) = port_with("U").await;
        let mut streams = Vec::new();
        for _ in 0..MAX_STREAMS_PER_CONNECTION {
            let mut s = tokio::net::TcpStream::connect(port.local_addr()).await.unwrap();
            s.write_all(&framed(&binding_request(b"U:x"))).await.unwrap();
            let (routed, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
            streams.push((s, routed));
        }
        let mut extra = tokio::net::TcpStream::connect(port.local_addr()).await.unwrap();
        extra.write_all(&framed(&binding_request(b"U:x"))).await.unwrap();
        assert!(closed_by_relay(&mut extra).await);
        // A stream that closes gives its place back.
        streams.pop();
        let mut again = tokio::net::TcpStream::connect(port.local_addr()).await.unwrap();
        again.write_all(&framed(&binding_request(b"U:x"))).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        assert_eq!(accepted.1, again.local_addr().unwrap());
    }
}
