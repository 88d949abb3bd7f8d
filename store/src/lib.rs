//! Sightline's shared state: users, credentials, devices, tokens, windows, help requests, the
//! recordings index, ephemeral records with TTLs, and an event channel between nodes.
//!
//! One interface, two backends that pass the same contract tests: `embedded` (the default:
//! durable records in a redb file in the data directory, ephemeral records in memory with TTLs,
//! events on an in-process channel) and `redis` (several relay nodes share everything; events
//! travel on a pub/sub channel so a revocation on one node takes effect on all). Only this crate
//! knows Redis and redb.
//!
//! The backends store bytes; `Store` adds typed, JSON-encoded records on top, with an optimistic
//! `update` (read, change, compare-and-swap, retry), so both backends share one serialisation and
//! the contract tests (`contract`) cover the typed layer too. Refuses to know what the records
//! mean: identities, sessions and recordings are their owners' types.
//!
//! Failure is explicit: every operation returns `StoreError` (a dead Redis, a full disk), and
//! callers making security decisions treat an error as "no".

pub mod audit_copy;
pub mod embedded;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// Durable collections. The Redis key of each is documented in `redis::keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// User accounts with roles and passkeys, by user id.
    Users,
    /// User name -> user id (names are unique).
    UserNames,
    /// Pending role changes awaiting a second admin, by request id.
    RoleRequests,
    /// Enrolled agents (device public keys), by device id.
    Devices,
    /// One-time enrolment tokens (admin bootstrap, user invitations, agent enrolment), by token hash.
    EnrolmentTokens,
    /// JWT signing keys, by key id.
    SigningKeys,
    /// Failed-login state per account and per source address.
    Lockouts,
    /// Cross-node mutexes (holder, since): decisions that must not interleave.
    Mutexes,
    /// Maintenance windows per device (R3), by device id.
    MaintenanceWindows,
    /// The recordings of every node (metadata for search, R30), by recording id.
    Recordings,
    /// Open help requests (R2), by their one-time code.
    HelpRequests,
    /// The newest audit checkpoint each node signed (its signed note), by node name: published
    /// where the node cannot take it back, so a log cut back or rewritten is refused at start.
    Checkpoints,
    /// Directory identities (SHA-256 of issuer and subject) -> user id (R12): one account each.
    DirectoryIdentities,
    /// Every login session by its public id (ASVS 7.5.2: people list and end their own), with
    /// its owner; the session itself is the short-lived `session:` record.
    LoginSessions,
    /// Passkey resets of directory accounts awaiting a second admin, by request id.
    PasskeyResets,
    /// The table of directory groups to roles in force, by provider name (R12): seeded from the
    /// SSO file, changed only under two admins.
    RoleMappings,
    /// Changes of a role table awaiting a second admin, by request id.
    MappingRequests,
    /// Each relay node's heartbeat with the agents and sessions it holds, by node name: how any
    /// node finds the one a device or a session is on.
    Nodes,
    /// The consistency proofs between each node's successive published checkpoints (the newest
    /// few), by node name: other nodes accept a larger checkpoint only as an extension of the one
    /// they saw (`sightline_core::witness`).
    CheckpointLinks,
    /// Each operator's session request budget shared by the nodes (R43): the arrival time of
    /// the next request (`sightline_core::request_budget`), by user name.
    RequestBudgets,
}

