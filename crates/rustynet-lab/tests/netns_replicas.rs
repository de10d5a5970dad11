//! Root-only end-to-end test of control replicas (issue 12): two real
//! `rustynet-control serve` processes on one PostgreSQL database, real
//! daemons and the real CLI in network namespaces.
//!
//! Both nodes enroll through replica A; bob then lists B first
//! (`up --control B,A`, the same node) and streams from B. A policy change
//! made on the shared database reaches bob through B. Then B is SIGKILLed
//! mid-stream: bob must stream from A again within 5 s, its applied
//! generation never goes backwards (and the next map is newer than any
//! before), no map is refused, and a ping running from alice to bob
//! through the kill keeps being answered.
//!
//! Needs the throwaway cluster of `scripts/ci/with_postgres.sh`
//! (`RUSTYNET_TEST_POSTGRES`); without it the suite fails saying so. Run as
//! root: `scripts/ci/with_postgres.sh cargo test -p rustynet-lab --test
//! netns_replicas`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mesh_support;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use mesh_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::{Cluster, Lab, NodeSpec};

const REPORT: &str = "netns_e2e";

/// The failover goal of issue 12.
const FAILOVER_GOAL: Duration = Duration::from_secs(5);

/// No one may reach anyone.
const POLICY_CLOSED: &str = r#"{
  "groups": {"group:staff": ["alice", "bob", "carol"]},
  "acls": []
}"#;

/// A database of this run's own on the throwaway PostgreSQL cluster,
/// dropped at the end. The replicas run in the router namespace, where the
/// server's loopback address does not exist: they reach it by its Unix
/// socket (a file, the same in every network namespace).
struct TestDb {
    admin: String,
    name: String,
    /// The connection string for the replicas.
    replica_conn: String,
}

