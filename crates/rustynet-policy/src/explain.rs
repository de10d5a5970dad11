//! `acl explain`: which rule admits a packet, or why none does.
//!
//! The verdict comes from the compiled views — the inbound filter of the
//! destination node, or the forward filters of the routers whose approved
//! routes cover a LAN destination — exactly what control copies into the
//! signed maps. The rules are then read to name the ones that admit the
//! packet, or to say what each near miss lacks. If the two ever disagreed
//! the explanation says so (`consistent: false`) rather than guessing; the
//! property tests hold them together.

use std::net::IpAddr;

use ipnet::IpNet;
use rustynet_proto::netmap::{TUNNEL_NET, filter_admits, ip_proto};
use rustynet_proto::{NodeId, PortRange, Proto};
use serde::Serialize;

use crate::index::PolicyIndex;
use crate::model::Selector;
use crate::routes::RouteStatus;

/// A packet to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number ([`ip_proto`]).
    pub proto: u8,
    /// Destination port (TCP and UDP); `None` otherwise or when not given.
    pub port: Option<u16>,
}

/// What the destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A node's tunnel address: its inbound filter decides.
    Node,
    /// An address inside some node's approved LAN route: that router's
    /// forward filter decides (and the client's own grants agree).
    Lan,
    /// Neither: nothing in the mesh carries the packet.
    Nowhere,
}

/// An ACL rule, by position and as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Index in `acls`.
    pub index: usize,
    /// The rule as written.
    pub text: String,
}

/// One router whose approved route covers a LAN destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterVerdict {
    /// Its host label.
    pub router: String,
    /// Its node id (routers are tried lowest id first among those online).
    pub node_id: NodeId,
    /// The approved route covering the destination.
    pub route: IpNet,
    /// What approved it.
    pub approved_by: String,
    /// Whether its forward filter admits the packet.
    pub forwards: bool,
}

/// The answer to one `acl explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Whether the compiled policy admits the packet.
    pub allowed: bool,
    /// What the destination is.
    pub target: Target,
    /// The source node's host label, if the source is a node.
    pub src_node: Option<String>,
    /// The destination node's host label, if the destination is a node.
    pub dst_node: Option<String>,
    /// The protocol explained (`tcp`, `udp`, `icmp` or a number).
    pub proto: String,
    /// The port explained.
    pub port: Option<u16>,
    /// Rules that admit the packet.
    pub admitted_by: Vec<RuleRef>,
    /// For a LAN destination: the routers whose approved routes cover it,
    /// lowest node id first.
    pub routers: Vec<RouterVerdict>,
    /// Why the packet is refused (empty when allowed).
    pub reasons: Vec<String>,
    /// Facts that bear on the packet without deciding it (failover order,
    /// exit nodes).
    pub notes: Vec<String>,
    /// Whether the rules read one by one agree with the compiled filter.
    pub consistent: bool,
}

/// `tcp`, `udp`, `icmp` or the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        ip_proto::TCP => "tcp".into(),
        ip_proto::UDP => "udp".into(),
        ip_proto::ICMP => "icmp".into(),
        ip_proto::ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// `22,443,1000-2000`, or `*` for every port.
pub fn ports_text(ports: &[PortRange]) -> String {
    if ports.is_empty() {
        return "*".into();
    }
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
}

/// Why one rule does not admit the packet, or `None` if it does. Checks in
/// the order a reader would: source, destination, protocol, port.
enum Miss {
    Source,
    Destination,
    Proto(Proto),
    Port(String),
}

