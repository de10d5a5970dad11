//! A simulated node: the engine shell around the real path code.
//!
//! Everything here is what the userspace engine's threads will do: open
//! probes (sender lookup before crypto, counters), feed the machine, seal
//! and send its probes direct or through the relay, send data on the
//! published route, report the last transmission on each tick, wake at the
//! machine's deadline, re-discover the mapped address when trust lapses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::RngCore as _;

use super::net::{Nat, lan_ip};
use super::{Ev, PORT, RATE, Setup, Wake, World};
use crate::path::test_rng::TestRng;
use crate::path::{
    Event, PathKind, PathPeer, PathPublicKey, ProbeCounters, ProbeKey, Reason, Refusal, Route, Via,
    is_probe, sender_of,
};

/// WireGuard's handshake retry (REKEY_TIMEOUT).
const HANDSHAKE_RETRY: Duration = Duration::from_secs(5);
/// The engine's timer tick.
const TICK: Duration = Duration::from_millis(100);
/// Endpoint discovery refreshes the mapped address this often anyway.
const REDISCOVER: Duration = Duration::from_secs(25);
/// Most recorded probes kept for the attacker.
const TAP_MAX: usize = 512;

/// What travels between nodes.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Probe(Vec<u8>),
    Data(u64),
    HandshakeInit,
    HandshakeResponse,
}

/// One route change: when, the route, its kind, why (`None`: initial).
pub(crate) type RouteLog = (Duration, Route, PathKind, Option<Reason>);

pub(crate) struct Node {
    idx: usize,
    pub(crate) nat: Nat,
    pub(crate) moves: u8,
    pub(crate) udp_blocked: bool,
    lan: std::net::IpAddr,
    key: ProbeKey,
    peer: Option<PathPeer>,
    pub(crate) counters: ProbeCounters,
    rng: TestRng,
    /// This node's wall clock minus the simulation's (clock skew).
    skew_ms: i64,
    pub(crate) relay_up: bool,
    relay_epoch: u64,
    timer_at: Option<Duration>,
    pub(crate) sending: bool,
    last_tx: Option<Duration>,
    session: bool,
    pub(crate) handshakes: u32,
    handshake_at: Option<Duration>,
    queued: Vec<u64>,
    pub(crate) routes: Vec<RouteLog>,
    last_discovery: Option<Duration>,
    local: Vec<SocketAddr>,
    buf: Vec<u8>,
}

impl Node {
    pub(crate) fn new(idx: usize, setup: &Setup, key: ProbeKey, rng: &mut TestRng) -> Self {
        let nat = setup.nat[idx];
        Self {
            idx,
            nat,
            moves: 0,
            udp_blocked: setup.udp_blocked[idx],
            lan: lan_ip(idx, nat, 0),
            key,
            peer: None,
            counters: ProbeCounters::default(),
            rng: TestRng::new(rng.next_u64()),
            // Minutes apart: probe counters must not care.
            skew_ms: if idx == 0 { 300_000 } else { -180_000 },
            relay_up: setup.relay,
            relay_epoch: 0,
            timer_at: None,
            sending: false,
            last_tx: None,
            session: false,
            handshakes: 0,
            handshake_at: None,
            queued: Vec::new(),
            routes: Vec::new(),
            last_discovery: Some(Duration::ZERO),
            local: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub(crate) fn start(&mut self, now: Instant, peer: PathPeer, local: Vec<SocketAddr>) {
        let route = peer.route();
        let kind = peer.status(now).kind;
        self.routes.push((Duration::ZERO, route, kind, None));
        self.peer = Some(peer);
        self.local = local;
    }

    /// The tunnel socket's address on the LAN.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.lan, PORT)
    }

    /// Our candidates: the LAN address and the mapped one if different.
    pub(crate) fn local_candidates(&self, mapped: Option<SocketAddr>) -> Vec<SocketAddr> {
        let mut v = vec![self.addr()];
        v.extend(mapped.filter(|m| *m != self.addr()));
        v
    }

    pub(crate) fn peer(&self) -> &PathPeer {
        let Some(p) = &self.peer else {
            panic!("node started");
        };
        p
    }

    fn peer_mut(&mut self) -> &mut PathPeer {
        let Some(p) = &mut self.peer else {
            panic!("node started");
        };
        p
    }

    fn wall_ms(&self, now: Duration) -> u64 {
        let ms = 1_700_000_000_000i64 + now.as_millis() as i64 + self.skew_ms;
        ms as u64
    }
}

impl World {
    /// Seals and sends the machine's probes, records its events, and sets
    /// the timer to its next deadline.
    fn flush(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].peer_mut().poll_transmit() {
            let wall = self.nodes[i].wall_ms(self.now);
            let n = &mut self.nodes[i];
            if n.key.seal(&t.msg, wall, &mut n.rng, &mut n.buf).is_err() {
                continue;
            }
            let bytes = Payload::Probe(n.buf.clone());
            match t.via {
                Via::Direct(a) => self.udp(i, a, bytes),
                Via::Relay => self.relay(i, bytes),
            }
        }
        let mut rediscover = false;
        while let Some(e) = self.nodes[i].peer_mut().poll_event() {
            if let Event::Route {
                route,
                kind,
                reason,
                ..
            } = e
            {
                self.nodes[i]
                    .routes
                    .push((self.now, route, kind, Some(reason)));
                rediscover |= reason == Reason::TrustExpired;
            }
        }
        if rediscover {
            self.discover(i, Duration::from_secs(1));
        }
        if self.wake == Wake::Deadline
            && let Some(t) = self.nodes[i].peer().poll_timeout()
        {
            let at = t.saturating_duration_since(self.base).max(self.now);
            if self.nodes[i].timer_at.is_none_or(|x| at < x) {
                self.nodes[i].timer_at = Some(at);
                self.schedule(at - self.now, Ev::Timer { node: i, at });
            }
        }
    }

