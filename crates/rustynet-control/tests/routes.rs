//! Subnet routers from control's side, over real TLS and SQLite: an admin
//! approves and rejects a router's advertised route with the admin commands
//! while `serve` runs, the decisions persist in the database and reach the
//! signed maps (the router's approved routes and forward filter, the
//! client's LAN grants), and `acl explain` reads the same compiled policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, map_until};
use rustynet_control::{acl_explain, routes};
use rustynet_proto::control_api::{API_VERSION, UpdateRequest};

const LAN: &str = "192.168.77.0/24";

/// alice may reach the LAN host on tcp/22; nothing approves routes.
const POLICY: &str = r#"{
  "acls": [
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.10/32:22"], "proto": "tcp"},
    {"action": "accept", "src": ["alice"], "dst": ["node:router:*"], "proto": "icmp"}
  ]
}"#;

fn update(routes: &[&str], lan_access: bool) -> UpdateRequest {
    UpdateRequest {
        version: API_VERSION,
        endpoints: None,
        advertise_exit_node: None,
        advertise_routes: Some(routes.iter().map(|r| r.parse().unwrap()).collect()),
        lan_access: Some(lan_access),
        path_key: None,
        home_relay: None,
    }
}

#[tokio::test]
async fn approve_and_reject_reach_the_maps_and_persist() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let policy = POLICY.to_owned();
    h.set_policy(&policy);
    let router = h
        .enroll(&h.preauth("admin", false, None), "router", 1)
        .await;
    let alice = h.enroll(&h.preauth("alice", false, None), "alice", 2).await;
    h.client()
        .update(&router.key, router.resp.node_id, &update(&[LAN], false))
        .await
        .unwrap();
    h.client()
        .update(&alice.key, alice.resp.node_id, &update(&[], true))
        .await
        .unwrap();

    let listed = routes::list(&h.data).unwrap();
    let row = listed
        .iter()
        .find(|r| r.node == "router")
        .expect("router's route listed");
    assert!(row.advertised && !row.status.is_approved(), "{row:?}");
    assert_eq!(row.status.word(), "pending");
    let ex = acl_explain::explain(&h.data, "alice", "192.168.77.10:22", Some("tcp")).unwrap();
    assert!(!ex[0].allowed, "{:?}", ex[0]);
    assert!(
        ex[0].reasons.iter().any(|r| r.contains("pending")),
        "{:?}",
        ex[0].reasons
    );

    let (mut rs, mut rhw) = (router.stream(&h).await, 0);
    let (mut als, mut ahw) = (alice.stream(&h).await, 0);
    let decision = routes::decide(&h.data, "router", LAN, true).unwrap();
    assert!(decision.route.status.is_approved(), "{decision:?}");
    assert!(
        decision.message.contains("approved by admin"),
        "{decision:?}"
    );
    let m = map_until(&mut rs, &router, &mut rhw, |m| {
        !m.netmap().self_node.approved_routes.is_empty()
    })
    .await;
    assert_eq!(
        m.netmap().self_node.approved_routes,
        vec![LAN.parse().unwrap()]
    );
    assert_eq!(m.netmap().forward_filter.len(), 1, "alice's tcp/22");
    let m = map_until(&mut als, &alice, &mut ahw, |m| {
        !m.netmap().lan_grants.is_empty()
    })
    .await;
    let grant = &m.netmap().lan_grants[0];
    assert_eq!(grant.via, router.resp.node_id);
    assert_eq!(grant.dst, "192.168.77.10/32".parse().unwrap());
    let ex = acl_explain::explain(&h.data, "alice", "192.168.77.10:22", None).unwrap();
    let verdicts: Vec<(String, bool)> = ex.iter().map(|e| (e.proto.clone(), e.allowed)).collect();
    assert_eq!(
        verdicts,
        [
            ("tcp".to_owned(), true),
            ("udp".to_owned(), false),
            ("icmp".to_owned(), false)
        ]
    );
    assert_eq!(ex[0].routers[0].router, "router");
    assert_eq!(ex[0].routers[0].approved_by, "admin");

    // A rejection wins even over a route_approvers entry added later.
    routes::decide(&h.data, "router", LAN, false).unwrap();
    h.set_policy(&policy.replace(
        r#"  ]
}"#,
        r#"  ],
  "route_approvers": [{"routes": ["192.168.0.0/16"], "nodes": ["router"]}]
}"#,
    ));
    map_until(&mut rs, &router, &mut rhw, |m| {
        m.netmap().self_node.approved_routes.is_empty()
    })
    .await;
    map_until(&mut als, &alice, &mut ahw, |m| {
        m.netmap().lan_grants.is_empty()
    })
    .await;
    let row = routes::list(&h.data)
        .unwrap()
        .into_iter()
        .find(|r| r.node == "router")
        .unwrap();
    assert_eq!(
        (row.status.word(), row.admin),
        ("rejected", Some("rejected"))
    );

    // Approving exactly the rejected prefix lifts the rejection; now the
    // policy's approver is what approves it.
    let d = routes::decide(&h.data, "router", LAN, true).unwrap();
    assert_eq!(d.route.status.word(), "approved");
    map_until(&mut als, &alice, &mut ahw, |m| {
        !m.netmap().lan_grants.is_empty()
    })
    .await;
}

#[tokio::test]
async fn bad_decisions_change_nothing() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY);
    h.enroll(&h.preauth("admin", false, None), "router", 1)
        .await;
    let before = common::db_fingerprint(&h);
    for (node, cidr, approve, want) in [
        ("nobody", LAN, true, "no live node"),
        ("router", "192.168.77.1/24", true, "host bits"),
        ("router", "not-a-cidr", false, "not a CIDR"),
        ("router", "0.0.0.0/0", true, "default route"),
        ("router", "100.64.0.0/10", true, "tunnel range"),
    ] {
        let err = routes::decide(&h.data, node, cidr, approve).unwrap_err();
        assert!(err.to_string().contains(want), "{node} {cidr}: {err}");
    }
    routes::decide(&h.data, "router", "10.0.0.0/8", false).unwrap();
    let after_reject = common::db_fingerprint(&h);
    assert_ne!(before, after_reject, "a valid rejection is stored");
    let err = routes::decide(&h.data, "router", "10.1.0.0/16", true).unwrap_err();
    assert!(err.to_string().contains("10.0.0.0/8 is rejected"), "{err}");
    assert_eq!(common::db_fingerprint(&h), after_reject);
    let err = acl_explain::explain(&h.data, "ghost", "router", None).unwrap_err();
    assert!(err.to_string().contains("no live node"), "{err}");
}
