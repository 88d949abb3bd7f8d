//! Connection discipline (issue 13): how many sockets one address and everyone together may hold,
//! and how long a client may take to send a request's headers.
//!
//! A permit is taken right after the TCP accept, before any TLS handshake or HTTP parsing, and
//! travels inside the connection's IO (`Limited`), so it is given back whenever the connection
//! ends, however it ends. A connection over a cap is closed at once, unread.
//!
//! Nor can a connection hold its permit by doing nothing: `Limited` closes one that sends no
//! byte within the header timeout of its accept (hyper's own header timeout only starts at a
//! request's first byte), and one on which nothing moves either way for the idle timeout (a
//! WebSocket is never that quiet: both sides ping every 2 s). A slowloris client, which sends a
//! byte now and then, is closed by hyper's header read timeout.
//!
//! The caps and timeouts are flags: `--max-connections-per-address` (256), `--max-connections`
//! (4096), `--header-timeout-s` (10) and `--idle-timeout-s` (60). The HTTP loop is the server's
//! own (hyper-util, HTTP/1 only), because `axum::serve` has no header read timeout; `bind`
//! listens with a backlog of `LISTEN_BACKLOG`. The caps count the TCP peer's address, so everyone
//! behind one NAT or reverse proxy shares one budget.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The caps, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_address: usize,
    pub total: usize,
    /// How long after its accept a connection may stay silent.
    pub first_byte: Duration,
    /// How long nothing may move on a connection, either way.
    pub idle: Duration,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    refused: u64,
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Address,
    Total,
}

/// The live connection counts of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    caps: Caps,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it gives the slot back.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnectionLimits>,
    address: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limits.lock();
        c.total -= 1;
        if let Some(n) = c.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.address);
            }
        }
    }
}

impl ConnectionLimits {
    pub fn new(caps: Caps) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits { caps, counts: Mutex::new(Counts::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `address`, or says which cap it is over.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Permit, Refusal> {
        let mut c = self.lock();
        let from_here = c.per_address.get(&address).copied().unwrap_or(0);
        let refusal = if c.total >= self.caps.total {
            Some(Refusal::Total)
        } else if from_here >= self.caps.per_address {
            Some(Refusal::Address)
        } else {
            None
        };
        if let Some(r) = refusal {
            c.refused += 1;
            return Err(r);
        }
        c.total += 1;
        c.per_address.insert(address, from_here + 1);
        Ok(Permit { limits: self.clone(), address })
    }

    /// Open connections now, and connections refused since start.
    pub fn stats(&self) -> (usize, u64) {
        let c = self.lock();
        (c.total, c.refused)
    }
}

/// A connection's IO carrying its permit and its deadline.
pub struct Limited<S> {
    inner: S,
    permit: Permit,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, permit: Permit) -> Self {
        let first = Instant::now() + permit.limits.caps.first_byte;
        Limited { inner, permit, deadline: Box::pin(tokio::time::sleep_until(first)) }
    }

    /// Something moved: the connection has the idle timeout again.
    fn progressed(&mut self) {
        let idle = self.permit.limits.caps.idle;
        self.deadline.as_mut().reset(Instant::now() + idle);
    }

    /// While the IO waits: whether the connection's time is up (and if not, wake us when it is).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection silent past its deadline")
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.progressed();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.progressed();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How many finished handshakes the kernel may hold for the relay to accept. The usual default
/// (128, which tokio and std use) overflows when a burst of connections arrives together: the
/// kernel then drops handshakes or, with SYN cookies, lets clients believe they are connected
/// to a socket the relay never sees. Capped by the kernel's `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the relay's listening socket with `LISTEN_BACKLOG`.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts TCP connections within the caps: the next admitted one, with its permit inside.
/// Connections over a cap are closed here, before anything reads them.
pub async fn accept_limited(
    listener: &tokio::net::TcpListener,
    limits: &Arc<ConnectionLimits>,
) -> (Limited<tokio::net::TcpStream>, SocketAddr) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        match limits.admit(peer.ip()) {
            Ok(permit) => return (Limited::new(tcp, permit), peer),
            Err(refusal) => {
                crate::metrics::connection_refused(match refusal {
                    Refusal::Address => "per_address",
                    Refusal::Total => "total",
                });
                let (open, refused) = limits.stats();
                // Logged sparsely: a flood must not become a flood of log lines.
                if refused.is_power_of_two() {
                    tracing::warn!(%peer, ?refusal, open, refused, "connection over the cap closed");
                }
                drop(tcp);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(per_address: usize, total: usize) -> Caps {
        Caps { per_address, total, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn caps_per_address_and_in_total_and_permits_give_slots_back() {
        let limits = ConnectionLimits::new(caps(2, 3));
        let a1 = limits.admit(ip(1)).unwrap();
        let _a2 = limits.admit(ip(1)).unwrap();
        assert_eq!(limits.admit(ip(1)).unwrap_err(), Refusal::Address);
        let b1 = limits.admit(ip(2)).unwrap();
        // The total is reached: another address is refused too.
        assert_eq!(limits.admit(ip(3)).unwrap_err(), Refusal::Total);
        assert_eq!(limits.stats(), (3, 2));
        drop(b1);
        assert!(limits.admit(ip(3)).is_ok());
        drop(a1);
        let _again = limits.admit(ip(1)).unwrap();
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_unread_and_a_closed_one_frees_its_slot() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits::new(caps(1, 10));
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (held, _) = accept_limited(&listener, &limits).await;
        // Over the cap: the server side closes it, so the client reads end-of-stream.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepting = tokio::spawn({
            let limits = limits.clone();
            async move { accept_limited(&listener, &limits).await }
        });
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert_eq!(limits.stats(), (1, 1));
        // Control: once the first connection ends, the next one is admitted.
        drop(held);
        drop(first);
        let _third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_admitted, _) = tokio::time::timeout(std::time::Duration::from_secs(5), accepting).await.unwrap().unwrap();
        assert_eq!(limits.stats().0, 1);
    }

    #[tokio::test]
    async fn a_silent_connection_times_out_and_one_that_talks_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ConnectionLimits::new(Caps {
            per_address: 10,
            total: 10,
            first_byte: Duration::from_millis(200),
            idle: Duration::from_secs(2),
        });
        let (mut silent_client, silent_server) = tokio::io::duplex(64);
        let (mut talking_client, talking_server) = tokio::io::duplex(64);
        let mut silent = Limited::new(silent_server, limits.admit(ip(1)).unwrap());
        let mut talking = Limited::new(talking_server, limits.admit(ip(1)).unwrap());
        let mut buf = [0u8; 8];
        // The talker sends at once, then every 300 ms for longer than the silent one's deadline
        // and the idle timeout together: it is never cut.
        talking_client.write_all(b"GET").await.unwrap();
        assert_eq!(talking.read(&mut buf).await.unwrap(), 3);
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            talking_client.write_all(b"x").await.unwrap();
            assert_eq!(talking.read(&mut buf).await.unwrap(), 1);
        }
        // The silent one's first-byte deadline passed long ago.
        let err = silent.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        // And the talker falls silent: closed after the idle timeout.
        let err = talking.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(silent_client.write_all(b"late").await);
        drop(silent);
        drop(talking);
        assert_eq!(limits.stats().0, 0);
    }
}
