//! The signed envelope: an Ed25519 signature over the exact bytes that travel.
//!
//! Control serializes the [`SignedBody`] once, signs those bytes, and ships them
//! base64-encoded beside the signature. A node verifies the signature over the
//! decoded bytes and only then parses them, so there is never a question of
//! which serialization was signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::keys::{NodeSigningKey, Signature};
use crate::netmap::NodeId;

/// Envelope format version.
pub const ENVELOPE_VERSION: u16 = 1;

/// Domain-separation prefix: a signature made for a netmap can never be
/// replayed as a signature over some other kind of message.
pub const SIGNATURE_DOMAIN: &[u8] = b"rustynet signed body v1\0";

/// What the body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// A [`crate::Netmap`].
    Netmap,
}

/// The signed content: header fields plus the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBody<T> {
    /// What the payload is.
    pub kind: BodyKind,
    /// The node this body is addressed to.
    pub node_id: NodeId,
    /// Monotonic per node (control draws it from a persistent counter).
    pub generation: u64,
    /// Unix seconds when control signed it.
    pub issued_at: i64,
    /// Unix seconds after which it must not be used.
    pub expires_at: i64,
    /// The payload.
    pub payload: T,
}

/// What is transmitted: the body's exact bytes (base64) and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    /// [`ENVELOPE_VERSION`].
    pub v: u16,
    /// Base64 of the signed body bytes (JSON of a [`SignedBody`]).
    pub body: String,
    /// Ed25519 signature over `SIGNATURE_DOMAIN || body bytes`.
    pub sig: Signature,
}

/// The bytes a signature covers.
pub fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + body.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(body);
    msg
}

impl SignedEnvelope {
    /// Serializes `body` once and signs exactly those bytes.
    pub fn seal<T: Serialize>(
        key: &NodeSigningKey,
        body: &SignedBody<T>,
    ) -> Result<Self, serde_json::Error> {
        // Serialize straight after the domain prefix so the signed message is
        // built without a second copy of the (possibly large) body.
        let mut msg = Vec::with_capacity(4096);
        msg.extend_from_slice(SIGNATURE_DOMAIN);
        serde_json::to_writer(&mut msg, body)?;
        Ok(Self {
            v: ENVELOPE_VERSION,
            body: B64.encode(&msg[SIGNATURE_DOMAIN.len()..]),
            sig: key.sign(&msg),
        })
    }

    /// Signs already-serialized body bytes.
    pub fn seal_bytes(key: &NodeSigningKey, body: &[u8]) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            body: B64.encode(body),
            sig: key.sign(&signed_message(body)),
        }
    }

    /// The envelope as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_signs_the_transmitted_bytes() {
        let key = NodeSigningKey::from_seed(&[1u8; 32]);
        let body = SignedBody {
            kind: BodyKind::Netmap,
            node_id: NodeId(4),
            generation: 9,
            issued_at: 10,
            expires_at: 20,
            payload: "x".to_owned(),
        };
        let env = SignedEnvelope::seal(&key, &body).unwrap();
        let bytes = B64.decode(&env.body).unwrap();
        assert!(key.public().verify(&signed_message(&bytes), &env.sig));
        // Without the domain prefix the signature does not verify.
        assert!(!key.public().verify(&bytes, &env.sig));
    }
}
