//! The UDP endpoints a node reports to control: its tunnel port on every
//! usable local IPv4 address (not loopback, the tunnel range, link-local,
//! multicast: [`check_endpoint`]),
//! with the address the node's own routing prefers first (the one it would
//! use to reach control), so peers try the likeliest path first.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use rustynet_proto::endpoint::{MAX_ENDPOINTS, check_endpoint};

/// The local address the kernel picks to reach `target` (no packet is sent:
/// connecting a UDP socket only selects a route).
fn preferred_source(target: SocketAddr, fwmark: u32) -> Option<IpAddr> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).ok()?;
    socket.set_mark(fwmark).ok()?;
    let socket: UdpSocket = socket.into();
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Local endpoints for `port`, excluding interface `tun`; the route towards
/// `toward` (the control server) decides which comes first.
pub fn local_endpoints(
    tun: &str,
    port: u16,
    toward: Option<SocketAddr>,
    fwmark: u32,
) -> Vec<SocketAddr> {
    if port == 0 {
        return vec![];
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    let mut out: Vec<SocketAddr> = addrs
        .filter(|ifa| ifa.interface_name != tun)
        .filter_map(|ifa| ifa.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())))
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
        // What control accepts and peers may be told (one rule for all).
        .filter(|ep| check_endpoint(ep).is_ok())
        .collect();
    out.sort();
    out.dedup();
    if let Some(first) = toward
        .filter(SocketAddr::is_ipv4)
        .and_then(|t| preferred_source(t, fwmark))
        && let Some(pos) = out.iter().position(|ep| ep.ip() == first)
    {
        let preferred = out.remove(pos);
        out.insert(0, preferred);
    }
    out.truncate(MAX_ENDPOINTS);
    out
}
