//! The core on a fake clock: every rule of the module docs, one test each.

use bytes::BytesMut;
use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody};

use super::*;
use crate::login::sign_login;

#[path = "udp_tests.rs"]
mod udp_mode;

const T0: i64 = 1_800_000_000;

fn control() -> NodeSigningKey {
    NodeSigningKey::from_seed(&[1; 32])
}

fn node_key(n: u8) -> TunnelPublicKey {
    TunnelPublicKey([n; 32])
}

fn login_key(n: u8) -> NodeSigningKey {
    NodeSigningKey::from_seed(&[100 + n; 32])
}

fn ticket_with(
    signer: &NodeSigningKey,
    n: u8,
    peers: &[u8],
    generation: u64,
    issued_at: i64,
    expires_at: i64,
) -> Bytes {
    let body = RelayTicket {
        node_key: node_key(n),
        login_key: login_key(n).public(),
        peers: peers.iter().map(|p| node_key(*p)).collect(),
    }
    .into_body(NodeId(u64::from(n)), generation, issued_at, expires_at);
    let env = SealedBody::seal(signer, &body)
        .unwrap()
        .to_envelope()
        .unwrap();
    Bytes::from(env.to_json())
}

/// A one-hour ticket for node `n` listing `peers`, issued at T0.
fn ticket(n: u8, peers: &[u8]) -> Bytes {
    ticket_with(&control(), n, peers, 1, T0, T0 + 3600)
}

struct Harness {
    core: RelayCore,
    metrics: Metrics,
    start: Instant,
    now: Now,
}

fn harness(limits: Limits) -> Harness {
    let metrics = Metrics::default();
    let start = Instant::now();
    Harness {
        core: RelayCore::new(limits, vec![control().public()], metrics.clone()),
        metrics,
        start,
        now: Now {
            instant: start,
            unix: T0,
        },
    }
}

fn peer_addr(id: u64) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, (id % 250) as u8 + 1], 40_000 + id as u16))
}

fn exporter(id: u64) -> [u8; 32] {
    [id as u8; 32]
}

fn challenge(id: u64) -> [u8; 32] {
    [(id as u8).wrapping_add(50); 32]
}

impl Harness {
    fn advance(&mut self, d: Duration) {
        self.now.instant += d;
        self.now.unix = T0 + (self.now.instant - self.start).as_secs() as i64;
        self.core.handle_timeout(self.now);
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }

    fn frames(&mut self, id: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        let now = self.now;
        while self.core.drain(ConnId(id), &mut out, 1 << 20, now) {}
        let mut buf = BytesMut::from(&out[..]);
        let mut frames = Vec::new();
        while let Some(f) = Decoder::new(1 << 20).decode(&mut buf).unwrap() {
            frames.push(f);
        }
        frames
    }

    /// Accepts and upgrades `id`; returns the challenge frame's bytes.
    fn open(&mut self, id: u64) {
        self.core
            .handle_accept(ConnId(id), peer_addr(id), self.now)
            .unwrap();
        self.core
            .handle_upgraded(ConnId(id), exporter(id), challenge(id));
        let frames = self.frames(id);
        assert_eq!(
            frames,
            vec![Frame::ServerChallenge {
                version: PROTOCOL_VERSION,
                challenge: challenge(id)
            }]
        );
        self.events();
    }

    fn login_frame(&self, id: u64, n: u8, ticket: Bytes) -> Frame {
        let sig = sign_login(&login_key(n), &exporter(id), &challenge(id), &ticket);
        Frame::Login { sig, ticket }
    }

    /// Opens `id` and logs node `n` in with `ticket`; returns what came back.
    fn login_with(&mut self, id: u64, n: u8, ticket: Bytes) -> Vec<Frame> {
        self.open(id);
        let frame = self.login_frame(id, n, ticket);
        self.core.handle_frame(ConnId(id), frame, self.now);
        self.frames(id)
    }

    fn login(&mut self, id: u64, n: u8, peers: &[u8]) {
        let got = self.login_with(id, n, ticket(n, peers));
        assert_eq!(
            got,
            vec![Frame::LoginOk {
                observed: peer_addr(id)
            }]
        );
        self.events();
    }

    fn send(&mut self, id: u64, dst: u8, payload: &'static [u8], probe: bool) {
        let frame = Frame::Send {
            dst: node_key(dst),
            payload: Bytes::from_static(payload),
            probe,
        };
        self.core.handle_frame(ConnId(id), frame, self.now);
    }

