//! Path keys: a per-node X25519 key used only to authenticate path probes.
//!
//! It is deliberately not the tunnel's static key: probes are answered by a
//! thread that never touches tunnel sessions, the key can rotate on its own
//! schedule, and a bug in probe handling cannot leak tunnel key material.
//! The shared AEAD key per peer is derived once, when the peer table is
//! built, so receiving a probe costs a map lookup and one AEAD open, never a
//! key agreement.

use std::fmt;

use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305};
#[cfg(test)]
use rand_core::CryptoRngCore;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize as _;

use super::PathError;

/// BLAKE3 derive-key context: names the protocol and its version, so a key
/// derived here can never equal one derived for another purpose.
const KDF_CONTEXT: &str = "rustynet path probe v1";

/// A node's path public key, as carried in the signed netmap and in clear in
/// every probe header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PathPublicKey(pub(crate) [u8; 32]);

impl fmt::Debug for PathPublicKey {
    /// Short hex: enough to tell peers apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// A node's path secret. Zeroed on drop (x25519-dalek's `zeroize` feature);
/// its `Debug` never prints the key.
pub(crate) struct PathSecret {
    secret: StaticSecret,
    public: PathPublicKey,
}

impl fmt::Debug for PathSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathSecret(public: {:?})", self.public)
    }
}

impl PathSecret {
    #[cfg(test)]
    /// A fresh random secret.
    pub(crate) fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let key = Self::from_bytes(bytes);
        bytes.zeroize();
        key
    }

    /// A secret from its 32 bytes (e.g. loaded from the node's key store).
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PathPublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The public half, to publish in the netmap.
    pub(crate) fn public(&self) -> PathPublicKey {
        self.public
    }

    /// The symmetric key shared with `peer`:
    /// `BLAKE3-derive-key(ctx, X25519(secret, peer) || min(pk) || max(pk))`.
    ///
    /// Both sides compute the same key (the public keys are sorted). Refuses
    /// our own key and low-order points (an all-zero shared secret would let
    /// anyone compute the key).
    pub(crate) fn shared_cipher(
        &self,
        peer: &PathPublicKey,
    ) -> Result<XChaCha20Poly1305, PathError> {
        if *peer == self.public {
            return Err(PathError::OwnKey);
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(PathError::LowOrderKey);
        }
        let (lo, hi) = if self.public.0 <= peer.0 {
            (self.public.0, peer.0)
        } else {
            (peer.0, self.public.0)
        };
        let mut material = [0u8; 96];
        material[..32].copy_from_slice(shared.as_bytes());
        material[32..64].copy_from_slice(&lo);
        material[64..].copy_from_slice(&hi);
        let mut key = blake3::derive_key(KDF_CONTEXT, &material);
        material.zeroize();
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.zeroize();
        Ok(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{Aead as _, generic_array::GenericArray};

    fn key(b: u8) -> PathSecret {
        PathSecret::from_bytes([b; 32])
    }

    #[test]
    fn both_sides_derive_the_same_key() {
        let (a, b) = (key(1), key(2));
        let ab = a.shared_cipher(&b.public()).expect("valid keys");
        let ba = b.shared_cipher(&a.public()).expect("valid keys");
        let nonce = GenericArray::from([7u8; 24]);
        let sealed = ab.encrypt(&nonce, &b"hello"[..]).expect("encrypt");
        assert_eq!(ba.decrypt(&nonce, &sealed[..]).expect("same key"), b"hello");
    }

    #[test]
    fn different_pairs_derive_different_keys() {
        let (a, b, c) = (key(1), key(2), key(3));
        let ab = a.shared_cipher(&b.public()).expect("valid");
        let cb = c.shared_cipher(&b.public()).expect("valid");
        let nonce = GenericArray::from([0u8; 24]);
        let sealed = ab.encrypt(&nonce, &b"x"[..]).expect("encrypt");
        assert!(cb.decrypt(&nonce, &sealed[..]).is_err());
    }

    #[test]
    fn own_and_low_order_keys_are_refused() {
        let a = key(1);
        assert!(matches!(
            a.shared_cipher(&a.public()),
            Err(PathError::OwnKey)
        ));
        // The identity point: X25519 with it yields all zeros.
        let zero = PathPublicKey([0u8; 32]);
        assert!(matches!(
            a.shared_cipher(&zero),
            Err(PathError::LowOrderKey)
        ));
    }

    #[test]
    fn generated_secrets_differ_and_derive_a_key() {
        let mut rng = crate::path::test_rng::TestRng::new(1);
        let (a, b) = (
            PathSecret::generate(&mut rng),
            PathSecret::generate(&mut rng),
        );
        assert_ne!(a.public(), b.public());
        assert!(a.shared_cipher(&b.public()).is_ok());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let a = key(0xab);
        let text = format!("{a:?}");
        assert!(!text.contains("abab"), "{text}");
    }
}
