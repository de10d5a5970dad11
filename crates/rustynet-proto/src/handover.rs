//! Rotation of the control signing key without re-enrolling every node.
//!
//! Control's current key signs a handover naming its successor. Control
//! sends the chain of handovers with its maps; a node whose pinned key no
//! longer verifies a map follows the chain from its pin — every step signed
//! by the key before it — and, if the map verifies with a key it reached,
//! pins that key (and persists it). From then on a map signed by the old key
//! is refused like any other foreign signature.
//!
//! A handover gives nothing to whoever does not hold the pinned key: it is
//! only followed from a key the node already trusts. (Whoever holds that key
//! could sign maps anyway; after a compromise, re-enrollment with a new CA
//! is the remedy, not rotation.)

use serde::{Deserialize, Serialize};

use crate::keys::{NodeSigningKey, Signature, SigningPublicKey};

/// Domain of the signature over a handover (never valid as any other
/// signature Rustynet makes).
pub const HANDOVER_DOMAIN: &[u8] = b"rustynet control key handover v1\0";

/// Most handovers a node follows in one go (a chain this long means years
/// of rotations; anything longer is refused as hostile).
pub const MAX_HANDOVERS: usize = 64;

/// "The control signing key `from` hands over to `to`", signed by `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyHandover {
    /// The key handing over.
    pub from: SigningPublicKey,
    /// Its successor.
    pub to: SigningPublicKey,
    /// When control signed it (unix seconds).
    pub issued_at: i64,
    /// Signature by `from` over [`KeyHandover::message`].
    pub sig: Signature,
}

impl KeyHandover {
    /// The bytes the signature covers.
    pub fn message(from: &SigningPublicKey, to: &SigningPublicKey, issued_at: i64) -> Vec<u8> {
        let mut msg = HANDOVER_DOMAIN.to_vec();
        msg.extend_from_slice(from.as_bytes());
        msg.extend_from_slice(to.as_bytes());
        msg.extend_from_slice(&issued_at.to_be_bytes());
        msg
    }

    /// `current` hands over to `to`.
    pub fn sign(current: &NodeSigningKey, to: SigningPublicKey, issued_at: i64) -> Self {
        let from = current.public();
        let sig = current.sign(&Self::message(&from, &to, issued_at));
        Self {
            from,
            to,
            issued_at,
            sig,
        }
    }

    /// Whether `from` signed exactly this handover (to another key).
    pub fn verify(&self) -> bool {
        self.from != self.to
            && self.from.verify(
                &Self::message(&self.from, &self.to, self.issued_at),
                &self.sig,
            )
    }
}

/// The keys reachable from `pinned` through verified handovers of `chain`,
/// nearest first, without `pinned` itself. Handovers that do not verify are
/// ignored; a chain longer than [`MAX_HANDOVERS`] yields nothing.
pub fn successors(pinned: &SigningPublicKey, chain: &[KeyHandover]) -> Vec<SigningPublicKey> {
    if chain.len() > MAX_HANDOVERS {
        return vec![];
    }
    let mut reached = vec![*pinned];
    let mut next = 0;
    while next < reached.len() {
        let from = reached[next];
        next += 1;
        for h in chain.iter().filter(|h| h.from == from) {
            if !reached.contains(&h.to) && h.verify() {
                reached.push(h.to);
            }
        }
    }
    reached.remove(0);
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> NodeSigningKey {
        NodeSigningKey::from_seed(&[seed; 32])
    }

    #[test]
    fn a_chain_is_followed_from_the_pin_only() {
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let chain = vec![
            KeyHandover::sign(&k2, k3.public(), 20),
            KeyHandover::sign(&k1, k2.public(), 10),
        ];
        assert!(chain.iter().all(KeyHandover::verify));
        assert_eq!(
            successors(&k1.public(), &chain),
            vec![k2.public(), k3.public()]
        );
        assert_eq!(successors(&k2.public(), &chain), vec![k3.public()]);
        assert!(successors(&k3.public(), &chain).is_empty());
        // A key nobody handed over to is not reached.
        assert!(successors(&key(9).public(), &chain).is_empty());
    }

    #[test]
    fn forged_or_altered_handovers_are_not_followed() {
        let (k1, k2, thief) = (key(1), key(2), key(7));
        // Signed by someone other than the key it claims to come from.
        let mut forged = KeyHandover::sign(&thief, thief.public(), 10);
        forged.from = k1.public();
        assert!(!forged.verify());
        // A genuine handover with its successor swapped.
        let mut swapped = KeyHandover::sign(&k1, k2.public(), 10);
        swapped.to = thief.public();
        assert!(!swapped.verify());
        let mut redated = KeyHandover::sign(&k1, k2.public(), 10);
        redated.issued_at = 11;
        assert!(!redated.verify());
        assert!(successors(&k1.public(), &[forged, swapped, redated]).is_empty());
        // A handover to itself is meaningless.
        assert!(!KeyHandover::sign(&k1, k1.public(), 1).verify());
    }

    #[test]
    fn cycles_end_and_overlong_chains_are_refused() {
        let (k1, k2) = (key(1), key(2));
        let chain = vec![
            KeyHandover::sign(&k1, k2.public(), 1),
            KeyHandover::sign(&k2, k1.public(), 2),
        ];
        assert_eq!(successors(&k1.public(), &chain), vec![k2.public()]);
        let long: Vec<_> = (0..=MAX_HANDOVERS)
            .map(|i| KeyHandover::sign(&key(i as u8), key(i as u8 + 1).public(), 1))
            .collect();
        assert!(successors(&key(0).public(), &long).is_empty());
    }
}
