//! Shared helpers of the exit-node, LAN, leak and transaction suites
//! (issue 4): enrolment with the suite's policy, probes of the internet and
//! LAN hosts, dataplane snapshots, firewall drop counters, packet counts from
//! captures, a "forced" client tunnel that ignores its own daemon's rules,
//! and the case wrapper that writes each case's evidence record.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use rustynet_lab::cluster::{Cluster, tail, wait_for};
use rustynet_lab::services::seen_ip;
use rustynet_lab::topology::{ECHO_IP, ECHO_IP6};
use rustynet_lab::{Capture, Lab, Netns};
use rustynet_proto::ipc::{DataplaneState, StatusDoc};

/// The suite's policy: staff (alice, bob) mesh and may use the exit; only
/// alice may reach the exit's LAN, on tcp/22 and tcp/443; carol may talk to
/// the exit node itself but holds no exit grant.
pub const POLICY: &str = r#"{
  "groups": {"group:staff": ["alice", "bob"]},
  "tag_owners": {"tag:exit": ["admin"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:*"]},
    {"action": "accept", "src": ["group:staff", "carol"], "dst": ["tag:exit:*"]},
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:22,443"], "proto": "tcp"}
  ],
  "exit_nodes": [{"users": ["group:staff"], "nodes": ["tag:exit"]}]
}"#;

/// The exit's LAN prefix as advertised.
pub const LAN: &str = "192.168.77.0/24";
/// The daemons' tunnel UDP port (the lab does not override it).
pub const TUNNEL_PORT: u16 = 41641;
/// Generous: the machine is shared by several suites.
pub const SETTLE: Duration = Duration::from_secs(45);
/// The cleartext the UDP probe sends (`rustynet-lab probe udp`).
pub const UDP_PROBE_PAYLOAD: &[u8] = b"rustynet-lab-probe";

// ---------------------------------------------------------------- cases

pub use rustynet_lab::report::Evidence;

/// Runs one case and writes its record (pass or fail, wall time, error).
/// A panic inside counts as a failure. Pass the result to [`must`].
pub fn case<T>(
    report: &'static str,
    name: &str,
    body: impl FnOnce(&mut Evidence) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    rustynet_lab::report::run_recorded(report, name, body).with_context(|| format!("case {name}"))
}

/// Fails the test on a failed case, with `diag()` (so later cases of the
/// same test do not run on a broken lab; the gate notices missing cases).
pub fn must<T>(result: anyhow::Result<T>, diag: impl FnOnce() -> String) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{e:#}\n{}", diag()),
    }
}

/// Fails (never skips) without the extra tools these suites use.
pub fn require_tools(tools: &[&str]) {
    rustynet_lab::require_lab();
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| !rustynet_lab::netns::have(t))
        .collect();
    assert!(
        missing.is_empty(),
        "these end-to-end tests need {missing:?} on PATH"
    );
}

// ---------------------------------------------------------------- enrolment

/// Sets the suite's policy and starts `names` with their roles: `exit*`
/// nodes are tagged exits that advertise the LAN, everyone else enrols as
/// the user of its name.
pub fn enroll(c: &mut Cluster<'_>, names: &[&str]) -> anyhow::Result<()> {
    c.set_policy(POLICY)?;
    for name in names {
        enroll_node(c, name, &[])?;
    }
    Ok(())
}

/// Starts and enrols one node (policy already set) with extra daemon
/// environment.
pub fn enroll_node(c: &mut Cluster<'_>, name: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    c.start_daemon_with_env(name, env)?;
    if name.starts_with("exit") {
        let key = c.preauth("admin", &["tag:exit"])?;
        c.up(
            name,
            &key,
            &["--advertise-exit-node", "--advertise-routes", LAN],
        )?;
    } else {
        let key = c.preauth(name, &[])?;
        c.up(name, &key, &[])?;
    }
    Ok(())
}

/// Waits until `name` has applied a map showing exactly `peers`.
pub fn wait_peers(c: &Cluster<'_>, name: &str, peers: &[&str]) -> anyhow::Result<StatusDoc> {
    let mut want: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
    want.sort();
    c.wait_status(name, SETTLE, |s| {
        let mut have: Vec<String> = s.peers.iter().map(|p| p.name.clone()).collect();
        have.sort();
        applied(s) && have == want
    })
}

/// Whether the status shows an applied generation.
pub fn applied(s: &StatusDoc) -> bool {
    matches!(
        s.state,
        DataplaneState::DataplaneApplied | DataplaneState::ExitActive
    )
}

