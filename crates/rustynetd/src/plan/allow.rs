//! Allow rules of a policy filter or LAN grants, folded into tuple sets.
//!
//! Each allow `(src, dst, proto, ports)` admits exactly the tuples
//! `src × dst × ports` of its protocol. Rather than one nft rule per allow
//! (linear per packet, slow to load at a thousand peers), allows of the same
//! shape — address family, whether a source is given, and protocol kind —
//! become one `saddr . daddr . dport` set lookup. All of them accept, so
//! grouping them changes nothing about what is admitted, and never widens an
//! allow: an element is one allow's own prefix × prefix × port range.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rustynet_netos::{
    FirewallRule, IpFamily, L4Proto, Match, PortProto, PortRange as NftPorts, TupleField,
    TupleValue, Verdict, disjoint_groups,
};
use rustynet_proto::{FilterRule, PortRange, Proto};

/// What an allow admits besides addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Every protocol.
    Any,
    /// One protocol, every port (or no ports: ICMP).
    Proto(L4Proto),
    /// These ports of TCP or UDP.
    Ports(PortProto),
}

/// The rule shape a set of allows shares.
type Shape = (IpFamily, bool, Kind);

/// Allows collected per shape; [`Allows::rules`] renders them.
#[derive(Debug, Default)]
pub(super) struct Allows {
    shapes: BTreeMap<Shape, Vec<Vec<TupleValue>>>,
}

impl Allows {
    /// Collects every rule of a policy filter.
    pub(super) fn from_filter(filter: &[FilterRule]) -> Self {
        let mut allows = Self::default();
        for r in filter {
            allows.add(&r.src, &r.dst, r.proto, &r.ports);
        }
        allows
    }

    /// Adds one allow. An empty `src` means any source; a non-empty one
    /// with no prefix of a family admits nothing of that family.
    pub(super) fn add(&mut self, src: &[IpNet], dst: &[IpNet], proto: Proto, ports: &[PortRange]) {
        for family in [IpFamily::V4, IpFamily::V6] {
            let of_family = |nets: &[IpNet]| -> Vec<IpNet> {
                nets.iter()
                    .filter(|n| IpFamily::of_net(n) == family)
                    .map(IpNet::trunc)
                    .collect()
            };
            let (s, d) = (of_family(src), of_family(dst));
            if (!src.is_empty() && s.is_empty()) || d.is_empty() {
                continue;
            }
            for kind in kinds(family, proto, ports) {
                let port_values: Vec<Option<TupleValue>> = match kind {
                    Kind::Ports(_) => ports
                        .iter()
                        .map(|p| {
                            Some(TupleValue::Ports(NftPorts {
                                first: p.first,
                                last: p.last,
                            }))
                        })
                        .collect(),
                    Kind::Any | Kind::Proto(_) => vec![None],
                };
                let sources: Vec<Option<IpNet>> = if s.is_empty() {
                    vec![None]
                } else {
                    s.iter().copied().map(Some).collect()
                };
                let elements = self
                    .shapes
                    .entry((family, !s.is_empty(), kind))
                    .or_default();
                for src in &sources {
                    for dst in &d {
                        for port in &port_values {
                            let mut element = Vec::with_capacity(3);
                            element.extend(src.map(TupleValue::Net));
                            element.push(TupleValue::Net(*dst));
                            element.extend(*port);
                            elements.push(element);
                        }
                    }
                }
            }
        }
    }

    /// One accept rule per shape (more only where elements overlap), each
    /// starting with `base`. Deterministic.
    pub(super) fn rules(self, base: &[Match]) -> Vec<FirewallRule> {
        let mut out = Vec::new();
        for ((family, has_src, kind), elements) in self.shapes {
            let mut fields = Vec::with_capacity(3);
            if has_src {
                fields.push(TupleField::Saddr(family));
            }
            fields.push(TupleField::Daddr(family));
            if let Kind::Ports(pp) = kind {
                fields.push(TupleField::Dport(pp));
            }
            for group in disjoint_groups(elements) {
                let mut m = base.to_vec();
                if let Kind::Proto(p) = kind {
                    m.push(Match::L4Proto {
                        protos: vec![p],
                        negate: false,
                    });
                }
                m.push(Match::Tuple {
                    fields: fields.clone(),
                    elements: group,
                });
                out.push(FirewallRule::new(m, Verdict::Accept));
            }
        }
        out
    }
}

