//! Deterministic simulation of two nodes, their NATs, links and a relay, on
//! a fake clock with a seeded RNG (in the spirit of Firezone's connlib
//! `tests/sim_*` and Tailscale's natlab).
//!
//! Each node runs the real path code exactly as the engine shell will: a
//! [`PathPeer`] for the other node, real probe sealing and opening with a
//! [`ProbeKey`], probe counters, a 100 packet/s data flow that follows the
//! published route (with a WireGuard-like handshake in front: queued data,
//! initiator and responder), a relay connection, endpoint discovery
//! (STUN-like binding through the NAT), and a timer that wakes at the
//! machine's deadlines. The world delivers datagrams through NAT boxes
//! ([`net`]) and the relay, and injects faults: blackholes one or both
//! ways, healing, address changes, NAT rebinding, and an attacker replaying
//! and forging probes. `scenarios` measures the goals of issue 9; `goals`
//! asserts them and writes the figures as JSON.

mod goals;
mod net;
mod node;
mod scenarios;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::test_rng::TestRng;
use super::{PathKind, PathPeer, ProbeKey, Route};
use net::{Links, Nat, NatBox, lan_ip, public_ip};
use node::{Node, Payload};

/// Every node's UDP port.
const PORT: u16 = 41641;
/// Data packets per second per direction.
const RATE: u64 = 100;
/// The relay's binding (STUN-like) service.
fn stun_server() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 3478))
}

/// How the shell wakes the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// At `poll_timeout` (plus the 100 ms tick that reports transmissions).
    Deadline,
    /// Only on the engine's 100 ms tick (today's timer thread).
    Tick,
}

/// A scenario's starting point.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) nat: [Nat; 2],
    pub(crate) udp_blocked: [bool; 2],
    pub(crate) relay: bool,
    pub(crate) links: Links,
    pub(crate) wake: Wake,
    pub(crate) seed: u64,
}

impl Setup {
    pub(crate) fn new(nat: [Nat; 2], seed: u64) -> Self {
        Self {
            nat,
            udp_blocked: [false; 2],
            relay: true,
            links: Links::default(),
            wake: Wake::Deadline,
            seed,
        }
    }
}

/// Delivered data of one direction (indexed by the sender).
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Send time of each sequence number.
    pub(crate) sent: Vec<Duration>,
    /// First arrival of each sequence number.
    pub(crate) arrived: Vec<Option<Duration>>,
    /// First arrivals in time order.
    pub(crate) arrivals: Vec<Duration>,
    pub(crate) duplicates: u64,
}

#[derive(Debug)]
enum Ev {
    /// A datagram reaches the destination's network edge.
    Udp {
        to: usize,
        from: SocketAddr,
        dst: SocketAddr,
        p: Payload,
    },
    /// A frame reaches the relay.
    AtRelay {
        to: usize,
        p: Payload,
    },
    /// A frame reaches a node from the relay.
    FromRelay {
        to: usize,
        p: Payload,
    },
    Timer {
        node: usize,
        at: Duration,
    },
    Tick {
        node: usize,
    },
    Send {
        node: usize,
    },
    Stun {
        node: usize,
        mapped: Option<SocketAddr>,
    },
    RelayBack {
        node: usize,
        epoch: u64,
    },
    Inject,
}

