//! PostgreSQL implementation of [`Store`], for several control replicas
//! sharing one database.
//!
//! The driver's blocking client runs its own small runtime, which must not
//! be entered from async code, so the store owns one worker thread holding
//! the connection: each call sends the worker a job and waits for its
//! answer. That keeps the [`Store`] trait synchronous (callable from
//! `spawn_blocking` and from async code alike) and serialises this
//! process's queries on one connection, as SQLite's single connection does.
//! A dropped connection is re-established before the next job.
//!
//! Writes that must not race take a transaction-scoped advisory lock, so
//! replicas write one at a time like SQLite's `BEGIN IMMEDIATE`. Every
//! committed change bumps `change_marker` in the same transaction; map
//! generations come from one row updated atomically, so they increase
//! strictly across every replica and never fall below the database clock in
//! microseconds (a database restored from an older backup still issues
//! newer generations).

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::mpsc;
use std::time::Duration;

use postgres::{Client, Config, GenericClient, NoTls, Row, Transaction};
use rustynet_policy::AdminRoutes;
use rustynet_proto::NodeId;
use rustynet_proto::netmap::RelayInfo;

use super::migrations::pending;
use super::sqlite::{address_span, from_json, parse, to_json};
use super::{
    NewPreauth, NodeChanges, NodeRecord, NodeUpdate, PreauthRecord, RateKind, Registration,
    Renewal, Store, StoreError,
};
use crate::names::assign_label;

mod import;
mod listen;
mod migrations;
mod node_admin;
mod relays;

pub(super) use migrations::MIGRATIONS;

/// The advisory lock every writing transaction holds ("RustyNet").
const WRITE_LOCK: i64 = 0x5275_7374_794e_6574;

/// How long to wait for the server when (re)connecting, unless the
/// connection string says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A query for the worker; returns whether the connection failed under it
/// (it is replaced before the next job).
type Job = Box<dyn FnOnce(&mut Client) -> bool + Send>;

/// The PostgreSQL store.
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
    /// How to open more connections (the change listener's).
    config: Config,
    /// Woken by the change listener, started on first use.
    changes: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
}

impl PostgresStore {
    /// Connects, migrates, and starts the worker that owns the connection.
    pub(crate) fn open(mut config: Config) -> Result<Self, StoreError> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("rustynet-control");
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        let listener_config = config.clone();
        std::thread::Builder::new()
            .name("rustynet-postgres".into())
            .spawn(move || {
                let client = config
                    .connect(NoTls)
                    .map_err(StoreError::from)
                    .and_then(|mut c| migrate(&mut c).map(|()| c));
                let client = match client {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                work(&config, client, &queue);
            })
            .map_err(|_| StoreError::WorkerStopped)?;
        ready.recv().map_err(|_| StoreError::WorkerStopped)??;
        Ok(Self {
            jobs,
            config: listener_config,
            changes: std::sync::OnceLock::new(),
        })
    }

    /// Opens the store and records the Magic DNS `suffix`; refuses a
    /// database that already has one (another control server's).
    pub(crate) fn create(config: Config, suffix: &str) -> Result<Self, StoreError> {
        let store = Self::open(config)?;
        let suffix = suffix.to_owned();
        store.run(move |c| {
            let mut tx = write_tx(c)?;
            let inserted = tx.execute(
                "INSERT INTO meta(key, value) VALUES ('suffix', $1) ON CONFLICT (key) DO NOTHING",
                &[&suffix],
            )?;
            if inserted == 0 {
                return Err(StoreError::AlreadyInitialized);
            }
            changed(&mut tx)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `job` on the worker's connection and returns its result.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer_tx, answer) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c: &mut Client| {
                let result = job(c);
                // The connection is unusable: it failed (reset, closed) or
                // the server ended the session (FATAL).
                let broken = matches!(&result, Err(StoreError::Postgres(e))
                    if e.as_db_error().is_none_or(|d| matches!(d.severity(), "FATAL" | "PANIC")));
                let _ = answer_tx.send(result);
                broken
            }))
            .map_err(|_| StoreError::WorkerStopped)?;
        answer.recv().map_err(|_| StoreError::WorkerStopped)?
    }
}

