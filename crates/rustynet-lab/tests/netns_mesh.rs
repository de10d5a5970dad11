//! Root-only end-to-end tests of the daemon and dataplane (issue 3), part
//! one: the mesh itself. A router namespace, the real control server and
//! three real `rustynetd`s, each with its own state directory, socket and
//! TUN; every case builds its own lab (unique names, removed on drop).
//!
//! - enrollment with `rustynet up`, `dataplane_applied`, ping and TCP
//!   between tunnel addresses;
//! - the router's links carry only UDP between node endpoints and a marker
//!   sent through the tunnel never appears there in cleartext;
//! - the ACL: A and B reach each other, A reaches C, C's packets to A are
//!   dropped by A's inbound filter (its drop counter rises);
//! - restart (SIGTERM) and crash (SIGKILL) restore the same generation
//!   without re-enrolling;
//! - a corrupted or truncated state file leaves the node `fail_closed`
//!   with the reason in `status --json`, and no mesh traffic flows; the
//!   advised recovery (`rustynet up`) enrolls it again as a new node.
//!
//! Every case ends with a scan of all logs and CLI output for the nodes'
//! private keys and the pre-auth keys. Run as root:
//! `cargo test -p rustynet-lab --test netns_mesh -- --test-threads=2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mesh_support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, ensure};
use mesh_support::*;
use rustynet_lab::{Capture, Cluster, Lab, NodeSpec};
use rustynet_proto::ipc::{DataplaneState, PathKind};
use serde_json::json;

const REPORT: &str = "netns_e2e";

/// A↔B, and A→C (so C and A are peers), nothing from C to A.
const ACL_POLICY: &str = r#"{
  "acls": [
    {"action": "accept", "src": ["alice"], "dst": ["bob:*"]},
    {"action": "accept", "src": ["bob"], "dst": ["alice:*"]},
    {"action": "accept", "src": ["alice"], "dst": ["carol:*"]}
  ]
}"#;

/// Comment of the inbound default-deny rule on the tunnel.
const INBOUND_DENY: &str = "inbound from the mesh not allowed by policy";

/// A lab of `nodes` with control running.
fn lab(nodes: &[&str]) -> anyhow::Result<Lab> {
    Lab::new(&nodes.iter().map(|n| NodeSpec::new(n)).collect::<Vec<_>>())
}

/// Sets `policy`, starts a daemon per node (each node's user is its name),
/// runs `rustynet up` on each and waits until each has applied a map with
/// the given number of peers. Returns tunnel addresses and pre-auth keys.
fn enroll(
    c: &mut Cluster<'_>,
    t: &Transcript,
    policy: &str,
    nodes: &[(&str, usize)],
) -> anyhow::Result<(BTreeMap<String, Ipv4Addr>, Vec<Secret>)> {
    c.set_policy(policy)?;
    let mut keys = Vec::new();
    for (node, _) in nodes {
        let key = c.preauth(node, &[])?;
        keys.push(Secret::text(format!("pre-auth key of {node}"), &key));
        c.start_daemon(node)?;
        t.up(c, node, &key, &[])?;
    }
    let mut ips = BTreeMap::new();
    for (node, peers) in nodes {
        let s = t.wait_applied(c, node, *peers)?;
        ips.insert((*node).to_owned(), tunnel_ip(&s)?);
    }
    Ok((ips, keys))
}

fn echo_addr(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((ip, 7))
}

