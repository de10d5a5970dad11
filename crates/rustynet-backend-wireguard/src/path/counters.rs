//! Node-wide probe counters: accepted probes and refusals by reason.
//!
//! Atomics so the receive thread can count without the per-peer lock (most
//! refusals happen before a peer is known). Per-peer send and path-change
//! counts live in each peer's [`super::outputs::PeerStats`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Why an incoming probe was dropped. Every refusal changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// Not a well-formed probe (length, version, header).
    Malformed,
    /// The sender's path key is not a configured peer's (no crypto was done).
    UnknownSender,
    /// The AEAD tag did not verify: forged, corrupted, or sealed under
    /// another key (the receiver cannot tell these apart).
    AuthFailed,
    /// Authentic, but its counter was already seen.
    Replayed,
    /// Authentic, but its counter is behind the replay window.
    TooOld,
    /// Authentic, but the plaintext does not parse (a buggy peer).
    BadBody,
}

/// Counts of probes received, by outcome.
#[derive(Debug, Default)]
pub(crate) struct ProbeCounters {
    accepted: AtomicU64,
    malformed: AtomicU64,
    unknown_sender: AtomicU64,
    auth_failed: AtomicU64,
    replayed: AtomicU64,
    too_old: AtomicU64,
    bad_body: AtomicU64,
}

/// A plain copy of [`ProbeCounters`] for status and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeCountersSnapshot {
    pub(crate) accepted: u64,
    pub(crate) malformed: u64,
    pub(crate) unknown_sender: u64,
    pub(crate) auth_failed: u64,
    pub(crate) replayed: u64,
    pub(crate) too_old: u64,
    pub(crate) bad_body: u64,
}

impl ProbeCountersSnapshot {
    #[cfg(test)]
    /// All refusals, whatever the reason.
    pub(crate) fn refused(&self) -> u64 {
        self.malformed
            + self.unknown_sender
            + self.auth_failed
            + self.replayed
            + self.too_old
            + self.bad_body
    }
}

impl ProbeCounters {
    /// Counts the outcome of one received probe.
    pub(crate) fn record<T>(&self, outcome: &Result<T, Refusal>) {
        let counter = match outcome {
            Ok(_) => &self.accepted,
            Err(Refusal::Malformed) => &self.malformed,
            Err(Refusal::UnknownSender) => &self.unknown_sender,
            Err(Refusal::AuthFailed) => &self.auth_failed,
            Err(Refusal::Replayed) => &self.replayed,
            Err(Refusal::TooOld) => &self.too_old,
            Err(Refusal::BadBody) => &self.bad_body,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub(crate) fn snapshot(&self) -> ProbeCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProbeCountersSnapshot {
            accepted: get(&self.accepted),
            malformed: get(&self.malformed),
            unknown_sender: get(&self.unknown_sender),
            auth_failed: get(&self.auth_failed),
            replayed: get(&self.replayed),
            too_old: get(&self.too_old),
            bad_body: get(&self.bad_body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_lands_in_its_own_counter() {
        let c = ProbeCounters::default();
        c.record::<()>(&Ok(()));
        for r in [
            Refusal::Malformed,
            Refusal::UnknownSender,
            Refusal::AuthFailed,
            Refusal::Replayed,
            Refusal::TooOld,
            Refusal::BadBody,
            Refusal::Replayed,
        ] {
            c.record::<()>(&Err(r));
        }
        let s = c.snapshot();
        assert_eq!(s.accepted, 1);
        assert_eq!(s.replayed, 2);
        assert_eq!((s.malformed, s.unknown_sender, s.auth_failed), (1, 1, 1));
        assert_eq!((s.too_old, s.bad_body), (1, 1));
        assert_eq!(s.refused(), 7);
    }
}
