//! The Redis backend: state shared by several relay nodes.
//!
//! Durable collections are hashes, ephemeral records are plain keys with a TTL, and events go
//! out on one pub/sub channel that every node subscribes to. Atomic read-modify-write steps
//! (compare-and-swap, take) run as Lua scripts so two nodes cannot both win.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tokio::sync::broadcast;

use super::{Backend, Collection, StoreError};

/// Every key this relay writes, in one place.
pub mod keys {
    use super::Collection;

    /// Prefix of all keys, so a shared Redis can host other applications.
    pub const PREFIX: &str = "sightline";
    /// Channel carrying events between relay nodes (revocations, device revocations).
    pub const EVENTS_CHANNEL: &str = "sightline:events";

    /// Hash holding one durable collection: `sightline:{collection}`, field = record key.
    pub fn collection(coll: Collection) -> String {
        format!("{PREFIX}:{}", coll.name())
    }

    /// String key of an ephemeral record with a TTL: `sightline:eph:{key}`.
    pub fn ephemeral(key: &str) -> String {
        format!("{PREFIX}:eph:{key}")
    }
}

const EVENT_BUFFER: usize = 1024;

const COMPARE_AND_SWAP: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '1' then
  if current ~= ARGV[3] then return 0 end
else
  if current then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 1
";

const TAKE: &str = r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then redis.call('HDEL', KEYS[1], ARGV[1]) end
return value
";

fn err(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(format!("redis: {e}"))
    } else {
        StoreError::Io(format!("redis: {e}"))
    }
}

pub struct RedisBackend {
    conn: ConnectionManager,
    events: broadcast::Sender<Vec<u8>>,
    subscriber: tokio::task::JoinHandle<()>,
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisBackend {
    /// Connects to `url` (redis://host:port/db) and starts following the event channel.
    pub async fn connect(url: &str) -> Result<RedisBackend, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("invalid redis URL {url}: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client.get_connection_manager_with_config(config).await.map_err(err)?;
        let events = broadcast::channel(EVENT_BUFFER).0;
        let subscriber = tokio::spawn(follow_events(client, events.clone()));
        Ok(RedisBackend { conn, events, subscriber })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// Forwards the event channel into the local broadcast, resubscribing after a lost connection.
/// Events published while the subscription is down are missed; consumers therefore never rely on
/// events alone for security decisions (sessions are re-checked against the store).
async fn follow_events(client: redis::Client, events: broadcast::Sender<Vec<u8>>) {
    use futures_util::StreamExt;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if let Err(e) = pubsub.subscribe(keys::EVENTS_CHANNEL).await {
                    tracing::warn!(error = %e, "cannot subscribe to relay events");
                } else {
                    let mut stream = pubsub.on_message();
                    while let Some(msg) = stream.next().await {
                        let _ = events.send(msg.get_payload_bytes().to_vec());
                    }
                    tracing::warn!("relay event subscription lost; resubscribing");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach redis for relay events"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn().hget(keys::collection(coll), key).await.map_err(err)
    }

    async fn put(&self, coll: Collection, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn().hset::<_, _, _, ()>(keys::collection(coll), key, value).await.map_err(err)
    }

    async fn insert_new(&self, coll: Collection, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.conn().hset_nx(keys::collection(coll), key, value).await.map_err(err)
    }

    async fn compare_and_swap(
        &self,
        coll: Collection,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let swapped: i64 = redis::Script::new(COMPARE_AND_SWAP)
            .key(keys::collection(coll))
            .arg(key)
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .invoke_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(swapped == 1)
    }

    async fn take(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        redis::Script::new(TAKE).key(keys::collection(coll)).arg(key).invoke_async(&mut self.conn()).await.map_err(err)
    }

    async fn delete(&self, coll: Collection, key: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.conn().hdel(keys::collection(coll), key).await.map_err(err)?;
        Ok(removed > 0)
    }

    async fn list(&self, coll: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let map: std::collections::HashMap<String, Vec<u8>> =
            self.conn().hgetall(keys::collection(coll)).await.map_err(err)?;
        Ok(map.into_iter().collect())
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        self.conn().pset_ex::<_, _, ()>(keys::ephemeral(key), value, ms).await.map_err(err)
    }

    async fn replace_lasting(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let ms = ttl.as_millis().max(1) as u64;
        // SET ... XX: only an existing key, in one step.
        let set: Option<String> = redis::cmd("SET")
            .arg(keys::ephemeral(key))
            .arg(value)
            .arg("PX")
            .arg(ms)
            .arg("XX")
            .query_async(&mut self.conn())
            .await
            .map_err(err)?;
        Ok(set.is_some())
    }

    async fn get_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn().get(keys::ephemeral(key)).await.map_err(err)
    }

    async fn take_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn().get_del(keys::ephemeral(key)).await.map_err(err)
    }

    async fn publish(&self, event: &[u8]) -> Result<(), StoreError> {
        self.conn().publish::<_, _, i64>(keys::EVENTS_CHANNEL, event).await.map_err(err)?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Vec<u8>> {
        self.events.subscribe()
    }
}