/// `node`'s tunnel address.
pub fn tunnel_ip(c: &Cluster<'_>, node: &str) -> anyhow::Result<Ipv4Addr> {
    c.status(node)?
        .self_node
        .map(|s| s.tunnel_ip)
        .ok_or_else(|| anyhow!("{node} has no tunnel address yet"))
}

/// Runs the CLI and returns (success, stdout + stderr).
pub fn cli(c: &Cluster<'_>, node: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = c.cli(node, args)?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned(),
    ))
}

/// Selects `exit` on `node` and waits until the internet sees the exit's
/// address.
pub fn select_exit(c: &Cluster<'_>, node: &str, exit: &str) -> anyhow::Result<String> {
    let out = c.rustynet(node, &["exit-node", "select", exit])?;
    let exit_addr = IpAddr::V4(c.lab.node(exit).addr);
    wait_for(SETTLE, || {
        (tcp(c, &c.lab.node(node).ns, &echo4()).seen == Some(exit_addr)).then_some(())
    })
    .ok_or_else(|| anyhow!("the internet never saw {node} as {exit_addr}"))?;
    Ok(out.trim().to_owned())
}

// ---------------------------------------------------------------- probes

/// One probe and what came of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// tcp, udp or icmp.
    pub kind: &'static str,
    /// Target.
    pub target: String,
    /// Answered.
    pub ok: bool,
    /// The address the echo service saw (tcp/udp).
    pub seen: Option<IpAddr>,
}

/// The echo host's TCP/UDP address.
pub fn echo4() -> String {
    format!("{ECHO_IP}:7")
}

/// The echo host's IPv6 TCP/UDP address.
pub fn echo6() -> String {
    format!("[{ECHO_IP6}]:7")
}

/// A TCP probe (connect, read the echo's `peer` line).
pub fn tcp(c: &Cluster<'_>, ns: &Netns, target: &str) -> Probe {
    let r = c.probe(ns, "tcp", target);
    Probe {
        kind: "tcp",
        target: target.into(),
        ok: r.ok,
        seen: r.answer.as_deref().and_then(seen_ip),
    }
}

/// A TCP probe with a short timeout (for measuring how soon traffic flows
/// again: a lost SYN is not retransmitted within it).
pub fn tcp_quick(c: &Cluster<'_>, ns: &Netns, target: &str, timeout_ms: u32) -> Probe {
    let out = ns
        .command(&c.bins.lab)
        .args([
            "probe",
            "tcp",
            target,
            "--timeout-ms",
            &timeout_ms.to_string(),
        ])
        .output();
    let answer = out.ok().and_then(|o| {
        serde_json::from_slice::<rustynet_lab::services::ProbeResult>(&o.stdout).ok()
    });
    Probe {
        kind: "tcp",
        target: target.into(),
        ok: answer.as_ref().is_some_and(|a| a.ok),
        seen: answer.and_then(|a| a.answer).as_deref().and_then(seen_ip),
    }
}

/// A UDP probe (one datagram, one answer).
pub fn udp(c: &Cluster<'_>, ns: &Netns, target: &str) -> Probe {
    let r = c.probe(ns, "udp", target);
    Probe {
        kind: "udp",
        target: target.into(),
        ok: r.ok,
        seen: r.answer.as_deref().and_then(seen_ip),
    }
}

/// One ICMP echo.
pub fn icmp(ns: &Netns, ip: IpAddr) -> Probe {
    let fam = if ip.is_ipv4() { "-4" } else { "-6" };
    Probe {
        kind: "icmp",
        target: ip.to_string(),
        ok: ns.succeeds(&["ping", fam, "-n", "-c", "1", "-W", "2", &ip.to_string()]),
        seen: None,
    }
}

/// TCP, UDP and ICMP to the echo host over IPv4 or IPv6.
pub fn probe_internet(c: &Cluster<'_>, ns: &Netns, v6: bool) -> Vec<Probe> {
    let (sock, ip) = if v6 {
        (echo6(), IpAddr::V6(ECHO_IP6))
    } else {
        (echo4(), IpAddr::V4(ECHO_IP))
    };
    vec![tcp(c, ns, &sock), udp(c, ns, &sock), icmp(ns, ip)]
}

/// The filter matching any packet to or from the internet echo host.
pub fn internet_filter() -> String {
    format!("host {ECHO_IP} or host {ECHO_IP6}")
}

/// Where canaries go: an internet address that is not the echo host.
pub const CANARY_IP: &str = "203.0.113.1";

/// The filter matching canary packets.
pub fn canary_filter() -> String {
    format!("icmp and dst host {CANARY_IP}")
}