    /// Endpoint discovery: a binding request unless one went out within
    /// `min_gap`; the answer comes a relay round trip later.
    fn discover(&mut self, i: usize, min_gap: Duration) {
        let n = &self.nodes[i];
        if n.last_discovery.is_some_and(|t| self.now < t + min_gap) {
            return;
        }
        self.nodes[i].last_discovery = Some(self.now);
        let mapped = self.binding(i);
        let d = self.links.relay_latency[i] * 2;
        self.schedule(d, Ev::Stun { node: i, mapped });
    }

    pub(super) fn node_mapped(&mut self, i: usize, mapped: Option<SocketAddr>) {
        let local = self.nodes[i].local_candidates(mapped);
        if local != self.nodes[i].local {
            self.nodes[i].local = local.clone();
            let now = self.instant();
            self.nodes[i]
                .peer_mut()
                .set_local_candidates(now, Arc::from(local));
            self.flush(i);
        }
    }

    pub(super) fn node_timer(&mut self, i: usize, at: Duration) {
        if self.nodes[i].timer_at != Some(at) {
            return;
        }
        self.nodes[i].timer_at = None;
        let now = self.instant();
        self.nodes[i].peer_mut().handle_timeout(now);
        self.flush(i);
    }

    pub(super) fn node_tick(&mut self, i: usize) {
        let now = self.instant();
        let base = self.base;
        let n = &mut self.nodes[i];
        if let Some(t) = n.last_tx {
            n.peer_mut().note_tx(now, base + t);
        }
        n.peer_mut().handle_timeout(now);
        let retry = n.idx == 0
            && n.sending
            && !n.session
            && n.handshake_at
                .is_some_and(|t| self.now >= t + HANDSHAKE_RETRY);
        if retry {
            self.handshake(i);
        }
        self.discover(i, REDISCOVER);
        self.flush(i);
        self.schedule(TICK, Ev::Tick { node: i });
    }

    fn handshake(&mut self, i: usize) {
        self.nodes[i].handshakes += 1;
        self.nodes[i].handshake_at = Some(self.now);
        self.send_routed(i, Payload::HandshakeInit);
    }

