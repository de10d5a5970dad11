//! Helpers of the Magic DNS / protected DNS end-to-end suite (issue 5):
//! queries with `dig` from inside a node's namespace, enrollment under a
//! chosen hostname, `dns inspect`, leak counting in captures, the daemon's
//! memory, and the case runner that writes each case's evidence.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use rustynet_lab::cluster::{tail, wait_for};
use rustynet_lab::dnsflood::FloodReport;
use rustynet_lab::topology::DNS_IP;
use rustynet_lab::{Capture, Cluster, Lab, Netns, NodeSpec};
use rustynet_proto::ipc::{DataplaneState, DnsInspectDoc, StatusDoc};
use serde_json::{Value, json};

/// The Magic DNS resolver.
pub const MAGIC: &str = "100.100.100.100";
/// The tailnet suffix control uses by default.
pub const SUFFIX: &str = "rustynet.internal";
/// Generous: the machine is shared with other suites.
pub const SETTLE: Duration = Duration::from_secs(45);

pub use rustynet_lab::report::Evidence;

/// Runs one case and writes its evidence (pass or fail, wall time, error),
/// then fails the test if the case failed.
pub fn run_case(
    report: &'static str,
    case: &str,
    body: impl FnOnce(&mut Evidence) -> anyhow::Result<()>,
) {
    rustynet_lab::require_lab();
    assert!(
        rustynet_lab::netns::have("dig"),
        "the DNS suite needs dig (apt-get install bind9-dnsutils)"
    );
    // Build the binaries before the clock starts; a failure shows again inside.
    let _ = rustynet_lab::bins::bins();
    if let Err(e) = rustynet_lab::report::run_recorded(report, case, body) {
        panic!("case {case} failed: {e:#}");
    }
}

/// One `dig` exchange.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dig {
    /// Response code (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...); `None` when
    /// nothing came back.
    pub status: Option<String>,
    /// Answer records as `(type, data)`.
    pub answers: Vec<(String, String)>,
    /// Authority records' types (an SOA there marks a negative answer).
    pub authority: Vec<String>,
}

impl Dig {
    /// The status, or `"timeout"`.
    pub fn rcode(&self) -> &str {
        self.status.as_deref().unwrap_or("timeout")
    }
    /// Data of the answers of type `t`.
    pub fn data(&self, t: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter(|(ty, _)| ty == t)
            .map(|(_, d)| d.clone())
            .collect()
    }
    /// NOERROR with exactly the A records `ips`.
    pub fn is_a(&self, ips: &[Ipv4Addr]) -> bool {
        let mut want: Vec<String> = ips.iter().map(ToString::to_string).collect();
        let mut got = self.data("A");
        want.sort();
        got.sort();
        self.rcode() == "NOERROR" && got == want && self.answers.len() == want.len()
    }
}

/// `dig @server name type` from inside `ns` (one try, `time` seconds);
/// `extra` adds dig options such as `+tcp`.
pub fn dig(ns: &Netns, server: &str, name: &str, qtype: &str, extra: &[&str]) -> Dig {
    let mut args = vec![
        "dig".to_owned(),
        format!("@{server}"),
        "+tries=1".into(),
        "+time=4".into(),
        "+noall".into(),
        "+comments".into(),
        "+answer".into(),
        "+authority".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    if qtype == "PTR" {
        args.extend(["-x".into(), name.to_owned()]);
    } else {
        args.extend([name.to_owned(), qtype.to_owned()]);
    }
    let out = ns.command(&args[0]).args(&args[1..]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_dig(&text)
}

/// Parses `dig +noall +comments +answer +authority` output.
pub fn parse_dig(text: &str) -> Dig {
    let mut status = None;
    let mut answers = Vec::new();
    let mut authority = Vec::new();
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            status = rest.split(',').next().map(|s| s.trim().to_owned());
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") && line.contains("SECTION") {
            section = "";
        }
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 {
            let (ty, data) = (fields[3].to_owned(), fields[4..].join(" "));
            match section {
                "answer" => answers.push((ty, data)),
                "authority" => authority.push(ty),
                _ => {}
            }
        }
    }
    Dig {
        status,
        answers,
        authority,
    }
}