/// The daemon's bypass mark, read from the kill switch in the node's
/// ruleset (the rule that lets the tunnel transport out); `None` when no
/// kill switch is installed (then nothing needs it).
pub fn bypass_mark(ns: &Netns) -> anyhow::Result<Option<u32>> {
    let text = ns
        .stdout(&["nft", "list", "chain", "inet", "rustynet", "output"])
        .unwrap_or_default();
    let Some(line) = text
        .lines()
        .find(|l| l.contains("tunnel transport and control connection"))
    else {
        return Ok(None);
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let hex = words
        .iter()
        .position(|w| *w == "mark")
        .and_then(|i| words.get(i + 1))
        .and_then(|w| w.strip_prefix("0x"))
        .ok_or_else(|| anyhow!("no mark in {line:?}"))?;
    Ok(Some(u32::from_str_radix(hex, 16)?))
}

/// One canary: an ICMP echo to [`CANARY_IP`] carrying the bypass mark,
/// which the kill switch lets out of the physical link like the tunnel's
/// own packets. Seeing it in a capture proves the capture was live then.
pub fn canary(ns: &Netns, mark: Option<u32>) {
    let mut args = vec!["ping", "-4", "-n", "-c", "1", "-W", "1"];
    let mark = mark.map(|m| m.to_string());
    if let Some(m) = &mark {
        args.extend(["-m", m]);
    }
    args.push(CANARY_IP);
    let _ = ns.succeeds(&args);
}

/// Probes the internet host (v4 and v6, every protocol) for `window`, with
/// a canary each round. Returns (probes sent, probes answered, canaries).
pub fn probe_for(
    c: &Cluster<'_>,
    ns: &Netns,
    window: Duration,
    mark: Option<u32>,
) -> (usize, usize, usize) {
    let started = Instant::now();
    let (mut sent, mut answered, mut canaries) = (0, 0, 0);
    while started.elapsed() < window {
        for p in probe_internet(c, ns, false)
            .into_iter()
            .chain([tcp(c, ns, &echo6())])
        {
            sent += 1;
            answered += usize::from(p.ok);
        }
        canary(ns, mark);
        canaries += 1;
    }
    (sent, answered, canaries)
}

// ---------------------------------------------------------------- captures

/// Starts a capture on `name`'s physical link.
pub fn capture_node(lab: &Lab, name: &str, tag: &str) -> anyhow::Result<Capture> {
    let n = lab.node(name);
    Capture::start(&n.ns, &n.ifname, lab.path(&format!("{name}-{tag}.pcap")))
}

/// The single non-loopback interface of a namespace (the LAN host's and
/// the internet's links have no handle in the lab).
pub fn only_link(ns: &Netns) -> anyhow::Result<String> {
    let text = ns.stdout(&["ip", "-o", "link", "show"])?;
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| n != "lo" && !n.is_empty())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("{}: expected one link, found {names:?}", ns.name()),
    }
}

