//! `local-lan` (issue 11): a node using an exit node reaches the LAN it is
//! attached to only while `local-lan` is on, and never a private prefix a
//! route merely points at (a DHCP-pushed route, TunnelVision/LocalNet):
//! the capture on the LAN side shows no packet for it left the node.
//!
//! alice has the lab LAN on-link (192.168.77.0/24, host .10 with echo
//! services) and an extra route `10.99.0.0/24 via 192.168.77.10 proto dhcp`
//! to a second echo host on the LAN host (10.99.0.10). The exit advertises
//! no routes, so nothing about alice's LAN comes from the policy.
//!
//! Root only: `cargo test -p rustynet-lab --test netns_local_lan`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exit_support;

use std::net::IpAddr;
use std::process::Child;

use exit_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::topology::LAN_HOST_IP;
use rustynet_lab::{Capture, Cluster, Lab, NodeSpec};

/// The extra (routed, not on-link) private host.
const ROUTED_IP: &str = "10.99.0.10";

/// Kills the processes the test started itself, also on failure.
struct Services(Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether alice's TCP probe to `target` is answered.
fn reach(c: &Cluster<'_>, target: &str) -> bool {
    tcp(c, &c.lab.node("alice").ns, target).ok
}

fn diag(c: &Cluster<'_>) -> String {
    diagnose(c, &["alice", "exit"])
}

fn lan_target() -> String {
    format!("{LAN_HOST_IP}:8080")
}

fn routed_target() -> String {
    format!("{ROUTED_IP}:8080")
}

#[test]
fn local_lan_reaches_only_the_on_link_lan_beside_an_exit() {
    require_tools(&["tcpdump"]);
    let lab = Lab::new(&[NodeSpec::with_lan("alice"), NodeSpec::new("exit")]).unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    let alice = lab.node("alice");
    let lan_ns = alice.lan.as_ref().unwrap();
    let lan_if = only_link(lan_ns).unwrap();

    // The routed prefix: on the LAN host, reached through it.
    lan_ns
        .ip(&["addr", "add", &format!("{ROUTED_IP}/32"), "dev", "lo"])
        .unwrap();
    alice
        .ns
        .ip(&[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            &LAN_HOST_IP.to_string(),
            "proto",
            "dhcp",
        ])
        .unwrap();
    let lab_bin = c.bins.lab.to_string_lossy().into_owned();
    let _services = Services(vec![
        lan_ns
            .spawn(
                &[&lab_bin, "serve-echo", "--listen", &routed_target()],
                &lab.path("routed-echo.log"),
            )
            .unwrap(),
    ]);

    // Positive control: without Rustynet both hosts answer directly.
    let both = wait_for(SETTLE, || {
        (reach(&c, &lan_target()) && reach(&c, &routed_target())).then_some(())
    });
    assert!(both.is_some(), "LAN hosts unreachable without Rustynet");

    c.set_policy(POLICY).unwrap();
    c.start_daemon("exit").unwrap();
    let key = c.preauth("admin", &["tag:exit"]).unwrap();
    c.up("exit", &key, &["--advertise-exit-node"]).unwrap();
    c.start_daemon("alice").unwrap();
    let key = c.preauth("alice", &[]).unwrap();
    c.up("alice", &key, &[]).unwrap();
    wait_peers(&c, "alice", &["exit"]).unwrap();
    select_exit(&c, "alice", "exit").unwrap();

    // local-lan off (the default): the kill switch holds for both.
    let s = c.status("alice").unwrap();
    assert!(s.kill_switch && !s.local_lan, "{s:?}\n{}", diag(&c));
    assert!(
        !reach(&c, &lan_target()),
        "LAN reachable with local-lan off\n{}",
        diag(&c)
    );
    assert!(
        !reach(&c, &routed_target()),
        "routed prefix reachable\n{}",
        diag(&c)
    );

    // On: the on-link LAN answers, the routed prefix stays blocked and
    // nothing for it reaches the LAN; the internet still goes via the exit.
    let out = c.rustynet("alice", &["local-lan", "on"]).unwrap();
    assert!(out.contains("local LAN: on"), "{out}");
    let cap = Capture::start(lan_ns, &lan_if, lab.path("lan-side.pcap")).unwrap();
    let on = wait_for(SETTLE, || reach(&c, &lan_target()).then_some(()));
    let routed = reach(&c, &routed_target());
    let routed_again = reach(&c, &routed_target());
    let pcap = cap.stop_raw();
    assert!(
        on.is_some(),
        "LAN unreachable with local-lan on\n{}",
        diag(&c)
    );
    assert!(
        !routed && !routed_again,
        "routed prefix reachable\n{}",
        diag(&c)
    );
    let live = count(&pcap, &format!("host {LAN_HOST_IP} and tcp port 8080")).unwrap();
    assert!(live > 0, "the LAN-side capture saw nothing (not live?)");
    let leaked = count(&pcap, &format!("host {ROUTED_IP}")).unwrap();
    assert_eq!(leaked, 0, "packets for {ROUTED_IP} reached the LAN");
    let exit_addr = IpAddr::V4(lab.node("exit").addr);
    let seen = tcp(&c, &alice.ns, &echo4()).seen;
    assert_eq!(
        seen,
        Some(exit_addr),
        "internet not via the exit\n{}",
        diag(&c)
    );
    let s = c.status("alice").unwrap();
    assert!(s.local_lan && s.kill_switch, "{s:?}");

    // Off again: blocked again.
    c.rustynet("alice", &["local-lan", "off"]).unwrap();
    let off = wait_for(SETTLE, || (!reach(&c, &lan_target())).then_some(()));
    assert!(
        off.is_some(),
        "LAN still reachable after local-lan off\n{}",
        diag(&c)
    );
}
