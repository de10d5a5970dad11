//! How often one node's map stream may carry a new map: a token bucket of
//! [`BURST`] maps refilled at one per `min_map_interval`. A lone change
//! (an enrollment, a policy edit, a peer's new endpoint) reaches the node at
//! once, while a peer that keeps changing cannot make control sign maps for
//! this node faster than one per interval. Pure: the caller passes `now`.

use std::time::Duration;

use tokio::time::Instant;

/// Maps a node may receive back to back before the interval applies.
pub(super) const BURST: u32 = 2;

/// One stream's bucket.
#[derive(Debug, Clone)]
pub(super) struct MapPacer {
    interval: Duration,
    tokens: u32,
    /// When the bucket last gained a token (or was full).
    refilled_at: Instant,
}

impl MapPacer {
    /// A full bucket at `now`.
    pub(super) fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            tokens: BURST,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= BURST {
            self.refilled_at = now;
            return;
        }
        if self.interval.is_zero() {
            self.tokens = BURST;
            self.refilled_at = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = elapsed.as_nanos() / self.interval.as_nanos();
        let gained = u32::try_from(gained).unwrap_or(u32::MAX);
        if gained > 0 {
            self.tokens = self.tokens.saturating_add(gained).min(BURST);
            self.refilled_at = if self.tokens >= BURST {
                now
            } else {
                self.refilled_at + self.interval * gained
            };
        }
    }

    /// The earliest time (`>= now`) a map may be sent.
    pub(super) fn next_allowed(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens > 0 {
            now
        } else {
            (self.refilled_at + self.interval).max(now)
        }
    }

    /// Records a map sent at `now`.
    pub(super) fn sent(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_goes_at_once_then_one_per_interval() {
        let t0 = Instant::now();
        let mut p = MapPacer::new(SEC, t0);
        // The first map and one change right after it: both at once.
        assert_eq!(p.next_allowed(t0), t0);
        p.sent(t0);
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(p.next_allowed(t1), t1);
        p.sent(t1);
        // The bucket is empty: the next waits for the refill.
        let t2 = t0 + Duration::from_millis(60);
        assert_eq!(p.next_allowed(t2), t0 + SEC);
        p.sent(t0 + SEC);
        assert_eq!(p.next_allowed(t0 + SEC), t0 + 2 * SEC);
    }

    #[test]
    fn sustained_churn_gets_one_map_per_interval() {
        let t0 = Instant::now();
        let mut p = MapPacer::new(SEC, t0);
        let mut now = t0;
        let mut sent = 0;
        // A change every 50 ms for 10 s; a map whenever allowed.
        while now < t0 + 10 * SEC {
            if p.next_allowed(now) == now {
                p.sent(now);
                sent += 1;
            }
            now += Duration::from_millis(50);
        }
        assert!((10..=12).contains(&sent), "{sent} maps in 10 s");
    }

    #[test]
    fn a_quiet_node_gets_its_burst_back() {
        let t0 = Instant::now();
        let mut p = MapPacer::new(SEC, t0);
        p.sent(t0);
        p.sent(t0);
        let later = t0 + 5 * SEC;
        assert_eq!(p.next_allowed(later), later);
        p.sent(later);
        assert_eq!(p.next_allowed(later), later, "the burst refilled fully");
        p.sent(later);
        assert_eq!(p.next_allowed(later), later + SEC);
    }

    #[test]
    fn zero_interval_never_waits() {
        let t0 = Instant::now();
        let mut p = MapPacer::new(Duration::ZERO, t0);
        for _ in 0..10 {
            p.sent(t0);
            assert_eq!(p.next_allowed(t0), t0);
        }
    }
}