/// The worker: runs jobs until the store is dropped, reconnecting first
/// when the connection was lost (a failed reconnect fails that job).
fn work(config: &Config, mut client: Client, queue: &mpsc::Receiver<Job>) {
    let mut broken = false;
    for job in queue {
        if broken || client.is_closed() {
            match config.connect(NoTls) {
                Ok(c) => {
                    client = c;
                    tracing::info!("reconnected to the database");
                }
                Err(e) => tracing::warn!(error = %e, "cannot reconnect to the database"),
            }
        }
        broken = job(&mut client);
    }
}

/// Applies pending migrations under the write lock (replicas starting
/// together migrate once).
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = write_tx(client)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS rustynet_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM rustynet_schema", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO rustynet_schema(version) VALUES (0)", &[])?;
            0
        }
    };
    for index in pending(version, MIGRATIONS.len())? {
        tx.batch_execute(MIGRATIONS[index])?;
        let next = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute("UPDATE rustynet_schema SET version = $1", &[&next])?;
    }
    tx.commit()?;
    Ok(())
}

/// A transaction holding the write lock.
fn write_tx(client: &mut Client) -> Result<Transaction<'_>, StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1::BIGINT)", &[&WRITE_LOCK])?;
    Ok(tx)
}

/// Records that the transaction changes what maps are built from.
fn changed(tx: &mut Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE meta SET value = (value::BIGINT + 1)::TEXT WHERE key = 'change_marker'",
        &[],
    )?;
    // Delivered to every listening replica when (and only if) the
    // transaction commits; several in one transaction arrive as one.
    tx.execute("SELECT pg_notify($1, '')", &[&listen::CHANNEL])?;
    Ok(())
}

fn meta_get(c: &mut impl GenericClient, key: &str) -> Result<Option<String>, StoreError> {
    Ok(
        c.query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|r| r.try_get(0))
            .transpose()?,
    )
}

const NODE_COLUMNS: &str = r#"id, hostname, requested_hostname, "user", tags, tunnel_ip, node_key,
    signing_key, endpoints, advertise_exit, advertised_routes, created_at, expired_at, last_seen,
    lan_access, key_expires_at, path_key, home_relay, admin_routes"#;

fn node_from_row(row: &Row) -> Result<NodeRecord, StoreError> {
    let id: i64 = row.try_get(0)?;
    let tags: String = row.try_get(4)?;
    let ip: String = row.try_get(5)?;
    let node_key: String = row.try_get(6)?;
    let signing_key: String = row.try_get(7)?;
    let endpoints: String = row.try_get(8)?;
    let routes: String = row.try_get(10)?;
    let path_key: Option<String> = row.try_get(16)?;
    let admin_routes: String = row.try_get(18)?;
    Ok(NodeRecord {
        id: NodeId(u64::try_from(id).map_err(|_| StoreError::Corrupt("node id".into()))?),
        hostname: row.try_get(1)?,
        requested_hostname: row.try_get(2)?,
        user: row.try_get(3)?,
        tags: from_json(&tags, "tags")?,
        tunnel_ip: parse(&ip, "tunnel_ip")?,
        node_key: parse(&node_key, "node_key")?,
        signing_key: parse(&signing_key, "signing_key")?,
        endpoints: from_json(&endpoints, "endpoints")?,
        advertise_exit_node: row.try_get(9)?,
        advertised_routes: from_json(&routes, "advertised_routes")?,
        created_at: row.try_get(11)?,
        expired_at: row.try_get(12)?,
        last_seen: row.try_get(13)?,
        lan_access: row.try_get(14)?,
        key_expires_at: row.try_get(15)?,
        path_key: path_key.map(|k| parse(&k, "path_key")).transpose()?,
        home_relay: row.try_get(17)?,
        admin_routes: from_json(&admin_routes, "admin_routes")?,
    })
}

