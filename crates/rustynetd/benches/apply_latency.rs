//! Route + firewall apply latency (Phase 10 §12.4: route/policy apply
//! <= 2 s p95; goal <= 20 ms at 100 peers).
//!
//! Real effects in a private network namespace: rustynetd's own
//! `plan::plan` and `apply::apply` over a synthetic signed-map body of N
//! peers, driving `NetlinkRouting` (addresses, routes, policy rules over
//! rtnetlink), `NftFirewall` (one atomic `nft -j -f -` table replacement)
//! and `ProcSysctl`, on a real TUN interface. The tunnel peers and Magic DNS
//! are the only parts not in the measurement (recording fakes): they are
//! not route or firewall work.
//!
//! Each measured generation flips the exit node on or off, so every sample
//! rewrites the routes, the policy rules, the whole nftables table (ACL,
//! LAN grants, kill switch) and a sysctl.
//!
//! `cargo bench -p rustynetd --bench apply_latency` (root) writes
//! `artifacts/bench/apply_latency.json` (or `APPLY_BENCH_OUT`); env
//! `APPLY_BENCH_ITERS` (default 60) and `APPLY_BENCH_PEERS` (default
//! `100,1000`). Without `--bench` (as under `cargo test`) it runs a small
//! smoke pass that checks the effects landed and writes nothing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use ipnet::{IpNet, Ipv4Net};
use rustynet_netos::{NetlinkRouting, NftFirewall, ProcSysctl, RoutingScope};
use rustynet_proto::ipc::DnsInspectDoc;
use rustynet_proto::netmap::NETMAP_VERSION;
use rustynet_proto::{
    DnsConfig, ExitGrant, FilterRule, LanGrant, Netmap, NodeId, PeerInfo, PortRange, Proto,
    SelfInfo, TunnelPublicKey,
};
use rustynet_tunnel::{FakeBackend, InterfaceConfig, TunnelPrivateKey};
use rustynetd::apply::{self, Applied, Effects, Faults, Step};
use rustynetd::backend_manager::BackendManager;
use rustynetd::dns_manager::{DnsError, DnsOps};
use rustynetd::plan::{self, Choices, DnsPlan, LocalContext, TABLE};
use rustynetd::sysctl_manager::SysctlPlan;
use serde_json::json;

const TUN: &str = "rn0";

/// Magic DNS is not route or firewall work: a no-op stands in for it.
struct NoDns;

impl DnsOps for NoDns {
    fn apply(&mut self, _: &DnsPlan) -> Result<(), DnsError> {
        Ok(())
    }
    fn stop(&mut self) -> Result<(), DnsError> {
        Ok(())
    }
    fn inspect(&self, _: Option<&str>) -> Option<DnsInspectDoc> {
        None
    }
    fn system_resolvers(&self) -> Vec<IpAddr> {
        vec![]
    }
    fn repair_stale(&mut self) -> Result<String, DnsError> {
        Ok("clean".into())
    }
}

fn tunnel_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i)
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

/// The map a client sees in a network of `n` peers: every peer may reach it
/// on its own port (one filter rule each, as per-node ACLs compile), the
/// whole network may ping it, every tenth peer routes a LAN /24 granted to
/// it, and peer 1 is an exit it may use.
fn netmap(n: u32) -> anyhow::Result<Netmap> {
    let me = tunnel_ip(0);
    let mut peers = Vec::new();
    let mut filter = Vec::new();
    let mut lan_grants = Vec::new();
    for i in 1..=n {
        let ip = tunnel_ip(i);
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let mut allowed_ips = vec![host(ip)];
        if i % 10 == 0 {
            let lan: IpNet = format!("10.{}.{}.0/24", (i / 256) % 256, i % 256).parse()?;
            allowed_ips.push(lan);
            lan_grants.push(LanGrant {
                via: NodeId(u64::from(i)),
                dst: lan,
                proto: Proto::Tcp,
                ports: vec![PortRange::single(22), PortRange::single(443)],
            });
        }
        peers.push(PeerInfo {
            path_key: None,
            node_id: NodeId(u64::from(i)),
            hostname: format!("peer-{i}"),
            dns_name: format!("peer-{i}.rustynet.internal"),
            node_key: TunnelPublicKey(key),
            tunnel_ip: ip,
            endpoints: vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)),
                41641,
            )],
            home_relay: None,
            allowed_ips,
            online: true,
            exit_node: i == 1,
        });
        let port = u16::try_from(8000 + i % 1000)?;
        filter.push(FilterRule {
            src: vec![host(ip)],
            dst: vec![host(me)],
            proto: Proto::Tcp,
            ports: vec![PortRange::single(22), PortRange::single(port)],
        });
    }
    filter.push(FilterRule {
        src: peers.iter().map(|p| host(p.tunnel_ip)).collect(),
        dst: vec![host(me)],
        proto: Proto::Icmp,
        ports: vec![],
    });
    Ok(Netmap {
        relays: Vec::new(),
        version: NETMAP_VERSION,
        self_node: SelfInfo {
            node_id: NodeId(0),
            hostname: "bench".into(),
            dns_name: "bench.rustynet.internal".into(),
            tunnel_ip: me,
            node_key: TunnelPublicKey([0xaa; 32]),
            user: "bench".into(),
            tags: vec![],
            advertise_exit_node: false,
            advertised_routes: vec![],
            approved_routes: vec![],
        },
        peers,
        packet_filter: filter,
        exit_clients: vec![],
        forward_filter: vec![],
        exit_grants: vec![ExitGrant {
            node_id: NodeId(1),
            hostname: "peer-1".into(),
        }],
        lan_grants,
        dns: DnsConfig {
            suffix: "rustynet.internal".into(),
            records: vec![],
            split: vec![],
        },
    })
}

