//! The embedded backend: one relay node, no server to run.
//!
//! Durable collections live in a redb file (`state.redb` in the data directory). redb is a
//! pure-Rust, ACID, single-file key-value store with a stable format and an active maintainer; it
//! needs no C library and no separate process, which is what a relay that must "just start" on a
//! bank's server wants. Its calls block, so they run on tokio's blocking pool. Ephemeral records
//! live in memory and vanish with the process, which is what ceremony state and presence should
//! do; lasting ones (login sessions and their revocations, `put_lasting`) are also written to the
//! `lasting` table with their expiry as a wall-clock time, and read back at start, so a restart
//! signs nobody out and brings back no session that was revoked or had ended.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use super::{Backend, Collection, StoreError};

/// Events buffered for slow subscribers before they start missing some.
const EVENT_BUFFER: usize = 1024;
/// Most ephemeral records held at once: anonymous callers create some (login ceremonies), so
/// memory is bounded; beyond it new ones are refused rather than the process growing.
const MAX_EPHEMERAL: usize = 100_000;
/// Expired records are swept every this many insertions (amortised, never per request).
const SWEEP_EVERY: u64 = 1024;

/// Lasting ephemeral records: the key, and the expiry (Unix ms, 8 bytes big-endian) then the value.
const LASTING: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("lasting_ephemeral");

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One ephemeral record in memory: the value, when it expires, and whether the `lasting` table
/// holds it too.
struct Held {
    value: Vec<u8>,
    expires: Instant,
    lasting: bool,
}

fn table(coll: Collection) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(coll.name())
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub struct Embedded {
    db: Arc<Database>,
    ephemeral: Mutex<HashMap<String, Held>>,
    /// Serialises every change of a lasting record: its row and its copy in memory change
    /// together, and a logout's take is never undone by an activity noted at the same time.
    lasting: tokio::sync::Mutex<()>,
    inserts: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Vec<u8>>,
}

