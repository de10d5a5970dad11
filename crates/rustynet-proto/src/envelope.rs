//! The signed envelope: an Ed25519 signature over the exact bytes that travel.
//!
//! Control serializes the [`SignedBody`] once, signs those bytes, and ships
//! them verbatim as the envelope's `body` (raw JSON, not re-encoded). A node
//! takes the body's exact bytes out of the envelope, verifies the signature
//! over them and only then parses them, so there is never a question of which
//! serialization was signed.
//!
//! The signature covers `SIGNATURE_DOMAIN || BLAKE3(body)`. Signing pure
//! Ed25519 over a 40 KB map runs SHA-512 over it twice, which made signing
//! the largest cost of rebuilding every map in a big network; BLAKE3 hashes
//! the body once, about 15× faster here, and its 256-bit output keeps
//! Ed25519's 128-bit security level.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::keys::{NodeSigningKey, Signature};
use crate::netmap::NodeId;

/// Envelope format version.
pub const ENVELOPE_VERSION: u16 = 2;

/// Domain-separation prefix: a signature made for a netmap can never be
/// replayed as a signature over some other kind of message, nor across
/// envelope versions.
pub const SIGNATURE_DOMAIN: &[u8] = b"rustynet signed body v2 blake3\0";

/// What the body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// A [`crate::Netmap`].
    Netmap,
    /// A [`crate::relay::RelayTicket`].
    RelayTicket,
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

/// What is transmitted: the body's exact bytes and the signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    /// [`ENVELOPE_VERSION`].
    pub v: u16,
    /// The signed body (JSON of a [`SignedBody`]), byte for byte as sent.
    /// Any JSON value is taken here and judged by the verifier, so an
    /// envelope of another version (v1 carried a base64 string) still
    /// parses inside a stored state and is refused with a typed reason.
    pub body: Box<RawValue>,
    /// Ed25519 signature over [`signed_message`] of the body.
    pub sig: Signature,
}

impl PartialEq for SignedEnvelope {
    fn eq(&self, other: &Self) -> bool {
        self.v == other.v && self.body.get() == other.body.get() && self.sig == other.sig
    }
}

impl Eq for SignedEnvelope {}

/// The bytes a signature covers: the domain and the BLAKE3 hash of `body`.
pub fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + blake3::OUT_LEN);
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(blake3::hash(body).as_bytes());
    msg
}

/// A body control has signed, still as bytes: the map stream writes it into
/// the frame as it is, so a large map is neither copied nor parsed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBody {
    body: Bytes,
    sig: Signature,
}

impl SealedBody {
    /// Serializes `body` once and signs exactly those bytes.
    pub fn seal<T: Serialize>(
        key: &NodeSigningKey,
        body: &SignedBody<T>,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::sign(key, serde_json::to_vec(body)?.into()))
    }

    /// Signs `body`. The caller guarantees it is compact JSON of a
    /// [`SignedBody`]; a node refuses anything else.
    pub fn sign(key: &NodeSigningKey, body: Bytes) -> Self {
        let sig = key.sign(&signed_message(&body));
        Self { body, sig }
    }

    /// The signed bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The envelope as JSON (`{"v":…,"body":…,"sig":…}`) in three pieces,
    /// between `before` and `after`: the body is shared, not copied.
    pub fn into_envelope_pieces(self, before: &[u8], after: &[u8]) -> [Bytes; 3] {
        let mut head = before.to_vec();
        head.extend_from_slice(b"{\"v\":");
        head.extend_from_slice(ENVELOPE_VERSION.to_string().as_bytes());
        head.extend_from_slice(b",\"body\":");
        let mut tail = b",\"sig\":".to_vec();
        // A signature serializes as a base64 string; writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut tail, &self.sig);
        tail.push(b'}');
        tail.extend_from_slice(after);
        [head.into(), self.body, tail.into()]
    }

    /// The envelope as a value (parses the body once to hold it as raw JSON).
    pub fn to_envelope(&self) -> Result<SignedEnvelope, serde_json::Error> {
        serde_json::from_slice(&self.clone().into_envelope_pieces(b"", b"").concat())
    }
}

impl SignedEnvelope {
    /// Serializes `body` once and signs exactly those bytes.
    pub fn seal<T: Serialize>(
        key: &NodeSigningKey,
        body: &SignedBody<T>,
    ) -> Result<Self, serde_json::Error> {
        SealedBody::seal(key, body)?.to_envelope()
    }

    /// The signed body bytes, exactly as received.
    pub fn body_bytes(&self) -> &[u8] {
        self.body.get().as_bytes()
    }

    /// The envelope as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings and raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SignedBody<String> {
        SignedBody {
            kind: BodyKind::Netmap,
            node_id: NodeId(4),
            generation: 9,
            issued_at: 10,
            expires_at: 20,
            payload: "x".to_owned(),
        }
    }

    #[test]
    fn seal_signs_the_transmitted_bytes() {
        let key = NodeSigningKey::from_seed(&[1u8; 32]);
        let env = SignedEnvelope::seal(&key, &body()).unwrap();
        let bytes = env.body_bytes();
        assert_eq!(bytes, serde_json::to_vec(&body()).unwrap());
        assert!(key.public().verify(&signed_message(bytes), &env.sig));
        // Without the domain prefix, or over the bare bytes, it does not verify.
        assert!(
            !key.public()
                .verify(blake3::hash(bytes).as_bytes(), &env.sig)
        );
        assert!(!key.public().verify(bytes, &env.sig));
    }

    #[test]
    fn the_body_survives_a_round_trip_byte_for_byte() {
        let key = NodeSigningKey::from_seed(&[1u8; 32]);
        let sealed = SealedBody::seal(&key, &body()).unwrap();
        let env = sealed.to_envelope().unwrap();
        assert_eq!(env.body_bytes(), sealed.body());
        let again: SignedEnvelope = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(again, env);
        assert_eq!(again.body_bytes(), sealed.body());
    }
}
