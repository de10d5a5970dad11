//! The behaviour every [`TunnelBackend`] must show, as one reusable suite.
//!
//! Backend crates run [`run_all`] against each engine in their own tests (the
//! real engines as root in a private network namespace); this crate runs it
//! against [`crate::FakeBackend`], so the fake the daemon tests rely on cannot
//! drift from the real thing. A failed expectation panics with the step name.
#![allow(clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rustynet_proto::TunnelPublicKey;

use crate::{InterfaceConfig, PeerConfig, TunnelBackend, TunnelError};

/// What the suite needs from the environment of one engine.
pub trait Harness {
    /// The engine under test.
    type Backend: TunnelBackend;
    /// A fresh, stopped backend.
    fn backend(&mut self) -> Self::Backend;
    /// A config with a name no other test uses.
    fn interface_config(&mut self) -> InterfaceConfig;
    /// A valid peer public key, different on every call.
    fn peer_key(&mut self) -> TunnelPublicKey;
    /// Deletes the interface behind the backend's back (as `ip link del` would).
    fn delete_interface_externally(&mut self, backend: &Self::Backend, ifname: &str);
}

/// Runs every check below on fresh backends.
pub fn run_all<H: Harness>(h: &mut H) {
    lifecycle(h);
    peer_add_update_remove(h);
    peer_replacement(h);
    allowed_ip_replacement(h);
    refusals_leave_state_unchanged(h);
    recovery_after_external_delete(h);
}

fn ok<T>(r: Result<T, TunnelError>, step: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{step}: unexpected error: {e} ({e:?})"),
    }
}

fn net(s: &str) -> IpNet {
    match s.parse() {
        Ok(n) => n,
        Err(_) => panic!("bad prefix in suite: {s}"),
    }
}

fn peer(key: TunnelPublicKey, nets: &[&str]) -> PeerConfig {
    PeerConfig {
        candidates: Vec::new(),
        home_relay: None,
        path_key: None,
        public_key: key,
        endpoint: None,
        allowed_ips: nets.iter().map(|s| net(s)).collect(),
        persistent_keepalive_secs: None,
    }
}

fn keys_in_stats<B: TunnelBackend>(b: &B, step: &str) -> Vec<TunnelPublicKey> {
    let mut keys: Vec<_> = ok(b.stats(), step)
        .peers
        .iter()
        .map(|p| p.public_key)
        .collect();
    keys.sort();
    keys
}

fn sorted(mut keys: Vec<TunnelPublicKey>) -> Vec<TunnelPublicKey> {
    keys.sort();
    keys
}

/// start / start again (refused) / stop / stop again / start again.
pub fn lifecycle<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    let cfg = h.interface_config();
    assert!(!b.is_running(), "lifecycle: fresh backend reports running");
    assert!(
        matches!(b.stats(), Err(TunnelError::NotRunning)),
        "lifecycle: stats before start must be NotRunning"
    );
    assert!(
        matches!(b.set_peers(&[]), Err(TunnelError::NotRunning)),
        "lifecycle: set_peers before start must be NotRunning"
    );
    assert!(!b.info().engine.is_empty(), "lifecycle: empty engine name");
    ok(b.start(&cfg), "lifecycle: start");
    assert!(b.is_running(), "lifecycle: not running after start");
    assert!(
        matches!(b.start(&cfg), Err(TunnelError::AlreadyRunning)),
        "lifecycle: second start must be AlreadyRunning"
    );
    let stats = ok(b.stats(), "lifecycle: stats");
    assert_ne!(stats.listen_port, 0, "lifecycle: listen port not resolved");
    if cfg.listen_port != 0 {
        assert_eq!(stats.listen_port, cfg.listen_port, "lifecycle: wrong port");
    }
    assert!(stats.peers.is_empty(), "lifecycle: peers after start");
    ok(b.stop(), "lifecycle: stop");
    assert!(!b.is_running(), "lifecycle: running after stop");
    ok(b.stop(), "lifecycle: stop is idempotent");
    ok(b.start(&cfg), "lifecycle: start after stop");
    assert!(b.is_running(), "lifecycle: not running after restart");
    ok(b.stop(), "lifecycle: final stop");
}

