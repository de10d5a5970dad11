//! Property tests: on random policies over random small networks, the
//! compiled views agree exactly with the reference evaluator (so a filter
//! never admits what the policy does not, and admits all that it does), and
//! compilation is deterministic and independent of node order.
#![allow(clippy::unwrap_used)] // strategies build known-good literals

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use rustynet_policy::oracle::{forward_allows, may_use_exit, route_approved, visible};
use rustynet_policy::{
    AdminRoutes, NodeFacts, NodeView, Packet, Policy, PolicyIndex, compile, policy_allows,
};
use rustynet_proto::NodeId;
use rustynet_proto::netmap::{filter_admits, ip_proto};

const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
const CIDRS: [&str; 12] = [
    "100.64.0.0/10",
    "100.64.0.0/29",
    "100.64.0.4/30",
    "100.64.0.3/32",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "192.168.1.0/24",
    "192.168.1.7/32",
    "0.0.0.0/0",
    "fd00::/8",
    "fd00:1::/32",
];
const ROUTES: [&str; 9] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.128/25",
    "192.168.1.0/24",
    "fd00:1::/48",
    "100.64.0.0/10",
    "0.0.0.0/0",
    "127.0.0.0/8",
];
const APPROVER_ROUTES: [&str; 5] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.0.0/16",
    "fd00::/8",
    "0.0.0.0/0",
];
const ADMIN_ROUTES: [&str; 6] = [
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.128/25",
    "192.168.1.0/24",
    "fd00:1::/48",
    "172.16.0.0/12",
];
const PORTS: [&str; 5] = ["*", "22", "80,443", "1-1024", "53"];
const PROTOS: [&str; 4] = ["tcp", "udp", "icmp", "any"];
/// Packet kinds probed: (IP protocol, destination port).
const PACKETS: [(u8, Option<u16>); 8] = [
    (ip_proto::TCP, Some(22)),
    (ip_proto::TCP, Some(443)),
    (ip_proto::TCP, None),
    (ip_proto::UDP, Some(53)),
    (ip_proto::UDP, Some(1000)),
    (ip_proto::ICMP, None),
    (ip_proto::ICMPV6, None),
    (47, None),
];
/// Non-node destinations probed: LANs, a host route, IPv6, the internet.
const LAN_DSTS: [&str; 8] = [
    "10.1.2.3",
    "10.1.2.200",
    "10.5.0.1",
    "192.168.1.7",
    "192.168.1.9",
    "fd00:1::1",
    "198.51.100.1",
    "100.64.0.15",
];
/// Non-node sources probed.
const EXTRA_SRCS: [&str; 3] = ["192.168.1.7", "10.1.2.3", "fd00:1::9"];

fn tunnel(offset: u32) -> Ipv4Addr {
    Ipv4Addr::from_bits(Ipv4Addr::new(100, 64, 0, 0).to_bits() + offset)
}

fn selector() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        1 => select(&USERS[..]).prop_map(str::to_owned),
        1 => (0..3usize).prop_map(|g| format!("group:g{g}")),
        1 => (0..3usize).prop_map(|t| format!("tag:t{t}")),
        1 => (0..12usize).prop_map(|n| format!("node:n{n}")),
        1 => Just("h0".to_owned()),
        2 => select(&CIDRS[..]).prop_map(str::to_owned),
    ]
}

fn node_selector() -> impl Strategy<Value = String> {
    selector().prop_filter("node selectors only", |s| !s.contains('/') && s != "h0")
}

fn rule() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::collection::vec(selector(), 1..3),
        prop::collection::vec((selector(), select(&PORTS[..])), 1..3),
        select(&PROTOS[..]),
    )
        .prop_map(|(src, dst, proto)| {
            let dst: Vec<String> = dst
                .into_iter()
                .map(|(sel, ports)| {
                    let ports = if proto == "icmp" { "*" } else { ports };
                    if sel.contains("::") {
                        format!("[{sel}]:{ports}")
                    } else {
                        format!("{sel}:{ports}")
                    }
                })
                .collect();
            serde_json::json!({"action": "accept", "src": src, "dst": dst, "proto": proto})
        })
}

