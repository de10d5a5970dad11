//! A peer's candidate direct addresses and what we know of each.
//!
//! Bounded: at most [`MAX_CANDIDATES`]. When full, a new address evicts the
//! least useful one (never the address traffic uses or last used; netmap
//! addresses only for other netmap addresses; unproven before proven;
//! oldest hint first).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most candidates kept per peer.
pub(crate) const MAX_CANDIDATES: usize = 16;

/// Where we heard of an address. A candidate may have several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The signed netmap (the peer's published endpoints).
    Config = 1,
    /// The peer's call-me-maybe.
    CallMeMaybe = 2,
    /// The source of an authenticated ping.
    Ping = 4,
    /// The source of an authenticated tunnel packet.
    Tunnel = 8,
}

/// One candidate address.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) addr: SocketAddr,
    sources: u8,
    /// When we last heard of it (added or hinted again).
    pub(crate) hinted_at: Instant,
    pub(crate) last_ping: Option<Instant>,
    /// Pings sent since the last pong (drives the backoff).
    pub(crate) unanswered: u8,
    pub(crate) last_pong: Option<Instant>,
    /// Smoothed round-trip time (7/8 old + 1/8 new).
    pub(crate) rtt: Option<Duration>,
    /// Consecutive answered pings.
    pub(crate) streak: u8,
    /// Ping at the next opportunity, whatever the schedule says.
    pub(crate) ping_now: bool,
}

impl Candidate {
    fn new(addr: SocketAddr, source: Source, now: Instant) -> Self {
        Self {
            addr,
            sources: source as u8,
            hinted_at: now,
            last_ping: None,
            unanswered: 0,
            last_pong: None,
            rtt: None,
            streak: 0,
            ping_now: true,
        }
    }

    pub(crate) fn has(&self, source: Source) -> bool {
        self.sources & source as u8 != 0
    }

    /// Answered within `memory` of `now`.
    pub(crate) fn proven(&self, now: Instant, memory: Duration) -> bool {
        self.last_pong
            .is_some_and(|p| now.saturating_duration_since(p) < memory)
    }

    /// Records a pong: one more in the streak, backoff reset, RTT smoothed.
    pub(crate) fn answered(&mut self, now: Instant, rtt: Duration) {
        self.streak = self.streak.saturating_add(1);
        self.unanswered = 0;
        self.last_pong = Some(now);
        self.rtt = Some(match self.rtt {
            Some(old) => (old * 7 + rtt) / 8,
            None => rtt,
        });
    }
}

/// What [`CandidateSet::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new candidate (possibly evicting another).
    New,
    /// Already known: hint time and source refreshed.
    Known,
    /// Not a usable unicast address.
    Invalid,
    /// Full of candidates it may not evict.
    Full,
}

/// The canonical form of a usable unicast address, or `None`.
pub(crate) fn usable(addr: SocketAddr) -> Option<SocketAddr> {
    let ip = addr.ip().to_canonical();
    let bad = ip.is_unspecified()
        || ip.is_multicast()
        || addr.port() == 0
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    (!bad).then(|| SocketAddr::new(ip, addr.port()))
}

/// The bounded candidate list.
#[derive(Debug, Default)]
pub(crate) struct CandidateSet {
    list: Vec<Candidate>,
}

impl CandidateSet {
    pub(crate) fn get(&self, addr: SocketAddr) -> Option<&Candidate> {
        self.list.iter().find(|c| c.addr == addr)
    }

    pub(crate) fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut Candidate> {
        self.list.iter_mut().find(|c| c.addr == addr)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.list.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Candidate> {
        self.list.iter_mut()
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Adds or refreshes `addr`. `keep` lists addresses that must not be
    /// evicted (the current and last trusted ones).
    pub(crate) fn add(
        &mut self,
        addr: SocketAddr,
        source: Source,
        now: Instant,
        keep: &[SocketAddr],
    ) -> Added {
        let Some(addr) = usable(addr) else {
            return Added::Invalid;
        };
        if let Some(c) = self.get_mut(addr) {
            c.sources |= source as u8;
            c.hinted_at = now;
            return Added::Known;
        }
        if self.list.len() >= MAX_CANDIDATES {
            let Some(victim) = self.victim(source, keep) else {
                return Added::Full;
            };
            self.list.swap_remove(victim);
        }
        self.list.push(Candidate::new(addr, source, now));
        Added::New
    }

    /// The least useful candidate that a `source` hint may evict.
    fn victim(&self, source: Source, keep: &[SocketAddr]) -> Option<usize> {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, c)| !keep.contains(&c.addr))
            .filter(|(_, c)| source == Source::Config || !c.has(Source::Config))
            .min_by_key(|(_, c)| (c.has(Source::Config), c.last_pong.is_some(), c.hinted_at))
            .map(|(i, _)| i)
    }

