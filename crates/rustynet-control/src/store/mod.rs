//! Persistent state of the control server, behind a trait so the backing
//! database can change: SQLite embedded by default, PostgreSQL when several
//! control replicas share one database (`--database postgres://…`).
//!
//! Every method is one transaction. Writes that must not race — enrollment,
//! which spends a pre-auth key and assigns a tunnel address and a Magic DNS
//! name — run under a single writer (SQLite: `BEGIN IMMEDIATE`; PostgreSQL:
//! a transaction-scoped advisory lock), so concurrent joins and concurrent
//! admin commands cannot collide, even through different replicas.

#[cfg(test)]
mod conformance;
mod dump;
mod location;
mod migrations;
mod postgres;
mod sqlite;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use ipnet::IpNet;
use rustynet_policy::AdminRoutes;
use rustynet_proto::netmap::{MAX_RELAYS, RelayInfo};
use rustynet_proto::{NodeId, PathPublicKey, SigningPublicKey, TunnelPublicKey};
use serde::Serialize;

pub use dump::CopyReport;
pub use location::{DatabaseUrl, open_postgres};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Copies the SQLite store at `sqlite` into the empty PostgreSQL database
/// at `url` (migrating both to this build's schema first), in one
/// transaction; a database that already holds a control server's data is
/// refused. The SQLite file is only read.
pub fn copy_sqlite_to_postgres(
    sqlite: &std::path::Path,
    url: &DatabaseUrl,
) -> Result<CopyReport, StoreError> {
    let dump = sqlite::export(sqlite)?;
    open_postgres(url)?.import(dump)
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database itself failed (I/O, corruption, lock timeout).
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL server failed or could not be reached.
    #[error("database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The PostgreSQL connection string is malformed (the string itself is
    /// never repeated: it may carry a password).
    #[error("invalid --database connection string: {0}")]
    BadDatabaseUrl(String),
    /// The store's database worker stopped (it is restarted with the
    /// process).
    #[error("the database connection worker stopped")]
    WorkerStopped,
    /// `init` on a database that already holds a control server.
    #[error("the database is already initialized (refusing to overwrite it)")]
    AlreadyInitialized,
    /// The database was written by a newer Rustynet.
    #[error("database schema version {found} is newer than this build ({supported})")]
    SchemaTooNew {
        /// Version on disk.
        found: i64,
        /// Newest this build knows.
        supported: i64,
    },
    /// The pre-auth key is unknown.
    #[error("pre-auth key is not valid")]
    AuthKeyInvalid,
    /// The pre-auth key has expired.
    #[error("pre-auth key has expired")]
    AuthKeyExpired,
    /// A single-use pre-auth key was already spent.
    #[error("pre-auth key was already used")]
    AuthKeyUsed,
    /// An administrator revoked the pre-auth key.
    #[error("pre-auth key was revoked")]
    AuthKeyRevoked,
    /// No pre-auth key with that id.
    #[error("no pre-auth key with id {0}")]
    UnknownPreauth(i64),
    /// A renewal's pre-auth key belongs to another user than the node.
    #[error("the pre-auth key belongs to {key_user:?}, the node to {node_user:?}")]
    RenewUserMismatch {
        /// The key's user.
        key_user: String,
        /// The node's user.
        node_user: String,
    },
    /// A node with this tunnel or signing key already exists.
    #[error("a node with this key is already enrolled")]
    DuplicateKey,
    /// No node with that name or id.
    #[error("no node named {0:?}")]
    UnknownNode(String),
    /// Another node already has that host label.
    #[error("another node is already named {0:?}")]
    NameTaken(String),
    /// The tunnel address space is exhausted.
    #[error("no free tunnel address left")]
    AddressesExhausted,
    /// No unused name could be derived.
    #[error("no free name for hostname {0:?}")]
    NamesExhausted(String),
    /// A relay with this name is already registered.
    #[error("a relay named {0:?} is already registered")]
    DuplicateRelay(String),
    /// No registered relay with that name.
    #[error("no relay named {0:?} is registered")]
    UnknownRelay(String),
    /// As many relays are registered as a map may carry beside the
    /// embedded one.
    #[error("{0} relays are registered already, the most a map can carry")]
    TooManyRelays(usize),
    /// Stored data failed to decode (corruption or manual edits).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// A pre-auth key to create. The key itself is never stored, only its hash.
#[derive(Debug, Clone)]
pub struct NewPreauth {
    /// SHA-256 of the key.
    pub key_hash: [u8; 32],
    /// The owning user.
    pub user: String,
    /// Tags nodes enrolled with it carry.
    pub tags: Vec<String>,
    /// Whether it can be used more than once.
    pub reusable: bool,
    /// Unix seconds after which it is refused.
    pub expires_at: Option<i64>,
}

/// What a node asks for when it enrolls.
#[derive(Debug, Clone)]
pub struct Registration {
    /// SHA-256 of the presented pre-auth key.
    pub key_hash: [u8; 32],
    /// Normalized requested host label.
    pub hostname: String,
    /// Tunnel public key.
    pub node_key: TunnelPublicKey,
    /// Request-signing public key.
    pub signing_key: SigningPublicKey,
    /// Reported UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Exit-node offer.
    pub advertise_exit_node: bool,
    /// Offered LAN prefixes.
    pub advertised_routes: Vec<IpNet>,
    /// Path key (authenticates the node's path probes).
    pub path_key: Option<PathPublicKey>,
    /// When the node's keys stop being accepted (unix seconds); `None`:
    /// never.
    pub key_expires_at: Option<i64>,
}

/// A node renewing its keys (`rustynet up --force-reauth`): same id,
/// address and name; new keys and a new key expiry.
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The node.
    pub node: NodeId,
    /// The registration the renewal carries (its pre-auth key is spent).
    pub registration: Registration,
}

