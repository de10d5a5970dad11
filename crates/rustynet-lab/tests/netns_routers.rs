//! Shared subnet routers and the protocol-filter matrix (issue 13, Phase 4
//! "never widened"): real control and daemons in namespaces, judged by the
//! packets that reach the LAN host.
//!
//! * `protocol_filter_matrix`: three clients with different LAN grants use
//!   one shared gateway — a subnet router (approved by `route_approvers`,
//!   `--snat-subnet-routes=false`, so the LAN host sees each client's own
//!   address) and then an exit node that also routes the LAN (SNAT, the
//!   default, with the exit selected by every client). Each cell of
//!   [`MATRIX`] probes from one client while a capture runs on the LAN
//!   host's link, and asserts exactly what arrived there: the granted
//!   protocol and port (from the expected source) or nothing at all. The
//!   run writes `protocol_filter` case records, which the phase 10 gate
//!   turns into `artifacts/phase10/protocol_filter_matrix.json`.
//! * `subnet_router_failover`: two routers offer one LAN; the client moves
//!   to the second within 5 s of the first going away (its daemon killed:
//!   control sees its map stream close and marks it offline).
//!
//! Root only: run with `cargo test -p rustynet-lab --test netns_routers`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod exit_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure};
use exit_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::topology::LAN_HOST_IP;
use rustynet_lab::{Capture, Cluster, Lab, NodeSpec};

/// The clients, in the order of [`Row::admits`].
const CLIENTS: [&str; 3] = ["alice", "bob", "carol"];

/// The LAN grants (identical in both topologies): alice tcp/22, udp/8080
/// and icmp; bob `proto any` on port 443; carol `proto any` on every port.
const LAN_ACLS: &str = r#"
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:22"], "proto": "tcp"},
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:8080"], "proto": "udp"},
    {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:*"], "proto": "icmp"},
    {"action": "accept", "src": ["bob"], "dst": ["192.168.77.0/24:443"], "proto": "any"},
    {"action": "accept", "src": ["carol"], "dst": ["192.168.77.0/24:*"], "proto": "any"}"#;

/// What a probe sends to the LAN host.
#[derive(Debug, Clone, Copy, serde::Serialize)]
enum Kind {
    Tcp(u16),
    Udp(u16),
    Icmp,
}

impl Kind {
    /// The tcpdump expression for this probe's packets towards the host.
    fn filter(self) -> String {
        match self {
            Self::Tcp(p) => format!("tcp dst port {p}"),
            Self::Udp(p) => format!("udp dst port {p}"),
            Self::Icmp => "icmp[icmptype] == icmp-echo".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Self::Tcp(p) => format!("tcp/{p}"),
            Self::Udp(p) => format!("udp/{p}"),
            Self::Icmp => "icmp".into(),
        }
    }
}

/// One row of the matrix: a probe, whether each client's grant admits it,
/// and which matrix column it covers for whom.
struct Row {
    probe: Kind,
    /// alice, bob, carol.
    admits: [bool; 3],
    covers: &'static str,
}

/// The matrix, as data. Every row runs for every client on both gateways.
const MATRIX: &[Row] = &[
    Row {
        probe: Kind::Tcp(22),
        admits: [true, false, true],
        covers: "alice: tcp port allowed; bob: any-with-ports, other port; carol: any without ports",
    },
    Row {
        probe: Kind::Tcp(443),
        admits: [false, true, true],
        covers: "alice: tcp other port; bob: any-with-ports admits tcp on its port",
    },
    Row {
        probe: Kind::Tcp(8080),
        admits: [false, false, true],
        covers: "alice: a udp/8080 grant never admits tcp/8080",
    },
    Row {
        probe: Kind::Udp(22),
        admits: [false, false, true],
        covers: "alice: a tcp/22 grant never becomes udp/22",
    },
    Row {
        probe: Kind::Udp(443),
        admits: [false, true, true],
        covers: "alice: udp other port; bob: any-with-ports admits udp on its port",
    },
    Row {
        probe: Kind::Udp(8080),
        admits: [true, false, true],
        covers: "alice: udp port allowed; bob: udp other port",
    },
    Row {
        probe: Kind::Icmp,
        admits: [true, false, true],
        covers: "alice: icmp allowed; bob: icmp denied (any with ports is tcp/udp only); carol: any without ports",
    },
];

/// The shared gateway of one run of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gateway {
    /// A subnet router approved by `route_approvers`, keeping sources.
    SubnetRouter,
    /// An exit node that also routes the LAN, with SNAT (the default);
    /// every client has it selected as exit.
    ExitNode,
}

