//! One suite of store tests run against every backend: SQLite always, and
//! PostgreSQL on the throwaway cluster `scripts/ci/with_postgres.sh` starts
//! (it exports `RUSTYNET_TEST_POSTGRES`). Each backend's test module calls
//! [`conformance_suite!`] with a function returning a fresh, empty store and
//! whatever keeps it alive; the tests below take the store as `&dyn Store`,
//! so both backends must behave identically to pass.

use rustynet_proto::netmap::{RelayInfo, TUNNEL_NET};
use rustynet_proto::{NodeId, PathPublicKey, SigningPublicKey, TunnelPublicKey};
use sha2::{Digest as _, Sha256};

use super::{
    MAX_REGISTERED_RELAYS, NewPreauth, NodeChanges, NodeUpdate, Registration, Renewal, Store,
    StoreError,
};

/// Declares one `#[test]` per conformance test, each on a fresh store from
/// `$fresh` (a function returning `(store, guard)`; the store is dropped
/// before the guard).
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::store::conformance::conformance_suite!(@tests $fresh;
            register_assigns_ip_name_and_tags,
            bad_keys_change_nothing,
            nonces_are_single_use_and_forgotten,
            update_expire_remove,
            touch_records_every_node_given,
            path_key_and_home_relay_are_stored,
            relays_add_list_remove,
            revoked_keys_enroll_nothing_and_are_listed,
            renewal_keeps_identity_and_checks_the_key,
            generations_are_fresh_and_never_overlap,
            suffix_and_policy_round_trip,
            admin_edits_rename_tag_and_route_decisions,
            node_changes_name_exactly_what_changed,
        );
    };
    (@tests $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let fixture = $fresh();
                $crate::store::conformance::$name(&fixture.0);
            }
        )*
    };
}
pub(crate) use conformance_suite;

pub(crate) fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(crate) fn preauth(store: &dyn Store, key: &str, reusable: bool, expires_at: Option<i64>) {
    preauth_for(store, key, "alice", reusable, expires_at);
}

fn preauth_for(store: &dyn Store, key: &str, user: &str, reusable: bool, expires_at: Option<i64>) {
    store
        .create_preauth(
            &NewPreauth {
                key_hash: hash(key),
                user: user.into(),
                tags: vec!["tag:exit".into()],
                reusable,
                expires_at,
            },
            100,
        )
        .unwrap();
}