fn ctx() -> LocalContext {
    LocalContext {
        tun: TUN.into(),
        fwmark: rustynetd::config::DEFAULT_FWMARK,
        dns_mark: rustynetd::config::DEFAULT_DNS_MARK,
        table: rustynet_netos::DEFAULT_TABLE,
        rule_priority: *rustynet_netos::DEFAULT_RULE_PRIORITIES.start(),
        system_resolvers: vec![],
        on_link: vec![],
    }
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    ensure!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn summary(samples: &[f64]) -> serde_json::Value {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
    json!({
        "p50": percentile(&s, 50.0),
        "p95": percentile(&s, 95.0),
        "max": s.last().copied().unwrap_or(f64::NAN),
        "mean": (mean * 1e3).round() / 1e3,
    })
}

/// Measures `iters` generations for `n` peers; must run on a thread that is
/// alone in its network namespace.
fn measure(n: u32, iters: usize) -> anyhow::Result<serde_json::Value> {
    let map = netmap(n)?;
    let mut backend = BackendManager::new(
        Box::new(FakeBackend::new()),
        Box::new(|| Box::new(FakeBackend::new())),
    );
    backend.ensure_started(&InterfaceConfig {
        ifname: TUN.into(),
        private_key: TunnelPrivateKey::from_bytes([7; 32]),
        listen_port: 0,
        mtu: 1280,
        fwmark: None,
    })?;
    let mut fx = Effects {
        backend,
        routing: Box::new(NetlinkRouting::new(RoutingScope::new(TUN)?)?),
        firewall: Box::new(NftFirewall::new(TABLE)?),
        sysctl: SysctlPlan::new(Box::new(ProcSysctl::new()), vec![]),
        dns: Box::new(NoDns),
    };
    let mut applied = Applied::default();
    let mut choices = Choices {
        lan_access: true,
        ..Choices::default()
    };
    let generation = |choices: &Choices, g: u64| plan::plan(&map, g, choices, &ctx());

    let started = Instant::now();
    let first = generation(&choices, 1)?;
    apply::apply(&mut fx, &mut applied, &first, Faults::default())?;
    let cold = ms(started.elapsed());
    let nft_rules: usize = first.firewall.chains.iter().map(|c| c.rules.len()).sum();

    let mut samples = Vec::with_capacity(iters);
    let mut plan_samples = Vec::with_capacity(iters);
    for i in 0..iters {
        choices.exit_node = (i % 2 == 0).then(|| "peer-1".to_owned());
        let t = Instant::now();
        let desired = generation(&choices, 2 + i as u64)?;
        plan_samples.push(ms(t.elapsed()));
        let t = Instant::now();
        let steps = apply::apply(&mut fx, &mut applied, &desired, Faults::default())?;
        samples.push(ms(t.elapsed()));
        ensure!(
            steps.contains(&Step::Routes) && steps.contains(&Step::Firewall),
            "generation {i} did not rewrite routes and firewall: {steps:?}"
        );
    }
    // The effects are real: with the exit on (last even iteration's state
    // or one more flip), the kernel holds the rules, routes and table.
    choices.exit_node = Some("peer-1".into());
    let on = generation(&choices, 10_000)?;
    apply::apply(&mut fx, &mut applied, &on, Faults::default())?;
    let rules = sh(&["ip", "-4", "rule"])?;
    let table = sh(&["nft", "list", "table", "inet", TABLE])?;
    let lan_routes = sh(&["ip", "-4", "route", "show", "dev", TUN])?
        .lines()
        .filter(|l| l.starts_with("10."))
        .count();
    ensure!(
        rules.contains("lookup 5600") && table.contains("policy drop"),
        "exit generation not in the kernel:\n{rules}\n{table}"
    );
    ensure!(
        lan_routes == (n / 10) as usize,
        "{lan_routes} LAN routes, expected {}",
        n / 10
    );
    // Where the time goes: the routing and firewall effects alone, on the
    // same flip (bookkeeping is bypassed here; everything is torn down next).
    choices.exit_node = None;
    let off = generation(&choices, 20_000)?;
    let (mut routing_ms, mut firewall_ms) = (Vec::new(), Vec::new());
    for i in 0..iters.min(20) {
        let d = if i % 2 == 0 { &off } else { &on };
        let t = Instant::now();
        fx.routing.apply(&d.routing)?;
        routing_ms.push(ms(t.elapsed()));
        let t = Instant::now();
        fx.firewall.apply(&d.firewall)?;
        firewall_ms.push(ms(t.elapsed()));
    }
    fx.firewall.remove()?;
    fx.routing.clear()?;
    fx.sysctl.apply(&[])?;
    Ok(json!({
        "peers": n,
        "lan_routes": lan_routes,
        "nft_rules": nft_rules,
        "samples": samples.len(),
        "cold_apply_ms": cold,
        "apply_ms": summary(&samples),
        "plan_ms": summary(&plan_samples),
        "breakdown_ms": {
            "routing_apply": summary(&routing_ms),
            "firewall_apply": summary(&firewall_ms),
        },
        "samples_ms": samples,
    }))
}

fn in_private_netns<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only affects the calling thread.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            bail!(
                "unshare(CLONE_NEWNET): {} (run as root)",
                std::io::Error::last_os_error()
            );
        }
        sh(&["ip", "link", "set", "lo", "up"])?;
        sh(&["ip", "tuntap", "add", "dev", TUN, "mode", "tun"])?;
        sh(&["ip", "link", "set", TUN, "up"])?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}

