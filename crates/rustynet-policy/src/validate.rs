//! From the document as written to the validated model. Every check names
//! its location (`acls[2].dst[0]`) so the error leads straight to the typo.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use rustynet_proto::names::{validate_dns_name, validate_label};
use rustynet_proto::netmap::MAGIC_DNS_IP;
use rustynet_proto::{PortRange, Proto, SplitDnsRoute};

use crate::cidr::{never_approvable, parse_prefix};
use crate::doc::{AclDoc, ApproverDoc, DnsDoc, ExitDoc, PolicyDoc};
use crate::error::PolicyError;
use crate::model::{
    Approver, DstEntry, ExitEntry, MAX_RULES, MAX_SPLIT_DNS, MAX_SPLIT_RESOLVERS, NameTable,
    Policy, Rule, Selector,
};

/// Longest user, group, tag or alias name.
const MAX_NAME: usize = 128;

/// The names declared so far, against which selectors are resolved.
struct Names<'a> {
    groups: &'a BTreeMap<String, BTreeSet<String>>,
    tags: &'a BTreeMap<String, Vec<Selector>>,
    hosts: &'a BTreeMap<String, IpNet>,
}

pub(crate) fn validate(doc: PolicyDoc) -> Result<Policy, PolicyError> {
    for (what, len) in [
        ("acls", doc.acls.len()),
        ("exit_nodes", doc.exit_nodes.len()),
        ("route_approvers", doc.route_approvers.len()),
    ] {
        if len > MAX_RULES {
            return Err(PolicyError::invalid(
                what,
                format!("{len} entries, limit is {MAX_RULES}"),
            ));
        }
    }
    let groups = groups(&doc.groups)?;
    let tag_owners = tag_owners(&doc.tag_owners, &groups)?;
    let hosts = hosts(&doc.hosts)?;
    let names = Names {
        groups: &groups,
        tags: &tag_owners,
        hosts: &hosts,
    };
    let rules = doc
        .acls
        .iter()
        .enumerate()
        .map(|(i, acl)| rule(&format!("acls[{i}]"), acl, &names))
        .collect::<Result<_, _>>()?;
    let exits = doc
        .exit_nodes
        .iter()
        .enumerate()
        .map(|(i, e)| exit_entry(&format!("exit_nodes[{i}]"), e, &names))
        .collect::<Result<_, _>>()?;
    let approvers = doc
        .route_approvers
        .iter()
        .enumerate()
        .map(|(i, a)| approver(&format!("route_approvers[{i}]"), a, &names))
        .collect::<Result<_, _>>()?;
    let split_dns = split_dns(&doc.dns)?;
    let mut policy = Policy {
        doc,
        groups,
        tag_owners,
        rules,
        exits,
        approvers,
        split_dns,
        names: NameTable::default(),
    };
    policy.names = name_table(&policy);
    Ok(policy)
}

/// `dns.split`: lowercase domains, each with one to
/// [`MAX_SPLIT_RESOLVERS`] plain addresses. Magic DNS's own address and
/// addresses no resolver can have are refused (a query sent there would
/// loop or vanish). Whether a domain overlaps the tailnet suffix is for
/// control to check: only it knows the suffix.
fn split_dns(doc: &DnsDoc) -> Result<Vec<SplitDnsRoute>, PolicyError> {
    if doc.split.len() > MAX_SPLIT_DNS {
        return Err(PolicyError::invalid(
            "dns.split",
            format!("{} domains, limit is {MAX_SPLIT_DNS}", doc.split.len()),
        ));
    }
    doc.split
        .iter()
        .map(|(domain, resolvers)| {
            let path = format!("dns.split[{domain:?}]");
            validate_dns_name(domain).map_err(|e| {
                PolicyError::invalid(
                    &path,
                    format!("not a lowercase DNS name without a trailing dot: {e}"),
                )
            })?;
            if resolvers.is_empty() || resolvers.len() > MAX_SPLIT_RESOLVERS {
                return Err(PolicyError::invalid(
                    &path,
                    format!("needs 1 to {MAX_SPLIT_RESOLVERS} resolvers"),
                ));
            }
            let resolvers = resolvers
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    let ip: IpAddr = text.parse().map_err(|_| {
                        PolicyError::invalid(
                            format!("{path}[{i}]"),
                            format!("{text:?} is not an IP address (no port: DNS uses 53)"),
                        )
                    })?;
                    let unusable = ip.is_unspecified()
                        || ip.is_multicast()
                        || ip.is_loopback()
                        || ip == IpAddr::V4(MAGIC_DNS_IP);
                    if unusable {
                        return Err(PolicyError::invalid(
                            format!("{path}[{i}]"),
                            format!("{ip} cannot be a split-DNS resolver"),
                        ));
                    }
                    Ok(ip)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(SplitDnsRoute {
                domain: domain.clone(),
                resolvers,
            })
        })
        .collect()
}

