//! The network map a node receives (inside a signed envelope) and the packet
//! filter types the policy compiler produces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::endpoint::{EndpointError, MAX_ENDPOINTS, check_endpoint};
use crate::keys::TunnelPublicKey;
use crate::names;

/// Version of the [`Netmap`] schema. A node refuses other versions.
pub const NETMAP_VERSION: u16 = 1;

pub use crate::limits::{
    MAX_ALLOWED_IPS, MAX_PEERS, MAX_RULE_COMBINATIONS, MAX_RULES, MAX_SET_ELEMENTS, MapShape,
    bounded, check_allowed_ips,
};

/// The tunnel address space every node address comes from (CGNAT range, as
/// Tailscale uses): 100.64.0.0/10.
pub const TUNNEL_NET: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => panic!("constant prefix"),
};

/// The Magic DNS resolver address, routed into every node.
pub const MAGIC_DNS_IP: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// A node's identity in the control database. Stable for the node's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node{}", self.0)
    }
}

/// Transport protocol selector used by policy rules and packet filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Every protocol. With a port list, only port-bearing protocols (TCP, UDP)
    /// on those ports; without one, everything.
    Any,
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// ICMP and ICMPv6 (IP protocols 1 and 58); ports do not apply.
    Icmp,
}

/// IP protocol numbers the filter understands.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

impl Proto {
    /// Whether this selector admits IP protocol `number`.
    pub fn admits(self, number: u8) -> bool {
        match self {
            Proto::Any => true,
            Proto::Tcp => number == ip_proto::TCP,
            Proto::Udp => number == ip_proto::UDP,
            Proto::Icmp => number == ip_proto::ICMP || number == ip_proto::ICMPV6,
        }
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// First port, inclusive.
    pub first: u16,
    /// Last port, inclusive; `>= first`.
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ALL: PortRange = PortRange {
        first: 0,
        last: u16::MAX,
    };

    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One allow rule of a packet filter. A packet is admitted when any rule
/// matches it; there are no deny rules (default deny).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FilterRule {
    /// Source prefixes admitted.
    #[serde(serialize_with = "crate::ipfmt::serialize_nets")]
    pub src: Vec<IpNet>,
    /// Destination prefixes admitted.
    #[serde(serialize_with = "crate::ipfmt::serialize_nets")]
    pub dst: Vec<IpNet>,
    /// Protocol selector.
    pub proto: Proto,
    /// Destination ports; empty means every port. A non-empty list only ever
    /// admits TCP and UDP packets on those ports.
    pub ports: Vec<PortRange>,
}

impl FilterRule {
    /// Whether a packet `src -> dst` with IP protocol `proto` and destination
    /// port `dst_port` (`None` for port-less protocols) is admitted.
    pub fn admits(&self, src: IpAddr, dst: IpAddr, proto: u8, dst_port: Option<u16>) -> bool {
        if !self.src.iter().any(|n| n.contains(&src)) || !self.dst.iter().any(|n| n.contains(&dst))
        {
            return false;
        }
        if !self.proto.admits(proto) {
            return false;
        }
        if self.ports.is_empty() {
            return true;
        }
        let port_bearing = proto == ip_proto::TCP || proto == ip_proto::UDP;
        match dst_port {
            Some(port) if port_bearing => self.ports.iter().any(|r| r.contains(port)),
            _ => false,
        }
    }
}

/// Whether any rule in `rules` admits the packet.
pub fn filter_admits(
    rules: &[FilterRule],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dst_port: Option<u16>,
) -> bool {
    rules.iter().any(|r| r.admits(src, dst, proto, dst_port))
}

/// The node the map is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfInfo {
    /// This node's id.
    pub node_id: NodeId,
    /// Host label assigned by control (unique in the network; `host`, `host-2`, ...).
    pub hostname: String,
    /// Fully qualified Magic DNS name, `<hostname>.<suffix>`.
    pub dns_name: String,
    /// Tunnel address, inside [`TUNNEL_NET`].
    pub tunnel_ip: Ipv4Addr,
    /// This node's tunnel public key as control recorded it.
    pub node_key: TunnelPublicKey,
    /// The user that owns the node.
    pub user: String,
    /// Tags the node carries.
    pub tags: Vec<String>,
    /// Whether the node advertises itself as an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes the node advertises.
    pub advertised_routes: Vec<IpNet>,
    /// The subset of `advertised_routes` the policy approved.
    pub approved_routes: Vec<IpNet>,
}

