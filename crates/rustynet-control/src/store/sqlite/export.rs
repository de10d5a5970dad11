//! Reads a whole SQLite store as rows (`migrate-store`).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::dump::{Dump, NodeRow, PreauthRow, RelayRow};

/// Every row of the store at `path` (migrated to this build's schema
/// first), read in one transaction so the copy is consistent.
pub(crate) fn export(path: &Path) -> Result<Dump, StoreError> {
    drop(SqliteStore::open(path)?);
    let mut conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let tx = conn.transaction()?;
    let mut dump = Dump {
        meta: tx
            .prepare("SELECT key, value FROM meta ORDER BY key")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?,
        policy: tx
            .query_row(
                "SELECT json, updated_at FROM policy WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
        ..Dump::default()
    };
    dump.preauth_keys = tx
        .prepare(
            "SELECT id, key_hash, user, tags, reusable, expires_at, created_at, used, revoked_at
             FROM preauth_keys ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(PreauthRow {
                id: r.get(0)?,
                key_hash: r.get(1)?,
                user: r.get(2)?,
                tags: r.get(3)?,
                reusable: r.get(4)?,
                expires_at: r.get(5)?,
                created_at: r.get(6)?,
                used: r.get(7)?,
                revoked_at: r.get(8)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    dump.nodes = tx
        .prepare(
            "SELECT id, hostname, requested_hostname, user, tags, tunnel_ip, node_key,
                signing_key, endpoints, advertise_exit, advertised_routes, created_at,
                expired_at, last_seen, preauth_id, lan_access, key_expires_at, path_key,
                home_relay, admin_routes
             FROM nodes ORDER BY id",
        )?
        .query_map([], |r| {
            Ok(NodeRow {
                id: r.get(0)?,
                hostname: r.get(1)?,
                requested_hostname: r.get(2)?,
                user: r.get(3)?,
                tags: r.get(4)?,
                tunnel_ip: r.get(5)?,
                node_key: r.get(6)?,
                signing_key: r.get(7)?,
                endpoints: r.get(8)?,
                advertise_exit: r.get(9)?,
                advertised_routes: r.get(10)?,
                created_at: r.get(11)?,
                expired_at: r.get(12)?,
                last_seen: r.get(13)?,
                preauth_id: r.get(14)?,
                lan_access: r.get(15)?,
                key_expires_at: r.get(16)?,
                path_key: r.get(17)?,
                home_relay: r.get(18)?,
                admin_routes: r.get(19)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    dump.relays = tx
        .prepare(
            "SELECT name, addrs, server_name, cert_sha256, stun, created_at
             FROM relays ORDER BY name",
        )?
        .query_map([], |r| {
            Ok(RelayRow {
                name: r.get(0)?,
                addrs: r.get(1)?,
                server_name: r.get(2)?,
                cert_sha256: r.get(3)?,
                stun: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    dump.nonces = tx
        .prepare("SELECT node_id, nonce, ts_ms FROM seen_nonces")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    // AUTOINCREMENT remembers ids of deleted rows too: the copy must not
    // hand them out again.
    let last_id = |table: &str| -> Result<i64, StoreError> {
        let seq: Option<i64> = tx
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                [table],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.unwrap_or(0))
    };
    dump.last_preauth_id = last_id("preauth_keys")?;
    dump.last_node_id = last_id("nodes")?;
    Ok(dump)
}
