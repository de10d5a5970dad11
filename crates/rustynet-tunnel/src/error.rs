//! Errors every backend reports in the same terms.

use ipnet::IpNet;
use rustynet_proto::TunnelPublicKey;

/// Why a backend call failed.
///
/// Three classes, so the daemon can decide without string matching:
/// - *rejected input* ([`TunnelError::is_invalid_input`]): nothing changed,
///   the caller must fix what it asked for;
/// - *recoverable* ([`TunnelError::is_recoverable`]): the backend lost its
///   interface or is not started; `stop` then `start` brings it back;
/// - *fatal* (neither): the environment cannot run this engine (no TUN device,
///   missing privilege, OS refusing the socket); retrying the same call will
///   not help.
///
/// No variant carries a private key.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// `start` was called while the interface is up.
    #[error("tunnel is already running")]
    AlreadyRunning,
    /// A peer or stats call was made before `start` (or after `stop`).
    #[error("tunnel is not running")]
    NotRunning,
    /// The interface disappeared under us (deleted externally, driver gone).
    #[error("tunnel interface {ifname} is gone")]
    InterfaceGone {
        /// The interface that vanished.
        ifname: String,
    },
    /// The interface name is not usable on this OS.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterfaceName {
        /// The refused name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The MTU is outside what the engine supports.
    #[error("invalid MTU {mtu} (allowed {min}..={max})")]
    InvalidMtu {
        /// The refused MTU.
        mtu: u16,
        /// Lowest accepted value.
        min: u16,
        /// Highest accepted value.
        max: u16,
    },
    /// The private key text could not be decoded (never echoed).
    #[error("invalid private key encoding")]
    InvalidPrivateKey,
    /// A peer public key is unusable (all-zero, low-order point, our own key).
    #[error("invalid peer key {key}: {reason}")]
    InvalidPeerKey {
        /// The refused key (public, safe to show).
        key: TunnelPublicKey,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The same peer key appears twice in one request.
    #[error("peer {key} listed more than once")]
    DuplicatePeer {
        /// The repeated key.
        key: TunnelPublicKey,
    },
    /// `add_peer` for a key that is already configured.
    #[error("peer {key} already exists")]
    PeerExists {
        /// The existing key.
        key: TunnelPublicKey,
    },
    /// `update_peer` / `remove_peer` for a key that is not configured.
    #[error("unknown peer {key}")]
    UnknownPeer {
        /// The missing key.
        key: TunnelPublicKey,
    },
    /// Two peers claim the same prefix, so cryptokey routing would be ambiguous.
    #[error("allowed IP {net} claimed by both {first} and {second}")]
    DuplicateAllowedIp {
        /// The contested prefix.
        net: IpNet,
        /// The peer that claimed it first.
        first: TunnelPublicKey,
        /// The peer that claimed it again.
        second: TunnelPublicKey,
    },
    /// An allowed-IP prefix is not canonical or otherwise unusable.
    #[error("invalid allowed IP {net}: {reason}")]
    InvalidAllowedIp {
        /// The refused prefix.
        net: IpNet,
        /// Why it was refused.
        reason: &'static str,
    },
    /// More peers (or prefixes per peer) than the backend accepts.
    #[error("too many {what}: {got} > {max}")]
    TooMany {
        /// What overflowed ("peers", "allowed IPs of one peer").
        what: &'static str,
        /// How many were asked for.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// The engine is not available on this host (module missing, no TUN).
    #[error("tunnel engine unavailable: {reason}")]
    Unavailable {
        /// Human-readable cause, for `info().detail` and logs.
        reason: String,
    },
    /// An OS call failed.
    #[error("{op} failed")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A failure injected by [`crate::FakeBackend`] for rollback tests.
    #[error("injected failure in {op}")]
    Injected {
        /// The call that was made to fail.
        op: &'static str,
    },
}

impl TunnelError {
    /// The request was refused before anything changed; fix the input.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Self::InvalidInterfaceName { .. }
                | Self::InvalidMtu { .. }
                | Self::InvalidPrivateKey
                | Self::InvalidPeerKey { .. }
                | Self::DuplicatePeer { .. }
                | Self::PeerExists { .. }
                | Self::UnknownPeer { .. }
                | Self::DuplicateAllowedIp { .. }
                | Self::InvalidAllowedIp { .. }
                | Self::TooMany { .. }
                | Self::AlreadyRunning
        )
    }

    /// `stop` followed by `start` with the same config is expected to recover.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Self::InterfaceGone { .. } | Self::NotRunning | Self::Injected { .. }
        )
    }

    /// Shorthand for an [`TunnelError::Io`] with context.
    pub fn io(op: &'static str, source: std::io::Error) -> Self {
        Self::Io { op, source }
    }
}