/// Retries `dig` until `ok` holds or `timeout` passes; returns the last answer.
pub fn dig_until(
    ns: &Netns,
    server: &str,
    name: &str,
    qtype: &str,
    timeout: Duration,
    ok: impl Fn(&Dig) -> bool,
) -> (bool, Dig) {
    let mut last = None;
    let hit = wait_for(timeout, || {
        let d = dig(ns, server, name, qtype, &[]);
        let good = ok(&d);
        last = Some(d.clone());
        good.then_some(d)
    });
    match hit {
        Some(d) => (true, d),
        None => (false, last.unwrap_or_else(|| parse_dig(""))),
    }
}

/// Creates a reusable pre-auth key for `user`, starts the daemon on `node`
/// and runs `rustynet up` asking for `hostname`.
pub fn enroll_as(
    c: &mut Cluster<'_>,
    node: &str,
    user: &str,
    tags: &[&str],
    hostname: &str,
    extra: &[&str],
) -> anyhow::Result<String> {
    let key = c.preauth(user, tags)?;
    c.start_daemon(node)?;
    let ca = c.ca.to_string_lossy().into_owned();
    let url = c.url.clone();
    let mut args = vec![
        "up",
        "--control",
        &url,
        "--ca-cert",
        &ca,
        "--auth-key",
        &key,
        "--hostname",
        hostname,
    ];
    args.extend_from_slice(extra);
    c.rustynet(node, &args)
        .with_context(|| format!("rustynet up on {node}"))
}

/// Waits until `node` has applied a map with exactly the peers `peers`
/// (host labels), in any order.
pub fn wait_peers(c: &Cluster<'_>, node: &str, peers: &[&str]) -> anyhow::Result<StatusDoc> {
    let mut want: Vec<String> = peers.iter().map(|p| (*p).to_owned()).collect();
    want.sort();
    c.wait_status(node, SETTLE, |s| {
        let mut got: Vec<String> = s.peers.iter().map(|p| p.name.clone()).collect();
        got.sort();
        matches!(
            s.state,
            DataplaneState::DataplaneApplied | DataplaneState::ExitActive
        ) && got == want
    })
}

/// A node's own tunnel address from its status.
pub fn own_ip(s: &StatusDoc) -> anyhow::Result<Ipv4Addr> {
    s.self_node
        .as_ref()
        .map(|n| n.tunnel_ip)
        .ok_or_else(|| anyhow!("status has no self section"))
}

/// `rustynet --json dns inspect [NAME]` on `node`.
pub fn inspect(c: &Cluster<'_>, node: &str, name: Option<&str>) -> anyhow::Result<DnsInspectDoc> {
    let mut args = vec!["--json", "dns", "inspect"];
    args.extend(name);
    let text = c.rustynet(node, &args)?;
    let v: Value = serde_json::from_str(&text).with_context(|| format!("inspect output {text}"))?;
    // The CLI prints the reply's payload (tolerate the tagged form too).
    let doc = v.get("data").cloned().unwrap_or(v);
    Ok(serde_json::from_value(doc)?)
}

/// Packets in `pcap` matching the tcpdump `filter`.
pub fn count(pcap: &Path, filter: &str) -> anyhow::Result<Vec<String>> {
    let mut args = vec![
        "-r".to_owned(),
        pcap.to_string_lossy().into_owned(),
        "-n".into(),
    ];
    args.extend(filter.split_whitespace().map(str::to_owned));
    let out = std::process::Command::new("tcpdump").args(&args).output()?;
    if !out.status.success() {
        bail!(
            "tcpdump -r {}: {}",
            pcap.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// How many times `needle` occurs in the raw capture (a query name's
/// labels are not compressed in a question, so each query carries it once).
pub fn occurrences(pcap: &Path, needle: &[u8]) -> usize {
    std::fs::read(pcap)
        .map(|data| data.windows(needle.len()).filter(|w| *w == needle).count())
        .unwrap_or(0)
}

/// `name` as the wire labels carry it (`a.b` -> `\x01a\x01b`), to find a
/// query in a raw capture.
pub fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).unwrap_or(0));
        out.extend_from_slice(label.as_bytes());
    }
    out
}

