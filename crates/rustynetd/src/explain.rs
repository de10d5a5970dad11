//! The node's explain commands, as pure functions.
//!
//! `route explain ADDR` walks the kernel's policy rules and routes as read
//! back over netlink (the real dataplane, not what the plan meant to
//! install), picks the peer the tunnel would hand the packet to by its
//! allowed addresses (longest prefix, as the engine does), and says what the
//! firewall built from the same generation does with it. `acl explain
//! PEER[:PORT]` reads the filters of the map this node applied.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use rustynet_netos::{IpFamily, RouteEntry, RouteType, Rule, RuleEntry};
use rustynet_proto::explain::{AclExplainDoc, ExplainPeer, RouteExplainDoc, RouteOutcome};
use rustynet_proto::ipc::PathKind;
use rustynet_proto::netmap::{TUNNEL_NET, ip_proto};
use rustynet_proto::{FilterRule, LanGrant, Netmap, PeerInfo, PortRange, Proto};

use crate::plan::{Desired, PRIVATE_V4, find_peer};

/// The main routing table.
const MAIN_TABLE: u32 = 254;

/// The kernel's choice for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The rule that selected the table (`None` when no rules were listed
    /// and main was used).
    pub rule: Option<Rule>,
    /// The route found.
    pub route: Option<RouteEntry>,
}

fn family(addr: IpAddr) -> IpFamily {
    if addr.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    }
}

/// The most specific route of `routes` covering `addr` (lowest metric on
/// a tie), as the kernel's FIB lookup picks it.
fn best_route(routes: &[RouteEntry], addr: IpAddr) -> Option<&RouteEntry> {
    routes
        .iter()
        .filter(|r| r.dst.contains(&addr))
        .max_by_key(|r| (r.dst.prefix_len(), std::cmp::Reverse(r.metric)))
}

/// Emulates the kernel's policy routing for a packet to `addr` carrying
/// `mark` (0 for an ordinary one): rules by priority (lookup rules whose
/// selectors we model; `fwmark` inverted where asked), the longest match in each table,
/// `suppress_prefixlength` honoured. `routes(table)` reads one table.
pub fn kernel_lookup(
    addr: IpAddr,
    mark: u32,
    rules: &[RuleEntry],
    mut routes: impl FnMut(u32) -> Vec<RouteEntry>,
) -> Lookup {
    let mut rules: Vec<&RuleEntry> = rules
        .iter()
        .filter(|r| r.rule.family == family(addr) && r.is_lookup && !r.has_extras)
        .collect();
    rules.sort_by_key(|r| r.rule.priority);
    if rules.is_empty() {
        let main = routes(MAIN_TABLE);
        return Lookup {
            rule: None,
            route: best_route(&main, addr).cloned(),
        };
    }
    for entry in rules {
        let rule = &entry.rule;
        if let Some((value, mask)) = rule.fwmark {
            let matches = (mark & mask) == value;
            if matches == rule.invert {
                continue;
            }
        }
        let table = routes(rule.table);
        let Some(route) = best_route(&table, addr) else {
            continue;
        };
        if rule
            .suppress_prefixlen
            .is_some_and(|s| route.dst.prefix_len() <= s)
        {
            continue;
        }
        return Lookup {
            rule: Some(rule.clone()),
            route: Some(route.clone()),
        };
    }
    Lookup {
        rule: None,
        route: None,
    }
}

