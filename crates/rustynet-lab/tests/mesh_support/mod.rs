//! Shared helpers of the end-to-end mesh and trust suites (issue 3): run a
//! case and record its evidence, traffic through the tunnel from inside a
//! node's namespace, dataplane snapshots, counters, the node's sealed state,
//! and the secret-leak scan every case ends with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rustynet_lab::cluster::wait_for;
use rustynet_lab::{Cluster, Lab, Netns};
use rustynet_proto::ipc::{DataplaneState, StatusDoc};
use rustynet_proto::{Netmap, NodeId, SignedBody, SignedEnvelope};
use serde_json::Value;

/// Everyone may reach everyone.
pub const MESH_POLICY: &str = r#"{
  "groups": {"group:staff": ["alice", "bob", "carol"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:*"]}
  ]
}"#;

/// Generous: the machine is shared by several suites.
pub const SETTLE: Duration = Duration::from_secs(30);

pub use rustynet_lab::report::Evidence;

/// Runs one case, writes its evidence record (pass or fail, with the wall
/// time and the error), then fails the test if the case failed.
pub fn run_case(
    report: &'static str,
    case: &str,
    body: impl FnOnce(&mut Evidence) -> anyhow::Result<()>,
) {
    rustynet_lab::require_lab();
    // Build (or check) the product binaries first, so the case's wall time
    // is the case's; a build failure surfaces again inside the case.
    let _ = rustynet_lab::bins::bins();
    if let Err(e) = rustynet_lab::report::run_recorded(report, case, body) {
        panic!("case {case} failed: {e:#}");
    }
}