/// Numbers every user, host label and tag the policy names.
fn name_table(policy: &Policy) -> NameTable {
    let mut users: HashMap<String, usize> = HashMap::new();
    let mut hosts: HashMap<String, usize> = HashMap::new();
    let number = |map: &mut HashMap<String, usize>, name: &str| {
        let next = map.len();
        *map.entry(name.to_owned()).or_insert(next)
    };
    let selectors = policy
        .rules
        .iter()
        .flat_map(|r| r.src.iter().chain(r.dst.iter().map(|e| &e.selector)))
        .chain(
            policy
                .exits
                .iter()
                .flat_map(|e| e.users.iter().chain(&e.nodes)),
        )
        .chain(policy.approvers.iter().flat_map(|a| &a.nodes))
        .chain(policy.tag_owners.values().flatten());
    for sel in selectors {
        match sel {
            Selector::User(u) => {
                number(&mut users, u);
            }
            Selector::Node(h) => {
                number(&mut hosts, h);
            }
            _ => {}
        }
    }
    let groups: HashMap<String, Vec<usize>> = policy
        .groups
        .iter()
        .map(|(g, members)| {
            let nums = members.iter().map(|m| number(&mut users, m)).collect();
            (g.clone(), nums)
        })
        .collect();
    let tags = policy
        .tag_owners
        .iter()
        .enumerate()
        .map(|(t, (tag, owners))| {
            let mut owned: Vec<usize> = owners
                .iter()
                .flat_map(|o| match o {
                    Selector::User(u) => users.get(u).copied().into_iter().collect(),
                    Selector::Group(g) => groups.get(g).cloned().unwrap_or_default(),
                    _ => Vec::new(),
                })
                .collect();
            owned.sort_unstable();
            owned.dedup();
            (tag.clone(), (t, owned))
        })
        .collect();
    NameTable {
        users,
        hosts,
        tags,
        groups,
    }
}

fn groups(
    doc: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, BTreeSet<String>>, PolicyError> {
    let mut out = BTreeMap::new();
    for (name, members) in doc {
        let path = format!("groups[{name:?}]");
        prefixed_name(name, "group:").map_err(|r| PolicyError::invalid(&path, r))?;
        let mut set = BTreeSet::new();
        for (j, member) in members.iter().enumerate() {
            let member_path = format!("{path}[{j}]");
            if member.starts_with("group:") {
                return Err(PolicyError::invalid(
                    member_path,
                    format!("groups contain users only; nested group {member:?} is not supported"),
                ));
            }
            user_name(member).map_err(|r| PolicyError::invalid(member_path, r))?;
            set.insert(member.clone());
        }
        out.insert(name.clone(), set);
    }
    Ok(out)
}

fn tag_owners(
    doc: &BTreeMap<String, Vec<String>>,
    groups: &BTreeMap<String, BTreeSet<String>>,
) -> Result<BTreeMap<String, Vec<Selector>>, PolicyError> {
    let mut out = BTreeMap::new();
    for (tag, owners) in doc {
        let path = format!("tag_owners[{tag:?}]");
        prefixed_name(tag, "tag:").map_err(|r| PolicyError::invalid(&path, r))?;
        let mut list = Vec::with_capacity(owners.len());
        for (j, owner) in owners.iter().enumerate() {
            let owner_path = format!("{path}[{j}]");
            let selector = if owner.starts_with("group:") {
                if !groups.contains_key(owner) {
                    return Err(PolicyError::invalid(
                        owner_path,
                        format!("unknown group {owner:?}"),
                    ));
                }
                Selector::Group(owner.clone())
            } else {
                user_name(owner).map_err(|r| {
                    PolicyError::invalid(
                        &owner_path,
                        format!("{r} (tag owners are users or groups)"),
                    )
                })?;
                Selector::User(owner.clone())
            };
            list.push(selector);
        }
        out.insert(tag.clone(), list);
    }
    Ok(out)
}

fn hosts(doc: &BTreeMap<String, String>) -> Result<BTreeMap<String, IpNet>, PolicyError> {
    let mut out = BTreeMap::new();
    for (alias, value) in doc {
        let path = format!("hosts[{alias:?}]");
        if alias.parse::<IpAddrOrNet>().is_ok() {
            return Err(PolicyError::invalid(
                path,
                "an alias may not look like an IP address",
            ));
        }
        plain_name(alias, false)
            .map_err(|r| PolicyError::invalid(&path, format!("invalid alias: {r}")))?;
        let net = parse_prefix(value).map_err(|r| PolicyError::invalid(&path, r))?;
        out.insert(alias.clone(), net);
    }
    Ok(out)
}

/// Anything `parse_prefix` would take, used to keep aliases unambiguous.
struct IpAddrOrNet;

impl std::str::FromStr for IpAddrOrNet {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.parse::<std::net::IpAddr>().is_ok() || s.parse::<IpNet>().is_ok() {
            Ok(IpAddrOrNet)
        } else {
            Err(())
        }
    }
}

