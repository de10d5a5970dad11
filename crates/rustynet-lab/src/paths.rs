//! Paths in the lab (issue 9): a cluster with control's embedded relay,
//! fault injection with nftables in the lab router and the NAT routers,
//! 100 pkt/s ping floods and what they show (longest delivery gap, loss),
//! and waiting for a peer's path. Shared by the `netns_relay` suite and the
//! paths benchmark (`rustynet-lab paths-bench`).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use rustynet_proto::ipc::{PathKind, PeerStatus, StatusDoc};

use crate::cluster::wait_for;
use crate::{Cluster, Lab, Netns};

/// Everyone may reach everyone (ICMP and the echo service on tcp/7); bob
/// keeps tcp/22 for himself (the relayed-ACL case).
pub const POLICY: &str = r#"{
  "groups": {"group:staff": ["alice", "bob", "carol", "dave"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:7"], "proto": "tcp"},
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:5001"], "proto": "tcp"},
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:*"], "proto": "icmp"}
  ]
}"#;

/// How long a lab gets to come up.
pub const SETTLE: Duration = Duration::from_secs(45);

/// Starts control with its relay, sets the policy and enrols `names`.
pub fn start<'a>(lab: &'a Lab, names: &[&str]) -> anyhow::Result<Cluster<'a>> {
    let mut c = Cluster::start_with_relay(lab, "10m")?;
    c.set_policy(POLICY)?;
    for name in names {
        c.start_daemon(name)?;
        let key = c.preauth(name, &[])?;
        c.up(name, &key, &[])?;
    }
    for name in names {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        c.wait_status(name, SETTLE, |s| {
            let mut have: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
            have.sort_unstable();
            let mut want = others.clone();
            want.sort_unstable();
            have == want && s.relays.iter().any(|r| r.connected)
        })
        .with_context(|| format!("{name} never saw its peers with a relay connected"))?;
    }
    Ok(c)
}

/// `peer` as `node` sees it now.
pub fn peer(c: &Cluster<'_>, node: &str, peer: &str) -> anyhow::Result<PeerStatus> {
    c.status(node)?
        .peers
        .into_iter()
        .find(|p| p.name == peer)
        .ok_or_else(|| anyhow!("{node} does not list {peer}"))
}

