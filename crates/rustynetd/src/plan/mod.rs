//! Pure planning: from a verified netmap, the user's preferences and local
//! facts to the complete desired state of one generation. No I/O here; the
//! transaction in [`crate::apply`] makes the OS match the plan.

mod allow;
mod firewall;
mod lan;
pub mod local_lan;
mod routes;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};
use rustynet_netos::{RoutingConfig, Ruleset};
use rustynet_proto::netmap::MAGIC_DNS_IP;
use rustynet_proto::{DnsConfig, LanGrant, Netmap, NodeId, PeerInfo};
use rustynet_tunnel::PeerConfig;

pub use firewall::{NOT_INTERNET_V4, PRIVATE_V4, TABLE};
pub use lan::LanRoute;

/// Keepalive on every peer: keeps NAT mappings and lets failures show.
pub const KEEPALIVE_SECS: u16 = 25;

/// Local facts the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalContext {
    /// TUN interface.
    pub tun: String,
    /// Bypass mark (tunnel UDP, control connection).
    pub fwmark: u32,
    /// Mark on Magic DNS upstream queries.
    pub dns_mark: u32,
    /// Routing table for the full-tunnel default route.
    pub table: u32,
    /// First rule priority of Rustynet's band.
    pub rule_priority: u32,
    /// Resolvers the system used before Magic DNS took over.
    pub system_resolvers: Vec<IpAddr>,
    /// The node's on-link private prefixes ([`local_lan::on_link_private`]);
    /// read only while `local-lan` is on and an exit is selected.
    pub on_link: Vec<local_lan::OnLink>,
}

/// The exit node in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitChoice {
    /// Its id.
    pub node_id: NodeId,
    /// Host label.
    pub hostname: String,
    /// Tunnel address (its DNS service listens there).
    pub tunnel_ip: Ipv4Addr,
}

/// Where Magic DNS forwards names it does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsUpstream {
    /// The exit node's resolver, through the tunnel.
    Exit {
        /// Its tunnel address.
        ip: Ipv4Addr,
        /// Its host label.
        name: String,
    },
    /// The resolvers the system had.
    System(Vec<IpAddr>),
    /// Nothing: answer SERVFAIL (fail closed).
    None,
}

/// Magic DNS part of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPlan {
    /// Records and split routes from the signed map.
    pub config: DnsConfig,
    /// Forwarding target.
    pub upstream: DnsUpstream,
    /// Serve the exit DNS service on this node's tunnel address to these clients.
    pub exit_service: Option<(Ipv4Addr, Vec<IpNet>)>,
    /// Protected DNS asserted (shown by `dns inspect`).
    pub protected: bool,
}

/// Everything one generation wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Generation (0 for the restricted fail-closed plan).
    pub generation: u64,
    /// Tunnel peers.
    pub peers: Vec<PeerConfig>,
    /// Addresses, routes and rules Rustynet owns.
    pub routing: RoutingConfig,
    /// The `inet rustynet` table.
    pub firewall: Ruleset,
    /// Sysctls the generation needs (forwarding, `src_valid_mark`).
    pub sysctls: Vec<(&'static str, &'static str)>,
    /// Magic DNS.
    pub dns: DnsPlan,
    /// Exit node in use.
    pub exit: Option<ExitChoice>,
    /// Protected mode (kill switch asserted).
    pub protected: bool,
    /// Protected DNS asserted.
    pub dns_protected: bool,
    /// The router carrying each LAN prefix this node may reach now.
    pub lan_routes: Vec<LanRoute>,
}

impl Desired {
    /// Prefix -> router, as the next plan's [`Choices::lan_routers`].
    pub fn lan_routers(&self) -> BTreeMap<IpNet, NodeId> {
        self.lan_routes.iter().map(|r| (r.prefix, r.via)).collect()
    }
}

/// Why a plan cannot be made (nothing is applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No visible peer has that name.
    #[error("no exit node named {0:?} is visible to this node")]
    UnknownExit(String),
    /// The peer exists but the policy does not let this node use it as exit.
    #[error("{0} is not an exit node this node may use (no exit grant in the policy)")]
    ExitNotGranted(String),
}