impl Embedded {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("cannot create data directory {}: {e}", dir.display())))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.display())))?;
        // Create every table up front: reading a table that was never written is an error in redb.
        let tx = db.begin_write().map_err(io)?;
        for coll in Collection::ALL {
            tx.open_table(table(coll)).map_err(io)?;
        }
        // The lasting records still valid come back into memory; expired ones are dropped here.
        let mut held = HashMap::new();
        {
            let mut lasting = tx.open_table(LASTING).map_err(io)?;
            let (now_ms, now) = (now_unix_ms(), Instant::now());
            let mut expired = Vec::new();
            for row in lasting.iter().map_err(io)? {
                let (key, stored) = row.map_err(io)?;
                let stored = stored.value();
                let expires_ms = stored.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
                match expires_ms {
                    Some(at) if at > now_ms => {
                        let value = stored[8..].to_vec();
                        let expires = now + Duration::from_millis(at - now_ms);
                        held.insert(key.value().to_owned(), Held { value, expires, lasting: true });
                    }
                    _ => expired.push(key.value().to_owned()),
                }
            }
            for key in expired {
                lasting.remove(key.as_str()).map_err(io)?;
            }
        }
        tx.commit().map_err(io)?;
        Ok(Embedded {
            db: Arc::new(db),
            ephemeral: Mutex::new(held),
            lasting: tokio::sync::Mutex::new(()),
            inserts: 0.into(),
            events: broadcast::channel(EVENT_BUFFER).0,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(io)?.map_err(io)
    }

    fn ephemeral_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.ephemeral.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `value` under `key` in memory until `ttl` has passed, within the bound.
    fn hold(&self, key: &str, value: &[u8], ttl: Duration, lasting: bool) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut map = self.ephemeral_map();
        let n = self.inserts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(SWEEP_EVERY) || map.len() >= MAX_EPHEMERAL {
            map.retain(|_, held| held.expires > now);
        }
        if map.len() >= MAX_EPHEMERAL && !map.contains_key(key) {
            return Err(StoreError::Unavailable("too many pending ephemeral records".into()));
        }
        map.insert(key.to_owned(), Held { value: value.to_vec(), expires: now + ttl, lasting });
        Ok(())
    }

    /// `put_lasting` under the lasting lock: the row, then the copy in memory. A record memory
    /// cannot hold (the bound) is taken off the disk again, so the two never disagree.
    async fn put_lasting_locked(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let expires_ms = now_unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut stored = expires_ms.to_be_bytes().to_vec();
        stored.extend_from_slice(value);
        self.write_lasting(key, Some(stored)).await?;
        if let Err(e) = self.hold(key, value, ttl, true) {
            self.write_lasting(key, None).await?;
            return Err(e);
        }
        if self.inserts.load(std::sync::atomic::Ordering::Relaxed).is_multiple_of(SWEEP_EVERY) {
            self.sweep_lasting().await?;
        }
        Ok(())
    }

    /// Drops the rows of lasting records that expired (also done at every start).
    async fn sweep_lasting(&self) -> Result<(), StoreError> {
        let now_ms = now_unix_ms();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(LASTING)?;
                t.retain(|_, stored| {
                    stored
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes)
                        .is_some_and(|at| at > now_ms)
                })?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Writes or removes a lasting record in the `lasting` table.
    async fn write_lasting(&self, key: &str, stored: Option<Vec<u8>>) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut t = tx.open_table(LASTING)?;
                match &stored {
                    Some(stored) => {
                        t.insert(key.as_str(), stored.as_slice())?;
                    }
                    None => {
                        t.remove(key.as_str())?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(table(coll))?;
            Ok(t.get(key.as_str())?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put(&self, coll: Collection, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(table(coll))?.insert(key.as_str(), value.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn insert_new(&self, coll: Collection, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        self.compare_and_swap(coll, key, None, value).await
    }

    async fn compare_and_swap(
        &self,
        coll: Collection,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let (key, expected, new) = (key.to_owned(), expected.map(<[u8]>::to_vec), new.to_vec());
        self.blocking(move |db| {
            // One write transaction at a time: the read and the write below are atomic together.
            let tx = db.begin_write()?;
            let swapped = {
                let mut t = tx.open_table(table(coll))?;
                let current = t.get(key.as_str())?.map(|v| v.value().to_vec());
                if current == expected {
                    t.insert(key.as_str(), new.as_slice())?;
                    true
                } else {
                    false
                }
            };
            if swapped {
                tx.commit()?;
            } else {
                tx.abort()?;
            }
            Ok(swapped)
        })
        .await
    }

    async fn take(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let value = tx.open_table(table(coll))?.remove(key.as_str())?.map(|v| v.value().to_vec());
            tx.commit()?;
            Ok(value)
        })
        .await
    }

    async fn delete(&self, coll: Collection, key: &str) -> Result<bool, StoreError> {
        Ok(self.take(coll, key).await?.is_some())
    }

    async fn list(&self, coll: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(table(coll))?;
            let mut rows = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                rows.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(rows)
        })
        .await
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let was_lasting = self.ephemeral_map().get(key).is_some_and(|held| held.lasting);
        if was_lasting {
            // Not lasting any more: the table must not bring the old value back at start.
            let _changing = self.lasting.lock().await;
            self.write_lasting(key, None).await?;
            return self.hold(key, value, ttl, false);
        }
        self.hold(key, value, ttl, false)
    }

    /// On disk first: a record acknowledged as lasting is there after a crash.
    async fn put_lasting(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let _changing = self.lasting.lock().await;
        self.put_lasting_locked(key, value, ttl).await
    }

    async fn replace_lasting(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let _changing = self.lasting.lock().await;
        let present = self.ephemeral_map().get(key).is_some_and(|held| held.expires > Instant::now());
        if present {
            self.put_lasting_locked(key, value, ttl).await?;
        }
        Ok(present)
    }

    async fn get_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let map = self.ephemeral_map();
        Ok(map.get(key).filter(|held| held.expires > Instant::now()).map(|held| held.value.clone()))
    }

    /// A lasting record is gone from the disk before it is handed out: taken once, also across
    /// a restart.
    async fn take_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let lasting = self.ephemeral_map().get(key).is_some_and(|held| held.lasting);
        let _changing = if lasting { Some(self.lasting.lock().await) } else { None };
        if lasting {
            self.write_lasting(key, None).await?;
        }
        let mut map = self.ephemeral_map();
        Ok(map.remove(key).filter(|held| held.expires > Instant::now()).map(|held| held.value))
    }

    async fn publish(&self, event: &[u8]) -> Result<(), StoreError> {
        // Nobody listening is fine.
        let _ = self.events.send(event.to_vec());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Vec<u8>> {
        self.events.subscribe()
    }
}
