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
use rustynet_lab::cluster::CONTROL_PORT;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::topology::CONTROL_IP;
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

/// Probes the internet from the LAN namespace behind alice: TCP, UDP and
/// ICMP to the echo host and a DNS query to the ISP resolver. Returns how
/// many were answered.
fn probe_from_behind(c: &Cluster<'_>, ns: &rustynet_lab::Netns, rounds: usize) -> usize {
    let mut answered = 0;
    for _ in 0..rounds {
        answered += probe_internet(c, ns, false).iter().filter(|p| p.ok).count();
        answered += usize::from(ns.succeeds(&[
            "dig",
            "+time=1",
            "+tries=1",
            "+short",
            "@203.0.113.53",
            "example.net",
        ]));
    }
    answered
}

/// Audit item 2: the kill switch covers forwarded traffic. A namespace
/// behind alice (a container or VM: veth, forwarding and masquerade, as
/// Docker sets them up) reaches the internet directly until alice selects
/// an exit; from then on, and while alice fails closed in protected mode,
/// nothing it sends leaves alice's physical link.
#[test]
fn kill_switch_covers_forwarded_traffic() {
    require_tools(&["dig"]);
    let lab = Lab::new(&[NodeSpec::with_lan("alice"), NodeSpec::with_lan("exit")]).unwrap();
    let mut c = Cluster::start(&lab, "20s").unwrap();
    enroll(&mut c, &["alice", "exit"]).unwrap();
    wait_peers(&c, "alice", &["exit"]).unwrap();
    wait_peers(&c, "exit", &["alice"]).unwrap();
    let alice = &lab.node("alice");
    let behind = alice.lan.as_ref().expect("alice has a LAN");
    let table = format!("labnat{}", lab.id);
    let nif = alice.ifname.clone();
    for cmd in [
        format!("add table ip {table}"),
        format!("add chain ip {table} post {{ type nat hook postrouting priority 100 ; }}"),
        format!("add rule ip {table} post oifname {nif} masquerade"),
    ] {
        alice.ns.exec(&["nft", &cmd]).unwrap();
    }
    alice
        .ns
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let leak_filter = format!("({}) or (host 203.0.113.53 and port 53)", internet_filter());

    must(
        case("leak", "forwarded_traffic_positive_control", |ev| {
            let p = tcp(&c, behind, &echo4());
            ev.set("probe", &p);
            ensure!(
                p.seen == Some(IpAddr::V4(alice.addr)),
                "the namespace behind alice cannot reach the internet without Rustynet: {p:?}"
            );
            Ok(())
        }),
        || diagnose(&c, &["alice", "exit"]),
    );

    must(
        case("leak", "forwarded_traffic_blocked_while_protected", |ev| {
            select_exit(&c, "alice", "exit")?;
            let cap = capture_node(&lab, "alice", "forward-protected")?;
            let answered = probe_from_behind(&c, behind, 3);
            // Alice's own traffic goes through the exit meanwhile: the
            // capture sees its encrypted transport.
            let own = tcp(&c, &alice.ns, &echo4());
            let pcap = cap.stop_raw();
            let leaked = count(&pcap, &leak_filter)?;
            let transport = count(&pcap, &format!("udp and host {}", lab.node("exit").addr))?;
            ev.set("answered_from_behind", answered);
            ev.set("alice_own_probe", &own);
            ev.set("packets_to_internet", leaked);
            ev.packets = Some(leaked);
            ensure!(
                transport > 0,
                "the capture saw no tunnel transport: it proves nothing"
            );
            ensure!(
                own.ok,
                "alice's own traffic through the exit failed: {own:?}"
            );
            ensure!(
                answered == 0,
                "{answered} probes from behind alice were answered"
            );
            ensure!(
                leaked == 0,
                "{leaked} forwarded packets left alice's link:\n{}",
                lines(&pcap, &leak_filter, 10)
            );
            Ok(())
        }),
        || diagnose(&c, &["alice", "exit"]),
    );

    must(
        case("leak", "control_exception_only_for_the_daemon", |ev| {
            // A network that controls DHCP or DNS can put the control
            // address on a route outside the tunnel (a LAN-local server, a
            // pushed route) and pick that address (TunnelCrack "ServerIP").
            // Only the daemon's marked socket may then leave by it.
            let control = format!("{CONTROL_IP}");
            let gw = lab.node("alice").addr.octets();
            let via = format!("{}.{}.{}.{}", gw[0], gw[1], gw[2], gw[3] - 1);
            alice
                .ns
                .ip(&["route", "add", &format!("{control}/32"), "via", &via])?;
            let cap = capture_node(&lab, "alice", "control-exception")?;
            let script = format!(
                "import socket\ns=socket.socket()\ns.bind(('',40001))\ns.settimeout(2)\n\
                 try:\n s.connect(('{control}',{CONTROL_PORT}))\n print('connected')\nexcept OSError as e:\n print(e)"
            );
            let out = alice
                .ns
                .stdout(&["python3", "-c", &script])
                .unwrap_or_default();
            let pcap = cap.stop_raw();
            alice
                .ns
                .ip(&["route", "del", &format!("{control}/32"), "via", &via])?;
            let leaked = count(&pcap, "tcp and src port 40001")?;
            ev.set("unmarked_connect", out.trim());
            ev.set("packets_on_physical_link", leaked);
            ev.packets = Some(leaked);
            ensure!(
                leaked == 0,
                "an unmarked process reached control outside the tunnel:\n{}",
                lines(&pcap, "tcp and src port 40001", 10)
            );
            let s = c.status("alice")?;
            ensure!(
                s.state == DataplaneState::ExitActive,
                "the daemon's own (marked) control connection must still work: {s:?}"
            );
            Ok(())
        }),
        || diagnose(&c, &["alice", "exit"]),
    );

    must(
        case(
            "leak",
            "forwarded_traffic_blocked_while_fail_closed",
            |ev| {
                c.stop_control();
                let s = c.wait_status("alice", Duration::from_secs(90), |s| {
                    s.state == DataplaneState::FailClosed
                })?;
                ensure!(s.kill_switch, "fail_closed without the kill switch: {s:?}");
                let mark = bypass_mark(&alice.ns)?;
                let cap = capture_node(&lab, "alice", "forward-fail-closed")?;
                let answered = probe_from_behind(&c, behind, 3);
                canary(&alice.ns, mark);
                let pcap = cap.stop_raw();
                let leaked = count(&pcap, &leak_filter)?;
                let canaries = count(&pcap, &canary_filter())?;
                ev.set("answered_from_behind", answered);
                ev.set("packets_to_internet", leaked);
                ev.packets = Some(leaked);
                ensure!(canaries > 0, "the capture saw no canary: it proves nothing");
                ensure!(
                    answered == 0,
                    "{answered} probes from behind alice were answered"
                );
                ensure!(
                    leaked == 0,
                    "{leaked} forwarded packets left alice's link while failing closed:\n{}",
                    lines(&pcap, &leak_filter, 10)
                );
                Ok(())
            },
        ),
        || diagnose(&c, &["alice", "exit"]),
    );
}
