//! The relay's one ICE-TCP port (RFC 6544, framed per RFC 4571), and the agent's dialled streams.
//!
//! The webrtc crate binds a listener per connection; [`SharedTcpPort::adopt`] takes it over and
//! holds it until the connection is claimed, then closes it. Each stream on the shared port is
//! routed by the USERNAME of its first STUN request (`<our ufrag>:<their ufrag>`).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

use super::Routes;
use super::stun::binding_request_ufrag;

/// How long a new stream on the shared port may take to send its first STUN request.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(10);
/// Streams on the shared port still waiting for their first request; more are closed at once.
const MAX_UNIDENTIFIED: usize = 256;
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
        let route =
            Arc::new(Route { local, streams: tx, last_peer: Mutex::new(None), bound: Mutex::new(Some(listener)) });
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
    let route = shared.routes().get(ufrag).ok_or("unknown ICE username")?;
    let (read, write) = stream.into_split();
    let stream = Stream { read: tokio::sync::Mutex::new((first, read)), write, local: route.local, peer };
    *route.last_peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(peer);
    route.streams.try_send((Arc::new(stream), peer)).map_err(|_| "the connection is not accepting")
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

impl Stream {
    /// A stream the active side dialled: ICE knows it by the candidate's address (`local_ip`)
    /// and the remote candidate's (`peer`), not by the proxy's.
    pub(super) fn dialled(stream: tokio::net::TcpStream, local_ip: IpAddr, peer: SocketAddr) -> io::Result<Stream> {
        stream.set_nodelay(true)?;
        let local = SocketAddr::new(local_ip, stream.local_addr()?.port());
        let (read, write) = stream.into_split();
        Ok(Stream { read: tokio::sync::Mutex::new((Vec::new(), read)), write, local, peer })
    }
}