impl PolicyIndex<'_> {
    /// Explains `packet` against the compiled policy.
    pub fn explain(&self, packet: Packet) -> Explanation {
        let src_i = self.node_at(packet.src);
        let dst_i = self.node_at(packet.dst);
        let mut ex = Explanation {
            allowed: false,
            target: Target::Nowhere,
            src_node: src_i.map(|i| self.nodes[i].hostname.clone()),
            dst_node: dst_i.map(|i| self.nodes[i].hostname.clone()),
            proto: proto_name(packet.proto),
            port: packet.port,
            admitted_by: vec![],
            routers: vec![],
            reasons: vec![],
            notes: vec![],
            consistent: true,
        };
        if let Some(d) = dst_i {
            ex.target = Target::Node;
            let filter = self.view_at(d).packet_filter;
            ex.allowed = filter_admits(&filter, packet.src, packet.dst, packet.proto, packet.port);
            self.read_rules(packet, src_i, Some(d), &mut ex);
        } else if in_tunnel_range(packet.dst) {
            ex.reasons
                .push(format!("no node has the tunnel address {}", packet.dst));
        } else {
            self.explain_lan(packet, src_i, &mut ex);
            if ex.target == Target::Nowhere {
                self.note_exits(src_i, &mut ex);
            }
        }
        ex.consistent = ex.allowed != ex.admitted_by.is_empty();
        if ex.allowed {
            ex.reasons.clear();
        }
        ex
    }

    fn explain_lan(&self, packet: Packet, src_i: Option<usize>, ex: &mut Explanation) {
        for (r, routes) in self.approved.iter().enumerate() {
            let Some(route) = routes.iter().find(|n| n.contains(&packet.dst)) else {
                continue;
            };
            let view = self.view_at(r);
            let forwards = filter_admits(
                &view.forward_filter,
                packet.src,
                packet.dst,
                packet.proto,
                packet.port,
            );
            let approved_by = match self.route_status(self.nodes[r].id, *route) {
                Some(RouteStatus::Approved { by }) => by,
                other => format!("{other:?}"),
            };
            ex.routers.push(RouterVerdict {
                router: self.nodes[r].hostname.clone(),
                node_id: self.nodes[r].id,
                route: *route,
                approved_by,
                forwards,
            });
        }
        ex.routers.sort_by_key(|r| r.node_id);
        if ex.routers.is_empty() {
            ex.reasons.push(format!(
                "no node has an approved route covering {}",
                packet.dst
            ));
            for n in &self.nodes {
                for route in n
                    .advertised_routes
                    .iter()
                    .filter(|r| r.contains(&packet.dst))
                {
                    if let Some(status) = self.route_status(n.id, *route) {
                        ex.reasons
                            .push(format!("{} advertises {route}: {status}", n.hostname));
                    }
                }
            }
            return;
        }
        ex.target = Target::Lan;
        ex.allowed = ex.routers.iter().any(|r| r.forwards);
        if ex.routers.len() > 1 {
            ex.notes.push(
                "several routers serve this LAN: a client uses one at a time, the online one with the lowest node id (the others stand by)"
                    .into(),
            );
        }
        match src_i {
            None => ex.reasons.push(format!(
                "{} is not a node's tunnel address: only nodes reach LANs through routers",
                packet.src
            )),
            Some(s) => {
                if !self.nodes[s].lan_access {
                    ex.reasons.push(format!(
                        "{}'s LAN-access toggle is off (`rustynet lan-access on` on that node)",
                        self.nodes[s].hostname
                    ));
                }
                if ex
                    .routers
                    .iter()
                    .all(|r| self.index_of(r.node_id) == Some(s))
                {
                    ex.reasons
                        .push("the only router for this LAN is the source itself".into());
                }
            }
        }
        self.read_rules(packet, src_i, None, ex);
        // A rule can match while the toggle keeps the router from
        // forwarding: the rule is then a near miss, not an admission.
        if !ex.allowed && !ex.admitted_by.is_empty() {
            let held: Vec<String> = ex.admitted_by.drain(..).map(|r| r.text).collect();
            ex.reasons.push(format!(
                "these rules would admit it with the toggle on: {}",
                held.join("; ")
            ));
        }
    }

    /// Fills `admitted_by` with the rules that admit the packet (to node
    /// `dst`, or into a LAN when `dst` is `None`) and `reasons` with what
    /// the others lack.
    fn read_rules(
        &self,
        packet: Packet,
        src_i: Option<usize>,
        dst: Option<usize>,
        ex: &mut Explanation,
    ) {
        let mut src_named = false;
        for r in 0..self.policy.rules.len() {
            let text = self.rule_text(r);
            let why = match self.miss(r, packet, src_i, dst) {
                None => {
                    ex.admitted_by.push(RuleRef { index: r, text });
                    src_named = true;
                    continue;
                }
                Some(Miss::Source) => continue,
                Some(Miss::Destination) if dst.is_none() => format!(
                    "no CIDR or host destination covers {} (node selectors never reach a LAN)",
                    packet.dst
                ),
                Some(Miss::Destination) => format!(
                    "its destinations do not name {}",
                    ex.dst_node.as_deref().unwrap_or("the destination")
                ),
                Some(Miss::Proto(p)) => format!(
                    "it is for {} only, not {}",
                    proto_word(p),
                    proto_name(packet.proto)
                ),
                Some(Miss::Port(ports)) => match packet.port {
                    Some(port) => format!("port {port} is not in {ports}"),
                    None => format!(
                        "it names ports ({ports}); {} has none",
                        proto_name(packet.proto)
                    ),
                },
            };
            src_named = true;
            ex.reasons.push(format!("acls[{r}] ({text}): {why}"));
        }
        if !src_named {
            let who = match src_i {
                Some(s) => {
                    let n = self.nodes[s];
                    format!("{} (user {}, tags {:?})", n.hostname, n.user, n.tags)
                }
                None => packet.src.to_string(),
            };
            ex.reasons
                .push(format!("no acls rule names {who} as a source"));
        }
    }

    /// The first thing rule `r` lacks for `packet`, or `None` if it admits it.
    fn miss(
        &self,
        r: usize,
        packet: Packet,
        src_i: Option<usize>,
        dst: Option<usize>,
    ) -> Option<Miss> {
        let rule = &self.policy.rules[r];
        let src_ok = match src_i {
            Some(s) => self.rules[r].src.get(s),
            None => rule.src.iter().any(|sel| match sel {
                Selector::Prefix(net) => net.contains(&packet.src),
                _ => false,
            }),
        };
        if !src_ok {
            return Some(Miss::Source);
        }
        let entries: Vec<&crate::model::DstEntry> = rule
            .dst
            .iter()
            .filter(|e| match (dst, &e.selector) {
                (Some(d), sel) => self.entry_matches(sel, d),
                (None, Selector::Prefix(net)) => net.contains(&packet.dst),
                (None, _) => false,
            })
            .collect();
        if entries.is_empty() {
            return Some(Miss::Destination);
        }
        if !rule.proto.admits(packet.proto) {
            return Some(Miss::Proto(rule.proto));
        }
        let port_ok = |ports: &[PortRange]| {
            ports.is_empty()
                || (matches!(packet.proto, ip_proto::TCP | ip_proto::UDP)
                    && packet
                        .port
                        .is_some_and(|p| ports.iter().any(|r| r.contains(p))))
        };
        if entries.iter().any(|e| port_ok(&e.ports)) {
            return None;
        }
        let ports: Vec<String> = entries.iter().map(|e| ports_text(&e.ports)).collect();
        Some(Miss::Port(ports.join(" / ")))
    }

    fn note_exits(&self, src_i: Option<usize>, ex: &mut Explanation) {
        let Some(s) = src_i else {
            return;
        };
        let exits: Vec<String> = self
            .view_at(s)
            .exit_grants
            .iter()
            .filter_map(|id| self.index_of(*id))
            .map(|i| self.nodes[i].hostname.clone())
            .collect();
        if !exits.is_empty() {
            ex.notes.push(format!(
                "not an ACL matter: with an exit node selected ({} may use {}), internet traffic leaves through it unfiltered by port; private and tunnel ranges never do",
                self.nodes[s].hostname,
                exits.join(", ")
            ));
        }
    }

    fn rule_text(&self, r: usize) -> String {
        match self.policy.doc.acls.get(r) {
            Some(doc) => format!(
                "{} {} -> {} proto {}",
                doc.action,
                doc.src.join(","),
                doc.dst.join(","),
                doc.proto
            ),
            None => format!("acls[{r}]"),
        }
    }

    /// The accepted node holding tunnel address `ip`.
    fn node_at(&self, ip: IpAddr) -> Option<usize> {
        let IpAddr::V4(v4) = ip else {
            return None;
        };
        self.ips.binary_search(&v4.to_bits()).ok()
    }
}

fn in_tunnel_range(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if TUNNEL_NET.contains(&v4))
}

fn proto_word(p: Proto) -> &'static str {
    match p {
        Proto::Any => "any protocol",
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
        Proto::Icmp => "icmp",
    }
}