    fn refusal(&mut self, id: u64) -> Option<(RefuseCode, &'static str)> {
        self.events().into_iter().find_map(|e| match e {
            Event::Close {
                conn,
                reason,
                last: Some(Frame::LoginRefused { code, .. }),
            } if conn == ConnId(id) => Some((code, reason)),
            _ => None,
        })
    }

    fn closed(&mut self, id: u64) -> Option<&'static str> {
        self.events().into_iter().find_map(|e| match e {
            Event::Close { conn, reason, .. } if conn == ConnId(id) => Some(reason),
            _ => None,
        })
    }
}

fn recv(src: u8, payload: &'static [u8], probe: bool) -> Frame {
    Frame::Recv {
        src: node_key(src),
        payload: Bytes::from_static(payload),
        probe,
    }
}

#[test]
fn login_ok_reports_the_observed_address() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    assert_eq!(h.metrics.logins(), 1);
    assert_eq!(h.metrics.connections("authenticated"), 1);
    assert_eq!(h.metrics.connections("handshake"), 0);
}

#[test]
fn a_bad_login_signature_is_refused() {
    let mut h = harness(Limits::default());
    h.open(1);
    let t = ticket(1, &[2]);
    // Signed by another node's key.
    let sig = sign_login(&login_key(9), &exporter(1), &challenge(1), &t);
    h.core
        .handle_frame(ConnId(1), Frame::Login { sig, ticket: t }, h.now);
    assert_eq!(h.refusal(1), Some((RefuseCode::Signature, "login_refused")));
    assert_eq!(h.metrics.refused("bad_signature"), 1);
    assert_eq!(h.core.connections(), 0);
}

#[test]
fn a_ticket_signed_by_another_key_is_refused() {
    let mut h = harness(Limits::default());
    let rogue = NodeSigningKey::from_seed(&[66; 32]);
    let t = ticket_with(&rogue, 1, &[2], 1, T0, T0 + 3600);
    assert!(h.login_with(1, 1, t).is_empty());
    assert_eq!(h.refusal(1), Some((RefuseCode::Ticket, "login_refused")));
    assert_eq!(h.metrics.refused("ticket_bad_signature"), 1);
}

#[test]
fn an_expired_ticket_is_refused() {
    let mut h = harness(Limits::default());
    let t = ticket_with(&control(), 1, &[2], 1, T0 - 7200, T0 - 3600);
    h.login_with(1, 1, t);
    assert_eq!(h.refusal(1), Some((RefuseCode::Ticket, "login_refused")));
    assert_eq!(h.metrics.refused("ticket_expired"), 1);
}

#[test]
fn a_login_replayed_on_another_connection_is_refused() {
    let mut h = harness(Limits::default());
    h.open(1);
    let captured = h.login_frame(1, 1, ticket(1, &[2]));
    h.core.handle_frame(ConnId(1), captured.clone(), h.now);
    assert!(matches!(h.frames(1)[..], [Frame::LoginOk { .. }]));
    // The attacker replays the exact frame on its own connection: another
    // session (exporter) and another challenge.
    h.open(2);
    h.core.handle_frame(ConnId(2), captured.clone(), h.now);
    assert_eq!(h.refusal(2), Some((RefuseCode::Signature, "login_refused")));
    // Even if the relay repeated the same challenge, the exporter differs.
    h.core
        .handle_accept(ConnId(3), peer_addr(3), h.now)
        .unwrap();
    h.core.handle_upgraded(ConnId(3), exporter(3), challenge(1));
    h.core.handle_frame(ConnId(3), captured, h.now);
    assert_eq!(h.refusal(3), Some((RefuseCode::Signature, "login_refused")));
    assert_eq!(h.metrics.refused("bad_signature"), 2);
    // The original connection is untouched.
    assert_eq!(h.metrics.connections("authenticated"), 1);
}

#[test]
fn packets_flow_only_between_mutually_listed_nodes() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2, 3]);
    h.login(2, 2, &[1]);
    h.login(3, 3, &[]); // lists nobody
    h.send(1, 2, b"hello", false);
    assert_eq!(h.events(), vec![Event::Writable(ConnId(2))]);
    assert_eq!(h.frames(2), vec![recv(1, b"hello", false)]);
    h.send(2, 1, b"back", false);
    assert_eq!(h.frames(1), vec![recv(2, b"back", false)]);
    // 1 lists 3 but 3 does not list 1: nothing reaches 3.
    h.send(1, 3, b"x", false);
    assert!(h.frames(3).is_empty());
    assert_eq!(
        h.frames(1),
        vec![Frame::PeerGone {
            key: node_key(3),
            reason: GoneReason::NotAllowed
        }]
    );
    // 3 cannot reach 1 either.
    h.send(3, 1, b"y", false);
    assert!(h.frames(1).is_empty());
    assert_eq!(h.metrics.dropped("not_allowed"), 2);
    assert_eq!(h.metrics.forwarded_packets(), 2);
}

