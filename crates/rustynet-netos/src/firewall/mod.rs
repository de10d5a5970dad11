//! The nftables firewall: a small typed IR, its JSON rendering, and an
//! applier that replaces Rustynet's whole `table inet <name>` atomically.
//!
//! Why `nft -j -f -` and not a netlink library: `rustables` is GPL-3 and
//! `nftnl` links the GPL libnftnl; the pure-Rust netlink crates are young.
//! The JSON input of `nft` is a documented, stable interface, a whole batch
//! is one kernel transaction, and we pass it on stdin with an argv-only
//! command (no shell). The [`Firewall`] trait keeps this swappable.
//!
//! Kill-switch semantics: a table installed here is owned by the kernel, not
//! by the process. It stays in force when the daemon exits or crashes, which
//! is the point — egress stays blocked until the daemon (or the operator)
//! removes it on purpose.

mod fake;
mod nft;
mod render;
mod tuple;

use std::collections::BTreeSet;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::IpFamily;
use crate::validate::{InvalidName, validate_comment, validate_ifname, validate_nft_name};

pub use fake::{FakeFirewall, FirewallCall};
pub use nft::NftFirewall;
pub use render::render_ruleset;
pub use tuple::{TupleField, TupleValue, disjoint_groups};

/// A whole nftables table in family `inet`, as the daemon wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Table name (normally `rustynet`).
    pub table: String,
    /// Chains, in order. Jump targets must be regular chains of this table.
    pub chains: Vec<Chain>,
}

/// One chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Set for a base chain (attached to a netfilter hook); `None` for a
    /// regular chain reachable only by `jump`.
    pub base: Option<BaseChain>,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// How a base chain hooks into netfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    /// Chain type.
    pub kind: ChainKind,
    /// Netfilter hook.
    pub hook: Hook,
    /// Priority (lower runs earlier; `filter` is 0, `srcnat` 100,
    /// `dstnat` -100).
    pub priority: i32,
    /// What happens to packets no rule decided on.
    pub policy: Policy,
}

/// nftables chain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// `filter`.
    Filter,
    /// `nat` (masquerade lives here).
    Nat,
    /// `route` (re-routes on mark changes; output hook only).
    Route,
}

/// Netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Packets to this host.
    Input,
    /// Packets from this host.
    Output,
    /// Packets routed through this host.
    Forward,
    /// Before routing.
    Prerouting,
    /// After routing.
    Postrouting,
}

/// Base chain default policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Let unmatched packets through.
    Accept,
    /// Drop unmatched packets (kill switch).
    Drop,
}

/// One rule: all matches must hold, then the counter (if any), then the
/// verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Conditions, ANDed.
    pub matches: Vec<Match>,
    /// What to do with a matching packet.
    pub verdict: Verdict,
    /// Count matching packets/bytes (visible in `nft list`, useful for
    /// leak tests and metrics).
    pub counter: bool,
    /// Human-readable note; validated (printable ASCII, no quotes).
    pub comment: Option<String>,
}

impl Rule {
    /// A rule with no counter and no comment.
    pub fn new(matches: Vec<Match>, verdict: Verdict) -> Self {
        Self {
            matches,
            verdict,
            counter: false,
            comment: None,
        }
    }

    /// The same rule with a counter.
    pub fn counted(mut self) -> Self {
        self.counter = true;
        self
    }

    /// The same rule with a comment.
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// Transport protocols for `meta l4proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMP (1).
    Icmp,
    /// ICMPv6 (58).
    Icmpv6,
}

impl L4Proto {
    /// IANA protocol number. Rendered as a number so nothing depends on
    /// `/etc/protocols` being present.
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Icmp => 1,
            L4Proto::Icmpv6 => 58,
        }
    }
}

/// Protocols that have ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port, `>= first`.
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }
}

/// Conntrack states for `ct state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtState {
    /// Part of a known connection.
    Established,
    /// Related to a known connection (ICMP errors, FTP data).
    Related,
    /// First packet of a connection.
    New,
    /// Not trackable.
    Invalid,
}

