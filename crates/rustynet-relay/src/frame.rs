//! Relay frames: `[type u8][len u32 BE][body]` inside the TLS stream.
//!
//! The decoder is the first thing untrusted bytes meet, so it checks the
//! header before buffering a body: an unknown type, a fixed-size frame of the
//! wrong size or a body over its type's limit is an error as soon as the five
//! header bytes are in, and no memory is reserved for it. It never panics on
//! any input (property test here, fuzz target under `fuzz/`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use rustynet_proto::{Signature, TunnelPublicKey};

/// Bytes before each frame's body.
pub const HEADER_LEN: usize = 5;
/// Largest relayed payload (one tunnel packet, with room for GSO-less MTUs).
pub const MAX_PAYLOAD: usize = 65_535;
/// Length of a node key on the wire.
pub const KEY_LEN: usize = 32;
/// Largest refusal text; longer reasons are cut.
pub const MAX_REASON: usize = 200;
/// Protocol version the server announces in its challenge.
pub const PROTOCOL_VERSION: u8 = 1;

const SIG_LEN: usize = 64;

/// Frame type bytes.
mod ty {
    pub const SERVER_CHALLENGE: u8 = 1;
    pub const LOGIN: u8 = 2;
    pub const LOGIN_OK: u8 = 3;
    pub const LOGIN_REFUSED: u8 = 4;
    pub const SEND: u8 = 5;
    pub const RECV: u8 = 6;
    pub const SEND_PROBE: u8 = 7;
    pub const RECV_PROBE: u8 = 8;
    pub const PEER_GONE: u8 = 9;
    pub const PING: u8 = 10;
    pub const PONG: u8 = 11;
    pub const TICKET_UPDATE: u8 = 12;
    pub const UDP_OFFER: u8 = 13;
    pub const UDP_LOOKUP: u8 = 14;
    pub const UDP_PEER: u8 = 15;
}

/// Why a login was refused (the code in `LoginRefused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// The ticket failed verification (the text says which check).
    Ticket,
    /// The login signature does not verify with the ticket's login key.
    Signature,
    /// A frame out of order or of the wrong direction.
    Protocol,
    /// A code this version does not know.
    Other(u8),
}

impl RefuseCode {
    fn to_u8(self) -> u8 {
        match self {
            RefuseCode::Ticket => 1,
            RefuseCode::Signature => 2,
            RefuseCode::Protocol => 3,
            RefuseCode::Other(c) => c,
        }
    }
    fn from_u8(c: u8) -> Self {
        match c {
            1 => RefuseCode::Ticket,
            2 => RefuseCode::Signature,
            3 => RefuseCode::Protocol,
            c => RefuseCode::Other(c),
        }
    }
}

/// Why the relay could not deliver to a key (the reason in `PeerGone`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// The destination has no connection to this relay.
    NotConnected,
    /// The two tickets do not list each other.
    NotAllowed,
    /// The sender's or the destination's ticket has expired.
    Expired,
    /// A reason this version does not know.
    Other(u8),
}

impl GoneReason {
    fn to_u8(self) -> u8 {
        match self {
            GoneReason::NotConnected => 1,
            GoneReason::NotAllowed => 2,
            GoneReason::Expired => 3,
            GoneReason::Other(c) => c,
        }
    }
    fn from_u8(c: u8) -> Self {
        match c {
            1 => GoneReason::NotConnected,
            2 => GoneReason::NotAllowed,
            3 => GoneReason::Expired,
            c => GoneReason::Other(c),
        }
    }
}

