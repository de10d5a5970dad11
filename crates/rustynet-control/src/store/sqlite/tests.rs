use super::*;
use crate::store::MAX_REGISTERED_RELAYS;
use rustynet_proto::{SigningPublicKey, TunnelPublicKey};
use sha2::{Digest as _, Sha256};

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::create(&dir.path().join("c.db"), "rustynet.internal").unwrap();
    (dir, store)
}

fn preauth(store: &SqliteStore, key: &str, reusable: bool, expires_at: Option<i64>) {
    store
        .create_preauth(
            &NewPreauth {
                key_hash: hash(key),
                user: "alice".into(),
                tags: vec!["tag:exit".into()],
                reusable,
                expires_at,
            },
            100,
        )
        .unwrap();
}

fn reg(key: &str, host: &str, seed: u8) -> Registration {
    Registration {
        key_hash: hash(key),
        hostname: host.into(),
        node_key: TunnelPublicKey([seed; 32]),
        signing_key: SigningPublicKey([seed; 32]),
        endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
        advertise_exit_node: false,
        advertised_routes: vec![],
        path_key: None,
        key_expires_at: None,
    }
}

#[test]
fn register_assigns_ip_name_and_tags() {
    let (_d, s) = store();
    preauth(&s, "k", true, None);
    let a = s.register(&reg("k", "web", 1), 200).unwrap();
    let b = s.register(&reg("k", "web", 2), 201).unwrap();
    assert_eq!(a.hostname, "web");
    assert_eq!(b.hostname, "web-2");
    assert_eq!(b.requested_hostname, "web");
    assert_ne!(a.tunnel_ip, b.tunnel_ip);
    assert!(TUNNEL_NET.contains(&a.tunnel_ip));
    assert_eq!(a.tags, ["tag:exit"]);
    assert_eq!(a.user, "alice");
    assert!(a.id < b.id);
}