/// The user's choices that shape the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    /// Selected exit (host label, Magic DNS name or tunnel IP).
    pub exit_node: Option<String>,
    /// `exit-lan` (was `lan-access`): reach LANs behind peers (an exit's
    /// or a subnet router's) that the policy grants.
    pub lan_access: bool,
    /// `local-lan`: while an exit is in use, still reach this node's own
    /// on-link private prefixes outside the tunnel (and nothing else).
    pub local_lan: bool,
    /// Protected DNS requested without an exit node.
    pub protect_dns: bool,
    /// As a router: forward clients into approved routes with their own
    /// tunnel addresses instead of masquerading them
    /// (`up --snat-subnet-routes=false`; the LAN then needs a route back to
    /// 100.64.0.0/10 through this node). Exit traffic to the internet is
    /// masqueraded either way.
    pub no_snat_subnet_routes: bool,
    /// The router each LAN prefix went to in the last generation: kept
    /// while it stays online (see [`LanRoute`]).
    pub lan_routers: BTreeMap<IpNet, NodeId>,
    /// Lockdown mode: protected (kill switch, protected DNS) without an
    /// exit too; only the tunnel carries traffic off the node.
    pub lockdown: bool,
}

/// Finds the peer `name` refers to: host label, Magic DNS name or tunnel IP.
pub fn find_peer<'a>(netmap: &'a Netmap, name: &str) -> Option<&'a PeerInfo> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    netmap
        .peers
        .iter()
        .find(|p| p.hostname == name || p.dns_name == name || p.tunnel_ip.to_string() == name)
}

