//! Interface and peer configuration.

use std::net::SocketAddr;

use ipnet::IpNet;
use rustynet_proto::TunnelPublicKey;

use crate::{TunnelError, TunnelPrivateKey};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Smallest MTU accepted (the IPv4 minimum reassembly size).
pub const MIN_MTU: u16 = 576;
/// Largest MTU accepted (jumbo frames; the outer packet adds its own overhead).
pub const MAX_MTU: u16 = 9000;

/// What `start` needs to bring an interface up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// Interface name, e.g. `rn0`.
    pub ifname: String,
    /// This node's private tunnel key.
    pub private_key: TunnelPrivateKey,
    /// UDP listen port; 0 asks the OS for an ephemeral one (see [`crate::TunnelStats::listen_port`]).
    pub listen_port: u16,
    /// MTU of the interface.
    pub mtu: u16,
    /// Firewall mark set as `SO_MARK` on the tunnel's UDP socket(s), so that
    /// full-tunnel policy routing can let the encrypted packets bypass the tunnel.
    pub fwmark: Option<u32>,
}

impl InterfaceConfig {
    /// Checks name and MTU; the key is checked by the engine that knows the curve.
    pub fn validate(&self) -> Result<(), TunnelError> {
        validate_ifname(&self.ifname)?;
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(TunnelError::InvalidMtu {
                mtu: self.mtu,
                min: MIN_MTU,
                max: MAX_MTU,
            });
        }
        Ok(())
    }
}

/// Refuses names Linux would reject or that could be mistaken for a path:
/// empty, longer than 15 bytes, `.`/`..`, or containing anything but
/// ASCII letters, digits, `-`, `_` and `.`.
pub fn validate_ifname(name: &str) -> Result<(), TunnelError> {
    let refuse = |reason| {
        Err(TunnelError::InvalidInterfaceName {
            name: name.chars().take(32).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return refuse("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return refuse("reserved name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return refuse("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// One peer as the daemon wants it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerConfig {
    /// The peer's public tunnel key (its identity in cryptokey routing).
    pub public_key: TunnelPublicKey,
    /// Where to send until the peer roams; `None` waits for the peer to call in.
    pub endpoint: Option<SocketAddr>,
    /// Every direct address the peer may be reached at (its reported
    /// endpoints); an engine with path discovery probes them all.
    pub candidates: Vec<SocketAddr>,
    /// The peer's path key (authenticates its probes), if it has one.
    pub path_key: Option<rustynet_proto::PathPublicKey>,
    /// The relay the peer keeps as home, by name.
    pub home_relay: Option<String>,
    /// Inner prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Send a keepalive after this many idle seconds (NAT bindings); `None` = off.
    pub persistent_keepalive_secs: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_rules() {
        assert!(validate_ifname("rn0").is_ok());
        assert!(validate_ifname("rustynet-abc_1.").is_ok());
        assert!(validate_ifname("").is_err());
        assert!(validate_ifname("abcdefghijklmnop").is_err());
        assert!(validate_ifname("..").is_err());
        assert!(validate_ifname("a/b").is_err());
        assert!(validate_ifname("a b").is_err());
        assert!(validate_ifname("rn0;rm").is_err());
    }

    #[test]
    fn mtu_bounds() {
        let mut cfg = InterfaceConfig {
            ifname: "rn0".into(),
            private_key: TunnelPrivateKey::from_bytes([1; 32]),
            listen_port: 0,
            mtu: 1420,
            fwmark: None,
        };
        assert!(cfg.validate().is_ok());
        cfg.mtu = 100;
        assert!(matches!(
            cfg.validate(),
            Err(TunnelError::InvalidMtu { .. })
        ));
        cfg.mtu = 9001;
        assert!(cfg.validate().is_err());
    }
}
