//! Which control URL the node talks to next, and when: the failover
//! decisions of the control task, without any I/O.
//!
//! A node may be given several control URLs (`up --control A,B`): replicas
//! of one control server that share its database, CA and signing key, so a
//! map from any of them is verified the same way and generations are
//! comparable. The first URL is the preferred one.
//!
//! - When the open stream breaks, or an attempt fails (transport error,
//!   timeout, control answering with an error), that URL is held back for
//!   its own backoff (1 s doubling to 30 s, plus up to 25 % jitter so nodes
//!   do not return in lockstep) and the next URL in round-robin order whose
//!   hold has passed is tried at once; when every URL is held back, the one
//!   free soonest is tried when it is free. Killing one replica therefore
//!   moves its nodes to another without waiting.
//! - A stream control itself ended cleanly (a newer stream of the node took
//!   over, the replica shutting down in order) is no failure of the
//!   replica: the same URL is tried again after its hold, before any other
//!   (if the replica is going away, that attempt fails and the next URL
//!   follows at once).
//! - A stream that stayed up [`STABLE_AFTER`] proves its URL healthy: when
//!   it breaks, that URL's backoff starts again from 1 s. A replica that
//!   accepts streams and drops them at once keeps its growing backoff.
//! - While streaming from a fallback URL, the preferred one is tried again
//!   after [`RETURN_AFTER`] (and every [`RETURN_AFTER`] while it fails):
//!   operators list the replica nearest to the node first.
//!
//! Every input carries `now`; the task's shell owns the clock, the sockets
//! and the randomness (the jitter comes in as a number).

use std::time::{Duration, Instant};

/// First hold of a URL that failed.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest hold of one URL.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most this share of a hold (per mille) is added as jitter.
const JITTER_PERMILLE: u128 = 250;
/// A stream that lasted this long was healthy.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a fallback URL is used before the preferred one is tried again.
pub const RETURN_AFTER: Duration = Duration::from_secs(300);

/// The next connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Index of the URL (in the order given to `up`).
    pub url: usize,
    /// When to make it (`now` or earlier: at once).
    pub at: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct UrlState {
    /// Failures since the URL last proved healthy.
    failures: u32,
    /// Not tried again before this.
    held_until: Option<Instant>,
}

/// The failover state of one control task.
#[derive(Debug, Clone)]
pub struct Failover {
    urls: Vec<UrlState>,
    /// The URL tried last: round robin continues after it.
    last: usize,
    /// The URL whose stream is open, and since when.
    open: Option<(usize, Instant)>,
    /// The URL of the last stream that opened (a switch is counted when
    /// the next one opens elsewhere).
    last_open: Option<usize>,
    /// When to try the preferred URL again while on a fallback.
    return_at: Option<Instant>,
    /// Control ended this URL's stream cleanly: try it again first.
    again: Option<usize>,
    switches: u64,
}

impl Failover {
    /// The state for `count` URLs (at least one is assumed).
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        Self {
            urls: vec![UrlState::default(); count],
            // The first attempt goes to the preferred URL.
            last: count - 1,
            open: None,
            last_open: None,
            return_at: None,
            again: None,
            switches: 0,
        }
    }

    /// The next URL to open a stream to, and when: the first in round-robin
    /// order after the last one tried that is not held back (at `now`), or
    /// else the one free soonest.
    pub fn next_attempt(&self, now: Instant) -> Attempt {
        if let Some(url) = self.again {
            let at = self.urls[url].held_until.map_or(now, |t| t.max(now));
            return Attempt { url, at };
        }
        let n = self.urls.len();
        let order = (1..=n).map(|step| (self.last + step) % n);
        let mut soonest: Option<Attempt> = None;
        for url in order {
            let at = match self.urls[url].held_until {
                Some(t) if t > now => t,
                _ => return Attempt { url, at: now },
            };
            if soonest.is_none_or(|s| at < s.at) {
                soonest = Some(Attempt { url, at });
            }
        }
        soonest.unwrap_or(Attempt { url: 0, at: now })
    }

    /// A stream to `url` opened at `now`. True when this is a switch: the
    /// previous stream was to another URL.
    pub fn opened(&mut self, url: usize, now: Instant) -> bool {
        let url = url.min(self.urls.len() - 1);
        let switched = self.last_open.is_some_and(|prev| prev != url);
        if switched {
            self.switches += 1;
        }
        self.last = url;
        self.again = None;
        self.open = Some((url, now));
        self.last_open = Some(url);
        self.return_at = (url != 0).then(|| now + RETURN_AFTER);
        switched
    }

    /// An attempt on `url` failed, or its open stream broke, at `now`.
    /// `jitter` is a random number; the hold grows by up to a quarter with it.
    pub fn failed(&mut self, url: usize, now: Instant, jitter: u32) {
        let url = url.min(self.urls.len() - 1);
        if let Some((open, since)) = self.open
            && open == url
        {
            if now.saturating_duration_since(since) >= STABLE_AFTER {
                self.urls[url].failures = 0;
            }
            self.open = None;
            self.return_at = None;
        }
        let state = &mut self.urls[url];
        state.failures = state.failures.saturating_add(1);
        state.held_until = Some(now + hold(state.failures, jitter));
        self.last = url;
        self.again = None;
    }

    /// Control ended the open stream to `url` cleanly at `now`: the URL
    /// is tried again first, after its hold (which grows as after a
    /// failure unless the stream was stable).
    pub fn ended(&mut self, url: usize, now: Instant, jitter: u32) {
        self.failed(url, now, jitter);
        self.again = Some(url.min(self.urls.len() - 1));
    }

    /// When to try the preferred URL again: only while a stream to a
    /// fallback URL is open.
    pub fn return_due(&self) -> Option<Instant> {
        self.return_at
    }

    /// Trying the preferred URL again (at [`Failover::return_due`]) failed
    /// at `now`: the fallback stream stays, and the next try is one
    /// [`RETURN_AFTER`] (with jitter) later. The preferred URL's own
    /// backoff is left alone, so it is still tried first if the fallback
    /// breaks.
    pub fn return_failed(&mut self, now: Instant, jitter: u32) {
        if self.return_at.is_some() {
            self.return_at = Some(now + RETURN_AFTER + jitter_part(RETURN_AFTER, jitter));
        }
    }

    /// The URL whose stream is open.
    pub fn open_url(&self) -> Option<usize> {
        self.open.map(|(url, _)| url)
    }

    /// Switches from one URL to another so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }
}