    pub(super) fn node_send(&mut self, i: usize) {
        if !self.nodes[i].sending {
            return;
        }
        let seq = self.flows[i].sent.len() as u64;
        self.flows[i].sent.push(self.now);
        self.flows[i].arrived.push(None);
        self.nodes[i].last_tx = Some(self.now);
        if self.nodes[i].session {
            self.send_routed(i, Payload::Data(seq));
        } else {
            self.nodes[i].queued.push(seq);
            if i == 0 && self.nodes[i].handshake_at.is_none() {
                self.handshake(i);
            }
        }
        self.schedule(
            Duration::from_nanos(1_000_000_000 / RATE),
            Ev::Send { node: i },
        );
    }

    fn open_session(&mut self, i: usize) {
        if self.nodes[i].session {
            return;
        }
        self.nodes[i].session = true;
        for seq in std::mem::take(&mut self.nodes[i].queued) {
            self.send_routed(i, Payload::Data(seq));
        }
    }

    /// Anything arriving at node `i`, directly from `from` or (`None`)
    /// through the relay.
    pub(super) fn node_rx(&mut self, i: usize, from: Option<SocketAddr>, p: Payload) {
        let now = self.instant();
        match p {
            Payload::Probe(bytes) => self.node_probe(i, from, bytes, true),
            Payload::Data(seq) => {
                let f = &mut self.flows[1 - i];
                match f.arrived.get_mut(seq as usize) {
                    Some(slot @ None) => {
                        *slot = Some(self.now);
                        f.arrivals.push(self.now);
                    }
                    _ => f.duplicates += 1,
                }
                self.nodes[i].peer_mut().note_rx(now, from);
                // The responder may send once the initiator's data arrived.
                self.open_session(i);
                self.flush(i);
            }
            Payload::HandshakeInit => {
                self.nodes[i].peer_mut().note_rx(now, from);
                self.send_routed(i, Payload::HandshakeResponse);
                self.flush(i);
            }
            Payload::HandshakeResponse => {
                self.nodes[i].peer_mut().note_rx(now, from);
                self.open_session(i);
                self.flush(i);
            }
        }
    }

    /// The receive path for a probe: sender lookup before any crypto, open,
    /// count, hand to the machine. `record` keeps it for the attacker.
    pub(super) fn node_probe(
        &mut self,
        i: usize,
        from: Option<SocketAddr>,
        bytes: Vec<u8>,
        record: bool,
    ) {
        if !is_probe(&bytes) {
            return;
        }
        let n = &mut self.nodes[i];
        // The engine looks the key up in its peer table; here it has one.
        let known: PathPublicKey = n.key.peer();
        let outcome = match sender_of(&bytes) {
            Err(e) => Err(e),
            Ok(k) if k != known => Err(Refusal::UnknownSender),
            Ok(_) => n.key.open(&bytes),
        };
        n.counters.record(&outcome);
        let Ok(msg) = outcome else { return };
        if record && let Some(src) = from {
            let tap = &mut self.tap[i];
            if tap.len() >= TAP_MAX {
                tap.remove(0);
            }
            tap.push((src, bytes));
        }
        let via = from.map_or(Via::Relay, Via::Direct);
        let now = self.instant();
        self.nodes[i].peer_mut().handle_probe(now, via, msg);
        self.flush(i);
    }

    /// Node `i` now lives at `lan` (its NAT, if any, was replaced by the
    /// caller): the shell reports the change, the relay reconnects, and
    /// endpoint discovery runs again.
    pub(super) fn node_moved(&mut self, i: usize, lan: std::net::IpAddr, moves: u8) {
        let now = self.instant();
        let n = &mut self.nodes[i];
        n.lan = lan;
        n.moves = moves;
        n.relay_up = false;
        n.relay_epoch += 1;
        let epoch = n.relay_epoch;
        n.peer_mut().set_relay(now, false);
        n.peer_mut().network_changed(now);
        n.last_discovery = None;
        self.discover(i, Duration::ZERO);
        self.flush(i);
        // TCP + TLS 1.3 + login: three round trips to the relay.
        let d = self.links.relay_latency[i] * 6;
        self.schedule(d, Ev::RelayBack { node: i, epoch });
    }

    pub(super) fn node_relay_back(&mut self, i: usize, epoch: u64) {
        if self.nodes[i].relay_epoch != epoch {
            return;
        }
        let now = self.instant();
        self.nodes[i].relay_up = true;
        self.nodes[i].peer_mut().set_relay(now, true);
        self.flush(i);
    }
}
