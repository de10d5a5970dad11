//! Connectivity everywhere (issue 9), end to end: the real control server
//! with its embedded relay, real daemons, NAT routers made of nftables
//! `masquerade` (endpoint-independent) and `masquerade random`
//! (destination-dependent), faults injected as nftables drops.
//!
//! 1. both behind easy NAT: a direct path is punched; netcheck classifies;
//! 2. both behind destination-dependent NAT, and UDP blocked for one: relay;
//! 3. direct blackholed both ways, then one way: relay within the goal, no
//!    flapping; healed: direct again;
//! 4. a node changes address mid-transfer: the TCP transfer survives;
//! 5. relay restarted: sessions recover; relay gone for good: the peers
//!    that needed it fail closed, a direct peer is unaffected;
//! 7. a relayed packet the peer's ACL denies is dropped by the peer;
//! 8. only TCP to the web ports allowed: works through the TLS relay.
//!
//! Case 6 (forged and replayed probes and relay logins) is proven on real
//! sockets by the engine's and the relay crate's own suites.
//!
//! Each case writes its record under the `paths` report; the phase 10 gate
//! builds `direct_relay_failover_report.json` from them. Trials per timing
//! case: `RUSTYNET_PATH_TRIALS` (default 3; the benchmark runs 20).
//!
//! Root only: `cargo test -p rustynet-lab --test netns_relay`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use rustynet_lab::paths::*;
use rustynet_lab::report::{Evidence, run_recorded};
use rustynet_lab::topology::NatKind::{DestinationDependent, EndpointIndependent};
use rustynet_lab::{Cluster, Lab, NodeSpec};
use rustynet_proto::ipc::{NetcheckDoc, PathKind};

const REPORT: &str = "paths";

fn trials() -> usize {
    std::env::var("RUSTYNET_PATH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

fn must<T>(r: anyhow::Result<T>, c: &Cluster<'_>, nodes: &[&str]) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            let diag: Vec<String> = nodes.iter().map(|n| c.diagnose(n)).collect();
            panic!("{e:#}\n{}", diag.join("\n"))
        }
    }
}

fn case<T>(name: &str, body: impl FnOnce(&mut Evidence) -> anyhow::Result<T>) -> anyhow::Result<T> {
    run_recorded(REPORT, name, body)
}

fn netcheck(c: &Cluster<'_>, node: &str) -> anyhow::Result<NetcheckDoc> {
    let text = c.rustynet(node, &["--json", "netcheck"])?;
    Ok(serde_json::from_str(&text)?)
}

/// One fallback trial: 100 pkt/s from alice to bob for 8 s, the direct
/// path cut after 2 s (both ways or alice -> bob only) and healed after
/// 5 s. Returns (longest gap ms, failback ms after the heal, received
/// after the heal + 1 s, path changes during the trial).
fn fallback_trial(
    lab: &Lab,
    c: &Cluster<'_>,
    both: bool,
) -> anyhow::Result<(u32, Option<f64>, f64, u64)> {
    let bob = tunnel_ip(c, "bob")?;
    wait_direct(lab, c, "alice", "bob", Duration::from_secs(20))?;
    let changes_before = peer(c, "alice", "bob")?.path_changes;
    let alice = &lab.node("alice").ns;
    let (flood, failback) = std::thread::scope(|s| {
        let f = s.spawn(|| flood(alice, bob, 8));
        std::thread::sleep(Duration::from_secs(2));
        let cut = block_direct(lab, "alice", "bob", both);
        std::thread::sleep(Duration::from_secs(3));
        heal(lab).ok();
        let back = wait_path(c, "alice", "bob", PathKind::Direct, Duration::from_secs(5))
            .ok()
            .map(|d| d.as_secs_f64() * 1000.0);
        (f.join().unwrap(), cut.map(|()| back))
    });
    let failback = failback?;
    let changes = peer(c, "alice", "bob")?.path_changes - changes_before;
    // Pings 600..800 were sent between 1 s and 3 s after the heal.
    let after = flood.received_between(600, 800) as f64 / 200.0;
    Ok((flood.longest_gap_ms, failback, after, changes))
}

