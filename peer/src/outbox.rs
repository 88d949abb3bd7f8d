//! Messages for a data channel that may not be open yet.
//!
//! A data channel opens some time after the media flows (SCTP and DCEP come up after DTLS), and
//! the channel a side writes to can be replaced (a new publication) or missing for a moment. A
//! message sent then used to be dropped silently. An [`Outbox`] keeps messages in order and
//! bounded (in number, and each in time); one writer task delivers them as soon as a channel is
//! installed and open, and tells each sender whether its message went out.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::DataChannel;

/// Why a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undelivered {
    #[error("too many messages are waiting for the channel")]
    Full,
    #[error("no open channel within the time the message may wait")]
    TimedOut,
    #[error("the connection is gone")]
    Gone,
}

/// Called once per message, in the order the messages were queued.
pub type OnDelivery = Box<dyn FnOnce(Result<(), Undelivered>) + Send>;

struct Outgoing {
    text: String,
    deadline: Instant,
    on_delivery: OnDelivery,
}

/// An ordered, bounded queue in front of a data channel.
pub struct Outbox {
    queue: mpsc::Sender<Outgoing>,
    channel: watch::Sender<Option<DataChannel>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

/// How often a message retries a channel that exists but is not open yet (the webrtc crate
/// refuses sends until then and has no open event for a channel whose events another task reads).
const RETRY_EVERY: Duration = Duration::from_millis(20);

impl Outbox {
    /// An outbox holding at most `capacity` waiting messages; spawns its writer on the current
    /// tokio runtime. The writer ends when the outbox is dropped.
    pub fn new(capacity: usize) -> Outbox {
        let (queue, rx) = mpsc::channel(capacity);
        let (channel, channel_rx) = watch::channel(None);
        tokio::spawn(write(rx, channel_rx));
        Outbox { queue, channel }
    }

    /// Installs (or removes) the channel messages go to.
    pub fn set_channel(&self, channel: Option<DataChannel>) {
        self.channel.send_replace(channel);
    }

    /// The channel installed now.
    pub fn channel(&self) -> Option<DataChannel> {
        self.channel.borrow().clone()
    }

    /// Queues `text`; it waits at most `wait` for an open channel. `on_delivery` learns the
    /// outcome (at once when the queue is full).
    pub fn send(&self, text: String, wait: Duration, on_delivery: OnDelivery) {
        let item = Outgoing { text, deadline: Instant::now() + wait, on_delivery };
        if let Err(e) = self.queue.try_send(item) {
            let (mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item)) = e;
            (item.on_delivery)(Err(Undelivered::Full));
        }
    }
}

async fn write(mut queue: mpsc::Receiver<Outgoing>, mut channel: watch::Receiver<Option<DataChannel>>) {
    while let Some(item) = queue.recv().await {
        let result = deliver(&mut channel, &item.text, item.deadline).await;
        (item.on_delivery)(result);
    }
}

async fn deliver(
    channel: &mut watch::Receiver<Option<DataChannel>>,
    text: &str,
    deadline: Instant,
) -> Result<(), Undelivered> {
    loop {
        if Instant::now() >= deadline {
            // Waited behind earlier messages past its own time: late input must not be
            // injected, and a late line is reported rather than sent out of its moment.
            return Err(Undelivered::TimedOut);
        }
        let current = channel.borrow_and_update().clone();
        if let Some(current) = &current {
            match current.send(text).await {
                Ok(()) => return Ok(()),
                // Not open yet, or closing: wait for it to open or be replaced.
                Err(e) => tracing::trace!(error = %e, "data channel not ready; message waits"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Err(Undelivered::TimedOut),
            changed = channel.changed() => if changed.is_err() { return Err(Undelivered::Gone) },
            _ = tokio::time::sleep(RETRY_EVERY), if current.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, Result<(), Undelivered>)>>>;

    fn recorder() -> (Seen, impl Fn(&str) -> OnDelivery) {
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let for_closure = seen.clone();
        let make = move |label: &str| -> OnDelivery {
            let seen = for_closure.clone();
            let label = label.to_owned();
            Box::new(move |r| seen.lock().unwrap().push((label, r)))
        };
        (seen, make)
    }

    async fn until(seen: &Seen, n: usize) {
        while seen.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn without_a_channel_messages_wait_their_time_then_fail_in_order() {
        let outbox = Outbox::new(4);
        let (seen, on) = recorder();
        let start = std::time::Instant::now();
        outbox.send("a".into(), Duration::from_millis(150), on("a"));
        outbox.send("b".into(), Duration::from_millis(100), on("b"));
        until(&seen, 2).await;
        assert!(start.elapsed() >= Duration::from_millis(150), "a waited its full time");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("a".into(), Err(Undelivered::TimedOut)), ("b".into(), Err(Undelivered::TimedOut))]
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let outbox = Outbox::new(1);
        let (seen, on) = recorder();
        // The writer takes the first one off the queue; the second fills it; the third is refused.
        outbox.send("1".into(), Duration::from_secs(10), on("1"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.send("2".into(), Duration::from_secs(10), on("2"));
        outbox.send("3".into(), Duration::from_secs(10), on("3"));
        assert_eq!(*seen.lock().unwrap(), vec![("3".into(), Err(Undelivered::Full))]);
    }

    #[tokio::test]
    async fn dropping_the_outbox_ends_waiting_messages() {
        let outbox = Outbox::new(4);
        let (seen, on) = recorder();
        outbox.send("a".into(), Duration::from_secs(10), on("a"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(outbox);
        until(&seen, 1).await;
        assert_eq!(*seen.lock().unwrap(), vec![("a".into(), Err(Undelivered::Gone))]);
    }
}