/// The tcpdump filter for every DNS packet (plain and over TLS).
pub const DNS_FILTER: &str = "udp port 53 or tcp port 53 or tcp port 853";

/// The pid of the daemon whose state directory is `state_dir` (found by its
/// command line: `ip netns exec` execs the daemon, so it has its own entry).
pub fn daemon_pid(state_dir: &Path) -> anyhow::Result<u32> {
    let needle = state_dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_daemon = args.first().is_some_and(|a| a.ends_with("/rustynetd"));
        if is_daemon && args.contains(&needle) {
            return Ok(pid);
        }
    }
    bail!("no rustynetd running with state dir {needle}")
}

/// VmRSS of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))
}

/// Whether `pid` still runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A temporary nftables table in a namespace (a test's own fault: a cut
/// path), deleted on drop.
pub struct NftCut<'a> {
    ns: &'a Netns,
    table: String,
}

impl<'a> NftCut<'a> {
    /// Adds `inet <table>` with one chain on `hook` at priority -50 holding
    /// `rules` (nft rule text, e.g. `ip daddr 203.0.113.53 drop`).
    pub fn new(ns: &'a Netns, table: &str, hook: &str, rules: &[String]) -> anyhow::Result<Self> {
        let mut script = format!(
            "table inet {table} {{\n chain c {{\n  type filter hook {hook} priority -50; policy accept;\n"
        );
        for r in rules {
            script.push_str(&format!("  {r}\n"));
        }
        script.push_str(" }\n}\n");
        let path = std::env::temp_dir().join(format!("{table}.nft"));
        std::fs::write(&path, &script)?;
        let out = ns.exec(&["nft", "-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        out?;
        Ok(Self {
            ns,
            table: table.to_owned(),
        })
    }

    /// The packets its rules counted (rules must carry `counter`).
    pub fn packets(&self) -> u64 {
        self.ns
            .stdout(&["nft", "list", "table", "inet", &self.table])
            .unwrap_or_default()
            .split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for NftCut<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .exec(&["nft", "delete", "table", "inet", &self.table]);
    }
}

/// A line from a daemon log's JSON events with `message`, in order.
pub fn log_lines_with(log: &str, needle: &str) -> Vec<usize> {
    log.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
        .collect()
}

/// Failure context: the node's log tail and ruleset.
pub fn diag(c: &Cluster<'_>, node: &str) -> String {
    format!(
        "--- {node} log tail\n{}\n--- {node} ruleset\n{}",
        tail(&c.log(node), 25),
        c.lab
            .node(node)
            .ns
            .stdout(&["nft", "list", "ruleset"])
            .unwrap_or_default()
    )
}

/// An address as a reverse-lookup argument for [`dig`] with `"PTR"`.
pub fn ip_arg(ip: impl Into<IpAddr>) -> String {
    ip.into().to_string()
}

// ---- labs, policies and shared case steps ----

pub const E2E: &str = "netns_e2e";
pub const LEAK: &str = "leak";
pub const MAP_TTL: &str = "10m";

/// The internet DNS server's answer for every name.
pub const OUTSIDE_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);

pub fn lab(nodes: &[&str]) -> anyhow::Result<Lab> {
    Lab::new(&nodes.iter().map(|n| NodeSpec::new(n)).collect::<Vec<_>>())
}

pub fn fqdn(label: &str) -> String {
    format!("{label}.{SUFFIX}")
}

/// A name nobody else uses, so a capture can be searched for it.
pub fn unique(tag: &str, lab: &Lab) -> String {
    format!("{tag}-{}.example", lab.id)
}

/// Alice and bob see each other, alice sees dave, carol sees nobody.
pub const VISIBILITY_POLICY: &str = r#"{
  "groups": {"group:staff": ["alice", "bob"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:*"]},
    {"action": "accept", "src": ["alice"], "dst": ["dave:*"]}
  ]
}"#;

pub const EVERYONE_POLICY: &str = r#"{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}"#;

pub const EXIT_POLICY: &str = r#"{
  "tag_owners": {"tag:exit": ["admin"]},
  "acls": [{"action": "accept", "src": ["alice"], "dst": ["tag:exit:*"]}],
  "exit_nodes": [{"users": ["alice"], "nodes": ["tag:exit"]}]
}"#;