/// add / add again (refused) / update / update unknown (refused) / remove.
pub fn peer_add_update_remove<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    let cfg = h.interface_config();
    ok(b.start(&cfg), "peers: start");
    let a = h.peer_key();
    let stranger = h.peer_key();
    ok(b.add_peer(&peer(a, &["100.64.1.1/32"])), "peers: add");
    assert_eq!(keys_in_stats(&b, "peers"), vec![a]);
    assert!(
        matches!(
            b.add_peer(&peer(a, &["100.64.1.9/32"])),
            Err(TunnelError::PeerExists { .. })
        ),
        "peers: adding an existing key must be refused"
    );
    let endpoint: SocketAddr = SocketAddr::from(([192, 0, 2, 10], 51_820));
    let updated = PeerConfig {
        endpoint: Some(endpoint),
        persistent_keepalive_secs: Some(25),
        ..peer(a, &["100.64.1.1/32", "192.0.2.128/25"])
    };
    ok(b.update_peer(&updated), "peers: update");
    let stats = ok(b.stats(), "peers: stats after update");
    assert_eq!(
        stats.peer(&a).and_then(|p| p.endpoint),
        Some(endpoint),
        "peers: endpoint not updated"
    );
    assert!(
        matches!(
            b.update_peer(&peer(stranger, &[])),
            Err(TunnelError::UnknownPeer { .. })
        ),
        "peers: updating an unknown key must be refused"
    );
    ok(b.remove_peer(&a), "peers: remove");
    assert!(keys_in_stats(&b, "peers").is_empty(), "peers: not removed");
    assert!(
        matches!(b.remove_peer(&a), Err(TunnelError::UnknownPeer { .. })),
        "peers: removing twice must be refused"
    );
    ok(b.stop(), "peers: stop");
}

/// set_peers with a new key for the same allowed IPs replaces the owner.
pub fn peer_replacement<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    ok(b.start(&h.interface_config()), "replacement: start");
    let (a, bk, c) = (h.peer_key(), h.peer_key(), h.peer_key());
    ok(
        b.set_peers(&[peer(a, &["100.64.2.1/32"]), peer(bk, &["100.64.2.2/32"])]),
        "replacement: first set",
    );
    assert_eq!(keys_in_stats(&b, "replacement"), sorted(vec![a, bk]));
    ok(
        b.set_peers(&[peer(c, &["100.64.2.1/32"]), peer(bk, &["100.64.2.2/32"])]),
        "replacement: same prefix, new key",
    );
    assert_eq!(keys_in_stats(&b, "replacement"), sorted(vec![bk, c]));
    ok(b.set_peers(&[]), "replacement: empty set");
    assert!(keys_in_stats(&b, "replacement").is_empty());
    ok(b.stop(), "replacement: stop");
}

/// Moving a prefix from one peer to another; exit on / off / moved
/// (nested default routes next to host routes).
pub fn allowed_ip_replacement<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    ok(b.start(&h.interface_config()), "allowed-ip: start");
    let (a, bk) = (h.peer_key(), h.peer_key());
    ok(
        b.set_peers(&[peer(a, &["100.64.3.1/32"])]),
        "allowed-ip: set",
    );
    ok(
        b.set_peers(&[peer(a, &["100.64.3.3/32"]), peer(bk, &["100.64.3.1/32"])]),
        "allowed-ip: prefix moves to another peer in one reconcile",
    );
    ok(
        b.set_peers(&[
            peer(a, &["100.64.3.3/32", "0.0.0.0/0", "::/0"]),
            peer(bk, &["100.64.3.1/32", "10.0.0.0/8"]),
        ]),
        "allowed-ip: nested prefixes (exit default route) are accepted",
    );
    assert_eq!(keys_in_stats(&b, "allowed-ip"), sorted(vec![a, bk]));
    // Exit off: the default routes go away again, the peers stay.
    ok(
        b.set_peers(&[
            peer(a, &["100.64.3.3/32"]),
            peer(bk, &["100.64.3.1/32", "10.0.0.0/8"]),
        ]),
        "allowed-ip: exit default route withdrawn",
    );
    // Exit moves to the other peer.
    ok(
        b.set_peers(&[
            peer(a, &["100.64.3.3/32"]),
            peer(bk, &["100.64.3.1/32", "0.0.0.0/0"]),
        ]),
        "allowed-ip: exit default route moves to another peer",
    );
    assert_eq!(keys_in_stats(&b, "allowed-ip"), sorted(vec![a, bk]));
    ok(b.stop(), "allowed-ip: stop");
}

