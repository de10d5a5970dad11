//! The userspace engine: boringtun sessions, a TUN with offload, one UDP socket.
//!
//! Threads, not tokio tasks: the hot paths are tight loops of batched
//! blocking syscalls (TUN read -> encrypt -> GSO send; `recvmmsg` -> decrypt
//! -> TUN write) that gain nothing from an executor and would lose the
//! predictable scheduling of a dedicated thread on a two-core host; the
//! daemon's API is synchronous anyway. Three threads per interface: outbound,
//! inbound, timers. They share an immutable peer snapshot that
//! reconfiguration swaps atomically, so the data path takes no lock on the
//! table and one uncontended lock per packet on the peer's session.

mod device;
mod discovery;
mod net;
mod netmon;
mod paths;
mod relay_tx;
mod relays;
mod rx;
mod timers;
mod tx;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::RngCore as _;
use rustynet_tunnel::{
    BackendInfo, InterfaceConfig, NetcheckDone, PathConfig, PeerConfig, PeerSet, PeerStats,
    PingDone, PingReport, ProbeCounters, TunnelBackend, TunnelError, TunnelPublicKey, TunnelStats,
};

use crate::keys::{public_key, validate_public_key};
use device::{Device, Peer, PeerTable, lock};
use net::{Udp, Waker};

/// How long `stop` waits for the kernel to remove the interface.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Session indices carry a 24-bit peer index in their upper bits.
const INDEX_MASK: u32 = 0x00ff_ffff;

/// The userspace engine. See the module docs for its threads.
pub struct UserspaceBackend {
    detail: String,
    run: Option<Running>,
}

struct Running {
    config: InterfaceConfig,
    own_key: TunnelPublicKey,
    device: Arc<Device>,
    workers: Vec<JoinHandle<()>>,
    peers: PeerSet,
    next_index: u32,
}

impl Default for UserspaceBackend {
    fn default() -> Self {
        Self::new("userspace: selected explicitly".into())
    }
}

impl UserspaceBackend {
    /// A stopped engine; `detail` is what `info()` reports as the reason for
    /// choosing it.
    pub fn new(detail: String) -> Self {
        Self { detail, run: None }
    }

    fn running(&self) -> Result<&Running, TunnelError> {
        match &self.run {
            None => Err(TunnelError::NotRunning),
            Some(r) if r.device.is_gone() => Err(TunnelError::InterfaceGone {
                ifname: r.config.ifname.clone(),
            }),
            Some(r) => Ok(r),
        }
    }

    fn running_mut(&mut self) -> Result<&mut Running, TunnelError> {
        self.running()?;
        self.run.as_mut().ok_or(TunnelError::NotRunning)
    }

    /// Validates keys the protocol-agnostic `PeerSet` cannot judge, then swaps
    /// the worker-visible table.
    fn reconcile(&mut self, desired: PeerSet) -> Result<(), TunnelError> {
        let run = self.running_mut()?;
        for peer in desired.iter() {
            validate_public_key(&peer.public_key)?;
            if peer.public_key == run.own_key {
                return Err(TunnelError::InvalidPeerKey {
                    key: peer.public_key,
                    reason: "our own key",
                });
            }
        }
        run.apply(desired);
        Ok(())
    }
}

fn open_tun(config: &InterfaceConfig) -> std::io::Result<tun_rs::SyncDevice> {
    let build = |offload: bool| {
        tun_rs::DeviceBuilder::new()
            .name(config.ifname.clone())
            .mtu(config.mtu)
            .offload(offload)
            .enable(true)
            .build_sync()
    };
    // Offload needs a kernel with TUN virtio-net support; fall back without it.
    let tun = build(true).or_else(|e| {
        tracing::warn!(error = %e, "TUN offload unavailable, continuing without");
        build(false)
    })?;
    tun.set_nonblocking(true)?;
    Ok(tun)
}