fn policy() -> impl Strategy<Value = Policy> {
    let groups = prop::collection::vec(subsequence(USERS[..4].to_vec(), 0..=4), 3);
    let owners = prop::collection::vec(
        subsequence(vec!["alice", "bob", "group:g0", "group:g1"], 0..=2),
        3,
    );
    let users_sel = prop_oneof![
        Just("*".to_owned()),
        select(&USERS[..]).prop_map(str::to_owned),
        (0..3usize).prop_map(|g| format!("group:g{g}")),
    ];
    let exits = prop::collection::vec(
        (
            prop::collection::vec(users_sel, 1..3),
            prop::collection::vec(node_selector(), 1..3),
        ),
        0..3,
    );
    let approvers = prop::collection::vec(
        (
            subsequence(APPROVER_ROUTES.to_vec(), 1..=2),
            prop::collection::vec(node_selector(), 1..3),
        ),
        0..3,
    );
    (
        groups,
        owners,
        select(&CIDRS[..]),
        prop::collection::vec(rule(), 0..6),
        exits,
        approvers,
    )
        .prop_map(|(groups, owners, host, acls, exits, approvers)| {
            let groups: BTreeMap<String, Vec<&str>> = groups
                .into_iter()
                .enumerate()
                .map(|(i, m)| (format!("group:g{i}"), m))
                .collect();
            let owners: BTreeMap<String, Vec<&str>> = owners
                .into_iter()
                .enumerate()
                .map(|(i, m)| (format!("tag:t{i}"), m))
                .collect();
            let exits: Vec<_> = exits
                .into_iter()
                .map(|(users, nodes)| serde_json::json!({"users": users, "nodes": nodes}))
                .collect();
            let approvers: Vec<_> = approvers
                .into_iter()
                .map(|(routes, nodes)| serde_json::json!({"routes": routes, "nodes": nodes}))
                .collect();
            let doc = serde_json::json!({
                "groups": groups, "tag_owners": owners, "hosts": {"h0": host},
                "acls": acls, "exit_nodes": exits, "route_approvers": approvers,
            });
            Policy::parse(&doc.to_string()).unwrap()
        })
}

fn nodes() -> impl Strategy<Value = Vec<NodeFacts>> {
    let node = (
        select(&USERS[..]),
        subsequence(vec!["tag:t0", "tag:t1", "tag:t2", "tag:zz"], 0..=2),
        any::<bool>(),
        subsequence(ROUTES.to_vec(), 0..=3),
        any::<bool>(),
        // Admin decisions: approvals and rejections of routes and of
        // prefixes around them.
        subsequence(ADMIN_ROUTES.to_vec(), 0..=2),
        subsequence(ADMIN_ROUTES.to_vec(), 0..=1),
    );
    (2..=12usize)
        .prop_flat_map(move |n| {
            (
                prop::collection::vec(node.clone(), n),
                subsequence((0..16u32).collect::<Vec<_>>(), n).prop_shuffle(),
            )
        })
        .prop_map(|(specs, offsets)| {
            specs
                .into_iter()
                .zip(offsets)
                .enumerate()
                .map(
                    |(i, ((user, tags, exit, routes, lan, approved, rejected), offset))| {
                        NodeFacts {
                            id: NodeId(100 + i as u64),
                            hostname: format!("n{i}"),
                            user: user.to_owned(),
                            tags: tags.into_iter().map(str::to_owned).collect(),
                            tunnel_ip: tunnel(offset),
                            advertise_exit_node: exit,
                            advertised_routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
                            lan_access: lan,
                            admin_routes: AdminRoutes {
                                approved: approved.iter().map(|r| r.parse().unwrap()).collect(),
                                rejected: rejected.iter().map(|r| r.parse().unwrap()).collect(),
                            },
                        }
                    },
                )
                .collect()
        })
}

fn ip(n: &NodeFacts) -> IpAddr {
    IpAddr::V4(n.tunnel_ip)
}

