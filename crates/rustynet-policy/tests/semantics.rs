//! One test per semantic rule of the policy language, on small hand-built
//! networks where the expected views can be written out in full.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns fail the test by panicking

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rustynet_policy::{NodeFacts, NodeView, Policy, PolicyIndex, compile, policy_allows};
use rustynet_proto::netmap::{filter_admits, ip_proto};
use rustynet_proto::{FilterRule, LanGrant, NodeId, PortRange, Proto};

fn tip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, last)
}

fn node(id: u64, host: &str, user: &str, tags: &[&str]) -> NodeFacts {
    NodeFacts {
        id: NodeId(id),
        hostname: host.to_owned(),
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        tunnel_ip: tip(u8::try_from(id).unwrap()),
        advertise_exit_node: false,
        advertised_routes: vec![],
        // On, so LAN grants depend on approval and ACL alone here; the
        // toggle has its own tests (tests/lan_toggle.rs).
        lan_access: true,
        admin_routes: Default::default(),
    }
}

fn router(mut n: NodeFacts, routes: &[&str], exit: bool) -> NodeFacts {
    n.advertised_routes = routes.iter().map(|r| r.parse().unwrap()).collect();
    n.advertise_exit_node = exit;
    n
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

fn ids(list: &[u64]) -> Vec<NodeId> {
    list.iter().map(|&i| NodeId(i)).collect()
}

fn host32(id: u64) -> IpNet {
    net(&format!("{}/32", tip(u8::try_from(id).unwrap())))
}

fn policy(text: &str) -> Policy {
    Policy::parse(text).unwrap()
}

fn view(views: &BTreeMap<NodeId, NodeView>, id: u64) -> &NodeView {
    &views[&NodeId(id)]
}

const BASE: &str = r#""groups": {"group:admins": ["alice"], "group:staff": ["bob", "carol"], "group:none": []},
    "tag_owners": {"tag:web": ["group:admins"], "tag:exit": ["alice"], "tag:router": ["alice"], "tag:free": []}"#;

fn with_base(rest: &str) -> Policy {
    policy(&format!("{{{BASE}, {rest}}}"))
}

/// alice (1, tagged web), bob (2), carol (3), dave (4), mallory (5, claims tag:web).
fn office() -> Vec<NodeFacts> {
    vec![
        node(1, "web", "alice", &["tag:web"]),
        node(2, "bob-laptop", "bob", &[]),
        node(3, "carol-laptop", "carol", &[]),
        node(4, "dave-laptop", "dave", &[]),
        node(5, "evil", "mallory", &["tag:web", "tag:undeclared"]),
    ]
}

#[test]
fn empty_policy_denies_everything() {
    let mut nodes = office();
    nodes.push(router(
        node(6, "gw", "alice", &["tag:router"]),
        &["10.0.0.0/8"],
        true,
    ));
    let views = compile(&Policy::default(), &nodes);
    assert_eq!(views.len(), 6);
    for v in views.values() {
        assert_eq!(v, &NodeView::default());
    }
}

#[test]
fn node_to_node_rule_compiles_to_inbound_filter() {
    let p = with_base(
        r#""acls": [{"action": "accept", "src": ["group:staff"], "dst": ["tag:web:443"], "proto": "tcp"}]"#,
    );
    let nodes = office();
    let views = compile(&p, &nodes);
    let web = view(&views, 1);
    assert_eq!(
        web.packet_filter,
        vec![FilterRule {
            src: nets(&["100.64.0.2/31"]),
            dst: vec![host32(1)],
            proto: Proto::Tcp,
            ports: vec![PortRange::single(443)],
        }]
    );
    assert_eq!(web.visible_peers, ids(&[2, 3]));
    assert_eq!(view(&views, 2).visible_peers, ids(&[1]));
    assert!(
        view(&views, 2).packet_filter.is_empty(),
        "rules are one-way"
    );
    assert_eq!(view(&views, 4), &NodeView::default(), "dave is in no rule");
    let admits = |src: u64, dst: u64, proto: u8, port: Option<u16>| {
        let d = view(&views, dst);
        filter_admits(
            &d.packet_filter,
            tip(src as u8).into(),
            tip(dst as u8).into(),
            proto,
            port,
        )
    };
    assert!(admits(2, 1, ip_proto::TCP, Some(443)));
    assert!(!admits(2, 1, ip_proto::TCP, Some(444)));
    assert!(!admits(2, 1, ip_proto::UDP, Some(443)));
    assert!(!admits(4, 1, ip_proto::TCP, Some(443)));
    assert!(!admits(1, 2, ip_proto::TCP, Some(443)));
}

#[test]
fn unowned_tags_are_ignored() {
    let p = with_base(
        r#""acls": [{"action": "accept", "src": ["tag:web"], "dst": ["*:*"]},
                    {"action": "accept", "src": ["bob"], "dst": ["tag:web:*", "tag:free:*"]}]"#,
    );
    let mut nodes = office();
    nodes.push(node(6, "free", "bob", &["tag:free"]));
    let views = compile(&p, &nodes);
    // mallory's node claims tag:web but mallory owns nothing: it gets neither
    // the tag's inbound rule from bob nor the tag's outbound reach.
    assert_eq!(view(&views, 5).packet_filter[0].src, vec![host32(1)]);
    assert_eq!(view(&views, 5).visible_peers, ids(&[1]));
    assert_eq!(view(&views, 2).visible_peers, ids(&[1]));
    for v in views.values() {
        for rule in &v.packet_filter {
            assert!(!rule.src.iter().any(|n| n.contains(&IpAddr::V4(tip(5)))));
        }
    }
    // A tag with no owners is never effective either.
    assert_eq!(view(&views, 6).packet_filter.len(), 1);
    assert_eq!(
        view(&views, 6).packet_filter[0].src,
        vec![host32(1)],
        "only tag:web -> *"
    );
    // alice's node owns tag:web through group:admins and reaches everyone.
    assert_eq!(view(&views, 1).visible_peers, ids(&[2, 3, 4, 5, 6]));
    assert!(!policy_allows(
        &p,
        &nodes,
        tip(5).into(),
        tip(2).into(),
        ip_proto::TCP,
        Some(1)
    ));
    assert!(policy_allows(
        &p,
        &nodes,
        tip(1).into(),
        tip(2).into(),
        ip_proto::TCP,
        Some(1)
    ));
}