/// 1. Enrollment, `dataplane_applied`, ping and TCP between every pair.
#[test]
fn mesh_enroll_ping_and_tcp() {
    run_case(REPORT, "mesh_enroll_ping_tcp", |ev| {
        let names = ["alice", "bob", "carol"];
        let lab = lab(&names)?;
        let mut c = Cluster::start(&lab, "10m")?;
        let t = Transcript::default();
        let (ips, keys) = enroll(&mut c, &t, MESH_POLICY, &names.map(|n| (n, 2)))?;
        let mut generations = BTreeMap::new();
        for n in names {
            let s = t.status(&c, n)?;
            ensure!(
                s.state == DataplaneState::DataplaneApplied,
                "{n}: {:?}",
                s.state
            );
            ensure!(s.generation > 0, "{n}: generation 0 after applying");
            let self_node = s
                .self_node
                .as_ref()
                .ok_or_else(|| anyhow!("{n}: no self"))?;
            ensure!(
                self_node.name == n && self_node.dns_name.starts_with(&format!("{n}.")),
                "{n}: self is {self_node:?}"
            );
            let mut peers: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
            peers.sort_unstable();
            let expected: Vec<&str> = names.iter().copied().filter(|x| *x != n).collect();
            ensure!(peers == expected, "{n}: peers {peers:?}");
            for p in &s.peers {
                ensure!(
                    Some(&p.tunnel_ip) == ips.get(&p.name),
                    "{n}: peer {} at {} but it has {:?}",
                    p.name,
                    p.tunnel_ip,
                    ips.get(&p.name)
                );
            }
            generations.insert(n, s.generation);
        }
        let mut distinct: Vec<Ipv4Addr> = ips.values().copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        ensure!(
            distinct.len() == 3,
            "tunnel addresses not distinct: {ips:?}"
        );
        ensure!(
            ips.values()
                .all(|ip| rustynet_proto::netmap::TUNNEL_NET.contains(ip)),
            "tunnel addresses outside 100.64.0.0/10: {ips:?}"
        );
        let _echo: Vec<Service> = names
            .iter()
            .map(|n| serve_echo(&c, n, ips[*n]))
            .collect::<anyhow::Result<_>>()?;
        let mut pairs = Vec::new();
        for a in names {
            for b in names.iter().copied().filter(|b| *b != a) {
                let ns = &lab.node(a).ns;
                ensure!(
                    ping_within(ns, ips[b], SETTLE),
                    "{a} cannot ping {b}\n{}\n{}",
                    c.diagnose(a),
                    c.diagnose(b)
                );
                ensure!(ping(ns, ips[b], 3, None), "{a} -> {b}: 3 pings unanswered");
                let line = format!("hello {b} from {a}");
                let x = tcp_exchange_within(ns, echo_addr(ips[b]), &line, SETTLE)?;
                ensure!(
                    x.seen.starts_with(&format!("{}:", ips[a])),
                    "{b}'s echo saw {a} as {}, not its tunnel address {}",
                    x.seen,
                    ips[a]
                );
                ensure!(x.echoed == line, "{a} -> {b}: echoed {:?}", x.echoed);
                pairs.push(format!("{a}->{b} seen as {}", x.seen));
            }
        }
        let pong = t.ok(&c, "alice", &["ping", "bob"])?;
        ensure!(pong.contains("pong"), "rustynet ping bob: {pong}");
        for n in names {
            let s = t.status(&c, n)?;
            for p in &s.peers {
                ensure!(
                    p.path == PathKind::Direct && p.last_handshake_secs.is_some() && p.rx_bytes > 0,
                    "{n}: peer {} has no working path after traffic: {p:?}",
                    p.name
                );
            }
        }
        ev.set("tunnel_ips", &ips);
        ev.set("generations", &generations);
        ev.set("pairs_ping_and_tcp_ok", &pairs);
        ev.set("cli_ping", pong.trim());
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}

/// 2. The router's links carry only UDP between node endpoints; a marker
///    sent through the tunnel (ICMP payload and TCP data) is visible on the
///    TUN inside the nodes but never on the wire.
#[test]
fn wire_carries_only_udp_and_no_cleartext() {
    run_case(REPORT, "wire_only_udp_no_cleartext", |ev| {
        let names = ["alice", "bob", "carol"];
        let lab = lab(&names)?;
        let mut c = Cluster::start(&lab, "10m")?;
        let t = Transcript::default();
        let (ips, keys) = enroll(&mut c, &t, MESH_POLICY, &names.map(|n| (n, 2)))?;
        let _echo: Vec<Service> = names
            .iter()
            .map(|n| serve_echo(&c, n, ips[*n]))
            .collect::<anyhow::Result<_>>()?;
        let wire = Capture::start(&lab.router, "any", lab.path("router.pcap"))?;
        let tuns: Vec<Capture> = names
            .iter()
            .map(|n| Capture::start(&lab.node(n).ns, "rn0", lab.path(&format!("tun-{n}.pcap"))))
            .collect::<anyhow::Result<_>>()?;
        let icmp_marker: &[u8; 16] = b"RNET-CLEARTEXT-1";
        let tcp_marker = format!("rustynet-cleartext-marker-{}", lab.id);
        let mut exchanges = 0;
        for a in names {
            for b in names.iter().copied().filter(|b| *b != a) {
                let ns = &lab.node(a).ns;
                ensure!(
                    ping_within(ns, ips[b], SETTLE),
                    "{a} cannot ping {b}\n{}",
                    c.diagnose(a)
                );
                ensure!(
                    ping(ns, ips[b], 3, Some(icmp_marker)),
                    "{a} -> {b}: marked pings unanswered"
                );
                let line = format!("{tcp_marker} {a}->{b}");
                let x = tcp_exchange_within(ns, echo_addr(ips[b]), &line, SETTLE)?;
                ensure!(x.echoed == line, "{a} -> {b}: echoed {:?}", x.echoed);
                exchanges += 1;
            }
        }
        // Let the last packets reach the captures.
        std::thread::sleep(Duration::from_millis(500));
        let wire_pcap = wire.stop_raw();
        let tun_pcaps: Vec<_> = tuns.into_iter().map(Capture::stop_raw).collect();
        // IP only: ARP between a node and its router is not traffic between nodes.
        let between = "ip and src net 198.51.100.0/24 and dst net 198.51.100.0/24";
        let node_to_node = read_pcap(&wire_pcap, between)?;
        let not_udp = read_pcap(&wire_pcap, &format!("{between} and not udp"))?;
        let tunnel_addrs = read_pcap(&wire_pcap, "net 100.64.0.0/10")?;
        let all = read_pcap(&wire_pcap, "")?;
        let icmp_on_wire = file_contains(&wire_pcap, icmp_marker);
        let tcp_on_wire = file_contains(&wire_pcap, tcp_marker.as_bytes());
        let icmp_on_tun = tun_pcaps
            .iter()
            .filter(|p| file_contains(p, icmp_marker))
            .count();
        let tcp_on_tun = tun_pcaps
            .iter()
            .filter(|p| file_contains(p, tcp_marker.as_bytes()))
            .count();
        ev.packets = Some(node_to_node.len());
        ev.set("packets_on_router_links", all.len());
        ev.set("packets_between_node_endpoints", node_to_node.len());
        ev.set("non_udp_between_node_endpoints", not_udp.len());
        ev.set("packets_with_tunnel_addresses_on_wire", tunnel_addrs.len());
        ev.set("marker_in_cleartext_on_wire", icmp_on_wire || tcp_on_wire);
        ev.set("tun_captures_with_icmp_marker", icmp_on_tun);
        ev.set("tun_captures_with_tcp_marker", tcp_on_tun);
        ev.set("tcp_exchanges", exchanges);
        ensure!(
            !node_to_node.is_empty(),
            "no tunnel packets captured on the router ({} packets in all)",
            all.len()
        );
        ensure!(
            node_to_node.iter().all(|l| l.contains("UDP")),
            "non-UDP between node endpoints: {not_udp:?}"
        );
        ensure!(
            not_udp.is_empty(),
            "non-UDP between node endpoints: {not_udp:?}"
        );
        ensure!(
            tunnel_addrs.is_empty(),
            "tunnel addresses visible on the wire: {tunnel_addrs:?}"
        );
        ensure!(
            !icmp_on_wire,
            "ICMP payload marker in cleartext on the wire"
        );
        ensure!(!tcp_on_wire, "TCP payload marker in cleartext on the wire");
        // The markers really went through the tunnels (so their absence
        // on the wire means encryption, not a capture that missed them).
        ensure!(
            icmp_on_tun == 3 && tcp_on_tun == 3,
            "markers not seen on every TUN: icmp {icmp_on_tun}/3, tcp {tcp_on_tun}/3"
        );
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}

/// 3. The ACL: A↔B allowed, A→C allowed (so A and C are peers with a real
///    tunnel), C→A denied — by the inbound filter on A.
#[test]
fn acl_drops_c_to_a_on_a_inbound_filter() {
    run_case(REPORT, "acl_c_to_a_dropped_inbound", |ev| {
        let names = ["alice", "bob", "carol"];
        let lab = lab(&names)?;
        let mut c = Cluster::start(&lab, "10m")?;
        let t = Transcript::default();
        let (ips, keys) = enroll(
            &mut c,
            &t,
            ACL_POLICY,
            &[("alice", 2), ("bob", 1), ("carol", 1)],
        )?;
        for (n, expected) in [("bob", "alice"), ("carol", "alice")] {
            let s = t.status(&c, n)?;
            let peers: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
            ensure!(peers == [expected], "{n}: peers {peers:?}");
        }
        let _echo: Vec<Service> = names
            .iter()
            .map(|n| serve_echo(&c, n, ips[*n]))
            .collect::<anyhow::Result<_>>()?;
        let ns = |n: &str| &lab.node(n).ns;
        // Allowed directions work (A→C first: it sets up the A–C tunnel).
        for (a, b) in [("alice", "bob"), ("bob", "alice"), ("alice", "carol")] {
            ensure!(
                ping_within(ns(a), ips[b], SETTLE),
                "{a} cannot ping {b}\n{}",
                c.diagnose(b)
            );
            let line = format!("{a} to {b}");
            let x = tcp_exchange_within(ns(a), echo_addr(ips[b]), &line, SETTLE)?;
            ensure!(x.echoed == line, "{a} -> {b}: echoed {:?}", x.echoed);
        }
        let carol = t.status(&c, "carol")?;
        let tunnel = carol
            .peers
            .iter()
            .find(|p| p.name == "alice")
            .ok_or_else(|| anyhow!("carol has no alice peer"))?;
        ensure!(
            tunnel.last_handshake_secs.is_some(),
            "carol has no handshake with alice: {tunnel:?}"
        );
        let before = rule_counter(ns("alice"), "input", INBOUND_DENY)?;
        let c_ping = ping(ns("carol"), ips["alice"], 5, None);
        let c_tcp = tcp_exchange(ns("carol"), echo_addr(ips["alice"]), "carol to alice");
        let after = rule_counter(ns("alice"), "input", INBOUND_DENY)?;
        // A→C still works after (return traffic of A's connections is fine).
        let a_ping = ping_within(ns("alice"), ips["carol"], SETTLE);
        let a_tcp = tcp_exchange_within(ns("alice"), echo_addr(ips["carol"]), "again", SETTLE);
        let bob_carol = ping(ns("bob"), ips["carol"], 2, None);
        ev.packets = Some(usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX));
        ev.set("alice_inbound_drop_counter_before", before);
        ev.set("alice_inbound_drop_counter_after", after);
        ev.set("carol_to_alice_ping_answered", c_ping);
        ev.set(
            "carol_to_alice_tcp",
            c_tcp
                .as_ref()
                .map(|x| x.seen.clone())
                .map_err(|e| e.to_string()),
        );
        ev.set("alice_to_carol_ping_after", a_ping);
        ev.set("alice_to_carol_tcp_after", a_tcp.is_ok());
        ev.set("bob_to_carol_ping_answered", bob_carol);
        ensure!(!c_ping, "carol's pings to alice were answered");
        ensure!(c_tcp.is_err(), "carol reached alice over TCP: {c_tcp:?}");
        ensure!(
            after >= before + 5,
            "alice's inbound drop counter went {before} -> {after} for 5 pings and a TCP attempt"
        );
        ensure!(a_ping, "alice -> carol ping stopped working");
        ensure!(
            a_tcp.is_ok(),
            "alice -> carol TCP stopped working: {a_tcp:?}"
        );
        ensure!(!bob_carol, "bob reached carol without any rule");
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}

/// Counts "node enrolled" events in the control log.
fn enrollments(lab: &Lab) -> usize {
    log_events(
        &std::fs::read_to_string(lab.path("control.log")).unwrap_or_default(),
        "node enrolled",
    )
    .len()
}

/// 4a. SIGTERM and SIGKILL: the daemon comes back to the same generation
///     from its state store, without enrolling again, and traffic works.
#[test]
fn restart_and_crash_restore_without_reenrolling() {
    run_case(REPORT, "restart_sigterm_sigkill_restore", |ev| {
        let names = ["alice", "bob", "carol"];
        let lab = lab(&names)?;
        let mut c = Cluster::start(&lab, "10m")?;
        let t = Transcript::default();
        let (ips, keys) = enroll(&mut c, &t, MESH_POLICY, &names.map(|n| (n, 2)))?;
        let _echo = serve_echo(&c, "alice", ips["alice"])?;
        let ns = |n: &str| &lab.node(n).ns;
        ensure!(
            ping_within(ns("bob"), ips["alice"], SETTLE),
            "no mesh before"
        );
        let first = t.status(&c, "alice")?;
        let node_id = first.self_node.as_ref().map(|s| s.node_id);
        let nodes_before = control_nodes(&c)?;
        let enrolled_before = enrollments(&lab);
        ensure!(
            enrolled_before == names.len(),
            "control logged {enrolled_before} enrollments for {} nodes",
            names.len()
        );
        let mut rounds = Vec::new();
        for how in ["sigterm", "sigkill"] {
            let before = t.status(&c, "alice")?;
            if how == "sigterm" {
                c.stop_daemon("alice");
                let log = c.log("alice");
                ensure!(
                    log.contains("engine stopped"),
                    "SIGTERM did not stop the daemon cleanly:\n{}",
                    rustynet_lab::cluster::tail(&log, 20)
                );
            } else {
                c.kill_daemon("alice");
            }
            c.start_daemon("alice")?;
            let after = t.wait_applied(&c, "alice", 2)?;
            let log = c.log("alice");
            let restored: Vec<u64> = log_events(&log, "restoring last-known-safe generation")
                .iter()
                .filter_map(|e| e.get("generation").and_then(|g| g.as_u64()))
                .collect();
            ensure!(
                restored.first() == Some(&before.generation),
                "{how}: restored {restored:?}, expected generation {}\n{}",
                before.generation,
                rustynet_lab::cluster::tail(&log, 30)
            );
            ensure!(
                after.self_node.as_ref().map(|s| s.node_id) == node_id,
                "{how}: node id {:?} -> {:?}",
                node_id,
                after.self_node
            );
            ensure!(
                after.generation >= before.generation,
                "{how}: generation went back {} -> {}",
                before.generation,
                after.generation
            );
            ensure!(
                tunnel_ip(&after)? == ips["alice"],
                "{how}: tunnel address changed"
            );
            // A peer's old session is unknown to the restarted node, so the
            // peer's traffic resumes when it re-handshakes (its rekey
            // timeout, ~15 s): allow for that, and record how long it took.
            let waited = std::time::Instant::now();
            ensure!(
                ping_within(ns("bob"), ips["alice"], Duration::from_secs(90)),
                "{how}: bob cannot ping alice after the restart\n{}",
                c.diagnose("alice")
            );
            let peer_recovery_secs = waited.elapsed().as_secs_f64();
            ensure!(
                ping_within(ns("alice"), ips["carol"], SETTLE),
                "{how}: alice cannot ping carol after the restart"
            );
            let line = format!("after {how}");
            let x = tcp_exchange_within(ns("carol"), echo_addr(ips["alice"]), &line, SETTLE)?;
            ensure!(
                x.echoed == line,
                "{how}: TCP to alice echoed {:?}",
                x.echoed
            );
            let nodes_now = control_nodes(&c)?;
            ensure!(
                nodes_now.len() == nodes_before.len(),
                "{how}: control has {} nodes, had {}",
                nodes_now.len(),
                nodes_before.len()
            );
            ensure!(
                nodes_now.iter().map(|n| &n["node_key"]).collect::<Vec<_>>()
                    == nodes_before
                        .iter()
                        .map(|n| &n["node_key"])
                        .collect::<Vec<_>>(),
                "{how}: node keys changed at control"
            );
            ensure!(
                enrollments(&lab) == enrolled_before,
                "{how}: control logged a new enrollment"
            );
            rounds.push(json!({
                "how": how,
                "generation_before": before.generation,
                "restored_generation": restored.first(),
                "generation_after": after.generation,
                "state_after": after.state.as_str(),
                "node_id": after.self_node.as_ref().map(|s| s.node_id.0),
                "control_nodes": nodes_now.len(),
                "peer_to_restarted_node_recovery_secs": (peer_recovery_secs * 10.0).round() / 10.0,
            }));
        }
        ev.set("rounds", rounds);
        ev.set("control_enrollments", enrolled_before);
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}

/// Flips one base64 character in the middle of the sealed body.
fn flip_a_byte(bytes: &mut [u8]) -> anyhow::Result<usize> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let body = text
        .find("\"body\":\"")
        .ok_or_else(|| anyhow!("state file has no body"))?
        + 8;
    let end = text[body..]
        .find('"')
        .ok_or_else(|| anyhow!("unterminated body"))?
        + body;
    let i = (body + end) / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    Ok(i)
}

/// 4b. A corrupted (one byte flipped) and a truncated state file: the
///     daemon starts `fail_closed`, says why in `status --json`, stays so,
///     and no mesh traffic flows either way. Then the recovery the error
///     names (`rustynet up` with a pre-auth key) brings it back as a new
///     node (the lost state was its enrollment), and the mesh works.
#[test]
fn corrupted_state_fails_closed() {
    run_case(REPORT, "corrupted_state_fail_closed", |ev| {
        let names = ["alice", "bob"];
        let lab = lab(&names)?;
        let mut c = Cluster::start(&lab, "10m")?;
        let t = Transcript::default();
        let (ips, mut keys) = enroll(&mut c, &t, MESH_POLICY, &names.map(|n| (n, 1)))?;
        let _echo = serve_echo(&c, "alice", ips["alice"])?;
        let ns = |n: &str| &lab.node(n).ns;
        ensure!(
            ping_within(ns("bob"), ips["alice"], SETTLE),
            "no mesh before"
        );
        let old_id = t
            .status(&c, "alice")?
            .self_node
            .map(|s| s.node_id)
            .ok_or_else(|| anyhow!("alice has no id"))?;
        // The old keys stay secrets after a recovery replaces them.
        keys.extend(node_key_secrets(&c, "alice")?);
        let state_file = c
            .node("alice")
            .map(|n| n.state_dir.join("state.json"))
            .ok_or_else(|| anyhow!("no alice"))?;
        let mut rounds = Vec::new();
        for how in ["flipped_byte", "truncated"] {
            c.stop_daemon("alice");
            let mut bytes = std::fs::read(&state_file)?;
            let detail = if how == "flipped_byte" {
                format!("byte {} of {}", flip_a_byte(&mut bytes)?, bytes.len())
            } else {
                let len = bytes.len();
                bytes.truncate(len / 2);
                format!("{len} -> {} bytes", bytes.len())
            };
            std::fs::write(&state_file, &bytes)?;
            c.start_daemon("alice")?;
            let s = t.wait_status(&c, "alice", SETTLE, |s| {
                s.state == DataplaneState::FailClosed && s.error.is_some()
            })?;
            let raw = t.ok(&c, "alice", &["--json", "status"])?;
            let doc: serde_json::Value = serde_json::from_str(&raw)?;
            let error = doc["error"].as_str().unwrap_or_default().to_owned();
            ensure!(
                doc["state"] == "fail_closed" && error.contains("integrity"),
                "{how}: status --json does not say why: {raw}"
            );
            // Control is up and keeps the stream open for bob: alice must
            // not talk itself back into trust.
            std::thread::sleep(Duration::from_secs(5));
            let later = t.status(&c, "alice")?;
            ensure!(
                later.state == DataplaneState::FailClosed && later.peers.is_empty(),
                "{how}: left fail_closed on its own: {later:?}"
            );
            let a_to_b = ping(ns("alice"), ips["bob"], 3, None);
            let b_to_a = ping(ns("bob"), ips["alice"], 3, None);
            let tcp = tcp_exchange(ns("bob"), echo_addr(ips["alice"]), "through?");
            let nft = ns("alice").stdout(&["nft", "list", "ruleset"])?;
            ensure!(!a_to_b && !b_to_a, "{how}: mesh ping still works");
            ensure!(tcp.is_err(), "{how}: mesh TCP still works: {tcp:?}");
            ensure!(
                nft.contains("fail-closed: tunnel blocked"),
                "{how}: no fail-closed ruleset:\n{nft}"
            );
            rounds.push(json!({
                "corruption": how,
                "detail": detail,
                "state": s.state.as_str(),
                "error": error,
                "generation": s.generation,
                "alice_to_bob_ping": a_to_b,
                "bob_to_alice_ping": b_to_a,
                "bob_to_alice_tcp": tcp.is_ok(),
            }));
        }
        ev.set("rounds", rounds);
        // Recovery as the daemon advises (any other command is refused
        // with the advice): enroll again.
        let refused = t.cli(&c, "alice", None, &["exit-node", "list"])?;
        let advice = String::from_utf8_lossy(&refused.stderr).into_owned();
        ensure!(
            !refused.status.success() && advice.contains("rustynet up"),
            "no recovery advice while fail-closed: {advice}"
        );
        let key = c.preauth("alice", &[])?;
        keys.push(Secret::text("recovery pre-auth key".into(), &key));
        t.up(&c, "alice", &key, &[])?;
        let back = t.wait_status(&c, "alice", SETTLE, |s| {
            s.state == DataplaneState::DataplaneApplied && s.peers.iter().any(|p| p.name == "bob")
        })?;
        let me = back
            .self_node
            .clone()
            .ok_or_else(|| anyhow!("no self after recovery"))?;
        ensure!(
            me.node_id != old_id,
            "recovered with the lost enrollment's id"
        );
        let new_ip = me.tunnel_ip;
        t.wait_status(&c, "bob", SETTLE, |s| {
            s.peers.iter().any(|p| p.tunnel_ip == new_ip)
        })?;
        ensure!(
            ping_within(ns("alice"), ips["bob"], Duration::from_secs(60)),
            "recovered alice cannot reach bob\n{}",
            c.diagnose("alice")
        );
        ensure!(
            ping_within(ns("bob"), new_ip, Duration::from_secs(60)),
            "bob cannot reach the recovered alice"
        );
        ev.set(
            "recovered",
            json!({"old_node_id": old_id.0, "node_id": me.node_id.0, "name": me.name, "tunnel_ip": new_ip}),
        );
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}
