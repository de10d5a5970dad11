//! Writes a whole store's rows into an empty PostgreSQL store
//! (`migrate-store`), in one transaction: on any error nothing is copied.

use postgres::Client;

use super::{PostgresStore, changed, write_tx};
use crate::store::StoreError;
use crate::store::dump::{CopyReport, Dump};

impl PostgresStore {
    /// Copies `dump` in; refuses a database that already holds a control
    /// server's data.
    pub(crate) fn import(&self, dump: Dump) -> Result<CopyReport, StoreError> {
        self.run(move |c| import(c, &dump))
    }
}

fn import(c: &mut Client, d: &Dump) -> Result<CopyReport, StoreError> {
    let mut tx = write_tx(c)?;
    let in_use: bool = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM meta WHERE key = 'suffix')
                OR EXISTS(SELECT 1 FROM nodes) OR EXISTS(SELECT 1 FROM preauth_keys)
                OR EXISTS(SELECT 1 FROM relays) OR EXISTS(SELECT 1 FROM policy)",
            &[],
        )?
        .try_get(0)?;
    if in_use {
        return Err(StoreError::AlreadyInitialized);
    }
    for (key, value) in &d.meta {
        if key == "generation_high_water" {
            let high: i64 = value
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("generation_high_water: {value:?}")))?;
            tx.execute(
                "UPDATE meta SET value = GREATEST(value::BIGINT, $1::BIGINT)::TEXT
                 WHERE key = 'generation_high_water'",
                &[&high],
            )?;
        } else {
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[key, value],
            )?;
        }
    }
    if let Some((json, updated_at)) = &d.policy {
        tx.execute(
            "INSERT INTO policy(id, json, updated_at) VALUES (1, $1, $2)",
            &[json, updated_at],
        )?;
    }
    for k in &d.preauth_keys {
        tx.execute(
            r#"INSERT INTO preauth_keys(id, key_hash, "user", tags, reusable, expires_at,
                created_at, used, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#,
            &[
                &k.id,
                &k.key_hash,
                &k.user,
                &k.tags,
                &k.reusable,
                &k.expires_at,
                &k.created_at,
                &k.used,
                &k.revoked_at,
            ],
        )?;
    }
    for n in &d.nodes {
        tx.execute(
            r#"INSERT INTO nodes(id, hostname, requested_hostname, "user", tags, tunnel_ip,
                node_key, signing_key, endpoints, advertise_exit, advertised_routes, created_at,
                expired_at, last_seen, preauth_id, lan_access, key_expires_at, path_key,
                home_relay, admin_routes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $17, $18, $19, $20)"#,
            &[
                &n.id,
                &n.hostname,
                &n.requested_hostname,
                &n.user,
                &n.tags,
                &n.tunnel_ip,
                &n.node_key,
                &n.signing_key,
                &n.endpoints,
                &n.advertise_exit,
                &n.advertised_routes,
                &n.created_at,
                &n.expired_at,
                &n.last_seen,
                &n.preauth_id,
                &n.lan_access,
                &n.key_expires_at,
                &n.path_key,
                &n.home_relay,
                &n.admin_routes,
            ],
        )?;
    }
    for r in &d.relays {
        tx.execute(
            "INSERT INTO relays(name, addrs, server_name, cert_sha256, stun, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &r.name,
                &r.addrs,
                &r.server_name,
                &r.cert_sha256,
                &r.stun,
                &r.created_at,
            ],
        )?;
    }
    for (node, nonce, ts_ms) in &d.nonces {
        tx.execute(
            "INSERT INTO seen_nonces(node_id, nonce, ts_ms) VALUES ($1, $2, $3)",
            &[node, nonce, ts_ms],
        )?;
    }
    // Ids continue after the highest ever issued, deleted rows included.
    let last_preauth = d
        .preauth_keys
        .iter()
        .map(|k| k.id)
        .fold(d.last_preauth_id, i64::max);
    let last_node = d.nodes.iter().map(|n| n.id).fold(d.last_node_id, i64::max);
    for (table, last) in [("preauth_keys", last_preauth), ("nodes", last_node)] {
        tx.execute(
            "SELECT setval(pg_get_serial_sequence($1, 'id'), GREATEST($2::BIGINT, 1), $2::BIGINT > 0)",
            &[&table, &last],
        )?;
    }
    changed(&mut tx)?;
    tx.commit()?;
    Ok(d.report())
}