#[test]
fn every_selector_kind_matches_its_nodes() {
    let cases: [(&str, &[u64]); 10] = [
        ("*:*", &[1, 2, 3, 4, 5]),
        ("alice:*", &[1]),
        ("group:staff:*", &[2, 3]),
        ("group:none:*", &[]),
        ("tag:web:*", &[1]),
        ("node:dave-laptop:*", &[4]),
        ("mynet:*", &[2, 3]),
        ("100.64.0.4:*", &[4]),
        ("100.64.0.4/30:*", &[4, 5]),
        ("[fd00::/64]:*", &[]),
    ];
    for (dst, expect) in cases {
        let p = with_base(&format!(
            r#""hosts": {{"mynet": "100.64.0.2/31"}},
               "acls": [{{"action": "accept", "src": ["100.64.0.0/10"], "dst": [{dst:?}]}}]"#
        ));
        let views = compile(&p, &office());
        let got: Vec<u64> = views
            .iter()
            .filter(|(_, v)| !v.packet_filter.is_empty())
            .map(|(id, _)| id.0)
            .collect();
        assert_eq!(got, expect, "{dst}");
        for id in got {
            // A literal source CIDR is admitted as written.
            assert_eq!(
                view(&views, id).packet_filter[0].src,
                nets(&["100.64.0.0/10"])
            );
        }
    }
}

