//! The demo's second lab: nodes behind NAT routers and control's embedded
//! relay. Shows hole punching, the relay for nodes no punch can join, and a
//! direct path cut and healed under traffic (fallback and failback times
//! measured on the spot).

use std::time::{Duration, Instant};

use rustynet_lab::paths::{block_direct, flood, heal, peer, start, tunnel_ip, wait_path};
use rustynet_lab::topology::NatKind::{DestinationDependent, EndpointIndependent};
use rustynet_lab::{Lab, NodeSpec};
use rustynet_proto::ipc::PathKind;

use crate::demo::{Step, check};

/// Runs the section.
pub fn run() -> anyhow::Result<()> {
    let s = Step::title(
        "NAT lab: control + relay on 192.0.2.1:443; alice and bob behind home NATs, \
         carol and dave behind NATs that map each destination to a new port",
    );
    let lab = Lab::new(&[
        NodeSpec::behind_nat("alice", EndpointIndependent),
        NodeSpec::behind_nat("bob", EndpointIndependent),
        NodeSpec::behind_nat("carol", DestinationDependent),
        NodeSpec::behind_nat("dave", DestinationDependent),
    ])?;
    let c = start(&lab, &["alice", "bob", "carol", "dave"])?;
    s.ok("four nodes enrolled, each connected to the relay");

    let s = Step::title("netcheck: what each NAT does");
    for node in ["alice", "carol"] {
        let text = c.rustynet(node, &["netcheck"])?;
        let nat = text
            .lines()
            .find(|l| l.to_ascii_lowercase().contains("nat"))
            .unwrap_or("")
            .trim()
            .to_owned();
        s.ok(format!("{node}: {nat}"));
    }

    let s = Step::title("hole punching: alice -> bob, both behind NAT");
    let started = Instant::now();
    let out = c.rustynet("alice", &["ping", "bob", "--until-direct", "-c", "40"])?;
    for line in out.lines().filter(|l| !l.trim().is_empty()).take(6) {
        println!("    {}", line.trim());
    }
    check(
        out.contains("direct"),
        format!("no direct pong from bob: {out}"),
    )?;
    s.ok(format!(
        "a direct pong after {} ms (the first went through the relay)",
        started.elapsed().as_millis()
    ));
    // Data makes the peer active; its traffic moves to the punched path.
    let bob = tunnel_ip(&c, "bob")?;
    let alice_ns = &lab.node("alice").ns;
    let traffic = Instant::now();
    let _ = flood(alice_ns, bob, 1);
    let waited = wait_path(
        &c,
        "alice",
        "bob",
        PathKind::Direct,
        Duration::from_secs(10),
    );
    let p = peer(&c, "alice", "bob")?;
    check(
        waited.is_ok() && p.path == PathKind::Direct,
        format!("alice -> bob traffic not direct: {p:?}"),
    )?;
    s.ok(format!(
        "traffic direct via {} {} ms after it started",
        p.via.as_deref().unwrap_or("?"),
        traffic.elapsed().as_millis()
    ));

    let s = Step::title("relay: carol -> dave, no punch can join two per-destination NATs");
    let out = c.rustynet("carol", &["ping", "dave", "-c", "3"])?;
    for line in out.lines().filter(|l| !l.trim().is_empty()).take(3) {
        println!("    {}", line.trim());
    }
    let p = peer(&c, "carol", "dave")?;
    check(
        p.path == PathKind::Relay,
        format!("carol -> dave not relayed: {p:?}"),
    )?;
    s.ok(format!(
        "through relay {} — the relay forwards sealed tunnel packets only",
        p.via.as_deref().unwrap_or("?")
    ));

    let s = Step::title("failover: alice <-> bob's direct path is cut under a 100 pkt/s flood");
    let f = std::thread::scope(|scope| -> anyhow::Result<_> {
        let run = scope.spawn(|| flood(alice_ns, bob, 6));
        std::thread::sleep(Duration::from_secs(2));
        block_direct(&lab, "alice", "bob", true)?;
        run.join()
            .map_err(|_| anyhow::anyhow!("flood thread panicked"))
    })?;
    let p = peer(&c, "alice", "bob")?;
    check(
        p.path == PathKind::Relay && f.received > 0,
        format!("no relay after the cut: {p:?} {f:?}"),
    )?;
    s.ok(format!(
        "on the relay: {}/{} pings answered, longest gap {} ms",
        f.received, f.sent, f.longest_gap_ms
    ));

    let s = Step::title("failback: the direct path heals");
    heal(&lab)?;
    let run = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| flood(alice_ns, bob, 5));
        let back = wait_path(&c, "alice", "bob", PathKind::Direct, Duration::from_secs(5));
        (back, traffic.join())
    });
    let back = run.0?;
    let f = run
        .1
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))?;
    s.ok(format!(
        "direct again {} ms after the heal; {}/{} pings answered across the switch",
        back.as_millis(),
        f.received,
        f.sent
    ));
    Ok(())
}
