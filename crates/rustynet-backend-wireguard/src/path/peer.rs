//! The per-peer path state machine: which way data to one peer goes now.
//!
//! Sans-IO: every input carries `now`, outputs are polled
//! ([`PathPeer::poll_transmit`], [`PathPeer::poll_event`],
//! [`PathPeer::poll_timeout`]) and the data path reads [`PathPeer::route`].
//!
//! Modes and their transitions:
//! - `NoPath` → `Direct(a)`: N pongs in a row from `a` (N = 2, or 8 and 32
//!   after repeated failures: flap damping, see [`Timing::flap_decay`]).
//! - `Direct(a)` → `Direct(b)`: 2 pongs in a row from `b`, and `b` is
//!   clearly faster or `a` missed two heartbeats (the peer roamed).
//! - `Direct(a)` → `Degraded(a)`: no pong for 1 s while active (45 s while
//!   idle), or our own network changed.
//! - `Degraded(a)` → `Direct(x)`: N pongs in a row from any `x`.
//! - `Degraded(a)` → `NoPath`: 3 s without that while a relay is up.
//!
//! Route published per mode: `Direct(addr)` → `Direct`, or `Both` while an
//! address not confirmed since the peer became active is being re-checked;
//! `Degraded(addr)` → `Both` (every packet on the old address and the relay:
//! nothing waits for a timeout); `NoPath` → `Relay`. Without a relay the
//! best guess is used instead (the latest address that answered or sent an
//! authenticated tunnel packet, else the netmap endpoint: today's
//! behaviour), and `None` only when there is nothing at all.
//!
//! Trust rests on pongs only: a pong answering our ping (same txid) from the
//! exact address we pinged. Incoming pings and tunnel packets are hints that
//! make us ping, never proof, so a one-way blackhole cannot bring traffic
//! back onto the dead direction and flap.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::candidates::{Added, Candidate, CandidateSet, Source, usable};
use super::outputs::{Event, PathKind, PathStatus, PeerStats, Reason, Route, Transmit, Via};
use super::probe::{MAX_CALL_ME_CANDIDATES, Message, TxId};
use super::timing::Timing;

/// Unanswered pings remembered (16 candidates x 4 in flight).
const MAX_PINGS: usize = 64;
/// Probes waiting for the shell; more are dropped (and counted).
const MAX_TRANSMITS: usize = 128;
/// Events waiting for the shell; the oldest are dropped when full.
const MAX_EVENTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No direct address is trusted.
    NoPath,
    /// This address is trusted.
    Direct(SocketAddr),
    /// This address was trusted until `since`.
    Degraded { addr: SocketAddr, since: Instant },
}

#[derive(Debug, Clone, Copy)]
struct SentPing {
    txid: TxId,
    to: Via,
    at: Instant,
}

/// Unpredictable transaction ids: BLAKE3 keyed by a per-peer random seed
/// over a counter (deterministic for a given seed, so tests replay).
struct TxIds {
    key: [u8; 32],
    n: u64,
}

impl TxIds {
    fn next(&mut self) -> TxId {
        self.n += 1;
        let hash = blake3::keyed_hash(&self.key, &self.n.to_le_bytes());
        let mut id = [0u8; 12];
        id.copy_from_slice(&hash.as_bytes()[..12]);
        id
    }
}

/// One peer's path state. See the module docs.
pub(crate) struct PathPeer {
    t: Timing,
    cands: CandidateSet,
    mode: Mode,
    /// The last address that was trusted (re-pinged first to fail back).
    last_best: Option<SocketAddr>,
    /// Flap damping (see [`Timing::flap_decay`]); it decays only while a
    /// direct address is trusted, from `trusted_since`.
    penalty: u8,
    trusted_since: Option<Instant>,
    relay_up: bool,
    route: Route,
    route_since: Instant,
    kind: PathKind,
    kind_since: Instant,
    last_reason: Option<Reason>,
    /// Latest input time: "immediately" for the schedule.
    now: Instant,
    last_tx: Option<Instant>,
    /// `Some` while active: when it became active.
    active_since: Option<Instant>,
    /// Latest authenticated tunnel source and when it was seen.
    rx_src: Option<(SocketAddr, Instant)>,
    pings: VecDeque<SentPing>,
    txids: TxIds,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Our own candidates, sent in call-me-maybe.
    local: Arc<[SocketAddr]>,
    call_me_pending: bool,
    last_call_me: Option<Instant>,
    last_call_me_rx: Option<Instant>,
    observed: Option<SocketAddr>,
    relay_rtt: Option<Duration>,
    stats: PeerStats,
}