/// Another node this node may talk to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Peer id.
    pub node_id: NodeId,
    /// Host label.
    pub hostname: String,
    /// Fully qualified Magic DNS name.
    pub dns_name: String,
    /// Tunnel public key.
    pub node_key: TunnelPublicKey,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// UDP endpoints the peer reported, most preferred first.
    pub endpoints: Vec<SocketAddr>,
    /// The relay the peer keeps as its home (name from the map's relays).
    pub home_relay: Option<String>,
    /// The peer's path key: probes from it are authenticated with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_key: Option<crate::keys::PathPublicKey>,
    /// Inner source prefixes accepted from this peer: its tunnel /32 plus LAN
    /// routes granted to this node through it. Never a default route: the exit
    /// default route is added locally only when the user selects the exit.
    pub allowed_ips: Vec<IpNet>,
    /// Whether control has heard from the peer recently.
    pub online: bool,
    /// Whether this node may use the peer as its exit node.
    pub exit_node: bool,
}

/// An exit node this node may select.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitGrant {
    /// The exit node.
    pub node_id: NodeId,
    /// Its host label.
    pub hostname: String,
}

/// A LAN prefix this node may reach through a subnet router (usually its exit
/// node), with the protocols and ports the policy allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LanGrant {
    /// The router that advertises the prefix.
    pub via: NodeId,
    /// Destination prefix (inside one of the router's approved routes).
    pub dst: IpNet,
    /// Protocol selector.
    pub proto: Proto,
    /// Ports; empty means every port.
    pub ports: Vec<PortRange>,
}

/// One Magic DNS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Fully qualified name, lowercase, no trailing dot.
    pub name: String,
    /// Address (IPv4 tunnel addresses today).
    pub ip: IpAddr,
    /// The node the name belongs to.
    pub node_id: NodeId,
    /// The hostname the node asked for at enrollment; differs from the label of
    /// `name` when control renamed a duplicate.
    pub requested_hostname: String,
    /// When control assigned the name (unix seconds).
    pub assigned_at: i64,
}

/// Names under `domain` are forwarded to `resolvers` (split DNS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitDnsRoute {
    /// Domain suffix, lowercase, no trailing dot.
    pub domain: String,
    /// Resolvers for that domain.
    pub resolvers: Vec<IpAddr>,
}

/// DNS configuration for the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// The tailnet suffix, e.g. `rustynet.internal`.
    pub suffix: String,
    /// Records the node may resolve (visible peers and itself).
    pub records: Vec<DnsRecord>,
    /// Split-DNS routes.
    pub split: Vec<SplitDnsRoute>,
}

/// The network map for one node. Control compiles it from the policy; the node
/// only ever acts on a map that passed [`crate::NetmapVerifier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Netmap {
    /// Schema version, [`NETMAP_VERSION`].
    pub version: u16,
    /// The node itself.
    pub self_node: SelfInfo,
    /// Visible peers.
    pub peers: Vec<PeerInfo>,
    /// Inbound filter for packets addressed to this node.
    pub packet_filter: Vec<FilterRule>,
    /// Tunnel addresses allowed to use this node as their exit to the internet.
    #[serde(serialize_with = "crate::ipfmt::serialize_nets")]
    pub exit_clients: Vec<IpNet>,
    /// Filter for packets this node forwards from peers into its LAN routes.
    pub forward_filter: Vec<FilterRule>,
    /// Exit nodes this node may select.
    pub exit_grants: Vec<ExitGrant>,
    /// LAN prefixes this node may reach through routers.
    pub lan_grants: Vec<LanGrant>,
    /// Magic DNS configuration.
    pub dns: DnsConfig,
    /// Relays this node keeps a connection to, for peers it cannot reach
    /// directly. Omitted when control has none, so maps of networks without
    /// a relay read the same to every daemon version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<RelayInfo>,
}

/// Most relays one map may name.
pub const MAX_RELAYS: usize = 16;
/// Most addresses (TLS or binding) per relay.
pub const MAX_RELAY_ADDRS: usize = 8;

/// A relay, as control announces it: where to connect, which key to expect,
/// and where to send binding requests (endpoint discovery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Short name shown by `status` and `ping` (`r1`), unique in the map.
    pub name: String,
    /// TLS endpoints (TCP), tried in turn.
    pub addrs: Vec<SocketAddr>,
    /// Name for SNI and the HTTP Host header.
    pub server_name: String,
    /// The relay's certificate key pin; nothing else is accepted.
    pub cert_sha256: crate::keys::CertPin,
    /// UDP binding addresses (two on different IPs let a node tell whether
    /// its NAT mapping depends on the destination).
    #[serde(default)]
    pub stun: Vec<SocketAddr>,
}