/// One condition of a rule. `negate` turns `==` into `!=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Input interface name (exact).
    Iifname {
        /// Interface name.
        name: String,
        /// Match every other interface instead.
        negate: bool,
    },
    /// Output interface name (exact).
    Oifname {
        /// Interface name.
        name: String,
        /// Match every other interface instead.
        negate: bool,
    },
    /// Source address in one of the prefixes (all of one family; the family
    /// decides `ip` vs `ip6`, and packets of the other family never match).
    Saddr {
        /// Prefixes; non-empty.
        prefixes: Vec<IpNet>,
        /// Match addresses outside the prefixes instead (still only packets
        /// of that family).
        negate: bool,
    },
    /// Destination address in one of the prefixes (see [`Match::Saddr`]).
    Daddr {
        /// Prefixes; non-empty.
        prefixes: Vec<IpNet>,
        /// Match addresses outside the prefixes instead.
        negate: bool,
    },
    /// Transport protocol in the set.
    L4Proto {
        /// Protocols; non-empty.
        protos: Vec<L4Proto>,
        /// Match every other protocol instead.
        negate: bool,
    },
    /// Destination port in one of the ranges (implies the protocol).
    Dport {
        /// TCP or UDP.
        proto: PortProto,
        /// Ranges; non-empty.
        ports: Vec<PortRange>,
        /// Match other ports instead (still only that protocol).
        negate: bool,
    },
    /// Source port in one of the ranges (implies the protocol).
    Sport {
        /// TCP or UDP.
        proto: PortProto,
        /// Ranges; non-empty.
        ports: Vec<PortRange>,
        /// Match other ports instead (still only that protocol).
        negate: bool,
    },
    /// Packet mark: `mark & mask == value` (mask defaults to all ones).
    Mark {
        /// Value to compare with.
        value: u32,
        /// Bits to compare.
        mask: Option<u32>,
        /// `!=` instead of `==`.
        negate: bool,
    },
    /// Connection-tracking state is one of these.
    CtState {
        /// States; non-empty.
        states: Vec<CtState>,
    },
    /// Layer-3 family of the packet (`meta nfproto`).
    NfProto(IpFamily),
    /// The destination is an address of this host (`fib daddr type local`).
    FibDaddrLocal {
        /// Destination is not local instead.
        negate: bool,
    },
    /// ICMP (v4) type in the set (numbers, e.g. 8 echo-request).
    IcmpType {
        /// Types; non-empty.
        types: Vec<u8>,
    },
    /// ICMPv6 type in the set (e.g. 133–137 for router/neighbour discovery).
    Icmpv6Type {
        /// Types; non-empty.
        types: Vec<u8>,
    },
    /// The packet's tuple of `fields` is one of `elements` (an nftables
    /// concatenation looked up in an anonymous set; see [`disjoint_groups`]).
    Tuple {
        /// The fields, in order: 1 to 4, one address family, at most one port.
        fields: Vec<TupleField>,
        /// Elements, one value per field each; non-empty and pairwise
        /// non-overlapping (the kernel refuses overlaps).
        elements: Vec<Vec<TupleValue>>,
    },
}

/// What a rule does with a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Accept (this chain; other tables/chains at the hook still apply).
    Accept,
    /// Drop silently.
    Drop,
    /// Drop and answer with an ICMP error / TCP reset, so local apps fail
    /// fast instead of timing out.
    Reject,
    /// Continue in a regular chain of this table, then come back.
    Jump(String),
    /// Leave the current regular chain.
    Return,
    /// Source-NAT to the outgoing interface's address (nat postrouting).
    Masquerade,
    /// Set the packet mark and continue with the next rule.
    SetMark(u32),
    /// No verdict: only count / continue.
    Continue,
}

