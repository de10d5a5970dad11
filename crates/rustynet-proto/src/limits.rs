//! How large a map may be, checked by the node's verifier and — with the same
//! code, before signing — by control.
//!
//! A map that breaks a limit is refused by the node and never applied. Were
//! control to sign one (a policy granting too much, a network grown past a
//! bound), every node it concerns would refuse every map and fail closed when
//! its last one expired; so control checks each map's [`MapShape`] before it
//! signs, and refuses a policy change whose maps would not pass.

use ipnet::IpNet;

use crate::netmap::{FilterRule, LanGrant, Netmap, NetmapError, NodeId, Proto};

/// Upper bound on peers in one map: what the daemon's tunnel engine holds
/// (`rustynet_tunnel::MAX_PEERS`; the daemon checks at compile time that it
/// holds at least this many). A map with more would verify and then fail
/// to apply on every node, so control refuses it before signing.
pub const MAX_PEERS: usize = 4096;
/// Most allowed prefixes one peer may carry (its address and the LAN routes
/// granted through it), the tunnel engine's bound per peer.
pub const MAX_ALLOWED_IPS: usize = 1024;
/// Upper bound on filter rules, grants or DNS records of each kind in one map.
pub const MAX_RULES: usize = 65_536;
/// Most `src × dst × ports` combinations one filter rule may name. The
/// daemon loads each combination as a set element, so this bounds what one
/// signed rule can cost it; policy compiles a rule per destination node, far
/// below this.
pub const MAX_RULE_COMBINATIONS: usize = 65_536;
/// Most nftables set elements a whole map may expand to ([`MapShape::set_elements`]).
/// Without it, 65,536 rules of 65,536 combinations each would pass the
/// per-rule bound and ask the daemon to load four billion elements.
pub const MAX_SET_ELEMENTS: usize = 262_144;

/// The parts of a map the size limits look at, borrowed from a [`Netmap`]
/// (the node) or from the lists control is about to write into one.
#[derive(Debug, Clone, Copy)]
pub struct MapShape<'a> {
    /// Number of peers.
    pub peers: usize,
    /// Inbound filter.
    pub packet_filter: &'a [FilterRule],
    /// Forward filter.
    pub forward_filter: &'a [FilterRule],
    /// Exit clients.
    pub exit_clients: &'a [IpNet],
    /// Number of exit grants.
    pub exit_grants: usize,
    /// LAN grants.
    pub lan_grants: &'a [LanGrant],
    /// Number of Magic DNS records.
    pub dns_records: usize,
    /// Number of split-DNS routes.
    pub dns_split: usize,
}

/// Refuses `count` above `limit`, naming the list.
pub fn bounded(what: &'static str, count: usize, limit: usize) -> Result<(), NetmapError> {
    if count > limit {
        return Err(NetmapError::TooMany { what, count, limit });
    }
    Ok(())
}

/// Refuses allowed prefixes for `peer` that could capture all traffic, or
/// more of them than the tunnel engine holds for one peer.
pub fn check_allowed_ips(peer: NodeId, nets: &[IpNet]) -> Result<(), NetmapError> {
    if nets.iter().any(|n| n.prefix_len() == 0) {
        return Err(NetmapError::DefaultRoute(peer));
    }
    bounded("peer allowed_ips", nets.len(), MAX_ALLOWED_IPS)
}

/// Set elements one allow expands to in the daemon's ruleset: one per
/// `src × dst × port range`, twice for `any` with ports (TCP and UDP).
fn allow_elements(sources: usize, destinations: usize, proto: Proto, ports: usize) -> usize {
    let kinds = if proto == Proto::Any && ports > 0 {
        2
    } else {
        1
    };
    sources
        .max(1)
        .saturating_mul(destinations)
        .saturating_mul(ports.max(1))
        .saturating_mul(kinds)
}

impl<'a> MapShape<'a> {
    /// The shape of a received map.
    pub fn of(map: &'a Netmap) -> Self {
        Self {
            peers: map.peers.len(),
            packet_filter: &map.packet_filter,
            forward_filter: &map.forward_filter,
            exit_clients: &map.exit_clients,
            exit_grants: map.exit_grants.len(),
            lan_grants: &map.lan_grants,
            dns_records: map.dns.records.len(),
            dns_split: map.dns.split.len(),
        }
    }