fn main() -> anyhow::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the apply benchmark needs root (a private network namespace, nft)"
    );
    let (sizes, iters): (Vec<u32>, usize) = if bench {
        let sizes = std::env::var("APPLY_BENCH_PEERS")
            .unwrap_or_else(|_| "100,1000".into())
            .split(',')
            .map(|s| s.trim().parse::<u32>().context("APPLY_BENCH_PEERS"))
            .collect::<anyhow::Result<_>>()?;
        let iters = std::env::var("APPLY_BENCH_ITERS")
            .ok()
            .map(|s| s.parse::<usize>().context("APPLY_BENCH_ITERS"))
            .transpose()?
            .unwrap_or(60);
        (sizes, iters)
    } else {
        (vec![20], 4)
    };
    let mut results = Vec::new();
    for n in sizes {
        let r = in_private_netns(move || measure(n, iters))?;
        println!(
            "apply_latency: {n} peers: p50 {} ms, p95 {} ms (cold {} ms, {} nft rules)",
            r["apply_ms"]["p50"], r["apply_ms"]["p95"], r["cold_apply_ms"], r["nft_rules"]
        );
        results.push(r);
    }
    if !bench {
        println!("apply_latency: smoke run only (pass --bench, e.g. via cargo bench, to measure)");
        return Ok(());
    }
    let kernel = sh(&["uname", "-r"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let nft = sh(&["nft", "--version"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let p95_100 = results
        .iter()
        .find(|r| r["peers"] == 100)
        .and_then(|r| r["apply_ms"]["p95"].as_f64());
    let worst_p95 = results
        .iter()
        .filter_map(|r| r["apply_ms"]["p95"].as_f64())
        .fold(0.0_f64, f64::max);
    let doc = json!({
        "benchmark": "apply_latency",
        "generated_at": sh(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"]).map(|s| s.trim().to_owned()).unwrap_or_default(),
        "host": {"kernel": kernel, "cpus": cpus, "nft": nft},
        "method": "rustynetd plan::plan + apply::apply in a private network namespace on a real TUN: NetlinkRouting (addresses, routes, rules), NftFirewall (one atomic nft -j -f - replacement), ProcSysctl; tunnel peers and Magic DNS are recording fakes. Each sample is one generation flipping the exit node on/off (routes, rules, whole nftables table, a sysctl). Synthetic map: N peers, one ACL rule each, an ICMP rule over all, every 10th peer routing a granted LAN /24, LAN access on.",
        "iterations": iters,
        "results": results,
        "budgets": {
            "phase10_p95_ms": 2000,
            "goal_p95_ms_at_100_peers": 20,
        },
        "p95_ms_at_100_peers": p95_100,
        "worst_p95_ms": worst_p95,
        "within_phase10_budget": worst_p95 <= 2000.0,
        "within_goal_at_100_peers": p95_100.map(|p| p <= 20.0),
    });
    let out = std::env::var_os("APPLY_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../artifacts/bench/apply_latency.json"
            ))
        });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)?;
    println!("apply_latency: wrote {}", out.display());
    Ok(())
}
