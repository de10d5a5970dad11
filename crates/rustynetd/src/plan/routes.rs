//! Addresses, routes and policy rules of a generation.
//!
//! Mesh traffic (100.64.0.0/10) and granted LAN prefixes go to the TUN from
//! the main table. With an exit node, the wg-quick/Mullvad pattern: a default
//! route into the TUN lives in Rustynet's own table, consulted by every packet
//! that does not carry the bypass mark; the main table is consulted first with
//! `suppress_prefixlength 0`, so specific routes still win but its default
//! route does not. IPv6 gets an unreachable default in that table: dual-stack
//! traffic cannot leave beside the tunnel (the firewall drops it too).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustynet_netos::{IpFamily, Route, RoutingConfig, Rule};
use rustynet_proto::netmap::{MAGIC_DNS_IP, TUNNEL_NET};
use rustynet_proto::{LanGrant, Netmap};

use super::{ExitChoice, LocalContext};

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

fn magic_dns() -> IpNet {
    IpNet::V4(Ipv4Net::from(MAGIC_DNS_IP))
}

pub(super) fn routing(
    netmap: &Netmap,
    exit: Option<&ExitChoice>,
    lan: &[LanGrant],
    ctx: &LocalContext,
) -> RoutingConfig {
    let addresses = vec![
        IpNet::V4(Ipv4Net::from(netmap.self_node.tunnel_ip)),
        magic_dns(),
    ];
    let mut routes = vec![Route::dev(
        IpNet::V4(TUNNEL_NET),
        ctx.tun.clone(),
        MAIN_TABLE,
    )];
    let mut lan_dsts: Vec<IpNet> = lan.iter().map(|g| g.dst).collect();
    lan_dsts.sort();
    lan_dsts.dedup();
    routes.extend(
        lan_dsts
            .into_iter()
            .map(|dst| Route::dev(dst, ctx.tun.clone(), MAIN_TABLE)),
    );
    let mut rules = Vec::new();
    if exit.is_some() {
        routes.push(Route::dev(
            IpNet::V4(Ipv4Net::default()),
            ctx.tun.clone(),
            ctx.table,
        ));
        routes.push(Route::unreachable(IpNet::V6(Ipv6Net::default()), ctx.table));
        for family in [IpFamily::V4, IpFamily::V6] {
            let mut suppress = Rule::lookup(ctx.rule_priority, family, MAIN_TABLE);
            suppress.suppress_prefixlen = Some(0);
            let mut to_tunnel = Rule::lookup(ctx.rule_priority + 1, family, ctx.table);
            to_tunnel.fwmark = Some((ctx.fwmark, u32::MAX));
            to_tunnel.invert = true;
            rules.extend([suppress, to_tunnel]);
        }
    }
    RoutingConfig {
        addresses,
        routes,
        rules,
    }
}

/// While failing closed: only the Magic DNS address (so the resolver keeps
/// answering SERVFAIL locally), nothing routed into the tunnel.
pub(super) fn restricted(_ctx: &LocalContext) -> RoutingConfig {
    RoutingConfig {
        addresses: vec![magic_dns()],
        routes: vec![],
        rules: vec![],
    }
}