fn rule(path: &str, acl: &AclDoc, names: &Names<'_>) -> Result<Rule, PolicyError> {
    if acl.action != "accept" {
        return Err(PolicyError::invalid(
            format!("{path}.action"),
            format!("expected \"accept\", found {:?}", acl.action),
        ));
    }
    let proto = match acl.proto.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "any" => Proto::Any,
        _ => {
            return Err(PolicyError::invalid(
                format!("{path}.proto"),
                "expected one of tcp, udp, icmp, any",
            ));
        }
    };
    non_empty(&format!("{path}.src"), &acl.src)?;
    non_empty(&format!("{path}.dst"), &acl.dst)?;
    let src = acl
        .src
        .iter()
        .enumerate()
        .map(|(j, s)| {
            selector(s, names).map_err(|r| PolicyError::invalid(format!("{path}.src[{j}]"), r))
        })
        .collect::<Result<_, _>>()?;
    let mut dst = Vec::with_capacity(acl.dst.len());
    for (j, raw) in acl.dst.iter().enumerate() {
        let entry_path = format!("{path}.dst[{j}]");
        let entry = dst_entry(raw, names).map_err(|r| PolicyError::invalid(&entry_path, r))?;
        if proto == Proto::Icmp && !entry.ports.is_empty() {
            return Err(PolicyError::invalid(
                entry_path,
                "ports do not apply to icmp; use \"*\"",
            ));
        }
        dst.push(entry);
    }
    Ok(Rule { src, dst, proto })
}

fn exit_entry(path: &str, doc: &ExitDoc, names: &Names<'_>) -> Result<ExitEntry, PolicyError> {
    non_empty(&format!("{path}.users"), &doc.users)?;
    non_empty(&format!("{path}.nodes"), &doc.nodes)?;
    let mut users = Vec::with_capacity(doc.users.len());
    for (j, raw) in doc.users.iter().enumerate() {
        let at = format!("{path}.users[{j}]");
        let sel = selector(raw, names).map_err(|r| PolicyError::invalid(&at, r))?;
        if !matches!(sel, Selector::All | Selector::User(_) | Selector::Group(_)) {
            return Err(PolicyError::invalid(
                at,
                format!("{raw:?} is not allowed here: exit clients are users, groups or \"*\""),
            ));
        }
        users.push(sel);
    }
    let nodes = node_selectors(&format!("{path}.nodes"), &doc.nodes, names)?;
    Ok(ExitEntry { users, nodes })
}

