//! Transactions end to end (issue 4 case 8, Phase 10 §8): a real daemon in
//! a namespace, a fault armed in it at run time (`RUSTYNET_FAULT_FILE`, the
//! daemon is built with fault injection) at each apply step in turn. A
//! failed apply must leave the previous generation exactly in place
//! (routing, rules, nftables, sysctls; traffic still flowing the old way)
//! with egress protected throughout; a failed rollback must fail closed
//! with the error shown in `status`, and recover once the fault is gone.
//!
//! Root only: run with `cargo test -p rustynet-lab --test netns_exit_txn`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exit_support;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{anyhow, ensure};
use exit_support::*;
use rustynet_lab::cluster::wait_for;
use rustynet_lab::{Cluster, Lab, NodeSpec};
use rustynet_proto::ipc::DataplaneState;

/// Alice (with a fault file) and an exit, both applied.
fn start<'a>(lab: &'a Lab, fault: &FaultFile) -> Cluster<'a> {
    let mut c = Cluster::start(lab, "10m").unwrap();
    c.set_policy(POLICY).unwrap();
    let (k, v) = fault.env();
    enroll_node(&mut c, "alice", &[(k, &v)]).unwrap();
    enroll_node(&mut c, "exit", &[]).unwrap();
    wait_peers(&c, "alice", &["exit"]).unwrap();
    wait_peers(&c, "exit", &["alice"]).unwrap();
    c
}

/// Runs `args` on alice with `step` armed; the command must fail, saying
/// which step failed and that it was rolled back. Returns the packets to
/// the internet host captured on alice's link meanwhile, and the probes of
/// the internet host made right after the command.
fn failing_command(
    c: &Cluster<'_>,
    fault: &FaultFile,
    step: &str,
    rollback: bool,
    args: &[&str],
    ev: &mut Evidence,
) -> anyhow::Result<(usize, Vec<Probe>)> {
    let mark = bypass_mark(&c.lab.node("alice").ns)?;
    let cap = capture_node(c.lab, "alice", &format!("{step}-{}", args.join("-")))?;
    fault.arm(step, rollback)?;
    let result = cli(c, "alice", args);
    let probes = probe_internet(c, &c.lab.node("alice").ns, false);
    canary(&c.lab.node("alice").ns, mark);
    let pcap = cap.stop_raw();
    if !rollback {
        fault.disarm();
    }
    let (ok, out) = result?;
    ev.set("command", args.join(" "));
    ev.set("cli_output", &out);
    ev.set("probes_right_after", &probes);
    let leaked = count(&pcap, &internet_filter())?;
    let canary = count(&pcap, &canary_filter())?;
    ev.set("canary_packets_captured", canary);
    ensure!(canary > 0, "the capture saw no canary packet");
    ensure!(
        !ok,
        "`rustynet {}` succeeded with {step} failing",
        args.join(" ")
    );
    ensure!(
        out.contains(&format!("apply failed at step {step}")),
        "the error does not name the failed step: {out}"
    );
    let expected = if rollback {
        "rollback failed"
    } else {
        "(rolled back)"
    };
    ensure!(
        out.contains(expected),
        "the error does not say {expected:?}: {out}"
    );
    Ok((leaked, probes))
}

/// What starts the new generation.
#[derive(Clone, Copy)]
enum Trigger {
    /// `rustynet exit-node off` (IPC; the command must fail).
    ExitOff,
    /// `rustynet lan-access on`: control answers with a map carrying the
    /// LAN grant, and applying that map fails.
    LanGrantMap,
    /// A new peer enrols: control sends a map with it (new tunnel peer,
    /// filter rules and DNS record), and applying that map fails.
    NewPeerMap,
}