/// Counts the packets of a stopped capture's file matching `filter`.
pub fn count(pcap: &Path, filter: &str) -> anyhow::Result<usize> {
    let file = pcap.to_string_lossy().into_owned();
    let mut args = vec!["-r", &file, "-n"];
    args.extend(filter.split_whitespace());
    let out = Command::new("tcpdump").args(&args).output()?;
    ensure!(
        out.status.success(),
        "tcpdump -r {file} {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// The decoded packets matching `filter` (for failure messages).
pub fn lines(pcap: &Path, filter: &str, max: usize) -> String {
    let file = pcap.to_string_lossy().into_owned();
    let mut args = vec!["-r", &file, "-n"];
    args.extend(filter.split_whitespace());
    Command::new("tcpdump")
        .args(&args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .take(max)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Whether the raw capture contains `needle`.
pub fn raw_contains(pcap: &Path, needle: &[u8]) -> bool {
    std::fs::read(pcap).is_ok_and(|d| d.windows(needle.len()).any(|w| w == needle))
}

// ---------------------------------------------------------------- state

/// The node's routing and firewall state by section: policy rules, every
/// route table, the nftables ruleset (counter values normalised) and the
/// sysctls Rustynet may change.
pub fn snapshot(ns: &Netns) -> anyhow::Result<BTreeMap<&'static str, String>> {
    let mut out = BTreeMap::new();
    for (key, args) in [
        ("ip -4 rule", &["ip", "-4", "rule"][..]),
        ("ip -6 rule", &["ip", "-6", "rule"]),
        (
            "ip -4 route show table all",
            &["ip", "-4", "route", "show", "table", "all"],
        ),
        (
            "ip -6 route show table all",
            &["ip", "-6", "route", "show", "table", "all"],
        ),
        ("nft list ruleset", &["nft", "list", "ruleset"]),
        (
            "sysctl",
            &[
                "sysctl",
                "net.ipv4.ip_forward",
                "net.ipv4.conf.all.src_valid_mark",
                "net.ipv6.conf.all.forwarding",
            ],
        ),
    ] {
        out.insert(key, normalise(&ns.stdout(args)?));
    }
    Ok(out)
}

/// Counter values vary with traffic, not with state.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut words: Vec<&str> = line.split(' ').collect();
        for i in 0..words.len() {
            if i >= 1 && (words[i - 1] == "packets" || words[i - 1] == "bytes") {
                words[i] = "N";
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// The sections that differ between two snapshots, both sides shown.
pub fn diff(
    before: &BTreeMap<&'static str, String>,
    after: &BTreeMap<&'static str, String>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, v)| {
            format!(
                "--- {k} before:\n{v}--- {k} after:\n{}",
                after.get(k).cloned().unwrap_or_default()
            )
        })
        .collect()
}

/// Sum of the counters on `chain`'s rules whose comment is `comment`.
pub fn drop_count(ns: &Netns, chain: &str, comment: &str) -> anyhow::Result<u64> {
    let text = ns.stdout(&["nft", "list", "chain", "inet", "rustynet", chain])?;
    let needle = format!("comment \"{comment}\"");
    let mut total = 0;
    let mut found = false;
    for line in text.lines().filter(|l| l.contains(&needle)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "packets") {
            total += words
                .get(i + 1)
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| anyhow!("bad counter in {line:?}"))?;
            found = true;
        }
    }
    ensure!(found, "no counted rule {comment:?} in {chain}:\n{text}");
    Ok(total)
}

/// The forward chain's drop counter for traffic from the mesh.
pub const FORWARD_DROP: &str = "forwarding from the mesh not allowed by policy";

// ---------------------------------------------------------------- forced tunnel

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Rustynet's own tunnel engine with one static peer (the throughput
/// benchmark's helper, an example of the adapter crate), built once.
fn tunnel_node() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--locked", "--manifest-path", manifest])
                .args([
                    "-p",
                    "rustynet-backend-wireguard",
                    "--example",
                    "tunnel_node",
                ]);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            match cmd.status() {
                Ok(s) if s.success() => {}
                other => return Err(format!("building tunnel_node failed: {other:?}")),
            }
            let bin = dir.join("examples").join("tunnel_node");
            if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!("{} was not built", bin.display()))
            }
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The tunnel private key (base64) from a node's sealed state (its `keys`
/// field, plain in the lab: no key-encryption secret).
fn node_private_key(c: &Cluster<'_>, node: &str) -> anyhow::Result<String> {
    let dir = c
        .node(node)
        .map(|n| n.state_dir.clone())
        .ok_or_else(|| anyhow!("no daemon on {node}"))?;
    let sealed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state.json"))?)?;
    let text = sealed
        .get("keys")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow!("{node}: no node keys in state.json"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("tunnel "))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{node}: unexpected key file format"))
}

