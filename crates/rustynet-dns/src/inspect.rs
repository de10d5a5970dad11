//! `rustynet dns inspect`: what a name resolves to and why, in words, built
//! from the same classification the resolver answers with.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use hickory_proto::rr::Name;
use rustynet_proto::DnsRecord;
use rustynet_proto::ipc::{DnsInspectDoc, DnsRecordView};
use rustynet_proto::netmap::{MAGIC_DNS_IP, TUNNEL_NET};

use crate::config::{ResolverConfig, Upstream};
use crate::zone::{Node, Route, Zone, lower_labels};

/// The answer to "what does this name resolve to, and why".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The records the name resolves to locally (empty for other names).
    pub records: Vec<DnsRecordView>,
    /// One line for a human.
    pub text: String,
}

impl ResolverConfig {
    /// Explains how `name` resolves. Accepts a full name (trailing dot or
    /// not, any case), a bare host label (taken as `<label>.<suffix>`), or a
    /// tunnel address (explained as its reverse lookup).
    pub fn explain(&self, name: &str) -> Explanation {
        let trimmed = name.trim();
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return self.explain_address(ip);
        }
        let display = trimmed.trim_end_matches('.').to_ascii_lowercase();
        if display.is_empty() {
            return text_only(
                "an empty name resolves to nothing; give a host label, name or tunnel address"
                    .to_owned(),
            );
        }
        let qualified = if display.contains('.') {
            display
        } else {
            format!("{display}.{}", self.dns.suffix)
        };
        let Ok(parsed) = Name::from_ascii(format!("{qualified}.")) else {
            return text_only(format!("{name:?} is not a valid DNS name"));
        };
        let labels = lower_labels(&parsed);
        match self.route(&labels) {
            Route::Local(zone, node) => self.explain_local(&qualified, zone, node),
            Route::Split { domain, resolvers } => {
                let domain = domain.join(".");
                if resolvers.is_empty() {
                    text_only(format!(
                        "{qualified}: SERVFAIL (split-DNS route {domain} has no resolvers; fail closed)"
                    ))
                } else {
                    text_only(format!(
                        "{qualified} -> split-DNS route {domain} -> {}",
                        join(resolvers)
                    ))
                }
            }
            Route::Upstream => text_only(format!("{qualified} -> {}", self.upstream_path())),
        }
    }

    /// Every record, as `dns inspect` lists them.
    pub fn record_views(&self) -> Vec<DnsRecordView> {
        self.dns.records.iter().map(view).collect()
    }

    /// Where names outside the tailnet go, in words.
    pub fn upstream_description(&self) -> String {
        match &self.upstream {
            Upstream::Exit { addr, name } => format!("exit node {name} ({addr})"),
            Upstream::System(resolvers) if resolvers.is_empty() => {
                "system resolvers [] (none known: SERVFAIL)".to_owned()
            }
            Upstream::System(resolvers) => format!("system resolvers [{}]", join(resolvers)),
            Upstream::None => "none (names outside the tailnet get SERVFAIL)".to_owned(),
        }
    }

    /// The whole `dns inspect` document. `protected` is whether protected
    /// DNS mode is enforced (the daemon knows), `os_config` how the OS was
    /// pointed at the resolver (e.g. `resolv.conf /etc/resolv.conf`).
    pub fn inspect(&self, name: Option<&str>, protected: bool, os_config: &str) -> DnsInspectDoc {
        let (records, explanation) = match name {
            Some(name) => {
                let explanation = self.explain(name);
                (explanation.records, Some(explanation.text))
            }
            None => (self.record_views(), None),
        };
        DnsInspectDoc {
            resolver: IpAddr::V4(MAGIC_DNS_IP),
            suffix: self.dns.suffix.clone(),
            upstream: self.upstream_description(),
            protected,
            os_config: os_config.to_owned(),
            records,
            split: self
                .split
                .iter()
                .map(|(domain, resolvers)| {
                    let resolvers: Vec<String> =
                        resolvers.iter().map(|r| r.ip().to_string()).collect();
                    format!("{} -> {}", domain.join("."), resolvers.join(", "))
                })
                .collect(),
            explanation,
        }
    }

    fn explain_local(&self, name: &str, zone: Zone, node: Node<'_>) -> Explanation {
        let suffix = &self.dns.suffix;
        let zone_name = match zone {
            Zone::Magic => suffix.clone(),
            Zone::Reverse(second) => format!("{second}.100.in-addr.arpa"),
        };
        match node {
            Node::Names(indexes) | Node::Ptr(indexes) => {
                let records: Vec<&DnsRecord> = indexes
                    .iter()
                    .filter_map(|&i| self.dns.records.get(i))
                    .collect();
                let lines: Vec<String> = records
                    .iter()
                    .map(|record| {
                        let target = if matches!(node, Node::Ptr(_)) {
                            format!("{} (PTR)", record.name)
                        } else {
                            record.ip.to_string()
                        };
                        format!("{name} -> {target}: {}", why(record))
                    })
                    .collect();
                Explanation {
                    records: records.into_iter().map(view).collect(),
                    text: lines.join("; "),
                }
            }
            Node::Apex => text_only(format!(
                "{name} is the apex of {zone_name}, answered locally: SOA only, no addresses"
            )),
            Node::Empty => text_only(format!(
                "{name} exists under {zone_name} only as a parent of other names: NODATA"
            )),
            Node::Missing if zone == Zone::Magic => text_only(format!(
                "{name} is unknown under {suffix}: NXDOMAIN (no visible node has that name)"
            )),
            Node::Missing => text_only(format!(
                "{name} is unknown under {zone_name}: NXDOMAIN (no visible node has that tunnel address; never forwarded)"
            )),
        }
    }

    fn explain_address(&self, ip: IpAddr) -> Explanation {
        let reverse = reverse_name(ip);
        match ip {
            IpAddr::V4(v4) if TUNNEL_NET.contains(&v4) => match self.by_tunnel_ip.get(&v4) {
                Some(indexes) => {
                    let records: Vec<&DnsRecord> = indexes
                        .iter()
                        .filter_map(|&i| self.dns.records.get(i))
                        .collect();
                    let text = records
                        .iter()
                        .map(|r| format!("{ip} -> {} ({reverse} PTR): {}", r.name, why(r)))
                        .collect::<Vec<_>>()
                        .join("; ");
                    Explanation {
                        records: records.into_iter().map(view).collect(),
                        text,
                    }
                }
                None => text_only(format!(
                    "{ip}: NXDOMAIN for {reverse} (no visible node has that tunnel address; never forwarded)"
                )),
            },
            _ => {
                let explained = self.explain(&reverse);
                text_only(format!("{ip}: reverse lookup {}", explained.text))
            }
        }
    }

    fn upstream_path(&self) -> String {
        match &self.upstream {
            Upstream::Exit { addr, name } => {
                format!("exit node {name}'s resolver {addr} (through the tunnel)")
            }
            Upstream::System(resolvers) if resolvers.is_empty() => {
                "SERVFAIL (no system resolver is known; fail closed)".to_owned()
            }
            Upstream::System(resolvers) => format!("system resolvers {}", join(resolvers)),
            Upstream::None => {
                "SERVFAIL (no upstream resolver may be used; fail closed, never another resolver)"
                    .to_owned()
            }
        }
    }
}