impl Gateway {
    fn name(self) -> &'static str {
        match self {
            Self::SubnetRouter => "subnet_router",
            Self::ExitNode => "exit_node",
        }
    }

    fn policy(self) -> String {
        match self {
            Self::SubnetRouter => format!(
                r#"{{"tag_owners": {{"tag:router": ["admin"]}},
                    "acls": [{LAN_ACLS}],
                    "route_approvers": [{{"routes": ["{LAN}"], "nodes": ["tag:router"]}}]}}"#
            ),
            Self::ExitNode => format!(
                r#"{{"tag_owners": {{"tag:exit": ["admin"]}},
                    "acls": [{LAN_ACLS}],
                    "exit_nodes": [{{"users": ["alice", "bob", "carol"], "nodes": ["tag:exit"]}}]}}"#
            ),
        }
    }
}

/// One cell's outcome.
#[derive(Debug, serde::Serialize)]
struct Cell {
    client: &'static str,
    probe: String,
    admitted_by_policy: bool,
    /// Packets of this probe that reached the LAN host.
    arrived: usize,
    /// Of those, packets from a source other than the expected one.
    from_wrong_source: usize,
    /// Any other packet that reached the LAN host during the cell.
    other_packets: usize,
    /// The probe got its answer (tcp/udp echo, icmp reply).
    answered: bool,
    /// The source address the LAN host's echo service saw (tcp/udp).
    seen: Option<IpAddr>,
    pass: bool,
}

/// Brings up the lab for `gw`: the gateway with the LAN, three clients with
/// LAN access on (and the exit selected for [`Gateway::ExitNode`]).
fn bring_up(c: &mut Cluster<'_>, gw: Gateway) -> anyhow::Result<()> {
    c.set_policy(&gw.policy())?;
    c.start_daemon("gw")?;
    match gw {
        Gateway::SubnetRouter => {
            let key = c.preauth("admin", &["tag:router"])?;
            c.up(
                "gw",
                &key,
                &["--advertise-routes", LAN, "--snat-subnet-routes=false"],
            )?;
        }
        Gateway::ExitNode => {
            let key = c.preauth("admin", &["tag:exit"])?;
            c.up(
                "gw",
                &key,
                &["--advertise-exit-node", "--advertise-routes", LAN],
            )?;
        }
    }
    for client in CLIENTS {
        c.start_daemon(client)?;
        let key = c.preauth(client, &[])?;
        c.up(client, &key, &[])?;
        // The toggle needs a map: wait for the first generation.
        c.wait_status(client, SETTLE, applied)?;
        c.rustynet(client, &["lan-access", "on"])?;
    }
    for client in CLIENTS {
        c.wait_status(client, SETTLE, |s| {
            applied(s) && s.lan_access && s.peers.iter().any(|p| p.name == "gw")
        })?;
        if gw == Gateway::ExitNode {
            select_exit(c, client, "gw")?;
        }
    }
    // Every client's first admitted tcp probe answers: all grants are live.
    for (i, client) in CLIENTS.iter().enumerate() {
        let port = MATRIX
            .iter()
            .filter(|r| r.admits[i])
            .find_map(|r| match r.probe {
                Kind::Tcp(port) => Some(port),
                _ => None,
            })
            .ok_or_else(|| anyhow!("{client} has no admitted tcp row"))?;
        let ns = &c.lab.node(client).ns;
        let target = format!("{LAN_HOST_IP}:{port}");
        wait_for(SETTLE, || tcp(c, ns, &target).ok.then_some(()))
            .ok_or_else(|| anyhow!("{client} never reached {target} through gw"))?;
    }
    Ok(())
}

fn send(c: &Cluster<'_>, client: &str, probe: Kind) -> Probe {
    let ns = &c.lab.node(client).ns;
    match probe {
        Kind::Tcp(p) => tcp(c, ns, &format!("{LAN_HOST_IP}:{p}")),
        Kind::Udp(p) => udp(c, ns, &format!("{LAN_HOST_IP}:{p}")),
        Kind::Icmp => icmp(ns, IpAddr::V4(LAN_HOST_IP)),
    }
}