/// With `step` armed, the new signed map from control fails to apply:
/// waits until `status` shows it. Returns the packets to the internet host
/// captured on alice's link meanwhile.
fn failing_map(
    c: &mut Cluster<'_>,
    fault: &FaultFile,
    step: &str,
    trigger: Trigger,
    ev: &mut Evidence,
) -> anyhow::Result<usize> {
    let ns = &c.lab.node("alice").ns;
    let mark = bypass_mark(ns)?;
    let cap = capture_node(c.lab, "alice", &format!("{step}-map"))?;
    fault.arm(step, false)?;
    match trigger {
        Trigger::LanGrantMap => {
            let out = c.rustynet("alice", &["lan-access", "on"])?;
            ev.set("cli_output", out.trim());
        }
        Trigger::NewPeerMap => enroll_node(c, "bob", &[])?,
        Trigger::ExitOff => unreachable!("an IPC trigger"),
    }
    let wanted = format!("apply failed at step {step}");
    let s = c.wait_status("alice", SETTLE, |s| {
        s.error.as_deref().is_some_and(|e| e.contains(&wanted))
    });
    let probes = probe_internet(c, ns, false);
    canary(ns, mark);
    // The fault stays armed until the caller has compared the state: a map
    // arriving meanwhile (bob coming online) must fail too, not land.
    let pcap = cap.stop_raw();
    let s = s?;
    ev.set("status_error", &s.error);
    ev.set("probes_right_after", &probes);
    let canary = count(&pcap, &canary_filter())?;
    ev.set("canary_packets_captured", canary);
    ensure!(canary > 0, "the capture saw no canary packet");
    ensure!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("(rolled back)")),
        "the error does not say it was rolled back: {:?}",
        s.error
    );
    count(&pcap, &internet_filter())
}

/// The generation of the last `apply failed` event at `step` in a daemon log.
fn last_failed_generation(log: &str, step: &str) -> Option<u64> {
    log.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == "apply failed" && v["failure"] == step)
            .then(|| v["generation"].as_u64())
            .flatten()
    })
}

/// From an exit-selected (protected) generation, a new generation fails at
/// each step, started by `exit-node off` or by a new map from control:
/// the protected generation stays, exactly.
#[test]
fn apply_failure_keeps_protected_generation() {
    require_tools(&[]);
    let lab = Lab::new(&[
        NodeSpec::new("alice"),
        NodeSpec::with_lan("exit"),
        NodeSpec::new("bob"),
    ])
    .unwrap();
    let fault = FaultFile::new(&lab, "alice");
    let mut c = start(&lab, &fault);
    select_exit(&c, "alice", "exit").unwrap();
    let alice = &lab.node("alice");
    let exit_addr = IpAddr::V4(lab.node("exit").addr);
    let protected = snapshot(&alice.ns).unwrap();
    let triggers: Vec<(&str, Trigger)> = STEPS
        .iter()
        .map(|s| (*s, Trigger::ExitOff))
        .chain(["backend", "routes", "firewall"].map(|s| (s, Trigger::LanGrantMap)))
        .chain([("dns", Trigger::NewPeerMap)])
        .collect();
    for (step, trigger) in triggers {
        let what = match trigger {
            Trigger::ExitOff => "exit_off",
            Trigger::LanGrantMap => "lan_grant_map",
            Trigger::NewPeerMap => "new_peer_map",
        };
        let name = format!("apply_fault_{step}_{what}_keeps_protected_generation");
        let generation = c.status("alice").map(|s| s.generation).unwrap_or(0);
        let result = case("netns_e2e", &name, |ev| {
            let leaked = match trigger {
                Trigger::ExitOff => {
                    failing_command(&c, &fault, step, false, &["exit-node", "off"], ev)?.0
                }
                _ => failing_map(&mut c, &fault, step, trigger, ev)?,
            };
            ev.set("packets_to_internet_host", leaked);
            ev.packets = Some(leaked);
            ensure!(
                leaked == 0,
                "{leaked} packets to the internet host left directly during the failed apply"
            );
            let s = c.status("alice")?;
            ev.set("state_after", s.state.as_str());
            ensure!(
                s.state == DataplaneState::ExitActive
                    && s.kill_switch
                    && s.exit_node.as_deref() == Some("exit"),
                "previous generation not in force: {s:?}"
            );
            let d = diff(&protected, &snapshot(&alice.ns)?);
            ev.set("sections_differing", d.len());
            ensure!(
                d.is_empty(),
                "state changed by a failed apply:\n{}",
                d.join("\n")
            );
            let via = wait_for(SETTLE, || {
                let p = tcp(&c, &alice.ns, &echo4());
                (p.seen == Some(exit_addr)).then_some(p)
            })
            .ok_or_else(|| anyhow!("traffic no longer leaves through the exit"))?;
            ev.set("probe_after", &via);
            fault.disarm();
            if let Trigger::LanGrantMap = trigger {
                // Back to no grant before the next step: the toggle off
                // (a no-op locally) and control's map without the grant.
                // The failed map's generation comes from the daemon's log:
                // a status read after the command may already show the
                // map control sends in answer to it.
                let failed_gen = last_failed_generation(&c.log("alice"), step)
                    .ok_or_else(|| anyhow!("no \"apply failed\" event for step {step}"))?;
                ensure!(
                    failed_gen > generation,
                    "the failing map was not the newer one"
                );
                c.rustynet("alice", &["lan-access", "off"])?;
                c.wait_status("alice", SETTLE, |s| {
                    s.generation > failed_gen && s.error.is_none()
                })?;
            }
            Ok(())
        });
        fault.disarm();
        must(result, || diagnose(&c, &["alice", "exit"]));
    }
}

