//! Documents of the node's explain commands (`rustynet route explain ADDR`,
//! `rustynet acl explain PEER[:PORT]`): what the node does with a packet
//! now, from the kernel's rules and routes and the map its firewall was
//! built from.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ipc::PathKind;

/// Where a packet to the address goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteOutcome {
    /// Into the tunnel, to a peer.
    Tunnel,
    /// Into the tunnel, but no peer's allowed addresses cover it: the
    /// engine drops it.
    TunnelNoPeer,
    /// An address of this node.
    Local,
    /// Out of another interface: not through Rustynet.
    Outside,
    /// Dropped by an `unreachable`, `blackhole` or `prohibit` route.
    Unreachable,
    /// No route at all.
    NoRoute,
}

/// The peer that carries a tunnelled packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainPeer {
    /// Host label.
    pub name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// The allowed prefix of the peer that covers the address.
    pub prefix: IpNet,
    /// How packets reach it now.
    pub path: PathKind,
    /// Endpoint (direct) or relay name.
    pub via: Option<String>,
    /// Online per control.
    pub online: bool,
}

/// `route explain ADDR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteExplainDoc {
    /// The address explained.
    pub addr: IpAddr,
    /// Where the packet goes.
    pub outcome: RouteOutcome,
    /// The policy rule that chose the table (`ip rule` form).
    pub rule: Option<String>,
    /// The table holding the route.
    pub table: Option<u32>,
    /// The route (`ip route` form).
    pub route: Option<String>,
    /// Its output interface.
    pub dev: Option<String>,
    /// The peer carrying it (tunnel only).
    pub peer: Option<ExplainPeer>,
    /// For a LAN prefix: the routers that would take over, in order.
    pub standby: Vec<String>,
    /// What this node's firewall does with packets to the address.
    pub firewall: String,
    /// What it lets out to the address (`tcp/22`, `udp/53`, `icmp`,
    /// `any`); empty when nothing.
    pub allowed: Vec<String>,
}

/// `acl explain PEER[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclExplainDoc {
    /// The peer's host label.
    pub peer: String,
    /// Its tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// The port asked about.
    pub port: Option<u16>,
    /// What this node's inbound filter admits from the peer to this node
    /// (`tcp/22`, `any`, ...); with a port, only what admits that port.
    pub inbound: Vec<String>,
    /// What this node forwards from the peer (as a subnet router: `PREFIX
    /// proto/ports`; as its exit: `internet`).
    pub forwarded: Vec<String>,
    /// What this node may send through the peer into its LAN (`PREFIX
    /// proto/ports`), as the peer's client.
    pub outbound_lan: Vec<String>,
    /// Whether this node may use the peer as exit node.
    pub exit_grant: bool,
    /// A summary line.
    pub verdict: String,
}
