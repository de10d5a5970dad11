//! The I/O shell of path selection: per-peer path machines (crate::path)
//! fed from the engine's threads, their probes sealed and sent, their
//! routes published for the data path.
//!
//! Who calls what:
//! - outbound worker: reads a peer's published [`Route`] per packet (one
//!   uncontended lock, as the endpoint was before) and stamps the time of
//!   the last data packet (an atomic);
//! - inbound worker and relay threads: probes go to [`on_probe`],
//!   authenticated tunnel packets from a direct address to [`note_rx`];
//! - timer worker: [`tick`] every 100 ms (heartbeats, trust expiry,
//!   relay up/down, network changes, discovery, pending pings);
//! - the daemon: [`set_paths`], [`ping`], [`stats_of`].
//!
//! A peer's machine lives behind its own mutex; nothing here takes a
//! session (tunnel) lock while holding it, so lock order stays
//! tunnel → path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::TunnResult;
use rand_core::{OsRng, RngCore as _};
use rustynet_tunnel::{PathConfig, PeerConfig, PingDone, PingReport, TunnelPublicKey};

use super::device::{Device, Peer, PeerTable, lock};
use super::discovery::Discovery;
use super::relays::RelaySet;
use crate::path::{
    Event, PathKind, PathPeer, PathPublicKey, PathSecret, ProbeCounters, ProbeKey, Reason, Route,
    Timing, TxId, Via, sender_of,
};

/// How long `ping` waits for its pong.
const PING_DEADLINE: Duration = Duration::from_secs(3);

/// Which byte counter.
#[derive(Clone, Copy)]
pub(crate) enum Bytes {
    DirectTx = 0,
    DirectRx = 1,
    RelayTx = 2,
    RelayRx = 3,
}

/// Device-wide path state.
pub(crate) struct Paths {
    /// Origin of the per-peer "last data sent" stamps.
    pub(crate) epoch: Instant,
    secret: RwLock<Option<Arc<PathSecret>>>,
    relays: RwLock<Arc<RelaySet>>,
    pub(crate) counters: ProbeCounters,
    relays_dirty: AtomicBool,
    net_changed: AtomicBool,
    pub(crate) discovery: Mutex<Discovery>,
    /// The config last applied (set_paths is idempotent).
    applied: Mutex<Option<PathConfig>>,
    pub(crate) fwmark: Option<u32>,
}

impl Paths {
    pub(crate) fn new(fwmark: Option<u32>) -> Self {
        Self {
            epoch: Instant::now(),
            secret: RwLock::new(None),
            relays: RwLock::new(Arc::new(RelaySet::default())),
            counters: ProbeCounters::default(),
            relays_dirty: AtomicBool::new(false),
            net_changed: AtomicBool::new(false),
            discovery: Mutex::new(Discovery::default()),
            applied: Mutex::new(None),
            fwmark,
        }
    }