#[test]
fn bad_keys_change_nothing() {
    let (_d, s) = store();
    preauth(&s, "once", false, None);
    preauth(&s, "old", true, Some(150));
    assert!(matches!(
        s.register(&reg("nope", "a", 1), 200),
        Err(StoreError::AuthKeyInvalid)
    ));
    assert!(matches!(
        s.register(&reg("old", "a", 1), 200),
        Err(StoreError::AuthKeyExpired)
    ));
    s.register(&reg("once", "a", 1), 200).unwrap();
    assert!(matches!(
        s.register(&reg("once", "b", 2), 200),
        Err(StoreError::AuthKeyUsed)
    ));
    // Same keys again with a valid pre-auth key: duplicate, and nothing spent.
    preauth(&s, "multi", true, None);
    assert!(matches!(
        s.register(&reg("multi", "c", 1), 200),
        Err(StoreError::DuplicateKey)
    ));
    assert_eq!(s.nodes().unwrap().len(), 1);
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
fn nonces_are_single_use_and_forgotten() {
    let (_d, s) = store();
    assert!(s.record_nonce(NodeId(1), &[1; 16], 1000, 0).unwrap());
    assert!(!s.record_nonce(NodeId(1), &[1; 16], 1000, 0).unwrap());
    assert!(s.record_nonce(NodeId(2), &[1; 16], 1000, 0).unwrap());
    // Old entries are pruned once outside the window.
    assert!(s.record_nonce(NodeId(3), &[2; 16], 5000, 2000).unwrap());
    assert!(s.record_nonce(NodeId(1), &[1; 16], 5000, 2000).unwrap());
}

#[test]
fn update_expire_remove() {
    let (_d, s) = store();
    preauth(&s, "k", true, None);
    let a = s.register(&reg("k", "a", 1), 200).unwrap();
    let upd = NodeUpdate {
        advertise_exit_node: Some(true),
        ..NodeUpdate::default()
    };
    assert!(s.update_node(a.id, &upd).unwrap());
    assert!(!s.update_node(a.id, &upd).unwrap());
    assert!(s.node(a.id).unwrap().unwrap().advertise_exit_node);
    let e = s.expire_node("a", 300).unwrap();
    assert!(e.is_expired(300));
    assert!(matches!(
        s.expire_node("zz", 300),
        Err(StoreError::UnknownNode(_))
    ));
    s.remove_node("a").unwrap();
    assert!(s.node(a.id).unwrap().is_none());
    // Ids are never reused.
    let b = s.register(&reg("k", "a", 2), 400).unwrap();
    assert!(b.id > a.id);
    assert_eq!(b.hostname, "a");
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
fn path_key_and_home_relay_are_stored() {
    use rustynet_proto::PathPublicKey;
    let (_d, s) = store();
    preauth(&s, "k", true, None);
    let mut with_key = reg("k", "a", 1);
    with_key.path_key = Some(PathPublicKey([5; 32]));
    let a = s.register(&with_key, 200).unwrap();
    assert_eq!(a.path_key, Some(PathPublicKey([5; 32])));
    assert_eq!(a.home_relay, None);
    let b = s.register(&reg("k", "b", 2), 200).unwrap();
    assert_eq!(b.path_key, None);

    let set = NodeUpdate {
        path_key: Some(PathPublicKey([6; 32])),
        home_relay: Some(Some("r1".into())),
        ..NodeUpdate::default()
    };
    assert!(s.update_node(a.id, &set).unwrap());
    assert!(
        !s.update_node(a.id, &set).unwrap(),
        "same values: no change"
    );
    let stored = s.node(a.id).unwrap().unwrap();
    assert_eq!(stored.path_key, Some(PathPublicKey([6; 32])));
    assert_eq!(stored.home_relay.as_deref(), Some("r1"));
    // Fields not in an update stay; Some(None) clears the home relay.
    let other = NodeUpdate {
        lan_access: Some(true),
        ..NodeUpdate::default()
    };
    assert!(s.update_node(a.id, &other).unwrap());
    assert_eq!(
        s.node(a.id).unwrap().unwrap().home_relay.as_deref(),
        Some("r1")
    );
    let clear = NodeUpdate {
        home_relay: Some(None),
        ..NodeUpdate::default()
    };
    assert!(s.update_node(a.id, &clear).unwrap());
    let stored = s.node(a.id).unwrap().unwrap();
    assert_eq!(stored.home_relay, None);
    assert_eq!(stored.path_key, Some(PathPublicKey([6; 32])));
}

fn relay(name: &str) -> RelayInfo {
    RelayInfo {
        name: name.into(),
        addrs: vec![
            "192.0.2.10:443".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ],
        server_name: "relay.example.net".into(),
        cert_sha256: rustynet_proto::CertPin([9; 32]),
        stun: vec!["192.0.2.10:3478".parse().unwrap()],
    }
}

#[test]
fn relays_add_list_remove() {
    let (_d, s) = store();
    assert!(s.relays().unwrap().is_empty());
    s.add_relay(&relay("r2"), 1).unwrap();
    s.add_relay(&relay("r1"), 2).unwrap();
    assert_eq!(s.relays().unwrap(), vec![relay("r1"), relay("r2")]);
    let mut other = relay("r1");
    other.server_name = "other.example.net".into();
    assert!(matches!(
        s.add_relay(&other, 3),
        Err(StoreError::DuplicateRelay(n)) if n == "r1"
    ));
    assert_eq!(s.relays().unwrap()[0], relay("r1"), "the first one stays");
    assert_eq!(s.remove_relay("r2").unwrap(), relay("r2"));
    assert!(matches!(
        s.remove_relay("r2"),
        Err(StoreError::UnknownRelay(_))
    ));
    for i in 2..=MAX_REGISTERED_RELAYS {
        s.add_relay(&relay(&format!("r{i}")), 4).unwrap();
    }
    assert!(matches!(
        s.add_relay(&relay("one-more"), 5),
        Err(StoreError::TooManyRelays(MAX_REGISTERED_RELAYS))
    ));
    assert_eq!(s.relays().unwrap().len(), MAX_REGISTERED_RELAYS);
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

#[test]
fn revoked_keys_enroll_nothing_and_are_listed() {
    let (_d, s) = store();
    preauth(&s, "k", true, None);
    preauth(&s, "once", false, Some(1_000));
    s.register(&reg("k", "a", 1), 200).unwrap();
    let keys = s.preauth_keys().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].state(300), "active");
    assert_eq!(keys[0].used, 1);
    assert_eq!(keys[1].state(2_000), "expired");
    let revoked = s.revoke_preauth(keys[0].id, 400).unwrap();
    assert_eq!(revoked.revoked_at, Some(400));
    assert_eq!(revoked.state(500), "revoked");
    // Revoking again keeps the first time.
    assert_eq!(
        s.revoke_preauth(keys[0].id, 900).unwrap().revoked_at,
        Some(400)
    );
    assert!(matches!(
        s.usable_preauth(&hash("k"), 500),
        Err(StoreError::AuthKeyRevoked)
    ));
    assert!(matches!(
        s.register(&reg("k", "b", 2), 500),
        Err(StoreError::AuthKeyRevoked)
    ));
    assert_eq!(s.nodes().unwrap().len(), 1);
    assert!(matches!(
        s.revoke_preauth(99, 500),
        Err(StoreError::UnknownPreauth(99))
    ));
}
