//! The client's side of the UDP relay mode (see [`crate::udp`]): the offered
//! token, hellos and their echoes, and the ids of peers.
//!
//! The tunnel's own UDP socket sends and receives the datagrams (so they
//! share its NAT mapping, marks and batching); this state only says where a
//! packet may go and what an arriving one means. The engine asks
//! [`super::RelayClient::udp_route`] per packet; a peer without an id yet
//! keeps using the TLS relay while a lookup (at most one a second per peer)
//! is under way, and everything falls back to TLS when the relay stops
//! echoing hellos (UDP blocked on the way, or the relay gone).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustynet_proto::TunnelPublicKey;

use crate::udp::Token;

/// Hellos until the first echo (quick start).
pub(super) const HELLO_RETRY: Duration = Duration::from_secs(1);
/// Hellos once echoed: keeps the NAT mapping and the relay's record fresh.
pub(super) const HELLO_INTERVAL: Duration = Duration::from_secs(10);
/// No echo for this long: UDP is not working, use TLS.
const ECHO_TIMEOUT: Duration = Duration::from_secs(25);
/// At most one lookup per peer this often.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(1);
/// Peers whose ids a client remembers (each relayed peer needs one).
const MAX_PEERS: usize = 4096;

#[derive(Default)]
pub(crate) struct UdpState {
    token: Option<Token>,
    echoed_at: Option<Instant>,
    hello_at: Option<Instant>,
    ids: HashMap<TunnelPublicKey, u32>,
    keys: HashMap<u32, TunnelPublicKey>,
    asked: HashMap<TunnelPublicKey, Instant>,
    /// Lookups for the client thread to send.
    pub(super) lookups: Vec<TunnelPublicKey>,
}

impl UdpState {
    /// The relay offered the mode (a new login).
    pub(super) fn offered(&mut self, token: Token) {
        *self = UdpState {
            token: Some(token),
            ..UdpState::default()
        };
    }

    /// The connection went down: everything learnt on it is void.
    pub(super) fn reset(&mut self) {
        *self = UdpState::default();
    }

    /// The hello to send now, if one is due.
    pub(super) fn hello_due(&mut self, now: Instant) -> Option<Token> {
        let token = self.token?;
        let every = if self.echoed_at.is_some() {
            HELLO_INTERVAL
        } else {
            HELLO_RETRY
        };
        if self.hello_at.is_some_and(|at| now < at + every) {
            return None;
        }
        self.hello_at = Some(now);
        Some(token)
    }

    /// When the next hello is due (`now` when none was sent yet).
    pub(super) fn next_hello(&self, now: Instant) -> Option<Instant> {
        self.token?;
        let every = if self.echoed_at.is_some() {
            HELLO_INTERVAL
        } else {
            HELLO_RETRY
        };
        Some(self.hello_at.map_or(now, |at| at + every))
    }

    /// An echo of `token` arrived.
    pub(crate) fn echoed(&mut self, token: &Token, now: Instant) -> bool {
        if self.token.as_ref() != Some(token) {
            return false;
        }
        self.echoed_at = Some(now);
        true
    }

    fn ready(&self, now: Instant) -> bool {
        self.echoed_at
            .is_some_and(|at| now.saturating_duration_since(at) < ECHO_TIMEOUT)
    }

    /// Whether UDP to the relay works now.
    pub(crate) fn is_ready(&self, now: Instant) -> bool {
        self.ready(now)
    }

    /// `key`'s id if UDP works and it is known; otherwise queues a lookup
    /// (rate-limited) and says whether the thread must be woken.
    pub(crate) fn route(&mut self, key: &TunnelPublicKey, now: Instant) -> Result<u32, bool> {
        if !self.ready(now) {
            return Err(false);
        }
        if let Some(id) = self.ids.get(key) {
            return Ok(*id);
        }
        if self
            .asked
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < LOOKUP_INTERVAL)
            || self.asked.len() >= MAX_PEERS
        {
            return Err(false);
        }
        self.asked.insert(*key, now);
        self.lookups.push(*key);
        Err(true)
    }

    /// The relay told us `key`'s id.
    pub(super) fn learned(&mut self, key: TunnelPublicKey, id: u32) {
        if self.ids.len() >= MAX_PEERS && !self.ids.contains_key(&key) {
            return;
        }
        if let Some(old) = self.ids.insert(key, id) {
            self.keys.remove(&old);
        }
        self.keys.insert(id, key);
        self.asked.remove(&key);
    }

    /// `key` is gone from the relay: its id is void.
    pub(super) fn forget(&mut self, key: &TunnelPublicKey) {
        if let Some(id) = self.ids.remove(key) {
            self.keys.remove(&id);
        }
    }

    /// The node behind `id`.
    pub(crate) fn key_of(&self, id: u32) -> Option<TunnelPublicKey> {
        self.keys.get(&id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_after_an_echo_and_a_lookup() {
        let t0 = Instant::now();
        let key = TunnelPublicKey([3; 32]);
        let mut s = UdpState::default();
        assert_eq!(s.route(&key, t0), Err(false), "not offered");
        s.offered([1; 16]);
        assert_eq!(s.next_hello(t0), Some(t0), "the first hello is due at once");
        assert_eq!(s.hello_due(t0), Some([1; 16]));
        assert_eq!(s.next_hello(t0), Some(t0 + HELLO_RETRY));
        assert_eq!(s.hello_due(t0 + Duration::from_millis(500)), None);
        assert_eq!(
            s.hello_due(t0 + HELLO_RETRY),
            Some([1; 16]),
            "retried until echoed"
        );
        assert!(!s.echoed(&[2; 16], t0), "a wrong token is ignored");
        assert_eq!(s.route(&key, t0), Err(false));
        assert!(s.echoed(&[1; 16], t0));
        assert_eq!(s.route(&key, t0), Err(true), "asks once");
        assert_eq!(s.lookups, vec![key]);
        assert_eq!(
            s.route(&key, t0),
            Err(false),
            "no second lookup within the interval"
        );
        s.learned(key, 77);
        assert_eq!(s.route(&key, t0), Ok(77));
        assert_eq!(s.key_of(77), Some(key));
        // Hellos slow down once echoed.
        let at = t0 + HELLO_RETRY;
        assert_eq!(s.hello_due(at + Duration::from_secs(2)), None);
        assert!(s.hello_due(at + HELLO_INTERVAL).is_some());
        // No echo for too long: back to TLS.
        assert_eq!(s.route(&key, t0 + ECHO_TIMEOUT), Err(false));
        s.forget(&key);
        assert_eq!(s.key_of(77), None);
    }
}