/// Why a record carries its name: the hostname the node asked for, and the
/// rename when control had to de-duplicate it.
fn why(record: &DnsRecord) -> String {
    let label = record.name.split('.').next().unwrap_or_default();
    let node = record.node_id.0;
    let when = timestamp(record.assigned_at);
    if label == record.requested_hostname {
        format!(
            "node {node} asked for {:?} and got it at enrollment ({when})",
            record.requested_hostname
        )
    } else {
        format!(
            "node {node} asked for {:?}; the name was taken, so control renamed it {label} at enrollment ({when})",
            record.requested_hostname
        )
    }
}

fn view(record: &DnsRecord) -> DnsRecordView {
    DnsRecordView {
        name: record.name.clone(),
        ip: record.ip,
        why: why(record),
    }
}

fn text_only(text: String) -> Explanation {
    Explanation {
        records: Vec::new(),
        text,
    }
}

fn timestamp(unix: i64) -> String {
    // RFC 3339 needs a four-digit year; humantime fails past 9999-12-31.
    const LAST_RFC3339_SECOND: u64 = 253_402_300_799;
    u64::try_from(unix)
        .ok()
        .filter(|secs| *secs <= LAST_RFC3339_SECOND)
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .map_or_else(
            || format!("unix time {unix}"),
            |time| humantime::format_rfc3339_seconds(time).to_string(),
        )
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `d.c.b.a.in-addr.arpa` / nibble `ip6.arpa` name of an address.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            // Least significant nibble first (RFC 3596 2.5).
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|byte| [byte & 0x0f, byte >> 4])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