/// `acl explain` gives the oracle's verdict and names a rule exactly when
/// it admits.
fn explained(
    index: &PolicyIndex<'_>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
    oracle: bool,
) -> Result<(), TestCaseError> {
    if !index.rejected().is_empty() {
        return Ok(());
    }
    let ex = index.explain(Packet {
        src,
        dst,
        proto,
        port,
    });
    prop_assert_eq!(
        ex.allowed,
        oracle,
        "explain {} -> {} {} {:?}: {:?}",
        src,
        dst,
        proto,
        port,
        ex
    );
    prop_assert!(ex.consistent, "explain inconsistent: {:?}", ex);
    prop_assert_eq!(ex.reasons.is_empty(), oracle, "reasons: {:?}", ex);
    Ok(())
}

/// Every way a compiled view could disagree with the reference evaluator.
fn check_against_oracle(
    p: &Policy,
    nodes: &[NodeFacts],
    views: &BTreeMap<NodeId, NodeView>,
) -> Result<(), TestCaseError> {
    let srcs: Vec<IpAddr> = nodes
        .iter()
        .map(ip)
        .chain(EXTRA_SRCS.iter().map(|s| s.parse().unwrap()))
        .collect();
    // A tunnel address that no node holds is probed too, so skip it when one does.
    let lan_dsts: Vec<IpAddr> = LAN_DSTS
        .iter()
        .map(|s| s.parse().unwrap())
        .filter(|d| !nodes.iter().any(|n| ip(n) == *d))
        .collect();
    let index = PolicyIndex::new(p, nodes);
    for d in nodes {
        let view = &views[&d.id];
        for &src in &srcs {
            for (proto, port) in PACKETS {
                // (1) and its converse: the inbound filter is exactly the policy.
                let compiled = filter_admits(&view.packet_filter, src, ip(d), proto, port);
                let oracle = policy_allows(p, nodes, src, ip(d), proto, port);
                explained(&index, src, ip(d), proto, port, oracle)?;
                prop_assert_eq!(
                    compiled,
                    oracle,
                    "{} -> {} ({}, {:?})",
                    src,
                    d.id,
                    proto,
                    port
                );
            }
        }
    }
    for &dst in &lan_dsts {
        for &src in &srcs {
            for (proto, port) in PACKETS {
                let mut any_router = false;
                for n in nodes {
                    let view = &views[&n.id];
                    // (2) each router's forward filter is exactly the policy for that router.
                    let compiled = filter_admits(&view.forward_filter, src, dst, proto, port);
                    let oracle = forward_allows(p, nodes, n.id, src, dst, proto, port);
                    prop_assert_eq!(compiled, oracle, "via {}: {} -> {}", n.id, src, dst);
                    any_router |= compiled;
                    // The client's grants say the same as the router's filter.
                    if let Some(client) = nodes.iter().find(|c| ip(c) == src) {
                        let granted = views[&client.id].lan_grants.iter().any(|g| {
                            g.via == n.id
                                && g.dst.contains(&dst)
                                && rustynet_proto::FilterRule {
                                    src: vec![IpNet::from(src)],
                                    dst: vec![g.dst],
                                    proto: g.proto,
                                    ports: g.ports.clone(),
                                }
                                .admits(src, dst, proto, port)
                        });
                        prop_assert_eq!(granted, compiled, "grant of {} via {}", client.id, n.id);
                    }
                }
                let oracle = policy_allows(p, nodes, src, dst, proto, port);
                prop_assert_eq!(any_router, oracle);
                explained(&index, src, dst, proto, port, oracle)?;
            }
        }
    }
    for a in nodes {
        let va = &views[&a.id];
        let mut approved: Vec<IpNet> = a
            .advertised_routes
            .iter()
            .map(IpNet::trunc)
            .filter(|r| route_approved(p, nodes, a.id, *r))
            .collect();
        approved.sort();
        approved.dedup();
        prop_assert_eq!(&va.approved_routes, &approved);
        // What `routes list` says agrees with what the maps get.
        if index.rejected().is_empty() {
            for r in &a.advertised_routes {
                let status = index.route_status(a.id, *r).unwrap();
                prop_assert_eq!(
                    status.is_approved(),
                    approved.contains(&r.trunc()),
                    "{} {}: {:?}",
                    a.id,
                    r,
                    status
                );
            }
        }
        for b in nodes {
            let exit = may_use_exit(p, nodes, a.id, b.id);
            prop_assert_eq!(va.exit_grants.contains(&b.id), exit);
            let listed = views[&b.id].exit_clients.iter().any(|c| c.contains(&ip(a)));
            prop_assert_eq!(listed, exit);
            let vis = visible(p, nodes, a.id, b.id);
            prop_assert_eq!(
                va.visible_peers.contains(&b.id),
                vis,
                "{} sees {}",
                a.id,
                b.id
            );
            // Nothing about an invisible node appears anywhere in the view.
            if a.id != b.id && !vis {
                let mentioned = va
                    .packet_filter
                    .iter()
                    .chain(&va.forward_filter)
                    .flat_map(|r| &r.src)
                    .chain(&va.exit_clients)
                    .any(|n| n.contains(&ip(b)))
                    || va.lan_grants.iter().any(|g| g.via == b.id)
                    || va.peer_routes.contains_key(&b.id);
                prop_assert!(!mentioned, "{} mentions invisible {}", a.id, b.id);
            }
        }
        for routes in va.peer_routes.values() {
            prop_assert!(routes.iter().all(|r| r.prefix_len() > 0));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn compiled_views_match_the_reference(p in policy(), nodes in nodes()) {
        let views = compile(&p, &nodes);
        prop_assert_eq!(views.len(), nodes.len());
        check_against_oracle(&p, &nodes, &views)?;
    }

    #[test]
    fn compile_is_deterministic_and_order_independent(
        p in policy(),
        (nodes, shuffled) in nodes().prop_flat_map(|n| (Just(n.clone()), Just(n).prop_shuffle())),
    ) {
        let views = compile(&p, &nodes);
        prop_assert_eq!(&compile(&p, &nodes), &views);
        prop_assert_eq!(&compile(&p, &shuffled), &views);
        let reparsed = Policy::parse(&p.to_json_pretty()).unwrap();
        prop_assert_eq!(&reparsed, &p);
        prop_assert_eq!(&compile(&reparsed, &shuffled), &views);
        let index = PolicyIndex::new(&p, &shuffled);
        for (id, view) in &views {
            prop_assert_eq!(index.view(*id), Some(view.clone()));
            prop_assert_eq!(&index.nodes_affected_by(*id), &view.visible_peers);
            for peer in &view.visible_peers {
                prop_assert!(views[peer].visible_peers.contains(id), "symmetric");
            }
            for list in [&view.visible_peers, &view.exit_grants] {
                prop_assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
            }
            for rule in view.packet_filter.iter().chain(&view.forward_filter) {
                prop_assert!(rule.src.windows(2).all(|w| w[0] < w[1] && !w[0].contains(&w[1])));
            }
        }
    }

    /// The LAN-access toggle only ever withholds LAN grants and forward
    /// filter entries, exactly from the nodes whose toggle is off, and never
    /// changes who sees whom or anything else in a view.
    #[test]
    fn lan_toggle_only_withholds_lan_access(p in policy(), nodes in nodes()) {
        let views = compile(&p, &nodes);
        let all_on: Vec<NodeFacts> = nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.lan_access = true;
                n
            })
            .collect();
        let on_views = compile(&p, &all_on);
        for n in &nodes {
            let (v, on) = (&views[&n.id], &on_views[&n.id]);
            prop_assert_eq!(&v.visible_peers, &on.visible_peers);
            prop_assert_eq!(&v.packet_filter, &on.packet_filter);
            prop_assert_eq!(&v.exit_clients, &on.exit_clients);
            prop_assert_eq!(&v.exit_grants, &on.exit_grants);
            prop_assert_eq!(&v.approved_routes, &on.approved_routes);
            if n.lan_access {
                prop_assert_eq!(&v.lan_grants, &on.lan_grants);
                prop_assert_eq!(&v.peer_routes, &on.peer_routes);
            } else {
                prop_assert!(v.lan_grants.is_empty(), "{} toggle off but granted", n.id);
                prop_assert!(v.peer_routes.is_empty(), "{} toggle off but routed", n.id);
                for (router, other) in &views {
                    let named = other
                        .forward_filter
                        .iter()
                        .flat_map(|r| &r.src)
                        .any(|s| s.contains(&ip(n)));
                    prop_assert!(!named, "{} forwards for {} (toggle off)", router, n.id);
                }
            }
            for rule in &v.forward_filter {
                prop_assert!(!rule.src.is_empty(), "forward rule without clients");
            }
        }
    }

    /// After one node changes (user, tags, exit offer, routes, address,
    /// LAN-access toggle, or removal), only its own view and the views of its
    /// peers before or after the change may differ.
    #[test]
    fn one_node_delta_is_local(
        p in policy(),
        nodes in nodes(),
        pick in any::<prop::sample::Index>(),
        change in 0..7u8,
        user in select(&USERS[..]),
        route in select(&ROUTES[..]),
    ) {
        let x = pick.index(nodes.len());
        let mut after = nodes.clone();
        match change {
            0 => after[x].user = user.to_owned(),
            1 => after[x].tags = vec!["tag:t0".to_owned(), "tag:t1".to_owned()],
            2 => after[x].advertise_exit_node = !after[x].advertise_exit_node,
            3 => after[x].advertised_routes = vec![route.parse().unwrap()],
            4 => after[x].tunnel_ip = tunnel(100), // unused address
            5 => after[x].lan_access = !after[x].lan_access,
            _ => {
                after.remove(x);
            }
        }
        let id = nodes[x].id;
        let old = PolicyIndex::new(&p, &nodes);
        let new = PolicyIndex::new(&p, &after);
        let mut affected = old.nodes_affected_by(id);
        affected.extend(new.nodes_affected_by(id));
        let old_views = compile(&p, &nodes);
        for (other, view) in compile(&p, &after) {
            if other != id && !affected.contains(&other) {
                prop_assert_eq!(&old_views[&other], &view, "{} changed unreported", other);
            }
        }
    }
}