/// CLI arguments as shown in labels and failure messages: never the
/// pre-auth key.
fn redacted(args: &[&str]) -> String {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if i > 0 && args[i - 1] == "--auth-key" {
                "[redacted]"
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every CLI output and status document of a run, for the leak scan.
#[derive(Default)]
pub struct Transcript {
    texts: RefCell<Vec<(String, String)>>,
}

impl Transcript {
    /// Keeps `text` under `label`.
    pub fn push(&self, label: impl Into<String>, text: impl Into<String>) {
        self.texts.borrow_mut().push((label.into(), text.into()));
    }

    /// Runs the CLI on `node` (as `user` when given) and keeps its output.
    pub fn cli(
        &self,
        c: &Cluster<'_>,
        node: &str,
        user: Option<(u32, u32)>,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let out = c.cli_as(node, user, args)?;
        self.push(
            format!("rustynet {} on {node} as {user:?}", redacted(args)),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
        Ok(out)
    }

    /// Runs the CLI as root and fails on a non-zero exit.
    pub fn ok(&self, c: &Cluster<'_>, node: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(c, node, None, args)?;
        ensure!(
            out.status.success(),
            "rustynet {} on {node}: {}",
            redacted(args),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `rustynet up` (the pre-auth key goes only on the command line).
    pub fn up(
        &self,
        c: &Cluster<'_>,
        node: &str,
        key: &str,
        extra: &[&str],
    ) -> anyhow::Result<String> {
        let ca = c.ca.to_string_lossy().into_owned();
        let mut args = vec![
            "up",
            "--control",
            &c.url,
            "--ca-cert",
            &ca,
            "--auth-key",
            key,
            "--hostname",
            node,
        ];
        args.extend_from_slice(extra);
        self.ok(c, node, &args)
    }

    /// `status --json`, parsed (the raw document is kept).
    pub fn status(&self, c: &Cluster<'_>, node: &str) -> anyhow::Result<StatusDoc> {
        let text = self.ok(c, node, &["--json", "status"])?;
        serde_json::from_str(&text).with_context(|| format!("status of {node}: {text}"))
    }

    /// Waits until `pred` holds for `node`'s status (keeping every document).
    pub fn wait_status(
        &self,
        c: &Cluster<'_>,
        node: &str,
        timeout: Duration,
        pred: impl Fn(&StatusDoc) -> bool,
    ) -> anyhow::Result<StatusDoc> {
        let mut last = None;
        wait_for(timeout, || {
            let s = self.status(c, node).ok()?;
            let hit = pred(&s);
            last = Some(s.clone());
            hit.then_some(s)
        })
        .ok_or_else(|| {
            anyhow!(
                "{node}: condition not reached in {timeout:?}; last status: {last:?}\n{}",
                c.diagnose(node)
            )
        })
    }

    /// Waits for a map with `peers` peers to be applied.
    pub fn wait_applied(
        &self,
        c: &Cluster<'_>,
        node: &str,
        peers: usize,
    ) -> anyhow::Result<StatusDoc> {
        self.wait_status(c, node, SETTLE, |s| {
            matches!(
                s.state,
                DataplaneState::DataplaneApplied | DataplaneState::ExitActive
            ) && s.peers.len() == peers
        })
    }

    fn all(&self) -> Vec<(String, String)> {
        self.texts.borrow().clone()
    }
}

/// Waits until every node in `nodes` has all its peers online and no node's
/// generation moves for a few seconds: control sends a new map whenever a
/// peer comes online or reports endpoints, so "nothing changed" comparisons
/// start from a quiet network.
pub fn wait_settled(t: &Transcript, c: &Cluster<'_>, nodes: &[&str]) -> anyhow::Result<()> {
    let generations = || -> Option<Vec<u64>> {
        nodes
            .iter()
            .map(|n| {
                let s = t.status(c, n).ok()?;
                s.peers.iter().all(|p| p.online).then_some(s.generation)
            })
            .collect()
    };
    let mut last: Option<Vec<u64>> = None;
    wait_for(Duration::from_secs(60), || {
        let now = generations();
        let quiet = now.is_some() && now == last;
        last = now;
        if !quiet {
            std::thread::sleep(Duration::from_secs(2));
        }
        quiet.then_some(())
    })
    .ok_or_else(|| anyhow!("the network did not settle: generations {last:?}"))
}

/// The node's tunnel address from its status.
pub fn tunnel_ip(s: &StatusDoc) -> anyhow::Result<Ipv4Addr> {
    s.self_node
        .as_ref()
        .map(|n| n.tunnel_ip)
        .filter(|ip| !ip.is_unspecified())
        .ok_or_else(|| anyhow!("no tunnel address in {s:?}"))
}

/// Runs `f` on a thread that entered `ns`'s network namespace (the thread
/// and its sockets live there; the rest of the test process does not move).
pub fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a descriptor we own; it affects this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread in {path} panicked"))?
    })
}

/// What one TCP exchange with the lab echo service saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The address the service saw us at.
    pub seen: String,
    /// What it echoed back.
    pub echoed: String,
}

/// From inside `ns`: connects to the echo service at `addr`, reads its
/// `peer IP:PORT` greeting, sends `line` and reads the echo.
pub fn tcp_exchange(ns: &Netns, addr: SocketAddr, line: &str) -> anyhow::Result<Exchange> {
    let line = line.to_owned();
    in_netns(ns, move || -> anyhow::Result<Exchange> {
        let timeout = Duration::from_secs(3);
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut greeting = String::new();
        reader.read_line(&mut greeting)?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        let mut echoed = String::new();
        reader.read_line(&mut echoed)?;
        Ok(Exchange {
            seen: greeting
                .trim()
                .strip_prefix("peer ")
                .unwrap_or_default()
                .to_owned(),
            echoed: echoed.trim().to_owned(),
        })
    })?
}

/// Retries [`tcp_exchange`] until it succeeds or `timeout` passes.
pub fn tcp_exchange_within(
    ns: &Netns,
    addr: SocketAddr,
    line: &str,
    timeout: Duration,
) -> anyhow::Result<Exchange> {
    let mut last = None;
    wait_for(timeout, || match tcp_exchange(ns, addr, line) {
        Ok(x) => Some(x),
        Err(e) => {
            last = Some(e);
            None
        }
    })
    .ok_or_else(|| anyhow!("TCP to {addr} from {} failed: {last:?}", ns.name()))
}

/// `ping` from inside `ns`; true when at least one reply came back.
/// `pattern` (up to 16 bytes) fills the payload.
pub fn ping(ns: &Netns, ip: Ipv4Addr, count: u32, pattern: Option<&[u8]>) -> bool {
    let count = count.to_string();
    let hex: String = pattern
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ip = ip.to_string();
    // No -w: with a deadline ping keeps sending until it gets `count`
    // replies, which turns a "must fail" probe into 40 packets.
    let mut args = vec!["ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "2"];
    if pattern.is_some() {
        args.extend(["-p", &hex]);
    }
    args.push(&ip);
    ns.succeeds(&args)
}

/// Retries a 1-packet ping until it is answered.
pub fn ping_within(ns: &Netns, ip: Ipv4Addr, timeout: Duration) -> bool {
    wait_for(timeout, || ping(ns, ip, 1, None).then_some(())).is_some()
}

/// A helper process killed on drop.
pub struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the lab echo service on `ip:7` inside `node`'s namespace and
/// waits until it accepts.
pub fn serve_echo(c: &Cluster<'_>, node: &str, ip: Ipv4Addr) -> anyhow::Result<Service> {
    let ns = &c.lab.node(node).ns;
    let lab_bin = c.bins.lab.to_string_lossy().into_owned();
    let addr = SocketAddr::from((ip, 7));
    let child = ns.spawn(
        &[&lab_bin, "serve-echo", "--listen", &addr.to_string()],
        &c.lab.path(&format!("echo-{node}.log")),
    )?;
    let service = Service(child);
    let up = wait_for(Duration::from_secs(15), || {
        in_netns(ns, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        })
        .ok()
        .filter(|ok| *ok)
    });
    ensure!(up.is_some(), "echo service on {node} {addr} did not start");
    Ok(service)
}

/// The dataplane of a node as the OS shows it (counters masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// State, generation and peers (name, tunnel address, online, exit)
    /// from `status --json`.
    pub status: String,
    /// `ip route show table all` (both families, sorted, without the
    /// kernel's link-local host routes) and `ip rule` (both families).
    pub routes: String,
    /// `nft list ruleset` with packet/byte counters masked.
    pub nft: String,
}

