//! Single-use nonces of enrollment requests, in memory and bounded.
//!
//! Enrollment is the one request nobody is authenticated for yet, so it must
//! not cost a durable write: the nonce of a node's later requests is
//! recorded in the store (replays stay refused across a restart), but an
//! enrollment's lives here. A replay after a restart gains nothing: the
//! original either enrolled its keys (the replay is a `duplicate_key`) or
//! was refused (the replay is refused the same way).
//!
//! An entry is kept for twice the skew bound after it arrived: by then any
//! copy of the request is stale and refused on its timestamp. The cache is
//! reached only by requests that carried a valid pre-auth key, and when it
//! is full anyway new enrollments are refused (fail closed) rather than
//! older nonces forgotten early.

use std::collections::{HashSet, VecDeque};

use rustynet_proto::control_api::MAX_REQUEST_SKEW_MS;

/// Default bound on remembered nonces.
pub const MAX_NONCES: usize = 100_000;

/// What [`NonceCache::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// First use.
    Fresh,
    /// Seen within the window: a replay.
    Replayed,
    /// The cache is full of live nonces.
    Full,
}

/// Recently seen nonces, with their arrival times.
#[derive(Debug)]
pub struct NonceCache {
    max: usize,
    seen: HashSet<[u8; 16]>,
    order: VecDeque<(i64, [u8; 16])>,
}

impl NonceCache {
    /// A cache of at most `max` nonces.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `nonce`, arriving at `now_ms`.
    pub fn insert(&mut self, nonce: [u8; 16], now_ms: i64) -> NonceCheck {
        let forget_before = now_ms.saturating_sub(2 * MAX_REQUEST_SKEW_MS);
        while let Some(&(at, old)) = self.order.front() {
            if at >= forget_before {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        if self.seen.contains(&nonce) {
            return NonceCheck::Replayed;
        }
        if self.seen.len() >= self.max {
            return NonceCheck::Full;
        }
        self.seen.insert(nonce);
        self.order.push_back((now_ms, nonce));
        NonceCheck::Fresh
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_within_the_window_then_forgotten() {
        let mut c = NonceCache::new(10);
        assert_eq!(c.insert([1; 16], 1_000), NonceCheck::Fresh);
        assert_eq!(c.insert([1; 16], 2_000), NonceCheck::Replayed);
        let after = 1_000 + 2 * MAX_REQUEST_SKEW_MS + 1;
        assert_eq!(c.insert([2; 16], after), NonceCheck::Fresh);
        assert_eq!(c.len(), 1);
        assert_eq!(c.insert([1; 16], after), NonceCheck::Fresh);
    }

    #[test]
    fn bounded_refuses_when_full_of_live_nonces() {
        let mut c = NonceCache::new(3);
        for i in 0..3u8 {
            assert_eq!(c.insert([i; 16], 5), NonceCheck::Fresh);
        }
        assert_eq!(c.insert([9; 16], 6), NonceCheck::Full);
        assert_eq!(c.len(), 3);
        // Once the old ones age out there is room again.
        assert_eq!(
            c.insert([9; 16], 6 + 2 * MAX_REQUEST_SKEW_MS),
            NonceCheck::Fresh
        );
        assert_eq!(c.len(), 1);
    }
}
