//! Simulated NAT boxes and the links between nodes.
//!
//! NAT behaviour follows Linux: `masquerade` maps one internal socket to
//! one external port whatever the destination (endpoint-independent
//! mapping); `masquerade random` picks a new random port per destination
//! (destination-dependent: "symmetric"). Both filter like conntrack: an
//! inbound datagram passes only if the mapping has sent to exactly that
//! address and port. Mappings idle for 30 s are forgotten (conntrack's
//! unreplied-UDP timeout).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::path::test_rng::TestRng;

/// Idle mappings are forgotten after this long.
const MAPPING_IDLE: Duration = Duration::from_secs(30);

/// How a node reaches the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nat {
    /// A public address, no NAT.
    None,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    Easy,
    /// Destination-dependent mapping (random port per destination).
    Hard,
}

#[derive(Debug)]
struct Mapping {
    internal: SocketAddr,
    /// Only for destination-dependent mappings.
    dest: Option<SocketAddr>,
    port: u16,
    /// Remote sockets this mapping sent to: the only ones let back in.
    allowed: HashSet<SocketAddr>,
    last_used: Duration,
}

/// One NAT router in front of one node.
#[derive(Debug)]
pub(crate) struct NatBox {
    pub(crate) kind: Nat,
    pub(crate) public_ip: IpAddr,
    mappings: Vec<Mapping>,
    next_port: u16,
}

impl NatBox {
    pub(crate) fn new(kind: Nat, public_ip: IpAddr, rng: &mut TestRng) -> Self {
        Self {
            kind,
            public_ip,
            mappings: Vec::new(),
            next_port: 20_000 + rng.below(20_000) as u16,
        }
    }

    /// Forgets every mapping (a NAT reboot or rebinding; the next datagram
    /// out gets a new port).
    pub(crate) fn rebind(&mut self) {
        self.mappings.clear();
        self.next_port = self.next_port.wrapping_add(1000);
    }

    /// Translates an outbound datagram; returns its public source.
    pub(crate) fn outbound(
        &mut self,
        internal: SocketAddr,
        dest: SocketAddr,
        now: Duration,
        rng: &mut TestRng,
    ) -> SocketAddr {
        self.expire(now);
        let dependent = self.kind == Nat::Hard;
        let found = self
            .mappings
            .iter()
            .position(|m| m.internal == internal && (!dependent || m.dest == Some(dest)));
        let i = match found {
            Some(i) => i,
            None => {
                let port = if dependent {
                    10_000 + rng.below(50_000) as u16
                } else {
                    self.next_port = self.next_port.wrapping_add(1).max(1024);
                    self.next_port
                };
                self.mappings.push(Mapping {
                    internal,
                    dest: dependent.then_some(dest),
                    port,
                    allowed: HashSet::new(),
                    last_used: now,
                });
                self.mappings.len() - 1
            }
        };
        let m = &mut self.mappings[i];
        m.allowed.insert(dest);
        m.last_used = now;
        SocketAddr::new(self.public_ip, m.port)
    }

    /// Filters and translates an inbound datagram; `None` drops it.
    pub(crate) fn inbound(
        &mut self,
        from: SocketAddr,
        to_port: u16,
        now: Duration,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let m = self
            .mappings
            .iter_mut()
            .find(|m| m.port == to_port && m.allowed.contains(&from))?;
        m.last_used = now;
        Some(m.internal)
    }

    fn expire(&mut self, now: Duration) {
        self.mappings
            .retain(|m| now.saturating_sub(m.last_used) < MAPPING_IDLE);
    }
}

/// Which direct directions are cut, and the link's quality.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    /// One-way latency between the two nodes' networks.
    pub(crate) direct_latency: Duration,
    /// Added uniformly at random per datagram, up to this.
    pub(crate) jitter: Duration,
    /// Probability each direct datagram is lost.
    pub(crate) loss: f64,
    /// `blackhole[from][to]`: every direct datagram from -> to is dropped.
    pub(crate) blackhole: [[bool; 2]; 2],
    /// One-way latency between each node and the relay.
    pub(crate) relay_latency: [Duration; 2],
}

