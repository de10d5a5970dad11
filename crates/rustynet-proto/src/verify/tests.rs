use super::*;
use crate::keys::{NodeSigningKey, TunnelPublicKey};
use crate::netmap::{DnsConfig, NETMAP_VERSION, PeerInfo, SelfInfo};

const NOW: i64 = 1_800_000_000;

fn netmap(node: u64) -> Netmap {
    Netmap {
        relays: Vec::new(),
        version: NETMAP_VERSION,
        self_node: SelfInfo {
            node_id: NodeId(node),
            hostname: "a".into(),
            dns_name: "a.rustynet.internal".into(),
            tunnel_ip: "100.64.0.1".parse().unwrap(),
            node_key: TunnelPublicKey([1; 32]),
            user: "alice".into(),
            tags: vec![],
            advertise_exit_node: false,
            advertised_routes: vec![],
            approved_routes: vec![],
        },
        peers: vec![PeerInfo {
            path_key: None,
            node_id: NodeId(node + 1),
            hostname: "b".into(),
            dns_name: "b.rustynet.internal".into(),
            node_key: TunnelPublicKey([2; 32]),
            tunnel_ip: "100.64.0.2".parse().unwrap(),
            endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
            home_relay: None,
            allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
            online: true,
            exit_node: false,
        }],
        packet_filter: vec![],
        exit_clients: vec![],
        forward_filter: vec![],
        exit_grants: vec![],
        lan_grants: vec![],
        dns: DnsConfig {
            suffix: "rustynet.internal".into(),
            records: vec![],
            split: vec![],
        },
    }
}

fn body(generation: u64, issued_at: i64, expires_at: i64) -> SignedBody<Netmap> {
    SignedBody {
        kind: BodyKind::Netmap,
        node_id: NodeId(7),
        generation,
        issued_at,
        expires_at,
        payload: netmap(7),
    }
}

fn setup() -> (NodeSigningKey, NetmapVerifier) {
    let key = NodeSigningKey::from_seed(&[3; 32]);
    let verifier = NetmapVerifier::new(key.public(), NodeId(7), VerifyPolicy::default());
    (key, verifier)
}

fn wire(key: &NodeSigningKey, body: &SignedBody<Netmap>) -> Vec<u8> {
    SignedEnvelope::seal(key, body)
        .unwrap()
        .to_json()
        .into_bytes()
}

#[test]
fn accepts_fresh_newer_map() {
    let (key, v) = setup();
    let ok = v
        .verify_wire(
            &wire(&key, &body(5, NOW, NOW + 600)),
            GenerationRule::After(4),
            NOW,
        )
        .unwrap();
    assert_eq!(ok.generation(), 5);
    assert_eq!(ok.netmap().peers.len(), 1);
}

#[test]
fn rejects_replay_and_equal_generation() {
    let (key, v) = setup();
    let w = wire(&key, &body(5, NOW, NOW + 600));
    for hw in [5, 6] {
        assert!(matches!(
            v.verify_wire(&w, GenerationRule::After(hw), NOW),
            Err(VerifyError::Replayed { got: 5, .. })
        ));
    }
}

#[test]
fn rejects_expired_and_future_dated() {
    let (key, v) = setup();
    let expired = wire(&key, &body(5, NOW - 700, NOW - 100));
    assert!(matches!(
        v.verify_wire(&expired, GenerationRule::After(0), NOW),
        Err(VerifyError::Expired { .. })
    ));
    let future = wire(&key, &body(5, NOW + 61, NOW + 600));
    assert!(matches!(
        v.verify_wire(&future, GenerationRule::After(0), NOW),
        Err(VerifyError::FutureDated { .. })
    ));
    // Within the skew bound is fine.
    let slight = wire(&key, &body(5, NOW + 59, NOW + 600));
    assert!(
        v.verify_wire(&slight, GenerationRule::After(0), NOW)
            .is_ok()
    );
}

