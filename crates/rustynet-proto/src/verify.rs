//! The check a node runs on every map before it touches its dataplane.
//!
//! Order matters: size first (cheap, bounds memory), then the envelope shape,
//! then the signature over the exact bytes, and only then parsing of the signed
//! body and the freshness rules. Nothing from an unauthenticated body is ever
//! acted on or echoed in an error.

use crate::envelope::{BodyKind, ENVELOPE_VERSION, SignedBody, SignedEnvelope, signed_message};
use crate::handover::{KeyHandover, successors};
use crate::keys::SigningPublicKey;
use crate::netmap::{Netmap, NetmapError, NodeId};

/// Limits the verifier enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Largest accepted envelope, in bytes.
    pub max_bytes: usize,
    /// How far `issued_at` may lie in the future (clock skew bound), seconds.
    pub max_skew_secs: i64,
    /// Longest accepted validity window (`expires_at - issued_at`), seconds.
    pub max_validity_secs: i64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_skew_secs: 60,
            max_validity_secs: 24 * 3600,
        }
    }
}

/// How the generation of a candidate map must relate to what the node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationRule {
    /// A map from the network: strictly newer than the high-water mark.
    After(u64),
    /// The map restored from the node's own state store: exactly this one.
    Exactly(u64),
}

/// Why a map was refused. Carries numbers and reasons, never payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Larger than [`VerifyPolicy::max_bytes`].
    #[error("signed map is {size} bytes, limit {max}")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Not a well-formed envelope or body.
    #[error("malformed signed map: {0}")]
    Malformed(&'static str),
    /// Envelope version not understood.
    #[error("unsupported envelope version {0}")]
    Version(u16),
    /// The signature does not verify with the pinned control key.
    #[error("signature does not verify with the pinned control key")]
    BadSignature,
    /// Signed for another node.
    #[error("map is for {got}, this node is {expected}")]
    WrongNode {
        /// This node.
        expected: NodeId,
        /// The body's node id.
        got: NodeId,
    },
    /// Not a netmap body.
    #[error("signed body is not a netmap")]
    WrongKind,
    /// Generation not newer than what the node already applied (replay).
    #[error("generation {got} is not newer than {high_water} (replay or stale)")]
    Replayed {
        /// The body's generation.
        got: u64,
        /// The node's high-water mark.
        high_water: u64,
    },
    /// Restored map is not the generation the state store recorded.
    #[error("stored map generation {got} does not match recorded {expected}")]
    GenerationMismatch {
        /// Recorded.
        expected: u64,
        /// Found.
        got: u64,
    },
    /// Past its expiry.
    #[error("map expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry.
        expires_at: i64,
        /// Verifier clock.
        now: i64,
    },
    /// Issued further in the future than the skew bound allows.
    #[error("map issued at {issued_at}, beyond now {now} + skew {skew}s")]
    FutureDated {
        /// Issue time.
        issued_at: i64,
        /// Verifier clock.
        now: i64,
        /// Bound.
        skew: i64,
    },
    /// Validity window negative or longer than allowed.
    #[error("validity window {0}s is out of bounds")]
    Validity(i64),
    /// Signed and fresh, but semantically unusable.
    #[error("invalid netmap: {0}")]
    Invalid(#[from] NetmapError),
}

/// A map that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNetmap {
    /// Header and payload.
    pub body: SignedBody<Netmap>,
    /// The envelope exactly as received, for the state store.
    pub envelope: SignedEnvelope,
}

impl VerifiedNetmap {
    /// The generation.
    pub fn generation(&self) -> u64 {
        self.body.generation
    }
    /// The map.
    pub fn netmap(&self) -> &Netmap {
        &self.body.payload
    }
}

/// Verifies maps for one node against the pinned control signing key.
#[derive(Debug, Clone)]
pub struct NetmapVerifier {
    control_key: SigningPublicKey,
    node_id: NodeId,
    policy: VerifyPolicy,
}

impl NetmapVerifier {
    /// A verifier for `node_id`, pinned to `control_key`.
    pub fn new(control_key: SigningPublicKey, node_id: NodeId, policy: VerifyPolicy) -> Self {
        Self {
            control_key,
            node_id,
            policy,
        }
    }

