//! The client's LAN-access toggle (R3.4): LAN access needs the route
//! approved, an ACL, *and* the toggle on, and the router enforces the toggle
//! too. The toggle never changes visibility.
#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rustynet_policy::oracle::forward_allows;
use rustynet_policy::{NodeFacts, NodeView, Policy, PolicyIndex, compile, policy_allows};
use rustynet_proto::netmap::{filter_admits, ip_proto};
use rustynet_proto::{FilterRule, LanGrant, NodeId, PortRange, Proto};

fn tip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, last)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn node(id: u8, user: &str, tags: &[&str], lan_access: bool) -> NodeFacts {
    NodeFacts {
        id: NodeId(u64::from(id)),
        hostname: format!("n{id}"),
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        tunnel_ip: tip(id),
        advertise_exit_node: false,
        advertised_routes: vec![],
        lan_access,
        admin_routes: Default::default(),
    }
}

/// An exit node (6, alice, tag:router) whose LAN comes with its exit role,
/// and clients bob (2) and carol (3), both staff.
fn net_with(bob_lan: bool, carol_lan: bool) -> Vec<NodeFacts> {
    let mut gw = node(6, "alice", &["tag:router"], false);
    gw.advertise_exit_node = true;
    gw.advertised_routes = vec![net("192.168.77.0/24"), net("10.20.1.0/24")];
    vec![
        node(2, "bob", &[], bob_lan),
        node(3, "carol", &[], carol_lan),
        node(4, "dave", &[], true),
        gw,
    ]
}

fn policy() -> Policy {
    Policy::parse(
        r#"{"groups": {"group:staff": ["bob", "carol"]},
            "tag_owners": {"tag:router": ["alice"]},
            "hosts": {"nas": "192.168.77.10"},
            "acls": [{"action": "accept", "src": ["group:staff"], "dst": ["192.168.0.0/16:22,443"], "proto": "tcp"},
                     {"action": "accept", "src": ["bob"], "dst": ["nas:*", "10.0.0.0/8:*"], "proto": "udp"}],
            "exit_nodes": [{"users": ["group:staff"], "nodes": ["tag:router"]}]}"#,
    )
    .unwrap()
}

fn view(views: &BTreeMap<NodeId, NodeView>, id: u64) -> &NodeView {
    &views[&NodeId(id)]
}

fn web_ports() -> Vec<PortRange> {
    vec![PortRange::single(22), PortRange::single(443)]
}

/// Whether router 6 forwards `client -> dst` (tcp/22 or udp/53), by its
/// compiled filter, asserting the reference evaluator agrees.
fn forwards(p: &Policy, nodes: &[NodeFacts], client: u8, dst: &str, tcp: bool) -> bool {
    let views = compile(p, nodes);
    let dst: IpAddr = dst.parse().unwrap();
    let (proto, port) = if tcp {
        (ip_proto::TCP, Some(22))
    } else {
        (ip_proto::UDP, Some(53))
    };
    let src = IpAddr::V4(tip(client));
    let compiled = filter_admits(&view(&views, 6).forward_filter, src, dst, proto, port);
    let oracle = forward_allows(p, nodes, NodeId(6), src, dst, proto, port);
    assert_eq!(compiled, oracle, "{client} -> {dst}");
    assert_eq!(policy_allows(p, nodes, src, dst, proto, port), oracle);
    compiled
}

#[test]
fn toggle_on_grants_lan_as_before() {
    let (p, nodes) = (policy(), net_with(true, true));
    let views = compile(&p, &nodes);
    let grant = |dst: &str, proto, ports: Vec<PortRange>| LanGrant {
        via: NodeId(6),
        dst: net(dst),
        proto,
        ports,
    };
    assert_eq!(
        view(&views, 2).lan_grants,
        vec![
            grant("10.20.1.0/24", Proto::Udp, vec![]),
            grant("192.168.77.0/24", Proto::Tcp, web_ports()),
            grant("192.168.77.10/32", Proto::Udp, vec![]),
        ]
    );
    assert_eq!(
        view(&views, 2).peer_routes,
        BTreeMap::from([(NodeId(6), vec![net("10.20.1.0/24"), net("192.168.77.0/24")])])
    );
    assert_eq!(
        view(&views, 6).forward_filter,
        vec![
            FilterRule {
                src: vec![net("100.64.0.2/31")],
                dst: vec![net("192.168.77.0/24")],
                proto: Proto::Tcp,
                ports: web_ports(),
            },
            FilterRule {
                src: vec![net("100.64.0.2/32")],
                dst: vec![net("10.20.1.0/24")],
                proto: Proto::Udp,
                ports: vec![],
            },
            FilterRule {
                src: vec![net("100.64.0.2/32")],
                dst: vec![net("192.168.77.10/32")],
                proto: Proto::Udp,
                ports: vec![],
            },
        ]
    );
    assert!(forwards(&p, &nodes, 2, "192.168.77.5", true));
    assert!(forwards(&p, &nodes, 2, "10.20.1.9", false));
    assert!(forwards(&p, &nodes, 3, "192.168.77.5", true));
    assert!(
        !forwards(&p, &nodes, 4, "192.168.77.5", true),
        "no ACL for dave"
    );
}

