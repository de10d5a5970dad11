//! Counters the server keeps; the daemon exports them with its metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the server's counters (monotonic since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsMetrics {
    /// Packets (UDP) and messages (TCP) received.
    pub queries: u64,
    /// Answered from the Magic DNS or reverse zone (records, NODATA, NXDOMAIN).
    pub answered_local: u64,
    /// Queries sent to an upstream resolver.
    pub forwarded: u64,
    /// SERVFAIL responses sent (fail closed, upstream failure, overload).
    pub servfail: u64,
    /// Queries refused by the source-address check.
    pub refused: u64,
    /// FORMERR/NOTIMP/BADVERS answers plus packets dropped as garbage or responses.
    pub malformed: u64,
    /// Forwarded queries for which no upstream gave a valid answer in time.
    pub upstream_failures: u64,
    /// Forwarded queries turned away because the in-flight cap was reached.
    pub busy: u64,
    /// TCP connections closed at accept because the connection cap was reached.
    pub tcp_rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) queries: AtomicU64,
    pub(crate) answered_local: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) servfail: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) tcp_rejected: AtomicU64,
}

/// Adds one to a counter. Relaxed: counters are independent statistics.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DnsMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsMetrics {
            queries: get(&self.queries),
            answered_local: get(&self.answered_local),
            forwarded: get(&self.forwarded),
            servfail: get(&self.servfail),
            refused: get(&self.refused),
            malformed: get(&self.malformed),
            upstream_failures: get(&self.upstream_failures),
            busy: get(&self.busy),
            tcp_rejected: get(&self.tcp_rejected),
        }
    }
}
