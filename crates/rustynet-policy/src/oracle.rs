//! The reference evaluator: answers questions about the policy straight from
//! its semantics, by scanning nodes and rules, with none of the compiler's
//! indexing, grouping or aggregation. Tests hold the compiled views against
//! it; it is far too slow for control to use (every query scans everything).

use std::net::IpAddr;

use ipnet::IpNet;
use rustynet_proto::netmap::ip_proto;
use rustynet_proto::netmap::{MAGIC_DNS_IP, TUNNEL_NET};
use rustynet_proto::{NodeId, PortRange, Proto};

use crate::index::NodeFacts;
use crate::model::{Policy, Selector};

/// Whether the policy allows a packet `src -> dst` with IP protocol `proto`
/// and destination port `port` (`None` for port-less protocols): to a node's
/// tunnel address (node-to-node), or otherwise into an approved LAN route of
/// some router (see [`forward_allows`], which needs the client's LAN-access
/// toggle on).
pub fn policy_allows(
    policy: &Policy,
    nodes: &[NodeFacts],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> bool {
    let nodes = eligible(nodes);
    if let Some(target) = nodes.iter().find(|n| IpAddr::V4(n.tunnel_ip) == dst) {
        return policy.rules.iter().any(|rule| {
            rule.src.iter().any(|s| src_admits(policy, &nodes, s, src))
                && rule.dst.iter().any(|e| {
                    node_matches(policy, &e.selector, target)
                        && proto_ports_ok(rule.proto, &e.ports, proto, port)
                })
        });
    }
    nodes
        .iter()
        .any(|r| forward_allowed(policy, &nodes, r, src, dst, proto, port))
}

/// Whether router `router` may forward a packet `src -> dst` into its LAN:
/// `src` is the tunnel address of another node C, `dst` lies in one of the
/// router's approved routes and inside a CIDR/alias destination of a rule
/// whose sources match C, with that rule's proto and ports, and C's
/// LAN-access toggle is on.
pub fn forward_allows(
    policy: &Policy,
    nodes: &[NodeFacts],
    router: NodeId,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> bool {
    let nodes = eligible(nodes);
    nodes
        .iter()
        .filter(|n| n.id == router)
        .any(|r| forward_allowed(policy, &nodes, r, src, dst, proto, port))
}

/// Whether `client` may use `exit` as its exit node.
pub fn may_use_exit(policy: &Policy, nodes: &[NodeFacts], client: NodeId, exit: NodeId) -> bool {
    let nodes = eligible(nodes);
    let (Some(c), Some(e)) = (find(&nodes, client), find(&nodes, exit)) else {
        return false;
    };
    c.id != e.id
        && e.advertise_exit_node
        && policy.exits.iter().any(|entry| {
            entry.users.iter().any(|u| user_matches(policy, u, &c.user))
                && entry.nodes.iter().any(|s| node_matches(policy, s, e))
        })
}

/// Whether `route`, as advertised by `node`, is approved.
pub fn route_approved(policy: &Policy, nodes: &[NodeFacts], node: NodeId, route: IpNet) -> bool {
    let nodes = eligible(nodes);
    find(&nodes, node).is_some_and(|n| approved(policy, n, route.trunc()))
}

/// Whether `a` and `b` (distinct) may know about each other: some rule lets
/// one reach the other, either may use the other as exit, or either has a
/// LAN grant through the other. LAN grants count here as if every toggle were
/// on: the LAN-access toggle never changes visibility.
pub fn visible(policy: &Policy, nodes: &[NodeFacts], a: NodeId, b: NodeId) -> bool {
    let eligible_nodes = eligible(nodes);
    let (Some(na), Some(nb)) = (find(&eligible_nodes, a), find(&eligible_nodes, b)) else {
        return false;
    };
    if a == b {
        return false;
    }
    let reaches = |x: &NodeFacts, y: &NodeFacts| {
        policy.rules.iter().any(|rule| {
            rule.src.iter().any(|s| node_matches(policy, s, x))
                && rule
                    .dst
                    .iter()
                    .any(|e| node_matches(policy, &e.selector, y))
        })
    };
    let lan_via = |client: &NodeFacts, router: &NodeFacts| {
        router.advertised_routes.iter().any(|route| {
            approved(policy, router, route.trunc())
                && policy.rules.iter().any(|rule| {
                    rule.src.iter().any(|s| node_matches(policy, s, client))
                        && rule.dst.iter().any(|e| match e.selector {
                            Selector::Prefix(net) => {
                                net.contains(&route.trunc()) || route.trunc().contains(&net)
                            }
                            _ => false,
                        })
                })
        })
    };
    reaches(na, nb)
        || reaches(nb, na)
        || may_use_exit(policy, nodes, a, b)
        || may_use_exit(policy, nodes, b, a)
        || lan_via(na, nb)
        || lan_via(nb, na)
}

/// Nodes the policy acts on: unique id, unique tunnel address, inside the
/// tunnel range and not the Magic DNS address. Anything else is ambiguous and
/// so ignored.
fn eligible(nodes: &[NodeFacts]) -> Vec<&NodeFacts> {
    nodes
        .iter()
        .filter(|n| {
            TUNNEL_NET.contains(&n.tunnel_ip)
                && n.tunnel_ip != MAGIC_DNS_IP
                && nodes.iter().filter(|m| m.id == n.id).count() == 1
                && nodes.iter().filter(|m| m.tunnel_ip == n.tunnel_ip).count() == 1
        })
        .collect()
}

fn find<'a>(nodes: &[&'a NodeFacts], id: NodeId) -> Option<&'a NodeFacts> {
    nodes.iter().find(|n| n.id == id).copied()
}

