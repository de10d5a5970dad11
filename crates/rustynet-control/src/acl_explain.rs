//! `rustynet-control acl explain SRC DST[:PORT] [--proto P]`: which rule
//! admits a packet, or why none does, from the policy compiled over the live
//! nodes exactly as `serve` compiles it for the maps
//! ([`rustynet_policy::PolicyIndex::explain`]).

use std::net::IpAddr;

use rustynet_policy::{Explanation, NodeFacts, Packet, Policy, PolicyIndex};
use rustynet_proto::netmap::ip_proto;

use crate::admin::AdminError;
use crate::datadir::DataDir;
use crate::netmap_builder::node_facts;
use crate::now_unix;
use crate::store::NodeRecord;

/// A parsed `DST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A node name or an address.
    pub host: String,
    /// The port, if given.
    pub port: Option<u16>,
}

/// Splits `DST[:PORT]`: `node`, `node:22`, `192.168.1.5:22`, `[fd00::1]:22`
/// or a bare IPv6 address.
pub fn parse_target(text: &str) -> Result<Target, AdminError> {
    let bad = || {
        AdminError::Invalid(format!(
            "{text:?}: expected NAME, ADDR, NAME:PORT or ADDR:PORT"
        ))
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| AdminError::Invalid(format!("{text:?}: {p:?} is not a port")))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail {
            "" => None,
            t => Some(port(t.strip_prefix(':').ok_or_else(bad)?)?),
        };
        return Ok(Target {
            host: host.to_owned(),
            port,
        });
    }
    if text.parse::<IpAddr>().is_ok() {
        return Ok(Target {
            host: text.to_owned(),
            port: None,
        });
    }
    match text.rsplit_once(':') {
        Some((host, p)) if !host.is_empty() && !host.contains(':') => Ok(Target {
            host: host.to_owned(),
            port: Some(port(p)?),
        }),
        Some(_) => Err(bad()),
        None if text.is_empty() => Err(bad()),
        None => Ok(Target {
            host: text.to_owned(),
            port: None,
        }),
    }
}

/// `tcp`, `udp`, `icmp` or a protocol number.
pub fn parse_proto(text: &str) -> Result<u8, AdminError> {
    match text {
        "tcp" => Ok(ip_proto::TCP),
        "udp" => Ok(ip_proto::UDP),
        "icmp" => Ok(ip_proto::ICMP),
        n => n.parse().map_err(|_| {
            AdminError::Invalid(format!(
                "--proto {n:?}: expected tcp, udp, icmp or a protocol number"
            ))
        }),
    }
}

/// A node's tunnel address by host label (or Magic DNS label), or the
/// address itself.
fn resolve(nodes: &[NodeRecord], host: &str) -> Result<IpAddr, AdminError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let label = host.split('.').next().unwrap_or(host);
    nodes
        .iter()
        .find(|n| n.hostname == label)
        .map(|n| IpAddr::V4(n.tunnel_ip))
        .ok_or_else(|| AdminError::Invalid(format!("no live node named {host:?}")))
}

/// Explains `src -> dst[:port]` for `proto`, or for TCP, UDP and ICMP when
/// no protocol is given (ICMP carries no port).
pub fn explain(
    data: &DataDir,
    src: &str,
    dst: &str,
    proto: Option<&str>,
) -> Result<Vec<Explanation>, AdminError> {
    let target = parse_target(dst)?;
    let protos = match proto {
        Some(p) => vec![parse_proto(p)?],
        None => vec![ip_proto::TCP, ip_proto::UDP, ip_proto::ICMP],
    };
    let store = data.open_store()?;
    let policy = match store.policy()? {
        Some(json) => Policy::parse(&json)?,
        None => Policy::default(),
    };
    let now = now_unix();
    let live: Vec<NodeRecord> = store
        .nodes()?
        .into_iter()
        .filter(|n| !n.is_expired(now))
        .collect();
    let src_ip = resolve(&live, src)?;
    let dst_ip = resolve(&live, &target.host)?;
    let facts: Vec<NodeFacts> = live.iter().map(node_facts).collect();
    let index = PolicyIndex::new(&policy, &facts);
    Ok(protos
        .into_iter()
        .map(|proto| {
            let port = matches!(proto, ip_proto::TCP | ip_proto::UDP)
                .then_some(target.port)
                .flatten();
            index.explain(Packet {
                src: src_ip,
                dst: dst_ip,
                proto,
                port,
            })
        })
        .collect())
}

/// The human form of one explanation.
pub fn render(ex: &Explanation) -> String {
    let port = ex.port.map(|p| format!(":{p}")).unwrap_or_default();
    let src = ex.src_node.as_deref().unwrap_or("(not a node)");
    let verdict = if ex.allowed { "ALLOW" } else { "DENY" };
    let dst = match (&ex.dst_node, ex.target) {
        (Some(n), _) => format!("node {n}"),
        (None, rustynet_policy::Target::Lan) => "a LAN".to_owned(),
        (None, _) => "nothing in the mesh".to_owned(),
    };
    let mut out = format!("{verdict} {} {src} -> {dst}{port}\n", ex.proto);
    for r in &ex.admitted_by {
        out.push_str(&format!("  admitted by acls[{}]: {}\n", r.index, r.text));
    }
    for (i, r) in ex.routers.iter().enumerate() {
        let role = if i == 0 { "primary" } else { "standby" };
        out.push_str(&format!(
            "  router {} ({role} while online): route {} ({}), forwards: {}\n",
            r.router,
            r.route,
            r.approved_by,
            if r.forwards { "yes" } else { "no" }
        ));
    }
    for r in &ex.reasons {
        out.push_str(&format!("  why not: {r}\n"));
    }
    for n in &ex.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    if !ex.consistent {
        out.push_str("  WARNING: the compiled filter and the rules disagree; the filter's verdict is shown (please report this)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = |s: &str| parse_target(s).unwrap();
        assert_eq!(t("router").port, None);
        assert_eq!(t("router:22").port, Some(22));
        assert_eq!(t("192.168.77.10:443").host, "192.168.77.10");
        assert_eq!(t("[fd00::1]:22").port, Some(22));
        assert_eq!(t("fd00::1").host, "fd00::1");
        assert!(parse_target("router:x").is_err());
        assert!(parse_target("[fd00::1").is_err());
        assert!(parse_target("").is_err());
        assert!(parse_target("a:b:c").is_err());
        assert_eq!(parse_proto("udp").unwrap(), ip_proto::UDP);
        assert_eq!(parse_proto("47").unwrap(), 47);
        assert!(parse_proto("sctpx").is_err());
    }
}
