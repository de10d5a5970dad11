//! The `relays` table: standalone relays an admin registered.

use postgres::{Client, Row};
use rustynet_proto::netmap::RelayInfo;

use super::{changed, from_json, parse, to_json, write_tx};
use crate::store::{MAX_REGISTERED_RELAYS, StoreError};

/// Every registered relay, by name.
pub(super) fn all(c: &mut Client) -> Result<Vec<RelayInfo>, StoreError> {
    c.query(
        format!("SELECT {RELAY_COLUMNS} FROM relays ORDER BY name COLLATE \"C\"").as_str(),
        &[],
    )?
    .iter()
    .map(relay_from_row)
    .collect()
}

fn relay_from_row(row: &Row) -> Result<RelayInfo, StoreError> {
    let addrs: String = row.try_get(1)?;
    let pin: String = row.try_get(3)?;
    let stun: String = row.try_get(4)?;
    Ok(RelayInfo {
        name: row.try_get(0)?,
        addrs: from_json(&addrs, "relay addrs")?,
        server_name: row.try_get(2)?,
        cert_sha256: parse(&pin, "relay cert_sha256")?,
        stun: from_json(&stun, "relay stun")?,
    })
}

const RELAY_COLUMNS: &str = "name, addrs, server_name, cert_sha256, stun";

pub(super) fn add(c: &mut Client, relay: &RelayInfo, now: i64) -> Result<(), StoreError> {
    let mut tx = write_tx(c)?;
    let count: i64 = tx
        .query_one("SELECT COUNT(*) FROM relays", &[])?
        .try_get(0)?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_REGISTERED_RELAYS {
        return Err(StoreError::TooManyRelays(MAX_REGISTERED_RELAYS));
    }
    let inserted = tx.execute(
        "INSERT INTO relays(name, addrs, server_name, cert_sha256, stun, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        &[
            &relay.name,
            &to_json(&relay.addrs),
            &relay.server_name,
            &relay.cert_sha256.to_base64(),
            &to_json(&relay.stun),
            &now,
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::DuplicateRelay(relay.name.clone()));
    }
    changed(&mut tx)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn remove(c: &mut Client, name: &str) -> Result<RelayInfo, StoreError> {
    let mut tx = write_tx(c)?;
    let relay = tx
        .query_opt(
            format!("SELECT {RELAY_COLUMNS} FROM relays WHERE name = $1").as_str(),
            &[&name],
        )?
        .map(|r| relay_from_row(&r))
        .transpose()?
        .ok_or_else(|| StoreError::UnknownRelay(name.to_owned()))?;
    tx.execute("DELETE FROM relays WHERE name = $1", &[&name])?;
    changed(&mut tx)?;
    tx.commit()?;
    Ok(relay)
}
