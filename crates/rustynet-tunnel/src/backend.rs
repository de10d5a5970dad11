//! The trait the daemon drives.

use rustynet_proto::TunnelPublicKey;

use crate::{
    BackendInfo, InterfaceConfig, NetcheckDone, NetcheckReport, PathConfig, PeerConfig, PingDone,
    PingReport, TunnelError, TunnelStats,
};

/// One tunnel interface and its peers.
///
/// Methods are synchronous: the daemon calls them from its backend actor and
/// they may block briefly (netlink round trips, thread joins). Every mutating
/// call validates its whole input first: an `Err` that
/// [`TunnelError::is_invalid_input`] leaves the backend exactly as it was.
pub trait TunnelBackend: Send {
    /// Which engine this is and why it was chosen.
    fn info(&self) -> BackendInfo;

    /// Creates the interface, binds the UDP socket and brings the link up.
    /// Addresses and routes are not touched; the daemon assigns them elsewhere.
    fn start(&mut self, config: &InterfaceConfig) -> Result<(), TunnelError>;

    /// Declarative reconcile: afterwards exactly `peers` are configured.
    /// Missing peers are added, absent ones removed, changed ones updated;
    /// unchanged peers keep their sessions.
    fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError>;

    /// Adds one peer; refused if the key is already present.
    fn add_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError>;

    /// Replaces the config of an existing peer (endpoint, allowed IPs, keepalive).
    fn update_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError>;

    /// Removes one peer and drops its sessions.
    fn remove_peer(&mut self, key: &TunnelPublicKey) -> Result<(), TunnelError>;

    /// Current counters. Fails with [`TunnelError::InterfaceGone`] when the
    /// interface vanished under us.
    fn stats(&self) -> Result<TunnelStats, TunnelError>;

    /// Removes the interface and releases every resource. Idempotent.
    fn stop(&mut self) -> Result<(), TunnelError>;

    /// Whether the interface exists and the engine is serving it.
    fn is_running(&self) -> bool;

    /// Relays, this node's path secret and relay login. An engine without
    /// path discovery ignores it and keeps reaching peers only at their
    /// configured endpoints (its `info()` says so).
    fn set_paths(&mut self, config: &PathConfig) -> Result<(), TunnelError> {
        let _ = config;
        Ok(())
    }

    /// Checks UDP reachability, this node's mapped addresses and the relays'
    /// round trips, then calls `done` (within about two seconds).
    fn netcheck(&self, done: NetcheckDone) {
        done(NetcheckReport::default());
    }

    /// Sends one path ping to `peer` on the path its packets take now and
    /// calls `done` with the path the answer came back on.
    fn ping(&self, peer: &TunnelPublicKey, done: PingDone) {
        let _ = peer;
        done(PingReport {
            path: crate::PathKind::None,
            via: None,
            rtt: None,
        });
    }
}

impl<T: TunnelBackend + ?Sized> TunnelBackend for Box<T> {
    fn info(&self) -> BackendInfo {
        (**self).info()
    }
    fn start(&mut self, config: &InterfaceConfig) -> Result<(), TunnelError> {
        (**self).start(config)
    }
    fn set_peers(&mut self, peers: &[PeerConfig]) -> Result<(), TunnelError> {
        (**self).set_peers(peers)
    }
    fn add_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        (**self).add_peer(peer)
    }
    fn update_peer(&mut self, peer: &PeerConfig) -> Result<(), TunnelError> {
        (**self).update_peer(peer)
    }
    fn remove_peer(&mut self, key: &TunnelPublicKey) -> Result<(), TunnelError> {
        (**self).remove_peer(key)
    }
    fn stats(&self) -> Result<TunnelStats, TunnelError> {
        (**self).stats()
    }
    fn stop(&mut self) -> Result<(), TunnelError> {
        (**self).stop()
    }
    fn is_running(&self) -> bool {
        (**self).is_running()
    }
    fn set_paths(&mut self, config: &PathConfig) -> Result<(), TunnelError> {
        (**self).set_paths(config)
    }
    fn netcheck(&self, done: NetcheckDone) {
        (**self).netcheck(done)
    }
    fn ping(&self, peer: &TunnelPublicKey, done: PingDone) {
        (**self).ping(peer, done)
    }
}