fn public_key(private_b64: &str) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(private_b64.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "pubkey derivation failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A client whose daemon is gone and whose own firewall and rules are
/// deleted, replaced by a bare tunnel with the client's key and the exit as
/// its only peer for `0.0.0.0/0`: what a hostile or broken client could
/// send. Only the exit's own enforcement stands between it and the
/// destination. Killed on drop.
pub struct Forced {
    child: Option<Child>,
    /// The client's tunnel address (source of its forced packets).
    pub tunnel_ip: Ipv4Addr,
    /// Log of the tunnel process.
    pub log: PathBuf,
}

impl Forced {
    /// Stops `client`'s daemon, removes its firewall table and policy rules,
    /// and routes `dsts` (plus the exit's tunnel address) into a bare tunnel
    /// to `exit`.
    pub fn start(
        c: &mut Cluster<'_>,
        client: &str,
        exit: &str,
        dsts: &[&str],
    ) -> anyhow::Result<Self> {
        let bin = tunnel_node()?;
        let lab = c.lab;
        let status = c.status(client)?;
        let tunnel_ip = status
            .self_node
            .as_ref()
            .map(|s| s.tunnel_ip)
            .ok_or_else(|| anyhow!("{client} not enrolled"))?;
        let exit_peer = status
            .peers
            .iter()
            .find(|p| p.name == exit)
            .ok_or_else(|| anyhow!("{client} does not see {exit}"))?
            .clone();
        let exit_key = public_key(&node_private_key(c, exit)?)?;
        let key_file = lab.path(&format!("forced-{client}.key"));
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&key_file)?;
            f.write_all(node_private_key(c, client)?.as_bytes())?;
        }
        c.stop_daemon(client);
        let ns = &lab.node(client).ns;
        wait_for(Duration::from_secs(15), || {
            (!ns.succeeds(&["ip", "link", "show", "rn0"])).then_some(())
        })
        .ok_or_else(|| anyhow!("{client}'s tunnel interface outlived its daemon"))?;
        let _ = ns.exec(&["nft", "delete", "table", "inet", "rustynet"]);
        for fam in ["-4", "-6"] {
            for pref in ["5600", "5601"] {
                let _ = ns.exec(&["ip", fam, "rule", "del", "pref", pref]);
            }
        }
        let endpoint = SocketAddr::new(IpAddr::V4(lab.node(exit).addr), TUNNEL_PORT);
        let log = lab.path(&format!("forced-{client}.log"));
        let bin_arg = bin.to_string_lossy().into_owned();
        let key_arg = key_file.to_string_lossy().into_owned();
        let child = ns.spawn(
            &[
                &bin_arg,
                "rn0",
                &key_arg,
                "0",
                "1280",
                &exit_key,
                &endpoint.to_string(),
                "0.0.0.0/0",
            ],
            &log,
        )?;
        let forced = Self {
            child: Some(child),
            tunnel_ip,
            log: log.clone(),
        };
        wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("ready"))
                .then_some(())
        })
        .ok_or_else(|| {
            anyhow!(
                "forced tunnel did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        ns.ip(&["addr", "add", &format!("{tunnel_ip}/32"), "dev", "rn0"])?;
        ns.ip(&["link", "set", "rn0", "up"])?;
        let exit_tunnel = format!("{}/32", exit_peer.tunnel_ip);
        for dst in dsts.iter().copied().chain([exit_tunnel.as_str()]) {
            ns.ip(&[
                "route",
                "replace",
                dst,
                "dev",
                "rn0",
                "src",
                &tunnel_ip.to_string(),
            ])?;
        }
        Ok(forced)
    }

    /// The tunnel process's output.
    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 20)
    }
}

impl Drop for Forced {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- faults

/// A file the daemon reads before each apply (`RUSTYNET_FAULT_FILE`, in
/// fault-injection builds): `STEP` or `STEP rollback` arms a fault in the
/// running daemon; no file, no fault.
pub struct FaultFile(pub PathBuf);

impl FaultFile {
    /// A fault file for `node` in the lab directory (not armed).
    pub fn new(lab: &Lab, node: &str) -> Self {
        Self(lab.path(&format!("{node}.fault")))
    }

    /// The environment that points the daemon at it.
    pub fn env(&self) -> (&'static str, String) {
        ("RUSTYNET_FAULT_FILE", self.0.to_string_lossy().into_owned())
    }

    /// Arms `step` (and a failed rollback of it).
    pub fn arm(&self, step: &str, rollback: bool) -> anyhow::Result<()> {
        let text = if rollback {
            format!("{step} rollback\n")
        } else {
            format!("{step}\n")
        };
        std::fs::write(&self.0, text).context("arming the fault")
    }

    /// Disarms.
    pub fn disarm(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The apply steps, in order.
pub const STEPS: [&str; 5] = ["backend", "routes", "firewall", "forwarding", "dns"];

/// Diagnostics of several nodes, for failure messages.
pub fn diagnose(c: &Cluster<'_>, nodes: &[&str]) -> String {
    nodes.iter().map(|n| c.diagnose(n)).collect()
}

// ---------------------------------------------------------------- footprint

/// The pid of `node`'s daemon, found by its state directory in
/// `/proc/*/cmdline` (the lab keeps the child handle private).
pub fn daemon_pid(c: &Cluster<'_>, node: &str) -> anyhow::Result<u32> {
    let state = c
        .node(node)
        .map(|n| n.state_dir.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("no daemon on {node}"))?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/rustynetd")) && args.contains(&state) {
            return Ok(pid);
        }
    }
    bail!("no rustynetd process with state dir {state}")
}

/// CPU time (user + system, all threads) of `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad stat: {stat}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .ok_or_else(|| anyhow!("bad stat: {stat}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "no clock tick rate");
    Ok(ticks as f64 / hz as f64)
}

/// Resident set size of `pid`, in MB.
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok((kb / 1024.0 * 10.0).round() / 10.0)
}
