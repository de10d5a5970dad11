//! `rustynet-lab paths-bench`: the timing and throughput goals of issue 9,
//! measured in the lab on real daemons, NAT routers and control's relay, and
//! written as JSON (every figure from this run).
//!
//! - fallback: longest delivery gap at 100 pkt/s when the direct path is
//!   blackholed both ways, and failback time and loss after healing, over
//!   `trials` trials;
//! - one-way blackhole: the gap and the path changes over 120 s;
//! - roaming: how long traffic stalls when a node's address changes, and
//!   how long until its peer is direct with the new address;
//! - destination-dependent NAT on both sides: the first packet's round trip
//!   through the relay against the relay's own round trip;
//! - one TCP stream (iperf3) through the direct path and through the TLS
//!   relay, in the same run;
//! - netcheck: its time and its NAT classification.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use rustynet_proto::ipc::{NetcheckDoc, PathKind};
use serde_json::{Value, json};

use crate::paths::{
    Flood, block_direct, block_udp_relay, flood, heal, move_address, p95, peer, public_ip, start,
    tunnel_ip, wait_direct, wait_path,
};
use crate::topology::NatKind::{DestinationDependent, EndpointIndependent};
use crate::{Cluster, Lab, NodeSpec};

/// Which goals a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Every goal.
    All,
    /// Only one TCP stream direct against relayed (quick, for tuning).
    Throughput,
    /// Only the first packet between two nodes behind destination-dependent
    /// NAT (quick, for tuning).
    HardNat,
}

