//! The second copy of a node's audit log in Redis (R43): a stream per node,
//! `sightline:audit:{node}`, one entry per record with the record's sequence number as its id
//! (`{seq}-1`) and its canonical bytes as the field `r`. The node's writer thread appends each
//! group commit here before it acknowledges anything (blocking calls, on that thread), and
//! `relay audit recover` reads it back when the node's disk is gone.
//!
//! How durable the copy is depends on the Redis server: with `appendonly yes` and
//! `appendfsync always` an entry is on Redis's disk before Redis answers; with replicas,
//! `WAIT` waits for them too (`--audit-copy-replicas`). `settings` reports what the server says,
//! for the node's start record.

use std::time::Duration;

use crate::StoreError;

/// Redis key of a node's copy.
pub fn key(node: &str) -> String {
    format!("{}:audit:{node}", crate::redis::keys::PREFIX)
}

/// The append, on the server: the stream must hold exactly records 0 to `held - 1`, and the
/// batch may not start after `held`; records it holds already are skipped; the fence is set
/// last. KEYS: stream, fence. ARGV: first sequence number, then the records.
const APPEND: &str = r"
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local held = 0
if #newest > 0 then
  local seq = string.match(newest[1][1], '^(%d+)%-1$')
  if not seq then return redis.error_reply('the copy holds an entry that is not an audit record: ' .. newest[1][1]) end
  held = tonumber(seq) + 1
end
local len = redis.call('XLEN', KEYS[1])
if len ~= held then
  return redis.error_reply('the copy holds ' .. len .. ' records under numbers up to ' .. (held - 1) .. ': records are missing from it')
end
local first = tonumber(ARGV[1])
if first > held then
  return redis.error_reply('the copy holds ' .. held .. ' records, and ' .. first .. ' was to come next: it lost records')
end
for i = 2, #ARGV do
  local seq = first + i - 2
  if seq >= held then
    redis.call('XADD', KEYS[1], string.format('%d-1', seq), 'r', ARGV[i])
  end
