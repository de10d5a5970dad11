//! A whole store as rows, for `rustynet-control migrate-store` (SQLite to
//! PostgreSQL). Text columns travel verbatim (the JSON and base64 are not
//! re-encoded), so the copy is exact.

use serde::Serialize;

/// Every row of a store, read in one transaction.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// `meta` (suffix, address cursor, generation high-water mark).
    pub meta: Vec<(String, String)>,
    /// The policy JSON and when it was set.
    pub policy: Option<(String, i64)>,
    /// Pre-auth keys (hashes only, as stored).
    pub preauth_keys: Vec<PreauthRow>,
    /// Nodes.
    pub nodes: Vec<NodeRow>,
    /// Registered relays.
    pub relays: Vec<RelayRow>,
    /// Recorded request nonces `(node, nonce, ts_ms)`.
    pub nonces: Vec<(i64, Vec<u8>, i64)>,
    /// The highest pre-auth key id ever issued (ids are never reused).
    pub last_preauth_id: i64,
    /// The highest node id ever issued.
    pub last_node_id: i64,
}

/// A `preauth_keys` row.
#[derive(Debug)]
pub(crate) struct PreauthRow {
    pub id: i64,
    pub key_hash: Vec<u8>,
    pub user: String,
    pub tags: String,
    pub reusable: bool,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub used: i64,
    pub revoked_at: Option<i64>,
}

/// A `nodes` row.
#[derive(Debug)]
pub(crate) struct NodeRow {
    pub id: i64,
    pub hostname: String,
    pub requested_hostname: String,
    pub user: String,
    pub tags: String,
    pub tunnel_ip: String,
    pub node_key: String,
    pub signing_key: String,
    pub endpoints: String,
    pub advertise_exit: bool,
    pub advertised_routes: String,
    pub created_at: i64,
    pub expired_at: Option<i64>,
    pub last_seen: Option<i64>,
    pub preauth_id: i64,
    pub lan_access: bool,
    pub key_expires_at: Option<i64>,
    pub path_key: Option<String>,
    pub home_relay: Option<String>,
    /// The admin's route decisions (JSON).
    pub admin_routes: String,
}

/// A `relays` row.
#[derive(Debug)]
pub(crate) struct RelayRow {
    pub name: String,
    pub addrs: String,
    pub server_name: String,
    pub cert_sha256: String,
    pub stun: String,
    pub created_at: i64,
}

/// What `migrate-store` copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Nodes copied.
    pub nodes: usize,
    /// Pre-auth keys copied.
    pub preauth_keys: usize,
    /// Registered relays copied.
    pub relays: usize,
    /// Whether a policy was set.
    pub policy: bool,
}

impl Dump {
    /// What copying this dump copies.
    pub fn report(&self) -> CopyReport {
        CopyReport {
            nodes: self.nodes.len(),
            preauth_keys: self.preauth_keys.len(),
            relays: self.relays.len(),
            policy: self.policy.is_some(),
        }
    }
}