    /// Verifies one envelope as received on the wire (JSON bytes).
    pub fn verify_wire(
        &self,
        wire: &[u8],
        generation: GenerationRule,
        now: i64,
    ) -> Result<VerifiedNetmap, VerifyError> {
        self.check_size(wire.len())?;
        let envelope: SignedEnvelope = serde_json::from_slice(wire).map_err(|_| {
            VerifyError::Malformed("envelope is not valid JSON of the expected shape")
        })?;
        self.verify(envelope, generation, now)
    }

    /// Verifies a parsed envelope.
    pub fn verify(
        &self,
        envelope: SignedEnvelope,
        generation: GenerationRule,
        now: i64,
    ) -> Result<VerifiedNetmap, VerifyError> {
        self.check_envelope(&envelope)?;
        if !self
            .control_key
            .verify(&signed_message(envelope.body_bytes()), &envelope.sig)
        {
            return Err(VerifyError::BadSignature);
        }
        self.verify_signed(envelope, generation, now)
    }

    /// [`NetmapVerifier::verify`], following a key rotation: when the pinned
    /// key does not verify the map, the keys it handed over to through
    /// `chain` are tried, nearest first ([`successors`]). A map one of them
    /// verifies passes every other check as usual and comes back with that
    /// key, which the caller pins from then on (the old key's maps are then
    /// refused). Without a usable handover the answer is `BadSignature`.
    pub fn verify_following(
        &self,
        envelope: SignedEnvelope,
        chain: &[KeyHandover],
        generation: GenerationRule,
        now: i64,
    ) -> Result<(VerifiedNetmap, Option<SigningPublicKey>), VerifyError> {
        self.check_envelope(&envelope)?;
        let message = signed_message(envelope.body_bytes());
        if self.control_key.verify(&message, &envelope.sig) {
            return self
                .verify_signed(envelope, generation, now)
                .map(|map| (map, None));
        }
        let key = successors(&self.control_key, chain)
            .into_iter()
            .find(|key| key.verify(&message, &envelope.sig))
            .ok_or(VerifyError::BadSignature)?;
        let map = self.verify_signed(envelope, generation, now)?;
        Ok((map, Some(key)))
    }

    /// Size and version, before any signature work.
    fn check_envelope(&self, envelope: &SignedEnvelope) -> Result<(), VerifyError> {
        self.check_size(envelope.body_bytes().len())?;
        if envelope.v != ENVELOPE_VERSION {
            return Err(VerifyError::Version(envelope.v));
        }
        Ok(())
    }

    /// Everything after the signature: the body's shape, addressee,
    /// generation, freshness and content.
    fn verify_signed(
        &self,
        envelope: SignedEnvelope,
        generation: GenerationRule,
        now: i64,
    ) -> Result<VerifiedNetmap, VerifyError> {
        let bytes = envelope.body_bytes();
        let body: SignedBody<Netmap> = serde_json::from_slice(bytes)
            .map_err(|_| VerifyError::Malformed("signed body does not parse as a netmap"))?;
        if body.kind != BodyKind::Netmap {
            return Err(VerifyError::WrongKind);
        }
        if body.node_id != self.node_id {
            return Err(VerifyError::WrongNode {
                expected: self.node_id,
                got: body.node_id,
            });
        }
        match generation {
            GenerationRule::After(high_water) if body.generation <= high_water => {
                return Err(VerifyError::Replayed {
                    got: body.generation,
                    high_water,
                });
            }
            GenerationRule::Exactly(expected) if body.generation != expected => {
                return Err(VerifyError::GenerationMismatch {
                    expected,
                    got: body.generation,
                });
            }
            _ => {}
        }
        let validity = body.expires_at.saturating_sub(body.issued_at);
        if validity <= 0 || validity > self.policy.max_validity_secs {
            return Err(VerifyError::Validity(validity));
        }
        if body.issued_at > now.saturating_add(self.policy.max_skew_secs) {
            return Err(VerifyError::FutureDated {
                issued_at: body.issued_at,
                now,
                skew: self.policy.max_skew_secs,
            });
        }
        if now >= body.expires_at {
            return Err(VerifyError::Expired {
                expires_at: body.expires_at,
                now,
            });
        }
        body.payload.validate()?;
        if body.payload.self_node.node_id != self.node_id {
            return Err(VerifyError::WrongNode {
                expected: self.node_id,
                got: body.payload.self_node.node_id,
            });
        }
        Ok(VerifiedNetmap { body, envelope })
    }

    fn check_size(&self, size: usize) -> Result<(), VerifyError> {
        if size > self.policy.max_bytes {
            return Err(VerifyError::TooLarge {
                size,
                max: self.policy.max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