#[test]
fn rejects_bad_signature_and_foreign_key() {
    let (key, v) = setup();
    let mut env = SignedEnvelope::seal(&key, &body(5, NOW, NOW + 600)).unwrap();
    env.sig.0[10] ^= 0x40;
    assert_eq!(
        v.verify(env, GenerationRule::After(0), NOW),
        Err(VerifyError::BadSignature)
    );
    let other = NodeSigningKey::from_seed(&[4; 32]);
    assert_eq!(
        v.verify_wire(
            &wire(&other, &body(5, NOW, NOW + 600)),
            GenerationRule::After(0),
            NOW
        ),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn rejects_body_tampering_even_with_same_json_meaning() {
    let (key, v) = setup();
    let mut env = SignedEnvelope::seal(&key, &body(5, NOW, NOW + 600)).unwrap();
    // Re-encode the body with extra whitespace: same JSON, different bytes.
    let spaced = env.body.get().replacen('{', "{ ", 1);
    env.body = serde_json::value::RawValue::from_string(spaced).unwrap();
    assert_eq!(
        v.verify(env, GenerationRule::After(0), NOW),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_v1_envelope_parses_and_is_refused_for_its_version() {
    let (_, v) = setup();
    // v1 carried the body base64-encoded; a daemon upgraded with one in its
    // stored state must still read that state and refuse the map by reason.
    let sig = "A".repeat(86) + "==";
    let old = format!(r#"{{"v":1,"body":"eyJraW5kIjoibmV0bWFwIn0=","sig":"{sig}"}}"#);
    let env: SignedEnvelope = serde_json::from_str(&old).unwrap();
    assert_eq!(
        v.verify(env, GenerationRule::Exactly(5), NOW),
        Err(VerifyError::Version(1))
    );
    // A v2 envelope whose body is not an object never verifies.
    for body in ["\"eyJr\"", "[1]", "7", "null"] {
        let wire = format!(r#"{{"v":2,"body":{body},"sig":"{sig}"}}"#);
        assert_eq!(
            v.verify_wire(wire.as_bytes(), GenerationRule::After(0), NOW),
            Err(VerifyError::BadSignature),
            "{body}"
        );
    }
}

#[test]
fn rejects_an_envelope_of_another_version() {
    let (key, v) = setup();
    let mut env = SignedEnvelope::seal(&key, &body(5, NOW, NOW + 600)).unwrap();
    env.v = 1;
    assert_eq!(
        v.verify(env, GenerationRule::After(0), NOW),
        Err(VerifyError::Version(1))
    );
}

#[test]
fn rejects_other_node_oversize_and_garbage() {
    let (key, v) = setup();
    let mut b = body(5, NOW, NOW + 600);
    b.node_id = NodeId(8);
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::WrongNode { .. })
    ));
    let small = NetmapVerifier::new(
        key.public(),
        NodeId(7),
        VerifyPolicy {
            max_bytes: 64,
            ..VerifyPolicy::default()
        },
    );
    assert!(matches!(
        small.verify_wire(
            &wire(&key, &body(5, NOW, NOW + 600)),
            GenerationRule::After(0),
            NOW
        ),
        Err(VerifyError::TooLarge { .. })
    ));
    for junk in [
        &b"\xff\xfe"[..],
        b"{}",
        b"[]",
        b"{\"v\":1,\"body\":\"!!\",\"sig\":\"\"}",
    ] {
        assert!(matches!(
            v.verify_wire(junk, GenerationRule::After(0), NOW),
            Err(VerifyError::Malformed(_))
        ));
    }
}

#[test]
fn rejects_validity_out_of_bounds_and_invalid_payload() {
    let (key, v) = setup();
    let long = wire(&key, &body(5, NOW, NOW + 3 * 24 * 3600));
    assert!(matches!(
        v.verify_wire(&long, GenerationRule::After(0), NOW),
        Err(VerifyError::Validity(_))
    ));
    let mut b = body(5, NOW, NOW + 600);
    b.payload.peers[0]
        .allowed_ips
        .push("0.0.0.0/0".parse().unwrap());
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::DefaultRoute(_)))
    ));
    let mut b = body(5, NOW, NOW + 600);
    b.payload.self_node.tunnel_ip = "10.0.0.1".parse().unwrap();
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::TunnelIp(_)))
    ));
    // A filter rule with no source must never be read as "any source".
    let allow = |src: Vec<ipnet::IpNet>, ports: Vec<crate::PortRange>| crate::FilterRule {
        src,
        dst: vec!["100.64.0.1/32".parse().unwrap()],
        proto: crate::Proto::Tcp,
        ports,
    };
    let mut b = body(5, NOW, NOW + 600);
    b.payload.packet_filter.push(allow(vec![], vec![]));
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::EmptyFilterField {
            field: "src",
            index: 0,
            ..
        }))
    ));
    // One rule naming more combinations than the daemon will load.
    let many_src = (0..300u32)
        .map(|i| ipnet::IpNet::V4(std::net::Ipv4Addr::from(0x6440_0100 + i).into()))
        .collect();
    let many_ports = (1..=300).map(crate::PortRange::single).collect();
    let mut b = body(5, NOW, NOW + 600);
    b.payload.forward_filter.push(allow(many_src, many_ports));
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::TooMany {
            count: 90_000,
            ..
        }))
    ));
}

