//! Direct-path selection: which of a peer's reported endpoints to use.
//!
//! A peer may report several addresses (one per interface); not all are
//! reachable from here. The tunnel follows a peer to the source of its latest
//! authenticated packet (roaming), so once a handshake completes the right
//! endpoint sticks. Until then, this rotates through the reported endpoints
//! while the handshake stays stale. Pure: the engine feeds it stats.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rustynet_proto::TunnelPublicKey;

/// How long a configured endpoint gets to complete a handshake.
pub const TRY_FOR: Duration = Duration::from_secs(6);
/// A handshake younger than this means the current path works.
pub const FRESH: Duration = Duration::from_secs(180);

/// Per-peer choice of endpoint.
#[derive(Debug, Default)]
pub struct PathManager {
    /// Index into each peer's endpoint list, and how long it has been tried.
    chosen: HashMap<TunnelPublicKey, (usize, Duration)>,
}

impl PathManager {
    /// The endpoint index chosen per peer (absent = the first).
    pub fn indices(&self) -> BTreeMap<TunnelPublicKey, usize> {
        self.chosen.iter().map(|(k, (i, _))| (*k, *i)).collect()
    }

    /// Advances time by `elapsed` for a peer whose last handshake is
    /// `handshake` ago (None = never). Returns true if the peer should move
    /// to its next endpoint.
    pub fn tick(
        &mut self,
        key: TunnelPublicKey,
        endpoints: usize,
        handshake: Option<Duration>,
        elapsed: Duration,
    ) -> bool {
        let entry = self.chosen.entry(key).or_insert((0, Duration::ZERO));
        if handshake.is_some_and(|h| h < FRESH) || endpoints < 2 {
            entry.1 = Duration::ZERO;
            return false;
        }
        entry.1 += elapsed;
        if entry.1 < TRY_FOR {
            return false;
        }
        entry.0 = (entry.0 + 1) % endpoints;
        entry.1 = Duration::ZERO;
        true
    }

    /// Forgets peers not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&TunnelPublicKey) -> bool) {
        self.chosen.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_while_stale_and_sticks_when_fresh() {
        let key = TunnelPublicKey([1; 32]);
        let mut pm = PathManager::default();
        assert_eq!(pm.indices().get(&key), None);
        assert!(!pm.tick(key, 2, None, Duration::from_secs(2)));
        assert!(pm.tick(key, 2, None, Duration::from_secs(5)));
        assert_eq!(pm.indices()[&key], 1);
        // A fresh handshake: stay.
        assert!(!pm.tick(
            key,
            2,
            Some(Duration::from_secs(1)),
            Duration::from_secs(60)
        ));
        assert_eq!(pm.indices()[&key], 1);
        // Wraps around when stale again.
        assert!(pm.tick(
            key,
            2,
            Some(Duration::from_secs(500)),
            Duration::from_secs(7)
        ));
        assert_eq!(pm.indices()[&key], 0);
    }

    #[test]
    fn single_endpoint_never_rotates() {
        let key = TunnelPublicKey([2; 32]);
        let mut pm = PathManager::default();
        assert!(!pm.tick(key, 1, None, Duration::from_secs(600)));
        assert_eq!(pm.indices()[&key], 0);
    }
}