fn query_nodes(
    c: &mut impl GenericClient,
    filter: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<NodeRecord>, StoreError> {
    c.query(
        format!("SELECT {NODE_COLUMNS} FROM nodes {filter} ORDER BY id").as_str(),
        args,
    )?
    .iter()
    .map(node_from_row)
    .collect()
}

fn node_by_id(c: &mut impl GenericClient, id: i64) -> Result<Option<NodeRecord>, StoreError> {
    Ok(query_nodes(c, "WHERE id = $1", &[&id])?.pop())
}

const PREAUTH_COLUMNS: &str =
    r#"id, "user", tags, reusable, expires_at, used, created_at, revoked_at"#;

fn preauth_from_row(row: &Row) -> Result<PreauthRecord, StoreError> {
    let tags: String = row.try_get(2)?;
    Ok(PreauthRecord {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        tags: from_json(&tags, "tags")?,
        reusable: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        used: row.try_get(5)?,
        created_at: row.try_get(6)?,
        revoked_at: row.try_get(7)?,
    })
}

fn preauth_by_id(c: &mut impl GenericClient, id: i64) -> Result<PreauthRecord, StoreError> {
    c.query_opt(
        format!("SELECT {PREAUTH_COLUMNS} FROM preauth_keys WHERE id = $1").as_str(),
        &[&id],
    )?
    .map(|r| preauth_from_row(&r))
    .transpose()?
    .ok_or(StoreError::UnknownPreauth(id))
}

/// The pre-auth key hashing to `key_hash`, if it may enroll a node at `now`.
fn usable_preauth(
    c: &mut impl GenericClient,
    key_hash: &[u8; 32],
    now: i64,
) -> Result<PreauthRecord, StoreError> {
    let hash: &[u8] = key_hash;
    let key = c
        .query_opt(
            format!("SELECT {PREAUTH_COLUMNS} FROM preauth_keys WHERE key_hash = $1").as_str(),
            &[&hash],
        )?
        .map(|r| preauth_from_row(&r))
        .transpose()?;
    PreauthRecord::usable(key, now)
}

/// The next free tunnel address from the stored cursor on (inside the
/// write transaction).
fn allocate_ip(tx: &mut Transaction<'_>) -> Result<Ipv4Addr, StoreError> {
    let (first, last) = address_span();
    let cursor = match meta_get(tx, "next_ip")? {
        Some(v) => parse::<u32>(&v, "next_ip")?.clamp(first, last),
        None => first,
    };
    let span = u64::from(last - first) + 1;
    for step in 0..span {
        let offset = (u64::from(cursor - first) + step) % span;
        let candidate = first + offset as u32;
        let ip = Ipv4Addr::from(candidate).to_string();
        if tx
            .query_opt("SELECT 1 FROM nodes WHERE tunnel_ip = $1", &[&ip])?
            .is_none()
        {
            let next = if candidate == last {
                first
            } else {
                candidate + 1
            };
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('next_ip', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&next.to_string()],
            )?;
            return Ok(Ipv4Addr::from(candidate));
        }
    }
    Err(StoreError::AddressesExhausted)
}

