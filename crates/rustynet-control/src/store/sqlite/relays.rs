//! The `relays` table: standalone relays an admin registered.

use rusqlite::{Connection, OptionalExtension as _, params};
use rustynet_proto::netmap::RelayInfo;

use super::{from_json, parse, to_json};
use crate::store::{MAX_REGISTERED_RELAYS, StoreError};

const COLUMNS: &str = "name, addrs, server_name, cert_sha256, stun";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RelayInfo, StoreError>> {
    let name: String = row.get(0)?;
    let addrs: String = row.get(1)?;
    let server_name: String = row.get(2)?;
    let pin: String = row.get(3)?;
    let stun: String = row.get(4)?;
    Ok((|| {
        Ok(RelayInfo {
            addrs: from_json(&addrs, "relay addrs")?,
            server_name,
            cert_sha256: parse(&pin, "relay cert_sha256")?,
            stun: from_json(&stun, "relay stun")?,
            name,
        })
    })())
}

/// Every registered relay, by name.
pub(super) fn all(conn: &Connection) -> Result<Vec<RelayInfo>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM relays ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Inserts `relay` (inside the caller's write transaction, so the count and
/// the name are checked against what is committed).
pub(super) fn add(conn: &Connection, relay: &RelayInfo, now: i64) -> Result<(), StoreError> {
    let count: i64 = conn.query_row("SELECT COUNT(*) FROM relays", [], |r| r.get(0))?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_REGISTERED_RELAYS {
        return Err(StoreError::TooManyRelays(MAX_REGISTERED_RELAYS));
    }
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO relays(name, addrs, server_name, cert_sha256, stun, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            relay.name,
            to_json(&relay.addrs),
            relay.server_name,
            relay.cert_sha256.to_base64(),
            to_json(&relay.stun),
            now
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::DuplicateRelay(relay.name.clone()));
    }
    Ok(())
}

/// Deletes the relay `name` and returns it.
pub(super) fn remove(conn: &Connection, name: &str) -> Result<RelayInfo, StoreError> {
    let relay = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM relays WHERE name = ?1"))?
        .query_row(params![name], from_row)
        .optional()?
        .ok_or_else(|| StoreError::UnknownRelay(name.to_owned()))??;
    conn.execute("DELETE FROM relays WHERE name = ?1", params![name])?;
    Ok(relay)
}