/// Errors from [`Firewall`].
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A name or comment failed validation; nothing was applied.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// The ruleset is structurally invalid; nothing was applied.
    #[error("invalid ruleset: {0}")]
    InvalidRuleset(String),
    /// The ruleset names a different table than this firewall manages.
    #[error("ruleset is for table {got:?} but this firewall manages {expected:?}")]
    TableMismatch {
        /// The managed table.
        expected: String,
        /// The table in the ruleset.
        got: String,
    },
    /// The `nft` binary could not be found or started.
    #[error("cannot run nft ({path}): {source}")]
    Spawn {
        /// The binary path tried.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `nft` ran and refused the batch; the kernel state is unchanged
    /// (the batch is one transaction).
    #[error("nft {action} failed (exit {code:?}): {stderr}")]
    NftFailed {
        /// What we asked for.
        action: &'static str,
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// nft's diagnostic output, trimmed.
        stderr: String,
    },
    /// `nft -j list` printed something that is not JSON.
    #[error("unparseable nft output: {0}")]
    BadOutput(#[source] serde_json::Error),
}

/// Applies and removes Rustynet's nftables table.
pub trait Firewall {
    /// Replaces the whole table with `ruleset` in one transaction: either
    /// the new table is in force afterwards, or (on any error) the previous
    /// one still is. There is no moment without rules.
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError>;

    /// Asks the kernel to validate `ruleset` as a full replacement without
    /// committing it (`nft --check`), for the staging step of a transaction.
    fn check(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError>;

    /// Deletes the table. Succeeds when it is already absent.
    fn remove(&mut self) -> Result<(), FirewallError>;

    /// The live table as nft JSON (`nft -j list table inet <name>`), or
    /// `None` if it does not exist.
    fn current(&mut self) -> Result<Option<serde_json::Value>, FirewallError>;
}

/// Validates names, comments and structure; called before any rendering.
pub(crate) fn validate_ruleset(ruleset: &Ruleset) -> Result<(), FirewallError> {
    validate_nft_name("table name", &ruleset.table)?;
    let invalid = |msg: String| Err(FirewallError::InvalidRuleset(msg));
    let mut names = BTreeSet::new();
    for chain in &ruleset.chains {
        validate_nft_name("chain name", &chain.name)?;
        if !names.insert(chain.name.as_str()) {
            return invalid(format!("duplicate chain {:?}", chain.name));
        }
    }
    let regular: BTreeSet<&str> = ruleset
        .chains
        .iter()
        .filter(|c| c.base.is_none())
        .map(|c| c.name.as_str())
        .collect();
    for chain in &ruleset.chains {
        for (i, rule) in chain.rules.iter().enumerate() {
            let at = format!("chain {:?} rule {i}", chain.name);
            if let Some(comment) = &rule.comment {
                validate_comment(comment)?;
            }
            if let Verdict::Jump(target) = &rule.verdict {
                if !regular.contains(target.as_str()) {
                    return invalid(format!(
                        "{at}: jump target {target:?} is not a regular chain of this table"
                    ));
                }
                if target == &chain.name {
                    return invalid(format!("{at}: chain jumps to itself"));
                }
            }
            let mut port_protos = BTreeSet::new();
            let mut families = BTreeSet::new();
            for m in &rule.matches {
                validate_match(m, &at)?;
                match m {
                    Match::Dport { proto, .. } | Match::Sport { proto, .. } => {
                        port_protos.insert(*proto == PortProto::Tcp);
                    }
                    Match::Saddr { prefixes, .. } | Match::Daddr { prefixes, .. } => {
                        if let Some(p) = prefixes.first() {
                            families.insert(IpFamily::of_net(p));
                        }
                    }
                    Match::NfProto(f) => {
                        families.insert(*f);
                    }
                    Match::Tuple { fields, .. } => {
                        families.extend(tuple::tuple_family(fields));
                        port_protos
                            .extend(tuple::tuple_port_proto(fields).map(|p| p == PortProto::Tcp));
                    }
                    _ => {}
                }
            }
            if port_protos.len() > 1 {
                return invalid(format!(
                    "{at}: tcp and udp port matches in one rule can never both hold"
                ));
            }
            if families.len() > 1 {
                return invalid(format!(
                    "{at}: IPv4 and IPv6 matches in one rule can never both hold"
                ));
            }
        }
    }
    Ok(())
}

fn validate_match(m: &Match, at: &str) -> Result<(), FirewallError> {
    let empty = |what: &str| {
        Err(FirewallError::InvalidRuleset(format!(
            "{at}: empty {what} set"
        )))
    };
    match m {
        Match::Iifname { name, .. } | Match::Oifname { name, .. } => validate_ifname(name)?,
        Match::Saddr { prefixes, .. } | Match::Daddr { prefixes, .. } => {
            let Some(first) = prefixes.first() else {
                return empty("prefix");
            };
            if prefixes
                .iter()
                .any(|p| IpFamily::of_net(p) != IpFamily::of_net(first))
            {
                return Err(FirewallError::InvalidRuleset(format!(
                    "{at}: one address match mixes IPv4 and IPv6 prefixes"
                )));
            }
        }
        Match::L4Proto { protos, .. } if protos.is_empty() => return empty("protocol"),
        Match::Dport { ports, .. } | Match::Sport { ports, .. } => {
            if ports.is_empty() {
                return empty("port");
            }
            if let Some(r) = ports.iter().find(|r| r.first > r.last) {
                return Err(FirewallError::InvalidRuleset(format!(
                    "{at}: port range {}-{} is reversed",
                    r.first, r.last
                )));
            }
        }
        Match::CtState { states } if states.is_empty() => return empty("ct state"),
        Match::IcmpType { types } | Match::Icmpv6Type { types } if types.is_empty() => {
            return empty("icmp type");
        }
        Match::Tuple { fields, elements } => tuple::validate_tuple(fields, elements, at)?,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests;