fn forward_allowed(
    policy: &Policy,
    nodes: &[&NodeFacts],
    router: &NodeFacts,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> bool {
    let Some(client) = nodes.iter().find(|n| IpAddr::V4(n.tunnel_ip) == src) else {
        return false;
    };
    if client.id == router.id || !client.lan_access {
        return false;
    }
    let in_approved_route = router
        .advertised_routes
        .iter()
        .any(|r| r.contains(&dst) && approved(policy, router, r.trunc()));
    in_approved_route
        && policy.rules.iter().any(|rule| {
            rule.src.iter().any(|s| node_matches(policy, s, client))
                && rule.dst.iter().any(|e| match e.selector {
                    Selector::Prefix(net) => {
                        net.contains(&dst) && proto_ports_ok(rule.proto, &e.ports, proto, port)
                    }
                    _ => false,
                })
        })
}

fn approved(policy: &Policy, node: &NodeFacts, route: IpNet) -> bool {
    if !node.advertised_routes.iter().any(|r| r.trunc() == route) || is_refused(route) {
        return false;
    }
    let rejected = node
        .admin_routes
        .rejected
        .iter()
        .any(|bad| bad.contains(&route.network()) || route.contains(&bad.network()));
    if rejected {
        return false;
    }
    if node
        .admin_routes
        .approved
        .iter()
        .any(|ok| ok.contains(&route.network()) && ok.prefix_len() <= route.prefix_len())
    {
        return true;
    }
    let exit_role = node.advertise_exit_node
        && policy.exits.iter().any(|e| {
            e.nodes.iter().any(|s| node_matches(policy, s, node))
                && e.users.iter().any(|u| match u {
                    Selector::Group(g) => policy.groups.get(g).is_some_and(|m| !m.is_empty()),
                    _ => true,
                })
        });
    exit_role
        || policy.approvers.iter().any(|a| {
            a.nodes.iter().any(|s| node_matches(policy, s, node))
                && a.routes.iter().any(|ok| ok.contains(&route))
        })
}

/// Routes never approved: default routes, and anything sharing an address
/// with the tunnel range, loopback, link-local, multicast and the like.
fn is_refused(route: IpNet) -> bool {
    const REFUSED: [&str; 11] = [
        "0.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "fe80::/10",
        "ff00::/8",
    ];
    route.prefix_len() == 0
        || REFUSED
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .any(|bad| bad.contains(&route.network()) || route.contains(&bad.network()))
}

fn in_group(policy: &Policy, group: &str, user: &str) -> bool {
    policy.groups.get(group).is_some_and(|m| m.contains(user))
}

fn user_matches(policy: &Policy, sel: &Selector, user: &str) -> bool {
    match sel {
        Selector::All => true,
        Selector::User(u) => u == user,
        Selector::Group(g) => in_group(policy, g, user),
        _ => false,
    }
}

fn node_matches(policy: &Policy, sel: &Selector, node: &NodeFacts) -> bool {
    match sel {
        Selector::All => true,
        Selector::User(u) => *u == node.user,
        Selector::Group(g) => in_group(policy, g, &node.user),
        Selector::Tag(t) => {
            node.tags.contains(t)
                && policy.tag_owners.get(t).is_some_and(|owners| {
                    owners.iter().any(|o| user_matches(policy, o, &node.user))
                })
        }
        Selector::Node(h) => *h == node.hostname,
        Selector::Prefix(net) => net.contains(&IpAddr::V4(node.tunnel_ip)),
    }
}

/// Whether source selector `sel` admits packets from address `src`: a
/// literal prefix admits its addresses, anything else the tunnel addresses
/// of the nodes it matches.
fn src_admits(policy: &Policy, nodes: &[&NodeFacts], sel: &Selector, src: IpAddr) -> bool {
    match sel {
        Selector::Prefix(net) => net.contains(&src),
        _ => nodes
            .iter()
            .any(|n| IpAddr::V4(n.tunnel_ip) == src && node_matches(policy, sel, n)),
    }
}

fn proto_ports_ok(rule: Proto, ports: &[PortRange], proto: u8, port: Option<u16>) -> bool {
    let proto_ok = match rule {
        Proto::Any => true,
        Proto::Tcp => proto == ip_proto::TCP,
        Proto::Udp => proto == ip_proto::UDP,
        Proto::Icmp => proto == ip_proto::ICMP || proto == ip_proto::ICMPV6,
    };
    if !proto_ok {
        return false;
    }
    if ports.is_empty() {
        return true;
    }
    let port_bearing = proto == ip_proto::TCP || proto == ip_proto::UDP;
    port_bearing && port.is_some_and(|p| ports.iter().any(|r| r.first <= p && p <= r.last))
}
