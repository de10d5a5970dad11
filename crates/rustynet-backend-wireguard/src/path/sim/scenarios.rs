//! The scenarios of issue 9, each returning what it measured.

use std::time::Duration;

use super::net::Nat;
use super::{Setup, Wake, World};
use crate::path::PathKind;
use crate::path::test_rng::TestRng;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// When flows start: after both nodes settled (tick phases, discovery).
const START: Duration = Duration::from_secs(1);

/// Connecting from scratch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Connect {
    /// Time from the first data to a plain direct route, per node.
    pub(crate) direct_after: [Option<Duration>; 2],
    /// Time from the first data packet to its delivery (handshake included).
    pub(crate) first_delivery: Option<Duration>,
    /// The path kind at the end, per node.
    pub(crate) final_kind: [PathKind; 2],
    /// Path kind changes after the first data, per node.
    pub(crate) switches: [usize; 2],
    pub(crate) relay_rtt: Duration,
}

/// Two nodes start a flow and run for 15 s.
pub(crate) fn connect(setup: &Setup) -> Connect {
    let mut w = World::new(setup);
    w.run_until(START);
    w.start_flows();
    let end = START + secs(15.0);
    w.run_until(end);
    Connect {
        direct_after: [0, 1].map(|i| w.direct_again(i, START)),
        first_delivery: w.first_delivery(0),
        final_kind: [0, 1].map(|i| w.route_at(i, end).1),
        switches: [0, 1].map(|i| w.switches(i, START, end)),
        relay_rtt: w.links.relay_rtt(),
    }
}

/// A direct path blackholed (both ways or one way), possibly healed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outage {
    /// Longest time without delivery, worse direction, from the fault to
    /// the heal (or the end).
    pub(crate) gap: Duration,
    /// Path kind changes per node from the fault to the heal (or the end).
    pub(crate) switches: [usize; 2],
    /// Route changes (any) per node over the same window.
    pub(crate) route_changes: [usize; 2],
    /// After the heal: time until both nodes send direct again.
    pub(crate) failback: Option<Duration>,
    /// After the heal: lost and sent packets (both directions).
    pub(crate) heal_loss: (u64, u64),
    /// Tunnel handshakes over the whole run (the first one only, if paths
    /// changed without new handshakes).
    pub(crate) handshakes: u32,
    /// Probes the attacker injected, and the probe refusals per node.
    pub(crate) injected: u64,
    pub(crate) refused: [crate::path::counters::ProbeCountersSnapshot; 2],
    /// Whether any node used a plain direct route while the path was cut
    /// (after the first trust window).
    pub(crate) direct_while_cut: bool,
}

/// How to cut the direct path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    Both,
    /// Only datagrams from this node to the other.
    From(usize),
}

/// Options of [`outage`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutagePlan {
    pub(crate) cut: Cut,
    /// How long the cut lasts: uniform in `[min, max]` seconds.
    pub(crate) length: (f64, f64),
    /// Heal at the end of the cut and watch this long (0: never heal).
    pub(crate) after_heal: f64,
    pub(crate) attack: bool,
}

/// Both behind easy NAT, direct after punching; the cut starts at a random
/// phase relative to heartbeats, ticks and data.
pub(crate) fn outage(setup: &Setup, plan: OutagePlan) -> Outage {
    let mut phase = TestRng::new(setup.seed ^ 0x5eed);
    let mut w = World::new(setup);
    w.run_until(START);
    w.start_flows();
    let cut = START + secs(5.0 + phase.unit());
    let (lo, hi) = plan.length;
    let len = lo + (hi - lo) * phase.unit();
    let heal = cut + secs(len);
    w.run_until(cut);
    let links = match plan.cut {
        Cut::Both => vec![(0, 1), (1, 0)],
        Cut::From(i) => vec![(i, 1 - i)],
    };
    for &(a, b) in &links {
        w.blackhole(a, b, true);
    }
    if plan.attack {
        w.start_attack(heal);
    }
    w.run_until(heal);
    let window = (cut.saturating_sub(secs(0.5)), heal);
    let gap = [0, 1]
        .map(|d| w.longest_gap(d, window.0, window.1))
        .into_iter()
        .max()
        .unwrap_or_default();
    let settle = cut + secs(1.2);
    let direct_while_cut = (0..2).any(|i| {
        matches!(w.route_at(i, settle).0, crate::path::Route::Direct(_))
            || w.nodes[i].routes.iter().any(|e| {
                e.0 > settle && e.0 <= heal && matches!(e.1, crate::path::Route::Direct(_))
            })
    });
    let mut failback = None;
    let mut heal_loss = (0, 0);
    if plan.after_heal > 0.0 {
        for &(a, b) in &links {
            w.blackhole(a, b, false);
        }
        let end = heal + secs(plan.after_heal);
        w.run_until(end);
        failback = [0, 1]
            .map(|i| w.direct_again(i, heal))
            .into_iter()
            .try_fold(Duration::ZERO, |m, d| d.map(|d| m.max(d)));
        // Packets sent up to 1 s before the end have had time to arrive.
        let (l0, s0) = w.lost(0, heal, end - secs(1.0));
        let (l1, s1) = w.lost(1, heal, end - secs(1.0));
        heal_loss = (l0 + l1, s0 + s1);
    }
    Outage {
        gap,
        switches: [0, 1].map(|i| w.switches(i, cut, heal)),
        route_changes: [0, 1].map(|i| w.route_changes(i, cut, heal)),
        failback,
        heal_loss,
        handshakes: w.nodes[0].handshakes + w.nodes[1].handshakes,
        injected: w.attack.as_ref().map_or(0, |a| a.injected),
        refused: [0, 1].map(|i| w.nodes[i].counters.snapshot()),
        direct_while_cut,
    }
}