#[test]
fn literal_sources_and_aliases_are_kept() {
    let p = with_base(
        r#""hosts": {"office": "192.168.1.0/24", "web": "100.64.0.1"},
           "acls": [{"action": "accept", "src": ["office", "dave", "fd00::1"], "dst": ["web:22"], "proto": "tcp"}]"#,
    );
    let views = compile(&p, &office());
    assert_eq!(
        view(&views, 1).packet_filter,
        vec![FilterRule {
            src: nets(&["100.64.0.4/32", "192.168.1.0/24", "fd00::1/128"]),
            dst: vec![host32(1)],
            proto: Proto::Tcp,
            ports: vec![PortRange::single(22)],
        }]
    );
    assert_eq!(view(&views, 1).visible_peers, ids(&[4]));
}

#[test]
fn host_alias_shadows_user_of_same_name() {
    let p = with_base(
        r#""hosts": {"bob": "100.64.0.3"},
           "acls": [{"action": "accept", "src": ["dave"], "dst": ["bob:*"]}]"#,
    );
    let views = compile(&p, &office());
    assert!(
        view(&views, 2).packet_filter.is_empty(),
        "user bob's node is not meant"
    );
    assert_eq!(
        view(&views, 3).packet_filter.len(),
        1,
        "the alias address is"
    );
}

#[test]
fn rules_merge_by_proto_and_ports_only() {
    let p = with_base(
        r#""acls": [
            {"action": "accept", "src": ["bob"], "dst": ["web:443,80"], "proto": "tcp"},
            {"action": "accept", "src": ["carol"], "dst": ["web:80,443"], "proto": "tcp"},
            {"action": "accept", "src": ["dave"], "dst": ["web:80"], "proto": "tcp"},
            {"action": "accept", "src": ["dave"], "dst": ["web:*"], "proto": "icmp"},
            {"action": "accept", "src": ["alice"], "dst": ["web:53"]}
        ], "hosts": {"web": "100.64.0.1"}"#,
    );
    let views = compile(&p, &office());
    let web = view(&views, 1);
    let tcp_web = vec![PortRange::single(80), PortRange::single(443)];
    assert_eq!(
        web.packet_filter,
        vec![
            FilterRule {
                src: vec![host32(1)],
                dst: vec![host32(1)],
                proto: Proto::Any,
                ports: vec![PortRange::single(53)],
            },
            FilterRule {
                src: nets(&["100.64.0.2/31"]),
                dst: vec![host32(1)],
                proto: Proto::Tcp,
                ports: tcp_web,
            },
            FilterRule {
                src: vec![host32(4)],
                dst: vec![host32(1)],
                proto: Proto::Tcp,
                ports: vec![PortRange::single(80)],
            },
            FilterRule {
                src: vec![host32(4)],
                dst: vec![host32(1)],
                proto: Proto::Icmp,
                ports: vec![],
            },
        ]
    );
    // "any" with ports admits only port-bearing protocols.
    let src = tip(1).into();
    let dst = tip(1).into();
    assert!(filter_admits(
        &web.packet_filter,
        src,
        dst,
        ip_proto::UDP,
        Some(53)
    ));
    assert!(!filter_admits(
        &web.packet_filter,
        src,
        dst,
        ip_proto::ICMP,
        None
    ));
    assert!(!filter_admits(
        &web.packet_filter,
        tip(4).into(),
        dst,
        ip_proto::TCP,
        Some(443)
    ));
    assert!(filter_admits(
        &web.packet_filter,
        tip(4).into(),
        dst,
        ip_proto::ICMPV6,
        None
    ));
}

/// Router 6 (alice, tag:router) advertises LANs; bob and carol are clients.
fn lan_net(exit: bool) -> Vec<NodeFacts> {
    let mut nodes = office();
    nodes.push(router(
        node(6, "gw", "alice", &["tag:router"]),
        &[
            "192.168.77.0/24",
            "10.20.1.0/24",
            "10.30.0.0/16",
            "100.64.0.0/10",
            "0.0.0.0/0",
            "127.0.0.0/8",
        ],
        exit,
    ));
    nodes
}