/// Duplicate prefixes and bad keys are refused and change nothing.
pub fn refusals_leave_state_unchanged<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    ok(b.start(&h.interface_config()), "refusals: start");
    let (a, bk) = (h.peer_key(), h.peer_key());
    ok(b.set_peers(&[peer(a, &["100.64.4.1/32"])]), "refusals: set");
    let before = ok(b.stats(), "refusals: stats");
    let err = b
        .set_peers(&[peer(a, &["100.64.4.1/32"]), peer(bk, &["100.64.4.1/32"])])
        .err();
    assert!(
        matches!(err, Some(TunnelError::DuplicateAllowedIp { .. })),
        "refusals: duplicate allowed IP must be refused, got {err:?}"
    );
    let err = b.add_peer(&peer(bk, &["100.64.4.1/32"])).err();
    assert!(
        matches!(err, Some(TunnelError::DuplicateAllowedIp { .. })),
        "refusals: add_peer with a taken prefix must be refused, got {err:?}"
    );
    let err = b.set_peers(&[peer(TunnelPublicKey([0; 32]), &[])]).err();
    assert!(
        matches!(err, Some(TunnelError::InvalidPeerKey { .. })),
        "refusals: all-zero key must be refused, got {err:?}"
    );
    let after = ok(b.stats(), "refusals: stats after");
    assert_eq!(
        before
            .peers
            .iter()
            .map(|p| p.public_key)
            .collect::<Vec<_>>(),
        after.peers.iter().map(|p| p.public_key).collect::<Vec<_>>(),
        "refusals: a refused call changed the peer set"
    );
    ok(b.stop(), "refusals: stop");
}

/// Interface deleted externally: detected, typed error, stop + start recovers.
pub fn recovery_after_external_delete<H: Harness>(h: &mut H) {
    let mut b = h.backend();
    let cfg = h.interface_config();
    ok(b.start(&cfg), "recovery: start");
    let a = h.peer_key();
    ok(b.set_peers(&[peer(a, &["100.64.5.1/32"])]), "recovery: set");
    h.delete_interface_externally(&b, &cfg.ifname);
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.is_running() {
        assert!(
            Instant::now() < deadline,
            "recovery: deleted interface not detected within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = b.stats().err();
    assert!(
        matches!(&err, Some(TunnelError::InterfaceGone { ifname }) if *ifname == cfg.ifname),
        "recovery: stats must report InterfaceGone, got {err:?}"
    );
    assert!(err.is_some_and(|e| e.is_recoverable()));
    assert!(
        matches!(b.set_peers(&[]), Err(TunnelError::InterfaceGone { .. })),
        "recovery: set_peers must report InterfaceGone"
    );
    ok(b.stop(), "recovery: stop after loss");
    ok(b.start(&cfg), "recovery: start again");
    assert!(b.is_running(), "recovery: not running after restart");
    ok(
        b.set_peers(&[peer(a, &["100.64.5.1/32"])]),
        "recovery: set again",
    );
    assert_eq!(keys_in_stats(&b, "recovery"), vec![a]);
    ok(b.stop(), "recovery: final stop");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FakeBackend, TunnelPrivateKey};

    struct FakeHarness(u8);

    impl Harness for FakeHarness {
        type Backend = FakeBackend;
        fn backend(&mut self) -> FakeBackend {
            FakeBackend::new()
        }
        fn interface_config(&mut self) -> InterfaceConfig {
            InterfaceConfig {
                ifname: "rnfake".into(),
                private_key: TunnelPrivateKey::from_bytes([9; 32]),
                listen_port: 0,
                mtu: 1420,
                fwmark: None,
            }
        }
        fn peer_key(&mut self) -> TunnelPublicKey {
            self.0 += 1;
            TunnelPublicKey([self.0; 32])
        }
        fn delete_interface_externally(&mut self, backend: &FakeBackend, _ifname: &str) {
            backend.handle().simulate_interface_gone();
        }
    }

    #[test]
    fn fake_backend_passes_the_conformance_suite() {
        run_all(&mut FakeHarness(0));
    }
}