/// The kinds one allow expands to, never wider than it: ports of `any`
/// mean those ports of TCP and of UDP; ICMP follows the family.
fn kinds(family: IpFamily, proto: Proto, ports: &[PortRange]) -> Vec<Kind> {
    match (proto, ports.is_empty()) {
        (Proto::Any, true) => vec![Kind::Any],
        (Proto::Icmp, _) => vec![Kind::Proto(match family {
            IpFamily::V4 => L4Proto::Icmp,
            IpFamily::V6 => L4Proto::Icmpv6,
        })],
        (Proto::Tcp, true) => vec![Kind::Proto(L4Proto::Tcp)],
        (Proto::Udp, true) => vec![Kind::Proto(L4Proto::Udp)],
        (Proto::Tcp, false) => vec![Kind::Ports(PortProto::Tcp)],
        (Proto::Udp, false) => vec![Kind::Ports(PortProto::Udp)],
        (Proto::Any, false) => vec![Kind::Ports(PortProto::Tcp), Kind::Ports(PortProto::Udp)],
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    /// A packet as the filter sees it.
    #[derive(Debug, Clone, Copy)]
    struct Packet {
        src: IpAddr,
        dst: IpAddr,
        proto: L4Proto,
        dport: u16,
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// One allow as the policy states it: sources, destinations, protocol, ports.
    type Spec = (Vec<IpNet>, Vec<IpNet>, Proto, Vec<PortRange>);

    /// What the allows admit, read straight off their definition.
    fn admitted_by_allows(allows: &[Spec], p: Packet) -> bool {
        allows.iter().any(|(src, dst, proto, ports)| {
            let src_ok = src.is_empty() || src.iter().any(|n| n.contains(&p.src));
            let dst_ok = dst.iter().any(|n| n.contains(&p.dst));
            let proto_ok = match proto {
                Proto::Any => ports.is_empty() || matches!(p.proto, L4Proto::Tcp | L4Proto::Udp),
                Proto::Tcp => p.proto == L4Proto::Tcp,
                Proto::Udp => p.proto == L4Proto::Udp,
                Proto::Icmp => matches!(p.proto, L4Proto::Icmp | L4Proto::Icmpv6),
            };
            let port_ok = *proto == Proto::Icmp
                || ports.is_empty()
                || ports.iter().any(|r| (r.first..=r.last).contains(&p.dport));
            src_ok && dst_ok && proto_ok && port_ok
        })
    }

    /// What the folded rules admit: nft's semantics for the matches used.
    fn admitted_by_rules(rules: &[FirewallRule], p: Packet) -> bool {
        let family = IpFamily::of(&p.dst);
        rules.iter().any(|r| {
            r.matches.iter().all(|m| match m {
                Match::L4Proto {
                    protos,
                    negate: false,
                } => protos.contains(&p.proto),
                Match::Tuple { fields, elements } => elements.iter().any(|e| {
                    fields.iter().zip(e).all(|(f, v)| match (f, v) {
                        (TupleField::Saddr(fam), TupleValue::Net(n)) => {
                            *fam == family && n.contains(&p.src)
                        }
                        (TupleField::Daddr(fam), TupleValue::Net(n)) => {
                            *fam == family && n.contains(&p.dst)
                        }
                        (TupleField::Dport(pp), TupleValue::Ports(r)) => {
                            let proto = match pp {
                                PortProto::Tcp => L4Proto::Tcp,
                                PortProto::Udp => L4Proto::Udp,
                            };
                            p.proto == proto && (r.first..=r.last).contains(&p.dport)
                        }
                        _ => false,
                    })
                }),
                other => panic!("unexpected match {other:?}"),
            })
        })
    }

    #[test]
    fn folding_admits_exactly_what_the_allows_admit() {
        let allows = vec![
            (
                vec![net("100.64.0.2/32")],
                vec![net("100.64.0.1/32")],
                Proto::Tcp,
                vec![
                    PortRange {
                        first: 22,
                        last: 22,
                    },
                    PortRange {
                        first: 8000,
                        last: 8100,
                    },
                ],
            ),
            (
                vec![net("100.64.0.0/24")],
                vec![net("100.64.0.1/32")],
                Proto::Tcp,
                vec![PortRange {
                    first: 8050,
                    last: 9000,
                }],
            ),
            (
                vec![net("100.64.0.3/32"), net("fd7a::3/128")],
                vec![net("100.64.0.1/32"), net("fd7a::1/128")],
                Proto::Any,
                vec![],
            ),
            (
                vec![net("100.64.0.4/32")],
                vec![net("100.64.0.1/32")],
                Proto::Any,
                vec![PortRange {
                    first: 53,
                    last: 53,
                }],
            ),
            (
                vec![net("100.64.0.5/32")],
                vec![net("100.64.0.1/32")],
                Proto::Icmp,
                vec![],
            ),
            (
                vec![net("100.64.0.6/32")],
                vec![net("100.64.0.1/32")],
                Proto::Udp,
                vec![],
            ),
            (
                vec![],
                vec![net("192.168.77.0/24")],
                Proto::Tcp,
                vec![PortRange {
                    first: 443,
                    last: 443,
                }],
            ),
            // A source of the other family only: admits nothing of IPv6.
            (
                vec![net("100.64.0.7/32")],
                vec![net("fd7a::1/128")],
                Proto::Any,
                vec![],
            ),
        ];
        let mut folded = Allows::default();
        for (s, d, proto, ports) in &allows {
            folded.add(s, d, *proto, ports);
        }
        let rules = folded.rules(&[]);
        assert!(
            rules.len() < allows.len() + 3,
            "folding should not multiply rules: {rules:#?}"
        );
        let addrs: Vec<IpAddr> = [
            "100.64.0.1",
            "100.64.0.2",
            "100.64.0.3",
            "100.64.0.4",
            "100.64.0.5",
            "100.64.0.6",
            "100.64.0.7",
            "100.64.0.200",
            "100.64.1.2",
            "192.168.77.9",
            "192.168.78.9",
            "fd7a::1",
            "fd7a::3",
            "fd7a::9",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut checked = 0;
        for &src in &addrs {
            for &dst in &addrs {
                if IpFamily::of(&src) != IpFamily::of(&dst) {
                    continue;
                }
                let icmp = if src.is_ipv4() {
                    L4Proto::Icmp
                } else {
                    L4Proto::Icmpv6
                };
                for proto in [L4Proto::Tcp, L4Proto::Udp, icmp] {
                    for dport in [
                        0, 21, 22, 23, 53, 443, 7999, 8000, 8049, 8050, 8100, 8101, 9000, 9001,
                    ] {
                        let p = Packet {
                            src,
                            dst,
                            proto,
                            dport,
                        };
                        assert_eq!(
                            admitted_by_rules(&rules, p),
                            admitted_by_allows(&allows, p),
                            "{p:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000);
    }

    #[test]
    fn a_thousand_peers_fold_into_one_rule() {
        let mut folded = Allows::default();
        for i in 0..1000u32 {
            let peer = IpNet::V4(std::net::Ipv4Addr::from(0x6440_0002 + i).into());
            folded.add(
                &[peer],
                &[net("100.64.0.1/32")],
                Proto::Tcp,
                &[PortRange {
                    first: 22,
                    last: 22,
                }],
            );
        }
        let rules = folded.rules(&[]);
        assert_eq!(rules.len(), 1);
        assert!(
            matches!(&rules[0].matches[..], [Match::Tuple { elements, .. }] if elements.len() == 1000)
        );
    }
}