/// One decoded frame. Payloads are slices of the read buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// S→C first frame: a fresh challenge the login signs.
    ServerChallenge {
        /// [`PROTOCOL_VERSION`].
        version: u8,
        /// Random, fresh per connection.
        challenge: [u8; 32],
    },
    /// C→S: the ticket (JSON of a signed envelope) and the login signature.
    Login {
        /// Ed25519 by the ticket's login key over `login::login_message`.
        sig: Signature,
        /// The ticket's exact bytes.
        ticket: Bytes,
    },
    /// S→C: admitted; `observed` is the TCP peer address the relay saw.
    LoginOk {
        /// The client's address as the relay saw it.
        observed: SocketAddr,
    },
    /// S→C: refused; the connection closes after this frame.
    LoginRefused {
        /// Which check failed.
        code: RefuseCode,
        /// Short text for logs (never echoes client data).
        reason: String,
    },
    /// C→S: deliver `payload` to `dst` (`probe`: on the priority queue).
    Send {
        /// Destination node key.
        dst: TunnelPublicKey,
        /// Opaque packet.
        payload: Bytes,
        /// Path probe or "call me" message: its own queue, drained first.
        probe: bool,
    },
    /// S→C: `payload` from `src`.
    Recv {
        /// Source node key.
        src: TunnelPublicKey,
        /// Opaque packet.
        payload: Bytes,
        /// Came on the probe queue.
        probe: bool,
    },
    /// S→C: packets to `key` are not being delivered (rate-limited).
    PeerGone {
        /// The destination that could not be reached.
        key: TunnelPublicKey,
        /// Why.
        reason: GoneReason,
    },
    /// Keepalive and round-trip probe; answered with [`Frame::Pong`].
    Ping([u8; 8]),
    /// Answer to a [`Frame::Ping`], echoing its bytes.
    Pong([u8; 8]),
    /// C→S: a newer ticket for the same node and login key.
    TicketUpdate {
        /// The ticket's exact bytes.
        ticket: Bytes,
    },
    /// S→C after `LoginOk`, from a relay that also forwards over UDP: the
    /// secret the client's UDP hellos carry (see [`crate::udp`]).
    UdpOffer {
        /// Known only to this TLS session's two ends.
        token: [u8; 16],
    },
    /// C→S: the UDP relay id of `key`, please.
    UdpLookup {
        /// The destination.
        key: TunnelPublicKey,
    },
    /// S→C: `key`'s UDP relay id (sent to both ends of an allowed pair).
    UdpPeer {
        /// The node.
        key: TunnelPublicKey,
        /// Its id (24 bits) in UDP relay packets.
        id: u32,
    },
}

/// Why a byte stream is not a valid frame sequence. Any error closes the
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte names no frame.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// The length is impossible for the type (too large, or not its fixed size).
    #[error("frame type {ty} with a body of {len} bytes")]
    BadLength {
        /// Type byte.
        ty: u8,
        /// Length from the header.
        len: u32,
    },
    /// The body is inconsistent (e.g. an address family byte other than 4/6).
    #[error("malformed body of frame type {0}")]
    Malformed(u8),
}

impl FrameError {
    /// A short stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::BadLength { .. } => "bad_length",
            FrameError::Malformed(_) => "malformed",
        }
    }
}

/// Decodes frames from a growing buffer.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    max_ticket: usize,
}

impl Decoder {
    /// A decoder accepting tickets up to `max_ticket` bytes.
    pub fn new(max_ticket: usize) -> Self {
        Self { max_ticket }
    }

    /// Checks a header's type and length without needing the body.
    fn check_header(&self, ty: u8, len: u32) -> Result<(), FrameError> {
        let bad = FrameError::BadLength { ty, len };
        let len_us = usize::try_from(len).map_err(|_| bad)?;
        let ok = match ty {
            ty::SERVER_CHALLENGE => len_us == 33,
            ty::LOGIN => len_us > SIG_LEN && len_us <= SIG_LEN + self.max_ticket,
            ty::LOGIN_OK => len_us == 7 || len_us == 19,
            ty::LOGIN_REFUSED => (1..=1 + MAX_REASON).contains(&len_us),
            ty::SEND | ty::RECV | ty::SEND_PROBE | ty::RECV_PROBE => {
                (KEY_LEN..=KEY_LEN + MAX_PAYLOAD).contains(&len_us)
            }
            ty::PEER_GONE => len_us == KEY_LEN + 1,
            ty::PING | ty::PONG => len_us == 8,
            ty::TICKET_UPDATE => (1..=self.max_ticket).contains(&len_us),
            ty::UDP_OFFER => len_us == 16,
            ty::UDP_LOOKUP => len_us == KEY_LEN,
            ty::UDP_PEER => len_us == KEY_LEN + 4,
            other => return Err(FrameError::UnknownType(other)),
        };
        if ok { Ok(()) } else { Err(bad) }
    }

