//! A token bucket over bytes, refilled continuously from the input clock.

use std::time::Instant;

/// Allows `rate` bytes per second on average with bursts up to `burst`.
/// A rate of 0 means no limit.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: u64, burst: u64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `bytes` if available at `now`; false (and nothing taken) if not.
    pub(crate) fn take(&mut self, bytes: u64, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let refill = elapsed.as_nanos().saturating_mul(u128::from(self.rate)) / 1_000_000_000;
        if refill > 0 {
            let refill = u64::try_from(refill).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(refill).min(self.burst);
            self.last = now;
        }
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 3000, t0);
        assert!(b.take(3000, t0));
        assert!(!b.take(1, t0));
        // 0.5 s later: 500 bytes.
        let t1 = t0 + Duration::from_millis(500);
        assert!(!b.take(501, t1));
        assert!(b.take(500, t1));
        // Never more than the burst after a long pause.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(!b.take(3001, t2));
        assert!(b.take(3000, t2));
    }

    #[test]
    fn small_steps_are_not_lost_to_rounding() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0);
        assert!(b.take(1000, t0));
        // 1000 steps of 1 ms each add up to a full second.
        let mut t = t0;
        let mut got = 0;
        for _ in 0..1000 {
            t += Duration::from_millis(1);
            if b.take(1, t) {
                got += 1;
            }
        }
        assert_eq!(got, 1000);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert!(b.take(u64::MAX, t0));
    }
}