/// Cases 1 and 3: easy NAT, punching, netcheck, ping, fallback and failback.
#[test]
fn easy_nat_direct_fallback_and_failback() {
    rustynet_lab::require_lab();
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::behind_nat("bob", EndpointIndependent),
        NodeSpec::new("carol"),
    ])
    .unwrap();
    let c = start(&lab, &["alice", "bob", "carol"]).unwrap();
    let nodes = ["alice", "bob", "carol"];

    must(
        case("easy_nat_direct_path_punched", |ev| {
            let bob = tunnel_ip(&c, "bob")?;
            let started = Instant::now();
            ensure!(
                eventually(Duration::from_secs(15), || flood(
                    &lab.node("alice").ns,
                    bob,
                    1
                )
                .received
                    > 0),
                "alice cannot reach bob at all"
            );
            let t = wait_path(
                &c,
                "alice",
                "bob",
                PathKind::Direct,
                Duration::from_secs(20),
            )?;
            let p = peer(&c, "alice", "bob")?;
            let public = public_ip(&lab, "bob");
            ev.set(
                "direct_after_ms",
                (started.elapsed() - Duration::ZERO).as_millis() as u64,
            );
            ev.set("via", &p.via);
            ev.set("wait_ms", t.as_millis() as u64);
            ensure!(
                p.via
                    .as_deref()
                    .is_some_and(|v| v.starts_with(&format!("{public}:"))),
                "direct path should go to bob's NAT address {public}: {p:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("netcheck_classifies_nat", |ev| {
            let started = Instant::now();
            let a = netcheck(&c, "alice")?;
            let took = started.elapsed();
            let carol = netcheck(&c, "carol")?;
            ev.set("alice", &a);
            ev.set("carol", &carol);
            ev.set("cli_ms", took.as_millis() as u64);
            ensure!(a.udp && a.nat == "endpoint_independent", "alice: {a:?}");
            ensure!(
                a.mapping_varies_by_destination == Some(false) && a.mapped.len() == 2,
                "alice should be seen the same from both binding addresses: {a:?}"
            );
            ensure!(carol.nat == "no_nat", "carol has no NAT: {carol:?}");
            ensure!(a.preferred_relay.is_some() && a.relay_latency_ms.is_some());
            ensure!(
                took <= Duration::from_millis(2500),
                "netcheck took {took:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("ping_reports_the_path", |ev| {
            let out = c.rustynet("alice", &["ping", "bob"])?;
            ev.set("output", out.trim());
            ensure!(
                out.contains("direct"),
                "ping should answer over the direct path: {out}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("fallback_blackhole_both_ways", |ev| {
            let (mut gaps, mut backs, mut afters) = (vec![], vec![], vec![]);
            for _ in 0..trials() {
                let (gap, back, after, _) = fallback_trial(&lab, &c, true)?;
                gaps.push(f64::from(gap));
                backs.push(back.unwrap_or(f64::INFINITY));
                afters.push(after);
            }
            let (gap95, back95) = (p95(&gaps), p95(&backs));
            let loss_after = 1.0 - afters.iter().sum::<f64>() / afters.len() as f64;
            ev.set("trials", gaps.len());
            ev.set("longest_gap_ms", &gaps);
            ev.set("longest_gap_ms_p95", gap95);
            ev.set("failback_ms", &backs);
            ev.set("failback_ms_p95", back95);
            ev.set("loss_after_failback", loss_after);
            ensure!(
                gap95 <= 1500.0,
                "fallback gap p95 {gap95} ms > 1.5 s: {gaps:?}"
            );
            ensure!(
                back95 <= 3000.0,
                "failback p95 {back95} ms > 3 s: {backs:?}"
            );
            ensure!(loss_after <= 0.001, "loss after failback {loss_after}");
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("fallback_blackhole_one_way_no_flapping", |ev| {
            let bob = tunnel_ip(&c, "bob")?;
            wait_direct(&lab, &c, "alice", "bob", Duration::from_secs(20))?;
            let before = peer(&c, "alice", "bob")?.path_changes;
            let alice = &lab.node("alice").ns;
            let f = std::thread::scope(|s| {
                let f = s.spawn(|| flood(alice, bob, 30));
                std::thread::sleep(Duration::from_secs(2));
                block_direct(&lab, "alice", "bob", false).ok();
                f.join().unwrap()
            });
            let now = peer(&c, "alice", "bob")?;
            let changes = now.path_changes - before;
            heal(&lab)?;
            ev.set("longest_gap_ms", f.longest_gap_ms);
            ev.set("received", f.received);
            ev.set("sent", f.sent);
            ev.set("path_changes_in_30s", changes);
            ev.set("path_at_end", format!("{:?}", now.path));
            ensure!(f.longest_gap_ms <= 1500, "gap {} ms", f.longest_gap_ms);
            ensure!(
                changes <= 1,
                "{changes} path changes under one-way loss (flapping)"
            );
            ensure!(
                now.path == PathKind::Relay,
                "one-way loss should leave alice on the relay: {now:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );
}

/// Case 2 and 7: destination-dependent NAT on both sides and UDP blocked
/// for one: relay; the peer's ACL still decides over the relay.
#[test]
fn hard_nat_and_blocked_udp_go_through_the_relay() {
    rustynet_lab::require_lab();
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", DestinationDependent),
        NodeSpec::behind_nat("bob", DestinationDependent),
        NodeSpec::behind_nat("carol", EndpointIndependent),
    ])
    .unwrap();
    block_all_udp(&lab, "carol").unwrap();
    let c = start(&lab, &["alice", "bob", "carol"]).unwrap();
    let nodes = ["alice", "bob", "carol"];

    must(
        case("hard_nat_uses_relay", |ev| {
            let bob = tunnel_ip(&c, "bob")?;
            let f = flood(&lab.node("alice").ns, bob, 3);
            let p = peer(&c, "alice", "bob")?;
            let n = netcheck(&c, "alice")?;
            ev.set("flood", &f);
            ev.set("path", format!("{:?}", p.path));
            ev.set("via", &p.via);
            ev.set("netcheck", &n);
            // The first pings wait for the handshake (through the relay);
            // after that the relay must not lose packets on a quiet link.
            ensure!(
                f.first_reply_ms.is_some_and(|ms| ms <= 2000) && f.lost_after_first <= 3,
                "alice -> bob through the relay: {f:?}"
            );
            ensure!(p.path == PathKind::Relay, "expected the relay: {p:?}");
            ensure!(n.nat == "destination_dependent", "netcheck: {n:?}");
            // UDP reaches the relay, so relayed packets use the UDP mode.
            let relays = c.status("alice")?.relays;
            ev.set("relays", format!("{relays:?}"));
            ensure!(
                relays.iter().any(|r| r.udp),
                "UDP relay mode not in use: {relays:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("udp_blocked_uses_relay", |ev| {
            let alice = tunnel_ip(&c, "alice")?;
            let f = flood(&lab.node("carol").ns, alice, 3);
            let p = peer(&c, "carol", "alice")?;
            let n = netcheck(&c, "carol")?;
            ev.set("flood", &f);
            ev.set("path", format!("{:?}", p.path));
            ev.set("netcheck", &n);
            ensure!(
                f.first_reply_ms.is_some_and(|ms| ms <= 2000) && f.lost_after_first <= 3,
                "carol -> alice: {f:?}"
            );
            ensure!(p.path == PathKind::Relay, "{p:?}");
            ensure!(!n.udp && n.nat == "udp_blocked", "netcheck: {n:?}");
            // No UDP at all: the TLS relay carries everything.
            let relays = c.status("carol")?.relays;
            ev.set("relays", format!("{relays:?}"));
            ensure!(
                relays.iter().all(|r| r.connected && !r.udp),
                "expected TLS only: {relays:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("relayed_packet_denied_by_peer_acl", |ev| {
            let bob_ip = tunnel_ip(&c, "bob")?;
            let bob_ns = &lab.node("bob").ns;
            let drops = |ns: &rustynet_lab::Netns| -> u64 {
                ns.stdout(&["nft", "list", "chain", "inet", "rustynet", "input"])
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.contains("inbound from the mesh not allowed by policy"))
                    .and_then(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.iter()
                            .position(|x| *x == "packets")
                            .and_then(|i| w.get(i + 1))
                            .and_then(|n| n.parse().ok())
                    })
                    .unwrap_or(0)
            };
            let before = drops(bob_ns);
            let denied = c.probe(&lab.node("alice").ns, "tcp", &format!("{bob_ip}:22"));
            let after = drops(bob_ns);
            let p = peer(&c, "alice", "bob")?;
            ev.set("denied_probe_ok", denied.ok);
            ev.set("bob_drops_before", before);
            ev.set("bob_drops_after", after);
            ensure!(
                p.path == PathKind::Relay,
                "the case needs the relay path: {p:?}"
            );
            ensure!(!denied.ok, "tcp/22 is not allowed but answered");
            ensure!(
                after > before,
                "bob's filter did not drop the relayed packet"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );
}

/// Case 4: a node's address changes mid-transfer.
#[test]
fn roaming_keeps_a_tcp_transfer() {
    rustynet_lab::require_lab();
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::new("bob"),
    ])
    .unwrap();
    let c = start(&lab, &["alice", "bob"]).unwrap();
    let nodes = ["alice", "bob"];
    must(
        case("roaming_address_change_keeps_tcp", |ev| {
            let bob_ip = tunnel_ip(&c, "bob")?;
            // Traffic makes the peer active: it punches, then goes direct.
            let _ = flood(&lab.node("alice").ns, bob_ip, 1);
            wait_path(
                &c,
                "alice",
                "bob",
                PathKind::Direct,
                Duration::from_secs(20),
            )?;
            let alice = lab.node("alice");
            let bob = lab.node("bob");
            // A receiver on bob counts bytes; alice sends 40 x 256 KiB,
            // one chunk every 250 ms (10 s), over one TCP connection.
            let receiver = bob.ns.command("python3").args([
                "-c",
                &format!(
                    "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                     s.settimeout(60);s.bind(('{bob_ip}',5001));s.listen(1);c,_=s.accept();c.settimeout(30);n=0;t0=time.time();stall=0;last=t0\n\
                     while True:\n  d=c.recv(65536)\n  now=time.time()\n  \
                     if not d: break\n  stall=max(stall,now-last);last=now;n+=len(d)\n\
                     print(n, round(stall*1000))"
                ),
            ]).stdout(std::process::Stdio::piped()).spawn()?;
            std::thread::sleep(Duration::from_millis(500));
            let inner = alice.addr.octets();
            let new = std::net::Ipv4Addr::new(inner[0], inner[1], inner[2], 3);
            let via_before = peer(&c, "bob", "alice")?.via;
            let (sent_ok, back_direct, moved) = std::thread::scope(|s| {
                let sender = s.spawn(|| {
                    alice.ns.succeeds(&[
                        "python3",
                        "-c",
                        &format!(
                            "import socket,time\ns=socket.create_connection(('{bob_ip}',5001),timeout=30)\n\
                             b=bytes(262144)\nfor i in range(40):\n  s.sendall(b);time.sleep(0.25)\ns.close()"
                        ),
                    ])
                });
                std::thread::sleep(Duration::from_secs(3));
                let at = Instant::now();
                let moved =
                    move_address(&lab, "alice", alice.addr, new).map_err(|e| format!("{e:#}"));
                // Bob is direct with alice again once he uses her new
                // mapping (the NAT gives the new inside address a new port).
                let mut back = None;
                while at.elapsed() < Duration::from_secs(8) {
                    if let Ok(p) = peer(&c, "bob", "alice")
                        && p.path == PathKind::Direct
                        && p.via.is_some()
                        && p.via != via_before
                    {
                        back = Some(at.elapsed().as_millis() as u64);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                (sender.join().unwrap_or(false), back, moved)
            });
            if let Err(e) = moved {
                anyhow::bail!("moving alice to {new}: {e}");
            }
            let out = receiver.wait_with_output()?;
            let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let mut it = line.split_whitespace();
            let bytes: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let stall_ms: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
            ev.set("bytes_received", bytes);
            ev.set("longest_stall_ms", stall_ms);
            ev.set("sender_ok", sent_ok);
            ev.set("direct_again_after_ms", back_direct);
            ensure!(
                sent_ok && bytes == 40 * 262_144,
                "transfer broke: {bytes} bytes, sender ok {sent_ok}"
            );
            ensure!(
                stall_ms <= 2000 + 250,
                "traffic stalled {stall_ms} ms after the address change"
            );
            ev.set("via_before", &via_before);
            ensure!(
                back_direct.is_some_and(|ms| ms <= 5000),
                "bob not direct with alice's new address within 5 s: {back_direct:?}"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );
}

/// Cases 5 and 8: the relay restarts, then goes away for good; a network
/// that lets only the web ports out.
#[test]
fn relay_restart_loss_and_web_only_network() {
    rustynet_lab::require_lab();
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", DestinationDependent),
        NodeSpec::behind_nat("bob", DestinationDependent),
        NodeSpec::new("carol"),
        NodeSpec::behind_nat("dave", EndpointIndependent),
    ])
    .unwrap();
    only_tcp(&lab, "dave", &[443, 8443]).unwrap();
    let mut c = start(&lab, &["alice", "bob", "carol", "dave"]).unwrap();
    let nodes = ["alice", "bob", "carol", "dave"];

    must(
        case("web_only_network_uses_tls_relay", |ev| {
            let alice = tunnel_ip(&c, "alice")?;
            let f = flood(&lab.node("dave").ns, alice, 3);
            let p = peer(&c, "dave", "alice")?;
            ev.set("flood", &f);
            ev.set("path", format!("{:?}", p.path));
            ensure!(
                f.first_reply_ms.is_some_and(|ms| ms <= 2000) && f.lost_after_first <= 3,
                "dave -> alice over TCP 443: {f:?}"
            );
            ensure!(p.path == PathKind::Relay, "{p:?}");
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("relay_restart_recovers", |ev| {
            let bob = tunnel_ip(&c, "bob")?;
            ensure!(flood(&lab.node("alice").ns, bob, 1).received > 80);
            let t0 = Instant::now();
            c.restart_control("10m")?;
            let back = eventually(Duration::from_secs(20), || {
                flood(&lab.node("alice").ns, bob, 1).received > 50
            });
            ev.set("recovered_after_ms", t0.elapsed().as_millis() as u64);
            ensure!(
                back,
                "relayed traffic did not recover after the relay restarted"
            );
            Ok(())
        }),
        &c,
        &nodes,
    );

    must(
        case("relay_gone_fails_closed_for_relayed_peers", |ev| {
            let (bob, carol) = (tunnel_ip(&c, "bob")?, tunnel_ip(&c, "carol")?);
            // alice reaches carol (public) directly; bob only through the relay.
            wait_direct(&lab, &c, "alice", "carol", Duration::from_secs(20))?;
            c.stop_control();
            std::thread::sleep(Duration::from_secs(3));
            let to_bob = flood(&lab.node("alice").ns, bob, 3);
            let to_carol = flood(&lab.node("alice").ns, carol, 3);
            let p = peer(&c, "alice", "bob")?;
            ev.set("to_bob_received", to_bob.received);
            ev.set("to_carol_received", to_carol.received);
            ev.set("bob_path", format!("{:?}", p.path));
            ensure!(
                to_bob.received == 0,
                "relayed traffic flowed without a relay: {}",
                to_bob.received
            );
            ensure!(
                to_carol.received > 250,
                "the direct peer was affected: {}/300",
                to_carol.received
            );
            if p.path == PathKind::Direct {
                bail!("bob cannot be direct behind two destination-dependent NATs: {p:?}");
            }
            Ok(())
        }),
        &c,
        &nodes,
    );
}
