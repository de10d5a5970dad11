//! The resolver's configuration snapshot: the signed netmap's DNS section,
//! indexed for lookups, plus where non-tailnet names go.
//!
//! A snapshot is immutable; the server swaps whole snapshots when a new
//! netmap arrives, so a query is always answered from one consistent map.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::rr::Name;
use rustynet_proto::netmap::{MAX_RULES, TUNNEL_NET};
use rustynet_proto::{DnsConfig, names};

/// Port every split-DNS resolver listens on (the netmap carries bare addresses).
pub const DNS_PORT: u16 = 53;

/// Where names outside the tailnet go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The selected exit node's resolver, reached through the tunnel, so the
    /// local network never sees the query.
    Exit {
        /// The exit node's resolver (its tunnel address, port 53).
        addr: SocketAddr,
        /// The exit node's name, for `dns inspect`.
        name: String,
    },
    /// The resolvers the OS used before Rustynet took over DNS.
    System(Vec<SocketAddr>),
    /// No resolver may be used: every outside name gets SERVFAIL (fail closed).
    None,
}

/// Why a DNS section cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The suffix, a record name or a split domain is not a valid lowercase DNS name.
    #[error("invalid DNS name {0:?}")]
    Name(String),
    /// A record is not strictly below the tailnet suffix, so no query could reach it.
    #[error("record {name:?} is not under the suffix {suffix:?}")]
    OutsideSuffix {
        /// The record name.
        name: String,
        /// The tailnet suffix.
        suffix: String,
    },
    /// A split-DNS route covers the tailnet suffix, which this resolver answers itself.
    #[error("split-DNS domain {0:?} overlaps the tailnet suffix")]
    SplitOverlapsSuffix(String),
    /// A list exceeds the netmap bound.
    #[error("{what} has {count} entries, limit {limit}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Entries present.
        count: usize,
        /// Limit.
        limit: usize,
    },
}

/// An immutable, indexed resolver configuration. Build one per netmap with
/// [`ResolverConfig::new`]; query it with [`ResolverConfig::decide`] and
/// [`ResolverConfig::explain`].
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub(crate) dns: DnsConfig,
    pub(crate) upstream: Upstream,
    /// Suffix labels, lowercase, most significant last (as on the wire).
    pub(crate) suffix: Vec<String>,
    /// The suffix as a wire name (SOA owner and primary server name).
    pub(crate) apex: Name,
    /// `hostmaster.<suffix>`, the SOA responsible-party name.
    pub(crate) hostmaster: Name,
    /// Full lowercase record name -> indexes into `dns.records`.
    pub(crate) by_name: HashMap<String, Vec<usize>>,
    /// Names strictly between the suffix and a record (empty non-terminals).
    pub(crate) interior: HashSet<String>,
    /// Tunnel address -> indexes into `dns.records` (reverse zone).
    pub(crate) by_tunnel_ip: HashMap<Ipv4Addr, Vec<usize>>,
    /// `[second, third]` octets of every tunnel address with a record, so
    /// `c.b.100.in-addr.arpa` can be told apart from NXDOMAIN in O(1).
    pub(crate) reverse_interior: HashSet<[u8; 2]>,
    /// Split routes as (domain labels, resolvers), longest domain first.
    pub(crate) split: Vec<(Vec<String>, Vec<SocketAddr>)>,
}

impl ResolverConfig {
    /// Indexes the DNS section of a verified netmap and pairs it with the
    /// upstream choice. Refuses a section this resolver could not serve
    /// faithfully instead of serving part of it.
    pub fn new(dns: DnsConfig, upstream: Upstream) -> Result<Self, ConfigError> {
        bounded("dns.records", dns.records.len())?;
        bounded("dns.split", dns.split.len())?;
        check_name(&dns.suffix)?;
        let suffix: Vec<String> = dns.suffix.split('.').map(str::to_owned).collect();
        let apex = Name::from_ascii(format!("{}.", dns.suffix))
            .map_err(|_| ConfigError::Name(dns.suffix.clone()))?;
        let hostmaster = Name::from_ascii(format!("hostmaster.{}.", dns.suffix))
            .map_err(|_| ConfigError::Name(dns.suffix.clone()))?;
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut interior = HashSet::new();
        let mut by_tunnel_ip: HashMap<Ipv4Addr, Vec<usize>> = HashMap::new();
        let mut reverse_interior = HashSet::new();
        for (index, record) in dns.records.iter().enumerate() {
            check_name(&record.name)?;
            let Some(relative) = strip_suffix(&record.name, &dns.suffix) else {
                return Err(ConfigError::OutsideSuffix {
                    name: record.name.clone(),
                    suffix: dns.suffix.clone(),
                });
            };
            // Every proper ancestor below the suffix exists as an empty
            // non-terminal: NODATA there, not NXDOMAIN (RFC 8020).
            let mut rest = relative;
            while let Some((_, parent)) = rest.split_once('.') {
                interior.insert(format!("{parent}.{}", dns.suffix));
                rest = parent;
            }
            by_name.entry(record.name.clone()).or_default().push(index);
            if let IpAddr::V4(v4) = record.ip
                && TUNNEL_NET.contains(&v4)
            {
                by_tunnel_ip.entry(v4).or_default().push(index);
                let [_, second, third, _] = v4.octets();
                reverse_interior.insert([second, third]);
            }
        }
        let mut split = Vec::with_capacity(dns.split.len());
        for route in &dns.split {
            check_name(&route.domain)?;
            if route.domain == dns.suffix || strip_suffix(&route.domain, &dns.suffix).is_some() {
                return Err(ConfigError::SplitOverlapsSuffix(route.domain.clone()));
            }
            let labels = route.domain.split('.').map(str::to_owned).collect();
            let resolvers = route
                .resolvers
                .iter()
                .map(|ip| SocketAddr::new(*ip, DNS_PORT))
                .collect();
            split.push((labels, resolvers));
        }
        // Stable sort: for equal depth the netmap order decides, deterministically.
        split.sort_by_key(|(labels, _): &(Vec<String>, Vec<SocketAddr>)| {
            std::cmp::Reverse(labels.len())
        });
        Ok(Self {
            dns,
            upstream,
            suffix,
            apex,
            hostmaster,
            by_name,
            interior,
            by_tunnel_ip,
            reverse_interior,
            split,
        })
    }

    /// The DNS section this snapshot was built from.
    pub fn dns(&self) -> &DnsConfig {
        &self.dns
    }

    /// Where non-tailnet names go.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The same records with another upstream (exit node selected or cleared),
    /// for the daemon to swap in without re-validating the netmap section.
    pub fn with_upstream(&self, upstream: Upstream) -> Self {
        Self {
            upstream,
            ..self.clone()
        }
    }
}

/// `name` minus `.suffix`, if `name` is strictly below `suffix`.
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    name.strip_suffix(suffix)?
        .strip_suffix('.')
        .filter(|rest| !rest.is_empty())
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    names::validate_dns_name(name).map_err(|_| ConfigError::Name(name.to_owned()))
}

fn bounded(what: &'static str, count: usize) -> Result<(), ConfigError> {
    if count > MAX_RULES {
        return Err(ConfigError::TooMany {
            what,
            count,
            limit: MAX_RULES,
        });
    }
    Ok(())
}