impl RelayInfo {
    /// The checks a node applies to one relay of its map: a label for a
    /// name, a DNS name or IP for `server_name`, one to
    /// [`MAX_RELAY_ADDRS`] TLS addresses, at most as many binding
    /// addresses, and every address one a node may be told to connect to.
    /// Control runs the same checks before it announces a relay.
    pub fn check(&self) -> Result<(), NetmapError> {
        if names::validate_label(&self.name, MAX_RELAY_NAME).is_err() {
            return Err(NetmapError::Name(self.name.clone()));
        }
        if self.server_name.parse::<IpAddr>().is_err() {
            check_name(&self.server_name)?;
        }
        if self.addrs.is_empty() {
            return Err(NetmapError::TooMany {
                what: "relay addrs (none)",
                count: 0,
                limit: MAX_RELAY_ADDRS,
            });
        }
        bounded("relay addrs", self.addrs.len(), MAX_RELAY_ADDRS)?;
        bounded("relay stun", self.stun.len(), MAX_RELAY_ADDRS)?;
        for addr in self.addrs.iter().chain(&self.stun) {
            check_endpoint(addr).map_err(|reason| NetmapError::RelayAddr {
                relay: self.name.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Longest relay name.
pub const MAX_RELAY_NAME: usize = 32;

/// Checks a map's relay list as a node does (at most [`MAX_RELAYS`], names
/// unique, each [`RelayInfo::check`]) and returns the names.
pub fn check_relays(relays: &[RelayInfo]) -> Result<std::collections::HashSet<&str>, NetmapError> {
    bounded("relays", relays.len(), MAX_RELAYS)?;
    let mut names = std::collections::HashSet::with_capacity(relays.len());
    for relay in relays {
        relay.check()?;
        if !names.insert(relay.name.as_str()) {
            return Err(NetmapError::Name(relay.name.clone()));
        }
    }
    Ok(names)
}

/// Why a map that verified cryptographically is still unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetmapError {
    /// The schema version is not one this build understands.
    #[error("unsupported netmap version {0}")]
    Version(u16),
    /// A tunnel address lies outside 100.64.0.0/10.
    #[error("tunnel address {0} is outside 100.64.0.0/10")]
    TunnelIp(Ipv4Addr),
    /// A name is not a valid DNS name.
    #[error("invalid name {0:?}")]
    Name(String),
    /// A list exceeds its bound.
    #[error("{what} has {count} entries, limit {limit}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Entries present.
        count: usize,
        /// Limit.
        limit: usize,
    },
    /// A peer is listed with an allowed prefix that could capture all traffic.
    #[error("peer {0} has a default route in allowed_ips")]
    DefaultRoute(NodeId),
    /// A peer appears twice, or a peer is this node.
    #[error("duplicate or self peer {0}")]
    DuplicatePeer(NodeId),
    /// A peer endpoint no node may be told to send to.
    #[error("peer {peer} has an unusable endpoint: {reason}")]
    Endpoint {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: EndpointError,
    },
    /// A relay address no node may connect to.
    #[error("relay {relay} has an unusable address: {reason}")]
    RelayAddr {
        /// The relay's name.
        relay: String,
        /// Why.
        reason: EndpointError,
    },
    /// A port range has `first > last`.
    #[error("inverted port range {first}-{last}")]
    PortRange {
        /// First.
        first: u16,
        /// Last.
        last: u16,
    },
    /// A filter rule names no source or no destination (it would admit
    /// nothing, and an empty source must never be read as "any").
    #[error("{list} rule {index} has an empty {field} list")]
    EmptyFilterField {
        /// `packet_filter` or `forward_filter`.
        list: &'static str,
        /// The rule's position.
        index: usize,
        /// `src` or `dst`.
        field: &'static str,
    },
}

impl Netmap {
    /// Semantic checks a node runs after the signature and freshness checks:
    /// bounded sizes (the [`MapShape`] limits control also checks before it
    /// signs), addresses in range, usable endpoints, sane names, no peer
    /// that could swallow all traffic, no duplicate peers.
    pub fn validate(&self) -> Result<(), NetmapError> {
        if self.version != NETMAP_VERSION {
            return Err(NetmapError::Version(self.version));
        }
        MapShape::of(self).check()?;
        check_tunnel_ip(self.self_node.tunnel_ip)?;
        check_name(&self.self_node.dns_name)?;
        check_name(&self.dns.suffix)?;
        let mut seen = std::collections::HashSet::with_capacity(self.peers.len());
        for peer in &self.peers {
            if peer.node_id == self.self_node.node_id || !seen.insert(peer.node_id) {
                return Err(NetmapError::DuplicatePeer(peer.node_id));
            }
            check_tunnel_ip(peer.tunnel_ip)?;
            check_name(&peer.dns_name)?;
            check_allowed_ips(peer.node_id, &peer.allowed_ips)?;
            bounded("peer endpoints", peer.endpoints.len(), MAX_ENDPOINTS)?;
            for endpoint in &peer.endpoints {
                check_endpoint(endpoint).map_err(|reason| NetmapError::Endpoint {
                    peer: peer.node_id,
                    reason,
                })?;
            }
        }
        for record in &self.dns.records {
            check_name(&record.name)?;
        }
        for route in &self.dns.split {
            check_name(&route.domain)?;
        }
        self.validate_relays()
    }

    fn validate_relays(&self) -> Result<(), NetmapError> {
        let names = check_relays(&self.relays)?;
        for peer in &self.peers {
            if let Some(home) = &peer.home_relay
                && !names.contains(home.as_str())
            {
                return Err(NetmapError::Name(home.clone()));
            }
        }
        Ok(())
    }

    /// The peer with this id, if visible.
    pub fn peer(&self, id: NodeId) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.node_id == id)
    }
}

fn check_tunnel_ip(ip: Ipv4Addr) -> Result<(), NetmapError> {
    if TUNNEL_NET.contains(&ip) {
        Ok(())
    } else {
        Err(NetmapError::TunnelIp(ip))
    }
}

fn check_name(name: &str) -> Result<(), NetmapError> {
    names::validate_dns_name(name).map_err(|_| NetmapError::Name(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ports: Vec<PortRange>, proto: Proto) -> FilterRule {
        FilterRule {
            src: vec!["100.64.0.1/32".parse().unwrap()],
            dst: vec!["100.64.0.2/32".parse().unwrap()],
            proto,
            ports,
        }
    }

    #[test]
    fn filter_semantics() {
        let a: IpAddr = "100.64.0.1".parse().unwrap();
        let b: IpAddr = "100.64.0.2".parse().unwrap();
        let r = rule(vec![PortRange::single(22)], Proto::Tcp);
        assert!(r.admits(a, b, ip_proto::TCP, Some(22)));
        assert!(!r.admits(a, b, ip_proto::TCP, Some(23)));
        assert!(!r.admits(a, b, ip_proto::UDP, Some(22)));
        assert!(!r.admits(b, a, ip_proto::TCP, Some(22)));
        // "any" with ports never admits ICMP; "any" without ports does.
        let any_ports = rule(vec![PortRange::single(22)], Proto::Any);
        assert!(!any_ports.admits(a, b, ip_proto::ICMP, None));
        assert!(any_ports.admits(a, b, ip_proto::UDP, Some(22)));
        assert!(rule(vec![], Proto::Any).admits(a, b, ip_proto::ICMP, None));
        assert!(rule(vec![], Proto::Icmp).admits(a, b, ip_proto::ICMPV6, None));
        assert!(!rule(vec![], Proto::Icmp).admits(a, b, ip_proto::TCP, Some(1)));
    }

    #[test]
    fn tunnel_net_constant() {
        assert_eq!(TUNNEL_NET.to_string(), "100.64.0.0/10");
    }

    fn relay(name: &str) -> RelayInfo {
        RelayInfo {
            name: name.to_owned(),
            addrs: vec!["192.0.2.10:443".parse().unwrap()],
            server_name: "relay.example.net".into(),
            cert_sha256: crate::keys::CertPin([7; 32]),
            stun: vec!["192.0.2.10:3478".parse().unwrap()],
        }
    }

    #[test]
    fn relay_checks() {
        assert_eq!(check_relays(&[relay("r1"), relay("r2")]).unwrap().len(), 2);
        let mut ip_name = relay("r1");
        ip_name.server_name = "192.0.2.10".into();
        assert!(ip_name.check().is_ok());
        assert_eq!(
            check_relays(&[relay("r1"), relay("r1")]),
            Err(NetmapError::Name("r1".into()))
        );
        assert_eq!(relay("R1").check(), Err(NetmapError::Name("R1".into())));
        let mut bad = relay("r1");
        bad.addrs = vec!["127.0.0.1:443".parse().unwrap()];
        assert!(matches!(
            bad.check(),
            Err(NetmapError::RelayAddr {
                reason: EndpointError::Loopback,
                ..
            })
        ));
        bad.addrs.clear();
        assert!(matches!(bad.check(), Err(NetmapError::TooMany { .. })));
        let mut bad = relay("r1");
        bad.stun = vec!["0.0.0.0:3478".parse().unwrap()];
        assert!(matches!(bad.check(), Err(NetmapError::RelayAddr { .. })));
        bad.stun.clear();
        bad.server_name = "bad name".into();
        assert!(matches!(bad.check(), Err(NetmapError::Name(_))));
        let many: Vec<_> = (0..=MAX_RELAYS).map(|i| relay(&format!("r{i}"))).collect();
        assert!(matches!(
            check_relays(&many),
            Err(NetmapError::TooMany { what: "relays", .. })
        ));
    }
}
