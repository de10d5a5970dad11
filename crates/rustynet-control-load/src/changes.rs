//! The measured changes: what each one affects, and how long until the
//! affected nodes hold their new verified maps.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::sim_node::{NodeState, lock};
use crate::stats::latency_ms;

/// Which nodes a change should reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It changes this node's map.
    Affected,
    /// It leaves this node's map as it was: a map sent to it is redundant.
    Unaffected,
    /// Not judged (the changed node itself, whose map may or may not
    /// carry what changed).
    Either,
}

/// Waits until every affected node has a map with new content (or
/// `deadline`), then until the fleet is quiet; the figures of the change,
/// its latencies counted from `committed`. `targets[i]`: node i's replica;
/// `origin`: the replica the change went through, if one did (latencies to
/// nodes on other replicas are then also given on their own).
pub async fn observe(
    fleet: &Fleet,
    expect: &[Expect],
    committed: Instant,
    deadline: Duration,
    quiet: Duration,
    targets: &[usize],
    origin: Option<usize>,
) -> (Value, bool) {
    let until = Instant::now() + deadline;
    loop {
        let missing = fleet
            .states
            .iter()
            .zip(expect)
            .filter(|(s, e)| **e == Expect::Affected && lock(s).changed_at.is_none())
            .count();
        if missing == 0 || Instant::now() >= until {
            break;
        }
        // Only how soon the wait ends: each node's arrival time is stamped
        // by its own stream task.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fleet.wait_quiet(quiet, deadline).await;
    let states = fleet.snapshot();
    let lat = |keep: &dyn Fn(usize) -> bool| -> Vec<Duration> {
        states
            .iter()
            .enumerate()
            .filter(|(i, _)| expect[*i] == Expect::Affected && keep(*i))
            .filter_map(|(_, s)| {
                s.changed_at
                    .map(|at| at.saturating_duration_since(committed))
            })
            .collect()
    };
    let all = lat(&|_| true);
    let affected = expect.iter().filter(|e| **e == Expect::Affected).count();
    let unaffected: Vec<&NodeState> = states
        .iter()
        .zip(expect)
        .filter(|(_, e)| **e == Expect::Unaffected)
        .map(|(s, _)| s)
        .collect();
    let extra: u64 = states
        .iter()
        .zip(expect)
        .filter(|(_, e)| **e == Expect::Affected)
        .map(|(s, _)| u64::from(s.since_mark.saturating_sub(1)))
        .sum();
    let mut figures = json!({
        "affected_nodes": affected,
        "affected_with_new_map": all.len(),
        "latency_from_commit_ms": latency_ms(&all),
        "extra_maps_to_affected_nodes": extra,
        "unaffected_nodes": unaffected.len(),
        "unaffected_nodes_sent_a_map": unaffected.iter().filter(|s| s.since_mark > 0).count(),
        "maps_sent_to_unaffected_nodes": unaffected.iter().map(|s| u64::from(s.since_mark)).sum::<u64>(),
    });
    if let Some(origin) = origin {
        let other = lat(&|i| targets[i] != origin);
        figures["origin_replica"] = json!(origin);
        figures["latency_on_other_replicas_ms"] = latency_ms(&other);
        figures["latency_on_origin_replica_ms"] = latency_ms(&lat(&|i| targets[i] == origin));
    }
    (figures, all.len() == affected)
}