impl Running {
    fn apply(&mut self, desired: PeerSet) {
        let diff = self.peers.diff(&desired);
        let old = self.device.table();
        let mut peers: Vec<Arc<Peer>> = Vec::with_capacity(desired.len());
        // Peers with a new session, contacted once the table holds them.
        let mut fresh: Vec<Arc<Peer>> = Vec::new();
        for key in &diff.unchanged {
            if let Some(p) = old.by_key.get(key) {
                peers.push(Arc::clone(p));
            }
        }
        for cfg in &diff.updated {
            let keep = old
                .by_key
                .get(&cfg.public_key)
                .filter(|p| p.config.persistent_keepalive_secs == cfg.persistent_keepalive_secs);
            match keep {
                Some(prev) => {
                    prev.path.reconfigure(&self.device, &prev.config, cfg);
                    peers.push(Arc::new(Peer {
                        key: cfg.public_key,
                        index: prev.index,
                        tunn: Arc::clone(&prev.tunn),
                        path: Arc::clone(&prev.path),
                        config: cfg.clone(),
                    }));
                }
                // boringtun fixes the keepalive at construction: new session.
                None => fresh.push(self.new_peer(cfg, &old)),
            }
        }
        for cfg in &diff.added {
            fresh.push(self.new_peer(cfg, &old));
        }
        peers.extend(fresh.iter().cloned());
        tracing::debug!(
            added = diff.added.len(),
            updated = diff.updated.len(),
            removed = diff.removed.len(),
            "peer set reconciled"
        );
        self.device.replace_table(PeerTable::build(peers));
        self.peers = desired;
        // Like the kernel implementation: a peer configured with a persistent
        // keepalive is contacted at once. After a restart this re-establishes
        // sessions immediately instead of when the peers' old sessions time
        // out. Only now that the table holds the new peers: a response that
        // arrived before would find no session index and be dropped, leaving
        // the handshake to its 5 s retry.
        for peer in &fresh {
            if peer.config.persistent_keepalive_secs.is_none() {
                continue;
            }
            let route = peer.path.route();
            if route == crate::path::Route::None {
                continue;
            }
            if paths::send_initiation(&self.device, peer, route, false) {
                peer.path.note_contacted(paths::now_ns(&self.device));
            }
        }
    }

    fn new_peer(&mut self, cfg: &PeerConfig, old: &PeerTable) -> Arc<Peer> {
        // Skip indices still used by live peers (their sessions route by index).
        let mut index = self.next_index & INDEX_MASK;
        while old.by_index.contains_key(&index) {
            index = (index + 1) & INDEX_MASK;
        }
        self.next_index = index.wrapping_add(1);
        let tunn = Tunn::new(
            StaticSecret::from(*self.config.private_key.as_bytes()),
            PublicKey::from(cfg.public_key.0),
            None,
            cfg.persistent_keepalive_secs,
            index,
            Some(Arc::clone(&self.device.rate_limiter)),
        );
        Arc::new(Peer {
            key: cfg.public_key,
            index,
            tunn: Arc::new(Mutex::new(tunn)),
            path: Arc::new(paths::PathCell::new(&self.device, cfg)),
            config: cfg.clone(),
        })
    }

    fn shutdown(self) {
        self.device.stop();
        for w in self.workers {
            let _ = w.join();
        }
        let was_gone = self.device.is_gone();
        // Dropping the last `Arc<Device>` closes the TUN descriptor, which
        // removes the (non-persistent) interface.
        drop(self.device);
        if was_gone {
            return;
        }
        // A child process forked by another thread at that moment holds the
        // descriptor until it execs; wait so that "stopped" means "gone" and
        // an immediate restart under the same name cannot hit EBUSY.
        let deadline = Instant::now() + STOP_GRACE;
        while net::interface_exists(&self.config.ifname) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn(name: String, dev: &Arc<Device>, f: fn(&Device)) -> Result<JoinHandle<()>, TunnelError> {
    let dev = Arc::clone(dev);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // A bug must not leave a half-dead device that claims to run.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&dev)));
            if result.is_err() {
                tracing::error!(ifname = %dev.ifname, "tunnel worker panicked");
                dev.mark_gone();
            }
        })
        .map_err(|e| TunnelError::io("spawn tunnel worker", e))
}