/// `tcp/22`, `udp/53,8000-8080`, `tcp+udp/443`, `icmp`, `any`.
pub fn describe(proto: Proto, ports: &[PortRange]) -> String {
    let list = || {
        ports
            .iter()
            .map(|p| {
                if p.first == p.last {
                    p.first.to_string()
                } else {
                    format!("{}-{}", p.first, p.last)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let all = ports.is_empty() || ports.contains(&PortRange::ALL);
    match (proto, all) {
        (Proto::Any, true) => "any".into(),
        (Proto::Any, false) => format!("tcp+udp/{}", list()),
        (Proto::Tcp, true) => "tcp/*".into(),
        (Proto::Tcp, false) => format!("tcp/{}", list()),
        (Proto::Udp, true) => "udp/*".into(),
        (Proto::Udp, false) => format!("udp/{}", list()),
        (Proto::Icmp, _) => "icmp".into(),
    }
}

/// Whether `(proto, ports)` admits a TCP or UDP packet to `port`.
fn admits_port(proto: Proto, ports: &[PortRange], port: u16) -> bool {
    [ip_proto::TCP, ip_proto::UDP]
        .iter()
        .any(|p| proto.admits(*p) && (ports.is_empty() || ports.iter().any(|r| r.contains(port))))
}

/// The grants in force now: those of the routers the plan chose.
fn grants_in_force<'a>(netmap: &'a Netmap, desired: &Desired) -> Vec<&'a LanGrant> {
    netmap
        .lan_grants
        .iter()
        .filter(|g| {
            desired
                .lan_routes
                .iter()
                .any(|r| r.prefix == g.dst && r.via == g.via)
        })
        .collect()
}

fn is_private(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => PRIVATE_V4
            .iter()
            .filter_map(|(n, l)| Ipv4Net::new(*n, *l).ok())
            .any(|n| n.contains(&a)),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// What the engine reports about a peer's path: kind and endpoint/relay.
pub type PathOf<'a> = dyn Fn(&PeerInfo) -> (PathKind, Option<String>) + 'a;

/// `route explain ADDR` from the kernel's lookup, the applied generation
/// and its map.
pub fn route_explain(
    addr: IpAddr,
    lookup: &Lookup,
    tun: &str,
    netmap: &Netmap,
    desired: &Desired,
    path_of: &PathOf<'_>,
) -> RouteExplainDoc {
    let route = lookup.route.as_ref();
    let dev = route.and_then(|r| r.dev.clone());
    let into_tunnel = dev.as_deref() == Some(tun);
    let outcome = match route.map(|r| r.kind) {
        None => RouteOutcome::NoRoute,
        Some(RouteType::Local) => RouteOutcome::Local,
        Some(RouteType::Unicast) if into_tunnel => RouteOutcome::Tunnel,
        Some(RouteType::Unicast) => RouteOutcome::Outside,
        Some(_) => RouteOutcome::Unreachable,
    };
    // The tunnel hands the packet to the peer with the longest allowed
    // prefix covering it (cryptokey routing).
    let carrier = desired
        .peers
        .iter()
        .flat_map(|p| {
            p.allowed_ips
                .iter()
                .filter(move |n| n.contains(&addr))
                .map(move |n| (*n, p))
        })
        .max_by_key(|(n, _)| n.prefix_len());
    let peer = match (outcome, carrier) {
        (RouteOutcome::Tunnel, Some((prefix, cfg))) => netmap
            .peers
            .iter()
            .find(|p| p.node_key == cfg.public_key)
            .map(|p| {
                let (path, via) = path_of(p);
                ExplainPeer {
                    name: p.hostname.clone(),
                    tunnel_ip: p.tunnel_ip,
                    prefix,
                    path,
                    via,
                    online: p.online,
                }
            }),
        _ => None,
    };
    let outcome = if outcome == RouteOutcome::Tunnel && peer.is_none() {
        RouteOutcome::TunnelNoPeer
    } else {
        outcome
    };
    let standby: Vec<String> = desired
        .lan_routes
        .iter()
        .filter(|r| r.prefix.contains(&addr))
        .max_by_key(|r| r.prefix.prefix_len())
        .map(|r| {
            r.standby
                .iter()
                .filter_map(|id| netmap.peer(*id).map(|p| p.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    let (firewall, allowed) = firewall_out(addr, outcome, netmap, desired);
    RouteExplainDoc {
        addr,
        outcome,
        rule: lookup.rule.as_ref().map(ToString::to_string),
        table: route.map(|r| r.table),
        route: route.map(ToString::to_string),
        dev,
        peer,
        standby,
        firewall,
        allowed,
    }
}

/// The output chain's verdict for packets to `addr` (built by
/// `plan::firewall` from the same generation), in words and as the
/// protocols it lets out.
fn firewall_out(
    addr: IpAddr,
    outcome: RouteOutcome,
    netmap: &Netmap,
    desired: &Desired,
) -> (String, Vec<String>) {
    let any = || vec!["any".to_owned()];
    match outcome {
        RouteOutcome::Local => ("delivered locally (loopback is not filtered)".into(), any()),
        RouteOutcome::NoRoute | RouteOutcome::Unreachable => {
            ("no usable route: the kernel refuses it".into(), vec![])
        }
        RouteOutcome::TunnelNoPeer => (
            "into the tunnel, but no peer may carry it: the engine drops it".into(),
            vec![],
        ),
        RouteOutcome::Outside if desired.protected => (
            "dropped by the kill switch (egress outside the tunnel while an exit node is in use)"
                .into(),
            vec![],
        ),
        RouteOutcome::Outside => (
            "not Rustynet's traffic: the firewall leaves it alone".into(),
            any(),
        ),
        RouteOutcome::Tunnel if IpNet::V4(TUNNEL_NET).contains(&addr) => (
            "accepted out to the mesh; the peer's inbound filter decides what it admits".into(),
            any(),
        ),
        RouteOutcome::Tunnel if is_private(addr) => {
            let allowed: Vec<String> = grants_in_force(netmap, desired)
                .into_iter()
                .filter(|g| g.dst.contains(&addr))
                .map(|g| describe(g.proto, &g.ports))
                .collect();
            if allowed.is_empty() {
                (
                    "dropped: LAN through the tunnel without LAN access (no grant in force)".into(),
                    allowed,
                )
            } else {
                (
                    format!(
                        "accepted for {} (LAN grants in force); anything else to it is dropped",
                        allowed.join(", ")
                    ),
                    allowed,
                )
            }
        }
        RouteOutcome::Tunnel => (
            "accepted into the tunnel to the exit node (the kill switch keeps it there)".into(),
            any(),
        ),
    }
}

fn rules_from(rules: &[FilterRule], src: IpAddr) -> impl Iterator<Item = &FilterRule> {
    rules
        .iter()
        .filter(move |r| r.src.iter().any(|n| n.contains(&src)))
}

/// Why `acl explain` cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// No visible peer by that name.
    #[error("no peer named {0:?} is visible to this node")]
    UnknownPeer(String),
}

/// `acl explain PEER[:PORT]` from the applied map.
pub fn acl_explain(
    netmap: &Netmap,
    desired: &Desired,
    peer: &str,
    port: Option<u16>,
) -> Result<AclExplainDoc, ExplainError> {
    let p = find_peer(netmap, peer).ok_or_else(|| ExplainError::UnknownPeer(peer.to_owned()))?;
    let src = IpAddr::V4(p.tunnel_ip);
    let me = IpAddr::V4(netmap.self_node.tunnel_ip);
    let wanted = |proto: Proto, ports: &[PortRange]| match port {
        Some(port) => admits_port(proto, ports, port),
        None => true,
    };
    let mut inbound: Vec<String> = rules_from(&netmap.packet_filter, src)
        .filter(|r| r.dst.iter().any(|n| n.contains(&me)))
        .filter(|r| wanted(r.proto, &r.ports))
        .map(|r| describe(r.proto, &r.ports))
        .collect();
    inbound.dedup();
    let mut forwarded: Vec<String> = rules_from(&netmap.forward_filter, src)
        .filter(|r| wanted(r.proto, &r.ports))
        .flat_map(|r| {
            r.dst
                .iter()
                .map(move |d| format!("{d} {}", describe(r.proto, &r.ports)))
        })
        .collect();
    if netmap.exit_clients.iter().any(|n| n.contains(&src)) {
        forwarded.push("internet (exit client)".into());
    }
    let in_force = grants_in_force(netmap, desired);
    let outbound_lan: Vec<String> = netmap
        .lan_grants
        .iter()
        .filter(|g| g.via == p.node_id && wanted(g.proto, &g.ports))
        .map(|g| {
            let state = if in_force.contains(&g) {
                ""
            } else if desired.lan_routes.iter().any(|r| r.prefix == g.dst) {
                " (standby: another router carries it now)"
            } else {
                " (not in force: lan-access is off)"
            };
            format!("{} {}{state}", g.dst, describe(g.proto, &g.ports))
        })
        .collect();
    let exit_grant = netmap.exit_grants.iter().any(|g| g.node_id == p.node_id);
    let target = match port {
        Some(port) => format!("{}:{port}", netmap.self_node.hostname),
        None => netmap.self_node.hostname.clone(),
    };
    let verdict = if inbound.is_empty() {
        format!(
            "{} -> {target}: denied (no rule of this node's map admits it)",
            p.hostname
        )
    } else {
        format!(
            "{} -> {target}: admitted for {}",
            p.hostname,
            inbound.join(", ")
        )
    };
    Ok(AclExplainDoc {
        peer: p.hostname.clone(),
        tunnel_ip: p.tunnel_ip,
        port,
        inbound,
        forwarded,
        outbound_lan,
        exit_grant,
        verdict,
    })
}

#[cfg(test)]
mod tests;
