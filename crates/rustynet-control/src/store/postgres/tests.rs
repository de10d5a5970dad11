//! The conformance suite and PostgreSQL-specific behaviour (replicas
//! sharing one database), on the throwaway cluster
//! `scripts/ci/with_postgres.sh` starts. Each test gets a database of its
//! own, dropped afterwards.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::store::conformance::{conformance_suite, hash, preauth, reg, relay};
use crate::store::{DatabaseUrl, SqliteStore, copy_sqlite_to_postgres};
use rustynet_proto::PathPublicKey;

conformance_suite!(store);

/// The cluster's connection string (`key=value` form, superuser).
fn cluster() -> Config {
    cluster_text().parse().unwrap()
}

fn cluster_text() -> String {
    let Ok(text) = std::env::var("RUSTYNET_TEST_POSTGRES") else {
        panic!(
            "RUSTYNET_TEST_POSTGRES is not set: the PostgreSQL store tests need a server. \
             Run them through scripts/ci/with_postgres.sh (it starts a throwaway cluster \
             on loopback and stops it afterwards), e.g. \
             scripts/ci/with_postgres.sh cargo test -p rustynet-control store::"
        );
    };
    text
}

/// A database of one test's own.
struct TestDb {
    admin: Config,
    admin_text: String,
    name: String,
}