impl TunnelBackend for UserspaceBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            path_discovery: true,
            engine: "userspace".into(),
            detail: self.detail.clone(),
        }
    }

    fn start(&mut self, config: &InterfaceConfig) -> Result<(), TunnelError> {
        if self.run.is_some() {
            return Err(TunnelError::AlreadyRunning);
        }
        config.validate()?;
        let tun = open_tun(config).map_err(|e| TunnelError::io("create TUN interface", e))?;
        let udp = Udp::bind(config.listen_port, config.fwmark)
            .map_err(|e| TunnelError::io("bind UDP socket", e))?;
        let waker = Waker::new().map_err(|e| TunnelError::io("create wake-up channel", e))?;
        let device = Arc::new(Device::new(
            config.ifname.clone(),
            tun,
            udp,
            waker,
            StaticSecret::from(*config.private_key.as_bytes()),
            config.fwmark,
        ));
        let short: String = config.ifname.chars().take(8).collect();
        let mut workers = Vec::with_capacity(4);
        for (role, f) in [
            ("tx", tx::run as fn(&Device)),
            ("rx", rx::run),
            ("tm", timers::run),
            ("nl", netmon::run),
        ] {
            match spawn(format!("rn-{role}-{short}"), &device, f) {
                Ok(h) => workers.push(h),
                Err(e) => {
                    device.stop();
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(e);
                }
            }
        }
        tracing::info!(
            ifname = %config.ifname,
            port = device.udp.port(),
            gso_segments = device.udp.max_gso_segments(),
            offload = device.tun.tcp_gso(),
            "userspace tunnel started"
        );
        self.run = Some(Running {
            config: config.clone(),
            own_key: public_key(&config.private_key),
            device,
            workers,
            peers: PeerSet::new(),
            next_index: rand_core::OsRng.next_u32() & INDEX_MASK,
        });
        Ok(())
    }

    fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError> {
        self.running()?;
        let desired = PeerSet::from_peers(peers)?;
        self.reconcile(desired)
    }

    fn add_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_added(peer)?;
        self.reconcile(desired)
    }

    fn update_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_updated(peer)?;
        self.reconcile(desired)
    }

    fn remove_peer(&mut self, key: &TunnelPublicKey) -> Result<(), TunnelError> {
        let desired = self.running()?.peers.with_removed(key)?;
        self.reconcile(desired)
    }

    fn stats(&self) -> Result<TunnelStats, TunnelError> {
        let run = self.running()?;
        let table = run.device.table();
        let mut switches = 0;
        let peers = run
            .peers
            .iter()
            .filter_map(|cfg| table.by_key.get(&cfg.public_key))
            .map(|peer| {
                let (last_handshake, tx, rx, _, _) = lock(&peer.tunn).stats();
                let (path, peer_switches) = paths::stats_of(&run.device, peer);
                switches += peer_switches;
                PeerStats {
                    public_key: peer.key,
                    endpoint: path.addr,
                    path,
                    last_handshake,
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                }
            })
            .collect();
        let c = run.device.paths.counters.snapshot();
        let probes = ProbeCounters {
            accepted: c.accepted,
            unknown_sender: c.unknown_sender,
            bad_auth: c.auth_failed,
            replayed: c.replayed + c.too_old,
            malformed: c.malformed + c.bad_body,
            path_changes: switches,
        };
        Ok(TunnelStats {
            listen_port: run.device.udp.port(),
            peers,
            rx_source_mismatch: run.device.source_mismatches(),
            probes,
            relays: run.device.paths.relays().status(),
            mapped: lock(&run.device.paths.discovery).mapped(std::time::Instant::now()),
            path_switches: paths::switches_by_reason(&table),
        })
    }

    fn stop(&mut self) -> Result<(), TunnelError> {
        if let Some(run) = self.run.take() {
            run.shutdown();
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.run.as_ref().is_some_and(|r| !r.device.is_gone())
    }

    fn set_paths(&mut self, config: &PathConfig) -> Result<(), TunnelError> {
        let run = self.running()?;
        paths::set_paths(&run.device, config);
        Ok(())
    }

    fn netcheck(&self, done: NetcheckDone) {
        let Ok(run) = self.running() else {
            done(Default::default());
            return;
        };
        let relays = run.device.paths.relays();
        lock(&run.device.paths.discovery).start_netcheck(&run.device, &relays, done);
    }

    fn ping(&self, peer: &TunnelPublicKey, all_paths: bool, done: PingDone) {
        let found = self.running().ok().and_then(|run| {
            run.device
                .table()
                .by_key
                .get(peer)
                .cloned()
                .map(|p| (run, p))
        });
        match found {
            Some((run, p)) => paths::ping(&run.device, &p, all_paths, done),
            None => done(PingReport {
                path: rustynet_tunnel::PathKind::None,
                via: None,
                rtt: None,
            }),
        }
    }
}

impl Drop for UserspaceBackend {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            run.shutdown();
        }
    }
}