impl Default for Links {
    fn default() -> Self {
        Self {
            direct_latency: Duration::from_millis(15),
            jitter: Duration::from_millis(2),
            loss: 0.0,
            blackhole: [[false; 2]; 2],
            relay_latency: [Duration::from_millis(20); 2],
        }
    }
}

impl Links {
    /// Relay round trip between the two nodes.
    pub(crate) fn relay_rtt(&self) -> Duration {
        (self.relay_latency[0] + self.relay_latency[1]) * 2
    }
}

/// The public address a node without NAT has, or its NAT's (by index and
/// how many times it moved).
pub(crate) fn public_ip(node: usize, nat: Nat, moves: u8) -> IpAddr {
    let n = u8::try_from(node).unwrap_or(0);
    match nat {
        Nat::None => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10 + n + 20 * moves)),
        Nat::Easy | Nat::Hard => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + n + 20 * moves)),
    }
}

/// A node's own address on its LAN (private behind NAT).
pub(crate) fn lan_ip(node: usize, nat: Nat, moves: u8) -> IpAddr {
    let n = u8::try_from(node).unwrap_or(0);
    match nat {
        Nat::None => public_ip(node, nat, moves),
        Nat::Easy | Nat::Hard => IpAddr::V4(Ipv4Addr::new(10, n, moves, 2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn easy_nat_keeps_one_port_and_lets_in_only_contacted_sockets() {
        let mut rng = TestRng::new(1);
        let mut nat = NatBox::new(Nat::Easy, sa("203.0.113.1:0").ip(), &mut rng);
        let inside = sa("10.0.0.2:41641");
        let zero = Duration::ZERO;
        let p1 = nat.outbound(inside, sa("192.0.2.10:3478"), zero, &mut rng);
        let p2 = nat.outbound(inside, sa("198.51.100.9:5"), zero, &mut rng);
        assert_eq!(p1, p2, "endpoint-independent");
        assert_eq!(
            nat.inbound(sa("198.51.100.9:5"), p1.port(), zero),
            Some(inside)
        );
        assert_eq!(
            nat.inbound(sa("198.51.100.9:6"), p1.port(), zero),
            None,
            "other port"
        );
        assert_eq!(
            nat.inbound(sa("198.51.100.8:5"), p1.port(), zero),
            None,
            "other host"
        );
        let later = Duration::from_secs(31);
        assert_eq!(
            nat.inbound(sa("198.51.100.9:5"), p1.port(), later),
            None,
            "expired"
        );
    }

    #[test]
    fn hard_nat_maps_each_destination_to_its_own_port() {
        let mut rng = TestRng::new(2);
        let mut nat = NatBox::new(Nat::Hard, sa("203.0.113.1:0").ip(), &mut rng);
        let inside = sa("10.0.0.2:41641");
        let zero = Duration::ZERO;
        let p1 = nat.outbound(inside, sa("192.0.2.10:3478"), zero, &mut rng);
        let p2 = nat.outbound(inside, sa("198.51.100.9:5"), zero, &mut rng);
        assert_ne!(p1.port(), p2.port());
        assert_eq!(nat.inbound(sa("198.51.100.9:5"), p1.port(), zero), None);
        assert_eq!(
            nat.inbound(sa("198.51.100.9:5"), p2.port(), zero),
            Some(inside)
        );
    }

    #[test]
    fn rebinding_moves_the_port_and_drops_old_state() {
        let mut rng = TestRng::new(3);
        let mut nat = NatBox::new(Nat::Easy, sa("203.0.113.1:0").ip(), &mut rng);
        let inside = sa("10.0.0.2:41641");
        let peer = sa("198.51.100.9:5");
        let zero = Duration::ZERO;
        let before = nat.outbound(inside, peer, zero, &mut rng);
        nat.rebind();
        assert_eq!(nat.inbound(peer, before.port(), zero), None);
        let after = nat.outbound(inside, peer, zero, &mut rng);
        assert_ne!(before, after);
    }
}
