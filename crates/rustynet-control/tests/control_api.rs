//! The control plane over real TLS 1.3 on loopback with a real SQLite file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, POLICY_ALL, map_until, next_map};
use rustynet_proto::control_api::StreamFrame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_dns_from_the_policy_reaches_every_map() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
            "dns": {"split": {"corp.example": ["203.0.113.54"], "internal": ["192.0.2.53"]}}}"#,
    );
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "alpha", 1).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    let map = next_map(&mut sa, &a, &mut hw).await;
    let split: Vec<(String, Vec<std::net::IpAddr>)> = map
        .netmap()
        .dns
        .split
        .iter()
        .map(|r| (r.domain.clone(), r.resolvers.clone()))
        .collect();
    assert_eq!(
        split,
        [
            ("corp.example".into(), vec!["203.0.113.54".parse().unwrap()]),
            ("internal".into(), vec!["192.0.2.53".parse().unwrap()]),
        ]
    );
    // Dropping the section takes the routes out of the next map.
    h.set_policy(POLICY_ALL);
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().dns.split.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_enroll_and_receive_verified_maps() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "alpha", 1).await;
    let b = h.enroll(&key, "beta", 2).await;
    assert_eq!(a.resp.dns_name, "alpha.rustynet.internal");
    assert_ne!(a.resp.tunnel_ip, b.resp.tunnel_ip);
    assert_eq!(
        a.resp.control_signing_key,
        h.data.signing_key().unwrap().public()
    );

    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    let map = map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.len() == 1).await;
    let peer = &map.netmap().peers[0];
    assert_eq!(peer.hostname, "beta");
    assert_eq!(peer.tunnel_ip, b.resp.tunnel_ip);
    assert_eq!(peer.endpoints, vec!["192.0.2.2:41641".parse().unwrap()]);
    assert_eq!(map.netmap().self_node.tunnel_ip, a.resp.tunnel_ip);
    assert!(
        map.netmap()
            .dns
            .records
            .iter()
            .any(|r| r.name == "beta.rustynet.internal")
    );
    // B's packet filter admits A (allow-all policy).
    let mut hwb = 0;
    let mut sb = b.stream(&h).await;
    let mb = next_map(&mut sb, &b, &mut hwb).await;
    assert!(rustynet_proto::netmap::filter_admits(
        &mb.netmap().packet_filter,
        a.resp.tunnel_ip.into(),
        b.resp.tunnel_ip.into(),
        6,
        Some(22)
    ));
    // Once B streams, A learns B is online.
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers[0].online).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_enrollments_get_distinct_deterministic_names() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let mut tasks = Vec::new();
    for seed in 1..=50u8 {
        let client = h.client();
        let req = h.register_request(&key, "web", seed);
        tasks.push(tokio::spawn(async move {
            let key = rustynet_proto::NodeSigningKey::from_seed(&[seed; 32]);
            client.register(&key, &req).await.unwrap()
        }));
    }
    let mut by_id = BTreeMap::new();
    for t in tasks {
        let resp = t.await.unwrap();
        by_id.insert(resp.node_id, resp.hostname);
    }
    let names: Vec<String> = by_id.into_values().collect();
    let mut expected = vec!["web".to_owned()];
    expected.extend((2..=50).map(|n| format!("web-{n}")));
    // In enrollment (id) order: web, web-2, ..., web-50. Distinct by construction.
    assert_eq!(names, expected);
    // Persisted: the store agrees after the fact.
    let stored: Vec<String> = h
        .data
        .open_store()
        .unwrap()
        .nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.hostname)
        .collect();
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_reaches_affected_streams() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let _b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    // Default deny: no peers.
    let first = next_map(&mut sa, &a, &mut hw).await;
    assert!(first.netmap().peers.is_empty());
    assert!(first.netmap().packet_filter.is_empty());
    // An admin command (another writer of the database) grants access.
    h.set_policy(POLICY_ALL);
    let m = map_until(&mut sa, &a, &mut hw, |m| !m.netmap().peers.is_empty()).await;
    assert_eq!(m.netmap().peers[0].hostname, "b");
    // Revoking it removes the peer again.
    h.set_policy("{}");
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_removal_reach_peers_and_close_the_stream() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let _c = h.enroll(&key, "c", 3).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.len() == 2).await;
    let mut sb = b.stream(&h).await;
    rustynet_control::admin::nodes_expire(&h.data, "b").unwrap();
    let m = map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.len() == 1).await;
    assert_eq!(m.netmap().peers[0].hostname, "c");
    // B's stream ends and B can no longer open one.
    let end = async { while let Ok(Some(_)) = sb.next_frame().await {} };
    tokio::time::timeout(Duration::from_secs(20), end)
        .await
        .unwrap();
    let err = h
        .client()
        .map_stream(&b.key, b.resp.node_id, 0)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("node_expired"));
    rustynet_control::admin::nodes_remove(&h.data, "c").unwrap();
    map_until(&mut sa, &a, &mut hw, |m| m.netmap().peers.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_are_resigned_before_expiry() {
    let h = Harness::start(Duration::from_secs(4)).await;
    let key = h.preauth("alice", false, None);
    let a = h.enroll(&key, "a", 1).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    let first = next_map(&mut sa, &a, &mut hw).await;
    let second = next_map(&mut sa, &a, &mut hw).await;
    assert!(second.generation() > first.generation());
    assert_eq!(second.netmap(), first.netmap());
    assert!(second.body.issued_at < first.body.expires_at);
}

/// Wakes that leave a node's map the same (a nudge, as a signing-key reload
/// makes, wakes every stream) must not hold its keepalives off: the client
/// would take the silence for a dead stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_go_out_while_wakes_change_nothing() {
    let h = Harness::start(Duration::from_secs(3600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let node = h.enroll(&key, "a", 1).await;
    let mut stream = node.stream(&h).await;
    let mut high_water = 0;
    next_map(&mut stream, &node, &mut high_water).await;
    // Five wakes per keepalive interval (1 s in the harness).
    let network = h.server.network.clone();
    let nudger = tokio::spawn(async move {
        loop {
            network.nudge();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let keepalive = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = stream.next_frame().await.unwrap().expect("stream closed");
            if matches!(frame, StreamFrame::Keepalive) {
                break;
            }
        }
    })
    .await;
    nudger.abort();
    assert!(
        keepalive.is_ok(),
        "no keepalive in 5 s while the stream was woken every 200 ms"
    );
}