    /// Makes `addrs` the netmap's candidates: adds new ones, and drops the
    /// netmap source from others (removing those left with no source unless
    /// in `keep`). Returns the addresses newly added.
    pub(crate) fn set_config(
        &mut self,
        addrs: &[SocketAddr],
        now: Instant,
        keep: &[SocketAddr],
    ) -> Vec<SocketAddr> {
        let wanted: Vec<SocketAddr> = addrs.iter().filter_map(|a| usable(*a)).collect();
        for c in &mut self.list {
            if !wanted.contains(&c.addr) {
                c.sources &= !(Source::Config as u8);
            }
        }
        self.list
            .retain(|c| c.sources != 0 || keep.contains(&c.addr));
        let mut added = Vec::new();
        for a in wanted {
            if self.add(a, Source::Config, now, keep) == Added::New {
                added.push(a);
            }
        }
        added
    }

    /// Drops unconfirmed, non-netmap candidates not heard of for `ttl`.
    pub(crate) fn prune(&mut self, now: Instant, ttl: Duration, keep: &[SocketAddr]) {
        self.list.retain(|c| {
            keep.contains(&c.addr)
                || c.has(Source::Config)
                || now.saturating_duration_since(c.hinted_at) < ttl
                || c.last_pong
                    .is_some_and(|p| now.saturating_duration_since(p) < ttl)
        });
    }

    /// The first netmap candidate (what a relay-less network uses before
    /// anything answered: today's configured endpoint).
    pub(crate) fn first_config(&self) -> Option<SocketAddr> {
        self.list
            .iter()
            .find(|c| c.has(Source::Config))
            .map(|c| c.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 1000 + i))
    }

    #[test]
    fn unusable_addresses_are_refused_and_mapped_ones_canonicalised() {
        let now = Instant::now();
        let mut s = CandidateSet::default();
        for bad in [
            "0.0.0.0:1",
            "192.0.2.1:0",
            "224.0.0.1:5",
            "255.255.255.255:5",
            "[::]:5",
        ] {
            let addr: SocketAddr = bad.parse().expect("addr");
            assert_eq!(s.add(addr, Source::Ping, now, &[]), Added::Invalid, "{bad}");
        }
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:1001".parse().expect("addr");
        assert_eq!(s.add(mapped, Source::Ping, now, &[]), Added::New);
        assert!(s.get(a(1)).is_some());
        assert_eq!(s.add(a(1), Source::Tunnel, now, &[]), Added::Known);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_full_set_evicts_the_least_useful_and_never_a_kept_or_netmap_one() {
        let t0 = Instant::now();
        let mut s = CandidateSet::default();
        s.add(a(0), Source::Config, t0, &[]);
        for i in 1..MAX_CANDIDATES as u16 {
            s.add(
                a(i),
                Source::CallMeMaybe,
                t0 + Duration::from_secs(u64::from(i)),
                &[],
            );
        }
        // a(1) is the oldest hint but answered; a(2) is next and did not.
        if let Some(c) = s.get_mut(a(1)) {
            c.answered(t0, Duration::from_millis(5));
        }
        let keep = [a(3)];
        let later = t0 + Duration::from_secs(100);
        assert_eq!(s.add(a(100), Source::Ping, later, &keep), Added::New);
        assert!(s.get(a(2)).is_none(), "oldest unproven evicted");
        assert!(s.get(a(1)).is_some() && s.get(a(0)).is_some());
        assert_eq!(s.len(), MAX_CANDIDATES);
    }

    #[test]
    fn hints_cannot_evict_netmap_addresses() {
        let t0 = Instant::now();
        let mut s = CandidateSet::default();
        for i in 0..MAX_CANDIDATES as u16 {
            s.add(a(i), Source::Config, t0, &[]);
        }
        assert_eq!(s.add(a(99), Source::CallMeMaybe, t0, &[]), Added::Full);
        assert_eq!(s.add(a(99), Source::Config, t0, &[]), Added::New);
    }

    #[test]
    fn set_config_replaces_netmap_addresses_but_keeps_other_sources() {
        let t0 = Instant::now();
        let mut s = CandidateSet::default();
        s.set_config(&[a(1), a(2)], t0, &[]);
        s.add(a(2), Source::Tunnel, t0, &[]);
        let added = s.set_config(&[a(3)], t0, &[a(1)]);
        assert_eq!(added, vec![a(3)]);
        assert!(s.get(a(1)).is_some(), "kept: in use");
        assert!(
            s.get(a(2))
                .is_some_and(|c| !c.has(Source::Config) && c.has(Source::Tunnel))
        );
        assert_eq!(s.first_config(), Some(a(3)));
    }

    #[test]
    fn prune_drops_only_stale_unconfirmed_hints() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut s = CandidateSet::default();
        s.add(a(1), Source::CallMeMaybe, t0, &[]);
        s.add(a(2), Source::Config, t0, &[]);
        s.add(a(3), Source::Ping, t0, &[]);
        s.add(a(4), Source::Ping, t0, &[]);
        if let Some(c) = s.get_mut(a(3)) {
            c.answered(t0 + Duration::from_secs(30), Duration::from_millis(1));
        }
        s.prune(t0 + Duration::from_secs(61), ttl, &[a(4)]);
        assert!(s.get(a(1)).is_none());
        assert!(s.get(a(2)).is_some() && s.get(a(3)).is_some() && s.get(a(4)).is_some());
    }
}