/// Runs one cell: capture on the LAN host's link while `client` probes,
/// then count what reached the host.
fn run_cell(
    c: &Cluster<'_>,
    gw: Gateway,
    lan_if: &str,
    client_index: usize,
    row: &Row,
) -> anyhow::Result<Cell> {
    let client = CLIENTS[client_index];
    let lab = c.lab;
    let lan_ns = lab
        .node("gw")
        .lan
        .as_ref()
        .ok_or_else(|| anyhow!("no LAN"))?;
    let expected_src = match gw {
        Gateway::SubnetRouter => IpAddr::V4(tunnel_ip(c, client)?),
        Gateway::ExitNode => IpAddr::V4(
            lab.node("gw")
                .lan_addr
                .ok_or_else(|| anyhow!("no LAN address"))?,
        ),
    };
    let file = lab.path(&format!(
        "matrix-{}-{client}-{}.pcap",
        gw.name(),
        row.probe.label().replace('/', "-")
    ));
    let cap = Capture::start(lan_ns, lan_if, file)?;
    let result = send(c, client, row.probe);
    let pcap = cap.stop_raw();
    let to_host = format!("dst host {LAN_HOST_IP} and not arp");
    let this = format!("{to_host} and ({})", row.probe.filter());
    let arrived = count(&pcap, &this)?;
    let from_wrong_source = count(&pcap, &format!("{this} and not src host {expected_src}"))?;
    let other_packets = count(
        &pcap,
        &format!("{to_host} and not ({})", row.probe.filter()),
    )?;
    let admitted = row.admits[client_index];
    let pass = other_packets == 0
        && if admitted {
            arrived > 0 && from_wrong_source == 0 && result.ok
        } else {
            arrived == 0 && !result.ok
        }
        && result.seen.is_none_or(|seen| seen == expected_src);
    if !pass {
        eprintln!(
            "cell {} {client} {}: {}",
            gw.name(),
            row.probe.label(),
            lines(&pcap, &to_host, 20)
        );
    }
    Ok(Cell {
        client,
        probe: row.probe.label(),
        admitted_by_policy: admitted,
        arrived,
        from_wrong_source,
        other_packets,
        answered: result.ok,
        seen: result.seen,
        pass,
    })
}