/// Most relays an admin may register: a map carries at most
/// [`MAX_RELAYS`], one of which may be the relay embedded in control.
pub const MAX_REGISTERED_RELAYS: usize = MAX_RELAYS - 1;

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// Id (never reused).
    pub id: NodeId,
    /// Assigned host label (unique).
    pub hostname: String,
    /// The label the node asked for.
    pub requested_hostname: String,
    /// Owner.
    pub user: String,
    /// Tags from the pre-auth key.
    pub tags: Vec<String>,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// Tunnel public key.
    pub node_key: TunnelPublicKey,
    /// Request-signing public key.
    pub signing_key: SigningPublicKey,
    /// Reported endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Exit-node offer.
    pub advertise_exit_node: bool,
    /// Offered LAN prefixes.
    pub advertised_routes: Vec<IpNet>,
    /// The node's LAN-access toggle.
    pub lan_access: bool,
    /// Enrollment time (unix seconds); also when the name was assigned.
    pub created_at: i64,
    /// Set when an admin expired the node: it gets no maps and is in no map.
    pub expired_at: Option<i64>,
    /// Last authenticated request.
    pub last_seen: Option<i64>,
    /// Path key the node reported (authenticates its path probes).
    pub path_key: Option<PathPublicKey>,
    /// The relay the node keeps as its home, as it reported it; maps carry
    /// it only while a relay of that name is announced.
    pub home_relay: Option<String>,
    /// An admin's route decisions (`rustynet-control routes approve|reject`).
    pub admin_routes: AdminRoutes,
    /// When the node's keys stop being accepted; renewed by
    /// `rustynet up --force-reauth`.
    pub key_expires_at: Option<i64>,
}

impl NodeRecord {
    /// Whether the node is expired at `now`: by an administrator, or its
    /// keys' lifetime ended. Either way it gets no maps and is in no map.
    pub fn is_expired(&self, now: i64) -> bool {
        self.expired_by_admin(now) || self.key_expired(now)
    }

    /// Whether an administrator expired it (`nodes expire`); such a node
    /// cannot renew its keys.
    pub fn expired_by_admin(&self, now: i64) -> bool {
        self.expired_at.is_some_and(|t| t <= now)
    }

    /// Whether its keys' lifetime ended.
    pub fn key_expired(&self, now: i64) -> bool {
        self.key_expires_at.is_some_and(|t| t <= now)
    }
}

/// What [`Store::node_changes`] read, in one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChanges {
    /// Every node: asked for, or the database's row versions are behind
    /// the one asked about (it was replaced or restored), so a difference
    /// cannot be trusted.
    All {
        /// All nodes, by id.
        nodes: Vec<NodeRecord>,
        /// The row version the reading is complete up to.
        version: i64,
    },
    /// The nodes inserted or changed, and the ids removed, since the row
    /// version asked about.
    Since {
        /// Inserted or changed nodes, by id.
        changed: Vec<NodeRecord>,
        /// Removed nodes.
        removed: Vec<NodeId>,
        /// The row version the reading is complete up to.
        version: i64,
    },
}

