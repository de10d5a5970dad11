//! State shared by the worker threads of one running interface.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::{PublicKey, StaticSecret};
use rustynet_tunnel::{AllowedIps, PeerConfig, TunnelPublicKey};

use super::net::{Udp, Waker};

/// Handshakes per second before cookies are demanded. Every handshake is
/// counted twice (our pre-check, then the session's own), hence the double.
pub(crate) const HANDSHAKE_RATE_LIMIT: u64 = 2 * 100;

/// Locks a mutex even if a worker panicked while holding it: the protected
/// data (a session, an address) stays usable, and refusing service would be
/// worse than continuing.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One peer as the workers see it. Immutable except for the session and the
/// current endpoint, which are shared with the replacement built by an
/// update, so a config change does not drop the session.
pub(crate) struct Peer {
    pub(crate) key: TunnelPublicKey,
    /// Upper 24 bits of our session indices; routes inbound packets here.
    pub(crate) index: u32,
    pub(crate) tunn: Arc<Mutex<Tunn>>,
    pub(crate) endpoint: Arc<Mutex<Option<SocketAddr>>>,
    pub(crate) config: PeerConfig,
}

impl Peer {
    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *lock(&self.endpoint)
    }
}

/// An immutable snapshot of the peers; replaced wholesale on every change.
#[derive(Default)]
pub(crate) struct PeerTable {
    pub(crate) by_key: HashMap<TunnelPublicKey, Arc<Peer>>,
    pub(crate) by_index: HashMap<u32, Arc<Peer>>,
    /// The one allowed-IPs table: outbound it picks the peer for a
    /// destination, inbound a source must map back to its sender.
    pub(crate) routes: AllowedIps<Arc<Peer>>,
}

impl PeerTable {
    pub(crate) fn build(peers: Vec<Arc<Peer>>) -> Self {
        let mut table = Self::default();
        for peer in peers {
            for net in &peer.config.allowed_ips {
                table.routes.insert(*net, Arc::clone(&peer));
            }
            table.by_index.insert(peer.index, Arc::clone(&peer));
            table.by_key.insert(peer.key, peer);
        }
        table
    }
}

/// Everything the workers of one interface share.
pub(crate) struct Device {
    pub(crate) ifname: String,
    pub(crate) tun: tun_rs::SyncDevice,
    pub(crate) udp: Udp,
    pub(crate) waker: Waker,
    pub(crate) static_private: StaticSecret,
    pub(crate) static_public: PublicKey,
    pub(crate) rate_limiter: Arc<RateLimiter>,
    table: RwLock<Arc<PeerTable>>,
    /// Decrypted packets dropped because their source routes to another peer.
    source_mismatch: AtomicU64,
    stopping: AtomicBool,
    gone: AtomicBool,
}

impl Device {
    pub(crate) fn new(
        ifname: String,
        tun: tun_rs::SyncDevice,
        udp: Udp,
        waker: Waker,
        static_private: StaticSecret,
    ) -> Self {
        let static_public = PublicKey::from(&static_private);
        let rate_limiter = Arc::new(RateLimiter::new(&static_public, HANDSHAKE_RATE_LIMIT));
        Self {
            ifname,
            tun,
            udp,
            waker,
            static_private,
            static_public,
            rate_limiter,
            table: RwLock::new(Arc::new(PeerTable::default())),
            source_mismatch: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            gone: AtomicBool::new(false),
        }
    }

    /// The current peer snapshot (one refcount bump; taken once per batch).
    pub(crate) fn table(&self) -> Arc<PeerTable> {
        Arc::clone(&self.table.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn replace_table(&self, table: PeerTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    pub(crate) fn count_source_mismatch(&self) {
        self.source_mismatch.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn source_mismatches(&self) -> u64 {
        self.source_mismatch.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Records that the interface vanished and stops every worker.
    pub(crate) fn mark_gone(&self) {
        if !self.gone.swap(true, Ordering::SeqCst) {
            tracing::warn!(ifname = %self.ifname, "tunnel interface is gone");
        }
        self.stop();
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}