#[test]
fn rejects_a_peer_endpoint_that_points_back_at_the_node() {
    let (key, v) = setup();
    for bad in [
        "[::ffff:127.0.0.1]:41641",
        "100.100.100.100:53",
        "100.64.0.9:41641",
        "169.254.169.254:80",
        "0.0.0.0:41641",
        "239.1.2.3:41641",
    ] {
        let mut b = body(5, NOW, NOW + 600);
        b.payload.peers[0].endpoints = vec![bad.parse().unwrap()];
        assert!(
            matches!(
                v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
                Err(VerifyError::Invalid(NetmapError::Endpoint { .. }))
            ),
            "{bad}"
        );
    }
}

#[test]
fn rejects_a_map_expanding_to_too_many_set_elements() {
    let (key, v) = setup();
    // 17 rules of 64 sources × 64 destinations × 4 ports: each within the
    // per-rule bound, together past the map's set-element cap.
    let nets = |base: u32| -> Vec<ipnet::IpNet> {
        (0..64u32)
            .map(|i| ipnet::IpNet::V4(std::net::Ipv4Addr::from(base + i).into()))
            .collect()
    };
    let rule = crate::FilterRule {
        src: nets(0x6440_0100),
        dst: nets(0x6440_0200),
        proto: crate::Proto::Tcp,
        ports: (1..=4).map(crate::PortRange::single).collect(),
    };
    let mut b = body(5, NOW, NOW + 600);
    b.payload.packet_filter = vec![rule; 17];
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::TooMany {
            what: "nftables set elements",
            ..
        }))
    ));
    b.payload.packet_filter.truncate(16);
    assert!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW)
            .is_ok()
    );
}

#[test]
fn restore_requires_exact_generation() {
    let (key, v) = setup();
    let w = wire(&key, &body(5, NOW, NOW + 600));
    assert!(v.verify_wire(&w, GenerationRule::Exactly(5), NOW).is_ok());
    assert!(matches!(
        v.verify_wire(&w, GenerationRule::Exactly(6), NOW),
        Err(VerifyError::GenerationMismatch { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let (_, v) = setup();
        proptest::prop_assert!(v.verify_wire(&data, GenerationRule::After(0), NOW).is_err());
    }
}

#[test]
fn a_rotated_key_is_followed_from_the_pin_and_only_from_it() {
    use crate::handover::KeyHandover;
    let (old, v) = setup();
    let new = NodeSigningKey::from_seed(&[4; 32]);
    let handover = KeyHandover::sign(&old, new.public(), NOW);
    let by_new = || SignedEnvelope::seal(&new, &body(5, NOW, NOW + 600)).unwrap();
    // The pin still verifies: no switch, handovers or not.
    let by_old = SignedEnvelope::seal(&old, &body(5, NOW, NOW + 600)).unwrap();
    let (_, rotated) = v
        .verify_following(
            by_old,
            std::slice::from_ref(&handover),
            GenerationRule::After(0),
            NOW,
        )
        .unwrap();
    assert_eq!(rotated, None);
    // Signed by the successor: followed, and the successor returned.
    let (map, rotated) = v
        .verify_following(
            by_new(),
            std::slice::from_ref(&handover),
            GenerationRule::After(0),
            NOW,
        )
        .unwrap();
    assert_eq!(rotated, Some(new.public()));
    assert_eq!(map.generation(), 5);
    // Without the handover, or with one the pin did not sign: refused.
    assert_eq!(
        v.verify_following(by_new(), &[], GenerationRule::After(0), NOW)
            .unwrap_err(),
        VerifyError::BadSignature
    );
    let forged = KeyHandover::sign(&new, NodeSigningKey::from_seed(&[5; 32]).public(), NOW);
    assert_eq!(
        v.verify_following(by_new(), &[forged], GenerationRule::After(0), NOW)
            .unwrap_err(),
        VerifyError::BadSignature
    );
    // The successor's map still passes every other check.
    assert!(matches!(
        v.verify_following(by_new(), &[handover], GenerationRule::After(9), NOW),
        Err(VerifyError::Replayed { .. })
    ));
}

#[test]
fn a_map_past_the_tunnel_engines_peer_bounds_is_refused() {
    let (key, v) = setup();
    let mut b = body(5, NOW, NOW + 600);
    let peer = b.payload.peers[0].clone();
    b.payload.peers = (0..=crate::netmap::MAX_PEERS as u64)
        .map(|i| PeerInfo {
            node_id: NodeId(100 + i),
            ..peer.clone()
        })
        .collect();
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::TooMany {
            what: "peers",
            ..
        }))
    ));
    let mut b = body(5, NOW, NOW + 600);
    b.payload.peers[0].allowed_ips = (0..=crate::netmap::MAX_ALLOWED_IPS as u32)
        .map(|i| ipnet::IpNet::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into()))
        .collect();
    assert!(matches!(
        v.verify_wire(&wire(&key, &b), GenerationRule::After(0), NOW),
        Err(VerifyError::Invalid(NetmapError::TooMany {
            what: "peer allowed_ips",
            ..
        }))
    ));
}