const LAN_ACL: &str = r#""hosts": {"nas": "192.168.77.10"},
    "acls": [{"action": "accept", "src": ["group:staff", "tag:router"], "dst": ["192.168.0.0/16:22,443"], "proto": "tcp"},
             {"action": "accept", "src": ["bob"], "dst": ["nas:*", "10.0.0.0/8:*"], "proto": "udp"}]"#;

#[test]
fn lan_grants_need_approval_and_acl() {
    // Advertised and ACL'd, but nobody approved the route: nothing.
    let unapproved = with_base(LAN_ACL);
    let views = compile(&unapproved, &lan_net(false));
    for v in views.values() {
        assert!(
            v.lan_grants.is_empty() && v.forward_filter.is_empty() && v.approved_routes.is_empty()
        );
    }

    // Approved, but no ACL names a LAN destination: nothing.
    let no_acl = with_base(
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
           "route_approvers": [{"routes": ["192.168.0.0/16", "10.0.0.0/8", "0.0.0.0/0"], "nodes": ["tag:router"]}]"#,
    );
    let views = compile(&no_acl, &lan_net(false));
    assert_eq!(
        view(&views, 6).approved_routes,
        nets(&["10.20.1.0/24", "10.30.0.0/16", "192.168.77.0/24"]),
        "forbidden routes are never approved, even under a 0.0.0.0/0 approver"
    );
    for v in views.values() {
        assert!(v.lan_grants.is_empty() && v.forward_filter.is_empty() && v.peer_routes.is_empty());
    }

    // Both: grants, intersected with the route, proto and ports kept.
    let both = with_base(&format!(
        r#"{LAN_ACL}, "route_approvers": [{{"routes": ["192.168.77.0/24", "10.20.0.0/16"], "nodes": ["tag:router"]}}]"#
    ));
    let nodes = lan_net(false);
    let views = compile(&both, &nodes);
    assert_eq!(
        view(&views, 6).approved_routes,
        nets(&["10.20.1.0/24", "192.168.77.0/24"])
    );
    let web_ports = vec![PortRange::single(22), PortRange::single(443)];
    let grant = |dst: &str, proto, ports: &Vec<PortRange>| LanGrant {
        via: NodeId(6),
        dst: net(dst),
        proto,
        ports: ports.clone(),
    };
    assert_eq!(
        view(&views, 2).lan_grants,
        vec![
            grant("10.20.1.0/24", Proto::Udp, &vec![]),
            grant("192.168.77.0/24", Proto::Tcp, &web_ports),
            grant("192.168.77.10/32", Proto::Udp, &vec![]),
        ]
    );
    assert_eq!(
        view(&views, 3).lan_grants,
        vec![grant("192.168.77.0/24", Proto::Tcp, &web_ports)]
    );
    assert!(view(&views, 4).lan_grants.is_empty());
    assert!(
        view(&views, 6).lan_grants.is_empty(),
        "the router gets no grant through itself"
    );
    assert_eq!(
        view(&views, 2).peer_routes,
        BTreeMap::from([(NodeId(6), nets(&["10.20.1.0/24", "192.168.77.0/24"]))])
    );
    assert_eq!(
        view(&views, 6).forward_filter,
        vec![
            FilterRule {
                src: nets(&["100.64.0.2/31"]),
                dst: nets(&["192.168.77.0/24"]),
                proto: Proto::Tcp,
                ports: web_ports.clone(),
            },
            FilterRule {
                src: vec![host32(2)],
                dst: nets(&["10.20.1.0/24"]),
                proto: Proto::Udp,
                ports: vec![],
            },
            FilterRule {
                src: vec![host32(2)],
                dst: nets(&["192.168.77.10/32"]),
                proto: Proto::Udp,
                ports: vec![],
            },
        ]
    );
    assert_eq!(view(&views, 6).visible_peers, ids(&[2, 3]));
    assert_eq!(view(&views, 3).visible_peers, ids(&[6]));
    assert!(policy_allows(
        &both,
        &nodes,
        tip(3).into(),
        "192.168.77.5".parse().unwrap(),
        ip_proto::TCP,
        Some(22)
    ));
    assert!(!policy_allows(
        &both,
        &nodes,
        tip(3).into(),
        "192.168.78.5".parse().unwrap(),
        ip_proto::TCP,
        Some(22)
    ));
    assert!(!policy_allows(
        &both,
        &nodes,
        tip(3).into(),
        "10.30.0.1".parse().unwrap(),
        ip_proto::UDP,
        Some(1)
    ));
}

