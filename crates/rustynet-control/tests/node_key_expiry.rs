//! Node keys expire; a node renews them with a pre-auth key and its current
//! key (`rustynet up --force-reauth`), keeping its id, address and name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, POLICY_ALL, map_until};
use rustynet_proto::NodeSigningKey;
use rustynet_proto::TunnelPublicKey;

fn expiring(secs: u64) -> impl FnOnce(&mut rustynet_control::server::ServeOptions) {
    move |o| o.node_key_expiry = Some(Duration::from_secs(secs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_refused_until_the_node_renews_them() {
    let h = Harness::start_with(Duration::from_secs(600), expiring(2)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = {
        // b enrolls later, so it outlives a's keys by a little.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        h.enroll(&key, "b", 2).await
    };
    let stored = h
        .data
        .open_store()
        .unwrap()
        .node(a.resp.node_id)
        .unwrap()
        .unwrap();
    let lifetime = stored.key_expires_at.unwrap() - stored.created_at;
    assert!((2..=3).contains(&lifetime), "{lifetime}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // a's keys expired: refused like an expired node, with the way out.
    let err = h
        .client()
        .map_stream(&a.key, a.resp.node_id, 0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("node_expired"));
    assert!(err.to_string().contains("--force-reauth"), "{err}");
    // Renewal: new keys, signed by the current one, with a pre-auth key.
    let new_key = NodeSigningKey::from_seed(&[11; 32]);
    let mut req = h.register_request(&key, "ignored", 11);
    req.node_key = TunnelPublicKey([11; 32]);
    let renewed = h
        .client()
        .renew(&new_key, &a.key, a.resp.node_id, &req)
        .await
        .unwrap();
    assert_eq!(renewed.node_id, a.resp.node_id);
    assert_eq!(renewed.tunnel_ip, a.resp.tunnel_ip);
    assert_eq!(renewed.hostname, "a");
    // The new key works, the old one no longer does.
    let node = common::Node {
        key: new_key,
        resp: renewed,
    };
    let mut hw = 0;
    let mut stream = node.stream(&h).await;
    common::next_map(&mut stream, &node, &mut hw).await;
    let err = h
        .client()
        .map_stream(&a.key, a.resp.node_id, 0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("bad_signature"));
    let stored = h
        .data
        .open_store()
        .unwrap()
        .node(a.resp.node_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.node_key, TunnelPublicKey([11; 32]));
    assert!(stored.key_expires_at.unwrap() > rustynet_control::now_unix());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_keys_expired_leaves_the_maps_and_returns_when_renewed() {
    let h = Harness::start_with(Duration::from_secs(600), expiring(3600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.len() == 1).await;
    // Age b's keys (as if a year passed for it alone).
    let db = rusqlite::Connection::open(h.dir.path().join("control/control.db")).unwrap();
    db.execute(
        "UPDATE nodes SET key_expires_at = 1 WHERE id = ?1",
        [b.resp.node_id.0 as i64],
    )
    .unwrap();
    drop(db);
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.is_empty()).await;
    let new_key = NodeSigningKey::from_seed(&[12; 32]);
    let mut req = h.register_request(&key, "b", 12);
    req.node_key = TunnelPublicKey([12; 32]);
    h.client()
        .renew(&new_key, &b.key, b.resp.node_id, &req)
        .await
        .unwrap();
    let m = map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.len() == 1).await;
    assert_eq!(m.netmap().peers[0].node_key, TunnelPublicKey([12; 32]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_that_prove_nothing_are_refused() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let alice = h.preauth("alice", true, None);
    let bob = h.preauth("bob", true, None);
    let a = h.enroll(&alice, "a", 1).await;
    let client = h.client();
    let new_key = NodeSigningKey::from_seed(&[21; 32]);
    let req = |auth: &str| {
        let mut r = h.register_request(auth, "a", 21);
        r.node_key = TunnelPublicKey([21; 32]);
        r
    };
    // Signed by a key that is not the node's.
    let thief = NodeSigningKey::from_seed(&[66; 32]);
    let err = client
        .renew(&new_key, &thief, a.resp.node_id, &req(&alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"));
    // A node that does not exist answers the same.
    let err = client
        .renew(&new_key, &thief, rustynet_proto::NodeId(999), &req(&alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"));
    // Another user's pre-auth key cannot take the node over.
    let err = client
        .renew(&new_key, &a.key, a.resp.node_id, &req(&bob))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("renew_user_mismatch"));
    // A node an administrator expired cannot renew.
    rustynet_control::admin::nodes_expire(&h.data, "a").unwrap();
    let err = client
        .renew(&new_key, &a.key, a.resp.node_id, &req(&alice))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("node_expired"));
    assert!(err.to_string().contains("administrator"), "{err}");
    let stored = h
        .data
        .open_store()
        .unwrap()
        .node(a.resp.node_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.node_key, TunnelPublicKey([1; 32]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_node_is_cut_off_when_its_keys_expire() {
    let h = Harness::start_with(Duration::from_secs(600), expiring(2)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let mut sa = a.stream(&h).await;
    let mut hw = 0;
    common::next_map(&mut sa, &a, &mut hw).await;
    // Nothing else changes: the expiry alone ends the stream.
    let ended = async { while let Ok(Some(_)) = sa.next_frame().await {} };
    tokio::time::timeout(Duration::from_secs(6), ended)
        .await
        .expect("the stream of a node whose keys expired stayed open");
    assert!(
        !h.server
            .network
            .current()
            .nodes
            .contains_key(&a.resp.node_id)
    );
}