/// Waits until `node`'s path to `peer` is `kind`; returns how long it took.
pub fn wait_path(
    c: &Cluster<'_>,
    node: &str,
    other: &str,
    kind: PathKind,
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < within {
        if let Ok(p) = peer(c, node, other) {
            if p.path == kind {
                return Ok(start.elapsed());
            }
            last = Some(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{node} -> {other} never became {kind:?} within {within:?}; last {last:?}")
}

/// Waits until `node` reaches `other` directly, sending it a second of
/// pings at a time meanwhile (an idle peer stays on the relay: traffic is
/// what makes it punch). Returns how long it took.
pub fn wait_direct(
    lab: &Lab,
    c: &Cluster<'_>,
    node: &str,
    other: &str,
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let to = tunnel_ip(c, other)?;
    let mut last = None;
    while start.elapsed() < within {
        if let Ok(p) = peer(c, node, other) {
            if p.path == PathKind::Direct {
                return Ok(start.elapsed());
            }
            last = Some(p);
        }
        let _ = flood(&lab.node(node).ns, to, 1);
    }
    bail!("{node} -> {other} never became direct within {within:?} under traffic; last {last:?}")
}

/// Moves `node` from its IPv4 address `from` to `to` in the same /24, as a
/// DHCP renumbering would: the old address goes first (deleting a primary
/// address also takes a secondary in its subnet, Linux's default), then the
/// new one and the default route through `.1`.
pub fn move_address(lab: &Lab, node: &str, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<()> {
    let n = lab.node(node);
    let o = to.octets();
    let gw = format!("{}.{}.{}.1", o[0], o[1], o[2]);
    n.ns.ip(&["addr", "del", &format!("{from}/24"), "dev", &n.ifname])?;
    n.ns.ip(&["addr", "add", &format!("{to}/24"), "dev", &n.ifname])?;
    n.ns.ip(&["route", "replace", "default", "via", &gw])?;
    Ok(())
}

/// The tunnel address of `node`.
pub fn tunnel_ip(c: &Cluster<'_>, node: &str) -> anyhow::Result<Ipv4Addr> {
    status_ip(&c.status(node)?)
}

fn status_ip(s: &StatusDoc) -> anyhow::Result<Ipv4Addr> {
    s.self_node
        .as_ref()
        .map(|me| me.tunnel_ip)
        .ok_or_else(|| anyhow!("no tunnel address yet"))
}

/// Where a node's packets come from on the lab router: its NAT router's
/// public address, or its own address.
pub fn public_ip(lab: &Lab, node: &str) -> Ipv4Addr {
    let n = lab.node(node);
    n.nat.as_ref().map_or(n.addr, |nat| nat.public)
}

fn nft(ns: &Netns, script: &str) -> anyhow::Result<()> {
    ns.exec(&["nft", script]).map(|_| ())
}

/// Drops UDP from `from`'s public address to `to`'s in the lab router
/// (and back with `both`). The relay (TCP, and UDP to its binding port on
/// the control addresses) is not affected: only traffic between the two
/// nodes is.
pub fn block_direct(lab: &Lab, from: &str, to: &str, both: bool) -> anyhow::Result<()> {
    let (a, b) = (public_ip(lab, from), public_ip(lab, to));
    nft(
        &lab.router,
        "add table inet labpaths; \
         add chain inet labpaths cut { type filter hook forward priority -10 ; }",
    )?;
    nft(
        &lab.router,
        &format!("add rule inet labpaths cut ip saddr {a} ip daddr {b} meta l4proto udp drop"),
    )?;
    if both {
        nft(
            &lab.router,
            &format!("add rule inet labpaths cut ip saddr {b} ip daddr {a} meta l4proto udp drop"),
        )?;
    }
    Ok(())
}

/// The lab router drops UDP to and from the relay's UDP ports (binding and
/// UDP relay mode), so relayed traffic must use the TLS relay.
pub fn block_udp_relay(lab: &Lab) -> anyhow::Result<()> {
    use crate::cluster::STUN_PORT;
    use crate::topology::{CONTROL_IP, RELAY_IP2};
    // The relay may sit behind the router or on it: cut both ways.
    nft(
        &lab.router,
        "add table inet labpaths; \
         add chain inet labpaths cut { type filter hook forward priority -10 ; }; \
         add chain inet labpaths cutin { type filter hook input priority -10 ; }; \
         add chain inet labpaths cutout { type filter hook output priority -10 ; }",
    )?;
    for chain in ["cut", "cutin", "cutout"] {
        for ip in [CONTROL_IP, RELAY_IP2] {
            nft(
                &lab.router,
                &format!(
                    "add rule inet labpaths {chain} ip daddr {ip} udp dport {STUN_PORT} drop; \
                     add rule inet labpaths {chain} ip saddr {ip} udp sport {STUN_PORT} drop"
                ),
            )?;
        }
    }
    Ok(())
}

/// Removes every fault of [`block_direct`] and [`block_udp_relay`].
pub fn heal(lab: &Lab) -> anyhow::Result<()> {
    let _ = lab.router.exec(&["nft", "delete table inet labpaths"]);
    Ok(())
}

/// `node`'s NAT router forwards no UDP at all from it.
pub fn block_all_udp(lab: &Lab, node: &str) -> anyhow::Result<()> {
    let nat = lab
        .node(node)
        .nat
        .as_ref()
        .context("node has no NAT router")?;
    nft(
        &nat.ns,
        &format!(
            "add rule inet labfw forwarded iifname {} meta l4proto udp drop",
            nat.inside_if
        ),
    )
}

/// `node`'s NAT router forwards only TCP to `ports` from it (a network that
/// allows the web and nothing else).
pub fn only_tcp(lab: &Lab, node: &str, ports: &[u16]) -> anyhow::Result<()> {
    let nat = lab
        .node(node)
        .nat
        .as_ref()
        .context("node has no NAT router")?;
    let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
    nft(
        &nat.ns,
        &format!(
            "add rule inet labfw forwarded iifname {i} tcp dport {{ {} }} accept; \
             add rule inet labfw forwarded iifname {i} drop",
            list.join(", "),
            i = nat.inside_if
        ),
    )
}

/// What a ping flood saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Flood {
    /// Pings sent.
    pub sent: u32,
    /// Pings answered.
    pub received: u32,
    /// Longest run of unanswered pings, in milliseconds (10 ms apart).
    pub longest_gap_ms: u32,
    /// When the first answered ping was sent, in milliseconds after the
    /// first (`None`: nothing answered). The handshake and, on a fresh
    /// path, the relay connection take this long.
    pub first_reply_ms: Option<u32>,
    /// Pings lost after the first answered one (loss on a working path).
    pub lost_after_first: u32,
    /// Where the longest run of unanswered pings began, in milliseconds
    /// after the first ping.
    pub longest_gap_at_ms: u32,
    /// Wall-clock time of the first ping (to match daemon logs).
    pub started_at: String,
    /// Sequence numbers answered.
    #[serde(skip)]
    pub seqs: Vec<u32>,
}

impl Flood {
    /// Answered pings among sequence numbers `from..to`.
    pub fn received_between(&self, from: u32, to: u32) -> usize {
        self.seqs.iter().filter(|s| (from..to).contains(*s)).count()
    }
}

/// Pings `to` from `ns` at 100 packets per second for `secs` seconds.
pub fn flood(ns: &Netns, to: Ipv4Addr, secs: u32) -> Flood {
    let count = secs * 100;
    // RFC 3339 with microseconds, as the daemons' logs.
    let started_at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let out = ns
        .command("ping")
        .args([
            "-n",
            "-i",
            "0.01",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            &to.to_string(),
        ])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut seqs: Vec<u32> = text
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|s| s.parse().ok())
        })
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut seen = vec![false; count as usize + 1];
    for s in &seqs {
        if let Some(x) = seen.get_mut(*s as usize) {
            *x = true;
        }
    }
    let (mut best, mut run, mut best_at) = (0u32, 0u32, 0u32);
    for (seq, &got) in (0u32..).zip(seen.iter()).skip(1) {
        if got {
            run = 0;
        } else {
            run += 1;
            if run > best {
                best = run;
                best_at = seq + 1 - run;
            }
        }
    }
    let received = u32::try_from(seqs.len()).unwrap_or(u32::MAX);
    let first = seqs.first().copied();
    Flood {
        sent: count,
        received,
        longest_gap_ms: best * 10,
        longest_gap_at_ms: best_at.saturating_sub(1) * 10,
        started_at,
        first_reply_ms: first.map(|s| s.saturating_sub(1) * 10),
        lost_after_first: first.map_or(0, |f| {
            (count + 1).saturating_sub(f).saturating_sub(received)
        }),
        seqs,
    }
}

/// Repeats `f` until it succeeds or `within` passes.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_for(within, || f().then_some(())).is_some()
}

/// p95 of `xs` (nearest rank).
pub fn p95(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((0.95 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