pub const SOLO_POLICY: &str = r#"{
  "acls": [{"action": "accept", "src": ["solo"], "dst": ["solo:*"]}]
}"#;

/// Enrolls alice and an exit node and selects the exit on alice.
pub fn exit_lab<'a>(lab: &'a Lab) -> anyhow::Result<Cluster<'a>> {
    exit_lab_with(lab, EXIT_POLICY, true)
}

/// Enrolls alice and an exit node under `policy`; with `select`, alice
/// uses the exit and waits for protected mode.
pub fn exit_lab_with<'a>(lab: &'a Lab, policy: &str, select: bool) -> anyhow::Result<Cluster<'a>> {
    let mut c = Cluster::start(lab, MAP_TTL)?;
    c.set_policy(policy)?;
    enroll_as(
        &mut c,
        "exit",
        "admin",
        &["tag:exit"],
        "exit",
        &["--advertise-exit-node"],
    )?;
    enroll_as(&mut c, "alice", "alice", &[], "alice", &[])?;
    wait_peers(&c, "alice", &["exit"])?;
    wait_peers(&c, "exit", &["alice"])?;
    if select {
        c.rustynet("alice", &["exit-node", "select", "exit"])?;
        c.wait_status("alice", SETTLE, |s| {
            s.state == DataplaneState::ExitActive && s.dns_protected && s.kill_switch
        })?;
    }
    Ok(c)
}

