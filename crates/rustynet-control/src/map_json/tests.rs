//! The fast writer against serde, and sealing.

use super::*;
use crate::netmap_builder::{dns_record, exit_grants, node_facts, peer_info, self_info};
use ipnet::IpNet;
use rustynet_policy::Policy;
use rustynet_proto::netmap::{NETMAP_VERSION, RelayInfo};
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{CertPin, DnsConfig, Netmap, PathPublicKey, PeerInfo};
use rustynet_proto::{NetmapVerifier, SigningPublicKey, TunnelPublicKey, VerifyPolicy};
use std::collections::BTreeMap;

/// The map for `id` as a value, built plainly: the oracle the JSON writer
/// is held to. `None` if the node is not live.
fn build_netmap(net: NetworkView<'_>, id: NodeId, view: &NodeView) -> Option<Netmap> {
    let me = net.nodes.get(&id)?;
    let exits: HashSet<NodeId> = view.exit_grants.iter().copied().collect();
    let mut records = vec![dns_record(me, net.suffix)];
    let peers: Vec<PeerInfo> = view
        .visible_peers
        .iter()
        .filter_map(|peer_id| net.nodes.get(peer_id))
        .map(|peer| {
            records.push(dns_record(peer, net.suffix));
            let routes = view.peer_routes.get(&peer.id);
            peer_info(net, peer, routes, exits.contains(&peer.id))
        })
        .collect();
    Some(Netmap {
        relays: net.relays.to_vec(),
        version: NETMAP_VERSION,
        self_node: self_info(me, net, view),
        peers,
        packet_filter: view.packet_filter.clone(),
        exit_clients: view.exit_clients.clone(),
        forward_filter: view.forward_filter.clone(),
        exit_grants: exit_grants(net, view),
        lan_grants: view.lan_grants.clone(),
        dns: DnsConfig {
            suffix: net.suffix.to_owned(),
            records,
            split: view.split_dns.clone(),
        },
    })
}

fn node(id: u64, name: &str, user: &str, tags: &[&str]) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        hostname: name.to_owned(),
        requested_hostname: name.trim_end_matches("-2").to_owned(),
        user: user.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        tunnel_ip: std::net::Ipv4Addr::new(100, 64, 0, id as u8),
        node_key: TunnelPublicKey([id as u8; 32]),
        signing_key: SigningPublicKey([id as u8; 32]),
        endpoints: vec![format!("192.0.2.{id}:41641").parse().unwrap()],
        advertise_exit_node: false,
        advertised_routes: vec![],
        lan_access: false,
        created_at: 1_800_000_000 + id as i64,
        expired_at: None,
        last_seen: None,
        // Every other node has reported a path key.
        path_key: id
            .is_multiple_of(2)
            .then_some(PathPublicKey([id as u8 + 50; 32])),
        home_relay: None,
        admin_routes: Default::default(),
        key_expires_at: None,
    }
}

fn relays() -> Arc<[RelayInfo]> {
    ["r1", "r2"]
        .iter()
        .enumerate()
        .map(|(i, name)| RelayInfo {
            name: (*name).to_owned(),
            addrs: vec![format!("198.51.100.{}:443", i + 1).parse().unwrap()],
            server_name: format!("{name}.example.net"),
            cert_sha256: CertPin([i as u8 + 1; 32]),
            stun: vec![format!("198.51.100.{}:3478", i + 1).parse().unwrap()],
        })
        .collect()
}

/// Every shape a map entry takes: exit grants, approved LAN and subnet
/// routes (an IPv6 one too), a node that is not granted as exit though it
/// offers it, split DNS, a renamed duplicate, an invisible node.
fn network() -> (LiveNodes, BTreeMap<NodeId, NodeView>) {
    let mut exit = node(3, "exit", "ops", &["tag:exit"]);
    exit.advertise_exit_node = true;
    exit.advertised_routes = vec!["192.168.77.0/24".parse().unwrap()];
    let mut router = node(4, "router", "ops", &["tag:router"]);
    router.advertised_routes = vec![
        "10.20.0.0/16".parse().unwrap(),
        "fd00:20::/64".parse().unwrap(),
    ];
    let mut spare = node(6, "spare-exit", "ops", &[]);
    spare.advertise_exit_node = true;
    let mut alice = node(1, "alice", "alice", &[]);
    alice.lan_access = true;
    // Homes: an announced relay, and one no longer announced (removed).
    alice.home_relay = Some("r1".into());
    exit.home_relay = Some("gone".into());
    let nodes: LiveNodes = [
        alice,
        node(2, "alice-2", "bob", &[]),
        exit,
        router,
        node(5, "hidden", "eve", &[]),
        spare,
    ]
    .into_iter()
    .map(|n| (n.id, Arc::new(n)))
    .collect();
    let policy = Policy::parse(
        r#"{"groups": {"group:staff": ["alice", "bob"]},
            "tag_owners": {"tag:exit": ["ops"], "tag:router": ["ops"]},
            "acls": [
              {"action": "accept", "src": ["group:staff"], "dst": ["*:22"], "proto": "tcp"},
              {"action": "accept", "src": ["alice"], "dst": ["192.168.77.0/24:*"]},
              {"action": "accept", "src": ["alice"], "dst": ["10.20.0.0/16:443"], "proto": "tcp"},
              {"action": "accept", "src": ["group:staff"], "dst": ["node:spare-exit:53"], "proto": "udp"}
            ],
            "exit_nodes": [{"users": ["group:staff"], "nodes": ["tag:exit"]}],
            "route_approvers": [{"routes": ["10.20.0.0/16", "fd00:20::/64"], "nodes": ["tag:router"]}],
            "dns": {"split": {"corp.example": ["192.168.77.53"]}}}"#,
    )
    .unwrap();
    let facts: Vec<_> = nodes.values().map(|n| node_facts(n)).collect();
    (nodes, rustynet_policy::compile(&policy, &facts))
}

