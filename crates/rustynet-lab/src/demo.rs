//! `rustynet-lab demo`: control and three nodes in namespaces, and each
//! capability shown as it lands: the mesh, an exit node, the LAN toggle, the
//! kill switch and Magic DNS; then nodes behind NAT: hole punching, the
//! relay, failover and failback ([`crate::demo_paths`]). Every line it
//! prints is a live observation.

use std::time::{Duration, Instant};

use rustynet_lab::cluster::{Cluster, wait_for};
use rustynet_lab::services::seen_ip;
use rustynet_lab::topology::{DNS_IP, ECHO_IP, LAN_HOST_IP};
use rustynet_lab::{Capture, Lab, NodeSpec};

/// The demo's policy: staff mesh, staff may use the exit, only alice may
/// reach the exit's LAN and only on 22 and 443.
pub const POLICY: &str = r#"{
  "groups": {"group:staff": ["alice", "bob"]},
  "tag_owners": {"tag:exit": ["admin"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["group:staff:*"]},
    {"action": "accept", "src": ["group:staff"], "dst": ["tag:exit:*"]},
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:22,443"], "proto": "tcp"}
  ],
  "exit_nodes": [{"users": ["group:staff"], "nodes": ["tag:exit"]}]
}"#;

pub(crate) struct Step {
    started: Instant,
}