fn approver(path: &str, doc: &ApproverDoc, names: &Names<'_>) -> Result<Approver, PolicyError> {
    non_empty(&format!("{path}.routes"), &doc.routes)?;
    non_empty(&format!("{path}.nodes"), &doc.nodes)?;
    let mut routes = Vec::with_capacity(doc.routes.len());
    for (j, raw) in doc.routes.iter().enumerate() {
        let at = format!("{path}.routes[{j}]");
        let net = parse_prefix(raw).map_err(|r| PolicyError::invalid(&at, r))?;
        if let Some(why) = never_approvable(net) {
            return Err(PolicyError::invalid(
                at,
                format!("{net} lies inside {why} and can never be approved"),
            ));
        }
        routes.push(net);
    }
    let nodes = node_selectors(&format!("{path}.nodes"), &doc.nodes, names)?;
    Ok(Approver { routes, nodes })
}

/// Selectors that name nodes by identity (tags, hosts, users, groups, `*`);
/// addresses are refused because a role must not follow an IP around.
fn node_selectors(
    path: &str,
    raw: &[String],
    names: &Names<'_>,
) -> Result<Vec<Selector>, PolicyError> {
    raw.iter()
        .enumerate()
        .map(|(j, s)| {
            let at = format!("{path}[{j}]");
            let sel = selector(s, names).map_err(|r| PolicyError::invalid(&at, r))?;
            if matches!(sel, Selector::Prefix(_)) {
                return Err(PolicyError::invalid(
                    at,
                    format!(
                        "{s:?} is not allowed here: name nodes by tag:NAME, node:HOST, user, group or \"*\""
                    ),
                ));
            }
            Ok(sel)
        })
        .collect()
}

fn non_empty(path: &str, list: &[String]) -> Result<(), PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::invalid(path, "must not be empty"));
    }
    Ok(())
}

/// Resolves one selector. A bare name that is a host alias means the alias
/// (aliases shadow users of the same name; such a user is still reachable
/// through a group).
fn selector(raw: &str, names: &Names<'_>) -> Result<Selector, String> {
    if raw == "*" {
        return Ok(Selector::All);
    }
    if raw.starts_with("group:") {
        prefixed_name(raw, "group:")?;
        if !names.groups.contains_key(raw) {
            return Err(format!("unknown group {raw:?}"));
        }
        return Ok(Selector::Group(raw.to_owned()));
    }
    if raw.starts_with("tag:") {
        prefixed_name(raw, "tag:")?;
        if !names.tags.contains_key(raw) {
            return Err(format!("unknown tag {raw:?} (declare it in tag_owners)"));
        }
        return Ok(Selector::Tag(raw.to_owned()));
    }
    if let Some(host) = raw.strip_prefix("node:") {
        validate_label(host, rustynet_proto::names::MAX_LABEL)
            .map_err(|e| format!("invalid host label in {raw:?}: {e}"))?;
        return Ok(Selector::Node(host.to_owned()));
    }
    if let Some(net) = names.hosts.get(raw) {
        return Ok(Selector::Prefix(*net));
    }
    if raw.contains('/') || raw.parse::<std::net::IpAddr>().is_ok() {
        return parse_prefix(raw).map(Selector::Prefix);
    }
    if user_name(raw).is_ok() {
        return Ok(Selector::User(raw.to_owned()));
    }
    Err(format!(
        "{raw:?} is not a selector (expected \"*\", a user, group:NAME, tag:NAME, node:HOST, \
         a host alias, an IP address or a CIDR)"
    ))
}

/// Parses `SELECTOR:PORTS`, split at the last ':'; IPv6 goes in brackets.
fn dst_entry(raw: &str, names: &Names<'_>) -> Result<DstEntry, String> {
    let (selector_text, ports_text, bracketed) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((inside, ports)) = rest.split_once("]:") else {
            return Err(format!("{raw:?} must look like [IPV6]:PORTS"));
        };
        (inside, ports, true)
    } else {
        let Some((sel, ports)) = raw.rsplit_once(':') else {
            return Err(format!(
                "{raw:?} has no port list; write SELECTOR:PORTS, e.g. \"{raw}:*\""
            ));
        };
        (sel, ports, false)
    };
    if !bracketed {
        if matches!(selector_text, "group" | "tag" | "node") {
            return Err(format!(
                "{raw:?} has no port list; write SELECTOR:PORTS, e.g. \"{raw}:*\""
            ));
        }
        let named = ["group:", "tag:", "node:"]
            .iter()
            .any(|p| selector_text.starts_with(p));
        if selector_text.contains(':') && !named {
            return Err(format!(
                "{raw:?}: IPv6 destinations must be bracketed, e.g. \"[fd00::/64]:22\""
            ));
        }
    }
    let selector = if bracketed {
        match parse_prefix(selector_text) {
            Ok(net @ IpNet::V6(_)) => Selector::Prefix(net),
            _ => {
                return Err(format!(
                    "{raw:?}: brackets hold an IPv6 address or CIDR only"
                ));
            }
        }
    } else {
        selector(selector_text, names)?
    };
    let ports = ports(ports_text)?;
    Ok(DstEntry { selector, ports })
}