#[test]
fn a_destination_not_connected_gets_rate_limited_peer_gone() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    for _ in 0..10 {
        h.send(1, 2, b"x", false);
    }
    let gone = Frame::PeerGone {
        key: node_key(2),
        reason: GoneReason::NotConnected,
    };
    assert_eq!(h.frames(1), vec![gone.clone()]);
    h.advance(Duration::from_millis(1100));
    h.send(1, 2, b"x", false);
    assert_eq!(h.frames(1), vec![gone]);
    assert_eq!(h.metrics.dropped("not_connected"), 11);
}

#[test]
fn a_newer_ticket_without_the_peer_revokes_the_pair() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    h.send(1, 2, b"a", false);
    assert_eq!(h.frames(2).len(), 1);
    // Node 2's map no longer has node 1.
    let newer = ticket_with(&control(), 2, &[], 2, T0, T0 + 3600);
    h.core
        .handle_frame(ConnId(2), Frame::TicketUpdate { ticket: newer }, h.now);
    h.send(1, 2, b"b", false);
    assert!(h.frames(2).is_empty());
    assert_eq!(h.metrics.dropped("not_allowed"), 1);
    // An older ticket (generation 1) would restore the pair: refused, closed.
    h.core.handle_frame(
        ConnId(2),
        Frame::TicketUpdate {
            ticket: ticket(2, &[1]),
        },
        h.now,
    );
    assert_eq!(h.closed(2), Some("ticket_update_refused"));
    assert_eq!(h.metrics.refused("ticket_update_older"), 1);
}

#[test]
fn a_ticket_update_naming_another_node_closes() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    let other = ticket_with(&control(), 2, &[1], 5, T0, T0 + 3600);
    h.core
        .handle_frame(ConnId(1), Frame::TicketUpdate { ticket: other }, h.now);
    assert_eq!(h.closed(1), Some("ticket_update_refused"));
    assert_eq!(h.metrics.refused("ticket_update_other_node"), 1);
}

#[test]
fn the_token_bucket_limits_each_sender() {
    let mut h = harness(Limits {
        rate_bytes_per_sec: 1000,
        burst_bytes: 3000,
        ..Limits::default()
    });
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    static KB: [u8; 1000] = [7; 1000];
    for _ in 0..4 {
        h.send(1, 2, &KB, false);
    }
    assert_eq!(h.frames(2).len(), 3);
    assert_eq!(h.metrics.dropped("rate_limited"), 1);
    // Node 2's own bucket is separate.
    h.send(2, 1, &KB, false);
    assert_eq!(h.frames(1).len(), 1);
    h.advance(Duration::from_secs(1));
    h.send(1, 2, &KB, false);
    h.send(1, 2, &KB, false);
    assert_eq!(h.frames(2).len(), 1);
    assert_eq!(h.metrics.dropped("rate_limited"), 2);
}

#[test]
fn a_full_data_queue_drops_its_oldest_packets() {
    let mut h = harness(Limits {
        data_queue_bytes: 3,
        ..Limits::default()
    });
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    for p in [b"1", b"2", b"3", b"4", b"5"] {
        h.send(1, 2, p, false);
    }
    assert_eq!(
        h.frames(2),
        vec![
            recv(1, b"3", false),
            recv(1, b"4", false),
            recv(1, b"5", false)
        ]
    );
    assert_eq!(h.metrics.dropped("queue_full"), 2);
}

#[test]
fn probes_overtake_queued_data() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    for _ in 0..5 {
        h.send(1, 2, b"data", false);
    }
    h.send(1, 2, b"probe", true);
    let frames = h.frames(2);
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[0], recv(1, b"probe", true));
    assert!(frames[1..].iter().all(|f| *f == recv(1, b"data", false)));
}

#[test]
fn probes_have_their_own_small_bucket() {
    let mut h = harness(Limits {
        probe_rate_bytes_per_sec: 10,
        probe_burst_bytes: 10,
        rate_bytes_per_sec: 10,
        burst_bytes: 10,
        ..Limits::default()
    });
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    // The data bucket is spent; probes still pass on theirs.
    h.send(1, 2, b"0123456789", false);
    h.send(1, 2, b"0123456789", true);
    h.send(1, 2, b"x", true);
    assert_eq!(h.frames(2).len(), 2);
    assert_eq!(h.metrics.dropped("rate_limited"), 1);
}