/// From a mesh-only (unprotected) generation, `exit-node select` fails at
/// each step: nothing of the exit generation remains.
#[test]
fn apply_failure_keeps_unprotected_generation() {
    require_tools(&[]);
    let lab = Lab::new(&[NodeSpec::new("alice"), NodeSpec::with_lan("exit")]).unwrap();
    let fault = FaultFile::new(&lab, "alice");
    let c = start(&lab, &fault);
    let alice = &lab.node("alice");
    let before = snapshot(&alice.ns).unwrap();
    for step in STEPS {
        let name = format!("apply_fault_{step}_exit_select_keeps_unprotected_generation");
        let result = case("netns_e2e", &name, |ev| {
            let (direct, _) = failing_command(
                &c,
                &fault,
                step,
                false,
                &["exit-node", "select", "exit"],
                ev,
            )?;
            ev.set("packets_to_internet_host_direct", direct);
            let s = c.status("alice")?;
            ev.set("state_after", s.state.as_str());
            ensure!(
                s.state == DataplaneState::DataplaneApplied
                    && !s.kill_switch
                    && s.exit_node.is_none(),
                "previous generation not in force: {s:?}"
            );
            let d = diff(&before, &snapshot(&alice.ns)?);
            ev.set("sections_differing", d.len());
            ensure!(
                d.is_empty(),
                "state changed by a failed apply:\n{}",
                d.join("\n")
            );
            let p = tcp(&c, &alice.ns, &echo4());
            ev.set("probe_after", &p);
            ensure!(
                p.seen == Some(IpAddr::V4(alice.addr)),
                "egress is no longer direct: {p:?}"
            );
            Ok(())
        });
        fault.disarm();
        must(result, || diagnose(&c, &["alice", "exit"]));
    }
}

/// A failed rollback at each step fails closed (egress blocked, the error
/// in `status`) and recovers once the fault is gone.
#[test]
fn failed_rollback_fails_closed() {
    require_tools(&[]);
    let lab = Lab::new(&[NodeSpec::new("alice"), NodeSpec::with_lan("exit")]).unwrap();
    let fault = FaultFile::new(&lab, "alice");
    let c = start(&lab, &fault);
    select_exit(&c, "alice", "exit").unwrap();
    let alice = &lab.node("alice");
    let exit_addr = IpAddr::V4(lab.node("exit").addr);
    for step in STEPS {
        let name = format!("apply_rollback_failure_{step}_fails_closed");
        let result = case("netns_e2e", &name, |ev| {
            let (leaked, probes) =
                failing_command(&c, &fault, step, true, &["exit-node", "off"], ev)?;
            let s = c.status("alice")?;
            ev.set("state_after", s.state.as_str());
            ev.set("status_error", &s.error);
            ev.set("packets_to_internet_host", leaked);
            ev.packets = Some(leaked);
            ensure!(
                s.state == DataplaneState::FailClosed,
                "not fail_closed after a failed rollback: {s:?}"
            );
            ensure!(
                s.error
                    .as_deref()
                    .is_some_and(|e| e.contains("rollback failed")),
                "status does not show the rollback failure: {:?}",
                s.error
            );
            ensure!(s.kill_switch, "kill switch not asserted while fail_closed");
            ensure!(
                probes.iter().all(|p| !p.ok),
                "egress open while fail_closed: {probes:?}"
            );
            ensure!(
                leaked == 0,
                "{leaked} packets to the internet host left directly"
            );
            fault.disarm();
            c.rustynet("alice", &["lan-access", "off"])?;
            let back = wait_for(SETTLE, || {
                (tcp(&c, &alice.ns, &echo4()).seen == Some(exit_addr)).then_some(())
            });
            ensure!(
                back.is_some(),
                "no recovery through the exit after the fault was removed"
            );
            let s = c.wait_status("alice", Duration::from_secs(10), |s| {
                s.state == DataplaneState::ExitActive
            })?;
            ensure!(
                s.error.is_none(),
                "error still shown after recovery: {:?}",
                s.error
            );
            Ok(())
        });
        fault.disarm();
        must(result, || diagnose(&c, &["alice", "exit"]));
    }
}