impl TestDb {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "rn_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin = cluster();
        admin
            .connect(NoTls)
            .unwrap()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let admin_text = cluster_text();
        Self {
            admin,
            admin_text,
            name,
        }
    }

    /// The test database as `--database` takes it.
    fn url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&format!("{} dbname={}", self.admin_text, self.name)).unwrap()
    }

    fn config(&self) -> Config {
        let mut config = self.admin.clone();
        config.dbname(&self.name);
        config
    }

    /// A direct connection to the test's database (for what the store
    /// does not offer: tampering, killing sessions).
    fn connect(&self) -> Client {
        self.config().connect(NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect(NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A fresh store, and its database (dropped after it).
fn store() -> (PostgresStore, TestDb) {
    let db = TestDb::new();
    let store = PostgresStore::create(db.config(), "rustynet.internal").unwrap();
    (store, db)
}

#[test]
fn a_second_init_is_refused_and_open_migrates_nothing_twice() {
    let (s, db) = store();
    preauth(&s, "k", true, None);
    s.register(&reg("k", "a", 1), 200).unwrap();
    assert!(matches!(
        PostgresStore::create(db.config(), "other.internal"),
        Err(StoreError::AlreadyInitialized)
    ));
    let again = PostgresStore::open(db.config()).unwrap();
    assert_eq!(again.suffix().unwrap(), "rustynet.internal");
    assert_eq!(again.nodes().unwrap().len(), 1);
    let version: i64 = db
        .connect()
        .query_one("SELECT version FROM rustynet_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[test]
fn schema_newer_than_build_is_refused() {
    let (s, db) = store();
    drop(s);
    db.connect()
        .batch_execute("UPDATE rustynet_schema SET version = 99")
        .unwrap();
    assert!(matches!(
        PostgresStore::open(db.config()),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn generations_increase_strictly_across_replicas() {
    let (a, db) = store();
    let b = PostgresStore::open(db.config()).unwrap();
    // Alternating replicas: each generation is newer than the last one
    // issued anywhere.
    let mut last = 0;
    for i in 0..50 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let g = replica.reserve_generations(1).unwrap().start;
        assert!(g > last, "{g} <= {last}");
        last = g;
    }
    // Concurrently from both: no generation is issued twice.
    let issued: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|s| {
                scope.spawn(move || {
                    (0..100)
                        .map(|_| s.reserve_generations(2).unwrap())
                        .flat_map(|r| r.collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let unique: HashSet<_> = issued.iter().collect();
    assert_eq!(unique.len(), issued.len());
    assert!(issued.iter().all(|g| *g > last));
}

#[test]
fn generations_survive_a_restore_from_an_older_backup() {
    let (s, db) = store();
    let issued = s.reserve_generations(10_000).unwrap().end;
    // The high-water mark as an old backup had it.
    db.connect()
        .batch_execute("UPDATE meta SET value = '0' WHERE key = 'generation_high_water'")
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let restored = s.reserve_generations(1).unwrap();
    assert!(restored.start > issued, "{} <= {issued}", restored.start);
}

#[test]
fn enrollments_through_two_replicas_never_collide() {
    let (a, db) = store();
    let b = PostgresStore::open(db.config()).unwrap();
    preauth(&a, "k", true, None);
    let nodes: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = [(&a, 0u8), (&b, 100u8)]
            .into_iter()
            .map(|(s, base)| {
                scope.spawn(move || {
                    (1..=20u8)
                        .map(|i| s.register(&reg("k", "web", base + i), 200).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let ips: HashSet<_> = nodes.iter().map(|n| n.tunnel_ip).collect();
    let names: HashSet<_> = nodes.iter().map(|n| n.hostname.clone()).collect();
    assert_eq!((ips.len(), names.len()), (40, 40));
    assert_eq!(b.nodes().unwrap().len(), 40);
    assert_eq!(a.preauth_keys().unwrap()[0].used, 40);
}

#[test]
fn every_committed_change_moves_the_marker_for_other_replicas() {
    let (a, db) = store();
    let b = PostgresStore::open(db.config()).unwrap();
    preauth(&a, "k", true, None);
    let node = a.register(&reg("k", "a", 1), 200).unwrap();
    let before = b.external_change_marker().unwrap();
    // Bookkeeping that changes no map does not move it.
    a.touch(&[node.id], 300).unwrap();
    a.record_nonce(node.id, &[1; 16], 1, 0).unwrap();
    a.reserve_generations(1).unwrap();
    assert_eq!(b.external_change_marker().unwrap(), before);
    let mut last = before;
    let mut expect_moved = |what: &str| {
        let now = b.external_change_marker().unwrap();
        assert!(now > last, "{what} did not move the marker");
        last = now;
    };
    a.set_policy("{}", 1).unwrap();
    expect_moved("set_policy");
    let update = NodeUpdate {
        lan_access: Some(true),
        ..NodeUpdate::default()
    };
    a.update_node(node.id, &update).unwrap();
    expect_moved("update_node");
    a.expire_node("a", 400).unwrap();
    expect_moved("expire_node");
    a.remove_node("a").unwrap();
    expect_moved("remove_node");
    a.revoke_preauth(1, 500).unwrap();
    expect_moved("revoke_preauth");
    a.add_relay(&relay("r1"), 1).unwrap();
    expect_moved("add_relay");
    a.remove_relay("r1").unwrap();
    expect_moved("remove_relay");
}

#[test]
fn a_lost_connection_is_re_established() {
    let (s, db) = store();
    preauth(&s, "k", true, None);
    let killed: i64 = db
        .connect()
        .query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = $1 AND application_name = 'rustynet-control'",
            &[&db.name],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // The call that finds the connection dead may fail; the next one
    // reconnects.
    let first = s.preauth_keys();
    let keys = match first {
        Ok(keys) => keys,
        Err(_) => s.preauth_keys().unwrap(),
    };
    assert_eq!(keys.len(), 1);
}

#[test]
fn a_sqlite_store_copies_over_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let sqlite = SqliteStore::create(&path, "copy.internal").unwrap();
    preauth(&sqlite, "k", true, None);
    preauth(&sqlite, "old", false, Some(1_000));
    let a = sqlite.register(&reg("k", "a", 1), 200).unwrap();
    sqlite.register(&reg("k", "b", 2), 201).unwrap();
    sqlite.register(&reg("k", "c", 3), 202).unwrap();
    // Node 3's id was issued: the copy must not issue it again.
    sqlite.remove_node("c").unwrap();
    let update = NodeUpdate {
        lan_access: Some(true),
        path_key: Some(PathPublicKey([5; 32])),
        home_relay: Some(Some("r1".into())),
        ..NodeUpdate::default()
    };
    sqlite.update_node(a.id, &update).unwrap();
    sqlite.expire_node("b", 300).unwrap();
    sqlite.revoke_preauth(2, 310).unwrap();
    sqlite.set_policy(r#"{"acls":[]}"#, 320).unwrap();
    sqlite.add_relay(&relay("r1"), 330).unwrap();
    assert!(sqlite.record_nonce(a.id, &[9; 16], 5_000, 0).unwrap());
    let issued = sqlite.reserve_generations(1).unwrap().start;
    let (nodes, keys, relays) = (
        sqlite.nodes().unwrap(),
        sqlite.preauth_keys().unwrap(),
        sqlite.relays().unwrap(),
    );
    drop(sqlite);

    let db = TestDb::new();
    let copied = copy_sqlite_to_postgres(&path, &db.url()).unwrap();
    assert_eq!(
        (
            copied.nodes,
            copied.preauth_keys,
            copied.relays,
            copied.policy
        ),
        (2, 2, 1, true)
    );
    let pg = PostgresStore::open(db.config()).unwrap();
    assert_eq!(pg.suffix().unwrap(), "copy.internal");
    assert_eq!(pg.nodes().unwrap(), nodes);
    assert_eq!(pg.preauth_keys().unwrap(), keys);
    assert_eq!(pg.relays().unwrap(), relays);
    assert_eq!(pg.policy().unwrap().as_deref(), Some(r#"{"acls":[]}"#));
    // The key hashes, nonces, id and address cursors and generations came
    // along.
    assert_eq!(pg.usable_preauth(&hash("k"), 400).unwrap().id, 1);
    assert!(!pg.record_nonce(a.id, &[9; 16], 5_000, 0).unwrap());
    let d = pg.register(&reg("k", "d", 4), 400).unwrap();
    assert!(d.id.0 > 3, "id {} reused", d.id);
    assert!(nodes.iter().all(|n| n.tunnel_ip != d.tunnel_ip));
    assert!(pg.reserve_generations(1).unwrap().start > issued);
    // Copying into a database in use is refused, and changes nothing.
    assert!(matches!(
        copy_sqlite_to_postgres(&path, &db.url()),
        Err(StoreError::AlreadyInitialized)
    ));
    assert_eq!(pg.nodes().unwrap().len(), 3);
}

#[test]
fn a_connection_string_asking_for_tls_is_refused_not_sent_in_clear() {
    let db = TestDb::new();
    let mut config = db.config();
    config.ssl_mode(postgres::config::SslMode::Require);
    assert!(matches!(
        PostgresStore::open(config),
        Err(StoreError::Postgres(_))
    ));
}

#[test]
fn rate_buckets_are_shared_by_replicas() {
    let (a, db) = store();
    let b = PostgresStore::open(db.config()).unwrap();
    let every = std::time::Duration::from_secs(3600);
    let take = |s: &PostgresStore, node: u64, kind: RateKind| {
        s.take_shared_token(NodeId(node), kind, 3, every)
            .unwrap()
            .unwrap()
    };
    // Three tokens for node 1's updates, drawn through either replica.
    assert!(take(&a, 1, RateKind::Update));
    assert!(take(&b, 1, RateKind::Update));
    assert!(take(&a, 1, RateKind::Update));
    assert!(!take(&b, 1, RateKind::Update), "a fourth through B");
    assert!(!take(&a, 1, RateKind::Update), "a fourth through A");
    // Other nodes and other kinds have buckets of their own.
    assert!(take(&b, 2, RateKind::Update));
    assert!(take(&b, 1, RateKind::RelayTicket));
    // Tokens come back with time (by the database clock).
    let fast = std::time::Duration::from_millis(20);
    for _ in 0..3 {
        assert!(
            a.take_shared_token(NodeId(3), RateKind::Update, 1, fast)
                .unwrap()
                .unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
}