impl std::fmt::Debug for PathPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathPeer")
            .field("mode", &self.mode)
            .field("route", &self.route)
            .field("relay_up", &self.relay_up)
            .field("candidates", &self.cands.len())
            .finish_non_exhaustive()
    }
}

impl PathPeer {
    /// A peer with the netmap's `candidates`; `local` are our own (sent in
    /// call-me-maybe); `seed` must be random (it keys the txids).
    pub(crate) fn new(
        now: Instant,
        timing: Timing,
        seed: [u8; 32],
        candidates: &[SocketAddr],
        local: Arc<[SocketAddr]>,
        relay_up: bool,
    ) -> Self {
        let mut peer = Self {
            t: timing,
            cands: CandidateSet::default(),
            mode: Mode::NoPath,
            last_best: None,
            penalty: 0,
            trusted_since: None,
            relay_up,
            route: Route::None,
            route_since: now,
            kind: PathKind::None,
            kind_since: now,
            last_reason: None,
            now,
            last_tx: None,
            active_since: None,
            rx_src: None,
            pings: VecDeque::new(),
            txids: TxIds { key: seed, n: 0 },
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            local,
            call_me_pending: false,
            last_call_me: None,
            last_call_me_rx: None,
            observed: None,
            relay_rtt: None,
            stats: PeerStats::default(),
        };
        peer.cands.set_config(candidates, now, &[]);
        for c in peer.cands.iter_mut() {
            // Nothing to punch until the peer is active or calls us.
            c.ping_now = false;
        }
        let (route, kind) = peer.compute_route(now);
        peer.route = route;
        peer.kind = kind;
        peer
    }

    // ---- outputs ------------------------------------------------------

    /// The route the data path uses now.
    pub(crate) fn route(&self) -> Route {
        self.route
    }