/// Runs `part` and writes `out`.
pub fn run(out: &Path, trials: usize, part: Part) -> anyhow::Result<()> {
    ensure!(trials > 0, "--trials must be at least 1");
    crate::require_lab();
    let started = Instant::now();
    let mut doc = json!({
        "benchmark": "paths",
        "method": "real control (embedded TLS relay), real daemons (release build), NAT routers made \
                   of nftables masquerade / masquerade random, faults as nftables drops in the lab \
                   router; 100 pkt/s ICMP floods; iperf3 TCP, one stream, 8 s, five runs each of \
                   direct, UDP relay and TLS relay, interleaved (medians compared)",
        "trials": trials,
    });
    match part {
        Part::All => {
            easy_nat(&mut doc, trials).context("easy-NAT lab")?;
            hard_nat(&mut doc).context("hard-NAT lab")?;
            roaming(&mut doc, trials.min(5)).context("roaming lab")?;
        }
        Part::Throughput => throughput_lab(&mut doc, trials).context("throughput lab")?,
        Part::HardNat => hard_nat(&mut doc).context("hard-NAT lab")?,
    }
    doc["wall_secs"] = json!(started.elapsed().as_secs());
    doc["host"] = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// One iperf3 run's figures.
struct Iperf {
    mbps: f64,
    /// The sender's TCP retransmissions (loss inside the tunnel's path).
    retransmits: u64,
    /// The sender's mean smoothed RTT, microseconds.
    mean_rtt_us: u64,
}

/// One iperf3 TCP stream from `from` to `to`'s tunnel address.
fn iperf(c: &Cluster<'_>, lab: &Lab, from: &str, to: &str) -> anyhow::Result<Iperf> {
    let ip = tunnel_ip(c, to)?.to_string();
    let mut server = lab
        .node(to)
        .ns
        .command("iperf3")
        // 5001: a port the lab policy opens (iperf3's 5201 is not).
        .args(["-s", "-1", "-B", &ip, "-p", "5001"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let out = lab
        .node(from)
        .ns
        .command("iperf3")
        .args(["-c", &ip, "-p", "5001", "-t", "8", "-J"])
        .output();
    let _ = server.kill();
    let _ = server.wait();
    let out = out?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 reported no throughput: {}", v["error"]))?;
    let sender = &v["end"]["streams"][0]["sender"];
    Ok(Iperf {
        mbps: (bps / 1e6 * 10.0).round() / 10.0,
        retransmits: sender["retransmits"].as_u64().unwrap_or(0),
        mean_rtt_us: sender["mean_rtt"].as_u64().unwrap_or(0),
    })
}

/// One TCP stream direct, through the UDP relay mode and through the TLS
/// relay (UDP to the relay dropped), `reps` times in alternation so all
/// see the same machine load; the ratios are of the medians.
fn throughput(doc: &mut Value, lab: &Lab, c: &Cluster<'_>, reps: usize) -> anyhow::Result<()> {
    let (mut direct, mut udp, mut tls) = (Vec::new(), Vec::new(), Vec::new());
    let (mut udp_mode, mut tls_mode) = (Vec::new(), Vec::new());
    let relay_udp = |c: &Cluster<'_>| -> anyhow::Result<bool> {
        Ok(c.status("alice")?.relays.iter().any(|r| r.udp))
    };
    for _ in 0..reps {
        wait_direct(lab, c, "alice", "bob", Duration::from_secs(20))?;
        direct.push(iperf(c, lab, "alice", "bob")?);
        block_direct(lab, "alice", "bob", true)?;
        wait_path(c, "alice", "bob", PathKind::Relay, Duration::from_secs(10))?;
        wait_relay_only(c)?;
        wait_for_relay_udp(c, true)?;
        udp.push(iperf(c, lab, "alice", "bob")?);
        udp_mode.push(relay_udp(c)?);
        block_udp_relay(lab)?;
        wait_for_relay_udp(c, false)?;
        tls.push(iperf(c, lab, "alice", "bob")?);
        tls_mode.push(!relay_udp(c)?);
        heal(lab)?;
    }
    let mbps = |runs: &[Iperf]| runs.iter().map(|r| r.mbps).collect::<Vec<_>>();
    let details = |runs: &[Iperf]| {
        runs.iter()
            .map(|r| json!({"mbps": r.mbps, "retransmits": r.retransmits, "mean_rtt_us": r.mean_rtt_us}))
            .collect::<Vec<_>>()
    };
    let (d, u, t) = (
        median(&mbps(&direct)),
        median(&mbps(&udp)),
        median(&mbps(&tls)),
    );
    let ratio = |x: f64| (x / d * 1000.0).round() / 1000.0;
    doc["throughput_mbps"] = json!({
        "direct_runs": details(&direct),
        "udp_relay_runs": details(&udp),
        "tls_relay_runs": details(&tls),
        "udp_mode_seen": udp_mode,
        "tls_only_seen": tls_mode,
        "relay_rate_bytes_per_sec": std::env::var("RUSTYNET_LAB_RELAY_RATE")
            .unwrap_or_else(|_| "default".into()),
        "direct": d,
        "udp_relay": u,
        "tls_relay": t,
        "udp_relay_vs_direct": ratio(u),
        "tls_relay_vs_direct": ratio(t),
        "goal_udp_ratio": 0.8,
        "goal_tls_ratio": 0.5,
    });
    doc["udp_relay_vs_direct"] = json!(ratio(u));
    doc["tls_relay_vs_direct"] = json!(ratio(t));
    Ok(())
}

/// Waits until Alice sends to Bob through the relay alone: right after the
/// direct path is cut the route is `Both` for a few seconds (every packet
/// also tried on the old address, reported as the relay path with that
/// address as endpoint); a run started then would measure that double
/// sending, not the relay. The TLS runs start long after it ended.
fn wait_relay_only(c: &Cluster<'_>) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let p = peer(c, "alice", "bob")?;
        if p.path == PathKind::Relay && p.endpoint.is_none() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("alice -> bob never went through the relay alone")
}

/// Waits until Alice's relay reports UDP relay mode `on` (hellos echoed) or
/// off (echoes stopped: up to the client's echo timeout).
fn wait_for_relay_udp(c: &Cluster<'_>, on: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        if c.status("alice")?.relays.iter().any(|r| r.udp) == on {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("relay UDP mode never became {on}")
}

/// Alice and Bob behind easy NAT, only the throughput goal.
fn throughput_lab(doc: &mut Value, reps: usize) -> anyhow::Result<()> {
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::behind_nat("bob", EndpointIndependent),
    ])?;
    let c = start(&lab, &["alice", "bob"])?;
    throughput(doc, &lab, &c, reps)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn netcheck(c: &Cluster<'_>, node: &str) -> anyhow::Result<(NetcheckDoc, Duration)> {
    let t = Instant::now();
    let text = c.rustynet(node, &["--json", "netcheck"])?;
    Ok((serde_json::from_str(&text)?, t.elapsed()))
}

fn easy_nat(doc: &mut Value, trials: usize) -> anyhow::Result<()> {
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::behind_nat("bob", EndpointIndependent),
        NodeSpec::new("carol"),
    ])?;
    let c = start(&lab, &["alice", "bob", "carol"])?;
    let bob = tunnel_ip(&c, "bob")?;
    let alice_ns = &lab.node("alice").ns;
    let _ = flood(alice_ns, bob, 1);
    let punched = wait_path(
        &c,
        "alice",
        "bob",
        PathKind::Direct,
        Duration::from_secs(20),
    )?;
    doc["punch_ms"] = json!(ms(punched));

    let mut nc = Vec::new();
    for _ in 0..10 {
        let (n, took) = netcheck(&c, "alice")?;
        nc.push((n, took));
    }
    let times: Vec<f64> = nc.iter().map(|(_, t)| ms(*t)).collect();
    let (carol, _) = netcheck(&c, "carol")?;
    doc["netcheck"] = json!({
        "cli_ms": times,
        "cli_ms_p95": p95(&times),
        "alice_nat": nc[0].0.nat,
        "carol_nat": carol.nat,
        "goal_ms": 2000,
    });

    throughput(doc, &lab, &c, 5)?;

    let (mut gaps, mut backs, mut losses) = (vec![], vec![], vec![]);
    for _ in 0..trials {
        wait_direct(&lab, &c, "alice", "bob", Duration::from_secs(20))?;
        let (f, back) = std::thread::scope(|s| {
            let f = s.spawn(|| flood(alice_ns, bob, 8));
            std::thread::sleep(Duration::from_secs(2));
            let cut = block_direct(&lab, "alice", "bob", true);
            std::thread::sleep(Duration::from_secs(3));
            let _ = heal(&lab);
            let back = wait_path(&c, "alice", "bob", PathKind::Direct, Duration::from_secs(5))
                .ok()
                .map(ms);
            (f.join(), cut.map(|()| back))
        });
        let f: Flood = f.map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
        gaps.push(f64::from(f.longest_gap_ms));
        backs.push(back?.unwrap_or(f64::INFINITY));
        losses.push(1.0 - f.received_between(600, 800) as f64 / 200.0);
    }
    doc["fallback_both_ways"] = json!({
        "longest_gap_ms": gaps,
        "longest_gap_ms_p95": p95(&gaps),
        "goal_gap_ms": 1500,
        "failback_ms": backs,
        "failback_ms_p95": p95(&backs),
        "goal_failback_ms": 3000,
        "loss_after_failback": losses,
        "loss_after_failback_max": losses.iter().copied().fold(0.0, f64::max),
        "goal_loss": 0.001,
    });

    wait_direct(&lab, &c, "alice", "bob", Duration::from_secs(20))?;
    let before = peer(&c, "alice", "bob")?.path_changes;
    let f = std::thread::scope(|s| {
        let f = s.spawn(|| flood(alice_ns, bob, 120));
        std::thread::sleep(Duration::from_secs(2));
        let _ = block_direct(&lab, "alice", "bob", false);
        f.join()
    })
    .map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
    let changes = peer(&c, "alice", "bob")?.path_changes - before;
    heal(&lab)?;
    doc["one_way_blackhole_120s"] = json!({
        "longest_gap_ms": f.longest_gap_ms,
        "path_changes": changes,
        "received": f.received,
        "sent": f.sent,
        "goal": "gap <= 1500 ms, <= 1 path change per 120 s",
    });
    Ok(())
}