/// Changes a node reports about itself (`None` = unchanged).
#[derive(Debug, Clone, Default)]
pub struct NodeUpdate {
    /// Endpoints.
    pub endpoints: Option<Vec<SocketAddr>>,
    /// Exit-node offer.
    pub advertise_exit_node: Option<bool>,
    /// LAN prefixes.
    pub advertised_routes: Option<Vec<IpNet>>,
    /// LAN-access toggle.
    pub lan_access: Option<bool>,
    /// Path key.
    pub path_key: Option<PathPublicKey>,
    /// Home relay (`Some(None)` clears it).
    pub home_relay: Option<Option<String>>,
}

/// What a node's self-reported fields become after a [`NodeUpdate`]: the
/// same decision for every backend, which only writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpdatedFields {
    pub endpoints: Vec<SocketAddr>,
    pub advertise_exit_node: bool,
    pub advertised_routes: Vec<IpNet>,
    pub lan_access: bool,
    pub path_key: Option<PathPublicKey>,
    pub home_relay: Option<String>,
}

impl NodeUpdate {
    /// `current`'s fields with this update applied, or `None` when nothing
    /// would change (no write, no new maps).
    pub(crate) fn applied_to(&self, current: &NodeRecord) -> Option<UpdatedFields> {
        let next = UpdatedFields {
            endpoints: self
                .endpoints
                .clone()
                .unwrap_or_else(|| current.endpoints.clone()),
            advertise_exit_node: self
                .advertise_exit_node
                .unwrap_or(current.advertise_exit_node),
            advertised_routes: self
                .advertised_routes
                .clone()
                .unwrap_or_else(|| current.advertised_routes.clone()),
            lan_access: self.lan_access.unwrap_or(current.lan_access),
            path_key: self.path_key.or(current.path_key),
            home_relay: self
                .home_relay
                .clone()
                .unwrap_or_else(|| current.home_relay.clone()),
        };
        let same = next.endpoints == current.endpoints
            && next.advertise_exit_node == current.advertise_exit_node
            && next.advertised_routes == current.advertised_routes
            && next.lan_access == current.lan_access
            && next.path_key == current.path_key
            && next.home_relay == current.home_relay;
        (!same).then_some(next)
    }
}

/// A pre-auth key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreauthRecord {
    /// Row id.
    pub id: i64,
    /// Owner.
    pub user: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Reusable.
    pub reusable: bool,
    /// Expiry.
    pub expires_at: Option<i64>,
    /// Times used.
    pub used: i64,
    /// Creation time (unix seconds).
    pub created_at: i64,
    /// When an administrator revoked it.
    pub revoked_at: Option<i64>,
}

impl PreauthRecord {
    /// `key` (as looked up by its hash) if it may enroll a node at `now`,
    /// else why not: the same answer from every backend.
    pub(crate) fn usable(key: Option<Self>, now: i64) -> Result<Self, StoreError> {
        let Some(key) = key else {
            return Err(StoreError::AuthKeyInvalid);
        };
        match key.state(now) {
            "revoked" => Err(StoreError::AuthKeyRevoked),
            "expired" => Err(StoreError::AuthKeyExpired),
            "used" => Err(StoreError::AuthKeyUsed),
            _ => Ok(key),
        }
    }

    /// `active`, `used` (single-use, spent), `expired` or `revoked` at `now`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else if !self.reusable && self.used > 0 {
            "used"
        } else {
            "active"
        }
    }
}

/// Which per-node request limit a shared bucket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// `POST /v1/update`.
    Update = 1,
    /// `POST /v1/relay-ticket`.
    RelayTicket = 2,
}