#[test]
fn the_handshake_deadline_closes_slow_connections() {
    let mut h = harness(Limits::default());
    // One stuck before the upgrade, one after the challenge.
    h.core
        .handle_accept(ConnId(1), peer_addr(1), h.now)
        .unwrap();
    h.open(2);
    h.advance(Duration::from_millis(4900));
    assert!(h.events().is_empty());
    assert_eq!(
        h.core.next_timeout(),
        Some(h.start + Duration::from_secs(5))
    );
    h.advance(Duration::from_millis(100));
    let closed: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Close { conn, reason, .. } => Some((conn, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        closed,
        vec![
            (ConnId(1), "handshake_timeout"),
            (ConnId(2), "handshake_timeout")
        ]
    );
    assert_eq!(h.core.connections(), 0);
    assert_eq!(h.metrics.connections("handshake"), 0);
}

#[test]
fn connection_caps_count_every_phase() {
    let mut h = harness(Limits {
        max_conns: 3,
        max_unauth_per_ip: 1,
        ..Limits::default()
    });
    let ip_a = |port| SocketAddr::from(([192, 0, 2, 1], port));
    h.core.handle_accept(ConnId(1), ip_a(1), h.now).unwrap();
    assert_eq!(
        h.core.handle_accept(ConnId(2), ip_a(2), h.now),
        Err("per_ip_cap")
    );
    // Once the first logs in, its IP may start another handshake.
    h.core.handle_upgraded(ConnId(1), exporter(1), challenge(1));
    let f = h.login_frame(1, 1, ticket(1, &[]));
    h.core.handle_frame(ConnId(1), f, h.now);
    assert!(matches!(h.frames(1)[..], [_, Frame::LoginOk { .. }]));
    h.core.handle_accept(ConnId(2), ip_a(2), h.now).unwrap();
    h.core
        .handle_accept(ConnId(3), peer_addr(3), h.now)
        .unwrap();
    assert_eq!(
        h.core.handle_accept(ConnId(4), peer_addr(4), h.now),
        Err("conn_cap")
    );
    assert_eq!(h.metrics.refused("per_ip_cap"), 1);
    assert_eq!(h.metrics.refused("conn_cap"), 1);
    h.core.handle_closed(ConnId(3), "eof");
    h.core
        .handle_accept(ConnId(4), peer_addr(4), h.now)
        .unwrap();
}

#[test]
fn unauthenticated_connections_are_capped_in_all() {
    let mut h = harness(Limits {
        max_unauth: 2,
        ..Limits::default()
    });
    h.core
        .handle_accept(ConnId(1), peer_addr(1), h.now)
        .unwrap();
    h.core
        .handle_accept(ConnId(2), peer_addr(2), h.now)
        .unwrap();
    assert_eq!(
        h.core.handle_accept(ConnId(3), peer_addr(3), h.now),
        Err("unauth_cap")
    );
    // A login frees a slot; a timeout frees the other.
    h.core.handle_upgraded(ConnId(1), exporter(1), challenge(1));
    let f = h.login_frame(1, 1, ticket(1, &[]));
    h.core.handle_frame(ConnId(1), f, h.now);
    h.core
        .handle_accept(ConnId(3), peer_addr(3), h.now)
        .unwrap();
    assert_eq!(
        h.core.handle_accept(ConnId(4), peer_addr(4), h.now),
        Err("unauth_cap")
    );
    h.advance(Duration::from_secs(5));
    h.core
        .handle_accept(ConnId(4), peer_addr(4), h.now)
        .unwrap();
    assert_eq!(h.metrics.refused("unauth_cap"), 2);
}

#[test]
fn a_new_login_replaces_the_old_connection() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
    h.login(2, 2, &[1]);
    h.open(3);
    let f = h.login_frame(3, 1, ticket(1, &[2]));
    h.core.handle_frame(ConnId(3), f, h.now);
    assert_eq!(h.closed(1), Some("replaced"));
    assert_eq!(h.metrics.connections("authenticated"), 2);
    h.frames(3);
    h.send(2, 1, b"to the new one", false);
    assert_eq!(h.frames(3), vec![recv(2, b"to the new one", false)]);
    // The replaced connection's late close report changes nothing.
    h.core.handle_closed(ConnId(1), "eof");
    h.send(2, 1, b"again", false);
    assert_eq!(h.frames(3).len(), 1);
}