fn hard_nat(doc: &mut Value) -> anyhow::Result<()> {
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", DestinationDependent),
        NodeSpec::behind_nat("bob", DestinationDependent),
    ])?;
    let c = start(&lab, &["alice", "bob"])?;
    let bob = tunnel_ip(&c, "bob")?;
    // The first packet ever between the two: its round trip includes the
    // tunnel handshake, both through the relay.
    let out = lab
        .node("alice")
        .ns
        .stdout(&["ping", "-n", "-c", "1", "-W", "5", &bob.to_string()])
        .unwrap_or_default();
    let first_ms: Option<f64> = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("time="))
        .and_then(|v| v.parse().ok());
    let s = c.status("alice")?;
    let relay_rtt_ms = s
        .relays
        .iter()
        .find(|r| r.home)
        .and_then(|r| r.rtt_us)
        .map(|us| us as f64 / 1000.0);
    let (n, _) = netcheck(&c, "alice")?;
    let p = peer(&c, "alice", "bob")?;
    doc["hard_nat"] = json!({
        "first_packet_rtt_ms": first_ms,
        "relay_rtt_ms": relay_rtt_ms,
        "goal": "first packet within relay RTT + 100 ms",
        "path": format!("{:?}", p.path),
        "netcheck_nat": n.nat,
    });
    Ok(())
}

fn roaming(doc: &mut Value, trials: usize) -> anyhow::Result<()> {
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::new("bob"),
    ])?;
    let c = start(&lab, &["alice", "bob"])?;
    let bob = tunnel_ip(&c, "bob")?;
    let alice = lab.node("alice");
    let inner = alice.addr.octets();
    let (mut stalls, mut directs) = (vec![], vec![]);
    let mut current = alice.addr;
    for i in 0..trials {
        wait_direct(&lab, &c, "alice", "bob", Duration::from_secs(20))?;
        let via_before = peer(&c, "bob", "alice")?.via;
        let next = std::net::Ipv4Addr::new(inner[0], inner[1], inner[2], 10 + i as u8);
        let (f, back) = std::thread::scope(|s| {
            let f = s.spawn(|| flood(&alice.ns, bob, 8));
            std::thread::sleep(Duration::from_secs(2));
            let at = Instant::now();
            let _ = move_address(&lab, "alice", current, next);
            let mut back = None;
            while at.elapsed() < Duration::from_secs(6) {
                if let Ok(p) = peer(&c, "bob", "alice")
                    && p.path == PathKind::Direct
                    && p.via.is_some()
                    && p.via != via_before
                {
                    back = Some(ms(at.elapsed()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (f.join(), back)
        });
        let f = f.map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
        stalls.push(f64::from(f.longest_gap_ms));
        directs.push(back.unwrap_or(f64::INFINITY));
        current = next;
    }
    doc["roaming"] = json!({
        "public_address": public_ip(&lab, "alice").to_string(),
        "traffic_stall_ms": stalls,
        "traffic_stall_ms_p95": p95(&stalls),
        "goal_stall_ms": 2000,
        "direct_again_ms": directs,
        "direct_again_ms_p95": p95(&directs),
        "goal_direct_ms": 5000,
    });
    Ok(())
}
