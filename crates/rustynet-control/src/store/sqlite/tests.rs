use super::*;
use crate::store::conformance::{conformance_suite, relay};

conformance_suite!(store);

/// A fresh store, and the directory it lives in (dropped after it).
fn store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(&dir.path().join("c.db"), "rustynet.internal").unwrap();
    (store, dir)
}

#[test]
fn generations_never_repeat_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let first = {
        let s = SqliteStore::create(&path, "x.internal").unwrap();
        let a = s.reserve_generations(3).unwrap();
        let b = s.reserve_generations(1).unwrap();
        assert!(a.start >= 1 && b.start >= a.end);
        b.start
    };
    let s = SqliteStore::open(&path).unwrap();
    let after = s.reserve_generations(1).unwrap();
    assert!(after.start > first, "{} <= {first}", after.start);
}

#[test]
fn generations_survive_a_restore_from_an_older_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let backup = dir.path().join("backup.db");
    drop(SqliteStore::create(&path, "x.internal").unwrap());
    std::fs::copy(&path, &backup).unwrap();
    let issued = SqliteStore::open(&path)
        .unwrap()
        .reserve_generations(10_000)
        .unwrap()
        .end;
    // Restore the old backup: new generations are still newer.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let restored = SqliteStore::open(&backup)
        .unwrap()
        .reserve_generations(1)
        .unwrap();
    assert!(restored.start > issued, "{} <= {issued}", restored.start);
}

#[test]
fn schema_newer_than_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(SqliteStore::create(&path, "x.internal").unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn a_version_2_database_migrates_with_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        // The schema as the previous release left it, with a node.
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..2] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.execute_batch(
            "INSERT INTO meta(key, value) VALUES ('suffix', 'x.internal');
             INSERT INTO preauth_keys(key_hash, user, tags, reusable, created_at)
                VALUES (x'00', 'alice', '[]', 1, 1);
             INSERT INTO nodes(hostname, requested_hostname, user, tags, tunnel_ip, node_key,
                signing_key, endpoints, advertise_exit, advertised_routes, created_at,
                preauth_id)
             VALUES ('old', 'old', 'alice', '[]', '100.64.0.9',
                'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=',
                'AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=', '[]', 0, '[]', 1, 1);",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let nodes = s.nodes().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].path_key, nodes[0].home_relay.clone()),
        (None, None)
    );
    assert!(s.relays().unwrap().is_empty());
    s.add_relay(&relay("r1"), 1).unwrap();
}

/// Another process's commit (here: another connection, as an admin command
/// opens) wakes the watcher at once, and `data_version` then tells it
/// apart from the server's own commits.
#[tokio::test]
async fn another_connections_commit_wakes_the_watcher() {
    let (server, dir) = store();
    let woken = server.change_notifications().expect("inotify works here");
    let before = server.external_change_marker().unwrap();
    let admin = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    admin.add_relay(&relay("r9"), 1_700_000_000).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), woken.notified())
        .await
        .expect("no wake-up within 2 s of the commit");
    assert_ne!(server.external_change_marker().unwrap(), before);
}