fn psql(conn: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(conn)
        .args(["-X", "-A", "-t", "-q", "-c", sql])
        .output()
        .context("psql (Debian package postgresql-client)")?;
    ensure!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl TestDb {
    fn new() -> anyhow::Result<Self> {
        let Ok(admin) = std::env::var("RUSTYNET_TEST_POSTGRES") else {
            bail!(
                "RUSTYNET_TEST_POSTGRES is not set: this suite needs a PostgreSQL server. Run it \
                 through scripts/ci/with_postgres.sh (a throwaway cluster on loopback), e.g. \
                 scripts/ci/with_postgres.sh cargo test -p rustynet-lab --test netns_replicas"
            );
        };
        let name = format!("rn_lab_replicas_{}", std::process::id());
        psql(&admin, &format!("DROP DATABASE IF EXISTS {name}"))?;
        psql(&admin, &format!("CREATE DATABASE {name}"))?;
        let socket_dir = psql(&admin, "SHOW unix_socket_directories")?
            .split(',')
            .next()
            .map(|d| d.trim().to_owned())
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| anyhow!("the PostgreSQL server has no Unix socket directory"))?;
        let port = admin
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .unwrap_or("5432");
        Ok(Self {
            replica_conn: format!("host={socket_dir} port={port} user=postgres dbname={name}"),
            admin,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// `ping` statistics: (transmitted, received).
fn ping_counts(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut numbers = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Waits until no node's generation moves for a few seconds. (Not
/// `wait_settled`: a replica knows only its own streams as online, so a
/// node on A sees a node streaming from B as offline.)
fn quiet(t: &Transcript, c: &Cluster<'_>, nodes: &[&str]) -> anyhow::Result<()> {
    let generations = || -> Option<Vec<u64>> {
        nodes
            .iter()
            .map(|n| t.status(c, n).ok().map(|s| s.generation))
            .collect()
    };
    let mut last: Option<Vec<u64>> = None;
    wait_for(Duration::from_secs(60), || {
        let now = generations();
        let same = now.is_some() && now == last;
        last = now;
        if !same {
            std::thread::sleep(Duration::from_secs(2));
        }
        same.then_some(())
    })
    .ok_or_else(|| anyhow!("the network did not settle: generations {last:?}"))
}

#[test]
fn replica_killed_mid_stream_its_nodes_stream_from_the_other() {
    run_case(REPORT, "replicas_failover", |ev| {
        let db = TestDb::new()?;
        let names = ["alice", "bob"];
        let lab = Lab::new(&names.map(NodeSpec::new))?;
        let mut c = Cluster::start_replicated(&lab, "10m", &db.replica_conn)?;
        let t = Transcript::default();
        let (a_url, b_url) = (c.replica_url(0), c.replica_url(1));
        c.set_policy(MESH_POLICY)?;

        // Both enroll through A; alice keeps B as her fallback.
        let mut keys = Vec::new();
        for n in names {
            let key = c.preauth(n, &[])?;
            keys.push(Secret::text(format!("pre-auth key of {n}"), &key));
            c.start_daemon(n)?;
            let extra: &[&str] = if n == "alice" {
                &["--control", &b_url]
            } else {
                &[]
            };
            t.up(&c, n, &key, extra)?;
        }
        let bob_enrolled = t.wait_applied(&c, "bob", 1)?;
        let bob_id = bob_enrolled
            .self_node
            .as_ref()
            .map(|s| s.node_id)
            .ok_or_else(|| anyhow!("bob: no self"))?;
        // Bob now prefers B: the same node (no pre-auth key), streaming from B.
        let list = format!("{b_url},{a_url}");
        t.ok(&c, "bob", &["up", "--control", &list])?;
        let bob = t.wait_status(&c, "bob", SETTLE, |s| {
            s.control.in_use.as_deref() == Some(b_url.as_str())
        })?;
        ensure!(
            bob.control.urls == [b_url.clone(), a_url.clone()],
            "bob's saved URLs: {:?}",
            bob.control.urls
        );
        ensure!(
            bob.self_node.as_ref().map(|s| s.node_id) == Some(bob_id),
            "bob enrolled anew instead of keeping node {bob_id}: {:?}",
            bob.self_node
        );
        let alice = t.wait_status(&c, "alice", SETTLE, |s| {
            s.control.in_use.as_deref() == Some(a_url.as_str()) && s.peers.len() == 1
        })?;
        ensure!(
            alice.control.urls == [a_url.clone(), b_url.clone()],
            "alice's saved URLs: {:?}",
            alice.control.urls
        );
        let ip_bob = tunnel_ip(&t.wait_applied(&c, "bob", 1)?)?;
        let alice_ns = &lab.node("alice").ns;
        ensure!(
            ping_within(alice_ns, ip_bob, SETTLE),
            "alice cannot ping bob\n{}\n{}",
            c.diagnose("alice"),
            c.diagnose("bob")
        );

        // A policy change made on the shared database reaches bob on B.
        let before = t.status(&c, "bob")?.generation;
        let started = Instant::now();
        c.set_policy(POLICY_CLOSED)?;
        let closed = t.wait_status(&c, "bob", SETTLE, |s| {
            s.peers.is_empty() && s.generation > before
        })?;
        let policy_ms = started.elapsed().as_millis();
        ensure!(
            closed.control.in_use.as_deref() == Some(b_url.as_str()),
            "bob saw the change through {:?}, not B",
            closed.control.in_use
        );
        c.set_policy(MESH_POLICY)?;
        t.wait_applied(&c, "bob", 1)?;
        t.wait_applied(&c, "alice", 1)?;
        ensure!(
            ping_within(alice_ns, ip_bob, SETTLE),
            "alice cannot ping bob after the policy came back"
        );
        quiet(&t, &c, &names)?;

        // Traffic runs from alice to bob while B is killed under bob.
        let ping_log = lab.path("ping-through-kill.log");
        let bob_ip = ip_bob.to_string();
        let mut pinger = alice_ns.spawn(
            &["ping", "-n", "-i", "0.2", "-c", "60", "-W", "1", &bob_ip],
            &ping_log,
        )?;
        std::thread::sleep(Duration::from_secs(2));
        let bob_before = t.status(&c, "bob")?;
        ensure!(
            bob_before.control.in_use.as_deref() == Some(b_url.as_str()),
            "bob is not streaming from B before the kill: {:?}",
            bob_before.control
        );
        let mut generations = vec![bob_before.generation];
        let started = Instant::now();
        c.kill_replica(1);
        let moved = wait_for(Duration::from_secs(20), || {
            let s = c.status("bob").ok()?;
            generations.push(s.generation);
            (s.control.in_use.as_deref() == Some(a_url.as_str())).then_some(s)
        });
        let failover = started.elapsed();
        let Some(moved) = moved else {
            bail!(
                "bob did not stream from A within 20 s of B's kill\n{}",
                c.diagnose("bob")
            );
        };
        ensure!(
            failover <= FAILOVER_GOAL,
            "bob streamed from A {failover:?} after B was killed (goal {FAILOVER_GOAL:?})"
        );
        ensure!(
            moved.control.failovers == 1,
            "bob's failover count: {}",
            moved.control.failovers
        );
        // A opens with a fresh map: newer than anything B sent.
        let newer = t.wait_status(&c, "bob", SETTLE, |s| s.generation > bob_before.generation)?;
        generations.push(newer.generation);
        ensure!(
            generations.windows(2).all(|w| w[0] <= w[1]),
            "bob's generation went backwards: {generations:?}"
        );
        ensure!(
            newer.peers.len() == 1,
            "bob's peers after the failover: {:?}",
            newer.peers
        );
        let rejected = log_events(&c.log("bob"), "signed map rejected");
        ensure!(
            rejected.is_empty(),
            "bob refused maps around the failover: {rejected:?}"
        );
        let alice_after = t.status(&c, "alice")?;
        ensure!(
            alice_after.control.in_use.as_deref() == Some(a_url.as_str())
                && alice_after.control.failovers == 0,
            "alice (on A) was disturbed: {:?}",
            alice_after.control
        );

        let finished = wait_for(Duration::from_secs(30), || pinger.try_wait().ok().flatten());
        if finished.is_none() {
            let _ = pinger.kill();
            let _ = pinger.wait();
        }
        let ping_out = std::fs::read_to_string(&ping_log)?;
        let (sent, received) =
            ping_counts(&ping_out).ok_or_else(|| anyhow!("no ping statistics: {ping_out}"))?;
        ensure!(
            sent >= 50 && received + 2 >= sent,
            "alice -> bob through the kill: {received} of {sent} answered\n{ping_out}"
        );
        ensure!(
            ping(alice_ns, ip_bob, 3, None),
            "alice -> bob after the failover"
        );

        ev.set("replicas", [&a_url, &b_url]);
        ev.set("policy_change_via_shared_db_seen_on_b_ms", policy_ms);
        ev.set(
            "failover_ms",
            u64::try_from(failover.as_millis()).unwrap_or(u64::MAX),
        );
        ev.set("failover_goal_ms", 5000);
        ev.set("bob_generations_through_failover", &generations);
        ev.set("ping_through_kill", format!("{received}/{sent}"));
        ev.set("leak_scan", ensure_no_leaks(&c, &t, &names, keys)?);
        Ok(())
    });
}