impl Collection {
    pub const ALL: [Collection; 20] = [
        Collection::Users,
        Collection::UserNames,
        Collection::RoleRequests,
        Collection::Devices,
        Collection::EnrolmentTokens,
        Collection::SigningKeys,
        Collection::Lockouts,
        Collection::Mutexes,
        Collection::MaintenanceWindows,
        Collection::Recordings,
        Collection::HelpRequests,
        Collection::Checkpoints,
        Collection::DirectoryIdentities,
        Collection::LoginSessions,
        Collection::PasskeyResets,
        Collection::RoleMappings,
        Collection::MappingRequests,
        Collection::Nodes,
        Collection::CheckpointLinks,
        Collection::RequestBudgets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Collection::Users => "users",
            Collection::UserNames => "user_names",
            Collection::RoleRequests => "role_requests",
            Collection::Devices => "devices",
            Collection::EnrolmentTokens => "enrolment_tokens",
            Collection::SigningKeys => "signing_keys",
            Collection::Lockouts => "lockouts",
            Collection::Mutexes => "mutexes",
            Collection::MaintenanceWindows => "maintenance_windows",
            Collection::Recordings => "recordings",
            Collection::HelpRequests => "help_requests",
            Collection::Checkpoints => "checkpoints",
            Collection::DirectoryIdentities => "directory_identities",
            Collection::LoginSessions => "login_sessions",
            Collection::PasskeyResets => "passkey_resets",
            Collection::RoleMappings => "role_mappings",
            Collection::MappingRequests => "mapping_requests",
            Collection::Nodes => "nodes",
            Collection::CheckpointLinks => "checkpoint_links",
            Collection::RequestBudgets => "request_budgets",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store I/O failed: {0}")]
    Io(String),
    #[error("stored record {collection}/{key} is corrupt: {detail}")]
    Corrupt { collection: &'static str, key: String, detail: String },
    /// Other writers changed the record every time an update tried: the store answers, the
    /// record is contended.
    #[error("state store record {0} changed under every attempt to update it")]
    Contention(String),
}

/// What a backend must do. Values are opaque bytes.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn put(&self, coll: Collection, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Inserts only if the key is absent; `false` if it existed.
    async fn insert_new(&self, coll: Collection, key: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Replaces the value only if it is still `expected` (absent when `None`): optimistic updates.
    async fn compare_and_swap(
        &self,
        coll: Collection,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Removes and returns the value atomically: a one-time token can be taken once.
    async fn take(&self, coll: Collection, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn delete(&self, coll: Collection, key: &str) -> Result<bool, StoreError>;
    async fn list(&self, coll: Collection) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Ephemeral records expire by themselves (ceremony state, revocations, presence).
    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    async fn get_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    async fn take_ephemeral(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// An ephemeral record that must outlive a restart of the process (login sessions and their
    /// revocations): it expires like one and is read and taken with the same calls. Redis keeps
    /// every ephemeral record as durably as its persistence is configured, so by default this is
    /// `put_ephemeral`.
    async fn put_lasting(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.put_ephemeral(key, value, ttl).await
    }
    /// Replaces a lasting record only while it exists (`false` when it is gone): a sign-in's
    /// activity is noted without bringing back one that a logout took meanwhile.
    async fn replace_lasting(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError>;

    /// Sends an event to every relay node sharing this store (this one included).
    async fn publish(&self, event: &[u8]) -> Result<(), StoreError>;
    /// Events published by any node, from now on.
    fn subscribe(&self) -> broadcast::Receiver<Vec<u8>>;
}

/// Typed access to a backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|e| unreachable!("state records always serialise: {e}"))
}

fn decode<T: DeserializeOwned>(coll: Collection, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        collection: coll.name(),
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

fn decode_ephemeral<T: DeserializeOwned>(key: &str, bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes.map(|b| serde_json::from_slice(&b)).transpose().map_err(|e| StoreError::Corrupt {
        collection: "ephemeral",
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>) -> Store {
        Store { backend }
    }

    pub async fn get<T: DeserializeOwned>(&self, coll: Collection, key: &str) -> Result<Option<T>, StoreError> {
        match self.backend.get(coll, key).await? {
            Some(bytes) => Ok(Some(decode(coll, key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn put<T: Serialize>(&self, coll: Collection, key: &str, value: &T) -> Result<(), StoreError> {
        self.backend.put(coll, key, &encode(value)).await
    }

    pub async fn insert_new<T: Serialize>(&self, coll: Collection, key: &str, value: &T) -> Result<bool, StoreError> {
        self.backend.insert_new(coll, key, &encode(value)).await
    }

    pub async fn take<T: DeserializeOwned>(&self, coll: Collection, key: &str) -> Result<Option<T>, StoreError> {
        match self.backend.take(coll, key).await? {
            Some(bytes) => Ok(Some(decode(coll, key, &bytes)?)),
            None => Ok(None),
        }
    }

    pub async fn delete(&self, coll: Collection, key: &str) -> Result<bool, StoreError> {
        self.backend.delete(coll, key).await
    }

    pub async fn list<T: DeserializeOwned>(&self, coll: Collection) -> Result<Vec<(String, T)>, StoreError> {
        let rows = self.backend.list(coll).await?;
        rows.into_iter().map(|(k, v)| decode(coll, &k, &v).map(|t| (k, t))).collect()
    }

    /// Reads, changes and writes a record, retrying when another writer got there first.
    /// `change` returns `None` to leave the record alone. Returns the record as stored.
    pub async fn update<T, F>(&self, coll: Collection, key: &str, mut change: F) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        for _ in 0..16 {
            let current = self.backend.get(coll, key).await?;
            let value = match &current {
                Some(bytes) => Some(decode(coll, key, bytes)?),
                None => None,
            };
            let Some(new) = change(value) else {
                return match current {
                    Some(bytes) => Ok(Some(decode(coll, key, &bytes)?)),
                    None => Ok(None),
                };
            };
            if self.backend.compare_and_swap(coll, key, current.as_deref(), &encode(&new)).await? {
                return Ok(Some(new));
            }
        }
        Err(StoreError::Contention(format!("{}/{key}", coll.name())))
    }

    pub async fn put_ephemeral<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), StoreError> {
        self.backend.put_ephemeral(key, &encode(value), ttl).await
    }

    /// An ephemeral record that survives a restart of the relay (`Backend::put_lasting`).
    pub async fn put_lasting<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), StoreError> {
        self.backend.put_lasting(key, &encode(value), ttl).await
    }

    /// Replaces a lasting record only while it exists; `false` when it is gone.
    pub async fn replace_lasting<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<bool, StoreError> {
        self.backend.replace_lasting(key, &encode(value), ttl).await
    }

    pub async fn get_ephemeral<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        decode_ephemeral(key, self.backend.get_ephemeral(key).await?)
    }

    pub async fn take_ephemeral<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        decode_ephemeral(key, self.backend.take_ephemeral(key).await?)
    }

    pub async fn publish<T: Serialize>(&self, event: &T) -> Result<(), StoreError> {
        self.backend.publish(&encode(event)).await
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Vec<u8>> {
        self.backend.subscribe()
    }
}

#[cfg(test)]
mod contract;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