pub(crate) fn reg(key: &str, host: &str, seed: u8) -> Registration {
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

pub(crate) fn register_assigns_ip_name_and_tags(s: &dyn Store) {
    preauth(s, "k", true, None);
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

pub(crate) fn bad_keys_change_nothing(s: &dyn Store) {
    preauth(s, "once", false, None);
    preauth(s, "old", true, Some(150));
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
    preauth(s, "multi", true, None);
    assert!(matches!(
        s.register(&reg("multi", "c", 1), 200),
        Err(StoreError::DuplicateKey)
    ));
    assert_eq!(s.nodes().unwrap().len(), 1);
}

pub(crate) fn nonces_are_single_use_and_forgotten(s: &dyn Store) {
    assert!(s.record_nonce(NodeId(1), &[1; 16], 1000, 0).unwrap());
    assert!(!s.record_nonce(NodeId(1), &[1; 16], 1000, 0).unwrap());
    assert!(s.record_nonce(NodeId(2), &[1; 16], 1000, 0).unwrap());
    // Old entries are pruned once outside the window.
    assert!(s.record_nonce(NodeId(3), &[2; 16], 5000, 2000).unwrap());
    assert!(s.record_nonce(NodeId(1), &[1; 16], 5000, 2000).unwrap());
}

pub(crate) fn touch_records_every_node_given(s: &dyn Store) {
    preauth(s, "k", true, None);
    let a = s.register(&reg("k", "a", 1), 200).unwrap();
    let b = s.register(&reg("k", "b", 2), 200).unwrap();
    let c = s.register(&reg("k", "c", 3), 200).unwrap();
    s.touch(&[a.id, c.id, NodeId(9_999)], 400).unwrap();
    let seen = |id| s.node(id).unwrap().unwrap().last_seen;
    assert_eq!(
        (seen(a.id), seen(b.id), seen(c.id)),
        (Some(400), Some(200), Some(400))
    );
    s.touch(&[], 500).unwrap();
    assert_eq!(seen(a.id), Some(400));
}

pub(crate) fn update_expire_remove(s: &dyn Store) {
    preauth(s, "k", true, None);
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

pub(crate) fn path_key_and_home_relay_are_stored(s: &dyn Store) {
    preauth(s, "k", true, None);
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

pub(crate) fn relays_add_list_remove(s: &dyn Store) {
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

pub(crate) fn revoked_keys_enroll_nothing_and_are_listed(s: &dyn Store) {
    preauth(s, "k", true, None);
    preauth(s, "once", false, Some(1_000));
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

pub(crate) fn relay(name: &str) -> RelayInfo {
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

pub(crate) fn renewal_keeps_identity_and_checks_the_key(s: &dyn Store) {
    preauth(s, "k", true, None);
    preauth_for(s, "bob", "bob", true, None);
    let a = s.register(&reg("k", "a", 1), 200).unwrap();
    s.register(&reg("k", "b", 2), 200).unwrap();
    assert!(s.record_nonce(a.id, &[7; 16], 1000, 0).unwrap());
    let renewal = |key: &str, seed: u8| Renewal {
        node: a.id,
        registration: Registration {
            key_expires_at: Some(9_999),
            ..reg(key, "ignored", seed)
        },
    };
    assert!(matches!(
        s.renew(&renewal("bob", 3), 300),
        Err(StoreError::RenewUserMismatch { .. })
    ));
    // The other node's keys, or the node's own current ones: refused.
    assert!(matches!(
        s.renew(&renewal("k", 2), 300),
        Err(StoreError::DuplicateKey)
    ));
    assert!(matches!(
        s.renew(&renewal("k", 1), 300),
        Err(StoreError::DuplicateKey)
    ));
    let renewed = s.renew(&renewal("k", 3), 300).unwrap();
    assert_eq!(
        (renewed.id, renewed.tunnel_ip, &renewed.hostname),
        (a.id, a.tunnel_ip, &a.hostname)
    );
    assert_eq!(renewed.node_key, TunnelPublicKey([3; 32]));
    assert_eq!(renewed.key_expires_at, Some(9_999));
    assert_eq!(renewed.last_seen, Some(300));
    // The old key's nonces are forgotten.
    assert!(s.record_nonce(a.id, &[7; 16], 1000, 0).unwrap());
    assert!(matches!(
        s.renew(
            &Renewal {
                node: NodeId(9_999),
                registration: reg("k", "x", 4)
            },
            300
        ),
        Err(StoreError::UnknownNode(_))
    ));
    // Three successful spends of the reusable key: two joins, one renewal.
    assert_eq!(s.preauth_keys().unwrap()[0].used, 3);
}

pub(crate) fn generations_are_fresh_and_never_overlap(s: &dyn Store) {
    let a = s.reserve_generations(3).unwrap();
    let b = s.reserve_generations(1).unwrap();
    let c = s.reserve_generations(5000).unwrap();
    assert!(a.start >= 1, "generation 0 is never issued");
    assert_eq!(
        (a.end - a.start, b.end - b.start, c.end - c.start),
        (3, 1, 5000)
    );
    assert!(b.start >= a.end && c.start >= b.end, "{a:?} {b:?} {c:?}");
}

pub(crate) fn suffix_and_policy_round_trip(s: &dyn Store) {
    assert_eq!(s.suffix().unwrap(), "rustynet.internal");
    assert_eq!(s.policy().unwrap(), None);
    s.set_policy(r#"{"acls":[]}"#, 10).unwrap();
    s.set_policy(r#"{"acls":[1]}"#, 11).unwrap();
    assert_eq!(s.policy().unwrap().as_deref(), Some(r#"{"acls":[1]}"#));
}

pub(crate) fn admin_edits_rename_tag_and_route_decisions(s: &dyn Store) {
    preauth(s, "k", true, None);
    let a = s.register(&reg("k", "a", 1), 200).unwrap();
    s.register(&reg("k", "b", 2), 200).unwrap();
    // A label another node holds is refused and changes nothing.
    assert!(matches!(
        s.rename_node("a", "b"),
        Err(StoreError::NameTaken(_))
    ));
    assert!(matches!(
        s.rename_node("zz", "c"),
        Err(StoreError::UnknownNode(_))
    ));
    let renamed = s.rename_node("a", "c").unwrap();
    assert_eq!((renamed.id, renamed.hostname.as_str()), (a.id, "c"));
    assert_eq!(s.rename_node("c", "c").unwrap().hostname, "c");
    let tags = vec!["tag:db".to_owned(), "tag:web".to_owned()];
    assert_eq!(s.set_node_tags("c", &tags).unwrap().tags, tags);
    assert_eq!(s.node(a.id).unwrap().unwrap().tags, tags);
    // Route decisions: the store returns the node as it was before.
    let routes = rustynet_policy::AdminRoutes {
        approved: vec!["10.1.0.0/24".parse().unwrap()],
        rejected: vec!["10.2.0.0/24".parse().unwrap()],
    };
    let before = s.set_admin_routes("c", &routes).unwrap();
    assert!(before.admin_routes.approved.is_empty());
    assert_eq!(s.node(a.id).unwrap().unwrap().admin_routes, routes);
    assert!(matches!(
        s.set_admin_routes("zz", &routes),
        Err(StoreError::UnknownNode(_))
    ));
}

/// The ids changed and removed since `since`, and the version read.
fn changes_since(s: &dyn Store, since: i64) -> (Vec<NodeId>, Vec<NodeId>, i64) {
    match s.node_changes(Some(since)).unwrap() {
        NodeChanges::Since {
            changed,
            removed,
            version,
        } => (changed.iter().map(|n| n.id).collect(), removed, version),
        other => panic!("expected changes since {since}, got {other:?}"),
    }
}

pub(crate) fn node_changes_name_exactly_what_changed(s: &dyn Store) {
    let NodeChanges::All { nodes, version: v0 } = s.node_changes(None).unwrap() else {
        panic!("no version asked: every node");
    };
    assert!(nodes.is_empty());
    preauth(s, "k", true, None);
    let a = s.register(&reg("k", "a", 1), 200).unwrap();
    let b = s.register(&reg("k", "b", 2), 200).unwrap();
    let (changed, removed, v1) = changes_since(s, v0);
    assert_eq!((changed, removed), (vec![a.id, b.id], vec![]));
    assert!(v1 > v0);
    // Nothing changed: nothing read, same version.
    assert_eq!(changes_since(s, v1), (vec![], vec![], v1));
    // last_seen is not in any map: no new version.
    s.touch(&[a.id, b.id], 300).unwrap();
    assert_eq!(changes_since(s, v1), (vec![], vec![], v1), "touch");
    // Every change a map shows takes a new version, for that node only.
    let upd = NodeUpdate {
        endpoints: Some(vec!["192.0.2.9:41641".parse().unwrap()]),
        ..NodeUpdate::default()
    };
    assert!(s.update_node(a.id, &upd).unwrap());
    let (changed, _, v2) = changes_since(s, v1);
    assert_eq!(changed, vec![a.id], "update");
    s.rename_node("b", "b2").unwrap();
    let (changed, _, v3) = changes_since(s, v2);
    assert_eq!(changed, vec![b.id], "rename");
    s.set_node_tags("b2", &["tag:db".to_owned()]).unwrap();
    let (changed, _, v4) = changes_since(s, v3);
    assert_eq!(changed, vec![b.id], "tags");
    s.set_admin_routes("b2", &rustynet_policy::AdminRoutes::default())
        .unwrap();
    let (changed, _, v5) = changes_since(s, v4);
    assert_eq!(changed, vec![b.id], "route decisions");
    s.expire_node("a", 400).unwrap();
    let (changed, _, v6) = changes_since(s, v5);
    assert_eq!(changed, vec![a.id], "expiry");
    s.remove_node("a").unwrap();
    let (changed, removed, v7) = changes_since(s, v6);
    assert_eq!((changed, removed), (vec![], vec![a.id]), "removal");
    // Everything since the start, in one reading.
    let (changed, removed, v) = changes_since(s, v0);
    assert_eq!((changed, removed, v), (vec![b.id], vec![a.id], v7));
    // A version the database has not reached (it was replaced): all.
    assert!(matches!(
        s.node_changes(Some(v7 + 1)).unwrap(),
        NodeChanges::All { nodes, version } if nodes.len() == 1 && version == v7
    ));
}
