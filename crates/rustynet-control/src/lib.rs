//! The Rustynet control server.
//!
//! It enrolls devices with pre-auth keys, keeps the ACL policy, compiles it
//! into one network map per node, signs each map with the control signing key
//! and streams it to the node over TLS 1.3 whenever something that affects the
//! node changes (and re-signs before expiry). It never holds a node's private
//! keys: nodes register public keys and authenticate later requests by signing
//! them.
#![warn(missing_docs)]

pub mod acl_explain;
pub mod admin;
pub mod api;
pub mod auth;
pub mod config_file;
mod conn;
pub mod conn_limits;
pub mod datadir;
pub mod embedded_relay;
pub mod fdlimit;
pub mod generations;
pub mod map_changes;
pub mod map_check;
pub mod map_json;
pub mod metrics;
pub mod names;
pub mod netmap_builder;
pub mod network;
pub mod node_admin;
pub mod nodes_table;
pub mod nonce_cache;
pub mod pki;
pub mod policy_diff;
pub mod presence;
pub mod ratelimit;
pub mod relay_registry;
pub mod relay_tickets;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;

/// Unix time in seconds.
pub fn now_unix() -> i64 {
    now_unix_ms() / 1000
}

/// Unix time in milliseconds.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
