//! SQLite implementation of [`Store`]: one file, WAL mode, migrations on open.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rustynet_proto::NodeId;
use rustynet_proto::netmap::TUNNEL_NET;
use serde::Serialize;
use serde::de::DeserializeOwned;

use rustynet_proto::netmap::RelayInfo;

use super::migrations::{MIGRATIONS, pending};
use rustynet_policy::AdminRoutes;

use super::{
    NewPreauth, NodeChanges, NodeRecord, NodeUpdate, PreauthRecord, Registration, Renewal, Store,
    StoreError,
};
use crate::names::assign_label;

mod export;
mod node_admin;
mod relays;
mod watch;

pub(crate) use export::export;

/// Generations are reserved from the database in blocks this large, so
/// signing a map does not cost a durable write each time.
const GENERATION_BLOCK: u64 = 4096;

/// The SQLite store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    generations: Mutex<Range<u64>>,
    /// Wakes `serve` on other processes' commits (set up on first use).
    changes: OnceLock<Option<Arc<tokio::sync::Notify>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (every
    // operation is a transaction), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {text:?}")))
}

const NODE_COLUMNS: &str = "id, hostname, requested_hostname, user, tags, tunnel_ip, node_key, \
    signing_key, endpoints, advertise_exit, advertised_routes, created_at, expired_at, last_seen, \
    lan_access, key_expires_at, path_key, home_relay, admin_routes";

fn node_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<NodeRecord, StoreError>> {
    let id: i64 = row.get(0)?;
    let tags: String = row.get(4)?;
    let ip: String = row.get(5)?;
    let node_key: String = row.get(6)?;
    let signing_key: String = row.get(7)?;
    let endpoints: String = row.get(8)?;
    let routes: String = row.get(10)?;
    let hostname: String = row.get(1)?;
    let requested: String = row.get(2)?;
    let user: String = row.get(3)?;
    let exit: bool = row.get(9)?;
    let created_at: i64 = row.get(11)?;
    let expired_at: Option<i64> = row.get(12)?;
    let last_seen: Option<i64> = row.get(13)?;
    let lan_access: bool = row.get(14)?;
    let key_expires_at: Option<i64> = row.get(15)?;
    let path_key: Option<String> = row.get(16)?;
    let home_relay: Option<String> = row.get(17)?;
    let admin_routes: String = row.get(18)?;
    Ok((|| {
        Ok(NodeRecord {
            id: NodeId(u64::try_from(id).map_err(|_| StoreError::Corrupt("node id".into()))?),
            hostname,
            requested_hostname: requested,
            user,
            tags: from_json(&tags, "tags")?,
            tunnel_ip: parse(&ip, "tunnel_ip")?,
            node_key: parse(&node_key, "node_key")?,
            signing_key: parse(&signing_key, "signing_key")?,
            endpoints: from_json(&endpoints, "endpoints")?,
            advertise_exit_node: exit,
            advertised_routes: from_json(&routes, "advertised_routes")?,
            lan_access,
            created_at,
            expired_at,
            last_seen,
            key_expires_at,
            path_key: path_key.map(|k| parse(&k, "path_key")).transpose()?,
            home_relay,
            admin_routes: from_json(&admin_routes, "admin_routes")?,
        })
    })())
}

