use super::*;
use crate::path::test_rng::TestRng;

fn pair() -> (PathSecret, PathSecret) {
    (
        PathSecret::from_bytes([1; 32]),
        PathSecret::from_bytes([2; 32]),
    )
}

/// `a`'s key for `b` and `b`'s key for `a`.
fn keys() -> (ProbeKey, ProbeKey) {
    let (a, b) = pair();
    (
        ProbeKey::new(&a, b.public()).expect("valid"),
        ProbeKey::new(&b, a.public()).expect("valid"),
    )
}

fn seal(k: &mut ProbeKey, msg: &Message, wall_ms: u64, rng: &mut TestRng) -> Vec<u8> {
    let mut out = Vec::new();
    k.seal(msg, wall_ms, rng, &mut out).expect("seal");
    out
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn every_message_round_trips() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(1);
    let msgs = [
        Message::Ping { txid: [9; 12] },
        Message::Pong {
            txid: [3; 12],
            observed: Some(addr("198.51.100.7:41641")),
        },
        Message::Pong {
            txid: [4; 12],
            observed: Some(addr("[2001:db8::1]:5")),
        },
        Message::Pong {
            txid: [5; 12],
            observed: None,
        },
        Message::CallMeMaybe { candidates: vec![] },
        Message::CallMeMaybe {
            candidates: vec![addr("192.0.2.1:1"), addr("[2001:db8::2]:65535")],
        },
    ];
    for (i, m) in msgs.iter().enumerate() {
        let wire = seal(&mut ab, m, 1_000 + i as u64, &mut rng);
        assert!(is_probe(&wire));
        assert_eq!(sender_of(&wire), Ok(ab.ours));
        assert_eq!(ba.open(&wire).as_ref(), Ok(m), "message {i}");
    }
}

#[test]
fn mapped_ipv6_addresses_travel_as_ipv4() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(2);
    let m = Message::Pong {
        txid: [0; 12],
        observed: Some(addr("[::ffff:192.0.2.9]:7")),
    };
    let wire = seal(&mut ab, &m, 5, &mut rng);
    let Ok(Message::Pong { observed, .. }) = ba.open(&wire) else {
        panic!("pong expected");
    };
    assert_eq!(observed, Some(addr("192.0.2.9:7")));
}

#[test]
fn the_largest_message_fits_the_size_cap_and_more_candidates_are_refused() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(3);
    let full: Vec<SocketAddr> = (0..16u16)
        .map(|i| SocketAddr::new("2001:db8::1".parse().expect("ip"), i))
        .collect();
    let m = Message::CallMeMaybe { candidates: full };
    let wire = seal(&mut ab, &m, 1, &mut rng);
    assert_eq!(wire.len(), MAX_PROBE_LEN);
    assert_eq!(ba.open(&wire), Ok(m));

    let too_many = Message::CallMeMaybe {
        candidates: vec![addr("192.0.2.1:1"); 17],
    };
    let mut out = Vec::new();
    assert!(matches!(
        ab.seal(&too_many, 2, &mut rng, &mut out),
        Err(PathError::TooManyCandidates(17))
    ));
}

#[test]
fn malformed_datagrams_are_refused_before_any_crypto() {
    let (mut ab, _) = keys();
    let mut rng = TestRng::new(4);
    let good = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 1, &mut rng);
    assert_eq!(
        sender_of(&good[..MIN_PROBE_LEN - 1]),
        Err(Refusal::Malformed)
    );
    let mut long = good.clone();
    long.resize(MAX_PROBE_LEN + 1, 0);
    assert_eq!(sender_of(&long), Err(Refusal::Malformed));
    let mut version = good.clone();
    version[1] = 2;
    assert_eq!(sender_of(&version), Err(Refusal::Malformed));
    let mut kind = good.clone();
    kind[0] = 1;
    assert!(!is_probe(&kind));
    assert_eq!(sender_of(&kind), Err(Refusal::Malformed));
    assert_eq!(sender_of(&[]), Err(Refusal::Malformed));
}

#[test]
fn a_replayed_probe_is_refused_and_a_fresh_one_still_accepted() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(5);
    let p1 = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 100, &mut rng);
    let p2 = seal(&mut ab, &Message::Ping { txid: [2; 12] }, 100, &mut rng);
    assert!(ba.open(&p1).is_ok());
    assert_eq!(ba.open(&p1), Err(Refusal::Replayed));
    assert!(ba.open(&p2).is_ok(), "same millisecond, next counter");
    assert_eq!(ba.open(&p2), Err(Refusal::Replayed));
}

#[test]
fn the_send_counter_never_goes_back_even_if_the_clock_does() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(6);
    let p1 = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 10_000, &mut rng);
    let p2 = seal(&mut ab, &Message::Ping { txid: [2; 12] }, 1, &mut rng);
    assert!(ba.open(&p1).is_ok());
    assert!(ba.open(&p2).is_ok(), "counter 10_001, not 1");
    assert_eq!(ab.last_sent, 10_001);
}