/// The hold after the `failures`th failure in a row, with jitter.
fn hold(failures: u32, jitter: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF);
    base + jitter_part(base, jitter)
}

/// Up to [`JITTER_PERMILLE`] of `base`, scaled by `jitter` / 2^32.
fn jitter_part(base: Duration, jitter: u32) -> Duration {
    let nanos = (base.as_nanos() * JITTER_PERMILLE / 1000 * u128::from(jitter)) >> 32;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn clock() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_first_attempt_goes_to_the_preferred_url_at_once() {
        let t0 = clock();
        let f = Failover::new(3);
        assert_eq!(f.next_attempt(t0), Attempt { url: 0, at: t0 });
        // No URL at all is treated as one (never a panic).
        assert_eq!(Failover::new(0).next_attempt(t0).url, 0);
    }

    /// The replica a node streams from is killed: the next one is tried
    /// at once, not after a backoff, and the switch is counted.
    #[test]
    fn a_broken_stream_moves_to_the_next_url_at_once() {
        let t0 = clock();
        let mut f = Failover::new(2);
        assert!(!f.opened(1, t0), "the first stream is no switch");
        let t1 = t0 + 60 * S;
        f.failed(1, t1, 0);
        assert_eq!(f.open_url(), None);
        assert_eq!(f.next_attempt(t1), Attempt { url: 0, at: t1 });
        assert!(f.opened(0, t1));
        assert_eq!(f.switches(), 1);
        // Reopening on the same URL is no switch.
        f.failed(0, t1 + 20 * S, 0);
        f.failed(1, t1 + 20 * S, 0);
        assert!(!f.opened(0, t1 + 22 * S));
        assert_eq!(f.switches(), 1);
    }

    #[test]
    fn round_robin_continues_after_the_last_url_tried() {
        let t0 = clock();
        let mut f = Failover::new(3);
        f.failed(0, t0, 0);
        assert_eq!(f.next_attempt(t0).url, 1);
        f.failed(1, t0, 0);
        assert_eq!(f.next_attempt(t0).url, 2);
        f.failed(2, t0, 0);
        // All held: the one free soonest (the first to fail) at its time.
        assert_eq!(f.next_attempt(t0), Attempt { url: 0, at: t0 + S });
        // Once its hold passed it is tried again; the others are still held.
        assert_eq!(f.next_attempt(t0 + S), Attempt { url: 0, at: t0 + S });
    }

    #[test]
    fn each_url_backs_off_on_its_own_doubling_to_the_cap() {
        let t0 = clock();
        let mut f = Failover::new(2);
        let mut now = t0;
        let mut holds = vec![];
        for _ in 0..8 {
            f.failed(0, now, 0);
            let at = f.next_attempt(now);
            // URL 1 never failed: it is free at once.
            assert_eq!(at, Attempt { url: 1, at: now });
            holds.push(f.urls[0].held_until.unwrap() - now);
            now += 100 * S;
        }
        let secs: Vec<u64> = holds.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(f.urls[1].failures, 0);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        assert_eq!(hold(1, 0), S);
        let max = hold(1, u32::MAX);
        assert!(max > S && max < S + S / 4, "{max:?}");
        assert_eq!(hold(2, 1 << 31), 2 * S + S / 4);
        let capped = hold(40, u32::MAX);
        assert!(capped >= MAX_BACKOFF && capped < MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    /// A stream that stayed up proves the URL healthy: its next failure
    /// starts the backoff again. One dropped at once keeps it growing.
    #[test]
    fn only_a_stable_stream_resets_the_backoff() {
        let t0 = clock();
        let mut f = Failover::new(1);
        let mut now = t0;
        for _ in 0..3 {
            f.failed(0, now, 0);
            now += 60 * S;
        }
        assert_eq!(f.urls[0].failures, 3);
        // Accepted and dropped after 2 s: still a failure in a row.
        f.opened(0, now);
        f.failed(0, now + 2 * S, 0);
        assert_eq!(f.urls[0].failures, 4);
        assert_eq!(f.next_attempt(now + 2 * S).at, now + 2 * S + 8 * S);
        // Up for longer than STABLE_AFTER: back to the first hold.
        now += 60 * S;
        f.opened(0, now);
        f.failed(0, now + STABLE_AFTER, 0);
        assert_eq!(f.urls[0].failures, 1);
        assert_eq!(
            f.next_attempt(now + STABLE_AFTER).at,
            now + STABLE_AFTER + S
        );
    }

    /// On a fallback, the preferred URL is tried again after RETURN_AFTER;
    /// a failed try leaves the fallback stream and waits another period.
    #[test]
    fn the_preferred_url_is_tried_again_after_a_while_on_a_fallback() {
        let t0 = clock();
        let mut f = Failover::new(2);
        f.opened(0, t0);
        assert_eq!(f.return_due(), None, "already on the preferred URL");
        f.failed(0, t0 + 60 * S, 0);
        let t1 = t0 + 60 * S;
        let next = f.next_attempt(t1);
        assert_eq!(next.url, 1);
        assert!(f.opened(1, t1));
        assert_eq!(f.return_due(), Some(t1 + RETURN_AFTER));
        let t2 = t1 + RETURN_AFTER;
        f.return_failed(t2, 0);
        assert_eq!(f.return_due(), Some(t2 + RETURN_AFTER));
        assert_eq!(f.open_url(), Some(1), "the fallback stream stays");
        // The preferred URL answers: back to it, counted as a switch.
        let t3 = t2 + RETURN_AFTER;
        assert!(f.opened(0, t3));
        assert_eq!(f.return_due(), None);
        assert_eq!(f.switches(), 2);
        // A failed return try does not hold the preferred URL back: when
        // the fallback breaks, it is tried first.
        let mut g = Failover::new(2);
        g.failed(0, t0, 0);
        g.opened(1, t0 + 2 * S);
        g.return_failed(t0 + RETURN_AFTER, 0);
        g.failed(1, t0 + RETURN_AFTER + S, 0);
        assert_eq!(
            g.next_attempt(t0 + RETURN_AFTER + S),
            Attempt {
                url: 0,
                at: t0 + RETURN_AFTER + S
            }
        );
    }

    /// A failed return try while not on a fallback changes nothing.
    #[test]
    fn return_failed_without_a_fallback_is_ignored() {
        let t0 = clock();
        let mut f = Failover::new(2);
        f.return_failed(t0, 0);
        assert_eq!(f.return_due(), None);
        f.opened(0, t0);
        f.return_failed(t0, 0);
        assert_eq!(f.return_due(), None);
    }

    /// A failure of a URL other than the open one (a return try reported
    /// as a failure, say) does not close the open stream's bookkeeping.
    #[test]
    fn a_failure_elsewhere_keeps_the_open_stream() {
        let t0 = clock();
        let mut f = Failover::new(2);
        f.opened(1, t0);
        f.failed(0, t0 + S, 0);
        assert_eq!(f.open_url(), Some(1));
        assert!(f.return_due().is_some());
    }

    /// A stream control closed cleanly (another stream of the node took
    /// over) is retried on the same URL, not failed over; if that retry
    /// fails, the next URL follows at once.
    #[test]
    fn a_stream_control_ended_is_retried_on_the_same_url() {
        let t0 = clock();
        let mut f = Failover::new(2);
        f.opened(0, t0);
        f.ended(0, t0 + S, 0);
        assert_eq!(f.open_url(), None);
        assert_eq!(
            f.next_attempt(t0 + S),
            Attempt {
                url: 0,
                at: t0 + 2 * S
            }
        );
        assert!(!f.opened(0, t0 + 2 * S), "back on the same URL: no switch");
        // The replica went away after closing in order: the retry fails
        // and the other URL is next, at once.
        f.ended(0, t0 + 3 * S, 0);
        f.failed(0, t0 + 5 * S, 0);
        assert_eq!(
            f.next_attempt(t0 + 5 * S),
            Attempt {
                url: 1,
                at: t0 + 5 * S
            }
        );
        assert!(f.opened(1, t0 + 5 * S));
        assert_eq!(f.switches(), 1);
    }
}
