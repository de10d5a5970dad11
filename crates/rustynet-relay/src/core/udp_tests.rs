//! The UDP relay mode on the fake clock: offers, hellos, lookups under the
//! pair rules, forwarding and its refusals, and the end of a session.

use super::*;
use crate::udp;

fn udp_harness() -> Harness {
    let mut h = harness(Limits::default());
    h.core.enable_udp();
    h
}

/// Logs `n` in on connection `id` and returns its offered token.
fn login_udp(h: &mut Harness, id: u64, n: u8, peers: &[u8]) -> udp::Token {
    let got = h.login_with(id, n, ticket(n, peers));
    h.events();
    match got.as_slice() {
        [Frame::LoginOk { .. }, Frame::UdpOffer { token }] => *token,
        other => panic!("unexpected {other:?}"),
    }
}

fn udp_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, n], 41_000 + u16::from(n)))
}

fn hello(h: &mut Harness, n: u8, token: &udp::Token) -> UdpVerdict {
    let mut pkt = udp::hello(token);
    let v = h.core.handle_udp(udp_addr(n), &mut pkt, h.now);
    if v == UdpVerdict::Reply {
        assert_eq!(
            udp::parse_hello(&pkt, true),
            Some(*token),
            "echoed as an ack"
        );
    }
    v
}

fn data_to(id: u32) -> Vec<u8> {
    let mut pkt = vec![4, 0, 0, 0, 1, 2, 3];
    assert!(udp::encode(&mut pkt, id));
    pkt
}

/// Two nodes (1 and 2) that may talk, both registered, ids looked up.
fn pair(h: &mut Harness) -> (u32, u32) {
    let t1 = login_udp(h, 1, 1, &[2]);
    let t2 = login_udp(h, 2, 2, &[1]);
    assert_eq!(hello(h, 1, &t1), UdpVerdict::Reply);
    assert_eq!(hello(h, 2, &t2), UdpVerdict::Reply);
    h.core
        .handle_frame(ConnId(1), Frame::UdpLookup { key: node_key(2) }, h.now);
    let id1 = h.core.udp_id(&node_key(1)).unwrap();
    let id2 = h.core.udp_id(&node_key(2)).unwrap();
    assert_eq!(
        h.frames(1),
        vec![Frame::UdpPeer {
            key: node_key(2),
            id: id2
        }]
    );
    assert_eq!(
        h.frames(2),
        vec![Frame::UdpPeer {
            key: node_key(1),
            id: id1
        }],
        "the other end learns the sender's id too"
    );
    (id1, id2)
}

#[test]
fn without_udp_sockets_nothing_is_offered() {
    let mut h = harness(Limits::default());
    h.login(1, 1, &[2]);
}

#[test]
fn a_registered_pair_forwards_with_the_source_id_in_place() {
    let mut h = udp_harness();
    let (id1, id2) = pair(&mut h);
    let mut pkt = data_to(id2);
    let len = pkt.len();
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut pkt, h.now),
        UdpVerdict::Forward(udp_addr(2))
    );
    assert_eq!(pkt.len(), len);
    assert_eq!(udp::decode(&mut pkt), Some(id1));
    assert_eq!(pkt, vec![4, 0, 0, 0, 1, 2, 3]);
    assert_eq!(h.metrics.udp_forwarded_packets(), 1);
}

#[test]
fn unregistered_sources_unknown_tokens_and_ids_are_dropped() {
    let mut h = udp_harness();
    let (_, id2) = pair(&mut h);
    let spoofed = SocketAddr::from(([192, 0, 2, 66], 5555));
    assert_eq!(
        h.core.handle_udp(spoofed, &mut data_to(id2), h.now),
        UdpVerdict::Drop
    );
    assert_eq!(h.metrics.dropped("udp_unknown_source"), 1);
    let mut forged = udp::hello(&[0xEE; 16]);
    assert_eq!(
        h.core.handle_udp(spoofed, &mut forged, h.now),
        UdpVerdict::Drop
    );
    assert_eq!(h.metrics.dropped("udp_unknown_token"), 1);
    assert_eq!(
        h.core
            .handle_udp(udp_addr(1), &mut data_to(udp::MAX_ID), h.now),
        UdpVerdict::Drop
    );
    let mut junk = [0xD4, 0];
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut junk, h.now),
        UdpVerdict::Drop
    );
    assert_eq!(h.metrics.udp_forwarded_packets(), 0);
}

#[test]
fn a_pair_the_tickets_do_not_allow_gets_no_id_and_no_forwarding() {
    let mut h = udp_harness();
    let t1 = login_udp(&mut h, 1, 1, &[2]);
    // Node 3 does not list node 1.
    let t3 = login_udp(&mut h, 3, 3, &[]);
    hello(&mut h, 1, &t1);
    hello(&mut h, 3, &t3);
    h.core
        .handle_frame(ConnId(1), Frame::UdpLookup { key: node_key(3) }, h.now);
    assert_eq!(
        h.frames(1),
        vec![Frame::PeerGone {
            key: node_key(3),
            reason: GoneReason::NotAllowed
        }]
    );
    assert!(h.frames(3).is_empty(), "node 3 learns nothing");
    // Guessing the id does not help.
    let id3 = h.core.udp_id(&node_key(3)).unwrap();
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut data_to(id3), h.now),
        UdpVerdict::Drop
    );
    // One for the refused lookup, one for the packet.
    assert_eq!(h.metrics.dropped("not_allowed"), 2);
}