#[test]
fn frames_out_of_place_close_without_panic() {
    let mut h = harness(Limits::default());
    // Before the upgrade, anything is out of place.
    h.core
        .handle_accept(ConnId(1), peer_addr(1), h.now)
        .unwrap();
    h.core.handle_frame(ConnId(1), Frame::Ping([0; 8]), h.now);
    assert_eq!(h.closed(1), Some("protocol"));
    // Before login: a Send.
    h.open(2);
    h.send(2, 1, b"x", false);
    assert_eq!(h.closed(2), Some("protocol"));
    // After login: server-to-client frames and a second Login.
    for (id, frame) in [
        (3, recv(1, b"x", false)),
        (
            4,
            Frame::LoginOk {
                observed: peer_addr(1),
            },
        ),
        (
            5,
            Frame::ServerChallenge {
                version: 1,
                challenge: [0; 32],
            },
        ),
    ] {
        h.login(id, id as u8, &[]);
        h.core.handle_frame(ConnId(id), frame, h.now);
        assert_eq!(h.closed(id), Some("protocol"));
    }
    h.login(6, 6, &[]);
    let again = h.login_frame(6, 6, ticket(6, &[]));
    h.core.handle_frame(ConnId(6), again, h.now);
    assert_eq!(h.closed(6), Some("protocol"));
    // Frames for connections the core does not know are ignored.
    h.core.handle_frame(ConnId(99), Frame::Ping([0; 8]), h.now);
    assert_eq!(h.metrics.closed("protocol"), 6);
    assert_eq!(h.core.connections(), 0);
}

#[test]
fn pings_are_answered_and_keep_the_connection() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[]);
    for i in 0..3u8 {
        h.advance(Duration::from_secs(60));
        h.core.handle_frame(ConnId(1), Frame::Ping([i; 8]), h.now);
        assert_eq!(h.frames(1), vec![Frame::Pong([i; 8])]);
    }
    assert_eq!(h.core.connections(), 1);
    h.advance(Duration::from_secs(90));
    assert_eq!(h.closed(1), Some("idle"));
}

#[test]
fn an_expired_ticket_stops_forwarding_then_closes_unless_renewed() {
    let mut h = harness(Limits::default());
    // Node 1's ticket lasts 100 s, node 3's too; node 2's an hour.
    let short = |n, peers: &[u8]| ticket_with(&control(), n, peers, 1, T0, T0 + 100);
    h.login_with(1, 1, short(1, &[2]));
    h.login(2, 2, &[1, 3]);
    h.login_with(3, 3, short(3, &[2]));
    h.events();
    // Keep the connections from going idle.
    for _ in 0..2 {
        h.advance(Duration::from_secs(50));
        for id in 1..=3 {
            h.core.handle_frame(ConnId(id), Frame::Ping([0; 8]), h.now);
            h.frames(id);
        }
    }
    // Both short tickets are past expiry: no forwarding either way.
    h.send(1, 2, b"x", false);
    h.send(2, 1, b"y", false);
    // Each side hears why instead of a packet.
    assert_eq!(
        h.frames(2),
        vec![Frame::PeerGone {
            key: node_key(1),
            reason: GoneReason::Expired
        }]
    );
    assert_eq!(
        h.frames(1),
        vec![Frame::PeerGone {
            key: node_key(2),
            reason: GoneReason::Expired
        }]
    );
    assert_eq!(h.metrics.dropped("sender_expired"), 1);
    assert_eq!(h.metrics.dropped("peer_expired"), 1);
    // Node 3 renews within the grace period; node 1 does not.
    let renewed = ticket_with(&control(), 3, &[2], 2, T0 + 90, T0 + 3600);
    h.core
        .handle_frame(ConnId(3), Frame::TicketUpdate { ticket: renewed }, h.now);
    h.send(3, 2, b"z", false);
    assert_eq!(h.frames(2), vec![recv(3, b"z", false)]);
    h.advance(Duration::from_secs(31));
    let closed: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Close { conn, reason, .. } => Some((conn, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(ConnId(1), "ticket_expired")]);
}

#[test]
fn timers_do_not_pile_up_for_long_lived_connections() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[]);
    for g in 2..200u64 {
        let t = ticket_with(&control(), 1, &[], g, T0, T0 + 3600);
        h.core
            .handle_frame(ConnId(1), Frame::TicketUpdate { ticket: t }, h.now);
    }
    assert!(
        h.core.timers.len() <= 2,
        "{} timer entries",
        h.core.timers.len()
    );
}