    /// The next probe to seal and send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for status and metrics.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`PathPeer::handle_timeout`] must run next (`None`: only on
    /// input). The shell may call it late (e.g. on a coarser tick) at the
    /// cost of that much slower reactions.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let (Some(_), Some(tx)) = (self.active_since, self.last_tx) {
            at(tx + self.t.active_window);
        }
        if let Some(p) = self.pings.front() {
            at(p.at + self.t.ping_timeout);
        }
        if let Some(d) = self.mode_deadline() {
            at(d);
        }
        for c in self.cands.iter() {
            if let Some(d) = self.ping_due(c) {
                at(d);
            }
        }
        if let Some(d) = self.call_me_due() {
            at(d);
        }
        if let Some(d) = self.guess_expiry() {
            at(d);
        }
        next
    }

    /// When the evidence behind a relay-less guess reported as direct goes
    /// stale (status must then stop calling it a path).
    fn guess_expiry(&self) -> Option<Instant> {
        if self.kind != PathKind::Direct || self.relay_up || matches!(self.mode, Mode::Direct(_)) {
            return None;
        }
        self.guess()
            .and_then(|(_, seen)| seen)
            .map(|t| t + self.t.trust)
    }

    /// Counters for metrics.
    pub(crate) fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// What status shows.
    pub(crate) fn status(&self, now: Instant) -> PathStatus {
        let best = match self.mode {
            Mode::Direct(a) => Some(a),
            _ => None,
        };
        PathStatus {
            kind: self.kind,
            route: self.route,
            kind_for: now.saturating_duration_since(self.kind_since),
            last_reason: self.last_reason,
            rtt: best.and_then(|a| self.cands.get(a)).and_then(|c| c.rtt),
            relay_rtt: self.relay_rtt,
            active: self.active_since.is_some(),
        }
    }

    // ---- inputs -------------------------------------------------------

    /// Replaces the netmap's candidates for this peer.
    pub(crate) fn set_candidates(&mut self, now: Instant, candidates: &[SocketAddr]) {
        self.tick(now);
        let keep = self.keep();
        let added = self.cands.set_config(candidates, now, &keep);
        let active = self.active_since.is_some();
        for a in added {
            if let Some(c) = self.cands.get_mut(a) {
                c.ping_now = active;
            }
        }
        self.flush(now, Reason::CandidatesChanged);
    }

    /// Our own candidate addresses changed (e.g. endpoint discovery learnt
    /// a mapped address): an active peer hears about them at once.
    pub(crate) fn set_local_candidates(&mut self, now: Instant, local: Arc<[SocketAddr]>) {
        self.tick(now);
        if *local != *self.local {
            self.local = local;
            self.call_me_pending |= self.active_since.is_some();
        }
        self.flush(now, Reason::CandidatesChanged);
    }

    /// The relay connection for this peer came up or went down.
    pub(crate) fn set_relay(&mut self, now: Instant, up: bool) {
        self.tick(now);
        self.relay_up = up;
        self.flush(
            now,
            if up {
                Reason::RelayUp
            } else {
                Reason::RelayDown
            },
        );
    }

    /// Our addresses changed: nothing direct is trusted any more, every
    /// candidate is pinged at once and the peer is asked to call us.
    /// Call only on real changes (a new default route or source address),
    /// not on unrelated link events: each call costs a brief `Both`.
    pub(crate) fn network_changed(&mut self, now: Instant) {
        self.tick(now);
        self.pings.clear();
        for c in self.cands.iter_mut() {
            c.streak = 0;
            c.unanswered = 0;
            c.ping_now = true;
        }
        if let Mode::Direct(addr) = self.mode {
            // Our move, not the path's fault: keep the penalty as it is.
            self.penalty = self.penalty_at(now);
            self.mode = Mode::Degraded { addr, since: now };
        }
        self.observed = None;
        self.call_me_pending = true;
        // The peer must hear of our new addresses now, not after the gap.
        self.last_call_me = None;
        self.flush(now, Reason::NetworkChanged);
    }

    /// Our latest data transmission to the peer was at `last_tx` (the shell
    /// passes it on its ticks; no per-packet call). Becoming active starts
    /// heartbeats, or with no trusted path, punching: ping every candidate
    /// and send call-me-maybe.
    pub(crate) fn note_tx(&mut self, now: Instant, last_tx: Instant) {
        self.tick(now);
        if self.last_tx.is_some_and(|t| t >= last_tx) {
            return;
        }
        self.last_tx = Some(last_tx);
        if self.active_since.is_some() || now >= last_tx + self.t.active_window {
            return;
        }
        self.active_since = Some(last_tx);
        match self.mode {
            Mode::Direct(addr) => {
                if let Some(c) = self.cands.get_mut(addr) {
                    c.ping_now = true;
                }
            }
            Mode::Degraded { .. } | Mode::NoPath => {
                for c in self.cands.iter_mut() {
                    c.unanswered = 0;
                    c.ping_now = true;
                }
                self.call_me_pending = true;
            }
        }
        self.flush(now, Reason::Reactivated);
    }

    /// An authenticated tunnel packet arrived, from `from` or (`None`)
    /// through the relay. A new source is a hint (pinged), never proof.
    /// O(1) when the source is unchanged, so it may be called per packet.
    pub(crate) fn note_rx(&mut self, now: Instant, from: Option<SocketAddr>) {
        let Some(src) = from.and_then(usable) else {
            return;
        };
        if let Some((addr, seen)) = &mut self.rx_src
            && *addr == src
        {
            *seen = now.max(*seen);
            return;
        }
        self.tick(now);
        self.rx_src = Some((src, now));
        self.hint(now, src, Source::Tunnel);
        self.flush(now, Reason::PeerRoamed);
    }

    /// An authenticated probe from the peer (opened by its `ProbeKey`).
    pub(crate) fn handle_probe(&mut self, now: Instant, via: Via, msg: Message) {
        self.tick(now);
        match msg {
            Message::Ping { txid } => {
                self.stats.pings_received += 1;
                let observed = match via {
                    Via::Direct(a) => Some(a),
                    Via::Relay => None,
                };
                self.queue(via, Message::Pong { txid, observed });
                self.stats.pongs_sent += 1;
                if let Via::Direct(src) = via {
                    // Ping back: on a fresh address this opens our NAT for
                    // the peer (the other half of the punch).
                    self.hint(now, src, Source::Ping);
                }
            }
            Message::Pong { txid, observed } => self.on_pong(now, via, txid, observed),
            Message::CallMeMaybe { candidates } => {
                // Each one makes us ping up to 16 addresses the peer chose:
                // bound how often a (compromised) peer can make us do that.
                // Half the sender's gap: relay jitter must not cost us one.
                let gap = self.t.call_me_min_gap / 2;
                if self.last_call_me_rx.is_some_and(|t| now < t + gap) {
                    self.stats.call_me_ignored += 1;
                    return;
                }
                self.last_call_me_rx = Some(now);
                self.stats.call_me_received += 1;
                for a in candidates.into_iter().take(MAX_CALL_ME_CANDIDATES) {
                    self.hint(now, a, Source::CallMeMaybe);
                }
            }
        }
        self.flush(now, Reason::Pong);
    }

    /// Pings on the path the peer's packets take now (both legs of
    /// `Both`), for `rustynet ping`. Returns the txids that the answers'
    /// [`Event::Pong`] will carry.
    pub(crate) fn ping_route(&mut self, now: Instant) -> Vec<TxId> {
        self.tick(now);
        let legs = match self.route {
            Route::None => vec![],
            Route::Direct(a) => vec![Via::Direct(a)],
            Route::Both(a) => vec![Via::Direct(a), Via::Relay],
            Route::Relay => vec![Via::Relay],
        };
        let ids = legs.into_iter().map(|v| self.send_ping(now, v)).collect();
        self.flush(now, Reason::Pong);
        ids
    }

    /// Pings every candidate and the relay now (`rustynet ping
    /// --until-direct`); returns the txids, as [`PathPeer::ping_route`].
    pub(crate) fn ping_all(&mut self, now: Instant) -> Vec<TxId> {
        self.tick(now);
        let mut legs: Vec<Via> = self.cands.iter().map(|c| Via::Direct(c.addr)).collect();
        if self.relay_up {
            legs.push(Via::Relay);
            // Behind NAT our pings open our side only: the peer must ping
            // back for a punch, as when data starts flowing.
            self.call_me_pending = true;
        }
        let ids = legs.into_iter().map(|v| self.send_ping(now, v)).collect();
        self.flush(now, Reason::Pong);
        ids
    }

    /// Runs due work: trust deadlines, heartbeats, retries, call-me-maybe.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.active_since.is_some()
            && self.last_tx.is_none_or(|t| now >= t + self.t.active_window)
        {
            self.active_since = None;
        }
        self.expire_pings(now);
        let keep = self.keep();
        self.cands.prune(now, self.t.candidate_ttl, &keep);
        self.flush(now, Reason::TrustExpired);
    }

    // ---- internals ----------------------------------------------------

    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Sends what is due and republishes the route (`reason` names the
    /// input that may have changed it).
    fn flush(&mut self, now: Instant, reason: Reason) {
        let reason = self.check_trust(now).unwrap_or(reason);
        let due: Vec<SocketAddr> = self
            .cands
            .iter()
            .filter(|c| self.ping_due(c).is_some_and(|d| d <= now))
            .map(|c| c.addr)
            .collect();
        for addr in due {
            self.send_ping(now, Via::Direct(addr));
        }
        self.maybe_call_me(now);
        self.update_route(now, reason);
    }

    /// Addresses that must never be evicted or pruned.
    fn keep(&self) -> Vec<SocketAddr> {
        let current = match self.mode {
            Mode::Direct(a) | Mode::Degraded { addr: a, .. } => Some(a),
            Mode::NoPath => None,
        };
        current.into_iter().chain(self.last_best).collect()
    }

    fn hint(&mut self, now: Instant, addr: SocketAddr, source: Source) {
        let keep = self.keep();
        match self.cands.add(addr, source, now, &keep) {
            Added::Invalid | Added::Full => self.stats.candidates_refused += 1,
            Added::New | Added::Known => {}
        }
        let trusted = self.trusted_addr(now);
        if let Some(addr) = usable(addr)
            && trusted != Some(addr)
            && let Some(c) = self.cands.get_mut(addr)
        {
            c.unanswered = 0;
            c.ping_now = true;
        }
    }

    /// The direct address confirmed recently enough to send to alone.
    fn trusted_addr(&self, now: Instant) -> Option<SocketAddr> {
        match self.mode {
            Mode::Direct(a) if !self.mirroring(now, a) => Some(a),
            _ => None,
        }
    }

    /// Whether the trusted address is being re-checked after the peer
    /// became active (its last pong is older than the trust window).
    fn mirroring(&self, now: Instant, addr: SocketAddr) -> bool {
        self.active_since.is_some()
            && self
                .cands
                .get(addr)
                .and_then(|c| c.last_pong)
                .is_none_or(|p| now >= p + self.t.trust)
    }

    fn on_pong(&mut self, now: Instant, via: Via, txid: TxId, observed: Option<SocketAddr>) {
        let Some(i) = self
            .pings
            .iter()
            .position(|p| p.txid == txid && p.to == via)
        else {
            self.stats.pongs_unmatched += 1;
            return;
        };
        let Some(sent) = self.pings.remove(i) else {
            return;
        };
        self.stats.pongs_received += 1;
        let rtt = now.saturating_duration_since(sent.at);
        self.push_event(Event::Pong { via, rtt, txid });
        if let Some(o) = observed.and_then(usable)
            && self.observed != Some(o)
        {
            self.observed = Some(o);
            self.push_event(Event::Observed(o));
        }
        let Via::Direct(addr) = via else {
            self.relay_rtt = Some(rtt);
            return;
        };
        // Earlier pings to this address went unanswered: the streak restarts.
        let before = self.pings.len();
        self.pings.retain(|p| !(p.to == via && p.at < sent.at));
        let lost = self.pings.len() != before;
        let promote = self.t.promote_streak;
        let recover = self.required_streak(now);
        let Some(c) = self.cands.get_mut(addr) else {
            return;
        };
        if lost {
            c.streak = 0;
        }
        c.answered(now, rtt);
        let streak = c.streak;
        match self.mode {
            Mode::Direct(best) if best == addr => {}
            Mode::Direct(best) => {
                let wanted = self.beats(addr, best) || self.failing(now, best);
                if wanted && streak >= promote {
                    self.mode = Mode::Direct(addr);
                    self.last_best = Some(addr);
                    self.update_route(now, Reason::BetterPath);
                } else if wanted && let Some(c) = self.cands.get_mut(addr) {
                    c.ping_now = true;
                }
            }
            Mode::Degraded { .. } | Mode::NoPath => {
                if streak >= recover {
                    self.penalty = self.penalty_at(now);
                    self.mode = Mode::Direct(addr);
                    self.trusted_since = Some(now);
                    self.last_best = Some(addr);
                    self.call_me_pending = false;
                } else if let Some(c) = self.cands.get_mut(addr) {
                    // Confirm at once rather than on the schedule.
                    c.ping_now = true;
                }
            }
        }
    }

    /// The flap penalty at `now`: it decays only while the direct path
    /// holds, so a path that failed repeatedly must prove itself with a
    /// long streak however long it stayed on the relay.
    fn penalty_at(&self, now: Instant) -> u8 {
        let (Mode::Direct(_), Some(t)) = (self.mode, self.trusted_since) else {
            return self.penalty;
        };
        let decay = self.t.flap_decay.as_nanos().max(1);
        let steps = now.saturating_duration_since(t).as_nanos() / decay;
        self.penalty
            .saturating_sub(u8::try_from(steps).unwrap_or(u8::MAX))
    }

    /// Pongs in a row needed to bring traffic back to a direct address.
    fn required_streak(&self, now: Instant) -> u8 {
        let level = self.penalty_at(now).saturating_sub(1).min(2);
        self.t.promote_streak.saturating_mul(1 << (2 * level))
    }

    /// `a` answers clearly faster than `b` (20 % and 2 ms).
    fn beats(&self, a: SocketAddr, b: SocketAddr) -> bool {
        let rtt = |x| self.cands.get(x).and_then(|c: &Candidate| c.rtt);
        match (rtt(a), rtt(b)) {
            (Some(ra), Some(rb)) => ra * 5 < rb * 4 && ra + Duration::from_millis(2) < rb,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The active peer's trusted address missed about two heartbeats.
    fn failing(&self, now: Instant, addr: SocketAddr) -> bool {
        let Some(c) = self.cands.get(addr) else {
            return true;
        };
        let rtt = c.rtt.unwrap_or_default();
        self.active_since.is_some()
            && c.last_pong
                .is_none_or(|p| now > p + self.t.heartbeat * 2 + rtt)
    }

    fn expire_pings(&mut self, now: Instant) {
        while let Some(p) = self.pings.front()
            && now >= p.at + self.t.ping_timeout
        {
            if let Via::Direct(a) = p.to
                && let Some(c) = self.cands.get_mut(a)
            {
                c.streak = 0;
            }
            self.pings.pop_front();
        }
    }

    /// When the mode must be re-judged: trust expiry or the end of the hold.
    fn mode_deadline(&self) -> Option<Instant> {
        match self.mode {
            Mode::NoPath => None,
            Mode::Direct(addr) => {
                let pong = self.cands.get(addr).and_then(|c| c.last_pong)?;
                Some(match self.active_since {
                    Some(a) => pong.max(a) + self.t.trust,
                    None => pong + self.t.idle_trust,
                })
            }
            Mode::Degraded { since, .. } => self.relay_up.then_some(since + self.t.degraded_hold),
        }
    }

    /// Applies trust expiry and the hold; the reason if the mode changed.
    fn check_trust(&mut self, now: Instant) -> Option<Reason> {
        let expired = match self.mode_deadline() {
            Some(d) => now >= d,
            None => matches!(self.mode, Mode::Direct(_)),
        };
        if !expired {
            return None;
        }
        match self.mode {
            Mode::NoPath => None,
            Mode::Direct(addr) => {
                // An idle peer's trust lapses for want of keepalives, not
                // because the path failed: no penalty then.
                let failed = u8::from(self.active_since.is_some());
                self.penalty = (self.penalty_at(now) + failed).min(self.t.max_flap_penalty);
                self.mode = Mode::Degraded { addr, since: now };
                self.last_best = Some(addr);
                for c in self.cands.iter_mut() {
                    c.unanswered = 0;
                }
                self.call_me_pending |= self.active_since.is_some();
                Some(Reason::TrustExpired)
            }
            Mode::Degraded { .. } => {
                self.mode = Mode::NoPath;
                Some(Reason::DirectLost)
            }
        }
    }

    /// When candidate `c` should be pinged next, if at all.
    fn ping_due(&self, c: &Candidate) -> Option<Instant> {
        let earliest = c.last_ping.map_or(self.now, |t| t + self.t.min_ping_gap);
        if c.ping_now {
            return Some(earliest);
        }
        let interval = self.interval(c)?;
        Some(c.last_ping.map_or(self.now, |t| t + interval))
    }

    fn interval(&self, c: &Candidate) -> Option<Duration> {
        let active = self.active_since.is_some();
        // Idle peers keep the mapping of their (last) best address open, but
        // only for a while: a map of thousands of peers must not probe them
        // all forever. A cold peer is punched again when it becomes active.
        let keepalive = self
            .last_tx
            .is_some_and(|t| self.now < t + self.t.keepalive_for)
            .then_some(self.t.idle_keepalive);
        let is_best = match self.mode {
            Mode::Direct(best) => best == c.addr,
            Mode::Degraded { .. } | Mode::NoPath => self.last_best == Some(c.addr),
        };
        match (self.mode, is_best, active) {
            (_, true, false) => keepalive,
            (_, false, false) => None,
            (Mode::Direct(_), true, true) => Some(self.t.heartbeat),
            (Mode::Direct(_), false, true) => Some(self.t.upgrade_interval),
            (_, true, true) => Some(self.t.recovery_best),
            (_, false, true) if c.proven(self.now, self.t.proven_memory) => {
                Some(self.t.recovery_proven)
            }
            (_, false, true) => {
                let doublings = c.unanswered.saturating_sub(1).min(4);
                let backoff = self.t.recovery_base * (1u32 << doublings);
                Some(backoff.min(self.t.recovery_max))
            }
        }
    }

    fn send_ping(&mut self, now: Instant, to: Via) -> TxId {
        let txid = self.txids.next();
        if self.pings.len() >= MAX_PINGS {
            self.pings.pop_front();
        }
        self.pings.push_back(SentPing { txid, to, at: now });
        if let Via::Direct(a) = to
            && let Some(c) = self.cands.get_mut(a)
        {
            c.last_ping = Some(now);
            c.unanswered = c.unanswered.saturating_add(1);
            c.ping_now = false;
        }
        self.queue(to, Message::Ping { txid });
        self.stats.pings_sent += 1;
        txid
    }

    /// When a call-me-maybe should go out, if one is wanted.
    fn call_me_due(&self) -> Option<Instant> {
        if !self.relay_up || self.local.is_empty() {
            return None;
        }
        let gap = |d: Duration| self.last_call_me.map_or(self.now, |t| t + d);
        if self.call_me_pending {
            return Some(gap(self.t.call_me_min_gap));
        }
        let searching = !matches!(self.mode, Mode::Direct(_));
        (self.active_since.is_some() && searching).then(|| gap(self.t.call_me_retry))
    }

    fn maybe_call_me(&mut self, now: Instant) {
        if self.call_me_due().is_none_or(|d| d > now) {
            return;
        }
        let candidates = self
            .local
            .iter()
            .take(MAX_CALL_ME_CANDIDATES)
            .copied()
            .collect();
        self.queue(Via::Relay, Message::CallMeMaybe { candidates });
        self.stats.call_me_sent += 1;
        self.last_call_me = Some(now);
        self.call_me_pending = false;
    }

    fn queue(&mut self, via: Via, msg: Message) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.stats.transmit_drops += 1;
            return;
        }
        self.transmits.push_back(Transmit { via, msg });
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The address to use when nothing is trusted and there is no relay:
    /// the freshest evidence (a pong or an authenticated tunnel packet:
    /// WireGuard's roaming), else the netmap endpoint.
    /// Returns the address and when its evidence was seen (`None` for the
    /// bare netmap endpoint).
    fn guess(&self) -> Option<(SocketAddr, Option<Instant>)> {
        let pongs = self
            .cands
            .iter()
            .filter_map(|c| c.last_pong.map(|p| (p, c.addr)));
        let rx = self.rx_src.map(|(a, t)| (t, a));
        pongs
            .chain(rx)
            .max_by_key(|(t, _)| *t)
            .map(|(t, a)| (a, Some(t)))
            .or_else(|| self.cands.first_config().map(|a| (a, None)))
    }

    fn compute_route(&self, now: Instant) -> (Route, PathKind) {
        match self.mode {
            Mode::Direct(addr) => {
                if self.relay_up && self.mirroring(now, addr) {
                    (Route::Both(addr), PathKind::Direct)
                } else {
                    (Route::Direct(addr), PathKind::Direct)
                }
            }
            Mode::Degraded { addr, .. } if self.relay_up => (Route::Both(addr), PathKind::Relay),
            _ if self.relay_up => (Route::Relay, PathKind::Relay),
            // No relay: send to the best guess, but report it as a direct
            // path only while fresh evidence (a pong or an authenticated
            // tunnel packet within the trust window) backs it; an
            // unconfirmed netmap address is a try, not a path.
            _ => match self.guess() {
                Some((a, Some(seen))) if now < seen + self.t.trust => {
                    (Route::Direct(a), PathKind::Direct)
                }
                Some((a, _)) => (Route::Direct(a), PathKind::None),
                None => (Route::None, PathKind::None),
            },
        }
    }

    fn update_route(&mut self, now: Instant, reason: Reason) {
        let (route, kind) = self.compute_route(now);
        if route == self.route && kind == self.kind {
            return;
        }
        self.push_event(Event::Route {
            route,
            kind,
            reason,
            previous: self.route,
            previous_for: now.saturating_duration_since(self.route_since),
        });
        self.stats.route_changes += 1;
        if kind != self.kind {
            self.stats.switches[reason.index()] += 1;
            self.kind = kind;
            self.kind_since = now;
        }
        self.route = route;
        self.route_since = now;
        self.last_reason = Some(reason);
    }
}

#[cfg(test)]
#[path = "peer_tests.rs"]
mod tests;