#[derive(Debug)]
struct Scheduled {
    at: Duration,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` pops the earliest (then first scheduled).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// An on-path attacker: replays recorded probes with their original
/// (spoofed) sources, forges some, and sends some under unknown keys.
#[derive(Debug)]
pub(crate) struct Attack {
    pub(crate) until: Duration,
    pub(crate) every: Duration,
    pub(crate) injected: u64,
}

/// The simulated world.
pub(crate) struct World {
    pub(crate) now: Duration,
    base: Instant,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    rng: TestRng,
    pub(crate) links: Links,
    pub(crate) nodes: [Node; 2],
    nats: [Option<NatBox>; 2],
    wake: Wake,
    relay_enabled: bool,
    pub(crate) flows: [Flow; 2],
    pub(crate) attack: Option<Attack>,
    /// Probes each node received directly (for the attacker to replay).
    tap: [Vec<(SocketAddr, Vec<u8>)>; 2],
}

impl World {
    pub(crate) fn new(setup: &Setup) -> Self {
        let mut rng = TestRng::new(setup.seed);
        let base = Instant::now();
        let nats = [0, 1].map(|i| match setup.nat[i] {
            Nat::None => None,
            kind => Some(NatBox::new(kind, public_ip(i, kind, 0), &mut rng)),
        });
        let secrets = [0, 1].map(|_| super::PathSecret::from_bytes(rng.bytes()));
        let mut world_nodes = Vec::new();
        for i in 0..2 {
            let key = ProbeKey::new(&secrets[i], secrets[1 - i].public());
            let Ok(key) = key else {
                panic!("simulated keys are valid");
            };
            world_nodes.push(Node::new(i, setup, key, &mut rng));
        }
        let Ok(nodes) = <[Node; 2]>::try_from(world_nodes) else {
            panic!("two nodes");
        };
        let mut w = Self {
            now: Duration::ZERO,
            base,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            links: setup.links.clone(),
            nodes,
            nats,
            wake: setup.wake,
            relay_enabled: setup.relay,
            flows: [Flow::default(), Flow::default()],
            attack: None,
            tap: [Vec::new(), Vec::new()],
        };
        // Endpoint discovery before the netmap is published: each node's
        // mapped address becomes a candidate the other one knows.
        let local = [0, 1].map(|i| {
            let mapped = w.binding(i);
            w.nodes[i].local_candidates(mapped)
        });
        for i in 0..2 {
            let peer = PathPeer::new(
                base,
                super::Timing::default(),
                w.rng.bytes(),
                &local[1 - i],
                local[i].clone().into(),
                setup.relay,
            );
            w.nodes[i].start(base, peer, local[i].clone());
            let phase = Duration::from_millis(w.rng.below(100));
            w.schedule(phase, Ev::Tick { node: i });
        }
        w
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: self.now + after,
            seq: self.seq,
            ev,
        });
    }

    /// Runs every event up to `t` and leaves the clock there.
    pub(crate) fn run_until(&mut self, t: Duration) {
        while self.queue.peek().is_some_and(|s| s.at <= t) {
            let Some(s) = self.queue.pop() else { break };
            self.now = s.at;
            self.dispatch(s.ev);
        }
        self.now = t;
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Udp { to, from, dst, p } => {
                if self.admit(to, from, dst) {
                    self.node_rx(to, Some(from), p);
                }
            }
            Ev::AtRelay { to, p } => {
                if self.nodes[to].relay_up {
                    let d = self.links.relay_latency[to];
                    self.schedule(d, Ev::FromRelay { to, p });
                }
            }
            Ev::FromRelay { to, p } => {
                if self.nodes[to].relay_up {
                    self.node_rx(to, None, p);
                }
            }
            Ev::Timer { node, at } => self.node_timer(node, at),
            Ev::Tick { node } => self.node_tick(node),
            Ev::Send { node } => self.node_send(node),
            Ev::Stun { node, mapped } => self.node_mapped(node, mapped),
            Ev::RelayBack { node, epoch } => self.node_relay_back(node, epoch),
            Ev::Inject => self.inject(),
        }
    }

    // ---- transport ------------------------------------------------------

    /// Sends a datagram from node `i`'s tunnel socket.
    fn udp(&mut self, i: usize, dst: SocketAddr, p: Payload) {
        let Some(src) = self.egress(i, dst) else {
            return;
        };
        let j = 1 - i;
        if dst.ip() != self.public_of(j) || self.links.blackhole[i][j] {
            return;
        }
        if self.links.loss > 0.0 && self.rng.unit() < self.links.loss {
            return;
        }
        let jitter = self.links.jitter.mul_f64(self.rng.unit());
        let d = self.links.direct_latency + jitter;
        self.schedule(
            d,
            Ev::Udp {
                to: j,
                from: src,
                dst,
                p,
            },
        );
    }

    /// The public source of a datagram node `i` sends to `dst` (through its
    /// NAT), or `None` if UDP is blocked.
    fn egress(&mut self, i: usize, dst: SocketAddr) -> Option<SocketAddr> {
        if self.nodes[i].udp_blocked {
            return None;
        }
        let internal = self.nodes[i].addr();
        Some(match &mut self.nats[i] {
            Some(nat) => nat.outbound(internal, dst, self.now, &mut self.rng),
            None => internal,
        })
    }

    fn public_of(&self, i: usize) -> std::net::IpAddr {
        match &self.nats[i] {
            Some(nat) => nat.public_ip,
            None => self.nodes[i].addr().ip(),
        }
    }

    /// Whether a datagram at node `to`'s edge gets in (NAT filtering).
    fn admit(&mut self, to: usize, from: SocketAddr, dst: SocketAddr) -> bool {
        let internal = self.nodes[to].addr();
        if self.nodes[to].udp_blocked || dst.ip() != self.public_of(to) {
            return false;
        }
        match &mut self.nats[to] {
            Some(nat) => nat.inbound(from, dst.port(), self.now) == Some(internal),
            None => dst == internal,
        }
    }

    /// Sends a frame through node `i`'s relay connection.
    fn relay(&mut self, i: usize, p: Payload) {
        if !self.relay_enabled || !self.nodes[i].relay_up {
            return;
        }
        let d = self.links.relay_latency[i];
        self.schedule(d, Ev::AtRelay { to: 1 - i, p });
    }

    /// Sends on the route the node's path machine publishes.
    fn send_routed(&mut self, i: usize, p: Payload) {
        match self.nodes[i].peer().route() {
            Route::None => {}
            Route::Direct(a) => self.udp(i, a, p),
            Route::Both(a) => {
                self.udp(i, a, p.clone());
                self.relay(i, p);
            }
            Route::Relay => self.relay(i, p),
        }
    }

    /// A binding request to the relay's STUN port: the mapped address, now
    /// (creating the NAT mapping as a real request would).
    fn binding(&mut self, i: usize) -> Option<SocketAddr> {
        self.egress(i, stun_server())
    }

    // ---- faults ---------------------------------------------------------

    pub(crate) fn blackhole(&mut self, from: usize, to: usize, on: bool) {
        self.links.blackhole[from][to] = on;
    }

    /// Node `i` moves to another network: new addresses (and NAT), its
    /// relay connection drops and reconnects; the shell sees the netlink
    /// change at once.
    pub(crate) fn move_node(&mut self, i: usize) {
        let moves = self.nodes[i].moves + 1;
        let kind = self.nodes[i].nat;
        self.nats[i] = match kind {
            Nat::None => None,
            k => Some(NatBox::new(k, public_ip(i, k, moves), &mut self.rng)),
        };
        self.node_moved(i, lan_ip(i, kind, moves), moves);
    }

    /// Node `i`'s NAT forgets its mappings; the node is not told.
    pub(crate) fn rebind(&mut self, i: usize) {
        if let Some(nat) = &mut self.nats[i] {
            nat.rebind();
        }
    }

    /// Starts an attacker replaying and forging probes until `until`.
    pub(crate) fn start_attack(&mut self, until: Duration) {
        let every = Duration::from_millis(20);
        self.attack = Some(Attack {
            until,
            every,
            injected: 0,
        });
        self.schedule(every, Ev::Inject);
    }

    fn inject(&mut self) {
        let Some(attack) = &self.attack else { return };
        if self.now >= attack.until {
            return;
        }
        let every = attack.every;
        for j in 0..2 {
            let n = self.tap[j].len() as u64;
            if n == 0 {
                continue;
            }
            let pick = |rng: &mut TestRng, tap: &[(SocketAddr, Vec<u8>)]| {
                tap[rng.below(n) as usize].clone()
            };
            // A replay, a forgery (one flipped bit), and an unknown sender.
            let (from, replay) = pick(&mut self.rng, &self.tap[j]);
            let (_, mut forged) = pick(&mut self.rng, &self.tap[j]);
            let last = forged.len() - 1;
            forged[last] ^= 1;
            let (_, mut stranger) = pick(&mut self.rng, &self.tap[j]);
            stranger[2..34].copy_from_slice(&self.rng.bytes::<32>());
            for bytes in [replay, forged, stranger] {
                self.node_probe(j, Some(from), bytes, false);
            }
            if let Some(a) = &mut self.attack {
                a.injected += 3;
            }
        }
        self.schedule(every, Ev::Inject);
    }

    // ---- measurements ---------------------------------------------------

    /// Starts both directions' data flows now.
    pub(crate) fn start_flows(&mut self) {
        for i in 0..2 {
            self.nodes[i].sending = true;
            self.schedule(Duration::ZERO, Ev::Send { node: i });
        }
    }

    /// Stops both directions' data flows.
    pub(crate) fn stop_flows(&mut self) {
        for n in &mut self.nodes {
            n.sending = false;
        }
    }

    /// The longest time without a new delivery in direction `d` (sender
    /// index) within `[from, to]`, edges included.
    pub(crate) fn longest_gap(&self, d: usize, from: Duration, to: Duration) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for &t in self.flows[d]
            .arrivals
            .iter()
            .filter(|t| **t >= from && **t <= to)
        {
            gap = gap.max(t - last);
            last = t;
        }
        gap.max(to.saturating_sub(last))
    }

    /// Packets of direction `d` sent within `[from, to]` that never arrived,
    /// and how many were sent.
    pub(crate) fn lost(&self, d: usize, from: Duration, to: Duration) -> (u64, u64) {
        let f = &self.flows[d];
        let mut lost = 0;
        let mut sent = 0;
        for (s, a) in f.sent.iter().zip(&f.arrived) {
            if *s >= from && *s <= to {
                sent += 1;
                lost += u64::from(a.is_none());
            }
        }
        (lost, sent)
    }

    /// Node `i`'s route at time `t`.
    pub(crate) fn route_at(&self, i: usize, t: Duration) -> (Route, PathKind) {
        let log = &self.nodes[i].routes;
        let idx = log.partition_point(|e| e.0 <= t);
        let e = &log[idx.saturating_sub(1)];
        (e.1, e.2)
    }

    /// How long after `t` node `i` sends on a plain direct route again: the
    /// first direct route set after `t`, or zero if the route never changed
    /// after `t` and was direct (the node was never disturbed).
    pub(crate) fn direct_again(&self, i: usize, t: Duration) -> Option<Duration> {
        let log = &self.nodes[i].routes;
        let later = log
            .iter()
            .find(|e| e.0 > t && matches!(e.1, Route::Direct(_)));
        match later {
            Some(e) => Some(e.0 - t),
            None if log.iter().all(|e| e.0 <= t)
                && matches!(self.route_at(i, t).0, Route::Direct(_)) =>
            {
                Some(Duration::ZERO)
            }
            None => None,
        }
    }

    /// Path kind changes of node `i` within `(from, to]`.
    pub(crate) fn switches(&self, i: usize, from: Duration, to: Duration) -> usize {
        let log = &self.nodes[i].routes;
        log.windows(2)
            .filter(|w| w[1].0 > from && w[1].0 <= to && w[1].2 != w[0].2)
            .count()
    }

    /// Route changes (any) of node `i` within `(from, to]`.
    pub(crate) fn route_changes(&self, i: usize, from: Duration, to: Duration) -> usize {
        let log = &self.nodes[i].routes;
        log.iter().filter(|e| e.0 > from && e.0 <= to).count()
    }

    /// Time from the first data send of direction `d` to its first delivery.
    pub(crate) fn first_delivery(&self, d: usize) -> Option<Duration> {
        let f = &self.flows[d];
        Some(*f.arrivals.first()? - *f.sent.first()?)
    }
}
