//! What a running backend reports.

use std::net::SocketAddr;
use std::time::Duration;

use rustynet_proto::TunnelPublicKey;

/// Which engine runs the tunnel and why it was chosen (shown by `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// Short engine name, e.g. `"userspace"` or `"kernel"`.
    pub engine: String,
    /// Why this engine was selected, e.g. the probe result that ruled out another.
    pub detail: String,
    /// Whether it discovers paths itself (relays, probes, `ping` on the
    /// path); without it peers are reached only at their endpoints.
    pub path_discovery: bool,
}

/// Counters of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// The UDP port actually bound (resolved when the config asked for 0).
    pub listen_port: u16,
    /// One entry per configured peer, sorted by key.
    pub peers: Vec<PeerStats>,
    /// Authenticated inbound packets dropped because their inner source
    /// address routes to a different peer than the one that sent them
    /// (cryptokey routing; a peer claiming another's address).
    pub rx_source_mismatch: u64,
    /// Relay connections.
    pub relays: Vec<crate::RelayStatus>,
    /// Path-probe counters.
    pub probes: crate::ProbeCounters,
    /// This node's public (mapped) addresses, as relays' binding service
    /// saw them: worth reporting as endpoints.
    pub mapped: Vec<std::net::SocketAddr>,
    /// Path changes (direct, relay, none) of the current peers by the
    /// reason of the change (`pong`, `trust_expired`, `relay_down`, ...),
    /// every reason listed (zeros included).
    pub path_switches: Vec<(&'static str, u64)>,
}

impl TunnelStats {
    /// The entry of one peer, if configured.
    pub fn peer(&self, key: &TunnelPublicKey) -> Option<&PeerStats> {
        self.peers.iter().find(|p| &p.public_key == key)
    }
}

/// Counters of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub public_key: TunnelPublicKey,
    /// Where packets go now: the configured endpoint, or the source of the
    /// peer's latest authenticated packet after roaming.
    pub endpoint: Option<SocketAddr>,
    /// Time since the last completed handshake; `None` if never.
    pub last_handshake: Option<Duration>,
    /// Plaintext bytes received from this peer.
    pub rx_bytes: u64,
    /// Plaintext bytes sent to this peer.
    pub tx_bytes: u64,
    /// The path its packets take.
    pub path: crate::PeerPath,
}