#[test]
fn fragment_maps_are_the_serialized_maps_byte_for_byte() {
    for relays in [Arc::from([]), relays()] {
        let announced = !relays.is_empty();
        let (nodes, views) = network();
        let online: HashSet<NodeId> = [NodeId(2), NodeId(3)].into();
        let fragments = PeerFragments::new("rustynet.internal", Arc::new(nodes), Arc::new(online))
            .with_relays(relays);
        same_bytes(&fragments, &views, announced);
    }
}

/// Every map of `fragments` is byte for byte the serialized value, passes
/// the node's checks, and carries what the network puts in.
fn same_bytes(fragments: &PeerFragments, views: &BTreeMap<NodeId, NodeView>, announced: bool) {
    let net = fragments.net();
    let alice = &views[&NodeId(1)];
    // The network exercises what it claims to.
    assert!(alice.exit_grants.contains(&NodeId(3)));
    assert!(alice.peer_routes.contains_key(&NodeId(3)));
    assert!(alice.peer_routes.contains_key(&NodeId(4)));
    // IPv6 appears in a map as a node's own approved route.
    let router = &views[&NodeId(4)];
    assert!(
        router
            .approved_routes
            .iter()
            .any(|r| matches!(r, IpNet::V6(_)))
    );
    assert!(alice.visible_peers.contains(&NodeId(6)));
    let bob = &views[&NodeId(2)];
    assert!(bob.exit_grants.contains(&NodeId(3)) && !bob.peer_routes.contains_key(&NodeId(3)));
    assert!(!alice.split_dns.is_empty());
    assert!(!views[&NodeId(3)].forward_filter.is_empty());
    // The first pass fills the shared slots, the second copies them.
    for pass in ["filling", "filled"] {
        for (id, view) in views {
            let value = build_netmap(net, *id, view).unwrap();
            let fast = fragments.netmap_json(*id, view).unwrap();
            assert_eq!(
                String::from_utf8(fast.payload().to_vec()).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "map of {id}, slots {pass}, relays announced: {announced}"
            );
            value.validate().unwrap();
        }
    }
    // Relays, path keys and homes as announced.
    let bobs = build_netmap(net, NodeId(2), bob).unwrap();
    assert_eq!(bobs.relays.len(), if announced { 2 } else { 0 });
    let peer = |id| bobs.peer(NodeId(id)).unwrap();
    assert_eq!(peer(1).path_key, None);
    assert_eq!(peer(6).path_key, Some(PathPublicKey([56; 32])));
    assert_eq!(peer(1).home_relay.as_deref(), announced.then_some("r1"));
    assert_eq!(peer(3).home_relay, None, "a relay no longer announced");
    let text = String::from_utf8(
        fragments
            .netmap_json(NodeId(2), bob)
            .unwrap()
            .payload()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(text.contains("\"relays\":"), announced);
    // A node that is not live has no map, and is in no map.
    assert!(fragments.netmap_json(NodeId(99), alice).is_none());
    let mut stale = alice.clone();
    stale.visible_peers.insert(1, NodeId(99));
    let fast = fragments.netmap_json(NodeId(1), &stale).unwrap();
    let value = build_netmap(net, NodeId(1), &stale).unwrap();
    assert_eq!(fast.payload(), serde_json::to_vec(&value).unwrap());
    assert!(!value.peers.iter().any(|p| p.node_id == NodeId(99)));
}

#[test]
fn a_sealed_map_verifies_and_carries_the_value() {
    let (nodes, views) = network();
    let fragments = PeerFragments::new("rustynet.internal", Arc::new(nodes), Arc::default())
        .with_relays(relays());
    let net = fragments.net();
    let key = NodeSigningKey::from_seed(&[9; 32]);
    let id = NodeId(1);
    let map_json = fragments.netmap_json(id, &views[&id]).unwrap();
    let expected = map_json.payload().to_vec();
    let sealed = seal_netmap_json(&key, map_json, id, 41, 1_800_000_000, 600);
    assert_eq!(sealed.payload, expected);
    let envelope = sealed.sealed.to_envelope().unwrap();
    let verifier = NetmapVerifier::new(key.public(), id, VerifyPolicy::default());
    let verified = verifier
        .verify(envelope, GenerationRule::After(40), 1_800_000_001)
        .unwrap();
    assert_eq!(verified.generation(), 41);
    assert_eq!(verified.body.expires_at, 1_800_000_600);
    assert_eq!(
        verified.netmap(),
        &build_netmap(net, id, &views[&id]).unwrap()
    );
}

#[test]
fn the_longest_header_fits_its_room() {
    let key = NodeSigningKey::from_seed(&[9; 32]);
    let payload = br#"{"x":1}"#;
    let sealed = seal_netmap_json(
        &key,
        MapJson::from_payload(payload),
        NodeId(u64::MAX),
        u64::MAX,
        i64::MIN,
        -1,
    );
    assert_eq!(sealed.payload, &payload[..]);
    let body = sealed.sealed.body();
    let parsed: rustynet_proto::SignedBody<serde_json::Value> =
        serde_json::from_slice(body).unwrap();
    assert_eq!(parsed.node_id, NodeId(u64::MAX));
    assert_eq!((parsed.issued_at, parsed.expires_at), (i64::MIN, i64::MIN));
    // It fills the room exactly less one byte: the body starts at 1.
    assert_eq!(body.len(), HEAD_ROOM - 1 + payload.len() + 1);
}