/// A node moved or its NAT rebound.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Roam {
    /// Longest time without delivery, worse direction, around the change.
    pub(crate) resume: Duration,
    /// Time until both nodes send direct again.
    pub(crate) direct: Option<Duration>,
    pub(crate) handshakes: u32,
}

/// What happens to node 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// New addresses (another network); the shell is told.
    Move,
    /// Its NAT forgets the mapping; nobody is told.
    Rebind,
}

pub(crate) fn roam(setup: &Setup, change: Change) -> Roam {
    let mut phase = TestRng::new(setup.seed ^ 0x0a11);
    let mut w = World::new(setup);
    w.run_until(START);
    w.start_flows();
    let at = START + secs(5.0 + phase.unit());
    w.run_until(at);
    match change {
        Change::Move => w.move_node(0),
        Change::Rebind => w.rebind(0),
    }
    let end = at + secs(15.0);
    w.run_until(end);
    let resume = [0, 1]
        .map(|d| w.longest_gap(d, at.saturating_sub(secs(0.5)), end))
        .into_iter()
        .max()
        .unwrap_or_default();
    let direct = [0, 1]
        .map(|i| w.direct_again(i, at))
        .into_iter()
        .try_fold(Duration::ZERO, |m, d| d.map(|d| m.max(d)));
    Roam {
        resume,
        direct,
        handshakes: w.nodes[0].handshakes + w.nodes[1].handshakes,
    }
}

/// A lossy direct link for two minutes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lossy {
    pub(crate) switches: [usize; 2],
    pub(crate) final_kind: [PathKind; 2],
}

pub(crate) fn lossy(setup: &Setup) -> Lossy {
    let mut w = World::new(setup);
    w.run_until(START);
    w.start_flows();
    let settled = START + secs(3.0);
    let end = settled + secs(120.0);
    w.run_until(end);
    Lossy {
        switches: [0, 1].map(|i| w.switches(i, settled, end)),
        final_kind: [0, 1].map(|i| w.route_at(i, end).1),
    }
}

/// A flow that stops, idles long enough for the peers to go cold and the
/// NAT mappings to expire, and starts again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cold {
    /// From the restart to the first delivery (worse direction).
    pub(crate) first: Duration,
    /// From the restart until both nodes send direct again.
    pub(crate) direct: Option<Duration>,
    pub(crate) handshakes: u32,
    /// Probes sent by both nodes during the last 5 idle minutes.
    pub(crate) idle_probes: u64,
}

pub(crate) fn cold(setup: &Setup, idle: Duration) -> Cold {
    let mut w = World::new(setup);
    w.run_until(START);
    w.start_flows();
    w.run_until(START + secs(5.0));
    w.stop_flows();
    let restart = w.now + idle;
    let quiet_from = restart.saturating_sub(secs(300.0));
    w.run_until(quiet_from);
    let sent = |w: &World| -> u64 {
        w.nodes
            .iter()
            .map(|n| {
                let s = n.peer().stats();
                s.pings_sent + s.pongs_sent + s.call_me_sent
            })
            .sum()
    };
    let before = sent(&w);
    w.run_until(restart);
    let idle_probes = sent(&w) - before;
    let seen = [0, 1].map(|d| w.flows[d].arrivals.len());
    w.start_flows();
    w.run_until(restart + secs(10.0));
    let first = [0, 1]
        .map(|d| {
            w.flows[d]
                .arrivals
                .get(seen[d])
                .map_or(Duration::MAX, |t| *t - restart)
        })
        .into_iter()
        .max()
        .unwrap_or(Duration::MAX);
    let direct = [0, 1]
        .map(|i| w.direct_again(i, restart))
        .into_iter()
        .try_fold(Duration::ZERO, |m, d| d.map(|d| m.max(d)));
    Cold {
        first,
        direct,
        handshakes: w.nodes[0].handshakes + w.nodes[1].handshakes,
        idle_probes,
    }
}

/// A setup for the outage and roaming scenarios: both behind easy NAT.
pub(crate) fn easy(seed: u64, wake: Wake) -> Setup {
    let mut s = Setup::new([Nat::Easy, Nat::Easy], seed);
    s.wake = wake;
    s
}
