//! Key and signature types with a stable base64 wire form.
//!
//! Public halves serialize as standard base64 strings. The private signing key
//! never implements `Serialize` or a revealing `Debug`, so it cannot end up in a
//! log line, a status document or a panic message by accident.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Why a key or signature could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not valid standard base64.
    #[error("key is not valid base64")]
    Base64,
    /// The decoded value has the wrong number of bytes.
    #[error("key has {got} bytes, expected {expected}")]
    Length {
        /// Bytes found.
        got: usize,
        /// Bytes required.
        expected: usize,
    },
    /// The bytes are not a valid Ed25519 public key (not a curve point).
    #[error("not a valid signing public key")]
    InvalidSigningKey,
}

fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], KeyError> {
    let bytes = B64.decode(text.trim()).map_err(|_| KeyError::Base64)?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| KeyError::Length { got, expected: N })
}

macro_rules! b64_newtype {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            /// Standard base64 of the bytes (the wire form).
            pub fn to_base64(&self) -> String {
                B64.encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                decode_fixed::<$len>(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_base64())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_base64())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_base64())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

b64_newtype!(
    /// A node's tunnel (dataplane) public key. Opaque here: only the tunnel
    /// backend knows the curve; weak keys are refused there.
    TunnelPublicKey,
    32
);
b64_newtype!(
    /// An Ed25519 public key: the control signing key or a node signing key.
    SigningPublicKey,
    32
);
b64_newtype!(
    /// An Ed25519 signature.
    Signature,
    64
);
b64_newtype!(
    /// A node's path key (X25519 public half): authenticates the path probes
    /// nodes exchange to find and test direct paths. Separate from the tunnel
    /// key, so probing never involves the tunnel's static key.
    PathPublicKey,
    32
);
b64_newtype!(
    /// SHA-256 of a relay's TLS certificate public key (SubjectPublicKeyInfo):
    /// the only key a node accepts from that relay.
    CertPin,
    32
);

impl SigningPublicKey {
    /// Checks `sig` over exactly `message`. Uses strict verification so that
    /// malleable or small-order signatures are refused.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(message, &sig).is_ok() && key.verify(message, &sig).is_ok()
    }

    /// Whether the bytes decode to a usable Ed25519 point (not weak).
    pub fn is_valid(&self) -> bool {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).is_ok_and(|k| !k.is_weak())
    }
}

/// An Ed25519 private signing key (the control's map-signing key or a node's
/// request-signing key). `Debug` is redacted and there is no `Serialize`.
pub struct NodeSigningKey(ed25519_dalek::SigningKey);

impl NodeSigningKey {
    /// A fresh key from the given cryptographic RNG.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        Self(ed25519_dalek::SigningKey::generate(rng))
    }

    /// Rebuilds a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed, zeroized when dropped. Only for writing to the key file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> SigningPublicKey {
        SigningPublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs exactly `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for NodeSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeSigningKey(public={}, private=[redacted])",
            self.public()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_roundtrip_and_tamper() {
        let key = NodeSigningKey::generate(&mut rand_core::OsRng);
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellO", &sig));
        let mut bad = sig;
        bad.0[0] ^= 1;
        assert!(!key.public().verify(b"hello", &bad));
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let key = NodeSigningKey::from_seed(&[7u8; 32]);
        let seed_b64 = B64.encode([7u8; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains(&seed_b64));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn base64_roundtrip_and_errors() {
        let k = TunnelPublicKey([9u8; 32]);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<TunnelPublicKey>(&json).unwrap(), k);
        assert_eq!("!!".parse::<TunnelPublicKey>(), Err(KeyError::Base64));
        assert_eq!(
            B64.encode([1u8; 31]).parse::<TunnelPublicKey>(),
            Err(KeyError::Length {
                got: 31,
                expected: 32
            })
        );
    }

    #[test]
    fn weak_signing_key_is_invalid() {
        assert!(!SigningPublicKey([0u8; 32]).is_valid());
        let key = NodeSigningKey::generate(&mut rand_core::OsRng);
        assert!(key.public().is_valid());
    }
}