#[test]
fn exit_role_approves_routes() {
    let exits = |users: &str| {
        with_base(&format!(
            r#"{LAN_ACL}, "exit_nodes": [{{"users": [{users}], "nodes": ["tag:router"]}}]"#
        ))
    };
    let views = compile(&exits(r#""group:staff""#), &lan_net(true));
    assert_eq!(
        view(&views, 6).approved_routes,
        nets(&["10.20.1.0/24", "10.30.0.0/16", "192.168.77.0/24"])
    );
    assert_eq!(view(&views, 2).lan_grants.len(), 4);
    // Not advertising exit: no exit role, no approval.
    let views = compile(&exits(r#""group:staff""#), &lan_net(false));
    assert!(view(&views, 6).approved_routes.is_empty());
    // An entry no user can match gives no exit role either.
    let views = compile(&exits(r#""group:none""#), &lan_net(true));
    assert!(view(&views, 6).approved_routes.is_empty());
}

#[test]
fn star_destination_never_grants_lan_or_exit() {
    let p = with_base(
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
           "route_approvers": [{"routes": ["192.168.0.0/16"], "nodes": ["*"]}]"#,
    );
    let nodes = lan_net(true);
    let views = compile(&p, &nodes);
    assert_eq!(view(&views, 6).approved_routes, nets(&["192.168.77.0/24"]));
    for v in views.values() {
        assert!(v.lan_grants.is_empty() && v.forward_filter.is_empty());
        assert!(v.exit_grants.is_empty() && v.exit_clients.is_empty());
        assert_eq!(v.packet_filter.len(), 1);
        assert_eq!(
            v.packet_filter[0].src,
            nets(&[
                "100.64.0.1/32",
                "100.64.0.2/31",
                "100.64.0.4/31",
                "100.64.0.6/32"
            ])
        );
    }
    let lan_ip: IpAddr = "192.168.77.1".parse().unwrap();
    let internet: IpAddr = "198.51.100.1".parse().unwrap();
    assert!(!policy_allows(
        &p,
        &nodes,
        tip(2).into(),
        lan_ip,
        ip_proto::TCP,
        Some(22)
    ));
    assert!(!policy_allows(
        &p,
        &nodes,
        tip(2).into(),
        internet,
        ip_proto::TCP,
        Some(443)
    ));
    assert!(policy_allows(
        &p,
        &nodes,
        tip(2).into(),
        tip(6).into(),
        ip_proto::TCP,
        Some(443)
    ));
}

#[test]
fn exit_grants_need_advertisement_and_policy() {
    let p =
        with_base(r#""exit_nodes": [{"users": ["group:staff", "alice"], "nodes": ["tag:exit"]}]"#);
    let mut nodes = office();
    nodes.push(router(node(6, "exit1", "alice", &["tag:exit"]), &[], true));
    nodes.push(router(node(7, "exit2", "alice", &["tag:exit"]), &[], false));
    nodes.push(router(node(8, "exit3", "bob", &["tag:exit"]), &[], true)); // bob does not own tag:exit
    let views = compile(&p, &nodes);
    assert_eq!(view(&views, 2).exit_grants, ids(&[6]));
    assert_eq!(view(&views, 3).exit_grants, ids(&[6]));
    assert_eq!(
        view(&views, 1).exit_grants,
        ids(&[6]),
        "alice's other node may use it"
    );
    assert!(view(&views, 6).exit_grants.is_empty(), "never itself");
    assert!(
        view(&views, 4).exit_grants.is_empty(),
        "dave is not a listed user"
    );
    assert_eq!(
        view(&views, 6).exit_clients,
        nets(&[
            "100.64.0.1/32",
            "100.64.0.2/31",
            "100.64.0.7/32",
            "100.64.0.8/32"
        ]),
        "exit1 is usable by staff and alice's nodes, exit3 included: it is bob's"
    );
    assert!(view(&views, 7).exit_clients.is_empty(), "not advertising");
    assert!(view(&views, 8).exit_clients.is_empty(), "tag not owned");
    assert_eq!(view(&views, 6).visible_peers, ids(&[1, 2, 3, 7, 8]));
    assert_eq!(view(&views, 2).visible_peers, ids(&[6]));
    assert!(view(&views, 2).packet_filter.is_empty() && view(&views, 6).packet_filter.is_empty());
    assert!(
        view(&views, 6).peer_routes.is_empty(),
        "exit never becomes a route"
    );
}

#[test]
fn visibility_is_symmetric_and_nothing_invisible_leaks() {
    let p = with_base(&format!(
        r#"{LAN_ACL}, "exit_nodes": [{{"users": ["carol"], "nodes": ["tag:router"]}}],
           "route_approvers": [{{"routes": ["192.168.0.0/16"], "nodes": ["tag:router"]}}]"#
    ));
    let nodes = lan_net(true);
    let views = compile(&p, &nodes);
    for (a, va) in &views {
        for (b, vb) in &views {
            assert_eq!(
                va.visible_peers.contains(b),
                vb.visible_peers.contains(a),
                "{a} {b}"
            );
            assert_eq!(
                va.visible_peers.contains(b),
                rustynet_policy::oracle::visible(&p, &nodes, *a, *b),
                "{a} {b}"
            );
        }
        let known = |ip: IpAddr| {
            nodes
                .iter()
                .find(|n| IpAddr::V4(n.tunnel_ip) == ip)
                .is_none_or(|n| n.id == *a || va.visible_peers.contains(&n.id))
        };
        for rule in va.packet_filter.iter().chain(&va.forward_filter) {
            for n in nodes.iter().filter(|n| {
                rule.src
                    .iter()
                    .any(|s| s.contains(&IpAddr::V4(n.tunnel_ip)))
            }) {
                assert!(known(n.tunnel_ip.into()), "{a} mentions {}", n.id);
            }
        }
        for g in &va.lan_grants {
            assert!(va.visible_peers.contains(&g.via));
        }
        for e in &va.exit_grants {
            assert!(va.visible_peers.contains(e));
        }
    }
}

#[test]
fn output_is_independent_of_input_order() {
    let p = with_base(&format!(
        r#"{LAN_ACL}, "exit_nodes": [{{"users": ["*"], "nodes": ["tag:router"]}}]"#
    ));
    let nodes = lan_net(true);
    let reference = compile(&p, &nodes);
    let mut shuffled = nodes.clone();
    for rotation in 0..shuffled.len() {
        shuffled.rotate_left(1);
        if rotation % 2 == 0 {
            shuffled.reverse();
        }
        assert_eq!(compile(&p, &shuffled), reference);
    }
    let index = PolicyIndex::new(&p, &nodes);
    for (id, v) in &reference {
        assert_eq!(index.view(*id).as_ref(), Some(v));
        assert_eq!(index.nodes_affected_by(*id), v.visible_peers);
    }
    assert_eq!(index.view(NodeId(99)), None);
    assert!(index.nodes_affected_by(NodeId(99)).is_empty());
}

#[test]
fn colliding_or_out_of_range_nodes_are_left_out() {
    let p = with_base(r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#);
    let mut nodes = office();
    let mut twin = node(7, "twin", "bob", &[]);
    twin.tunnel_ip = tip(3); // same address as carol
    let mut dup_id = node(4, "clone", "bob", &[]);
    dup_id.tunnel_ip = tip(9);
    let mut outside = node(8, "outside", "bob", &[]);
    outside.tunnel_ip = Ipv4Addr::new(10, 0, 0, 8);
    let mut dns = node(9, "dns", "bob", &[]);
    dns.tunnel_ip = Ipv4Addr::new(100, 100, 100, 100);
    nodes.extend([twin, dup_id, outside, dns]);
    let index = PolicyIndex::new(&p, &nodes);
    assert_eq!(index.rejected(), ids(&[3, 4, 7, 8, 9]).as_slice());
    for gone in [3, 4, 7, 8, 9] {
        assert_eq!(index.view(NodeId(gone)), None);
    }
    let web = index.view(NodeId(1)).unwrap();
    assert_eq!(web.visible_peers, ids(&[2, 5]));
    assert_eq!(
        web.packet_filter[0].src,
        nets(&["100.64.0.1/32", "100.64.0.2/32", "100.64.0.5/32"])
    );
    assert!(!policy_allows(
        &p,
        &nodes,
        tip(3).into(),
        tip(1).into(),
        ip_proto::TCP,
        Some(1)
    ));
}

#[test]
fn ipv6_lan_routes_work_like_ipv4() {
    let p = with_base(
        r#""acls": [{"action": "accept", "src": ["bob"], "dst": ["[fd00:77::/32]:22"], "proto": "tcp"}],
           "route_approvers": [{"routes": ["fd00::/16"], "nodes": ["node:gw"]}]"#,
    );
    let mut nodes = office();
    nodes.push(router(
        node(6, "gw", "carol", &[]),
        &["fd00:77:1::/64", "fe80::/64"],
        false,
    ));
    let views = compile(&p, &nodes);
    assert_eq!(view(&views, 6).approved_routes, nets(&["fd00:77:1::/64"]));
    assert_eq!(
        view(&views, 2).lan_grants,
        vec![LanGrant {
            via: NodeId(6),
            dst: net("fd00:77:1::/64"),
            proto: Proto::Tcp,
            ports: vec![PortRange::single(22)],
        }]
    );
    let dst: IpAddr = "fd00:77:1::5".parse().unwrap();
    assert!(filter_admits(
        &view(&views, 6).forward_filter,
        tip(2).into(),
        dst,
        ip_proto::TCP,
        Some(22)
    ));
    assert!(policy_allows(
        &p,
        &nodes,
        tip(2).into(),
        dst,
        ip_proto::TCP,
        Some(22)
    ));
}

#[test]
fn nodes_affected_by_covers_every_changed_view() {
    let p = with_base(&format!(
        r#"{LAN_ACL}, "exit_nodes": [{{"users": ["group:staff"], "nodes": ["tag:router"]}}]"#
    ));
    let before = lan_net(true);
    let mut after = before.clone();
    after[1].user = "dave".to_owned(); // bob's laptop changes hands
    let old = PolicyIndex::new(&p, &before);
    let new = PolicyIndex::new(&p, &after);
    let changed = NodeId(2);
    let mut must_recompute = old.nodes_affected_by(changed);
    must_recompute.extend(new.nodes_affected_by(changed));
    must_recompute.push(changed);
    let old_views = compile(&p, &before);
    let new_views = compile(&p, &after);
    let mut differing = 0;
    for (id, v) in &new_views {
        if old_views[id] != *v {
            differing += 1;
            assert!(
                must_recompute.contains(id),
                "{id} changed but was not reported"
            );
        }
    }
    assert!(
        differing >= 2,
        "the change must matter for the test to mean anything"
    );
}
