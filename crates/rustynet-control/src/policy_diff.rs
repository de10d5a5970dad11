//! `policy check FILE`: who gains or loses access if the file replaced the
//! current policy, computed from the compiled views of the live nodes (what
//! their maps would actually carry), not from the rule text, so a rewrite
//! that grants the same access shows no change.
//!
//! Each grant is one line (`laptop -> web tcp:22`, `laptop may use exit
//! gw`, `laptop -> 192.168.1.0/24 via router tcp:443`, `router route
//! 10.0.0.0/8 approved`); the diff is the lines only the new policy yields
//! (gained) and only the old one yields (lost). Pure: tested on records.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use rustynet_policy::{NodeView, Policy};
use rustynet_proto::{NodeId, PortRange, Proto};
use serde::Serialize;

use crate::netmap_builder::node_facts;
use crate::store::NodeRecord;

/// The access lines a policy change adds and removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessDiff {
    /// Only under the new policy.
    pub gained: Vec<String>,
    /// Only under the current policy.
    pub lost: Vec<String>,
}

impl AccessDiff {
    /// Whether nobody gains or loses anything.
    pub fn is_empty(&self) -> bool {
        self.gained.is_empty() && self.lost.is_empty()
    }
}

/// What changes for the live `nodes` if `new` replaces `old`.
pub fn access_diff(old: &Policy, new: &Policy, nodes: &[NodeRecord]) -> AccessDiff {
    let before = grants(old, nodes);
    let after = grants(new, nodes);
    AccessDiff {
        gained: after.difference(&before).cloned().collect(),
        lost: before.difference(&after).cloned().collect(),
    }
}

/// Every access line `policy` yields over `nodes`.
fn grants(policy: &Policy, nodes: &[NodeRecord]) -> BTreeSet<String> {
    let facts: Vec<_> = nodes.iter().map(node_facts).collect();
    let views = rustynet_policy::compile(policy, &facts);
    let names: BTreeMap<NodeId, &str> = nodes.iter().map(|n| (n.id, n.hostname.as_str())).collect();
    let name = |id: &NodeId| {
        names
            .get(id)
            .map_or_else(|| id.to_string(), |n| (*n).to_owned())
    };
    let mut out = BTreeSet::new();
    for (id, view) in &views {
        let me = name(id);
        inbound(view, &me, nodes, &mut out);
        for exit in &view.exit_grants {
            out.insert(format!("{me} may use exit {}", name(exit)));
        }
        for grant in &view.lan_grants {
            out.insert(format!(
                "{me} -> {} via {} {}",
                grant.dst,
                name(&grant.via),
                service(grant.proto, &grant.ports)
            ));
        }
        for route in &view.approved_routes {
            out.insert(format!("{me} route {route} approved"));
        }
    }
    out
}

/// The lines of `view`'s inbound filter: each source prefix named by the
/// live nodes whose tunnel address it holds (or shown as the prefix when it
/// holds none).
fn inbound(view: &NodeView, me: &str, nodes: &[NodeRecord], out: &mut BTreeSet<String>) {
    for rule in &view.packet_filter {
        let what = service(rule.proto, &rule.ports);
        for src in &rule.src {
            let inside: Vec<&NodeRecord> = nodes
                .iter()
                .filter(|n| src.contains(&IpAddr::V4(n.tunnel_ip)))
                .collect();
            if inside.is_empty() {
                out.insert(format!("{src} -> {me} {what}"));
            }
            for n in inside {
                if n.hostname != me {
                    out.insert(format!("{} -> {me} {what}", n.hostname));
                }
            }
        }
    }
}

/// `tcp:22,443`, `any`, `icmp`, `udp:*`.
fn service(proto: Proto, ports: &[PortRange]) -> String {
    let proto = match proto {
        Proto::Any => "any",
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
    };
    if ports.is_empty() || ports == [PortRange::ALL] {
        return proto.to_owned();
    }
    let list: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}-{}", p.first, p.last)
            }
        })
        .collect();
    format!("{proto}:{}", list.join(","))
}
