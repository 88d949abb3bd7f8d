//! What both WebSocket endpoints share: reading typed messages from axum's socket, sending and
//! closing within a deadline, and the heartbeat.
//!
//! A peer can vanish without closing TCP (a frozen browser, a cut network, a power loss), and a
//! peer that stops reading fills its buffers. So the relay pings both kinds of socket every
//! `PING_EVERY` (2 s) and treats more than `SILENCE_LIMIT` (5 s) without any frame, pongs
//! included, as the peer gone; and a send that takes longer than `SEND_TIMEOUT` ends the socket.
//! Either way the socket's loop ends as if the peer had closed: an operator's session ends within
//! 10 s of their browser freezing, and an agent's as "agent lost" (`hub`). The agent keeps its
//! own, shorter watch on the relay (`sightline_agent::connection`); the viewer reconnects every
//! second and shows the relay's state. Every message is decoded by `sightline_proto::decode`
//! (size, version, strict fields); a bad one is answered with an error and the socket goes on.

use axum::extract::ws::Message;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use sightline_proto::{DecodeError, decode};

/// Reads the next text message. `None` when the socket closed; binary frames are errors. (axum
/// enforces the size limit and closes oversized sockets, which ends up as `None`.)
pub async fn next_message<T, S>(rx: &mut S) -> Option<Result<T, DecodeError>>
where
    T: DeserializeOwned + serde::Serialize,
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        match rx.next().await? {
            Ok(Message::Text(text)) => return Some(decode(&text)),
            Ok(Message::Binary(_)) => {
                return Some(Err(DecodeError::Malformed("binary frames are not part of the protocol".into())));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
        }
    }
}

/// How often the relay pings a socket's peer (browsers and agents answer pings by themselves).
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Silence after which the peer counts as gone (more than two ping intervals without a pong).
/// The operator's session ends within 10 s of their browser vanishing (R22): the last frame came
/// at most one interval before, and the silence is noticed at most one interval late.
pub const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// A send that takes longer than this means the peer stopped reading (its buffers are full).
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sends one frame, giving up after `SEND_TIMEOUT`; `false` when the peer is gone or stuck.
pub async fn send_within<S>(tx: &mut S, msg: Message) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    use futures_util::SinkExt;
    matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(msg)).await, Ok(Ok(())))
}

/// Closes the socket, giving up after `SEND_TIMEOUT` (a peer that stopped reading never acks).
pub async fn close_within<S>(tx: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    use futures_util::SinkExt;
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.close()).await;
}

/// When a peer was last heard from. A WebSocket whose far end vanished without closing TCP (a
/// frozen browser, a cut network, a suspended laptop) looks open for minutes; every frame it
/// sends, pongs included, counts as a sign of life, and silence beyond a limit ends it.
#[derive(Debug)]
pub struct Liveness {
    start: std::time::Instant,
    /// Milliseconds after `start` of the last frame; atomic so the stream adapter that records
    /// it and the loop that checks it can share it by reference.
    heard_ms: std::sync::atomic::AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { start: std::time::Instant::now(), heard_ms: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl Liveness {
    pub fn heard(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.heard_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn silent_for(&self) -> std::time::Duration {
        let heard = std::time::Duration::from_millis(self.heard_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.start.elapsed().saturating_sub(heard)
    }
}

/// The socket's ping clock. It judges silence only when the loop kept time: after the loop was
/// busy elsewhere (a slow send, media set-up), the peer's answers may be waiting unread, so that
/// beat only pings and the next one judges.
#[derive(Debug)]
pub struct Heartbeat {
    interval: tokio::time::Interval,
    last_beat: std::time::Instant,
}

impl Default for Heartbeat {
    fn default() -> Self {
        let mut interval = tokio::time::interval(PING_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Heartbeat { interval, last_beat: std::time::Instant::now() }
    }
}

impl Heartbeat {
    /// Waits for the next beat.
    pub async fn next(&mut self) {
        self.interval.tick().await;
    }

    /// Whether the peer has been silent too long, judged at this beat.
    pub fn peer_gone(&mut self, live: &Liveness) -> bool {
        let kept_time = self.last_beat.elapsed() < PING_EVERY + std::time::Duration::from_secs(1);
        self.last_beat = std::time::Instant::now();
        kept_time && live.silent_for() > SILENCE_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_measured_from_the_last_frame() {
        let live = Liveness::default();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let before = live.silent_for();
        assert!(before >= std::time::Duration::from_millis(30));
        live.heard();
        assert!(live.silent_for() < before);
    }
}
