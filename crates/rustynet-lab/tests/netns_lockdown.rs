//! Lockdown mode (issue 11, Mullvad's "always require VPN"): with
//! `rustynet set lockdown on` nothing but the tunnel (and the daemon's own
//! marked sockets) leaves the node, without any exit node selected, and the
//! blocking table stays when the daemon stops and after `rustynetd
//! --cleanup` (ExecStopPost). A capture on the node's link proves no probe
//! to the internet left while a marked canary did (the capture was live).
//! `set lockdown off` opens the internet again.
//!
//! Root only: `cargo test -p rustynet-lab --test netns_lockdown`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exit_support;

use exit_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::{Cluster, Lab, NodeSpec};

fn table_present(ns: &rustynet_lab::Netns) -> bool {
    ns.succeeds(&["nft", "list", "table", "inet", "rustynet"])
}

fn open(c: &Cluster<'_>) -> bool {
    tcp_quick(c, &c.lab.node("alice").ns, &echo4(), 1500).ok
}

#[test]
fn lockdown_blocks_without_an_exit_and_while_the_daemon_is_stopped() {
    require_tools(&["tcpdump"]);
    let lab = Lab::new(&[NodeSpec::new("alice")]).unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    let ns = &lab.node("alice").ns;
    c.set_policy(POLICY).unwrap();
    c.start_daemon("alice").unwrap();
    let key = c.preauth("alice", &[]).unwrap();
    c.up("alice", &key, &[]).unwrap();
    c.wait_applied("alice", 0).unwrap();
    assert!(
        open(&c),
        "positive control: the internet is open before lockdown"
    );

    let out = c.rustynet("alice", &["set", "lockdown", "on"]).unwrap();
    assert!(out.contains("lockdown: on"), "{out}");
    let s = c.status("alice").unwrap();
    assert!(
        s.lockdown && s.kill_switch && s.exit_node.is_none(),
        "{s:?}"
    );
    assert!(
        !open(&c),
        "internet open under lockdown\n{}",
        c.diagnose("alice")
    );
    let node = c.node("alice").unwrap();
    let (state_dir, daemon, resolv) = (
        node.state_dir.clone(),
        c.bins.daemon.clone(),
        node.resolv_conf.clone(),
    );
    assert!(
        state_dir.join("protect.nft.json").is_file(),
        "lockdown must arm the early-boot ruleset"
    );
    let mark = bypass_mark(ns).unwrap();

    // The daemon stops (SIGTERM) and ExecStopPost runs: still blocked.
    c.stop_daemon("alice");
    let cleanup = ns
        .command(&daemon)
        .args(["--cleanup", "--state-dir"])
        .arg(&state_dir)
        .args(["--tun", "rn0", "--resolv-conf"])
        .arg(&resolv)
        .output()
        .unwrap();
    assert!(
        cleanup.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert!(
        table_present(ns),
        "--cleanup removed the table under lockdown"
    );
    let cap = capture_node(&lab, "alice", "lockdown-stopped").unwrap();
    let mut answered = 0;
    for _ in 0..3 {
        answered += usize::from(open(&c));
        answered += usize::from(c.probe(ns, "udp", &echo4()).ok);
        canary(ns, mark);
    }
    let pcap = cap.stop_raw();
    assert_eq!(answered, 0, "a probe was answered with the daemon stopped");
    let leaked = count(&pcap, &internet_filter()).unwrap();
    assert_eq!(leaked, 0, "probes left the node with the daemon stopped");
    let canaries = count(&pcap, &canary_filter()).unwrap();
    assert!(canaries > 0, "the capture saw no canary: not live");

    // An admin turns it off: the internet flows again.
    c.start_daemon("alice").unwrap();
    c.wait_applied("alice", 0).unwrap();
    assert!(!open(&c), "lockdown must hold across a restart");
    let out = c.rustynet("alice", &["set", "lockdown", "off"]).unwrap();
    assert!(out.contains("lockdown: off"), "{out}");
    let flows = wait_for(SETTLE, || open(&c).then_some(()));
    assert!(
        flows.is_some(),
        "internet still blocked after lockdown off\n{}",
        c.diagnose("alice")
    );
    assert!(
        !state_dir.join("protect.nft.json").exists(),
        "lockdown off must disarm"
    );
    let s = c.status("alice").unwrap();
    assert!(!s.lockdown && !s.kill_switch, "{s:?}");
}