/// Resolves and authorizes an exit choice against the signed map.
pub fn resolve_exit(netmap: &Netmap, name: &str) -> Result<ExitChoice, PlanError> {
    let peer = find_peer(netmap, name).ok_or_else(|| PlanError::UnknownExit(name.to_owned()))?;
    if !peer.exit_node || !netmap.exit_grants.iter().any(|g| g.node_id == peer.node_id) {
        return Err(PlanError::ExitNotGranted(peer.hostname.clone()));
    }
    Ok(ExitChoice {
        node_id: peer.node_id,
        hostname: peer.hostname.clone(),
        tunnel_ip: peer.tunnel_ip,
    })
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

fn peer_configs(netmap: &Netmap, exit: Option<&ExitChoice>, lan: &[LanGrant]) -> Vec<PeerConfig> {
    netmap
        .peers
        .iter()
        .map(|p| {
            // Inner sources accepted from the peer: its own address, its LAN
            // prefixes only while LAN access is on, and everything when it
            // is the selected exit (replies from the internet).
            let mut allowed = vec![host(p.tunnel_ip)];
            allowed.extend(
                p.allowed_ips
                    .iter()
                    .filter(|net| {
                        lan.iter()
                            .any(|g| g.via == p.node_id && net.contains(&g.dst))
                    })
                    .copied(),
            );
            if exit.is_some_and(|e| e.node_id == p.node_id) {
                allowed.push("0.0.0.0/0".parse().unwrap_or(IpNet::V4(Ipv4Net::default())));
            }
            allowed.sort();
            allowed.dedup();
            PeerConfig {
                public_key: p.node_key,
                // The engine probes every candidate and picks the path; an
                // engine without path discovery starts at the first and
                // follows the peer when it roams.
                endpoint: p.endpoints.first().copied(),
                candidates: p.endpoints.clone(),
                path_key: p.path_key,
                home_relay: p.home_relay.clone(),
                allowed_ips: allowed,
                persistent_keepalive_secs: Some(KEEPALIVE_SECS),
            }
        })
        .collect()
}

/// ARP hardening while Rustynet's addresses exist (issue 10 item 5): by
/// default Linux answers ARP on every interface for every local address,
/// so the tunnel address and 100.100.100.100 would answer on the physical
/// LAN (Mullvad audit class). `arp_ignore=1` answers only for addresses of
/// the interface the request came in on; `arp_filter=1` answers only where
/// the reply would be routed out. Both are per network namespace and are
/// put back (from the persisted originals, also after a crash) when
/// Rustynet's addresses go (`down`, cleanup).
pub const ARP_HARDENING: [(&str, &str); 2] = [
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_filter", "1"),
];

/// The sysctls a generation wants: forwarding for exit nodes and routers,
/// `src_valid_mark` so fwmark policy routing passes reverse-path checks,
/// and [`ARP_HARDENING`] always (a generation always has addresses).
pub fn sysctls(forwarding: bool, exit: bool) -> Vec<(&'static str, &'static str)> {
    let mut out = ARP_HARDENING.to_vec();
    if forwarding {
        out.push(("net.ipv4.ip_forward", "1"));
    }
    if exit {
        out.push(("net.ipv4.conf.all.src_valid_mark", "1"));
    }
    out
}

/// Plans generation `generation` of `netmap`.
pub fn plan(
    netmap: &Netmap,
    generation: u64,
    choices: &Choices,
    ctx: &LocalContext,
) -> Result<Desired, PlanError> {
    let exit = match &choices.exit_node {
        Some(name) => Some(resolve_exit(netmap, name)?),
        None => None,
    };
    let (lan, lan_routes) = lan::choose(netmap, choices.lan_access, &choices.lan_routers);
    let local_lan = if choices.local_lan && exit.is_some() {
        ctx.on_link.clone()
    } else {
        vec![]
    };
    let protected = exit.is_some() || choices.lockdown;
    let dns_protected = protected || choices.protect_dns;
    let serves_exit = !netmap.exit_clients.is_empty();
    let upstream = match &exit {
        Some(e) => DnsUpstream::Exit {
            ip: e.tunnel_ip,
            name: e.hostname.clone(),
        },
        // Lockdown without an exit: the system's resolvers are outside the
        // tunnel, so names outside the tailnet fail (SERVFAIL).
        None if choices.lockdown || ctx.system_resolvers.is_empty() => DnsUpstream::None,
        None => DnsUpstream::System(ctx.system_resolvers.clone()),
    };
    Ok(Desired {
        generation,
        peers: peer_configs(netmap, exit.as_ref(), &lan),
        routing: routes::routing(netmap, exit.as_ref(), &lan, ctx),
        firewall: firewall::ruleset(&firewall::Inputs {
            netmap,
            ctx,
            exit: exit.as_ref(),
            lan: &lan,
            local_lan: &local_lan,
            lockdown: choices.lockdown,
            dns_protected,
            serves_exit_dns: serves_exit,
            snat_subnet_routes: !choices.no_snat_subnet_routes,
        }),
        sysctls: sysctls(
            serves_exit || !netmap.forward_filter.is_empty(),
            exit.is_some(),
        ),
        dns: DnsPlan {
            config: netmap.dns.clone(),
            upstream,
            exit_service: serves_exit
                .then(|| (netmap.self_node.tunnel_ip, netmap.exit_clients.clone())),
            protected: dns_protected,
        },
        exit,
        protected,
        dns_protected,
        lan_routes,
    })
}

/// The restricted plan used while failing closed: no peers, no routes, and a
/// ruleset that blocks all egress in protected mode (or only the tunnel
/// otherwise). Protected DNS holds when `protected` or `dns_protected` (on
/// demand) asks for it. Magic DNS answers SERVFAIL.
pub fn fail_closed(
    ctx: &LocalContext,
    protected: bool,
    dns_protected: bool,
    suffix: &str,
) -> Desired {
    let dns_protected = protected || dns_protected;
    Desired {
        generation: 0,
        peers: vec![],
        routing: routes::restricted(ctx),
        firewall: firewall::fail_closed(ctx, protected, dns_protected),
        // 100.100.100.100 stays on the TUN: so does the ARP hardening.
        sysctls: ARP_HARDENING.to_vec(),
        dns: DnsPlan {
            config: DnsConfig {
                suffix: suffix.to_owned(),
                records: vec![],
                split: vec![],
            },
            // No tailnet names while trust is missing; outside names fail
            // (SERVFAIL) when DNS is protected, else keep working.
            upstream: if dns_protected || ctx.system_resolvers.is_empty() {
                DnsUpstream::None
            } else {
                DnsUpstream::System(ctx.system_resolvers.clone())
            },
            exit_service: None,
            protected: dns_protected,
        },
        exit: None,
        protected,
        dns_protected,
        lan_routes: vec![],
    }
}

/// The address Magic DNS listens on.
pub fn magic_dns_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(MAGIC_DNS_IP), 53)
}

#[cfg(test)]
mod tests;