/// The generators must actually produce networks where each feature is in
/// play, or the properties above would hold vacuously.
#[test]
fn generators_exercise_every_feature() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let (mut filters, mut grants, mut exits, mut approved, mut forwards, mut rejected_routes) =
        (0, 0, 0, 0, 0, 0);
    let mut withheld = 0;
    let cases = 300;
    for _ in 0..cases {
        let p = policy().new_tree(&mut runner).unwrap().current();
        let nodes = nodes().new_tree(&mut runner).unwrap().current();
        let views = compile(&p, &nodes);
        let any = |f: &dyn Fn(&NodeView) -> bool| usize::from(views.values().any(f));
        filters += any(&|v| !v.packet_filter.is_empty());
        grants += any(&|v| !v.lan_grants.is_empty());
        exits += any(&|v| !v.exit_grants.is_empty());
        approved += any(&|v| !v.approved_routes.is_empty());
        forwards += any(&|v| !v.forward_filter.is_empty());
        rejected_routes += usize::from(
            nodes
                .iter()
                .any(|n| views[&n.id].approved_routes.len() < n.advertised_routes.len()),
        );
        // A node with its toggle off that the ACL would give LAN access.
        let all_on: Vec<NodeFacts> = nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.lan_access = true;
                n
            })
            .collect();
        let on_views = compile(&p, &all_on);
        withheld += usize::from(
            nodes
                .iter()
                .any(|n| !n.lan_access && !on_views[&n.id].lan_grants.is_empty()),
        );
    }
    for (what, count) in [
        ("packet filters", filters),
        ("LAN grants", grants),
        ("exit grants", exits),
        ("approved routes", approved),
        ("forward filters", forwards),
        ("unapproved routes", rejected_routes),
        ("LAN grants withheld by the toggle", withheld),
    ] {
        eprintln!("{what}: {count}/{cases}");
        assert!(
            count * 10 >= cases,
            "only {count} of {cases} cases have {what}"
        );
    }
}
