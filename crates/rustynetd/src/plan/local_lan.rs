//! `local-lan on` (Tailscale's `--exit-node-allow-lan-access`, Mullvad's
//! local network sharing): while an exit node is in use, the node may still
//! reach its own LAN — and nothing else — outside the tunnel.
//!
//! "Its own LAN" is what its interfaces are attached to: the connected
//! routes the kernel made for its addresses (`proto kernel`, no gateway),
//! and only private space (RFC 1918, link-local, ULA). A route a DHCP server
//! pushed (option 121, TunnelVision/LocalNet) has another protocol or a
//! gateway and never counts, nor does a public prefix the node happens to be
//! on: those keep being dropped by the kill switch.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustynet_netos::{RouteEntry, RouteType};

/// `rtm_protocol` of routes the kernel adds for an interface's address.
pub const RTPROT_KERNEL: u8 = 2;

/// One on-link private prefix and the interface it is on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnLink {
    /// Interface name.
    pub dev: String,
    /// Prefix.
    pub net: IpNet,
}

fn private_space() -> Vec<IpNet> {
    let v4 = [
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([169, 254, 0, 0], 16),
    ]
    .into_iter()
    .filter_map(|(a, l)| Ipv4Net::new(a.into(), l).ok().map(IpNet::V4));
    let v6 = [
        (std::net::Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
        (std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    ]
    .into_iter()
    .filter_map(|(a, l)| Ipv6Net::new(a, l).ok().map(IpNet::V6));
    v4.chain(v6).collect()
}

/// The on-link private prefixes among `routes` (the main table), leaving
/// out the tunnel interface and loopback. Sorted and deduplicated.
pub fn on_link_private(routes: &[RouteEntry], tun: &str) -> Vec<OnLink> {
    let private = private_space();
    let mut out: Vec<OnLink> = routes
        .iter()
        .filter(|r| {
            r.protocol == RTPROT_KERNEL
                && r.kind == RouteType::Unicast
                && r.gateway.is_none()
                && !r.has_extras
                && private.iter().any(|p| p.contains(&r.dst.trunc()))
        })
        .filter_map(|r| {
            let dev = r.dev.clone()?;
            (dev != tun && dev != "lo").then(|| OnLink {
                dev,
                net: r.dst.trunc(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(dst: &str, protocol: u8, gateway: Option<&str>, dev: &str) -> RouteEntry {
        RouteEntry {
            dst: dst.parse().unwrap(),
            table: 254,
            protocol,
            kind: RouteType::Unicast,
            oif: Some(2),
            dev: Some(dev.into()),
            gateway: gateway.map(|g| g.parse().unwrap()),
            metric: 0,
            has_extras: false,
        }
    }

    #[test]
    fn only_connected_private_routes_count() {
        let routes = [
            route("192.168.1.0/24", RTPROT_KERNEL, None, "eth0"),
            route("fd00:1::/64", RTPROT_KERNEL, None, "eth0"),
            route("fe80::/64", RTPROT_KERNEL, None, "eth0"),
            // Pushed by DHCP (option 121): on-link or through a gateway.
            route("10.99.0.0/16", 16, None, "eth0"),
            route("10.98.0.0/16", 16, Some("192.168.1.1"), "eth0"),
            // Static route through a gateway, even with the kernel protocol.
            route("10.97.0.0/16", RTPROT_KERNEL, Some("192.168.1.1"), "eth0"),
            // Public on-link prefix.
            route("203.0.113.0/24", RTPROT_KERNEL, None, "eth1"),
            // The default route.
            route("0.0.0.0/0", 16, Some("192.168.1.1"), "eth0"),
            // The tunnel's own routes.
            route("100.64.0.0/10", RTPROT_KERNEL, None, "rustynet0"),
            route("10.5.0.0/24", RTPROT_KERNEL, None, "rustynet0"),
        ];
        let got = on_link_private(&routes, "rustynet0");
        let nets: Vec<String> = got.iter().map(|o| format!("{} {}", o.dev, o.net)).collect();
        assert_eq!(
            nets,
            ["eth0 192.168.1.0/24", "eth0 fd00:1::/64", "eth0 fe80::/64"]
        );
    }

    #[test]
    fn a_prefix_wider_than_private_space_is_not_private() {
        let routes = [route("192.0.0.0/8", RTPROT_KERNEL, None, "eth0")];
        assert!(on_link_private(&routes, "rustynet0").is_empty());
    }
}
