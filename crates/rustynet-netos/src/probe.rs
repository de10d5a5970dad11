//! Startup capability probe: can this host run a protected tunnel at all?
//! The daemon refuses tunnel activation when anything here is missing,
//! rather than discovering it halfway through an apply.

use std::fmt;
use std::fs;
use std::os::unix::fs::FileTypeExt;

use crate::firewall::{FirewallError, NftFirewall};
use crate::routing::{NetlinkRouting, Routing, RoutingScope};

/// Bit of `CAP_NET_ADMIN` in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// A prerequisite the probe found missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prerequisite {
    /// The process lacks `CAP_NET_ADMIN` (needed for routes, rules, nft).
    CapNetAdmin,
    /// `/dev/net/tun` is not a character device.
    TunDevice,
    /// `nft` is missing or cannot talk to the kernel.
    Nft,
    /// The kernel has no policy routing (`ip rule`).
    PolicyRouting,
}

impl fmt::Display for Prerequisite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Prerequisite::CapNetAdmin => "CAP_NET_ADMIN",
            Prerequisite::TunDevice => "/dev/net/tun",
            Prerequisite::Nft => "usable nft",
            Prerequisite::PolicyRouting => "policy routing",
        })
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Effective uid is 0.
    pub is_root: bool,
    /// `CAP_NET_ADMIN` is in the effective set.
    pub cap_net_admin: bool,
    /// `/dev/net/tun` exists as a character device.
    pub tun_device: bool,
    /// `nft -j list tables` succeeded.
    pub nft_usable: bool,
    /// Why nft is unusable, when it is.
    pub nft_error: Option<String>,
    /// A policy-rule dump returned the kernel's default rules.
    pub policy_routing: bool,
}

impl Capabilities {
    /// Everything missing, in a stable order.
    pub fn missing(&self) -> Vec<Prerequisite> {
        let mut out = Vec::new();
        if !self.cap_net_admin {
            out.push(Prerequisite::CapNetAdmin);
        }
        if !self.tun_device {
            out.push(Prerequisite::TunDevice);
        }
        if !self.nft_usable {
            out.push(Prerequisite::Nft);
        }
        if !self.policy_routing {
            out.push(Prerequisite::PolicyRouting);
        }
        out
    }

    /// Whether a tunnel may be activated.
    pub fn ready_for_tunnel(&self) -> bool {
        self.missing().is_empty()
    }
}

/// Probes the host (in the calling thread's network namespace). Read-only.
pub fn probe() -> Capabilities {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nft = nft_usable();
    Capabilities {
        is_root: effective_uid(&status) == Some(0),
        cap_net_admin: effective_caps(&status).is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0),
        tun_device: fs::metadata("/dev/net/tun").is_ok_and(|m| m.file_type().is_char_device()),
        nft_usable: nft.is_ok(),
        nft_error: nft.err().map(|e| e.to_string()),
        policy_routing: policy_routing_usable(),
    }
}

/// Whether `nft` exists and can read the ruleset with our privileges.
pub fn nft_usable() -> Result<(), FirewallError> {
    NftFirewall::new("rustynet")?.list_tables()
}

fn policy_routing_usable() -> bool {
    RoutingScope::new("lo")
        .and_then(NetlinkRouting::new)
        .and_then(|mut r| r.list_rules())
        .is_ok_and(|rules| !rules.is_empty())
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn effective_uid(status: &str) -> Option<u32> {
    // "Uid: real effective saved fs"
    status_field(status, "Uid:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn effective_caps(status: &str) -> Option<u64> {
    u64::from_str_radix(status_field(status, "CapEff:")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\trustynetd\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t0000000000001000\n";

    #[test]
    fn parses_uid_and_caps() {
        assert_eq!(effective_uid(STATUS), Some(0));
        assert_eq!(effective_caps(STATUS), Some(0x1000));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
    }

    #[test]
    fn missing_lists_everything_absent() {
        let caps = Capabilities {
            is_root: false,
            cap_net_admin: true,
            tun_device: false,
            nft_usable: false,
            nft_error: Some("not found".into()),
            policy_routing: true,
        };
        assert_eq!(
            caps.missing(),
            vec![Prerequisite::TunDevice, Prerequisite::Nft]
        );
        assert!(!caps.ready_for_tunnel());
    }
}