/// `*`, or a comma list of `N` / `N-M` with 1 <= N <= M <= 65535. Returns
/// sorted, merged ranges; empty means every port.
pub(crate) fn ports(text: &str) -> Result<Vec<PortRange>, String> {
    if text == "*" {
        return Ok(Vec::new());
    }
    let mut ranges = Vec::new();
    for piece in text.split(',') {
        let (first, last) = match piece.split_once('-') {
            Some((a, b)) => (port(a, piece)?, port(b, piece)?),
            None => {
                let p = port(piece, piece)?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!(
                "invalid port range {piece:?}: first port is larger than last"
            ));
        }
        ranges.push(PortRange { first, last });
    }
    ranges.sort_unstable();
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

fn port(text: &str, piece: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!(
            "invalid port {piece:?}: expected \"*\" or ports 1-65535 as N or N-M, comma separated"
        )),
    }
}

/// `PREFIX` followed by a plain name.
fn prefixed_name(full: &str, prefix: &str) -> Result<(), String> {
    let Some(name) = full.strip_prefix(prefix) else {
        return Err(format!("{full:?} must start with {prefix:?}"));
    };
    plain_name(name, false).map_err(|r| format!("invalid name {full:?}: {r}"))
}

fn user_name(name: &str) -> Result<(), String> {
    plain_name(name, true).map_err(|r| format!("invalid user name {name:?}: {r}"))
}

/// Lowercase letters, digits, `-`, `_`, `.` (and `@` for users), 1..=128 long.
fn plain_name(name: &str, allow_at: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".to_owned());
    }
    if name.len() > MAX_NAME {
        return Err(format!("longer than {MAX_NAME} characters"));
    }
    let ok = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '_' | '.')
            || (allow_at && c == '@')
    };
    if let Some(c) = name.chars().find(|c| !ok(*c)) {
        let allowed = if allow_at {
            "lowercase letters, digits and - _ . @"
        } else {
            "lowercase letters, digits and - _ ."
        };
        return Err(format!("character {c:?} is not allowed (use {allowed})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn port_lists() {
        assert_eq!(ports("*"), Ok(vec![]));
        assert_eq!(ports("22"), Ok(vec![r(22, 22)]));
        assert_eq!(ports("443,22"), Ok(vec![r(22, 22), r(443, 443)]));
        assert_eq!(ports("1-1024,1000-2000,22"), Ok(vec![r(1, 2000)]));
        assert_eq!(
            ports("22,23,24"),
            Ok(vec![r(22, 24)]),
            "adjacent ranges merge"
        );
        assert_eq!(ports("22,22"), Ok(vec![r(22, 22)]));
        assert_eq!(ports("65535,1"), Ok(vec![r(1, 1), r(65535, 65535)]));
        assert_eq!(ports("1-65535"), Ok(vec![r(1, 65535)]));
        for bad in [
            "0", "65536", "5-4", "", ",", "22,", "a", "+1", "1-", "-1", "1-2-3", " 22", "*,22",
        ] {
            assert!(ports(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(plain_name("a-b_c.d", false).is_ok());
        assert!(plain_name("a@b", false).is_err());
        assert!(plain_name("a@b", true).is_ok());
        assert!(plain_name("", true).is_err());
        assert!(plain_name(&"a".repeat(129), true).is_err());
        assert!(plain_name(&"a".repeat(128), true).is_ok());
    }
}