fn matrix_on(gw: Gateway) {
    require_tools(&["tcpdump", "ping"]);
    let lab = Lab::new(&[
        NodeSpec::new("alice"),
        NodeSpec::new("bob"),
        NodeSpec::new("carol"),
        NodeSpec::with_lan("gw"),
    ])
    .unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    let names = ["alice", "bob", "carol", "gw"];
    must(
        case("protocol_filter", gw.name(), |ev| {
            bring_up(&mut c, gw)?;
            if gw == Gateway::SubnetRouter {
                explain_matches_dataplane(&c, ev)?;
            }
            let lan_ns = lab
                .node("gw")
                .lan
                .as_ref()
                .ok_or_else(|| anyhow!("no LAN"))?;
            let lan_if = only_link(lan_ns)?;
            let mut cells = Vec::new();
            for row in MATRIX {
                for i in 0..CLIENTS.len() {
                    cells.push(run_cell(&c, gw, &lan_if, i, row)?);
                }
            }
            let failed: Vec<&Cell> = cells.iter().filter(|cell| !cell.pass).collect();
            ev.set("gateway", gw.name());
            ev.set(
                "source_at_lan",
                match gw {
                    Gateway::SubnetRouter => "client tunnel address (--snat-subnet-routes=false)",
                    Gateway::ExitNode => "gateway LAN address (SNAT, the default)",
                },
            );
            ev.set(
                "rows",
                MATRIX
                    .iter()
                    .map(|r| serde_json::json!({"probe": r.probe.label(), "admits": r.admits, "covers": r.covers}))
                    .collect::<Vec<_>>(),
            );
            ev.set("clients", CLIENTS);
            ev.set("cells", &cells);
            ev.set("cells_total", cells.len());
            ev.set("cells_failed", failed.len());
            ev.packets = Some(cells.iter().map(|cell| cell.arrived).sum());
            ensure!(failed.is_empty(), "cells failed: {failed:#?}");
            Ok(())
        }),
        || {
            names
                .iter()
                .map(|n| c.diagnose(n))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
}

/// `route explain` and `acl explain` against what the kernel and the
/// packets say: alice's route to the LAN host is the one `ip route get`
/// reports, through gw on a live path; alice's map lets tcp/22 out through
/// gw and nothing else of tcp; gw forwards exactly alice's grants for her.
fn explain_matches_dataplane(c: &Cluster<'_>, ev: &mut Evidence) -> anyhow::Result<()> {
    use rustynet_proto::explain::{AclExplainDoc, RouteExplainDoc, RouteOutcome};
    let alice = &c.lab.node("alice").ns;
    let host = LAN_HOST_IP.to_string();
    let doc: RouteExplainDoc =
        serde_json::from_str(&c.rustynet("alice", &["--json", "route", "explain", &host])?)?;
    let kernel = alice.stdout(&["ip", "route", "get", &host])?;
    ev.set("route_explain_alice", &doc);
    ev.set("ip_route_get_alice", kernel.trim());
    let dev = doc.dev.clone().unwrap_or_default();
    ensure!(
        doc.outcome == RouteOutcome::Tunnel && kernel.contains(&format!("dev {dev} ")),
        "route explain says {doc:?}, the kernel says {kernel}"
    );
    let peer = doc
        .peer
        .clone()
        .ok_or_else(|| anyhow!("no peer in {doc:?}"))?;
    let status = c.status("alice")?;
    let gw = status
        .peers
        .iter()
        .find(|p| p.name == "gw")
        .ok_or_else(|| anyhow!("gw not in alice's status"))?;
    ensure!(
        peer.name == "gw" && peer.path == gw.path && peer.prefix.to_string() == LAN,
        "explain peer {peer:?} vs status {gw:?}"
    );
    let mut allowed = doc.allowed.clone();
    allowed.sort();
    ensure!(
        allowed == ["icmp", "tcp/22", "udp/8080"],
        "allowed out: {allowed:?}"
    );
    // Outside the tunnel: the internet has no Rustynet route here.
    let out: RouteExplainDoc = serde_json::from_str(
        &c.rustynet("alice", &["--json", "route", "explain", "203.0.113.10"])?,
    )?;
    let kernel_out = alice.stdout(&["ip", "route", "get", "203.0.113.10"])?;
    ev.set("route_explain_internet", &out);
    ensure!(
        out.outcome == RouteOutcome::Outside
            && kernel_out.contains(&format!("dev {} ", out.dev.clone().unwrap_or_default())),
        "internet: explain {out:?}, kernel {kernel_out}"
    );
    // acl explain on both ends, against the probes.
    let mine: AclExplainDoc =
        serde_json::from_str(&c.rustynet("alice", &["--json", "acl", "explain", "gw:22"])?)?;
    let theirs: AclExplainDoc =
        serde_json::from_str(&c.rustynet("gw", &["--json", "acl", "explain", "alice"])?)?;
    ev.set("acl_explain_alice_gw22", &mine);
    ev.set("acl_explain_gw_alice", &theirs);
    ensure!(
        mine.outbound_lan == [format!("{LAN} tcp/22")],
        "alice -> gw:22 out: {:?}",
        mine.outbound_lan
    );
    let mut fwd = theirs.forwarded.clone();
    fwd.sort();
    ensure!(
        fwd == [
            format!("{LAN} icmp"),
            format!("{LAN} tcp/22"),
            format!("{LAN} udp/8080")
        ],
        "gw forwards for alice: {fwd:?}"
    );
    let p22 = tcp(c, alice, &format!("{host}:22"));
    let p443 = tcp(c, alice, &format!("{host}:443"));
    ensure!(
        p22.ok && !p443.ok,
        "probes disagree with the explain: {p22:?} {p443:?}"
    );
    Ok(())
}

#[test]
fn protocol_filter_matrix_subnet_router() {
    matrix_on(Gateway::SubnetRouter);
}

#[test]
fn protocol_filter_matrix_exit_node() {
    matrix_on(Gateway::ExitNode);
}

fn route_explain(
    c: &Cluster<'_>,
    node: &str,
) -> anyhow::Result<rustynet_proto::explain::RouteExplainDoc> {
    let host = LAN_HOST_IP.to_string();
    Ok(serde_json::from_str(
        &c.rustynet(node, &["--json", "route", "explain", &host])?,
    )?)
}

/// Two routers offer the LAN; alice uses the first (lowest node id), and
/// within 5 s of its daemon being killed reaches the LAN through the
/// second. The LAN host's echo service tells which router carried the
/// probe (SNAT: the router's LAN address).
#[test]
fn subnet_router_failover() {
    require_tools(&["tcpdump"]);
    let lab = Lab::new(&[
        NodeSpec::new("alice"),
        NodeSpec::with_lan("r1"),
        NodeSpec::on_lan_of("r2", "r1"),
    ])
    .unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    let names = ["alice", "r1", "r2"];
    let r1_lan = IpAddr::V4(lab.node("r1").lan_addr.unwrap());
    let r2_lan = IpAddr::V4(lab.node("r2").lan_addr.unwrap());
    let alice = &lab.node("alice").ns;
    let target = format!("{LAN_HOST_IP}:22");
    must(
        case("netns_routers", "failover_within_5s", |ev| {
            c.set_policy(&format!(
                r#"{{"tag_owners": {{"tag:router": ["admin"]}},
                    "acls": [{{"action": "accept", "src": ["alice"], "dst": ["{LAN}:22"], "proto": "tcp"}}],
                    "route_approvers": [{{"routes": ["{LAN}"], "nodes": ["tag:router"]}}]}}"#
            ))?;
            for r in ["r1", "r2"] {
                c.start_daemon(r)?;
                let key = c.preauth("admin", &["tag:router"])?;
                c.up(r, &key, &["--advertise-routes", LAN])?;
                c.wait_status(r, SETTLE, applied)?;
            }
            c.start_daemon("alice")?;
            let key = c.preauth("alice", &[])?;
            c.up("alice", &key, &[])?;
            c.wait_status("alice", SETTLE, applied)?;
            c.rustynet("alice", &["lan-access", "on"])?;
            c.wait_status("alice", SETTLE, |s| applied(s) && s.peers.len() == 2)?;
            let first = wait_for(SETTLE, || {
                let p = tcp(&c, alice, &target);
                p.ok.then_some(p.seen)
            })
            .flatten()
            .ok_or_else(|| anyhow!("alice never reached the LAN"))?;
            ev.set("first_router_seen", first);
            ensure!(
                first == r1_lan,
                "expected r1 ({r1_lan}) first, the LAN saw {first}"
            );
            let before = route_explain(&c, "alice")?;
            ev.set("route_explain_before", &before);
            ensure!(
                before.peer.as_ref().map(|p| p.name.as_str()) == Some("r1")
                    && before.standby == ["r2"],
                "route explain before: {before:?}"
            );
            let killed = Instant::now();
            c.kill_daemon("r1");
            // Probe continuously with short timeouts until r2 carries one.
            let mut probes = 0;
            let moved = wait_for(Duration::from_secs(20), || {
                probes += 1;
                let p = tcp_quick(&c, alice, &target, 400);
                (p.ok && p.seen == Some(r2_lan)).then(|| killed.elapsed())
            })
            .ok_or_else(|| anyhow!("alice never reached the LAN through r2"))?;
            ev.set("failover_ms", moved.as_millis() as u64);
            ev.set("probes_until_moved", probes);
            let status = c.status("alice")?;
            let r1 = status.peers.iter().find(|p| p.name == "r1");
            ev.set("r1_in_alice_status", format!("{r1:?}"));
            ensure!(
                moved <= Duration::from_secs(5),
                "failover took {moved:?} (limit 5 s)"
            );
            // Stays on r2 and keeps working.
            let after = tcp(&c, alice, &target);
            ev.set("after", &after);
            ensure!(
                after.ok && after.seen == Some(r2_lan),
                "after failover: {after:?}"
            );
            let moved_doc = route_explain(&c, "alice")?;
            ev.set("route_explain_after", &moved_doc);
            ensure!(
                moved_doc.peer.as_ref().map(|p| p.name.as_str()) == Some("r2"),
                "route explain after failover: {moved_doc:?}"
            );
            // r1 coming back does not take the traffic away again (no
            // failback churn): the choice sticks while r2 is online.
            c.start_daemon("r1")?;
            c.wait_status("r1", SETTLE, applied)?;
            std::thread::sleep(Duration::from_secs(3));
            let back = tcp(&c, alice, &target);
            ev.set("after_r1_returned", &back);
            ensure!(
                back.ok && back.seen == Some(r2_lan),
                "after r1 returned: {back:?}"
            );
            Ok(())
        }),
        || {
            names
                .iter()
                .map(|n| c.diagnose(n))
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
}
