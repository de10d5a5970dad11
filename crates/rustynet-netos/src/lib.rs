//! Linux network effects for Rustynet, each behind a narrow trait with a
//! recording fake.
//!
//! The daemon decides; this crate only renders and applies. Every concern has
//! one trait with an idempotent "make it so" entry point, so the daemon can
//! call it again after a crash, a partial failure or a rollback and converge:
//!
//! | concern | trait | real implementation | fake |
//! | --- | --- | --- | --- |
//! | interfaces | [`Links`] | [`NetlinkRouting`] (rtnetlink messages) | [`FakeRouting`] |
//! | addresses, routes, policy rules | [`Routing`] | [`NetlinkRouting`] | [`FakeRouting`] |
//! | nftables ruleset | [`Firewall`] | [`NftFirewall`] (`nft -j -f -`, argv only) | [`FakeFirewall`] |
//! | sysctls | [`Sysctl`] | [`ProcSysctl`] | [`FakeSysctl`] |
//! | host DNS | [`ResolverConfigurator`] | [`ResolvConf`] (file, in place), [`ResolvedLink`] (systemd-resolved); [`detect_dns_mode`] picks | [`FakeResolver`] |
//!
//! [`probe()`] reports whether the host can run a tunnel at all.
//!
//! Network namespaces: netlink sockets belong to the namespace of the thread
//! that opened them, and `nft` children run in the namespace of the thread
//! that spawns them. Everything here is synchronous and does its work on the
//! calling thread, so a thread that entered a namespace (tests, labs) gets
//! effects in that namespace and nowhere else.
#![warn(missing_docs)]

mod firewall;
mod fsutil;
mod probe;
mod resolver;
mod routing;
mod sysctl;
mod validate;

pub use firewall::{
    BaseChain, Chain, ChainKind, CtState, FakeFirewall, Firewall, FirewallCall, FirewallError,
    Hook, L4Proto, Match, NftFirewall, Policy, PortProto, PortRange, Rule as FirewallRule, Ruleset,
    TupleField, TupleValue, Verdict, disjoint_groups, render_ruleset,
};
pub use fsutil::write_atomic;
pub use probe::{Capabilities, Prerequisite, nft_usable, probe};
pub use resolver::mode::Detection as DnsDetection;
pub use resolver::{
    DnsMode, Facts as DnsFacts, FakeResolver, RepairOutcome, ResolvConf, ResolvConfContents,
    ResolvedLink, ResolverCall, ResolverConfigurator, ResolverError, detect as detect_dns_mode,
    is_mount_point, parse_resolv_conf, systemd_resolved_running,
};
pub use routing::{
    DEFAULT_RULE_PRIORITIES, DEFAULT_TABLE, FakeRouting, LinkState, Links, NetlinkRouting,
    RUSTYNET_RT_PROTOCOL, Route, RouteEntry, RouteTarget, RouteType, Routing, RoutingCall,
    RoutingChanges, RoutingConfig, RoutingError, RoutingScope, Rule, RuleEntry,
};
pub use sysctl::{FakeSysctl, ProcSysctl, Sysctl, SysctlError};
pub use validate::{InvalidName, validate_comment, validate_ifname, validate_nft_name};

/// An IP address family, for policy rules and nftables `meta nfproto`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &std::net::IpAddr) -> Self {
        if addr.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// The family of a prefix.
    pub fn of_net(net: &ipnet::IpNet) -> Self {
        match net {
            ipnet::IpNet::V4(_) => Self::V4,
            ipnet::IpNet::V6(_) => Self::V6,
        }
    }
}
