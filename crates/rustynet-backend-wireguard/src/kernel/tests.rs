//! Message building and parsing of the kernel engine (no kernel needed).

use std::net::SocketAddr;

use rustynet_tunnel::{InterfaceConfig, PeerConfig, PeerDiff, TunnelPrivateKey, TunnelPublicKey};

use super::netlink::*;
use super::*;

fn header(msg: &[u8]) -> (u32, u16, u16) {
    (
        u32::from_ne_bytes(msg[0..4].try_into().unwrap()),
        u16::from_ne_bytes(msg[4..6].try_into().unwrap()),
        u16::from_ne_bytes(msg[6..8].try_into().unwrap()),
    )
}

fn peer(b: u8, nets: &[&str], ep: Option<&str>) -> PeerConfig {
    PeerConfig {
        candidates: Vec::new(),
        home_relay: None,
        path_key: None,
        public_key: TunnelPublicKey([b; 32]),
        endpoint: ep.map(|e| e.parse().unwrap()),
        allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
        persistent_keepalive_secs: Some(25),
    }
}

/// Attributes of the first nested list under `kind` in a genl message body.
fn find(body: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(body).find(|a| a.kind == kind).map(|a| a.payload)
}

#[test]
fn new_link_message_asks_for_kind_wireguard() {
    let msg = new_link_msg("rn0");
    let (len, ty, flags) = header(&msg);
    assert_eq!(len as usize, msg.len());
    assert_eq!(ty, RTM_NEWLINK);
    assert_eq!(flags & NLM_F_CREATE, NLM_F_CREATE);
    assert_eq!(flags & NLM_F_EXCL, NLM_F_EXCL);
    let body = &msg[16 + 16..];
    assert_eq!(find(body, IFLA_IFNAME), Some(&b"rn0\0"[..]));
    let info = find(body, IFLA_LINKINFO).unwrap();
    assert_eq!(find(info, IFLA_INFO_KIND), Some(&b"wireguard\0"[..]));
    // The nested flag must be set on the wire.
    let raw_kind = u16::from_ne_bytes(body[10..12].try_into().unwrap());
    assert_eq!(raw_kind & NLA_F_NESTED, NLA_F_NESTED);
}

#[test]
fn device_message_carries_key_port_and_mark() {
    let cfg = InterfaceConfig {
        ifname: "rn0".into(),
        private_key: TunnelPrivateKey::from_bytes([0x5a; 32]),
        listen_port: 51820,
        mtu: 1420,
        fwmark: Some(0xca6c),
    };
    let msg = set_device_msg(0x1234, &cfg);
    let (_, ty, _) = header(&msg);
    assert_eq!(ty, 0x1234);
    assert_eq!(msg[16], WG_CMD_SET_DEVICE);
    let body = &msg[20..];
    assert_eq!(find(body, WGDEVICE_A_PRIVATE_KEY), Some(&[0x5a; 32][..]));
    assert_eq!(
        find(body, WGDEVICE_A_LISTEN_PORT).and_then(u16_of),
        Some(51820)
    );
    assert_eq!(
        find(body, WGDEVICE_A_FWMARK),
        Some(&0xca6cu32.to_ne_bytes()[..])
    );
}

