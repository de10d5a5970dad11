//! The UDP relay mode's datagrams, pure.
//!
//! The TLS relay carries every packet through two TLS sessions and two TCP
//! connections; for bulk traffic that costs more CPU than the tunnel itself
//! and stacks TCP on TCP. So a logged-in client may also send tunnel
//! packets to the relay's UDP port (the binding port), set up over its TLS
//! session:
//!
//! 1. the relay sends `UdpOffer { token }` over TLS;
//! 2. the node sends hellos `[0xD8][1][token 16]` from its tunnel socket; the
//!    relay learns the node's UDP address (as its NAT maps it) and echoes the
//!    hello as `[0xD9][1][token 16]` (same length: no amplification, and only
//!    the TLS peer knows the token, so nobody can move another node's
//!    address);
//! 3. the node asks `UdpLookup { key }` over TLS; if the pair may talk, the
//!    relay tells both ends each other's 24-bit id (`UdpPeer`);
//! 4. tunnel packets then travel as UDP: their first four bytes (the
//!    message type and three zero bytes, in every tunnel message) become
//!    `[0xD4 + type - 1][id 24 bits BE]`: the destination's id on the way in,
//!    rewritten by the relay to the source's id on the way out. The header
//!    costs no byte, so the path MTU is the direct path's, and the relay
//!    rewrites in place (GRO/GSO batches stay batches).
//!
//! The relay forwards only from a registered address, only to an id whose
//! pair rules (the same tickets as the TLS relay) allow it, at the same
//! per-node rate. It never sees plaintext: the packets are the tunnel's.

/// First byte of a hello.
pub const HELLO_TYPE: u8 = 0xD8;
/// First byte of a hello's echo.
pub const HELLO_ACK_TYPE: u8 = 0xD9;
/// Format version.
pub const VERSION: u8 = 1;
/// A hello (and its echo) is exactly this long.
pub const HELLO_LEN: usize = 18;
/// The largest id (24 bits).
pub const MAX_ID: u32 = 0x00FF_FFFF;

/// First byte of a relayed tunnel message of type 1..=4 is `DATA_BASE + type - 1`.
const DATA_BASE: u8 = 0xD4;

/// The hello's token.
pub type Token = [u8; 16];

/// Whether `first_byte` marks a UDP-relayed tunnel message.
pub fn is_data(first_byte: u8) -> bool {
    (DATA_BASE..DATA_BASE + 4).contains(&first_byte)
}

/// A hello carrying `token`.
pub fn hello(token: &Token) -> [u8; HELLO_LEN] {
    let mut pkt = [0u8; HELLO_LEN];
    pkt[0] = HELLO_TYPE;
    pkt[1] = VERSION;
    pkt[2..].copy_from_slice(token);
    pkt
}

/// The token of a hello (`ack`: of an echo), if `datagram` is one.
pub fn parse_hello(datagram: &[u8], ack: bool) -> Option<Token> {
    let ty = if ack { HELLO_ACK_TYPE } else { HELLO_TYPE };
    if datagram.len() != HELLO_LEN || datagram[0] != ty || datagram[1] != VERSION {
        return None;
    }
    let mut token = [0u8; 16];
    token.copy_from_slice(&datagram[2..]);
    Some(token)
}

/// Turns a tunnel message into a UDP relay datagram for `id`, in place.
/// False (and `msg` unchanged) when `msg` is not a tunnel message (type
/// 1..=4 followed by three zero bytes) or `id` is over 24 bits.
pub fn encode(msg: &mut [u8], id: u32) -> bool {
    if msg.len() < 4 || !(1..=4).contains(&msg[0]) || msg[1..4] != [0, 0, 0] || id > MAX_ID {
        return false;
    }
    msg[0] = DATA_BASE + msg[0] - 1;
    set_id(msg, id);
    true
}

/// The id of a UDP relay datagram, if it is one.
pub fn id_of(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < 4 || !is_data(datagram[0]) {
        return None;
    }
    Some(u32::from_be_bytes([
        0,
        datagram[1],
        datagram[2],
        datagram[3],
    ]))
}

/// Replaces the id of a UDP relay datagram (the relay's rewrite).
/// The caller checked the datagram with [`id_of`].
pub fn set_id(datagram: &mut [u8], id: u32) {
    let b = id.to_be_bytes();
    datagram[1..4].copy_from_slice(&b[1..4]);
}

/// Turns a UDP relay datagram back into the tunnel message, in place, and
/// returns the id it carried.
pub fn decode(datagram: &mut [u8]) -> Option<u32> {
    let id = id_of(datagram)?;
    datagram[0] = datagram[0] - DATA_BASE + 1;
    datagram[1..4].copy_from_slice(&[0, 0, 0]);
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_message_round_trips_with_its_type() {
        for ty in 1..=4u8 {
            let original = [ty, 0, 0, 0, 0xAA, 0xBB];
            let mut msg = original;
            assert!(encode(&mut msg, 0x12_3456));
            assert!(is_data(msg[0]));
            assert_eq!(msg.len(), original.len(), "no byte added");
            assert_eq!(id_of(&msg), Some(0x12_3456));
            set_id(&mut msg, 7);
            assert_eq!(decode(&mut msg), Some(7));
            assert_eq!(msg, original);
        }
    }

    #[test]
    fn only_tunnel_messages_and_24_bit_ids_are_encoded() {
        let mut probe = [0xD1, 1, 0, 0, 9];
        assert!(!encode(&mut probe, 1));
        assert_eq!(probe, [0xD1, 1, 0, 0, 9]);
        let mut reserved_set = [4, 0, 1, 0, 9];
        assert!(!encode(&mut reserved_set, 1));
        let mut ok = [4, 0, 0, 0, 9];
        assert!(!encode(&mut ok, MAX_ID + 1));
        assert!(!encode(&mut [4, 0, 0], 1));
        assert_eq!(id_of(&[0xD4, 0, 0]), None);
        assert_eq!(id_of(&[4, 0, 0, 0]), None);
    }

    #[test]
    fn hellos_are_fixed_size_and_typed() {
        let token = [5u8; 16];
        let h = hello(&token);
        assert_eq!(parse_hello(&h, false), Some(token));
        assert_eq!(parse_hello(&h, true), None);
        let mut ack = h;
        ack[0] = HELLO_ACK_TYPE;
        assert_eq!(parse_hello(&ack, true), Some(token));
        assert_eq!(parse_hello(&h[..17], false), None);
        let mut v2 = h;
        v2[1] = 2;
        assert_eq!(parse_hello(&v2, false), None);
        // Distinct from binding traffic and path probes.
        assert!(!crate::binding::is_binding(HELLO_TYPE));
        assert!(!is_data(HELLO_TYPE) && !is_data(0xD1) && !is_data(0xD2));
    }
}
