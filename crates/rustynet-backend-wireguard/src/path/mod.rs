//! Path selection for the userspace engine: authenticated path probes and a
//! per-peer state machine choosing between a direct address and the relay.
//!
//! Pure and sans-IO: no sockets, threads or clocks in here. Every input
//! carries `now`; outputs (probes to send, events, the next deadline) are
//! polled; the data path only reads the published [`Route`]. The engine's
//! threads are the I/O shell:
//!
//! - Peer table build: [`PathSecret`] (ours) + each peer's
//!   [`PathPublicKey`] → [`ProbeKey::new`] (the only key agreement), and a
//!   [`PathPeer`] per peer; a map from path key to peer.
//! - Receive: [`is_probe`] on the first byte; [`sender_of`] (no crypto) →
//!   map lookup (unknown: refuse) → [`ProbeKey::open`] → record in
//!   [`ProbeCounters`] → [`PathPeer::handle_probe`]. Authenticated tunnel
//!   packets → [`PathPeer::note_rx`].
//! - Timers: [`PathPeer::note_tx`] with the last data transmission, then
//!   [`PathPeer::handle_timeout`] at [`PathPeer::poll_timeout`].
//! - After any input: drain [`PathPeer::poll_transmit`] (seal with
//!   [`ProbeKey::seal`], send direct or through the relay),
//!   [`PathPeer::poll_event`], and publish [`PathPeer::route`].
//!
//! What the shell must get right (the simulation's node shell does each):
//! - `note_tx` gets the last *data* transmission; tunnel keepalives and
//!   handshakes must not count, or every peer looks active.
//! - A route of `Both` sends every packet (handshakes too) twice: to the
//!   address and through the relay. `None` drops.
//! - On an [`Event::Route`] with [`Reason::TrustExpired`], run endpoint
//!   discovery again at once (rate-limited): when both sides sit behind
//!   NAT, a rebound mapping is only found through a fresh mapped address.
//!   [`Event::Observed`] is the peer's view of our address: feed it there.
//! - Paths change without touching the tunnel session: no new handshake.
//! - A probe that came through the relay should also come from the node
//!   the relay says sent it (defence in depth; the AEAD already binds the
//!   pair of path keys).
//! - Peers without a path key (older nodes) get a machine built with
//!   `relay_up = false` forever: today's endpoint/roaming behaviour.
//!
//! `sim` (tests only) runs all of it on simulated networks, NATs and a relay
//! and measures the timing goals of issue 9.

mod candidates;
mod counters;
mod keys;
mod outputs;
mod peer;
mod probe;
mod replay;
mod timing;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod test_rng;

pub(crate) use counters::{ProbeCounters, Refusal};
pub(crate) use keys::{PathPublicKey, PathSecret};
pub(crate) use outputs::{Event, PathKind, Reason, Route, Via};
pub(crate) use peer::PathPeer;
pub(crate) use probe::TxId;
pub(crate) use probe::{ProbeKey, is_probe, sender_of};
pub(crate) use timing::Timing;

/// Errors from path keys and probe sealing. Received probes never produce
/// these: they are refused with a [`Refusal`] instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathError {
    /// The peer's path key is our own.
    #[error("the peer's path key is our own")]
    OwnKey,
    /// The peer's path key is a low-order point: anyone could compute the
    /// shared secret.
    #[error("the peer's path key is a low-order point")]
    LowOrderKey,
    /// A call-me-maybe may carry at most 16 candidates.
    #[error("call-me-maybe with {0} candidates (at most 16)")]
    TooManyCandidates(usize),
    /// The AEAD refused to seal (cannot happen for probe sizes).
    #[error("sealing a probe failed")]
    Seal,
}