/// The control server's storage.
pub trait Store: Send + Sync {
    /// The Magic DNS suffix chosen at `init`.
    fn suffix(&self) -> Result<String, StoreError>;
    /// The current policy JSON, if one was set.
    fn policy(&self) -> Result<Option<String>, StoreError>;
    /// Replaces the policy (already validated by the caller).
    fn set_policy(&self, json: &str, now: i64) -> Result<(), StoreError>;
    /// Stores a new pre-auth key.
    fn create_preauth(&self, new: &NewPreauth, now: i64) -> Result<PreauthRecord, StoreError>;
    /// The pre-auth key hashing to `key_hash` if it may enroll a node at
    /// `now` (read only: enrollment checks it before anything is written).
    fn usable_preauth(&self, key_hash: &[u8; 32], now: i64) -> Result<PreauthRecord, StoreError>;
    /// Every pre-auth key (never the key itself), oldest first.
    fn preauth_keys(&self) -> Result<Vec<PreauthRecord>, StoreError>;
    /// Revokes a pre-auth key: it enrolls no more nodes (those it enrolled
    /// stay). Revoking twice keeps the first time.
    fn revoke_preauth(&self, id: i64, now: i64) -> Result<PreauthRecord, StoreError>;
    /// Spends a pre-auth key and creates the node, atomically. On any error
    /// nothing changes (the key stays unspent).
    fn register(&self, reg: &Registration, now: i64) -> Result<NodeRecord, StoreError>;
    /// Spends a pre-auth key and gives an existing node new keys, reported
    /// state and key expiry, atomically; its id, address, name, user and
    /// tags stay (the key's user must be the node's). On any error nothing
    /// changes.
    fn renew(&self, renewal: &Renewal, now: i64) -> Result<NodeRecord, StoreError>;
    /// All nodes, by id.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// The nodes changed since row version `since` (every node for
    /// `None`). Inserting, removing or changing anything a map shows takes
    /// the next row version; recording `last_seen` does not.
    fn node_changes(&self, since: Option<i64>) -> Result<NodeChanges, StoreError>;
    /// One node.
    fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, StoreError>;
    /// Applies a self-reported update; returns whether anything changed.
    fn update_node(&self, id: NodeId, update: &NodeUpdate) -> Result<bool, StoreError>;
    /// Records that the nodes were heard from (one transaction for all:
    /// `serve` records every streaming node each minute).
    fn touch(&self, ids: &[NodeId], now: i64) -> Result<(), StoreError>;
    /// Marks a node expired (by host label).
    fn expire_node(&self, hostname: &str, now: i64) -> Result<NodeRecord, StoreError>;
    /// Deletes a node (by host label).
    fn remove_node(&self, hostname: &str) -> Result<NodeRecord, StoreError>;
    /// Gives a node (by host label) a new, validated host label; refuses a
    /// label another node holds. Returns the node as renamed.
    fn rename_node(&self, hostname: &str, new: &str) -> Result<NodeRecord, StoreError>;
    /// Replaces a node's (by host label) tags with `tags` (validated, sorted
    /// and deduplicated by the caller). Returns the node as changed.
    fn set_node_tags(&self, hostname: &str, tags: &[String]) -> Result<NodeRecord, StoreError>;
    /// Records a request nonce; `false` if it was seen before (replay).
    /// Also forgets nonces older than `forget_before_ms`.
    fn record_nonce(
        &self,
        node: NodeId,
        nonce: &[u8; 16],
        ts_ms: i64,
        forget_before_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Reserves `count` fresh generation numbers. The high-water mark is made
    /// durable before the range is returned, so generations never repeat,
    /// even across restarts.
    fn reserve_generations(&self, count: u64) -> Result<Range<u64>, StoreError>;
    /// A value that changes whenever another process commits to the store
    /// (admin commands run while `serve` does).
    fn external_change_marker(&self) -> Result<i64, StoreError>;
    /// Wakes its holder soon after another process commits a change, so
    /// replicas need not wait for their next poll of
    /// [`Store::external_change_marker`] (PostgreSQL: LISTEN/NOTIFY; SQLite:
    /// inotify on the database's directory). `None` when the backend has no
    /// such push; the poll then does it alone.
    fn change_notifications(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
    /// Takes one token from `node`'s `kind` bucket shared by every replica
    /// (`burst` tokens, one more each `every`), by the database's clock.
    /// `Some(false)`: the bucket is empty, refuse the request. `None`: the
    /// backend has no shared buckets (SQLite: one process, whose in-memory
    /// limiter already sees every request).
    fn take_shared_token(
        &self,
        node: NodeId,
        kind: RateKind,
        burst: u32,
        every: std::time::Duration,
    ) -> Result<Option<bool>, StoreError> {
        let _ = (node, kind, burst, every);
        Ok(None)
    }
    /// The relays an admin registered, by name.
    fn relays(&self) -> Result<Vec<RelayInfo>, StoreError>;
    /// Registers a relay (checked by the caller). Refuses a name in use and
    /// more than [`MAX_REGISTERED_RELAYS`]; on error nothing changes.
    fn add_relay(&self, relay: &RelayInfo, now: i64) -> Result<(), StoreError>;
    /// Removes a registered relay; returns it.
    fn remove_relay(&self, name: &str) -> Result<RelayInfo, StoreError>;
    /// Replaces a node's admin route decisions (by host label); returns the
    /// node as it was before. The caller decides the new set
    /// ([`crate::routes::decide`]).
    fn set_admin_routes(
        &self,
        hostname: &str,
        routes: &AdminRoutes,
    ) -> Result<NodeRecord, StoreError>;
}
