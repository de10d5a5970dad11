//! STUN-style binding on UDP: "what address did my packet come from?".
//!
//! Our own tiny format, not RFC 5389: the tunnel's UDP socket carries it
//! next to tunnel packets (whose first byte is 1..=4), so the first byte tells
//! them apart. The engine sends requests from that socket and parses answers
//! with these functions; the relay answers with [`response`].
//!
//! The request is padded to [`REQUEST_LEN`], longer than any answer, so a
//! spoofed request never makes the relay send more bytes than it received
//! (no amplification, for IPv6 answers too).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First byte of a request.
pub const REQUEST_TYPE: u8 = 0xD2;
/// First byte of a response.
pub const RESPONSE_TYPE: u8 = 0xD3;
/// Format version.
pub const VERSION: u8 = 1;
/// A request is exactly this long: `[0xD2][1][txid 12][zero padding]`.
pub const REQUEST_LEN: usize = 34;
/// Largest response (IPv6): `[0xD3][1][txid 12][6][port 2][ip 16]`.
pub const MAX_RESPONSE_LEN: usize = 33;

/// A transaction id chosen by the requester (random, to match answers).
pub type TxId = [u8; 12];

const _: () = assert!(MAX_RESPONSE_LEN <= REQUEST_LEN);

/// Whether a datagram's first byte marks it as binding traffic.
pub fn is_binding(first_byte: u8) -> bool {
    first_byte == REQUEST_TYPE || first_byte == RESPONSE_TYPE
}

/// A request for `txid`.
pub fn request(txid: &TxId) -> [u8; REQUEST_LEN] {
    let mut pkt = [0u8; REQUEST_LEN];
    pkt[0] = REQUEST_TYPE;
    pkt[1] = VERSION;
    pkt[2..14].copy_from_slice(txid);
    pkt
}

/// The transaction id of a well-formed request; `None` for anything else
/// (wrong size, type, version or non-zero padding), which must not be answered.
pub fn parse_request(pkt: &[u8]) -> Option<TxId> {
    if pkt.len() != REQUEST_LEN || pkt[0] != REQUEST_TYPE || pkt[1] != VERSION {
        return None;
    }
    if pkt[14..].iter().any(|b| *b != 0) {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&pkt[2..14]);
    Some(txid)
}

/// The answer telling the requester `observed` (its source as seen). Returns
/// the buffer and how many of its bytes to send. A v4-mapped IPv6 source is
/// reported as IPv4.
pub fn response(txid: &TxId, observed: SocketAddr) -> ([u8; MAX_RESPONSE_LEN], usize) {
    let mut pkt = [0u8; MAX_RESPONSE_LEN];
    pkt[0] = RESPONSE_TYPE;
    pkt[1] = VERSION;
    pkt[2..14].copy_from_slice(txid);
    pkt[15..17].copy_from_slice(&observed.port().to_be_bytes());
    let len = match observed.ip().to_canonical() {
        IpAddr::V4(v4) => {
            pkt[14] = 4;
            pkt[17..21].copy_from_slice(&v4.octets());
            21
        }
        IpAddr::V6(v6) => {
            pkt[14] = 6;
            pkt[17..33].copy_from_slice(&v6.octets());
            33
        }
    };
    (pkt, len)
}

/// The transaction id and observed address of a well-formed response.
pub fn parse_response(pkt: &[u8]) -> Option<(TxId, SocketAddr)> {
    if pkt.len() < 21 || pkt[0] != RESPONSE_TYPE || pkt[1] != VERSION {
        return None;
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&pkt[2..14]);
    let port = u16::from_be_bytes([pkt[15], pkt[16]]);
    let ip = match (pkt[14], pkt.len()) {
        (4, 21) => IpAddr::V4(Ipv4Addr::new(pkt[17], pkt[18], pkt[19], pkt[20])),
        (6, 33) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&pkt[17..33]);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some((txid, SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_and_response_round_trip() {
        let txid = [7u8; 12];
        let req = request(&txid);
        assert_eq!(parse_request(&req), Some(txid));
        for addr in [
            "203.0.113.5:41641",
            "[2001:db8::5]:9",
            "[::ffff:192.0.2.1]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (buf, len) = response(&txid, addr);
            assert!(len <= REQUEST_LEN, "never amplifies");
            let (got_txid, got) = parse_response(&buf[..len]).unwrap();
            assert_eq!(got_txid, txid);
            assert_eq!(got.ip(), addr.ip().to_canonical());
            assert_eq!(got.port(), addr.port());
        }
        assert!(is_binding(req[0]) && !is_binding(1) && !is_binding(4));
    }

    #[test]
    fn malformed_requests_are_not_answered() {
        let req = request(&[1; 12]);
        assert_eq!(parse_request(&req[..14]), None, "unpadded");
        let mut wrong = req;
        wrong[1] = 2;
        assert_eq!(parse_request(&wrong), None, "version");
        let mut padded = req;
        padded[20] = 1;
        assert_eq!(parse_request(&padded), None, "non-zero padding");
        let mut long = req.to_vec();
        long.push(0);
        assert_eq!(parse_request(&long), None, "too long");
        let (resp, len) = response(&[1; 12], "192.0.2.1:1".parse().unwrap());
        assert_eq!(
            parse_request(&resp[..len]),
            None,
            "a response is not a request"
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_datagrams_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_request(&data);
            let _ = parse_response(&data);
        }
    }
}