/// Sum of the packet counters of `chain`'s rules whose comment is `comment`.
pub fn drop_counter(lab: &Lab, node: &str, comment: &str) -> u64 {
    lab.node(node)
        .ns
        .stdout(&["nft", "list", "chain", "inet", "rustynet", "output"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(comment))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

pub const DNS_DROP: &str = "protected DNS: query outside Magic DNS";

/// Direct queries to outside resolvers from `node`: UDP and TCP to the
/// internet resolver, UDP to the router (the "LAN" resolver), UDP over
/// IPv6, and a TCP connection to port 853 (DNS over TLS). Returns the
/// names used and whether any got an answer.
pub fn direct_queries(
    c: &Cluster<'_>,
    lab: &Lab,
    node: &str,
    tag: &str,
) -> (Vec<String>, Vec<String>) {
    let ns = &lab.node(node).ns;
    let gateway = format!("198.51.100.{}", lab.node(node).addr.octets()[3] - 1);
    let mut names = Vec::new();
    let mut answered = Vec::new();
    // The lab's resolver answers in milliseconds; a leaked query would be
    // answered well within 2 s, and shows in the capture regardless.
    for (server, extra, kind) in [
        (DNS_IP.to_string(), &["+time=2"][..], "udp"),
        (DNS_IP.to_string(), &["+time=2", "+tcp"][..], "tcp"),
        (gateway, &["+time=2"][..], "gateway"),
        ("2001:db8:113::10".to_owned(), &["+time=2"][..], "ipv6"),
    ] {
        let name = unique(&format!("{tag}-{kind}"), lab);
        let d = dig(ns, &server, &name, "A", extra);
        if d.status.is_some() {
            answered.push(format!("{kind}: {}", d.rcode()));
        }
        names.push(name);
    }
    if c.probe(ns, "tcp", &format!("{DNS_IP}:853")).ok {
        answered.push("tcp/853".into());
    }
    (names, answered)
}

/// A query through Magic DNS while the path is cut: (answer, seconds).
pub fn lost(lab: &Lab, what: &str, names: &mut Vec<String>) -> (Dig, f64) {
    let name = unique(&format!("lost-{what}"), lab);
    let started = Instant::now();
    // Magic DNS gives up on the upstream after 2 s; wait well past that.
    let d = dig(&lab.node("alice").ns, MAGIC, &name, "A", &["+time=8"]);
    names.push(name);
    (d, started.elapsed().as_secs_f64())
}

/// Waits for Magic DNS to answer again once the path is back.
pub fn recovered(lab: &Lab, what: &str, names: &mut Vec<String>) -> (bool, Dig) {
    let name = unique(&format!("back-{what}"), lab);
    let r = dig_until(&lab.node("alice").ns, MAGIC, &name, "A", SETTLE, |d| {
        d.is_a(&[OUTSIDE_ANSWER])
    });
    names.push(name);
    r
}

pub fn phase_json(
    failed: &(Dig, f64),
    matched: Option<u64>,
    back: &(bool, Dig),
) -> serde_json::Value {
    json!({
        "while_cut": failed.0.rcode(),
        "seconds_to_answer": (failed.1 * 10.0).round() / 10.0,
        "cut_rule_packets": matched,
        "after_restore": back.1.rcode(),
        "after_restore_answer": back.1.data("A"),
    })
}

/// Runs `rustynet-lab dns-flood` at Magic DNS inside `node` for `seconds`
/// while sampling the daemon's VmRSS; returns the flood's report, the peak
/// RSS (KiB) and the number of samples.
pub fn flood(
    c: &Cluster<'_>,
    lab: &Lab,
    node: &str,
    pid: u32,
    seconds: u64,
) -> anyhow::Result<(FloodReport, u64, usize)> {
    let bin = c.bins.lab.to_string_lossy().into_owned();
    let log = lab.path("flood.json");
    let target = format!("{MAGIC}:53");
    let secs = seconds.to_string();
    let mut child = lab.node(node).ns.spawn(
        &[&bin, "dns-flood", "--target", &target, "--seconds", &secs],
        &log,
    )?;
    let started = Instant::now();
    let (mut peak, mut samples) = (vm_rss_kib(pid)?, 0);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(seconds + 60) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dns-flood did not finish");
        }
        if let Ok(rss) = vm_rss_kib(pid) {
            peak = peak.max(rss);
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let out = std::fs::read_to_string(&log)?;
    if !status.success() {
        bail!("dns-flood failed: {out}");
    }
    let report =
        serde_json::from_str(out.trim()).map_err(|e| anyhow!("dns-flood output {out:?}: {e}"))?;
    Ok((report, peak, samples))
}

/// A helper process of a test, killed on drop.
pub struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another DNS server in the lab's internet, at `addr` (added to the
/// internet's link), answering every name with `answer`.
pub fn second_resolver(
    c: &Cluster<'_>,
    addr: &str,
    answer: Ipv4Addr,
) -> anyhow::Result<ChildGuard> {
    let inet = &c.lab.internet;
    let link = inet.stdout(&["ip", "-o", "-4", "addr", "show", "to", &DNS_IP.to_string()])?;
    let ifname = link
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("no internet link in {link:?}"))?
        .to_owned();
    inet.ip(&["addr", "add", &format!("{addr}/24"), "dev", &ifname])?;
    let bin = c.bins.lab.to_string_lossy().into_owned();
    let listen = format!("{addr}:53");
    let answer = answer.to_string();
    let log = c.lab.path(&format!("dns-{addr}.log"));
    Ok(ChildGuard(inet.spawn(
        &[&bin, "serve-dns", "--listen", &listen, "--answer", &answer],
        &log,
    )?))
}

/// Captures `node`'s physical link into `<node>-<tag>.pcap`.
pub fn capture(lab: &Lab, node: &str, tag: &str) -> anyhow::Result<Capture> {
    let n = lab.node(node);
    Capture::start(&n.ns, &n.ifname, lab.path(&format!("{node}-{tag}.pcap")))
}

/// `up` arguments for `node` against the cluster's control, asking for `hostname`.
pub fn up_args(c: &Cluster<'_>, key: &str, hostname: &str) -> Vec<String> {
    [
        "up",
        "--control",
        &c.url,
        "--ca-cert",
        &c.ca.to_string_lossy(),
        "--auth-key",
        key,
        "--hostname",
        hostname,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Whether resolv.conf text is Rustynet's takeover pointing at Magic DNS.
pub fn is_takeover(text: &str) -> bool {
    text.starts_with("# rustynet-managed:")
        && text.contains(&format!("nameserver {MAGIC}"))
        && text.contains(&format!("search {SUFFIX}"))
}