#[test]
fn a_new_hello_address_moves_the_session() {
    let mut h = udp_harness();
    let t1 = login_udp(&mut h, 1, 1, &[2]);
    let t2 = login_udp(&mut h, 2, 2, &[1]);
    hello(&mut h, 1, &t1);
    hello(&mut h, 2, &t2);
    let id2 = h.core.udp_id(&node_key(2)).unwrap();
    // Node 2's NAT rebinds: its next hello comes from a new address.
    let new_addr = SocketAddr::from(([203, 0, 113, 99], 9999));
    let mut pkt = udp::hello(&t2);
    assert_eq!(
        h.core.handle_udp(new_addr, &mut pkt, h.now),
        UdpVerdict::Reply
    );
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut data_to(id2), h.now),
        UdpVerdict::Forward(new_addr)
    );
    // The old address no longer speaks for node 2.
    let id1 = h.core.udp_id(&node_key(1)).unwrap();
    assert_eq!(
        h.core.handle_udp(udp_addr(2), &mut data_to(id1), h.now),
        UdpVerdict::Drop
    );
}

#[test]
fn closing_tells_the_watchers_and_frees_the_id() {
    let mut h = udp_harness();
    let (_, id2) = pair(&mut h);
    h.core.handle_closed(ConnId(2), "eof");
    assert_eq!(
        h.frames(1),
        vec![Frame::PeerGone {
            key: node_key(2),
            reason: GoneReason::NotConnected
        }]
    );
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut data_to(id2), h.now),
        UdpVerdict::Drop
    );
    assert_eq!(h.core.udp_id(&node_key(2)), None);
}

#[test]
fn udp_packets_share_the_node_rate() {
    let mut h = harness(Limits {
        rate_bytes_per_sec: 100,
        burst_bytes: 10,
        ..Limits::default()
    });
    h.core.enable_udp();
    let (_, id2) = pair(&mut h);
    assert!(matches!(
        h.core.handle_udp(udp_addr(1), &mut data_to(id2), h.now),
        UdpVerdict::Forward(_)
    ));
    assert_eq!(
        h.core.handle_udp(udp_addr(1), &mut data_to(id2), h.now),
        UdpVerdict::Drop
    );
    assert_eq!(h.metrics.dropped("rate_limited"), 1);
}

#[test]
fn a_batch_memo_gives_the_verdicts_of_full_lookups_and_still_charges_the_rate() {
    let mut h = harness(Limits {
        rate_bytes_per_sec: 1,
        burst_bytes: 3 * 7,
        ..Limits::default()
    });
    h.core.enable_udp();
    let (id1, id2) = pair(&mut h);
    let mut memo = UdpMemo::default();
    let mut batch = |h: &mut Harness, from: SocketAddr, pkt: &mut [u8]| {
        h.core.handle_udp_in_batch(from, pkt, h.now, &mut memo)
    };
    // Three 7-byte datagrams fit the burst; the memo skips the lookups but
    // not the bucket, and every one carries the sender's id.
    for _ in 0..3 {
        let mut pkt = data_to(id2);
        assert_eq!(
            batch(&mut h, udp_addr(1), &mut pkt),
            UdpVerdict::Forward(udp_addr(2))
        );
        assert_eq!(udp::decode(&mut pkt), Some(id1));
    }
    assert_eq!(
        batch(&mut h, udp_addr(1), &mut data_to(id2)),
        UdpVerdict::Drop
    );
    assert_eq!(h.metrics.dropped("rate_limited"), 1);
    // Another source or destination id in the same batch is looked up.
    let spoofed = SocketAddr::from(([192, 0, 2, 66], 5555));
    assert_eq!(batch(&mut h, spoofed, &mut data_to(id2)), UdpVerdict::Drop);
    assert_eq!(h.metrics.dropped("udp_unknown_source"), 1);
}

#[test]
fn a_hello_in_the_batch_clears_the_memo() {
    let mut h = udp_harness();
    let (_, id2) = pair(&mut h);
    let t3 = login_udp(&mut h, 3, 3, &[2]);
    let mut memo = UdpMemo::default();
    assert_eq!(
        h.core
            .handle_udp_in_batch(udp_addr(1), &mut data_to(id2), h.now, &mut memo),
        UdpVerdict::Forward(udp_addr(2))
    );
    // Node 3 takes over node 1's address (a NAT reused the mapping) in the
    // middle of the batch: node 1's route must not outlive it.
    let mut pkt = udp::hello(&t3);
    assert_eq!(
        h.core
            .handle_udp_in_batch(udp_addr(1), &mut pkt, h.now, &mut memo),
        UdpVerdict::Reply
    );
    assert_eq!(
        h.core
            .handle_udp_in_batch(udp_addr(1), &mut data_to(id2), h.now, &mut memo),
        UdpVerdict::Drop,
        "node 3 may not send to node 2 (node 2 does not list it)"
    );
    assert_eq!(h.metrics.dropped("not_allowed"), 1);
}