    /// The current relay set (one refcount bump).
    pub(crate) fn relays(&self) -> Arc<RelaySet> {
        Arc::clone(&self.relays.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn secret(&self) -> Option<Arc<PathSecret>> {
        self.secret
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A relay connection came up or went down (relay thread).
    pub(crate) fn relays_changed(&self) {
        self.relays_dirty.store(true, Ordering::Release);
    }

    /// Our addresses changed (netlink monitor thread).
    pub(crate) fn network_changed(&self) {
        self.net_changed.store(true, Ordering::Release);
    }
}

/// One peer's path: the published route and the machine behind it.
pub(crate) struct PathCell {
    route: Mutex<Route>,
    state: Mutex<PathState>,
    /// Nanoseconds after [`Paths::epoch`] of the last data packet sent
    /// (0: none yet).
    last_tx_ns: AtomicU64,
    /// Nanoseconds after [`Paths::epoch`] of the first handshake sent to a
    /// new peer without data waiting (0: none).
    contacted_ns: AtomicU64,
    bytes: [AtomicU64; 4],
}

struct PathState {
    machine: PathPeer,
    probe: Option<ProbeKey>,
    /// The peer's path key as configured (to notice a change).
    path_key: Option<PathPublicKey>,
    relay_up: bool,
    local: Arc<[SocketAddr]>,
    pings: Vec<PendingPing>,
    seal: Vec<u8>,
    /// Last route change, for status.
    reason: Option<Reason>,
}

struct PendingPing {
    txids: Vec<TxId>,
    deadline: Instant,
    done: PingDone,
}

fn probe_key(secret: Option<&PathSecret>, peer: Option<PathPublicKey>) -> Option<ProbeKey> {
    let (secret, peer) = (secret?, peer?);
    match ProbeKey::new(secret, peer) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!(error = %e, "peer's path key refused; direct paths only");
            None
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl PathCell {
    /// A fresh machine for a new peer.
    pub(crate) fn new(dev: &Device, cfg: &PeerConfig) -> Self {
        let now = Instant::now();
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let local = lock(&dev.paths.discovery).candidates();
        let path_key = cfg.path_key.map(|k| PathPublicKey(k.0));
        let probe = probe_key(dev.paths.secret().as_deref(), path_key);
        // Born knowing the relay (as the timer pass would decide): the
        // first handshake of a new peer must not go to a guessed address.
        let relay_up =
            probe.is_some() && dev.paths.relays().pick(cfg.home_relay.as_deref()).is_some();
        let machine = PathPeer::new(
            now,
            Timing::default(),
            seed,
            &candidates_of(cfg),
            Arc::clone(&local),
            relay_up,
        );
        let route = machine.route();
        Self {
            route: Mutex::new(route),
            state: Mutex::new(PathState {
                machine,
                probe,
                path_key,
                relay_up,
                local,
                pings: Vec::new(),
                seal: Vec::with_capacity(512),
                reason: None,
            }),
            last_tx_ns: AtomicU64::new(0),
            contacted_ns: AtomicU64::new(0),
            bytes: Default::default(),
        }
    }

    /// Stamps a handshake initiation sent without data waiting (a new
    /// peer contacted at once).
    pub(crate) fn note_contacted(&self, now_ns: u64) {
        self.contacted_ns.store(now_ns.max(1), Ordering::Relaxed);
    }

    /// Whether we sent the peer data or a first handshake within `window`.
    fn wanted_within(&self, now_ns: u64, window: Duration) -> bool {
        let last = self
            .last_tx_ns
            .load(Ordering::Relaxed)
            .max(self.contacted_ns.load(Ordering::Relaxed));
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        last > 0 && now_ns.saturating_sub(last) <= window
    }

    /// A peer's config changed (kept session): new candidates or path key.
    pub(crate) fn reconfigure(&self, dev: &Device, old: &PeerConfig, cfg: &PeerConfig) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        if old.candidates != cfg.candidates || old.endpoint != cfg.endpoint {
            st.machine.set_candidates(now, &candidates_of(cfg));
        }
        let path_key = cfg.path_key.map(|k| PathPublicKey(k.0));
        if path_key != st.path_key {
            st.path_key = path_key;
            st.probe = probe_key(dev.paths.secret().as_deref(), path_key);
        }
        // No session here to resend on: set_peers contacts new and
        // reconfigured peers itself.
        let _ = drain(
            dev,
            &cfg.public_key,
            cfg.home_relay.as_deref(),
            self,
            &mut st,
            now,
        );
    }

    /// Where the data path sends now.
    pub(crate) fn route(&self) -> Route {
        *lock(&self.route)
    }

    /// Stamps a data packet sent at `now_ns` after the epoch.
    pub(crate) fn note_tx(&self, now_ns: u64) {
        self.last_tx_ns.store(now_ns.max(1), Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, which: Bytes, n: usize) {
        self.bytes[which as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    fn bytes(&self, which: Bytes) -> u64 {
        self.bytes[which as usize].load(Ordering::Relaxed)
    }
}

/// The peer's candidates with its configured endpoint first.
fn candidates_of(cfg: &PeerConfig) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = cfg.endpoint.into_iter().collect();
    out.extend(cfg.candidates.iter().filter(|c| Some(**c) != cfg.endpoint));
    out
}

/// Nanoseconds since the device's path epoch.
pub(crate) fn now_ns(dev: &Device) -> u64 {
    u64::try_from(dev.paths.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Sends `payload` to `peer` through its relay (UDP relay mode when it
/// works, else TLS); false when dropped.
pub(crate) fn relay_send(dev: &Device, peer: &Peer, payload: &[u8], probe: bool) -> bool {
    let relays = dev.paths.relays();
    let Some(conn) = relays.pick(peer.config.home_relay.as_deref()) else {
        return false;
    };
    if !probe && let Some((to, id)) = conn.udp_route(&peer.key) {
        let mut datagram = payload.to_vec();
        if rustynet_relay::udp::encode(&mut datagram, id) {
            dev.udp.send(to, &datagram, None, dev.waker.fd());
            peer.path.add_bytes(Bytes::RelayTx, payload.len());
            return true;
        }
    }
    let sent = conn.send(&peer.key, payload, probe);
    if sent && !probe {
        peer.path.add_bytes(Bytes::RelayTx, payload.len());
    }
    sent
}

/// Sends one tunnel datagram along `route` (handshakes, keepalives, and data
/// that does not go through the outbound worker's GSO batches).
pub(crate) fn send_on_route(dev: &Device, peer: &Peer, route: Route, datagram: &[u8]) {
    match route {
        Route::None => {}
        Route::Direct(addr) => {
            dev.udp.send(addr, datagram, None, dev.waker.fd());
            peer.path.add_bytes(Bytes::DirectTx, datagram.len());
        }
        Route::Both(addr) => {
            dev.udp.send(addr, datagram, None, dev.waker.fd());
            peer.path.add_bytes(Bytes::DirectTx, datagram.len());
            relay_send(dev, peer, datagram, false);
        }
        Route::Relay => {
            relay_send(dev, peer, datagram, false);
        }
    }
}

/// Runs the peer's machine outputs: probes out, events handled, route
/// published. Returns whether the published route changed.
fn drain(
    dev: &Device,
    key: &TunnelPublicKey,
    home_relay: Option<&str>,
    cell: &PathCell,
    st: &mut PathState,
    now: Instant,
) -> bool {
    // Work an input made due at once (a pong asks for its confirming ping
    // now, not at the next tick): failback takes round trips, not ticks.
    if st.machine.poll_timeout().is_some_and(|t| t <= now) {
        st.machine.handle_timeout(now);
    }
    while let Some(t) = st.machine.poll_transmit() {
        let Some(probe) = st.probe.as_mut() else {
            continue;
        };
        if let Err(e) = probe.seal(&t.msg, wall_ms(), &mut OsRng, &mut st.seal) {
            tracing::debug!(error = %e, "cannot seal a probe");
            continue;
        }
        match t.via {
            Via::Direct(addr) => dev.udp.send(addr, &st.seal, None, dev.waker.fd()),
            Via::Relay => {
                if let Some(conn) = dev.paths.relays().pick(home_relay) {
                    conn.send(key, &st.seal, true);
                }
            }
        }
    }
    while let Some(event) = st.machine.poll_event() {
        match event {
            Event::Route {
                route,
                kind,
                reason,
                previous,
                ..
            } => {
                tracing::info!(peer = %key, ?previous, ?route, kind = kind.as_str(), reason = reason.as_str(), "path changed");
                st.reason = Some(reason);
                if reason == Reason::TrustExpired {
                    lock(&dev.paths.discovery).trigger(now);
                }
            }
            Event::Pong { via, rtt, txid } => {
                if let Some(i) = st.pings.iter().position(|p| p.txids.contains(&txid)) {
                    let ping = st.pings.swap_remove(i);
                    let (path, via) = match via {
                        Via::Direct(addr) => (rustynet_tunnel::PathKind::Direct, addr.to_string()),
                        Via::Relay => (
                            rustynet_tunnel::PathKind::Relay,
                            dev.paths
                                .relays()
                                .pick(home_relay)
                                .map_or_else(|| "relay".to_owned(), |c| c.info.name.clone()),
                        ),
                    };
                    (ping.done)(PingReport {
                        path,
                        via: Some(via),
                        rtt: Some(rtt),
                    });
                }
            }
            Event::Observed(addr) => lock(&dev.paths.discovery).observed(addr, now),
        }
    }
    let route = st.machine.route();
    let mut published = lock(&cell.route);
    let changed = *published != route;
    *published = route;
    changed
}

/// An incoming probe, directly from `from` or through `relay`. The sender
/// is looked up by its path key before any crypto; a probe that came
/// through a relay must also be from the node the relay names.
pub(crate) fn on_probe(
    dev: &Device,
    table: &PeerTable,
    datagram: &[u8],
    via: Via,
    relayed_from: Option<&TunnelPublicKey>,
) {
    let outcome = sender_of(datagram).and_then(|sender| {
        table
            .by_path_key
            .get(&sender.0)
            .filter(|p| relayed_from.is_none_or(|k| *k == p.key))
            .cloned()
            .ok_or(crate::path::Refusal::UnknownSender)
    });
    let peer = match outcome {
        Ok(peer) => peer,
        Err(refusal) => {
            dev.paths.counters.record::<()>(&Err(refusal));
            return;
        }
    };
    let now = Instant::now();
    let cell = &peer.path;
    let mut st = lock(&cell.state);
    let Some(probe) = st.probe.as_mut() else {
        dev.paths
            .counters
            .record::<()>(&Err(crate::path::Refusal::UnknownSender));
        return;
    };
    let opened = probe.open(datagram);
    dev.paths.counters.record(&opened);
    let Ok(msg) = opened else {
        return;
    };
    st.machine.handle_probe(now, via, msg);
    let changed = drain(
        dev,
        &peer.key,
        peer.config.home_relay.as_deref(),
        cell,
        &mut st,
        now,
    );
    drop(st);
    if changed {
        resend_after_route_change(dev, &peer);
    }
}

/// An authenticated tunnel packet from the peer, from `from` (`None`: it
/// came through a relay).
pub(crate) fn note_rx(dev: &Device, peer: &Peer, from: Option<SocketAddr>, now: Instant) {
    let cell = &peer.path;
    let mut st = lock(&cell.state);
    st.machine.note_rx(now, from);
    let changed = drain(
        dev,
        &peer.key,
        peer.config.home_relay.as_deref(),
        cell,
        &mut st,
        now,
    );
    drop(st);
    if changed {
        resend_after_route_change(dev, peer);
    }
}

/// The timer worker's round: discovery, then every peer's machine.
pub(crate) fn tick(dev: &Device, table: &PeerTable) {
    let now = Instant::now();
    let relays = dev.paths.relays();
    let net_changed = dev.paths.net_changed.swap(false, Ordering::AcqRel);
    dev.paths.relays_dirty.store(false, Ordering::Release);
    let local = {
        let mut d = lock(&dev.paths.discovery);
        if net_changed {
            d.trigger(now);
        }
        d.tick(dev, &relays, now);
        d.candidates()
    };
    for peer in table.by_key.values() {
        let cell = &peer.path;
        let mut st = lock(&cell.state);
        if net_changed {
            st.machine.network_changed(now);
        }
        if !Arc::ptr_eq(&local, &st.local) {
            st.local = Arc::clone(&local);
            st.machine.set_local_candidates(now, Arc::clone(&local));
        }
        // Peers without a path key (or before our secret is known) keep
        // today's behaviour: endpoint, then the latest authenticated source.
        let up = st.probe.is_some() && relays.pick(peer.config.home_relay.as_deref()).is_some();
        if up != st.relay_up {
            st.relay_up = up;
            st.machine.set_relay(now, up);
        }
        let last_tx = cell.last_tx_ns.load(Ordering::Relaxed);
        if last_tx > 0 {
            st.machine
                .note_tx(now, dev.paths.epoch + Duration::from_nanos(last_tx));
        }
        if st.machine.poll_timeout().is_some_and(|t| t <= now) {
            st.machine.handle_timeout(now);
        }
        let mut i = 0;
        while i < st.pings.len() {
            if st.pings[i].deadline <= now {
                let ping = st.pings.swap_remove(i);
                (ping.done)(PingReport {
                    path: rustynet_tunnel::PathKind::None,
                    via: None,
                    rtt: None,
                });
            } else {
                i += 1;
            }
        }
        let changed = drain(
            dev,
            &peer.key,
            peer.config.home_relay.as_deref(),
            cell,
            &mut st,
            now,
        );
        drop(st);
        if changed {
            resend_after_route_change(dev, peer);
        }
    }
}

/// `rustynet ping`: one ping on each leg of the peer's route (with
/// `all_paths`, on every candidate and the relay); `done` gets the first
/// answer (or none after [`PING_DEADLINE`]).
pub(crate) fn ping(dev: &Device, peer: &Peer, all_paths: bool, done: PingDone) {
    let now = Instant::now();
    let cell = &peer.path;
    let mut st = lock(&cell.state);
    if st.probe.is_none() {
        drop(st);
        done(PingReport {
            path: rustynet_tunnel::PathKind::None,
            via: None,
            rtt: None,
        });
        return;
    }
    let txids = if all_paths {
        st.machine.ping_all(now)
    } else {
        st.machine.ping_route(now)
    };
    st.pings.push(PendingPing {
        txids,
        deadline: now + PING_DEADLINE,
        done,
    });
    let changed = drain(
        dev,
        &peer.key,
        peer.config.home_relay.as_deref(),
        cell,
        &mut st,
        now,
    );
    drop(st);
    if changed {
        resend_after_route_change(dev, peer);
    }
}

/// Path changes of every peer in `table`, by reason (all reasons listed).
pub(crate) fn switches_by_reason(table: &PeerTable) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
    for peer in table.by_key.values() {
        let st = lock(&peer.path.state);
        for (slot, n) in out.iter_mut().zip(st.machine.stats().switches.iter()) {
            slot.1 = slot.1.saturating_add(*n);
        }
    }
    out
}

/// The peer's path for status.
pub(crate) fn stats_of(dev: &Device, peer: &Peer) -> (rustynet_tunnel::PeerPath, u64) {
    let now = Instant::now();
    let cell = &peer.path;
    let st = lock(&cell.state);
    let status = st.machine.status(now);
    let switches: u64 = st.machine.stats().switches.iter().sum();
    let kind = match status.kind {
        PathKind::Direct => rustynet_tunnel::PathKind::Direct,
        PathKind::Relay => rustynet_tunnel::PathKind::Relay,
        PathKind::None => rustynet_tunnel::PathKind::None,
    };
    let addr = match status.route {
        Route::Direct(a) | Route::Both(a) => Some(a),
        Route::Relay | Route::None => None,
    };
    let relay = matches!(status.route, Route::Both(_) | Route::Relay)
        .then(|| {
            dev.paths
                .relays()
                .pick(peer.config.home_relay.as_deref())
                .map(|c| c.info.name.clone())
        })
        .flatten();
    let path = rustynet_tunnel::PeerPath {
        kind,
        addr,
        relay,
        since: status.kind_for,
        reason: st
            .reason
            .or(status.last_reason)
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        rtt: status.rtt,
        changes: switches,
        direct_tx: cell.bytes(Bytes::DirectTx),
        direct_rx: cell.bytes(Bytes::DirectRx),
        relay_tx: cell.bytes(Bytes::RelayTx),
        relay_rx: cell.bytes(Bytes::RelayRx),
    };
    (path, switches)
}

/// Applies relays, the path secret and the relay login.
pub(crate) fn set_paths(dev: &Arc<Device>, config: &PathConfig) {
    let mut applied = lock(&dev.paths.applied);
    if applied.as_ref() == Some(config) {
        return;
    }
    let login_changed = applied.as_ref().map(|a| &a.login) != Some(&config.login);
    let secret = Arc::new(PathSecret::from_bytes(*config.secret.as_bytes()));
    let secret_changed = dev.paths.secret().map(|s| s.public()) != Some(secret.public());
    *dev.paths.secret.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&secret));
    let old = dev.paths.relays();
    let new = RelaySet::build(
        &old,
        &config.relays,
        config.login.as_ref(),
        dev.paths.fwmark,
        dev,
    );
    *dev.paths.relays.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
    drop(old);
    if secret_changed {
        for peer in dev.table().by_key.values() {
            let mut st = lock(&peer.path.state);
            st.probe = probe_key(Some(&secret), st.path_key);
        }
    }
    dev.paths.relays_changed();
    lock(&dev.paths.discovery).trigger(Instant::now());
    *applied = Some(config.clone());
    drop(applied);
    if login_changed {
        resend_pending_handshakes(dev);
    }
}

/// How recently a peer must have been wanted for a new ticket to re-send
/// its pending handshake.
const RESEND_WINDOW: Duration = Duration::from_secs(10);

/// The relay forwards only between nodes whose tickets name each other, and
/// a ticket naming a new peer arrives after the map that added it: the
/// first handshake to that peer (sent at once, or with the first data) was
/// dropped at the relay, and WireGuard would retry only after 5 s. With the
/// new ticket in place, handshakes still pending for peers we recently
/// wanted are sent again now. Peers with a session, or not wanted lately,
/// are left alone (no rekeys, no work for idle peers).
fn resend_pending_handshakes(dev: &Device) {
    for peer in dev.table().by_key.values() {
        if matches!(peer.path.route(), Route::Relay | Route::Both(_)) {
            resend_pending(dev, peer);
        }
    }
}

/// A peer's route changed: a handshake still pending went out on the old
/// one (a guessed address, or the relay before the peer was on it) and
/// WireGuard would retry only after 5 s, so it goes again on the new one.
fn resend_after_route_change(dev: &Device, peer: &Peer) {
    if peer.path.route() != Route::None {
        resend_pending(dev, peer);
    }
}

/// Sends the handshake in progress again on the current route, for a peer
/// without a session that was wanted within [`RESEND_WINDOW`] (no rekeys,
/// no work for idle peers).
fn resend_pending(dev: &Device, peer: &Peer) {
    if !peer.path.wanted_within(now_ns(dev), RESEND_WINDOW) {
        return;
    }
    if lock(&peer.tunn).stats().0.is_some() {
        return;
    }
    send_initiation(dev, peer, peer.path.route(), true);
}

/// Sends the peer a handshake initiation along `route` (`resend`: the one in
/// progress again, else only when none is). Returns whether one went out.
pub(crate) fn send_initiation(dev: &Device, peer: &Peer, route: Route, resend: bool) -> bool {
    let mut buf = [0u8; 256];
    // Copied out so the session lock is not held while sending.
    let pkt = match lock(&peer.tunn).format_handshake_initiation(&mut buf, resend) {
        TunnResult::WriteToNetwork(pkt) => pkt.to_vec(),
        _ => return false,
    };
    send_on_route(dev, peer, route, &pkt);
    true
}
