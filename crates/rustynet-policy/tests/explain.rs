//! `acl explain` and route approval states on a small shared-router
//! network: what each explanation names, and admin approvals/rejections
//! against `route_approvers`.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rustynet_policy::{
    AdminRoutes, NodeFacts, Packet, Policy, PolicyIndex, RouteStatus, Target, compile,
};
use rustynet_proto::NodeId;
use rustynet_proto::netmap::ip_proto;

fn tip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, last)
}

fn node(id: u8, host: &str, user: &str, tags: &[&str]) -> NodeFacts {
    NodeFacts {
        id: NodeId(u64::from(id)),
        hostname: host.to_owned(),
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        tunnel_ip: tip(id),
        advertise_exit_node: false,
        advertised_routes: vec![],
        lan_access: true,
        admin_routes: AdminRoutes::default(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Two routers (r1, r2) share 192.168.77.0/24; alice may use tcp/22 on its
/// host .10, bob anything with ports 8080 there and everything on .11.
const POLICY: &str = r#"{
  "tag_owners": {"tag:router": ["admin"]},
  "acls": [
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.10/32:22"], "proto": "tcp"},
    {"action": "accept", "src": ["bob"], "dst": ["192.168.77.10/32:8080"], "proto": "any"},
    {"action": "accept", "src": ["bob"], "dst": ["192.168.77.11/32:*"], "proto": "any"},
    {"action": "accept", "src": ["alice", "bob"], "dst": ["tag:router:*"], "proto": "icmp"}
  ],
  "route_approvers": [{"routes": ["192.168.77.0/24"], "nodes": ["tag:router"]}]
}"#;

fn network() -> Vec<NodeFacts> {
    let mut r1 = node(3, "r1", "admin", &["tag:router"]);
    r1.advertised_routes = vec![net("192.168.77.0/24")];
    let mut r2 = node(4, "r2", "admin", &["tag:router"]);
    r2.advertised_routes = vec![net("192.168.77.0/24")];
    vec![
        node(1, "alice", "alice", &[]),
        node(2, "bob", "bob", &[]),
        r1,
        r2,
    ]
}

fn packet(src: u8, dst: &str, proto: u8, port: Option<u16>) -> Packet {
    Packet {
        src: IpAddr::V4(tip(src)),
        dst: dst.parse().unwrap(),
        proto,
        port,
    }
}

#[test]
fn a_tcp_grant_through_shared_routers_names_its_rule_and_both_routers() {
    let p = Policy::parse(POLICY).unwrap();
    let nodes = network();
    let index = PolicyIndex::new(&p, &nodes);
    let ex = index.explain(packet(1, "192.168.77.10", ip_proto::TCP, Some(22)));
    assert!(ex.allowed && ex.consistent, "{ex:?}");
    assert_eq!(ex.target, Target::Lan);
    assert_eq!(ex.admitted_by.len(), 1);
    assert_eq!(ex.admitted_by[0].index, 0);
    let routers: Vec<&str> = ex.routers.iter().map(|r| r.router.as_str()).collect();
    assert_eq!(routers, ["r1", "r2"], "lowest node id first");
    assert!(ex.routers.iter().all(|r| r.forwards));
    assert_eq!(ex.routers[0].approved_by, "route_approvers[0]");
    assert!(!ex.notes.is_empty(), "the failover order is noted");
}

#[test]
fn a_tcp_grant_never_becomes_udp_or_another_port() {
    let p = Policy::parse(POLICY).unwrap();
    let nodes = network();
    let index = PolicyIndex::new(&p, &nodes);
    let udp = index.explain(packet(1, "192.168.77.10", ip_proto::UDP, Some(22)));
    assert!(!udp.allowed && udp.consistent, "{udp:?}");
    assert!(
        udp.reasons
            .iter()
            .any(|r| r.starts_with("acls[0]") && r.contains("tcp only, not udp")),
        "{:?}",
        udp.reasons
    );
    let port = index.explain(packet(1, "192.168.77.10", ip_proto::TCP, Some(23)));
    assert!(!port.allowed);
    assert!(
        port.reasons
            .iter()
            .any(|r| r.contains("port 23 is not in 22")),
        "{:?}",
        port.reasons
    );
    assert!(port.routers.iter().all(|r| !r.forwards));
}

#[test]
fn any_with_ports_is_tcp_and_udp_on_those_ports_only() {
    let p = Policy::parse(POLICY).unwrap();
    let nodes = network();
    let index = PolicyIndex::new(&p, &nodes);
    for (proto, port, allowed) in [
        (ip_proto::TCP, Some(8080), true),
        (ip_proto::UDP, Some(8080), true),
        (ip_proto::TCP, Some(8081), false),
        (ip_proto::ICMP, None, false),
    ] {
        let ex = index.explain(packet(2, "192.168.77.10", proto, port));
        assert_eq!(ex.allowed, allowed, "{proto} {port:?}: {ex:?}");
        assert!(ex.consistent);
    }
    let icmp = index.explain(packet(2, "192.168.77.10", ip_proto::ICMP, None));
    assert!(
        icmp.reasons.iter().any(|r| r.contains("has none")),
        "{:?}",
        icmp.reasons
    );
    // Without ports, `any` is everything.
    for (proto, port) in [(ip_proto::ICMP, None), (ip_proto::UDP, Some(9)), (47, None)] {
        assert!(
            index
                .explain(packet(2, "192.168.77.11", proto, port))
                .allowed
        );
    }
}

#[test]
fn a_client_without_any_rule_is_told_so() {
    let p = Policy::parse(POLICY).unwrap();
    let mut nodes = network();
    nodes.push(node(5, "carol", "carol", &[]));
    let index = PolicyIndex::new(&p, &nodes);
    let ex = index.explain(packet(5, "192.168.77.10", ip_proto::TCP, Some(22)));
    assert!(!ex.allowed);
    assert!(
        ex.reasons
            .iter()
            .any(|r| r.contains("no acls rule names carol")),
        "{:?}",
        ex.reasons
    );
}

#[test]
fn the_toggle_off_is_the_reason_even_when_a_rule_matches() {
    let p = Policy::parse(POLICY).unwrap();
    let mut nodes = network();
    nodes[0].lan_access = false;
    let index = PolicyIndex::new(&p, &nodes);
    let ex = index.explain(packet(1, "192.168.77.10", ip_proto::TCP, Some(22)));
    assert!(!ex.allowed && ex.consistent, "{ex:?}");
    assert!(ex.admitted_by.is_empty());
    assert!(ex.reasons.iter().any(|r| r.contains("toggle is off")));
    assert!(ex.reasons.iter().any(|r| r.contains("with the toggle on")));
}

#[test]
fn node_destinations_use_the_inbound_filter() {
    let p = Policy::parse(POLICY).unwrap();
    let nodes = network();
    let index = PolicyIndex::new(&p, &nodes);
    let ok = index.explain(packet(1, "100.64.0.3", ip_proto::ICMP, None));
    assert!(ok.allowed && ok.target == Target::Node);
    assert_eq!(ok.dst_node.as_deref(), Some("r1"));
    let refused = index.explain(packet(1, "100.64.0.3", ip_proto::TCP, Some(22)));
    assert!(!refused.allowed && refused.consistent);
    let nobody = index.explain(packet(1, "100.64.0.99", ip_proto::ICMP, None));
    assert!(!nobody.allowed && nobody.target == Target::Nowhere);
    assert!(nobody.reasons[0].contains("no node has the tunnel address"));
}

#[test]
fn a_pending_route_is_named_when_nothing_routes_a_lan() {
    let p = Policy::parse(
        r#"{"acls": [{"action": "accept", "src": ["alice"], "dst": ["10.9.0.0/16:*"]}]}"#,
    )
    .unwrap();
    let mut nodes = network();
    nodes[2].advertised_routes = vec![net("10.9.0.0/16")];
    let index = PolicyIndex::new(&p, &nodes);
    let ex = index.explain(packet(1, "10.9.1.1", ip_proto::TCP, Some(22)));
    assert!(!ex.allowed && ex.target == Target::Nowhere);
    assert!(
        ex.reasons
            .iter()
            .any(|r| r.contains("r1 advertises 10.9.0.0/16: pending")),
        "{:?}",
        ex.reasons
    );
    // An admin approval makes it a LAN with r1 as its router.
    nodes[2].admin_routes.approved = vec![net("10.9.0.0/16")];
    let index = PolicyIndex::new(&p, &nodes);
    let ex = index.explain(packet(1, "10.9.1.1", ip_proto::TCP, Some(22)));
    assert!(ex.allowed && ex.target == Target::Lan, "{ex:?}");
    assert_eq!(ex.routers[0].approved_by, "admin");
}

#[test]
fn admin_rejection_beats_approvers_and_exit_role() {
    let p = Policy::parse(POLICY).unwrap();
    let mut nodes = network();
    // A rejection of a sub-prefix touches the whole advertised /24.
    nodes[2].admin_routes.rejected = vec![net("192.168.77.128/25")];
    let views = compile(&p, &nodes);
    assert!(views[&NodeId(3)].approved_routes.is_empty());
    assert_eq!(
        views[&NodeId(4)].approved_routes,
        vec![net("192.168.77.0/24")]
    );
    let index = PolicyIndex::new(&p, &nodes);
    assert_eq!(
        index.route_status(NodeId(3), net("192.168.77.0/24")),
        Some(RouteStatus::Rejected)
    );
    let ex = index.explain(packet(1, "192.168.77.10", ip_proto::TCP, Some(22)));
    assert!(ex.allowed);
    assert_eq!(ex.routers.len(), 1, "only r2 routes now: {ex:?}");
    assert_eq!(
        index
            .route_status(NodeId(3), net("0.0.0.0/0"))
            .map(|s| s.word()),
        Some("refused")
    );
    assert_eq!(
        index.route_status(NodeId(1), net("192.168.77.0/24")),
        Some(RouteStatus::Pending)
    );
}

#[test]
fn admin_approval_is_narrow() {
    let p = Policy::parse(r#"{}"#).unwrap();
    let mut nodes = network();
    nodes[2].advertised_routes = vec![net("10.0.0.0/8"), net("10.1.0.0/16")];
    nodes[2].admin_routes.approved = vec![net("10.1.0.0/16")];
    let views = compile(&p, &nodes);
    assert_eq!(views[&NodeId(3)].approved_routes, vec![net("10.1.0.0/16")]);
}