    /// Takes one complete frame off the front of `buf`. `Ok(None)` means
    /// more bytes are needed; the header is checked as soon as it is in.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let ty = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        self.check_header(ty, len)?;
        // check_header bounded `len` well below usize::MAX.
        let len = len as usize;
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let body = buf.split_to(len).freeze();
        parse_body(ty, body).map(Some)
    }

    /// How many more bytes the frame at the front of `buf` needs (0 if it is
    /// complete or the header is not in yet). Lets a reader size one
    /// allocation for a large frame instead of growing in steps.
    pub fn missing(&self, buf: &[u8]) -> usize {
        if buf.len() < HEADER_LEN {
            return 0;
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        (HEADER_LEN + len).saturating_sub(buf.len())
    }
}

fn key_at(body: &[u8]) -> TunnelPublicKey {
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&body[..KEY_LEN]);
    TunnelPublicKey(key)
}

fn parse_body(ty: u8, mut body: Bytes) -> Result<Frame, FrameError> {
    // Lengths were checked against the type in `check_header`.
    Ok(match ty {
        ty::SERVER_CHALLENGE => {
            let mut challenge = [0u8; 32];
            challenge.copy_from_slice(&body[1..33]);
            Frame::ServerChallenge {
                version: body[0],
                challenge,
            }
        }
        ty::LOGIN => {
            let mut sig = [0u8; SIG_LEN];
            sig.copy_from_slice(&body[..SIG_LEN]);
            body.advance(SIG_LEN);
            Frame::Login {
                sig: Signature(sig),
                ticket: body,
            }
        }
        ty::LOGIN_OK => {
            let port = u16::from_be_bytes([body[1], body[2]]);
            let ip = match (body[0], body.len()) {
                (4, 7) => IpAddr::V4(Ipv4Addr::new(body[3], body[4], body[5], body[6])),
                (6, 19) => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&body[3..19]);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                _ => return Err(FrameError::Malformed(ty)),
            };
            Frame::LoginOk {
                observed: SocketAddr::new(ip, port),
            }
        }
        ty::LOGIN_REFUSED => Frame::LoginRefused {
            code: RefuseCode::from_u8(body[0]),
            reason: String::from_utf8_lossy(&body[1..]).into_owned(),
        },
        ty::SEND | ty::SEND_PROBE => {
            let dst = key_at(&body);
            body.advance(KEY_LEN);
            Frame::Send {
                dst,
                payload: body,
                probe: ty == ty::SEND_PROBE,
            }
        }
        ty::RECV | ty::RECV_PROBE => {
            let src = key_at(&body);
            body.advance(KEY_LEN);
            Frame::Recv {
                src,
                payload: body,
                probe: ty == ty::RECV_PROBE,
            }
        }
        ty::PEER_GONE => Frame::PeerGone {
            key: key_at(&body),
            reason: GoneReason::from_u8(body[KEY_LEN]),
        },
        ty::PING | ty::PONG => {
            let mut data = [0u8; 8];
            data.copy_from_slice(&body[..8]);
            if ty == ty::PING {
                Frame::Ping(data)
            } else {
                Frame::Pong(data)
            }
        }
        ty::TICKET_UPDATE => Frame::TicketUpdate { ticket: body },
        ty::UDP_OFFER => {
            let mut token = [0u8; 16];
            token.copy_from_slice(&body[..16]);
            Frame::UdpOffer { token }
        }
        ty::UDP_LOOKUP => Frame::UdpLookup { key: key_at(&body) },
        ty::UDP_PEER => {
            let id = u32::from_be_bytes([
                body[KEY_LEN],
                body[KEY_LEN + 1],
                body[KEY_LEN + 2],
                body[KEY_LEN + 3],
            ]);
            if id > crate::udp::MAX_ID {
                return Err(FrameError::Malformed(ty));
            }
            Frame::UdpPeer {
                key: key_at(&body),
                id,
            }
        }
        other => return Err(FrameError::UnknownType(other)),
    })
}

fn put_header(out: &mut Vec<u8>, ty: u8, len: usize) {
    out.put_u8(ty);
    // Every encoder bounds `len` far below u32::MAX.
    out.put_u32(len as u32);
}

