//! The UDP endpoints a node reports to control: its tunnel port on every
//! usable local IPv4 address (not loopback, not the tunnel, not link-local).

use std::net::{IpAddr, SocketAddr};

use rustynet_proto::netmap::TUNNEL_NET;

/// Local endpoints for `port`, excluding interface `tun`.
pub fn local_endpoints(tun: &str, port: u16) -> Vec<SocketAddr> {
    if port == 0 {
        return vec![];
    }
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return vec![];
    };
    let mut out: Vec<SocketAddr> = addrs
        .filter(|ifa| ifa.interface_name != tun)
        .filter_map(|ifa| ifa.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())))
        .filter(|ip| {
            !ip.is_loopback()
                && !ip.is_link_local()
                && !ip.is_unspecified()
                && !TUNNEL_NET.contains(ip)
        })
        .map(|ip| SocketAddr::new(IpAddr::V4(ip), port))
        .collect();
    out.sort();
    out.dedup();
    out.truncate(16);
    out
}