/// A free host label derived from `requested` (inside the write
/// transaction).
fn allocate_name(tx: &mut Transaction<'_>, requested: &str) -> Result<String, StoreError> {
    let mut failure = None;
    let label = assign_label(requested, |l| {
        match tx.query_opt("SELECT 1 FROM nodes WHERE hostname = $1", &[&l]) {
            Ok(row) => row.is_some(),
            Err(e) => {
                if failure.is_none() {
                    failure = Some(e);
                }
                true
            }
        }
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    label.ok_or_else(|| StoreError::NamesExhausted(requested.to_owned()))
}

fn register(c: &mut Client, reg: &Registration, now: i64) -> Result<NodeRecord, StoreError> {
    let mut tx = write_tx(c)?;
    let key = usable_preauth(&mut tx, &reg.key_hash, now)?;
    let (node_key, signing_key) = (reg.node_key.to_base64(), reg.signing_key.to_base64());
    let duplicate: bool = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM nodes WHERE node_key = $1 OR signing_key = $2)",
            &[&node_key, &signing_key],
        )?
        .try_get(0)?;
    if duplicate {
        return Err(StoreError::DuplicateKey);
    }
    let ip = allocate_ip(&mut tx)?.to_string();
    let hostname = allocate_name(&mut tx, &reg.hostname)?;
    tx.execute(
        "UPDATE preauth_keys SET used = used + 1 WHERE id = $1",
        &[&key.id],
    )?;
    let path_key = reg.path_key.map(|k| k.to_base64());
    let id: i64 = tx
        .query_one(
            r#"INSERT INTO nodes(hostname, requested_hostname, "user", tags, tunnel_ip, node_key,
                signing_key, endpoints, advertise_exit, advertised_routes, created_at, last_seen,
                preauth_id, key_expires_at, path_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14)
             RETURNING id"#,
            &[
                &hostname,
                &reg.hostname,
                &key.user,
                &to_json(&key.tags),
                &ip,
                &node_key,
                &signing_key,
                &to_json(&reg.endpoints),
                &reg.advertise_exit_node,
                &to_json(&reg.advertised_routes),
                &now,
                &key.id,
                &reg.key_expires_at,
                &path_key,
            ],
        )?
        .try_get(0)?;
    changed(&mut tx)?;
    let node = node_by_id(&mut tx, id)?
        .ok_or_else(|| StoreError::Corrupt("inserted node vanished".into()))?;
    tx.commit()?;
    Ok(node)
}

fn renew(c: &mut Client, renewal: &Renewal, now: i64) -> Result<NodeRecord, StoreError> {
    let reg = &renewal.registration;
    let id = renewal.node.0 as i64;
    let mut tx = write_tx(c)?;
    let key = usable_preauth(&mut tx, &reg.key_hash, now)?;
    let node = node_by_id(&mut tx, id)?
        .ok_or_else(|| StoreError::UnknownNode(renewal.node.to_string()))?;
    if key.user != node.user {
        return Err(StoreError::RenewUserMismatch {
            key_user: key.user,
            node_user: node.user,
        });
    }
    let (node_key, signing_key) = (reg.node_key.to_base64(), reg.signing_key.to_base64());
    let duplicate: bool = tx
        .query_one(
            "SELECT EXISTS(SELECT 1 FROM nodes WHERE id != $3 AND (node_key = $1 OR signing_key = $2))",
            &[&node_key, &signing_key, &id],
        )?
        .try_get(0)?;
    if duplicate || reg.signing_key == node.signing_key || reg.node_key == node.node_key {
        return Err(StoreError::DuplicateKey);
    }
    tx.execute(
        "UPDATE preauth_keys SET used = used + 1 WHERE id = $1",
        &[&key.id],
    )?;
    tx.execute(
        "UPDATE nodes SET node_key = $1, signing_key = $2, endpoints = $3, advertise_exit = $4,
            advertised_routes = $5, key_expires_at = $6, last_seen = $7
         WHERE id = $8",
        &[
            &node_key,
            &signing_key,
            &to_json(&reg.endpoints),
            &reg.advertise_exit_node,
            &to_json(&reg.advertised_routes),
            &reg.key_expires_at,
            &now,
            &id,
        ],
    )?;
    // Nonces recorded for the old key mean nothing to the new one.
    tx.execute("DELETE FROM seen_nonces WHERE node_id = $1", &[&id])?;
    changed(&mut tx)?;
    let node = node_by_id(&mut tx, id)?
        .ok_or_else(|| StoreError::Corrupt("renewed node vanished".into()))?;
    tx.commit()?;
    Ok(node)
}