/// The header of a packet frame (`Send`/`Recv`, probe or not) as one array,
/// for writers that send the payload as a separate slice.
pub fn packet_header(
    to_server: bool,
    probe: bool,
    key: &TunnelPublicKey,
    payload_len: usize,
) -> [u8; HEADER_LEN + KEY_LEN] {
    let ty = match (to_server, probe) {
        (true, false) => ty::SEND,
        (true, true) => ty::SEND_PROBE,
        (false, false) => ty::RECV,
        (false, true) => ty::RECV_PROBE,
    };
    let mut h = [0u8; HEADER_LEN + KEY_LEN];
    h[0] = ty;
    h[1..5].copy_from_slice(&((KEY_LEN + payload_len) as u32).to_be_bytes());
    h[5..].copy_from_slice(key.as_bytes());
    h
}

impl Frame {
    /// Appends the frame's wire form to `out`. Callers keep payloads within
    /// [`MAX_PAYLOAD`] and tickets within the peer's limit; the decoder on the
    /// other side refuses anything larger.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::ServerChallenge { version, challenge } => {
                put_header(out, ty::SERVER_CHALLENGE, 33);
                out.push(*version);
                out.extend_from_slice(challenge);
            }
            Frame::Login { sig, ticket } => {
                put_header(out, ty::LOGIN, SIG_LEN + ticket.len());
                out.extend_from_slice(&sig.0);
                out.extend_from_slice(ticket);
            }
            Frame::LoginOk { observed } => {
                let (family, ip): (u8, Vec<u8>) = match observed.ip() {
                    IpAddr::V4(v4) => (4, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (6, v6.octets().to_vec()),
                };
                put_header(out, ty::LOGIN_OK, 3 + ip.len());
                out.push(family);
                out.put_u16(observed.port());
                out.extend_from_slice(&ip);
            }
            Frame::LoginRefused { code, reason } => {
                let text = truncate_utf8(reason, MAX_REASON);
                put_header(out, ty::LOGIN_REFUSED, 1 + text.len());
                out.push(code.to_u8());
                out.extend_from_slice(text.as_bytes());
            }
            Frame::Send {
                dst: key,
                payload,
                probe,
            }
            | Frame::Recv {
                src: key,
                payload,
                probe,
            } => {
                let to_server = matches!(self, Frame::Send { .. });
                out.extend_from_slice(&packet_header(to_server, *probe, key, payload.len()));
                out.extend_from_slice(payload);
            }
            Frame::PeerGone { key, reason } => {
                put_header(out, ty::PEER_GONE, KEY_LEN + 1);
                out.extend_from_slice(key.as_bytes());
                out.push(reason.to_u8());
            }
            Frame::Ping(data) | Frame::Pong(data) => {
                let t = if matches!(self, Frame::Ping(_)) {
                    ty::PING
                } else {
                    ty::PONG
                };
                put_header(out, t, 8);
                out.extend_from_slice(data);
            }
            Frame::TicketUpdate { ticket } => {
                put_header(out, ty::TICKET_UPDATE, ticket.len());
                out.extend_from_slice(ticket);
            }
            Frame::UdpOffer { token } => {
                put_header(out, ty::UDP_OFFER, 16);
                out.extend_from_slice(token);
            }
            Frame::UdpLookup { key } => {
                put_header(out, ty::UDP_LOOKUP, KEY_LEN);
                out.extend_from_slice(key.as_bytes());
            }
            Frame::UdpPeer { key, id } => {
                put_header(out, ty::UDP_PEER, KEY_LEN + 4);
                out.extend_from_slice(key.as_bytes());
                out.put_u32(*id);
            }
        }
    }

    /// Bytes [`Frame::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Frame::ServerChallenge { .. } => 33,
                Frame::Login { ticket, .. } => SIG_LEN + ticket.len(),
                Frame::LoginOk { observed } => {
                    if observed.is_ipv4() {
                        7
                    } else {
                        19
                    }
                }
                Frame::LoginRefused { reason, .. } => 1 + truncate_utf8(reason, MAX_REASON).len(),
                Frame::Send { payload, .. } | Frame::Recv { payload, .. } => {
                    KEY_LEN + payload.len()
                }
                Frame::PeerGone { .. } => KEY_LEN + 1,
                Frame::Ping(_) | Frame::Pong(_) => 8,
                Frame::TicketUpdate { ticket } => ticket.len(),
                Frame::UdpOffer { .. } => 16,
                Frame::UdpLookup { .. } => KEY_LEN,
                Frame::UdpPeer { .. } => KEY_LEN + 4,
            }
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out.len(), frame.encoded_len());
        let mut buf = BytesMut::from(&out[..]);
        let d = Decoder::new(1024);
        // Every strict prefix is "need more", never an error or a frame.
        for cut in 0..out.len() {
            let mut part = BytesMut::from(&out[..cut]);
            assert_eq!(d.decode(&mut part), Ok(None), "prefix {cut}");
        }
        assert_eq!(d.decode(&mut buf), Ok(Some(frame)));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_round_trips() {
        let key = TunnelPublicKey([3; 32]);
        roundtrip(Frame::ServerChallenge {
            version: PROTOCOL_VERSION,
            challenge: [9; 32],
        });
        roundtrip(Frame::Login {
            sig: Signature([4; 64]),
            ticket: Bytes::from_static(b"{\"v\":2}"),
        });
        roundtrip(Frame::LoginOk {
            observed: "198.51.100.7:41641".parse().unwrap(),
        });
        roundtrip(Frame::LoginOk {
            observed: "[2001:db8::1]:443".parse().unwrap(),
        });
        roundtrip(Frame::LoginRefused {
            code: RefuseCode::Signature,
            reason: "bad signature".into(),
        });
        for probe in [false, true] {
            roundtrip(Frame::Send {
                dst: key,
                payload: Bytes::from_static(&[1, 2, 3]),
                probe,
            });
            roundtrip(Frame::Recv {
                src: key,
                payload: Bytes::new(),
                probe,
            });
        }
        roundtrip(Frame::PeerGone {
            key,
            reason: GoneReason::NotAllowed,
        });
        roundtrip(Frame::Ping([1; 8]));
        roundtrip(Frame::Pong([2; 8]));
        roundtrip(Frame::UdpOffer { token: [7; 16] });
        roundtrip(Frame::UdpLookup {
            key: TunnelPublicKey([8; 32]),
        });
        roundtrip(Frame::UdpPeer {
            key: TunnelPublicKey([9; 32]),
            id: crate::udp::MAX_ID,
        });
        roundtrip(Frame::TicketUpdate {
            ticket: Bytes::from_static(b"x"),
        });
    }

    #[test]
    fn bad_headers_fail_before_the_body_arrives() {
        let d = Decoder::new(1024);
        let mut unknown = BytesMut::from(&[0x7f, 0, 0, 0, 1][..]);
        assert_eq!(d.decode(&mut unknown), Err(FrameError::UnknownType(0x7f)));
        // A 4 GiB Send header is refused at once, not buffered for.
        let mut huge = BytesMut::from(&[ty::SEND, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            d.decode(&mut huge),
            Err(FrameError::BadLength { .. })
        ));
        let mut ping = BytesMut::from(&[ty::PING, 0, 0, 0, 9][..]);
        assert!(matches!(
            d.decode(&mut ping),
            Err(FrameError::BadLength { .. })
        ));
        // A ticket over the decoder's limit.
        let mut login = BytesMut::from(&[ty::LOGIN, 0, 0, 0x04, 0x41][..]);
        assert!(matches!(
            d.decode(&mut login),
            Err(FrameError::BadLength { .. })
        ));
        // Family byte 5 in LoginOk.
        let mut ok = BytesMut::from(&[ty::LOGIN_OK, 0, 0, 0, 7, 5, 0, 1, 1, 2, 3, 4][..]);
        assert_eq!(d.decode(&mut ok), Err(FrameError::Malformed(ty::LOGIN_OK)));
    }

    #[test]
    fn refusal_text_is_cut_at_a_char_boundary() {
        let frame = Frame::LoginRefused {
            code: RefuseCode::Ticket,
            reason: "é".repeat(150),
        };
        let mut out = Vec::new();
        frame.encode(&mut out);
        let got = Decoder::new(16)
            .decode(&mut BytesMut::from(&out[..]))
            .unwrap();
        let Some(Frame::LoginRefused { reason, .. }) = got else {
            panic!("not a refusal");
        };
        assert_eq!(reason.len(), MAX_REASON);
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let d = Decoder::new(128);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }

        #[test]
        fn data_frames_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..2000), key in any::<[u8; 32]>(), probe in any::<bool>()) {
            let frame = Frame::Send { dst: TunnelPublicKey(key), payload: payload.into(), probe };
            let mut out = Vec::new();
            frame.encode(&mut out);
            let got = Decoder::new(16).decode(&mut BytesMut::from(&out[..]));
            prop_assert_eq!(got, Ok(Some(frame)));
        }
    }
}