#[test]
fn toggle_off_withholds_grants_and_the_router_drops_the_client() {
    let p = policy();
    let off = net_with(false, true);
    let views = compile(&p, &off);
    let bob = view(&views, 2);
    assert!(bob.lan_grants.is_empty());
    assert!(bob.peer_routes.is_empty(), "no LAN prefix in bob's routes");
    assert_eq!(
        bob.exit_grants,
        vec![NodeId(6)],
        "exit use is not LAN access"
    );
    // The router's filter admits carol only; bob's UDP-only rules are gone.
    assert_eq!(
        view(&views, 6).forward_filter,
        vec![FilterRule {
            src: vec![net("100.64.0.3/32")],
            dst: vec![net("192.168.77.0/24")],
            proto: Proto::Tcp,
            ports: web_ports(),
        }]
    );
    // Even if bob forces his routing, the router drops his packets.
    assert!(!forwards(&p, &off, 2, "192.168.77.5", true));
    assert!(!forwards(&p, &off, 2, "192.168.77.10", false));
    assert!(!forwards(&p, &off, 2, "10.20.1.9", false));
    assert!(forwards(&p, &off, 3, "192.168.77.5", true));

    // Both off: the router forwards for nobody, and keeps no empty rule.
    let both_off = net_with(false, false);
    assert!(view(&compile(&p, &both_off), 6).forward_filter.is_empty());
    assert!(!forwards(&p, &both_off, 3, "192.168.77.5", true));
}

#[test]
fn toggle_never_changes_visibility_or_the_rest_of_a_view() {
    let p = policy();
    let on = compile(&p, &net_with(true, true));
    for (bob, carol) in [(false, true), (true, false), (false, false)] {
        let nodes = net_with(bob, carol);
        let views = compile(&p, &nodes);
        for (id, v) in &views {
            let w = &on[id];
            assert_eq!(v.visible_peers, w.visible_peers, "{id}");
            assert_eq!(v.packet_filter, w.packet_filter, "{id}");
            assert_eq!(v.exit_clients, w.exit_clients, "{id}");
            assert_eq!(v.exit_grants, w.exit_grants, "{id}");
            assert_eq!(v.approved_routes, w.approved_routes, "{id}");
        }
        let seen = rustynet_policy::oracle::visible(&p, &nodes, NodeId(2), NodeId(6));
        assert!(seen, "the reference evaluator ignores the toggle too");
        assert!(view(&views, 2).visible_peers.contains(&NodeId(6)));
        assert!(view(&views, 6).visible_peers.contains(&NodeId(2)));
    }
}

#[test]
fn router_own_toggle_does_not_stop_it_forwarding() {
    let p = policy();
    let mut nodes = net_with(true, true);
    let reference = compile(&p, &nodes);
    nodes[3].lan_access = true; // the router (built with its toggle off)
    assert_eq!(compile(&p, &nodes), reference);
    nodes[3].lan_access = false;
    assert_eq!(compile(&p, &nodes), reference);
}

#[test]
fn flipping_a_toggle_changes_only_reported_views() {
    let p = policy();
    let before = net_with(true, true);
    let after = net_with(false, true);
    let (old, new) = (PolicyIndex::new(&p, &before), PolicyIndex::new(&p, &after));
    let bob = NodeId(2);
    let mut reported = old.nodes_affected_by(bob);
    reported.extend(new.nodes_affected_by(bob));
    reported.push(bob);
    let (old_views, new_views) = (compile(&p, &before), compile(&p, &after));
    let differing: Vec<NodeId> = new_views
        .iter()
        .filter(|(id, v)| old_views[*id] != **v)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(differing, vec![bob, NodeId(6)], "the client and its router");
    for id in &differing {
        assert!(reported.contains(id), "{id} changed but was not reported");
    }
}

#[test]
fn lan_access_defaults_to_off_when_absent() {
    let mut json = serde_json::to_value(node(2, "bob", &[], true)).unwrap();
    assert_eq!(json["lan_access"], serde_json::Value::Bool(true));
    json.as_object_mut().unwrap().remove("lan_access");
    let facts: NodeFacts = serde_json::from_value(json).unwrap();
    assert!(
        !facts.lan_access,
        "an older record without the field fails closed"
    );
}