#[test]
fn a_restarted_sender_is_accepted_when_its_clock_moved_on_and_refused_when_it_went_back() {
    let (a, b) = pair();
    let mut ba = ProbeKey::new(&b, a.public()).expect("valid");
    let mut rng = TestRng::new(7);
    let mut run1 = ProbeKey::new(&a, b.public()).expect("valid");
    assert!(
        ba.open(&seal(
            &mut run1,
            &Message::Ping { txid: [1; 12] },
            50_000,
            &mut rng
        ))
        .is_ok()
    );
    let mut run2 = ProbeKey::new(&a, b.public()).expect("valid");
    assert!(
        ba.open(&seal(
            &mut run2,
            &Message::Ping { txid: [2; 12] },
            60_000,
            &mut rng
        ))
        .is_ok()
    );
    let mut run3 = ProbeKey::new(&a, b.public()).expect("valid");
    let stale = seal(
        &mut run3,
        &Message::Ping { txid: [3; 12] },
        20_000,
        &mut rng,
    );
    assert_eq!(ba.open(&stale), Err(Refusal::TooOld));
}

#[test]
fn tampering_anywhere_fails_authentication_and_moves_nothing() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(8);
    let good = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 77, &mut rng);
    // Nonce, ciphertext and tag bytes (the sender key is covered below).
    for i in [
        2 + 32,
        2 + 32 + 23,
        HEADER_LEN,
        HEADER_LEN + 9,
        good.len() - 1,
    ] {
        let mut bad = good.clone();
        bad[i] ^= 0x40;
        assert_eq!(ba.open(&bad), Err(Refusal::AuthFailed), "byte {i}");
    }
    assert!(ba.open(&good).is_ok(), "the window did not move");
}

#[test]
fn a_probe_sealed_under_another_key_is_refused() {
    // C seals with its own key to B and relabels the probe as coming from
    // A: the tag does not verify under the A-B key.
    let (a, b) = pair();
    let c = PathSecret::from_bytes([3; 32]);
    let mut ba = ProbeKey::new(&b, a.public()).expect("valid");
    let mut cb = ProbeKey::new(&c, b.public()).expect("valid");
    let mut rng = TestRng::new(9);
    let mut wire = seal(&mut cb, &Message::Ping { txid: [1; 12] }, 1, &mut rng);
    assert_eq!(
        ba.open(&wire),
        Err(Refusal::UnknownSender),
        "still labelled C"
    );
    wire[2..34].copy_from_slice(&a.public().0);
    assert_eq!(sender_of(&wire), Ok(a.public()));
    assert_eq!(ba.open(&wire), Err(Refusal::AuthFailed));
}

#[test]
fn a_probe_reflected_to_its_sender_is_not_from_a_peer() {
    let (mut ab, _) = keys();
    let mut rng = TestRng::new(10);
    let wire = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 1, &mut rng);
    // A's lookup by sender key would find no peer; its key for B refuses too.
    assert_eq!(sender_of(&wire), Ok(ab.ours));
    assert_eq!(ab.open(&wire), Err(Refusal::UnknownSender));
}

#[test]
fn authentic_garbage_is_refused_as_a_bad_body() {
    let (mut ab, mut ba) = keys();
    let mut rng = TestRng::new(11);
    let mut trailing = seal(&mut ab, &Message::Ping { txid: [1; 12] }, 1, &mut rng);
    // Re-seal the same plaintext plus one byte under the real key.
    let nonce = [5u8; NONCE_LEN];
    trailing.truncate(HEADER_LEN - NONCE_LEN);
    trailing.extend_from_slice(&nonce);
    let mut body = vec![MSG_PING];
    body.extend_from_slice(&2u64.to_be_bytes());
    body.extend_from_slice(&[1; 12]);
    body.push(0);
    let tag = ab
        .cipher
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &trailing, &mut body)
        .expect("seal");
    trailing.extend_from_slice(&body);
    trailing.extend_from_slice(&tag);
    assert_eq!(ba.open(&trailing), Err(Refusal::BadBody));
}

#[test]
fn decode_refuses_unknown_types_families_and_oversized_lists() {
    assert_eq!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    let mut pong = vec![MSG_PONG, 0, 0, 0, 0, 0, 0, 0, 1];
    pong.extend_from_slice(&[0; 12]);
    pong.push(5);
    assert_eq!(decode(&pong), None, "family 5");
    let mut cmm = vec![MSG_CALL_ME_MAYBE, 0, 0, 0, 0, 0, 0, 0, 1, 17];
    cmm.extend(std::iter::repeat_n(0u8, 17 * 7));
    assert_eq!(decode(&cmm), None);
    let none_in_list = [MSG_CALL_ME_MAYBE, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0];
    assert_eq!(
        decode(&none_in_list),
        None,
        "a candidate must be an address"
    );
}
