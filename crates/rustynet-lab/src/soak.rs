//! `rustynet-lab soak`: the demo's network kept busy for a while — an exit
//! node in use, mesh pings, Magic DNS lookups — while the daemons' memory and
//! CPU are sampled. Writes a JSON verdict. CI runs a short soak; the 24 h one
//! runs on demand (`scripts/bench/soak.sh 86400`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use rustynet_lab::cluster::{Cluster, wait_for};
use rustynet_lab::services::seen_ip;
use rustynet_lab::topology::{ECHO_IP, Lab, NodeSpec};

#[derive(Default)]
struct Tally {
    ok: u64,
    total: u64,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.total += 1;
        self.ok += u64::from(ok);
    }
    fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.ok as f64 / self.total as f64
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({"ok": self.ok, "total": self.total, "ratio": self.ratio()})
    }
}

/// RSS (KiB) and CPU time (clock ticks) of a process.
fn sample(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((rss, utime + stime))
}

/// Control re-signs a 2-minute map at half its lifetime: a soak this long
/// must have applied at least one fresh generation.
const RESIGN_WITHIN: Duration = Duration::from_secs(90);

/// Runs for `duration` and writes the verdict to `out`, also when the lab
/// could not be brought up (then the verdict is `fail` with the error).
pub fn run(duration: Duration, out: &Path) -> anyhow::Result<()> {
    let doc = soak(duration).unwrap_or_else(|e| {
        json!({
            "report": "soak",
            "seconds_requested": duration.as_secs(),
            "error": format!("{e:#}"),
            "verdict": "fail",
        })
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    anyhow::ensure!(
        doc["verdict"] == "pass",
        "soak failed: see {}",
        out.display()
    );
    Ok(())
}

/// The soak itself: brings the lab up, keeps it busy, returns the record.
fn soak(duration: Duration) -> anyhow::Result<serde_json::Value> {
    let lab = Lab::new(&[
        NodeSpec::new("alice"),
        NodeSpec::new("bob"),
        NodeSpec::with_lan("exit"),
    ])?;
    // A short map lifetime so control re-signs (at half TTL) and the daemons
    // apply fresh generations all through the soak.
    let mut c = Cluster::start(&lab, "2m")?;
    c.set_policy(crate::demo::POLICY)?;
    let keys = [
        ("alice", c.preauth("alice", &[])?),
        ("bob", c.preauth("bob", &[])?),
        ("exit", c.preauth("admin", &["tag:exit"])?),
    ];
    for (name, key) in &keys {
        c.start_daemon(name)?;
        let extra: &[&str] = if *name == "exit" {
            &["--advertise-exit-node"]
        } else {
            &[]
        };
        c.up(name, key, extra)?;
    }
    for name in ["alice", "bob", "exit"] {
        c.wait_applied(name, 2)?;
    }
    c.rustynet("alice", &["exit-node", "select", "exit"])?;
    let exit_ip = std::net::IpAddr::V4(lab.node("exit").addr);
    wait_for(Duration::from_secs(30), || {
        c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"))
            .answer
            .as_deref()
            .and_then(seen_ip)
            .filter(|ip| *ip == exit_ip)
    })
    .ok_or_else(|| anyhow::anyhow!("exit path did not come up"))?;
    let bob_ip = c
        .status("bob")?
        .self_node
        .map(|s| s.tunnel_ip.to_string())
        .unwrap_or_default();
    let ticks = procfs_ticks();
    let pids: BTreeMap<&str, u32> = ["alice", "bob", "exit"]
        .into_iter()
        .filter_map(|n| c.daemon_pid(n).map(|p| (n, p)))
        .collect();
    let first: BTreeMap<&str, (u64, u64)> = pids
        .iter()
        .filter_map(|(n, p)| sample(*p).map(|s| (*n, s)))
        .collect();
    let mut max_rss: BTreeMap<&str, u64> = first.iter().map(|(n, (r, _))| (*n, *r)).collect();
    let (mut exit_path, mut mesh, mut dns) = (Tally::default(), Tally::default(), Tally::default());
    let gen_start = c.status("alice")?.generation;
    let started = Instant::now();
    let mut last_sample = Instant::now();
    println!(
        "soak: {} s of traffic through the exit, mesh pings and Magic DNS",
        duration.as_secs()
    );
    while started.elapsed() < duration {
        let probe = c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"));
        exit_path.add(probe.answer.as_deref().and_then(seen_ip) == Some(exit_ip));
        mesh.add(
            lab.node("alice")
                .ns
                .succeeds(&["ping", "-c", "1", "-W", "2", &bob_ip]),
        );
        let answer = lab
            .node("alice")
            .ns
            .stdout(&[
                "dig",
                "+short",
                "+time=2",
                "+tries=1",
                "@100.100.100.100",
                "bob.rustynet.internal",
            ])
            .unwrap_or_default();
        dns.add(answer.trim() == bob_ip);
        if last_sample.elapsed() >= Duration::from_secs(10) {
            last_sample = Instant::now();
            for (n, p) in &pids {
                if let Some((rss, _)) = sample(*p) {
                    let m = max_rss.entry(n).or_insert(rss);
                    *m = (*m).max(rss);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut daemons = serde_json::Map::new();
    let mut rss_ok = true;
    for (n, p) in &pids {
        let Some((rss_end, cpu_end)) = sample(*p) else {
            rss_ok = false;
            continue;
        };
        let Some(&(rss_start, cpu_start)) = first.get(n) else {
            rss_ok = false;
            continue;
        };
        let growth_kib = rss_end.saturating_sub(rss_start);
        rss_ok &= growth_kib < 20 * 1024;
        daemons.insert(
            (*n).to_owned(),
            json!({"rss_kib_start": rss_start, "rss_kib_end": rss_end, "rss_kib_max": max_rss.get(n), "rss_growth_kib": growth_kib,
                   "cpu_percent_avg": (cpu_end.saturating_sub(cpu_start)) as f64 / ticks / elapsed * 100.0}),
        );
    }
    let fail_closed: usize = ["alice", "bob", "exit"]
        .iter()
        .map(|n| {
            c.log(n)
                .lines()
                .filter(|l| {
                    l.contains("rustynet::transition") && l.contains("\"to_state\":\"fail_closed\"")
                })
                .count()
        })
        .sum();
    let gen_end = c.status("alice")?.generation;
    let resigned = gen_end > gen_start || started.elapsed() < RESIGN_WITHIN;
    let pass = exit_path.ratio() >= 0.99
        && resigned
        && mesh.ratio() >= 0.99
        && dns.ratio() >= 0.99
        && fail_closed == 0
        && rss_ok
        && pids.len() == 3;
    let doc = json!({
        "report": "soak",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "seconds_requested": duration.as_secs(),
        "duration_hours": elapsed / 3600.0,
        "probes": {"tcp_through_exit": exit_path.json(), "mesh_ping": mesh.json(), "magic_dns": dns.json()},
        "daemons": daemons,
        "fail_closed_transitions": fail_closed,
        "generations_applied_by_alice": gen_end.saturating_sub(gen_start),
        "criteria": "each probe kind >= 99% answered, no fail_closed, RSS growth < 20 MiB per daemon, a re-signed map applied (runs >= 90 s)",
        "verdict": if pass { "pass" } else { "fail" },
    });
    Ok(doc)
}

fn procfs_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
