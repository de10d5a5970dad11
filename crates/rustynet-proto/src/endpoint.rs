//! Which UDP endpoints a node may report and a peer may be told to send to.
//!
//! Control refuses the rest when a node reports them, leaves any stored from
//! before out of the maps it writes, and a node refuses a map that carries
//! one: otherwise a node could make its peers send tunnel packets to their
//! own loopback or tunnel addresses (to the Magic DNS resolver, to local
//! services) or to a link-local or multicast group. One function decides, so
//! the three places cannot disagree.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netmap::TUNNEL_NET;

/// Most endpoints one node may report.
pub const MAX_ENDPOINTS: usize = 16;

/// Why an endpoint is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Port 0.
    #[error("port 0")]
    PortZero,
    /// 0.0.0.0/8 or `::`.
    #[error("unspecified address")]
    Unspecified,
    /// 127.0.0.0/8, `::1`, or one of those mapped into IPv6.
    #[error("loopback address")]
    Loopback,
    /// Inside the tunnel range 100.64.0.0/10 (which holds 100.100.100.100).
    #[error("inside the tunnel range 100.64.0.0/10")]
    Tunnel,
    /// 169.254.0.0/16 or fe80::/10.
    #[error("link-local address")]
    LinkLocal,
    /// A multicast group or the IPv4 broadcast address.
    #[error("multicast or broadcast address")]
    Multicast,
}

/// Whether a peer may be told to send to `endpoint`. An IPv4-mapped IPv6
/// address (`[::ffff:127.0.0.1]`) is judged as the IPv4 address it carries.
pub fn check_endpoint(endpoint: &SocketAddr) -> Result<(), EndpointError> {
    if endpoint.port() == 0 {
        return Err(EndpointError::PortZero);
    }
    match endpoint.ip().to_canonical() {
        IpAddr::V4(ip) => check_v4(ip),
        IpAddr::V6(ip) => check_v6(ip),
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), EndpointError> {
    if ip.octets()[0] == 0 {
        Err(EndpointError::Unspecified)
    } else if ip.is_loopback() {
        Err(EndpointError::Loopback)
    } else if TUNNEL_NET.contains(&ip) {
        Err(EndpointError::Tunnel)
    } else if ip.is_link_local() {
        Err(EndpointError::LinkLocal)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Err(EndpointError::Multicast)
    } else {
        Ok(())
    }
}

fn check_v6(ip: Ipv6Addr) -> Result<(), EndpointError> {
    if ip.is_unspecified() {
        Err(EndpointError::Unspecified)
    } else if ip.is_loopback() {
        Err(EndpointError::Loopback)
    } else if ip.is_unicast_link_local() {
        Err(EndpointError::LinkLocal)
    } else if ip.is_multicast() {
        Err(EndpointError::Multicast)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str) -> Result<(), EndpointError> {
        check_endpoint(&s.parse().unwrap())
    }

    #[test]
    fn refuses_local_tunnel_and_group_addresses() {
        for (bad, why) in [
            ("192.0.2.1:0", EndpointError::PortZero),
            ("0.0.0.0:41641", EndpointError::Unspecified),
            ("0.1.2.3:41641", EndpointError::Unspecified),
            ("[::]:41641", EndpointError::Unspecified),
            ("127.0.0.1:41641", EndpointError::Loopback),
            ("127.8.9.10:41641", EndpointError::Loopback),
            ("[::1]:41641", EndpointError::Loopback),
            ("[::ffff:127.0.0.1]:41641", EndpointError::Loopback),
            ("[::ffff:100.100.100.100]:53", EndpointError::Tunnel),
            ("100.64.0.1:41641", EndpointError::Tunnel),
            ("100.100.100.100:53", EndpointError::Tunnel),
            ("100.127.255.254:41641", EndpointError::Tunnel),
            ("169.254.1.1:41641", EndpointError::LinkLocal),
            ("[fe80::1]:41641", EndpointError::LinkLocal),
            ("[::ffff:169.254.0.9]:41641", EndpointError::LinkLocal),
            ("224.0.0.1:41641", EndpointError::Multicast),
            ("255.255.255.255:41641", EndpointError::Multicast),
            ("[ff02::1]:41641", EndpointError::Multicast),
        ] {
            assert_eq!(check(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn accepts_routable_and_private_addresses() {
        for good in [
            "192.0.2.1:41641",
            "198.51.100.7:1",
            "10.1.2.3:41641",
            "192.168.1.20:41641",
            "100.63.255.255:41641",
            "100.128.0.0:41641",
            "[2001:db8::1]:41641",
            "[fd00::5]:41641",
            "[::ffff:203.0.113.9]:41641",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
    }
}
