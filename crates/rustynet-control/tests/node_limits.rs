//! What one enrolled node can make the server and its peers do: bounded
//! updates, one map stream, a bounded rate of maps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, POLICY_ALL, map_until, next_map};
use rustynet_control::ratelimit::Rate;
use rustynet_proto::control_api::{API_VERSION, UpdateRequest};

fn endpoint_update(i: u16) -> UpdateRequest {
    UpdateRequest {
        version: API_VERSION,
        endpoints: Some(vec![format!("198.51.100.1:{}", 1000 + i).parse().unwrap()]),
        ..UpdateRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_rate_limited_per_node() {
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.update_rate = Rate {
            burst: 3,
            every: Duration::from_secs(60),
        };
    })
    .await;
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let client = h.client();
    for i in 0..3 {
        client
            .update(&a.key, a.resp.node_id, &endpoint_update(i))
            .await
            .unwrap();
    }
    let err = client
        .update(&a.key, a.resp.node_id, &endpoint_update(3))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("rate_limited"), "{err}");
    // The refused update changed nothing; another node has its own budget.
    let stored = h.data.open_store().unwrap().node(a.resp.node_id).unwrap();
    assert_eq!(
        stored.unwrap().endpoints,
        vec!["198.51.100.1:1002".parse().unwrap()]
    );
    client
        .update(&b.key, b.resp.node_id, &endpoint_update(9))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_map_stream_replaces_the_old_ones() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let mut old = Vec::new();
    for _ in 0..10 {
        let mut s = a.stream(&h).await;
        let mut hw = 0;
        next_map(&mut s, &a, &mut hw).await;
        old.push(s);
    }
    let mut newest = a.stream(&h).await;
    let mut hw = 0;
    next_map(&mut newest, &a, &mut hw).await;
    // Every older stream ends.
    for mut s in old {
        let ended = async { while let Ok(Some(_)) = s.next_frame().await {} };
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("an older stream of the same node stayed open");
    }
    // The node stayed online throughout: its peer sees it online, and the
    // newest stream still gets maps.
    assert!(h.server.network.current().online.contains(&a.resp.node_id));
    let mut sb = b.stream(&h).await;
    let mut hwb = 0;
    map_until(&mut sb, &b, &mut hwb, |m| m.netmap().peers[0].online).await;
    h.set_policy("{}");
    map_until(&mut newest, &a, &mut hw, |m| m.netmap().peers.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_to_one_node_are_coalesced_to_the_minimum_interval() {
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.min_map_interval = Duration::from_secs(1);
        o.update_rate = Rate {
            burst: 100,
            every: Duration::from_millis(10),
        };
    })
    .await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut stream = a.stream(&h).await;
    next_map(&mut stream, &a, &mut hw).await;
    // B changes its endpoint 20 times, 50 ms apart.
    let client = h.client();
    let started = Instant::now();
    let churn = async {
        for i in 0..20 {
            client
                .update(&b.key, b.resp.node_id, &endpoint_update(i))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut maps = 0;
    let watch = async {
        let last = "198.51.100.1:1019".parse().unwrap();
        loop {
            let m = next_map(&mut stream, &a, &mut hw).await;
            maps += 1;
            if m.netmap().peers[0].endpoints == vec![last] {
                break started.elapsed();
            }
        }
    };
    let ((), took) = tokio::join!(churn, watch);
    // ~1.2 s of churn: the first change goes at once (the pacer's burst),
    // then one map a second carries everything so far.
    assert!(maps <= 4, "{maps} maps for 20 changes in {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "last change arrived after {took:?}"
    );
}