/// Masks `packets N bytes M` so live counters do not count as a change.
pub fn mask_counters(ruleset: &str) -> String {
    ruleset
        .lines()
        .map(|line| {
            let mut out = Vec::new();
            let mut words = line.split(' ').peekable();
            while let Some(w) = words.next() {
                out.push(w);
                if (w == "packets" || w == "bytes")
                    && words.peek().is_some_and(|n| n.parse::<u64>().is_ok())
                {
                    words.next();
                    out.push("N");
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops the kernel's own IPv6 link-local host routes: IPv6 autoconf adds
/// them asynchronously (a lab link may get its address a moment after the
/// test starts) and a re-created TUN gets a new random one. Neither is part
/// of the dataplane the daemon manages.
pub fn without_link_local(routes: &str) -> String {
    routes
        .lines()
        .filter(|l| !l.starts_with("local fe80:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Takes a [`Snapshot`] of `node`.
pub fn snapshot(t: &Transcript, c: &Cluster<'_>, node: &str) -> anyhow::Result<Snapshot> {
    let ns = &c.lab.node(node).ns;
    let s = t.status(c, node)?;
    let peers: Vec<String> = s
        .peers
        .iter()
        .map(|p| {
            format!(
                "{} {} {} online={} exit={}",
                p.name, p.dns_name, p.tunnel_ip, p.online, p.exit_node
            )
        })
        .collect();
    let status = format!(
        "state={} generation={} self={:?} exit={:?} lan={} kill_switch={} peers={peers:?}",
        s.state.as_str(),
        s.generation,
        s.self_node,
        s.exit_node,
        s.lan_access,
        s.kill_switch
    );
    let mut routes = String::new();
    for args in [
        &["ip", "route", "show", "table", "all"][..],
        &["ip", "rule", "show"],
        &["ip", "-6", "rule", "show"],
    ] {
        let mut lines: Vec<String> = without_link_local(&ns.stdout(args)?)
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        routes.push_str(&format!("# {}\n{}\n", args.join(" "), lines.join("\n")));
    }
    let nft = mask_counters(&ns.stdout(&["nft", "list", "ruleset"])?);
    Ok(Snapshot {
        status,
        routes,
        nft,
    })
}

/// Fails with a readable diff when two snapshots differ.
pub fn ensure_same(what: &str, before: &Snapshot, after: &Snapshot) -> anyhow::Result<()> {
    for (part, a, b) in [
        ("status", &before.status, &after.status),
        ("routes", &before.routes, &after.routes),
        ("nft ruleset", &before.nft, &after.nft),
    ] {
        ensure!(
            a == b,
            "{what}: {part} changed\n--- before\n{a}\n--- after\n{b}"
        );
    }
    Ok(())
}

/// Packets counted by the rule of `chain` carrying `comment`.
pub fn rule_counter(ns: &Netns, chain: &str, comment: &str) -> anyhow::Result<u64> {
    let text = ns.stdout(&["nft", "list", "chain", "inet", "rustynet", chain])?;
    let quoted = format!("comment \"{comment}\"");
    let line = text
        .lines()
        .find(|l| l.contains(&quoted))
        .ok_or_else(|| anyhow!("no rule {comment:?} in chain {chain}:\n{text}"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            return words
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| anyhow!("unparsable counter in {line:?}"));
        }
    }
    bail!("rule {comment:?} has no counter: {line:?}")
}

/// `rustynet-control nodes list --json`.
pub fn control_nodes(c: &Cluster<'_>) -> anyhow::Result<Vec<Value>> {
    let text = c.admin(&["nodes", "list", "--json"])?;
    Ok(serde_json::from_str(&text)?)
}

/// The fields of every line of a JSON log whose `message` is `message`
/// (flattened events as the daemon logs them, or under `fields` as control
/// does).
pub fn log_events(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| match v.get("fields") {
            Some(f) if f.is_object() => f.clone(),
            _ => v,
        })
        .filter(|v| v.get("message").and_then(Value::as_str) == Some(message))
        .collect()
}

/// What a node's sealed state file holds (read directly, for crafting maps).
#[derive(Debug, Clone)]
pub struct StoredState {
    /// The node id control assigned.
    pub node_id: NodeId,
    /// Replay high-water mark.
    pub high_water: u64,
    /// The last applied envelope, exactly as received.
    pub last_known_safe: SignedEnvelope,
}

/// Reads `state/state.json` (no MAC check: the test only needs the content).
pub fn read_state(state_dir: &Path) -> anyhow::Result<StoredState> {
    /// The fields this reads; typed, because the envelope's signed body must
    /// keep its exact bytes (a `Value` would reorder its keys).
    #[derive(serde::Deserialize)]
    struct Doc {
        enrollment: Enrollment,
        high_water: u64,
        last_known_safe: SignedEnvelope,
    }
    #[derive(serde::Deserialize)]
    struct Enrollment {
        node_id: NodeId,
    }
    let path = state_dir.join("state.json");
    let sealed: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let body = STANDARD.decode(
        sealed
            .get("body")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{} has no body", path.display()))?,
    )?;
    let doc: Doc = serde_json::from_slice(&body)?;
    Ok(StoredState {
        node_id: doc.enrollment.node_id,
        high_water: doc.high_water,
        last_known_safe: doc.last_known_safe,
    })
}

/// Opens a signed envelope without checking it (test side only).
pub fn open_envelope(env: &SignedEnvelope) -> anyhow::Result<SignedBody<Netmap>> {
    Ok(serde_json::from_slice(env.body_bytes())?)
}

/// One secret to look for, in every encoding it could be printed in.
#[derive(Debug, Clone)]
pub struct Secret {
    /// What it is (never the value).
    pub label: String,
    /// Its encodings.
    pub needles: Vec<String>,
}

impl Secret {
    /// A key given as raw bytes: standard/URL-safe base64 (padded or not)
    /// and hex.
    pub fn key(label: String, bytes: &[u8]) -> Self {
        let mut needles = vec![
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            bytes.iter().map(|b| format!("{b:02x}")).collect(),
            bytes.iter().map(|b| format!("{b:02X}")).collect(),
        ];
        needles.sort();
        needles.dedup();
        Self { label, needles }
    }

    /// A secret string as typed (a pre-auth key).
    pub fn text(label: String, value: &str) -> Self {
        Self {
            label,
            needles: vec![value.to_owned()],
        }
    }

    fn found_in(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n.as_str()))
    }
}

/// The node keys' text as the daemon stores it: the `keys` field of its
/// sealed `state.json` (plain in the lab: no key-encryption secret).
fn stored_keys_text(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("state.json");
    let sealed: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    sealed
        .get("keys")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} holds no node keys", path.display()))
}

/// The private keys in `node`'s sealed state (tunnel and signing).
pub fn node_key_secrets(c: &Cluster<'_>, node: &str) -> anyhow::Result<Vec<Secret>> {
    let dir = c
        .node(node)
        .ok_or_else(|| anyhow!("no daemon on {node}"))?
        .state_dir
        .clone();
    let text = stored_keys_text(&dir)?;
    let mut out = Vec::new();
    for (prefix, what) in [("tunnel ", "tunnel"), ("signing ", "signing")] {
        let b64 = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .ok_or_else(|| anyhow!("{node}: no {what} key in the stored keys"))?;
        let bytes = STANDARD.decode(b64.trim())?;
        ensure!(bytes.len() == 32, "{node}: {what} key is not 32 bytes");
        out.push(Secret::key(format!("{node} {what} private key"), &bytes));
    }
    Ok(out)
}

/// Every log file under the lab directory (daemons, control, helpers).
pub fn lab_logs(lab: &Lab) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "log") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&lab.dir, &mut files);
    files
        .into_iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned();
            (p.display().to_string(), text)
        })
        .collect()
}