fn update_node(c: &mut Client, id: NodeId, update: &NodeUpdate) -> Result<bool, StoreError> {
    let mut tx = write_tx(c)?;
    let Some(current) = node_by_id(&mut tx, id.0 as i64)? else {
        return Err(StoreError::UnknownNode(id.to_string()));
    };
    let next = update.applied_to(&current);
    if let Some(next) = &next {
        tx.execute(
            "UPDATE nodes SET endpoints = $1, advertise_exit = $2, advertised_routes = $3,
                lan_access = $4, path_key = $5, home_relay = $6
             WHERE id = $7",
            &[
                &to_json(&next.endpoints),
                &next.advertise_exit_node,
                &to_json(&next.advertised_routes),
                &next.lan_access,
                &next.path_key.map(|k| k.to_base64()),
                &next.home_relay,
                &(id.0 as i64),
            ],
        )?;
        changed(&mut tx)?;
    }
    tx.commit()?;
    Ok(next.is_some())
}

impl Store for PostgresStore {
    fn suffix(&self) -> Result<String, StoreError> {
        self.run(|c| meta_get(c, "suffix"))?
            .ok_or_else(|| StoreError::Corrupt("no Magic DNS suffix recorded (run init)".into()))
    }

    fn policy(&self) -> Result<Option<String>, StoreError> {
        self.run(|c| {
            Ok(c.query_opt("SELECT json FROM policy WHERE id = 1", &[])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    fn set_policy(&self, json: &str, now: i64) -> Result<(), StoreError> {
        let json = json.to_owned();
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            tx.execute(
                "INSERT INTO policy(id, json, updated_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE SET json = excluded.json,
                    updated_at = excluded.updated_at",
                &[&json, &now],
            )?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn create_preauth(&self, new: &NewPreauth, now: i64) -> Result<PreauthRecord, StoreError> {
        let new = new.clone();
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let hash: &[u8] = &new.key_hash;
            let id: i64 = tx
                .query_one(
                    r#"INSERT INTO preauth_keys(key_hash, "user", tags, reusable, expires_at,
                        created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"#,
                    &[
                        &hash,
                        &new.user,
                        &to_json(&new.tags),
                        &new.reusable,
                        &new.expires_at,
                        &now,
                    ],
                )?
                .try_get(0)?;
            changed(&mut tx)?;
            let record = preauth_by_id(&mut tx, id)?;
            tx.commit()?;
            Ok(record)
        })
    }

    fn usable_preauth(&self, key_hash: &[u8; 32], now: i64) -> Result<PreauthRecord, StoreError> {
        let key_hash = *key_hash;
        self.run(move |c| usable_preauth(c, &key_hash, now))
    }

    fn preauth_keys(&self) -> Result<Vec<PreauthRecord>, StoreError> {
        self.run(|c| {
            c.query(
                format!("SELECT {PREAUTH_COLUMNS} FROM preauth_keys ORDER BY id").as_str(),
                &[],
            )?
            .iter()
            .map(preauth_from_row)
            .collect()
        })
    }

    fn revoke_preauth(&self, id: i64, now: i64) -> Result<PreauthRecord, StoreError> {
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            tx.execute(
                "UPDATE preauth_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2",
                &[&now, &id],
            )?;
            let record = preauth_by_id(&mut tx, id)?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(record)
        })
    }

    fn register(&self, reg: &Registration, now: i64) -> Result<NodeRecord, StoreError> {
        let reg = reg.clone();
        self.run(move |c| register(c, &reg, now))
    }

    fn renew(&self, renewal: &Renewal, now: i64) -> Result<NodeRecord, StoreError> {
        let renewal = renewal.clone();
        self.run(move |c| renew(c, &renewal, now))
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.run(|c| query_nodes(c, "", &[]))
    }

    fn node_changes(&self, since: Option<i64>) -> Result<NodeChanges, StoreError> {
        self.run(move |c| {
            // One snapshot for the versions and the rows.
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let version: i64 = tx
                .query_one("SELECT last FROM row_versions WHERE id = 1", &[])?
                .try_get(0)?;
            let changes = match since {
                Some(since) if since <= version => NodeChanges::Since {
                    changed: query_nodes(&mut tx, "WHERE row_version > $1", &[&since])?,
                    removed: tx
                        .query(
                            "SELECT id FROM removed_nodes WHERE row_version > $1",
                            &[&since],
                        )?
                        .iter()
                        .map(|r| r.try_get::<_, i64>(0).map(|id| NodeId(id as u64)))
                        .collect::<Result<_, _>>()?,
                    version,
                },
                _ => NodeChanges::All {
                    nodes: query_nodes(&mut tx, "", &[])?,
                    version,
                },
            };
            tx.commit()?;
            Ok(changes)
        })
    }

    fn node(&self, id: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        self.run(move |c| node_by_id(c, id.0 as i64))
    }

    fn update_node(&self, id: NodeId, update: &NodeUpdate) -> Result<bool, StoreError> {
        let update = update.clone();
        self.run(move |c| update_node(c, id, &update))
    }

    fn touch(&self, ids: &[NodeId], now: i64) -> Result<(), StoreError> {
        let ids: Vec<i64> = ids.iter().map(|id| id.0 as i64).collect();
        self.run(move |c| {
            c.execute(
                "UPDATE nodes SET last_seen = $1 WHERE id = ANY($2)",
                &[&now, &ids],
            )?;
            Ok(())
        })
    }

    fn expire_node(&self, hostname: &str, now: i64) -> Result<NodeRecord, StoreError> {
        let hostname = hostname.to_owned();
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let node = query_nodes(&mut tx, "WHERE hostname = $1", &[&hostname])?
                .pop()
                .ok_or_else(|| StoreError::UnknownNode(hostname.clone()))?;
            tx.execute(
                "UPDATE nodes SET expired_at = COALESCE(expired_at, $1) WHERE id = $2",
                &[&now, &(node.id.0 as i64)],
            )?;
            changed(&mut tx)?;
            let node = node_by_id(&mut tx, node.id.0 as i64)?
                .ok_or_else(|| StoreError::UnknownNode(hostname.clone()))?;
            tx.commit()?;
            Ok(node)
        })
    }

    fn remove_node(&self, hostname: &str) -> Result<NodeRecord, StoreError> {
        let hostname = hostname.to_owned();
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let node = query_nodes(&mut tx, "WHERE hostname = $1", &[&hostname])?
                .pop()
                .ok_or_else(|| StoreError::UnknownNode(hostname.clone()))?;
            let id = node.id.0 as i64;
            tx.execute("DELETE FROM nodes WHERE id = $1", &[&id])?;
            tx.execute("DELETE FROM seen_nonces WHERE node_id = $1", &[&id])?;
            tx.execute("DELETE FROM rate_buckets WHERE node_id = $1", &[&id])?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(node)
        })
    }

    fn rename_node(&self, hostname: &str, new: &str) -> Result<NodeRecord, StoreError> {
        let (hostname, new) = (hostname.to_owned(), new.to_owned());
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let node = node_admin::rename(&mut tx, &hostname, &new)?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(node)
        })
    }

    fn set_node_tags(&self, hostname: &str, tags: &[String]) -> Result<NodeRecord, StoreError> {
        let (hostname, tags) = (hostname.to_owned(), to_json(&tags));
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let node = node_admin::set_column(&mut tx, &hostname, "tags", &tags)?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(node)
        })
    }

    fn set_admin_routes(
        &self,
        hostname: &str,
        routes: &AdminRoutes,
    ) -> Result<NodeRecord, StoreError> {
        let (hostname, routes) = (hostname.to_owned(), to_json(routes));
        self.run(move |c| {
            let mut tx = write_tx(c)?;
            let before = node_admin::by_name(&mut tx, &hostname)?;
            node_admin::set_column(&mut tx, &hostname, "admin_routes", &routes)?;
            changed(&mut tx)?;
            tx.commit()?;
            Ok(before)
        })
    }

    fn record_nonce(
        &self,
        node: NodeId,
        nonce: &[u8; 16],
        ts_ms: i64,
        forget_before_ms: i64,
    ) -> Result<bool, StoreError> {
        let nonce = *nonce;
        self.run(move |c| {
            c.execute(
                "DELETE FROM seen_nonces WHERE ts_ms < $1",
                &[&forget_before_ms],
            )?;
            let nonce: &[u8] = &nonce;
            let inserted = c.execute(
                "INSERT INTO seen_nonces(node_id, nonce, ts_ms) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&(node.0 as i64), &nonce, &ts_ms],
            )?;
            Ok(inserted == 1)
        })
    }

    fn reserve_generations(&self, count: u64) -> Result<Range<u64>, StoreError> {
        let n = i64::try_from(count)
            .map_err(|_| StoreError::Corrupt("generation count overflow".into()))?;
        // One statement: the row lock orders concurrent reservations from
        // every replica, so ranges never overlap and only grow. Nothing is
        // cached here: a node moving to another replica must still see its
        // generations increase.
        let high: i64 = self.run(move |c| {
            Ok(c.query_one(
                "UPDATE meta SET value = (GREATEST(value::BIGINT,
                    (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT) + $1::BIGINT)::TEXT
                 WHERE key = 'generation_high_water'
                 RETURNING value::BIGINT",
                &[&n],
            )?
            .try_get(0)?)
        })?;
        let high =
            u64::try_from(high).map_err(|_| StoreError::Corrupt("generation_high_water".into()))?;
        // Generation 0 means "nothing applied yet" on nodes: never issue it.
        Ok((high + 1 - count)..(high + 1))
    }

    fn external_change_marker(&self) -> Result<i64, StoreError> {
        let marker = self.run(|c| meta_get(c, "change_marker"))?;
        parse(
            &marker.ok_or_else(|| StoreError::Corrupt("no change_marker".into()))?,
            "change_marker",
        )
    }

    fn change_notifications(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(
            self.changes
                .get_or_init(|| listen::start(self.config.clone()))
                .clone(),
        )
    }

    fn take_shared_token(
        &self,
        node: NodeId,
        kind: RateKind,
        burst: u32,
        every: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let id = i64::try_from(node.0).map_err(|_| StoreError::Corrupt("node id".into()))?;
        let kind = kind as i16;
        let full = i64::from(burst) * 1000;
        let every_ms = i64::try_from(every.as_millis().max(1)).unwrap_or(i64::MAX);
        self.run(move |c| {
            // One statement: the row lock orders replicas drawing from the
            // same bucket. A new bucket starts full less this token; an
            // existing one earns back what the database clock says passed
            // (capped at full) and is only written when a token is left.
            let taken = c.query_opt(
                "WITH now AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT AS ms)
                 INSERT INTO rate_buckets AS b (node_id, kind, milli, at_ms)
                 SELECT $1::BIGINT, $2::SMALLINT, $3::BIGINT - 1000, ms FROM now
                 ON CONFLICT (node_id, kind) DO UPDATE
                   SET milli = LEAST($3::BIGINT,
                         b.milli + GREATEST(EXCLUDED.at_ms - b.at_ms, 0) * 1000 / $4::BIGINT) - 1000,
                       at_ms = EXCLUDED.at_ms
                   WHERE LEAST($3::BIGINT,
                         b.milli + GREATEST(EXCLUDED.at_ms - b.at_ms, 0) * 1000 / $4::BIGINT) >= 1000
                 RETURNING 1",
                &[&id, &kind, &full, &every_ms],
            )?;
            Ok(Some(taken.is_some()))
        })
    }

    fn relays(&self) -> Result<Vec<RelayInfo>, StoreError> {
        self.run(relays::all)
    }

    fn add_relay(&self, relay: &RelayInfo, now: i64) -> Result<(), StoreError> {
        let relay = relay.clone();
        self.run(move |c| relays::add(c, &relay, now))
    }

    fn remove_relay(&self, name: &str) -> Result<RelayInfo, StoreError> {
        let name = name.to_owned();
        self.run(move |c| relays::remove(c, &name))
    }
}

#[cfg(test)]
mod tests;
