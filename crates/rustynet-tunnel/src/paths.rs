//! Reaching peers beyond a fixed endpoint: relays, path probes, the path
//! each peer's packets take, and what `netcheck` and `ping` report.
//!
//! An engine that can (the userspace one) keeps a connection to every relay,
//! discovers its own public endpoints, probes peers' candidate addresses and
//! decides per packet whether a peer's traffic goes direct, through a relay,
//! or both while a direct path is in doubt. An engine that cannot (the kernel
//! one) keeps the default methods here: it reaches peers only directly and
//! says so.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::{PathPublicKey, SignedEnvelope};
use zeroize::Zeroizing;

/// This node's path secret (X25519 scalar): its public half is what peers'
/// maps carry as this node's path key. Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PathSecret(Zeroizing<[u8; 32]>);

impl PathSecret {
    /// Wraps the 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes (for the engine that uses them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A node's path secret, derived from its signing key's seed: no second
    /// secret to store or lose, and a node that enrolls again with new keys
    /// gets a new one. The derivation is one-way, so the path secret reveals
    /// nothing about the signing key.
    pub fn derive(signing_seed: &[u8; 32]) -> Self {
        Self::from_bytes(blake3::derive_key(
            "rustynet path key v1 (x25519 secret from signing seed)",
            signing_seed,
        ))
    }

    /// The public half, as peers' maps carry it.
    pub fn public_key(&self) -> PathPublicKey {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        PathPublicKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

impl fmt::Debug for PathSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PathSecret([redacted])")
    }
}

/// What logging in to a relay takes: the ticket control issued and the
/// node's signing key seed (the ticket's login key).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayLogin {
    /// The signed relay ticket.
    pub ticket: SignedEnvelope,
    /// Seed of the node's signing key.
    pub login_seed: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for RelayLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayLogin")
            .field("ticket_bytes", &self.ticket.body.get().len())
            .field("login_seed", &"[redacted]")
            .finish()
    }
}

/// How the engine reaches peers beyond direct UDP. Applied with
/// [`crate::TunnelBackend::set_paths`]; applying the same config again
/// changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    /// This node's path secret.
    pub secret: PathSecret,
    /// Relays to keep a connection to (from the signed map).
    pub relays: Vec<RelayInfo>,
    /// Relay login; without one no relay connection is made.
    pub login: Option<RelayLogin>,
}

/// Which way a peer's packets go now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathKind {
    /// Straight UDP to a tested address.
    Direct,
    /// Through a relay (possibly also on a direct address still in doubt).
    Relay,
    /// No way to reach the peer.
    #[default]
    None,
}

impl PathKind {
    /// `direct`, `relay` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
            PathKind::None => "none",
        }
    }
}

/// A peer's path as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPath {
    /// Direct, relay or none.
    pub kind: PathKind,
    /// The direct address in use (or still tried alongside the relay).
    pub addr: Option<SocketAddr>,
    /// The relay in use, by name.
    pub relay: Option<String>,
    /// How long the peer has been on this path.
    pub since: Duration,
    /// Why it last changed (`pong`, `trust_expired`, `network_changed`, ...).
    pub reason: String,
    /// Round trip of the last answered probe on the direct address.
    pub rtt: Option<Duration>,
    /// How many times the path kind changed since the peer was configured.
    pub changes: u64,
    /// Bytes sent and received directly (encrypted, on the wire).
    pub direct_tx: u64,
    /// See `direct_tx`.
    pub direct_rx: u64,
    /// Bytes sent and received through relays.
    pub relay_tx: u64,
    /// See `relay_tx`.
    pub relay_rx: u64,
}

/// One relay connection's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// The relay's name.
    pub name: String,
    /// Logged in and usable.
    pub connected: bool,
    /// Round trip of its keepalive.
    pub rtt: Option<Duration>,
    /// Why it is down, if it is.
    pub error: Option<String>,
    /// This node's home relay (the one its peers are told to use).
    pub home: bool,
    /// UDP relay mode works (the relay echoes this node's UDP hellos); bulk
    /// traffic then goes over UDP instead of TLS.
    pub udp: bool,
}

/// Path-probe counters since the engine started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// Probes that authenticated and were fresh.
    pub accepted: u64,
    /// Refused: the sender's path key belongs to no peer.
    pub unknown_sender: u64,
    /// Refused: authentication failed (forged, or another key).
    pub bad_auth: u64,
    /// Refused: replayed or too old.
    pub replayed: u64,
    /// Refused: malformed.
    pub malformed: u64,
    /// Path changes of all peers.
    pub path_changes: u64,
}

/// What `netcheck` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetcheckReport {
    /// Whether the engine can discover paths at all (the kernel engine
    /// cannot).
    pub supported: bool,
    /// At least one binding request was answered: UDP leaves this host.
    pub udp: bool,
    /// Per binding address asked: the address this node was seen from.
    pub mapped: Vec<MappedAddr>,
    /// Whether the mapping depends on the destination (`None` with fewer
    /// than two answers from different addresses).
    pub mapping_varies: Option<bool>,
    /// Relay round trips.
    pub relays: Vec<(String, Option<Duration>)>,
    /// The relay with the lowest round trip.
    pub preferred_relay: Option<String>,
    /// How long the check took.
    pub took: Duration,
}

/// One binding answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedAddr {
    /// The binding address asked.
    pub server: SocketAddr,
    /// This node's address as that server saw it.
    pub mapped: SocketAddr,
    /// Round trip.
    pub rtt: Duration,
}

/// One answered (or unanswered) path ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReport {
    /// The path the answer came back on.
    pub path: PathKind,
    /// `198.51.100.7:41641` or the relay's name.
    pub via: Option<String>,
    /// Round trip; `None` when no answer came.
    pub rtt: Option<Duration>,
}

/// Called once with the result, on an engine thread.
pub type NetcheckDone = Box<dyn FnOnce(NetcheckReport) + Send>;
/// Called once with the result, on an engine thread.
pub type PingDone = Box<dyn FnOnce(PingReport) + Send>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_secret_derivation_is_stable_and_distinct() {
        let a = PathSecret::derive(&[7; 32]);
        assert_eq!(a, PathSecret::derive(&[7; 32]));
        assert_ne!(a, PathSecret::derive(&[8; 32]));
        assert_ne!(a.as_bytes(), &[7; 32], "not the seed itself");
        assert_eq!(a.public_key(), PathSecret::derive(&[7; 32]).public_key());
        assert!(
            !format!("{a:?}").contains('7'),
            "Debug must not reveal the secret"
        );
    }
}