#[test]
fn peer_diff_is_sent_without_replace_peers() {
    let diff = PeerDiff {
        added: vec![peer(
            2,
            &["100.64.0.2/32", "fd00::/64"],
            Some("192.0.2.7:51820"),
        )],
        removed: vec![TunnelPublicKey([1; 32])],
        updated: vec![],
        unchanged: vec![TunnelPublicKey([3; 32])],
    };
    let msgs = peer_diff_msgs(0x20, "rn0", &diff);
    assert_eq!(msgs.len(), 1);
    let body = &msgs[0][20..];
    assert!(
        find(body, WGDEVICE_A_FLAGS).is_none(),
        "must not replace all peers"
    );
    let peers: Vec<_> = attrs(find(body, WGDEVICE_A_PEERS).unwrap()).collect();
    assert_eq!(peers.len(), 2, "unchanged peers are not sent");
    let removed = peers[0].payload;
    assert_eq!(find(removed, WGPEER_A_PUBLIC_KEY), Some(&[1u8; 32][..]));
    assert_eq!(
        find(removed, WGPEER_A_FLAGS),
        Some(&WGPEER_F_REMOVE_ME.to_ne_bytes()[..])
    );
    let added = peers[1].payload;
    assert_eq!(
        find(added, WGPEER_A_FLAGS),
        Some(&WGPEER_F_REPLACE_ALLOWEDIPS.to_ne_bytes()[..])
    );
    assert_eq!(
        find(added, WGPEER_A_ENDPOINT).and_then(parse_sockaddr),
        Some("192.0.2.7:51820".parse().unwrap())
    );
    let ips: Vec<_> = attrs(find(added, WGPEER_A_ALLOWEDIPS).unwrap()).collect();
    assert_eq!(ips.len(), 2);
    assert_eq!(
        find(ips[0].payload, WGALLOWEDIP_A_IPADDR),
        Some(&[100, 64, 0, 2][..])
    );
    assert_eq!(
        find(ips[0].payload, WGALLOWEDIP_A_CIDR_MASK),
        Some(&[32u8][..])
    );
    assert_eq!(
        find(ips[1].payload, WGALLOWEDIP_A_FAMILY).and_then(u16_of),
        Some(libc::AF_INET6 as u16)
    );
}

#[test]
fn large_diffs_are_split_and_nothing_is_lost() {
    let added: Vec<_> = (0..400u32)
        .map(|i| {
            let mut k = [7u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            PeerConfig {
                public_key: TunnelPublicKey(k),
                ..peer(
                    0,
                    &["10.0.0.0/8", "192.0.2.0/24"],
                    Some("[2001:db8::1]:51820"),
                )
            }
        })
        .collect();
    let diff = PeerDiff {
        added,
        ..PeerDiff::default()
    };
    let msgs = peer_diff_msgs(0x20, "rn0", &diff);
    assert!(msgs.len() > 1);
    let mut total = 0;
    for m in &msgs {
        assert!(m.len() <= MAX_SET_MSG + 512);
        let (len, _, _) = header(m);
        assert_eq!(len as usize, m.len());
        total += attrs(find(&m[20..], WGDEVICE_A_PEERS).unwrap()).count();
    }
    assert_eq!(total, 400);
    assert!(peer_diff_msgs(0x20, "rn0", &PeerDiff::default()).is_empty());
}

#[test]
fn device_dump_is_parsed_into_stats() {
    let mut m = MsgBuilder::new(0x20, 0).raw(&genl_header(WG_CMD_GET_DEVICE, 1));
    m.attr_u16(WGDEVICE_A_LISTEN_PORT, 41000);
    let peers = m.nest_start(WGDEVICE_A_PEERS);
    let p = m.nest_start(0);
    m.attr(WGPEER_A_PUBLIC_KEY, &[9; 32]);
    let ep: SocketAddr = "[2001:db8::9]:1234".parse().unwrap();
    m.attr(WGPEER_A_ENDPOINT, &sockaddr_bytes(&ep));
    m.attr(WGPEER_A_RX_BYTES, &77u64.to_ne_bytes());
    m.attr(WGPEER_A_TX_BYTES, &88u64.to_ne_bytes());
    let mut ts = [0u8; 16];
    ts[..8].copy_from_slice(&0u64.to_ne_bytes());
    m.attr(WGPEER_A_LAST_HANDSHAKE_TIME, &ts);
    m.nest_end(p);
    m.nest_end(peers);
    let msg = m.finish();
    let stats = parse_device(&[Reply {
        payload: msg[16..].to_vec(),
    }]);
    assert_eq!(stats.listen_port, 41000);
    assert_eq!(stats.peers.len(), 1);
    let p = &stats.peers[0];
    assert_eq!(p.public_key, TunnelPublicKey([9; 32]));
    assert_eq!(p.endpoint, Some(ep));
    assert_eq!((p.rx_bytes, p.tx_bytes), (77, 88));
    assert_eq!(p.last_handshake, None, "zero time means never");
}

#[test]
fn malformed_attributes_stop_parsing_without_panic() {
    assert_eq!(attrs(&[0xff, 0xff, 1, 0, 1]).count(), 0);
    assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    assert!(parse_sockaddr(&[1, 2]).is_none());
    assert!(parse_peer(&[8, 0, 7, 0, 1, 2, 3, 4], SystemTime::now()).is_none());
}