/// What a leak scan looked at and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeakScan {
    /// Secrets searched for.
    pub secrets: usize,
    /// Texts searched (log files, CLI outputs, status documents).
    pub texts: usize,
    /// Bytes searched.
    pub bytes: usize,
    /// `secret label in text label` for every hit.
    pub hits: Vec<String>,
}

/// Searches every log of the lab and everything in `t` for the private keys
/// of `nodes` and for `extra` secrets (pre-auth keys). Also checks the key
/// state file that holds them is found by the same search, so a miss means
/// absence, not a wrong encoding.
pub fn leak_scan(
    c: &Cluster<'_>,
    t: &Transcript,
    nodes: &[&str],
    extra: Vec<Secret>,
) -> anyhow::Result<LeakScan> {
    let mut secrets = extra;
    for node in nodes {
        let keys = node_key_secrets(c, node)?;
        let file = std::fs::read_to_string(
            c.node(node)
                .map(|n| n.state_dir.join("state.json"))
                .unwrap_or_default(),
        )?;
        for k in &keys {
            ensure!(
                k.found_in(&file),
                "the scan cannot find {} in the key file itself",
                k.label
            );
        }
        secrets.extend(keys);
    }
    let mut texts = lab_logs(c.lab);
    texts.extend(t.all());
    let mut scan = LeakScan {
        secrets: secrets.len(),
        texts: texts.len(),
        bytes: texts.iter().map(|(_, x)| x.len()).sum(),
        hits: vec![],
    };
    for (label, text) in &texts {
        for s in &secrets {
            if s.found_in(text) {
                scan.hits.push(format!("{} in {label}", s.label));
            }
        }
    }
    Ok(scan)
}

/// [`leak_scan`], failing on any hit.
pub fn ensure_no_leaks(
    c: &Cluster<'_>,
    t: &Transcript,
    nodes: &[&str],
    extra: Vec<Secret>,
) -> anyhow::Result<LeakScan> {
    let scan = leak_scan(c, t, nodes, extra)?;
    ensure!(scan.hits.is_empty(), "secrets leaked: {:?}", scan.hits);
    Ok(scan)
}

/// Reads a pcap with tcpdump and returns the decoded lines matching `filter`.
pub fn read_pcap(path: &Path, filter: &str) -> anyhow::Result<Vec<String>> {
    let file = path.to_string_lossy().into_owned();
    let mut args = vec!["-r", &file, "-n", "-tt"];
    args.extend(filter.split_whitespace());
    let out = std::process::Command::new("tcpdump").args(&args).output()?;
    ensure!(
        out.status.success(),
        "tcpdump -r {file} {filter}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// Whether the raw bytes of `path` contain `needle`.
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).is_ok_and(|d| d.windows(needle.len()).any(|w| w == needle))
}