impl Step {
    pub(crate) fn title(title: &str) -> Self {
        println!("\n== {title}");
        Self {
            started: Instant::now(),
        }
    }
    pub(crate) fn ok(&self, what: impl AsRef<str>) {
        println!(
            "  ✔ {} ({:.1}s)",
            what.as_ref(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

pub(crate) fn check(cond: bool, what: impl AsRef<str>) -> anyhow::Result<()> {
    if cond {
        return Ok(());
    }
    // RUSTYNET_LAB_HOLD=SECS keeps the failed lab up for inspection.
    if let Some(secs) = std::env::var("RUSTYNET_LAB_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        eprintln!("holding the lab for {secs}s (namespaces: ip netns list)");
        std::thread::sleep(Duration::from_secs(secs));
    }
    anyhow::bail!("demo check failed: {}", what.as_ref())
}

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    let s = Step::title(
        "lab: router, internet (203.0.113.0/24), control, nodes alice, bob, exit (+LAN 192.168.77.0/24)",
    );
    let lab = Lab::new(&[
        NodeSpec::new("alice"),
        NodeSpec::new("bob"),
        NodeSpec::with_lan("exit"),
    ])?;
    let mut c = Cluster::start(&lab, "10m")?;
    c.set_policy(POLICY)?;
    s.ok(format!(
        "control up at {} (TLS 1.3, pinned CA {})",
        c.url,
        c.ca.display()
    ));

    let s = Step::title("enroll: rustynet up on every node");
    let alice_key = c.preauth("alice", &[])?;
    let bob_key = c.preauth("bob", &[])?;
    let exit_key = c.preauth("admin", &["tag:exit"])?;
    for n in ["alice", "bob", "exit"] {
        c.start_daemon(n)?;
    }
    c.up("alice", &alice_key, &[])?;
    c.up("bob", &bob_key, &[])?;
    c.up(
        "exit",
        &exit_key,
        &[
            "--advertise-exit-node",
            "--advertise-routes",
            "192.168.77.0/24",
        ],
    )?;
    let alice = c.wait_applied("alice", 2)?;
    let bob = c.wait_applied("bob", 2)?;
    c.wait_applied("exit", 2)?;
    s.ok(format!(
        "all three in dataplane_applied; alice = {}, bob = {}",
        alice
            .self_node
            .as_ref()
            .map(|x| x.tunnel_ip.to_string())
            .unwrap_or_default(),
        bob.self_node
            .as_ref()
            .map(|x| x.tunnel_ip.to_string())
            .unwrap_or_default()
    ));
    println!("  engine: {}", alice.backend);

    let s = Step::title("mesh: alice -> bob over the encrypted tunnel");
    let bob_ip = bob
        .self_node
        .as_ref()
        .map(|x| x.tunnel_ip)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    let cap = Capture::start(
        &lab.node("alice").ns,
        &lab.node("alice").ifname,
        lab.path("mesh.pcap"),
    )?;
    let pong = wait_for(Duration::from_secs(15), || {
        c.rustynet("alice", &["ping", "bob"])
            .ok()
            .filter(|o| o.contains("pong"))
    });
    check(pong.is_some(), "alice could not ping bob")?;
    let marker = "rustynet-demo-cleartext-marker";
    let _ = lab.node("alice").ns.exec(&[
        "ping",
        "-c",
        "3",
        "-p",
        &hex(marker.as_bytes()[..16].as_ref()),
        &bob_ip.to_string(),
    ]);
    let leaked = cap.raw_contains(&marker.as_bytes()[..16]);
    let packets = cap.stop("")?;
    let non_udp = packets
        .iter()
        .filter(|p| !p.contains(" UDP") && !p.contains(".41641"))
        .count();
    s.ok(format!(
        "{} — {} packets on alice's link, {} not tunnel UDP, marker in cleartext: {}",
        pong.unwrap_or_default().trim(),
        packets.len(),
        non_udp,
        leaked
    ));
    check(!leaked, "cleartext marker on the wire")?;

    let s = Step::title("exit node: alice sends all internet traffic through exit");
    let direct = c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"));
    println!(
        "  before: internet echo sees alice as {}",
        direct
            .answer
            .as_deref()
            .and_then(seen_ip)
            .map(|i| i.to_string())
            .unwrap_or("?".into())
    );
    c.rustynet("alice", &["exit-node", "select", "exit"])?;
    let via = wait_for(Duration::from_secs(15), || {
        let r = c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"));
        r.answer
            .as_deref()
            .and_then(seen_ip)
            .filter(|ip| *ip == std::net::IpAddr::V4(lab.node("exit").addr))
    });
    if via.is_none() {
        eprintln!("{}\n{}", c.diagnose("alice"), c.diagnose("exit"));
    }
    check(
        via.is_some(),
        "internet did not see the exit node's address",
    )?;
    s.ok(format!(
        "internet echo now sees alice as {} (the exit node); kill switch on",
        lab.node("exit").addr
    ));

    let s = Step::title("LAN toggle: the exit node's LAN 192.168.77.0/24");
    let lan = |port: u16| {
        c.probe(
            &lab.node("alice").ns,
            "tcp",
            &format!("{LAN_HOST_IP}:{port}"),
        )
        .ok
    };
    check(!lan(22), "LAN reachable with the toggle off")?;
    s.ok("lan-access off: 192.168.77.10:22 unreachable");
    c.rustynet("alice", &["lan-access", "on"])?;
    let reach = wait_for(Duration::from_secs(15), || lan(22).then_some(()));
    check(reach.is_some(), "LAN not reachable with the toggle on")?;
    s.ok("lan-access on: 192.168.77.10:22 reachable (policy allows tcp/22,443)");
    check(!lan(8080), "port 8080 must stay closed")?;
    s.ok("192.168.77.10:8080 still unreachable (not in the policy)");
    c.rustynet("alice", &["lan-access", "off"])?;

    let s =
        Step::title("kill switch: the exit node's daemon is killed (SIGKILL) while alice uses it");
    let cap = Capture::start(
        &lab.node("alice").ns,
        &lab.node("alice").ifname,
        lab.path("killswitch.pcap"),
    )?;
    c.kill_daemon("exit");
    let started = Instant::now();
    let (mut probes, mut answered) = (0, 0);
    while started.elapsed() < Duration::from_secs(10) {
        probes += 1;
        if c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"))
            .ok
        {
            answered += 1;
        }
    }
    // A leak is a packet alice sends to the internet host outside the
    // tunnel. (Late answers to a connection opened before the exit was
    // selected, e.g. a retransmitted SYN-ACK, may still arrive: inbound.)
    let alice_addr = lab.node("alice").addr;
    let leaks = cap.stop(&format!("src host {alice_addr} and dst host {ECHO_IP}"))?;
    s.ok(format!("10 s with the exit down: {answered}/{probes} probes answered, {} packets from alice to the internet host on her link", leaks.len()));
    check(
        leaks.is_empty(),
        format!("traffic left outside the tunnel while the exit was down: {leaks:#?}"),
    )?;
    c.start_daemon("exit")?;
    let back = wait_for(Duration::from_secs(30), || {
        c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"))
            .ok
            .then_some(())
    });
    check(back.is_some(), "connectivity did not come back")?;
    s.ok("exit daemon restarted (restored its last-known-safe generation); traffic flows again");

    let s = Step::title("kill switch: alice's tunnel interface is deleted under the daemon");
    let cap = Capture::start(
        &lab.node("alice").ns,
        &lab.node("alice").ifname,
        lab.path("tundel.pcap"),
    )?;
    lab.node("alice").ns.ip(&["link", "del", "rn0"])?;
    let _ = c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"));
    let leaks = cap.stop(&format!("src host {alice_addr} and dst host {ECHO_IP}"))?;
    check(
        leaks.is_empty(),
        format!("packets leaked while the tunnel was gone: {leaks:#?}"),
    )?;
    let back = wait_for(Duration::from_secs(30), || {
        c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"))
            .ok
            .then_some(())
    });
    check(back.is_some(), "connectivity did not come back")?;
    s.ok(format!("{} packets to the internet host outside the tunnel; the daemon recreated the tunnel and traffic flows again", leaks.len()));

    let s = Step::title("Magic DNS");
    let dig = |args: &[&str]| {
        lab.node("alice")
            .ns
            .stdout(&[&["dig", "+short", "+time=2", "+tries=1"], args].concat())
            .unwrap_or_default()
    };
    let answer = dig(&["@100.100.100.100", "bob.rustynet.internal"]);
    check(
        answer.trim() == bob_ip.to_string(),
        format!("bob.rustynet.internal -> {answer:?}"),
    )?;
    s.ok(format!("bob.rustynet.internal -> {}", answer.trim()));
    let outside = dig(&["@100.100.100.100", "example.com"]);
    s.ok(format!(
        "example.com -> {} (forwarded through the exit node)",
        outside.trim()
    ));
    let direct = dig(&[&format!("@{DNS_IP}"), "example.com"]);
    check(
        direct.trim().is_empty() || direct.contains("timed out"),
        "direct DNS query escaped",
    )?;
    s.ok(format!(
        "query straight to {DNS_IP}: blocked by protected DNS"
    ));

    let s = Step::title("exit-node off: direct egress back");
    c.rustynet("alice", &["exit-node", "off"])?;
    let direct = wait_for(Duration::from_secs(15), || {
        c.probe(&lab.node("alice").ns, "tcp", &format!("{ECHO_IP}:7"))
            .answer
            .as_deref()
            .and_then(seen_ip)
            .filter(|ip| *ip == std::net::IpAddr::V4(lab.node("alice").addr))
    });
    check(direct.is_some(), "direct egress did not come back")?;
    s.ok("internet echo sees alice's own address again; kill switch off");
    drop(c);
    drop(lab);

    crate::demo_paths::run()?;
    println!("\nAll capabilities shown. Labs torn down.");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
