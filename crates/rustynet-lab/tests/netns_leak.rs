//! Kill switch end to end (issue 4 case 3, Phase 10 §12.3, bar 7): with an
//! exit node selected, the client's tunnel interface is deleted, the exit's
//! daemon is killed, or the client's own daemon is SIGKILLed. For ten
//! seconds the client probes the internet host over IPv4 (TCP, UDP, ICMP)
//! and IPv6 while its physical link is captured: no packet to the internet
//! host may appear. A canary connection to control (which the kill switch
//! allows) proves the capture was live. Connectivity through the exit must
//! come back after recovery.
//!
//! Root only: run with `cargo test -p rustynet-lab --test netns_leak`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exit_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use exit_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::{Cluster, Lab, NodeSpec};
use rustynet_proto::ipc::DataplaneState;

const WINDOW: Duration = Duration::from_secs(10);

/// Fault to inject while the exit is in use.
#[derive(Clone, Copy)]
enum Fault {
    TunnelDeleted,
    ExitDaemonKilled,
    ClientDaemonKilled,
}

fn kill_switch(fault: Fault, name: &str) {
    require_tools(&[]);
    let lab = Lab::new(&[NodeSpec::new("alice"), NodeSpec::with_lan("exit")]).unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    enroll(&mut c, &["alice", "exit"]).unwrap();
    wait_peers(&c, "alice", &["exit"]).unwrap();
    wait_peers(&c, "exit", &["alice"]).unwrap();
    select_exit(&c, "alice", "exit").unwrap();
    let alice = &lab.node("alice");
    let exit_addr = IpAddr::V4(lab.node("exit").addr);

    let result = case("leak", name, |ev| {
        let s = c.status("alice")?;
        ensure!(
            s.state == DataplaneState::ExitActive && s.kill_switch,
            "not protected before the fault: {s:?}"
        );
        let mark = bypass_mark(&alice.ns)?;
        let cap = capture_node(&lab, "alice", name)?;
        match fault {
            Fault::TunnelDeleted => {
                alice.ns.ip(&["link", "del", "rn0"])?;
            }
            Fault::ExitDaemonKilled => c.kill_daemon("exit"),
            Fault::ClientDaemonKilled => c.kill_daemon("alice"),
        }
        let (sent, answered, canaries) = probe_for(&c, &alice.ns, WINDOW, mark);
        let pcap = cap.stop_raw();
        let leaked = count(&pcap, &internet_filter())?;
        let canary = count(&pcap, &canary_filter())?;
        ev.set("window_secs", WINDOW.as_secs());
        ev.set("probes_sent", sent);
        ev.set("probes_answered", answered);
        ev.set("canary_connections", canaries);
        ev.set("canary_packets_captured", canary);
        ev.set("packets_to_internet_host", leaked);
        ev.packets = Some(leaked);
        ensure!(
            canary > 0,
            "the capture saw no canary packet: it proves nothing"
        );
        ensure!(
            leaked == 0,
            "{leaked} packets to the internet host left alice's link:\n{}",
            lines(&pcap, &internet_filter(), 10)
        );
        let restart = Instant::now();
        match fault {
            Fault::TunnelDeleted => {}
            Fault::ExitDaemonKilled => c.start_daemon("exit")?,
            Fault::ClientDaemonKilled => c.start_daemon("alice")?,
        }
        // From here the daemon is running (its socket is up): how long until
        // traffic flows through the exit again, probed every ~0.7 s.
        let recovery = Instant::now();
        let back = wait_for(Duration::from_secs(60), || {
            (tcp_quick(&c, &alice.ns, &echo4(), 500).seen == Some(exit_addr)).then_some(())
        });
        let secs = |t: Instant| (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        ev.set("recovery_secs", secs(recovery));
        ev.set("restart_to_traffic_secs", secs(restart));
        ensure!(
            back.is_some(),
            "connectivity through the exit did not come back"
        );
        let s = c.wait_status("alice", SETTLE, |s| s.state == DataplaneState::ExitActive)?;
        ensure!(
            s.kill_switch,
            "kill switch not asserted after recovery: {s:?}"
        );
        Ok(())
    });
    must(result, || diagnose(&c, &["alice", "exit"]));
}

/// The client's tunnel interface is deleted under its daemon.
#[test]
fn kill_switch_tunnel_deleted() {
    kill_switch(Fault::TunnelDeleted, "kill_switch_tunnel_deleted");
}

/// The exit node's daemon is SIGKILLed while the client uses it.
#[test]
fn kill_switch_exit_daemon_killed() {
    kill_switch(Fault::ExitDaemonKilled, "kill_switch_exit_daemon_killed");
}

/// The client's own daemon is SIGKILLed: its firewall table outlives it.
#[test]
fn kill_switch_client_daemon_killed() {
    kill_switch(
        Fault::ClientDaemonKilled,
        "kill_switch_client_daemon_killed",
    );
}