end
redis.call('SET', KEYS[2], first + #ARGV - 1)
return held
";

/// A stream entry as Redis returns it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// How long one call may take before the copy counts as failing.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `WAIT` waits for the replicas: well within `CALL_TIMEOUT`, so a shortfall is an
/// answer (and an error), not a timed-out socket.
const WAIT_MS: u64 = 1_000;
/// Entries read per round trip when reading the copy back.
const PAGE: usize = 1000;

fn err(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// One node's copy, through a blocking connection (made again after an error).
pub struct AuditCopy {
    client: redis::Client,
    conn: Option<redis::Connection>,
    key: String,
    /// Replicas `WAIT` asks for after each append (0: none).
    replicas: u32,
}

impl AuditCopy {
    pub fn open(url: &str, node: &str, replicas: u32) -> Result<AuditCopy, StoreError> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("invalid redis URL {url}: {e}")))?;
        Ok(AuditCopy { client, conn: None, key: key(node), replicas })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(CALL_TIMEOUT).map_err(err)?;
            conn.set_read_timeout(Some(CALL_TIMEOUT)).map_err(err)?;
            conn.set_write_timeout(Some(CALL_TIMEOUT)).map_err(err)?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }

    /// Runs `call` on the connection; an error drops the connection, so the next call makes a
    /// fresh one.
    fn with<T>(
        &mut self,
        call: impl FnOnce(&mut redis::Connection, &str) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let key = self.key.clone();
        let result = call(self.conn()?, &key);
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(err)
    }

    /// The sequence number of the newest record in the copy; an error when the copy does not
    /// hold every record up to it (entries deleted from the stream).
    pub fn last_seq(&mut self) -> Result<Option<u64>, StoreError> {
        let (newest, len): (Vec<StreamEntry>, u64) = self.with(|c, key| {
            redis::pipe().cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).cmd("XLEN").arg(key).query(c)
        })?;
        let last = newest.first().map(|(id, _)| seq_of(id)).transpose()?;
        let expected = last.map_or(Some(0), |l| l.checked_add(1));
        if expected != Some(len) {
            return Err(StoreError::Corrupt {
                collection: "audit",
                key: self.key.clone(),
                detail: format!(
                    "the copy holds {len} records under numbers up to {last:?}: records are missing from it"
                ),
            });
        }
        Ok(last)
    }

    /// The record the copy holds under `seq`.
    pub fn record(&mut self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let id = format!("{seq}-1");
        let found: Vec<StreamEntry> = self.with(|c, key| redis::cmd("XRANGE").arg(key).arg(&id).arg(&id).query(c))?;
        Ok(found.into_iter().next().and_then(|(_, fields)| fields.into_iter().find(|(f, _)| f == "r").map(|(_, v)| v)))
    }

    /// Appends `records`, consecutive from `first_seq`; those the copy holds already are skipped.
    /// Checked and written in one script on the server, so a stream that lost records since
    /// the last call (deleted, evicted, a Redis restarted without its disk) is refused, never
    /// appended to with a hole.
    pub fn append(&mut self, first_seq: u64, records: &[Vec<u8>]) -> Result<(), StoreError> {
        let replicas = self.replicas;
        self.with(|c, key| {
            let script = redis::Script::new(APPEND);
            let mut call = script.key(key);
            call.key(format!("{key}:fence")).arg(first_seq);
            for record in records {
                call.arg(record.as_slice());
            }
            call.invoke::<u64>(c)?;
            // `WAIT` counts this connection's writes only: the script writes the fence on this
            // connection every time, so a retry after a reconnection still waits for the
            // replicas to hold the records.
            if replicas > 0 {
                let acked: u32 = redis::cmd("WAIT").arg(replicas).arg(WAIT_MS).query(c)?;
                if acked < replicas {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "fewer Redis replicas than required acknowledged the copy",
                        format!("{acked} of {replicas}"),
                    )));
                }
            }
            Ok(())
        })
    }

    /// Every record of the copy, in order, with its sequence number.
    pub fn read_all(&mut self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut from = "-".to_owned();
        loop {
            let page: Vec<StreamEntry> =
                self.with(|c, key| redis::cmd("XRANGE").arg(key).arg(&from).arg("+").arg("COUNT").arg(PAGE).query(c))?;
            let n = page.len();
            for (id, fields) in page {
                let seq = seq_of(&id)?;
                let record =
                    fields.into_iter().find(|(f, _)| f == "r").map(|(_, v)| v).ok_or_else(|| StoreError::Corrupt {
                        collection: "audit",
                        key: format!("{}/{id}", self.key),
                        detail: "no record field".into(),
                    })?;
                from = format!("({id}");
                out.push((seq, record));
            }
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    /// What the server says about its own durability: `appendonly`, `appendfsync`, and the
    /// replicas it has (`CONFIG` may be renamed away on a hardened server: then "unknown").
    pub fn settings(&mut self) -> String {
        let config = |name: &str, this: &mut AuditCopy| -> String {
            this.with(|c, _| redis::cmd("CONFIG").arg("GET").arg(name).query::<Vec<String>>(c))
                .ok()
                .and_then(|v| v.get(1).cloned())
                .unwrap_or_else(|| "unknown".into())
        };
        let appendonly = config("appendonly", self);
        let appendfsync = config("appendfsync", self);
        format!("appendonly {appendonly}, appendfsync {appendfsync}, WAIT for {} replicas", self.replicas)
    }
}

fn seq_of(id: &str) -> Result<u64, StoreError> {
    id.strip_suffix("-1").and_then(|s| s.parse().ok()).ok_or_else(|| StoreError::Corrupt {
        collection: "audit",
        key: id.to_owned(),
        detail: "not an audit record id".into(),
    })
}
