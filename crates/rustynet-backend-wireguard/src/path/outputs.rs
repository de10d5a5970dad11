//! What the path machine tells the shell: routes, probes to send, events,
//! counters and status.

use std::net::SocketAddr;
use std::time::Duration;

use super::probe::{Message, TxId};

/// Which way a probe (or data) travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Via {
    /// Straight to this UDP address from the tunnel socket.
    Direct(SocketAddr),
    /// Through the relay connection.
    Relay,
}

/// Where the data path sends the peer's packets now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Route {
    /// Nowhere: no relay and no address (packets are dropped).
    None,
    /// To this address only.
    Direct(SocketAddr),
    /// To this address and through the relay (the tunnel's replay window
    /// drops whichever copy arrives second).
    Both(SocketAddr),
    /// Through the relay only.
    Relay,
}

/// The path as status reports it (`peers[].path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PathKind {
    /// Traffic relies on a direct address.
    Direct,
    /// Traffic relies on the relay (also while mirrored onto a failing
    /// direct address).
    Relay,
    /// No path.
    None,
}

impl PathKind {
    /// The status word: `direct`, `relay` or `none`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "relay",
            Self::None => "none",
        }
    }
}

/// Why the route changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// Pongs proved an address (or re-confirmed the current one).
    Pong,
    /// A proven address beat the current one (lower RTT, or the current
    /// one stopped answering while the new one did: the peer roamed).
    BetterPath,
    /// No pong within the trust window.
    TrustExpired,
    /// The direct address stayed silent through the hold: relay only.
    DirectLost,
    /// Our own addresses changed.
    NetworkChanged,
    /// The relay connection came up.
    RelayUp,
    /// The relay connection went down.
    RelayDown,
    /// The netmap's candidates changed.
    CandidatesChanged,
    /// An authenticated tunnel packet came from a new address.
    PeerRoamed,
    /// The peer became active with a path not confirmed recently.
    Reactivated,
}

impl Reason {
    /// Every reason, in [`Reason::index`] order.
    pub(crate) const ALL: [Reason; 10] = [
        Self::Pong,
        Self::BetterPath,
        Self::TrustExpired,
        Self::DirectLost,
        Self::NetworkChanged,
        Self::RelayUp,
        Self::RelayDown,
        Self::CandidatesChanged,
        Self::PeerRoamed,
        Self::Reactivated,
    ];

    /// Position in [`Reason::ALL`] (and in [`PeerStats::switches`]).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A metric label / status word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pong => "pong",
            Self::BetterPath => "better_path",
            Self::TrustExpired => "trust_expired",
            Self::DirectLost => "direct_lost",
            Self::NetworkChanged => "network_changed",
            Self::RelayUp => "relay_up",
            Self::RelayDown => "relay_down",
            Self::CandidatesChanged => "candidates_changed",
            Self::PeerRoamed => "peer_roamed",
            Self::Reactivated => "reactivated",
        }
    }
}

/// A probe for the shell to seal and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// Where to send it.
    pub(crate) via: Via,
    /// What to seal.
    pub(crate) msg: Message,
}

/// Something for status, metrics or a waiting CLI ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The route changed.
    Route {
        /// The new route.
        route: Route,
        /// Its status kind.
        kind: PathKind,
        /// Why.
        reason: Reason,
        /// The route before.
        previous: Route,
        /// How long the previous route was used.
        previous_for: Duration,
    },
    /// A pong answered one of our pings.
    Pong {
        /// The path it proved.
        via: Via,
        /// Round-trip time.
        rtt: Duration,
        /// The answered ping's txid.
        txid: TxId,
    },
    /// The peer saw our ping come from this address (our address as the
    /// outside world sees it: input for endpoint discovery).
    Observed(SocketAddr),
}

/// Per-peer counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerStats {
    pub(crate) pings_sent: u64,
    pub(crate) pongs_sent: u64,
    pub(crate) call_me_sent: u64,
    pub(crate) pings_received: u64,
    pub(crate) pongs_received: u64,
    /// Pongs that answered no ping of ours, or came from another address.
    pub(crate) pongs_unmatched: u64,
    pub(crate) call_me_received: u64,
    /// Call-me-maybe dropped for coming too soon after the previous one.
    pub(crate) call_me_ignored: u64,
    /// Every route change.
    pub(crate) route_changes: u64,
    /// Path kind changes (direct/relay/none), by [`Reason::index`].
    pub(crate) switches: [u64; Reason::ALL.len()],
    /// Candidate hints refused (unusable address or set full).
    pub(crate) candidates_refused: u64,
    /// Probes dropped because the transmit queue was full.
    pub(crate) transmit_drops: u64,
}

/// What status shows for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathStatus {
    pub(crate) kind: PathKind,
    pub(crate) route: Route,
    /// Time on the current kind.
    pub(crate) kind_for: Duration,
    /// Why the last route change happened.
    pub(crate) last_reason: Option<Reason>,
    /// Smoothed RTT of the direct address in use.
    pub(crate) rtt: Option<Duration>,
    /// RTT of the last ping answered through the relay.
    pub(crate) relay_rtt: Option<Duration>,
    pub(crate) active: bool,
}
