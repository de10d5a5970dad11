//! Token buckets per key (a request source, a node), sans-IO: every call
//! takes `now`, so the tests run on a made-up clock.
//!
//! The table of keys is bounded. When it is full, keys whose buckets have
//! refilled (idle ones) are forgotten; if none has, newcomers share one
//! overflow bucket, so an attacker with many addresses slows only other
//! newcomers during a flood and never grows the table.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A rate: up to `burst` at once, one more each `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Bucket size.
    pub burst: u32,
    /// Time to earn one token back.
    pub every: Duration,
}

impl Rate {
    /// Thousandths of a token earned in `elapsed`, and the time they took
    /// (at most `elapsed`: the remainder counts towards the next one).
    fn earned(self, elapsed: Duration) -> (u64, Duration) {
        let every = self.every.as_nanos().max(1);
        let milli = elapsed.as_nanos().saturating_mul(u128::from(TOKEN)) / every;
        let took = milli.saturating_mul(every) / u128::from(TOKEN);
        (
            u64::try_from(milli).unwrap_or(u64::MAX),
            Duration::from_nanos(u64::try_from(took).unwrap_or(u64::MAX)),
        )
    }
}

/// One token, in the buckets' unit (a thousandth of a token).
const TOKEN: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli: u64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            milli: u64::from(rate.burst) * TOKEN,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let full = u64::from(rate.burst) * TOKEN;
        let (add, took) = rate.earned(now.saturating_duration_since(self.at));
        self.milli = self.milli.saturating_add(add);
        if self.milli >= full {
            self.milli = full;
            self.at = now;
        } else {
            self.at += took;
        }
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.milli >= TOKEN {
            self.milli -= TOKEN;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.milli >= u64::from(rate.burst) * TOKEN
    }
}

/// Token buckets per key, at most `max_keys` of them.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `rate` per key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            overflow: None,
        }
    }

    /// The rate each key gets.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token for `key` at `now`; false when its bucket is empty.
    pub fn allow(&mut self, key: &K, now: Instant) -> bool {
        let rate = self.rate;
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(rate, now);
        }
        if self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| !b.is_full(rate, now));
        }
        if self.buckets.len() >= self.max_keys {
            return self
                .overflow
                .get_or_insert_with(|| Bucket::full(rate, now))
                .take(rate, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let allowed = bucket.take(rate, now);
        self.buckets.insert(key.clone(), bucket);
        allowed
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The key a request source is limited by: an IPv4 address, or an IPv6
/// address's /64 (one host usually holds a whole /64, and could otherwise
/// take a fresh address for each request).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        every: Duration::from_millis(500),
    };

    #[test]
    fn a_burst_then_the_refill_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RATE, 10);
        assert!((0..3).all(|_| l.allow(&1, t0)));
        assert!(!l.allow(&1, t0));
        // Another key has its own bucket.
        assert!(l.allow(&2, t0));
        // Half a second earns one token back.
        assert!(l.allow(&1, t0 + Duration::from_millis(500)));
        assert!(!l.allow(&1, t0 + Duration::from_millis(500)));
        // Frequent calls lose no partial refill: 100 calls 10 ms apart
        // earn two tokens back at one per 500 ms.
        let mut t = t0 + Duration::from_secs(1000);
        assert_eq!((0..10).filter(|_| l.allow(&3, t)).count(), 3);
        let mut got = 0;
        for _ in 0..100 {
            t += Duration::from_millis(10);
            got += usize::from(l.allow(&3, t));
        }
        assert_eq!(got, 2);
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(7200);
        assert_eq!((0..10).filter(|_| l.allow(&1, later)).count(), 3);
    }

    #[test]
    fn a_full_table_forgets_idle_keys_or_shares_an_overflow_bucket() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RATE, 2);
        assert!(l.allow(&1, t0));
        assert!(l.allow(&2, t0));
        // Table full of busy keys: newcomers share one bucket.
        assert_eq!((3..10).filter(|k| l.allow(k, t0)).count(), 3);
        assert_eq!(l.len(), 2);
        // Once the first keys are idle (refilled), newcomers get their own.
        let later = t0 + Duration::from_secs(10);
        assert!(l.allow(&11, later));
        assert_eq!(l.len(), 1);
        assert_eq!((0..5).filter(|_| l.allow(&12, later)).count(), 3);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn ipv6_sources_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