fn query_nodes(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<NodeRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes {filter} ORDER BY id"
    ))?;
    let rows = stmt.query_map(args, node_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    /// Creates a store at `path` with the Magic DNS `suffix`.
    pub fn create(path: &Path, suffix: &str) -> Result<Self, StoreError> {
        let store = Self::open(path)?;
        lock(&store.conn).execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('suffix', ?1)",
            params![suffix],
        )?;
        Ok(store)
    }

    fn setup(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            generations: Mutex::new(0..0),
            changes: OnceLock::new(),
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for index in pending(version, MIGRATIONS.len())? {
        tx.execute_batch(MIGRATIONS[index])?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

/// First and last usable host offsets inside 100.64.0.0/10.
pub(super) fn address_span() -> (u32, u32) {
    let base = u32::from(TUNNEL_NET.network());
    let last = u32::from(TUNNEL_NET.broadcast());
    (base + 1, last - 1)
}

fn allocate_ip(conn: &Connection) -> Result<Ipv4Addr, StoreError> {
    let (first, last) = address_span();
    let cursor = match meta_get(conn, "next_ip")? {
        Some(v) => parse::<u32>(&v, "next_ip")?.clamp(first, last),
        None => first,
    };
    let mut stmt = conn.prepare_cached("SELECT 1 FROM nodes WHERE tunnel_ip = ?1")?;
    let span = u64::from(last - first) + 1;
    for step in 0..span {
        let offset = (u64::from(cursor - first) + step) % span;
        let candidate = first + offset as u32;
        let ip = Ipv4Addr::from(candidate);
        if !stmt.exists(params![ip.to_string()])? {
            let next = if candidate == last {
                first
            } else {
                candidate + 1
            };
            meta_set(conn, "next_ip", &next.to_string())?;
            return Ok(ip);
        }
    }
    Err(StoreError::AddressesExhausted)
}

const PREAUTH_COLUMNS: &str = "id, user, tags, reusable, expires_at, used, created_at, revoked_at";

fn preauth_from_row(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<PreauthRecord, StoreError>> {
    let tags: String = row.get(2)?;
    let record = (
        row.get(0)?,
        row.get(1)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    );
    let (id, user, reusable, expires_at, used, created_at, revoked_at) = record;
    Ok(from_json(&tags, "tags").map(|tags| PreauthRecord {
        id,
        user,
        tags,
        reusable,
        expires_at,
        used,
        created_at,
        revoked_at,
    }))
}

/// The pre-auth key hashing to `key_hash`, if it may enroll a node at `now`.
fn usable_preauth(
    conn: &Connection,
    key_hash: &[u8; 32],
    now: i64,
) -> Result<PreauthRecord, StoreError> {
    let key = conn
        .prepare_cached(&format!(
            "SELECT {PREAUTH_COLUMNS} FROM preauth_keys WHERE key_hash = ?1"
        ))?
        .query_row(params![&key_hash[..]], preauth_from_row)
        .optional()?
        .transpose()?;
    PreauthRecord::usable(key, now)
}

impl Store for SqliteStore {
    fn suffix(&self) -> Result<String, StoreError> {
        meta_get(&lock(&self.conn), "suffix")?
            .ok_or_else(|| StoreError::Corrupt("no Magic DNS suffix recorded (run init)".into()))
    }

    fn policy(&self) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.conn)
            .query_row("SELECT json FROM policy WHERE id = 1", [], |r| r.get(0))
            .optional()?)
    }

    fn set_policy(&self, json: &str, now: i64) -> Result<(), StoreError> {
        lock(&self.conn).execute(
            "INSERT INTO policy(id, json, updated_at) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
            params![json, now],
        )?;
        Ok(())
    }

    fn create_preauth(&self, new: &NewPreauth, now: i64) -> Result<PreauthRecord, StoreError> {
        let conn = lock(&self.conn);
        conn.execute(
            "INSERT INTO preauth_keys(key_hash, user, tags, reusable, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &new.key_hash[..],
                new.user,
                to_json(&new.tags),
                new.reusable,
                new.expires_at,
                now
            ],
        )?;
        Ok(PreauthRecord {
            id: conn.last_insert_rowid(),
            user: new.user.clone(),
            tags: new.tags.clone(),
            reusable: new.reusable,
            expires_at: new.expires_at,
            used: 0,
            created_at: now,
            revoked_at: None,
        })
    }

    fn preauth_keys(&self) -> Result<Vec<PreauthRecord>, StoreError> {
        let conn = lock(&self.conn);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {PREAUTH_COLUMNS} FROM preauth_keys ORDER BY id"
        ))?;
        let rows = stmt.query_map([], preauth_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn revoke_preauth(&self, id: i64, now: i64) -> Result<PreauthRecord, StoreError> {
        let conn = lock(&self.conn);
        conn.execute(
            "UPDATE preauth_keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2",
            params![now, id],
        )?;
        conn.prepare_cached(&format!(
            "SELECT {PREAUTH_COLUMNS} FROM preauth_keys WHERE id = ?1"
        ))?
        .query_row(params![id], preauth_from_row)
        .optional()?
        .transpose()?
        .ok_or(StoreError::UnknownPreauth(id))
    }

    fn usable_preauth(&self, key_hash: &[u8; 32], now: i64) -> Result<PreauthRecord, StoreError> {
        usable_preauth(&lock(&self.conn), key_hash, now)
    }

    fn register(&self, reg: &Registration, now: i64) -> Result<NodeRecord, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = usable_preauth(&tx, &reg.key_hash, now)?;
        let (key_id, user) = (key.id, key.user);
        let tags = to_json(&key.tags);
        let duplicate = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM nodes WHERE node_key = ?1 OR signing_key = ?2)",
            params![reg.node_key.to_base64(), reg.signing_key.to_base64()],
            |r| r.get::<_, bool>(0),
        )?;
        if duplicate {
            return Err(StoreError::DuplicateKey);
        }
        let ip = allocate_ip(&tx)?;
        let hostname = {
            let mut taken = tx.prepare_cached("SELECT 1 FROM nodes WHERE hostname = ?1")?;
            assign_label(&reg.hostname, |l| taken.exists(params![l]).unwrap_or(true))
                .ok_or_else(|| StoreError::NamesExhausted(reg.hostname.clone()))?
        };
        tx.execute(
            "UPDATE preauth_keys SET used = used + 1 WHERE id = ?1",
            params![key_id],
        )?;
        tx.execute(
            "INSERT INTO nodes(hostname, requested_hostname, user, tags, tunnel_ip, node_key,
                signing_key, endpoints, advertise_exit, advertised_routes, created_at, last_seen,
                preauth_id, key_expires_at, path_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)",
            params![
                hostname,
                reg.hostname,
                user,
                tags,
                ip.to_string(),
                reg.node_key.to_base64(),
                reg.signing_key.to_base64(),
                to_json(&reg.endpoints),
                reg.advertise_exit_node,
                to_json(&reg.advertised_routes),
                now,
                key_id,
                reg.key_expires_at,
                reg.path_key.map(|k| k.to_base64()),
            ],
        )?;
        let id = tx.last_insert_rowid();
        let node = query_nodes(&tx, "WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("inserted node vanished".into()))?;
        tx.commit()?;
        Ok(node)
    }

    fn renew(&self, renewal: &Renewal, now: i64) -> Result<NodeRecord, StoreError> {
        let reg = &renewal.registration;
        let id = renewal.node.0 as i64;
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = usable_preauth(&tx, &reg.key_hash, now)?;
        let node = query_nodes(&tx, "WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| StoreError::UnknownNode(renewal.node.to_string()))?;
        if key.user != node.user {
            return Err(StoreError::RenewUserMismatch {
                key_user: key.user,
                node_user: node.user,
            });
        }
        let duplicate = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM nodes WHERE id != ?3 AND (node_key = ?1 OR signing_key = ?2))",
            params![reg.node_key.to_base64(), reg.signing_key.to_base64(), id],
            |r| r.get::<_, bool>(0),
        )?;
        if duplicate || reg.signing_key == node.signing_key || reg.node_key == node.node_key {
            return Err(StoreError::DuplicateKey);
        }
        tx.execute(
            "UPDATE preauth_keys SET used = used + 1 WHERE id = ?1",
            params![key.id],
        )?;
        tx.execute(
            "UPDATE nodes SET node_key = ?1, signing_key = ?2, endpoints = ?3, advertise_exit = ?4,
                advertised_routes = ?5, key_expires_at = ?6, last_seen = ?7
             WHERE id = ?8",
            params![
                reg.node_key.to_base64(),
                reg.signing_key.to_base64(),
                to_json(&reg.endpoints),
                reg.advertise_exit_node,
                to_json(&reg.advertised_routes),
                reg.key_expires_at,
                now,
                id
            ],
        )?;
        // Nonces recorded for the old key mean nothing to the new one.
        tx.execute("DELETE FROM seen_nonces WHERE node_id = ?1", params![id])?;
        let node = query_nodes(&tx, "WHERE id = ?1", params![id])?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("renewed node vanished".into()))?;
        tx.commit()?;
        Ok(node)
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        query_nodes(&lock(&self.conn), "", [])
    }

    fn node_changes(&self, since: Option<i64>) -> Result<NodeChanges, StoreError> {
        let mut conn = lock(&self.conn);
        // One read transaction: one snapshot of the versions and the rows.
        let tx = conn.transaction()?;
        let version: i64 = tx.query_row("SELECT last FROM row_versions WHERE id = 1", [], |r| {
            r.get(0)
        })?;
        let changes = match since {
            Some(since) if since <= version => {
                let changed = query_nodes(&tx, "WHERE row_version > ?1", params![since])?;
                let mut stmt =
                    tx.prepare_cached("SELECT id FROM removed_nodes WHERE row_version > ?1")?;
                let removed = stmt
                    .query_map(params![since], |r| r.get::<_, i64>(0))?
                    .map(|id| id.map(|id| NodeId(id as u64)))
                    .collect::<Result<_, _>>()?;
                NodeChanges::Since {
                    changed,
                    removed,
                    version,
                }
            }
            _ => NodeChanges::All {
                nodes: query_nodes(&tx, "", [])?,
                version,
            },
        };
        drop(tx);
        Ok(changes)
    }

    fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        Ok(query_nodes(&lock(&self.conn), "WHERE id = ?1", params![id.0 as i64])?.pop())
    }

    fn update_node(&self, id: NodeId, update: &NodeUpdate) -> Result<bool, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(current) = query_nodes(&tx, "WHERE id = ?1", params![id.0 as i64])?.pop() else {
            return Err(StoreError::UnknownNode(id.to_string()));
        };
        let next = update.applied_to(&current);
        if let Some(next) = &next {
            tx.execute(
                "UPDATE nodes SET endpoints = ?1, advertise_exit = ?2, advertised_routes = ?3,
                    lan_access = ?4, path_key = ?5, home_relay = ?6
                 WHERE id = ?7",
                params![
                    to_json(&next.endpoints),
                    next.advertise_exit_node,
                    to_json(&next.advertised_routes),
                    next.lan_access,
                    next.path_key.map(|k| k.to_base64()),
                    next.home_relay,
                    id.0 as i64
                ],
            )?;
        }
        tx.commit()?;
        Ok(next.is_some())
    }

    fn touch(&self, ids: &[NodeId], now: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction()?;
        {
            let mut update = tx.prepare_cached("UPDATE nodes SET last_seen = ?1 WHERE id = ?2")?;
            for id in ids {
                update.execute(params![now, id.0 as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn expire_node(&self, hostname: &str, now: i64) -> Result<NodeRecord, StoreError> {
        let conn = lock(&self.conn);
        let changed = conn.execute(
            "UPDATE nodes SET expired_at = COALESCE(expired_at, ?1) WHERE hostname = ?2",
            params![now, hostname],
        )?;
        if changed == 0 {
            return Err(StoreError::UnknownNode(hostname.to_owned()));
        }
        query_nodes(&conn, "WHERE hostname = ?1", params![hostname])?
            .pop()
            .ok_or_else(|| StoreError::UnknownNode(hostname.to_owned()))
    }

    fn remove_node(&self, hostname: &str) -> Result<NodeRecord, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = query_nodes(&tx, "WHERE hostname = ?1", params![hostname])?
            .pop()
            .ok_or_else(|| StoreError::UnknownNode(hostname.to_owned()))?;
        tx.execute("DELETE FROM nodes WHERE id = ?1", params![node.id.0 as i64])?;
        tx.execute(
            "DELETE FROM seen_nonces WHERE node_id = ?1",
            params![node.id.0 as i64],
        )?;
        tx.commit()?;
        Ok(node)
    }

    fn rename_node(&self, hostname: &str, new: &str) -> Result<NodeRecord, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = node_admin::rename(&tx, hostname, new)?;
        tx.commit()?;
        Ok(node)
    }

    fn set_node_tags(&self, hostname: &str, tags: &[String]) -> Result<NodeRecord, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = node_admin::set_tags(&tx, hostname, tags)?;
        tx.commit()?;
        Ok(node)
    }

    fn record_nonce(
        &self,
        node: NodeId,
        nonce: &[u8; 16],
        ts_ms: i64,
        forget_before_ms: i64,
    ) -> Result<bool, StoreError> {
        let conn = lock(&self.conn);
        conn.execute(
            "DELETE FROM seen_nonces WHERE ts_ms < ?1",
            params![forget_before_ms],
        )?;
        let inserted = conn.execute(
            "INSERT OR IGNORE INTO seen_nonces(node_id, nonce, ts_ms) VALUES (?1, ?2, ?3)",
            params![node.0 as i64, &nonce[..], ts_ms],
        )?;
        Ok(inserted == 1)
    }

    fn reserve_generations(&self, count: u64) -> Result<Range<u64>, StoreError> {
        let mut cached = lock(&self.generations);
        if cached.end - cached.start < count {
            let block = count.max(GENERATION_BLOCK);
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored: u64 = match meta_get(&tx, "generation_high_water")? {
                Some(v) => parse(&v, "generation_high_water")?,
                None => 0,
            };
            // Never below the wall clock in microseconds: a database restored
            // from an older backup still issues generations newer than any
            // map a node already holds (they would be refused as replays).
            let high = stored.max(now_micros());
            let new_high = high
                .checked_add(block)
                .ok_or_else(|| StoreError::Corrupt("generation counter overflow".into()))?;
            meta_set(&tx, "generation_high_water", &new_high.to_string())?;
            tx.commit()?;
            // Generation 0 means "nothing applied yet" on nodes: never issue it.
            *cached = (high + 1)..(new_high + 1);
        }
        let start = cached.start;
        cached.start += count;
        Ok(start..start + count)
    }

    fn external_change_marker(&self) -> Result<i64, StoreError> {
        Ok(lock(&self.conn).pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    fn change_notifications(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.changes
            .get_or_init(|| {
                // The file SQLite opened (absolute); none for a database
                // that has no file, which nothing else can write to.
                let path = lock(&self.conn).path().map(std::path::PathBuf::from)?;
                watch::start(&path)
            })
            .clone()
    }

    fn relays(&self) -> Result<Vec<RelayInfo>, StoreError> {
        relays::all(&lock(&self.conn))
    }

    fn add_relay(&self, relay: &RelayInfo, now: i64) -> Result<(), StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        relays::add(&tx, relay, now)?;
        tx.commit()?;
        Ok(())
    }

    fn set_admin_routes(
        &self,
        hostname: &str,
        routes: &AdminRoutes,
    ) -> Result<NodeRecord, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = query_nodes(&tx, "WHERE hostname = ?1", params![hostname])?
            .pop()
            .ok_or_else(|| StoreError::UnknownNode(hostname.to_owned()))?;
        tx.execute(
            "UPDATE nodes SET admin_routes = ?1 WHERE id = ?2",
            params![to_json(routes), node.id.0 as i64],
        )?;
        tx.commit()?;
        Ok(node)
    }

    fn remove_relay(&self, name: &str) -> Result<RelayInfo, StoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let relay = relays::remove(&tx, name)?;
        tx.commit()?;
        Ok(relay)
    }
}

#[cfg(test)]
mod tests;