    /// An upper bound on the nftables set elements the daemon loads for this
    /// map: every filter allow and LAN grant expanded, the exit clients in
    /// each of the four places they appear (DNS over UDP and TCP, forward,
    /// NAT) and the forward sources once more (NAT).
    pub fn set_elements(&self) -> usize {
        let filters = self
            .packet_filter
            .iter()
            .chain(self.forward_filter)
            .map(|r| allow_elements(r.src.len(), r.dst.len(), r.proto, r.ports.len()));
        let grants = self
            .lan_grants
            .iter()
            .map(|g| allow_elements(1, 1, g.proto, g.ports.len()));
        let nat_sources = self.forward_filter.iter().map(|r| r.src.len());
        filters.chain(grants).chain(nat_sources).fold(
            self.exit_clients.len().saturating_mul(4),
            usize::saturating_add,
        )
    }

    /// Every size limit: list lengths, filter rules (non-empty source and
    /// destination, bounded combinations, ordered port ranges) and the total
    /// set elements.
    pub fn check(&self) -> Result<(), NetmapError> {
        bounded("peers", self.peers, MAX_PEERS)?;
        bounded("packet_filter", self.packet_filter.len(), MAX_RULES)?;
        bounded("forward_filter", self.forward_filter.len(), MAX_RULES)?;
        bounded("exit_clients", self.exit_clients.len(), MAX_RULES)?;
        bounded("exit_grants", self.exit_grants, MAX_RULES)?;
        bounded("lan_grants", self.lan_grants.len(), MAX_RULES)?;
        bounded("dns.records", self.dns_records, MAX_RULES)?;
        bounded("dns.split", self.dns_split, MAX_RULES)?;
        for (list, combos, rules) in [
            (
                "packet_filter",
                "packet_filter rule src×dst×ports",
                self.packet_filter,
            ),
            (
                "forward_filter",
                "forward_filter rule src×dst×ports",
                self.forward_filter,
            ),
        ] {
            for (index, rule) in rules.iter().enumerate() {
                for (field, nets) in [("src", &rule.src), ("dst", &rule.dst)] {
                    if nets.is_empty() {
                        return Err(NetmapError::EmptyFilterField { list, index, field });
                    }
                }
                let combinations = rule
                    .src
                    .len()
                    .saturating_mul(rule.dst.len())
                    .saturating_mul(rule.ports.len().max(1));
                bounded(combos, combinations, MAX_RULE_COMBINATIONS)?;
            }
        }
        let ranges = self
            .packet_filter
            .iter()
            .chain(self.forward_filter)
            .flat_map(|r| &r.ports)
            .chain(self.lan_grants.iter().flat_map(|g| &g.ports));
        for range in ranges {
            if range.first > range.last {
                return Err(NetmapError::PortRange {
                    first: range.first,
                    last: range.last,
                });
            }
        }
        bounded(
            "nftables set elements",
            self.set_elements(),
            MAX_SET_ELEMENTS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmap::PortRange;

    fn rule(src: usize, dst: usize, proto: Proto, ports: usize) -> FilterRule {
        let net =
            |i: usize| -> IpNet { format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap() };
        FilterRule {
            src: (0..src).map(net).collect(),
            dst: (0..dst).map(net).collect(),
            proto,
            ports: (0..ports).map(|p| PortRange::single(p as u16)).collect(),
        }
    }

    fn shape<'a>(packet: &'a [FilterRule], forward: &'a [FilterRule]) -> MapShape<'a> {
        MapShape {
            peers: 0,
            packet_filter: packet,
            forward_filter: forward,
            exit_clients: &[],
            exit_grants: 0,
            lan_grants: &[],
            dns_records: 0,
            dns_split: 0,
        }
    }

    #[test]
    fn set_elements_count_what_the_daemon_expands() {
        let packet = [rule(3, 4, Proto::Tcp, 5), rule(2, 2, Proto::Any, 3)];
        // 3·4·5 + 2·2·3·2 (TCP and UDP).
        assert_eq!(shape(&packet, &[]).set_elements(), 60 + 24);
        // A forward rule's sources count once more (NAT).
        let forward = [rule(2, 1, Proto::Icmp, 0)];
        assert_eq!(shape(&[], &forward).set_elements(), 2 + 2);
    }

    #[test]
    fn many_rules_each_within_bound_are_refused_in_total() {
        // Each rule has 64·64·4 = 16,384 combinations (within the per-rule
        // bound); 17 of them pass 262,144 together.
        let rules: Vec<FilterRule> = (0..17).map(|_| rule(64, 64, Proto::Tcp, 4)).collect();
        assert!(shape(&rules[..16], &[]).check().is_ok());
        assert_eq!(
            shape(&rules, &[]).check(),
            Err(NetmapError::TooMany {
                what: "nftables set elements",
                count: 17 * 16_384,
                limit: MAX_SET_ELEMENTS,
            })
        );
    }
}
