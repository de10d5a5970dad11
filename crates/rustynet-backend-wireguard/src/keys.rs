//! Curve25519 key helpers: generation, derivation, weak-key refusal.

use rand_core::OsRng;
use rustynet_tunnel::{TunnelError, TunnelPrivateKey, TunnelPublicKey};
use x25519_dalek::{PublicKey, StaticSecret};

/// A fixed, clamped scalar used only to test peer keys for small order.
/// Any clamped scalar works: clamping multiplies by the cofactor, so a point
/// of small order always yields the all-zero shared secret.
const PROBE_SCALAR: [u8; 32] = [
    0x48, 0x22, 0x17, 0x5a, 0x31, 0x09, 0xcb, 0x7e, 0x11, 0x5c, 0x36, 0x8f, 0xa0, 0x42, 0x9b, 0xd3,
    0x6e, 0x07, 0x19, 0x2d, 0x44, 0x81, 0x5f, 0x3a, 0x70, 0x66, 0x0c, 0xee, 0x28, 0x94, 0x1b, 0x5d,
];

/// A fresh private key from the OS RNG, clamped as `wg genkey` does.
pub fn generate_private_key() -> TunnelPrivateKey {
    let secret = StaticSecret::random_from_rng(OsRng);
    let mut bytes = secret.to_bytes();
    clamp(&mut bytes);
    let key = TunnelPrivateKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    key
}

fn clamp(bytes: &mut [u8; 32]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

/// The public half of `key`.
pub fn public_key(key: &TunnelPrivateKey) -> TunnelPublicKey {
    let secret = StaticSecret::from(*key.as_bytes());
    TunnelPublicKey(PublicKey::from(&secret).to_bytes())
}

/// Refuses keys that would let an attacker force a known shared secret:
/// the all-zero key and every point of small order. Encodings with bit 255
/// set are refused too: X25519 ignores that bit, so such a key is an alias of
/// another one (honest peers never produce it), and refusing it keeps the
/// identity of a peer unique.
pub fn validate_public_key(key: &TunnelPublicKey) -> Result<(), TunnelError> {
    if key.0 == [0u8; 32] {
        return Err(TunnelError::InvalidPeerKey {
            key: *key,
            reason: "all-zero key",
        });
    }
    if key.0[31] & 0x80 != 0 {
        return Err(TunnelError::InvalidPeerKey {
            key: *key,
            reason: "non-canonical encoding (bit 255 set)",
        });
    }
    let probe = StaticSecret::from(PROBE_SCALAR);
    if !probe
        .diffie_hellman(&PublicKey::from(key.0))
        .was_contributory()
    {
        return Err(TunnelError::InvalidPeerKey {
            key: *key,
            reason: "low-order point",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// The small-order points of Curve25519 (and their non-canonical
    /// encodings), as listed by libsodium's `has_small_order` blocklist.
    const LOW_ORDER: [&str; 12] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
        "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
        "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ];

    #[test]
    fn every_low_order_point_is_refused() {
        for hex in LOW_ORDER {
            let key = TunnelPublicKey(hex32(hex));
            let err = validate_public_key(&key).unwrap_err();
            assert!(
                matches!(err, TunnelError::InvalidPeerKey { .. }),
                "{hex} accepted"
            );
            assert!(err.is_invalid_input());
        }
    }

    #[test]
    fn zero_key_reason_is_specific() {
        let err = validate_public_key(&TunnelPublicKey([0; 32])).unwrap_err();
        assert!(err.to_string().contains("all-zero"));
    }

    #[test]
    fn generated_keys_are_valid_clamped_and_distinct() {
        let a = generate_private_key();
        let b = generate_private_key();
        assert_ne!(a, b);
        let bytes = a.as_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0x80, 0);
        assert_eq!(bytes[31] & 0x40, 0x40);
        validate_public_key(&public_key(&a)).unwrap();
        assert_ne!(public_key(&a), public_key(&b));
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            public_key(&TunnelPrivateKey::from_bytes(private)),
            TunnelPublicKey(public)
        );
    }
}
