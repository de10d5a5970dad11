//! Relay tickets: control's signed statement of which node may log in to a
//! relay with which key, and which peers it may exchange relayed packets with.
//!
//! A ticket is a [`SignedEnvelope`] whose body has kind
//! [`BodyKind::RelayTicket`] and a [`RelayTicket`] payload. The relay checks
//! it with [`verify_ticket`] against the control signing key(s) it was given;
//! the node then proves possession of `login_key` over a challenge bound to
//! the TLS session (see the `rustynet-relay` crate). The relay forwards A→B
//! only when A's ticket lists B and B's lists A, so the newer ticket of
//! either honest side revokes a pair.
//!
//! The checks run in the same order as the netmap verifier: size first, then
//! the envelope shape, the signature over the exact bytes, and only then the
//! parsed body and its freshness. Errors carry numbers, never body content.

use serde::{Deserialize, Serialize};

use crate::envelope::{BodyKind, ENVELOPE_VERSION, SignedBody, SignedEnvelope, signed_message};
use crate::keys::{SigningPublicKey, TunnelPublicKey};
use crate::netmap::{MAX_PEERS, NodeId};

/// The payload of a relay ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTicket {
    /// The node's tunnel key: the address relayed packets are sent to.
    pub node_key: TunnelPublicKey,
    /// The node's signing key; the login signature must verify with it.
    pub login_key: SigningPublicKey,
    /// Node keys this node may exchange relayed packets with (its peers).
    pub peers: Vec<TunnelPublicKey>,
}

impl RelayTicket {
    /// Wraps the ticket in a body header, ready for `SealedBody::seal` by
    /// control with its signing key.
    pub fn into_body(
        self,
        node_id: NodeId,
        generation: u64,
        issued_at: i64,
        expires_at: i64,
    ) -> SignedBody<Self> {
        SignedBody {
            kind: BodyKind::RelayTicket,
            node_id,
            generation,
            issued_at,
            expires_at,
            payload: self,
        }
    }
}

/// Limits [`verify_ticket`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketPolicy {
    /// Largest accepted ticket (envelope JSON), in bytes.
    pub max_bytes: usize,
    /// How far `issued_at` may lie in the future (clock skew bound), seconds.
    pub max_skew_secs: i64,
    /// Longest accepted validity window (`expires_at - issued_at`), seconds.
    pub max_validity_secs: i64,
    /// Most peers one ticket may list.
    pub max_peers: usize,
}

impl Default for TicketPolicy {
    fn default() -> Self {
        Self {
            // A base64 key is 46 bytes of JSON: 4 096 peers fit comfortably.
            max_bytes: 256 * 1024,
            max_skew_secs: 60,
            max_validity_secs: 24 * 3600,
            max_peers: MAX_PEERS,
        }
    }
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Larger than [`TicketPolicy::max_bytes`].
    #[error("ticket is {size} bytes, limit {max}")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Not a well-formed envelope or ticket body.
    #[error("malformed ticket: {0}")]
    Malformed(&'static str),
    /// Envelope version not understood.
    #[error("unsupported envelope version {0}")]
    Version(u16),
    /// The signature verifies with none of the control keys.
    #[error("ticket signature does not verify with a control key")]
    BadSignature,
    /// Signed, but not a relay ticket (e.g. a netmap).
    #[error("signed body is not a relay ticket")]
    WrongKind,
    /// Past its expiry.
    #[error("ticket expired at {expires_at} (now {now})")]
    Expired {
        /// Expiry.
        expires_at: i64,
        /// Verifier clock.
        now: i64,
    },
    /// Issued further in the future than the skew bound allows.
    #[error("ticket issued at {issued_at}, beyond now {now} + skew {skew}s")]
    FutureDated {
        /// Issue time.
        issued_at: i64,
        /// Verifier clock.
        now: i64,
        /// Bound.
        skew: i64,
    },
    /// Validity window negative or longer than allowed.
    #[error("ticket validity window {0}s is out of bounds")]
    Validity(i64),
    /// Lists more peers than allowed.
    #[error("ticket lists {count} peers, limit {max}")]
    TooManyPeers {
        /// Peers listed.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// The login key is not a usable Ed25519 key.
    #[error("ticket login key is not a valid signing key")]
    BadLoginKey,
}

impl TicketError {
    /// A short stable name for counters and refusal frames.
    pub fn reason(&self) -> &'static str {
        match self {
            TicketError::TooLarge { .. } => "ticket_too_large",
            TicketError::Malformed(_) => "ticket_malformed",
            TicketError::Version(_) => "ticket_version",
            TicketError::BadSignature => "ticket_bad_signature",
            TicketError::WrongKind => "ticket_wrong_kind",
            TicketError::Expired { .. } => "ticket_expired",
            TicketError::FutureDated { .. } => "ticket_future_dated",
            TicketError::Validity(_) => "ticket_validity",
            TicketError::TooManyPeers { .. } => "ticket_too_many_peers",
            TicketError::BadLoginKey => "ticket_bad_login_key",
        }
    }
}

/// A ticket that passed every check. `peers` is sorted and deduplicated so
/// membership is a binary search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTicket {
    /// The node the ticket was issued to.
    pub node_id: NodeId,
    /// Control's generation counter for this node.
    pub generation: u64,
    /// Unix seconds when control signed it.
    pub issued_at: i64,
    /// Unix seconds after which it must not be used.
    pub expires_at: i64,
    /// The node's tunnel key.
    pub node_key: TunnelPublicKey,
    /// The key the login signature must verify with.
    pub login_key: SigningPublicKey,
    /// Sorted, deduplicated peer keys.
    pub peers: Vec<TunnelPublicKey>,
}

impl VerifiedTicket {
    /// Whether this ticket lets its node exchange packets with `key`.
    pub fn allows(&self, key: &TunnelPublicKey) -> bool {
        self.peers.binary_search(key).is_ok()
    }
}

/// Verifies a ticket as received on the wire (the envelope's JSON bytes)
/// against any of `control_keys`, at unix time `now`.
pub fn verify_ticket(
    wire: &[u8],
    control_keys: &[SigningPublicKey],
    policy: &TicketPolicy,
    now: i64,
) -> Result<VerifiedTicket, TicketError> {
    if wire.len() > policy.max_bytes {
        return Err(TicketError::TooLarge {
            size: wire.len(),
            max: policy.max_bytes,
        });
    }
    let envelope: SignedEnvelope = serde_json::from_slice(wire)
        .map_err(|_| TicketError::Malformed("not a signed envelope"))?;
    if envelope.v != ENVELOPE_VERSION {
        return Err(TicketError::Version(envelope.v));
    }
    let message = signed_message(envelope.body_bytes());
    if !control_keys
        .iter()
        .any(|key| key.verify(&message, &envelope.sig))
    {
        return Err(TicketError::BadSignature);
    }
    // The kind is read before the payload so a signed netmap is refused as
    // the wrong kind, not as a malformed ticket.
    #[derive(Deserialize)]
    struct KindOnly {
        kind: BodyKind,
    }
    let kind: KindOnly = serde_json::from_slice(envelope.body_bytes())
        .map_err(|_| TicketError::Malformed("signed body has no known kind"))?;
    if kind.kind != BodyKind::RelayTicket {
        return Err(TicketError::WrongKind);
    }
    let body: SignedBody<RelayTicket> = serde_json::from_slice(envelope.body_bytes())
        .map_err(|_| TicketError::Malformed("signed body does not parse as a relay ticket"))?;
    let validity = body.expires_at.saturating_sub(body.issued_at);
    if validity <= 0 || validity > policy.max_validity_secs {
        return Err(TicketError::Validity(validity));
    }
    if body.issued_at > now.saturating_add(policy.max_skew_secs) {
        return Err(TicketError::FutureDated {
            issued_at: body.issued_at,
            now,
            skew: policy.max_skew_secs,
        });
    }
    if now >= body.expires_at {
        return Err(TicketError::Expired {
            expires_at: body.expires_at,
            now,
        });
    }
    if body.payload.peers.len() > policy.max_peers {
        return Err(TicketError::TooManyPeers {
            count: body.payload.peers.len(),
            max: policy.max_peers,
        });
    }
    if !body.payload.login_key.is_valid() {
        return Err(TicketError::BadLoginKey);
    }
    let mut peers = body.payload.peers;
    peers.sort_unstable();
    peers.dedup();
    peers.shrink_to_fit();
    Ok(VerifiedTicket {
        node_id: body.node_id,
        generation: body.generation,
        issued_at: body.issued_at,
        expires_at: body.expires_at,
        node_key: body.payload.node_key,
        login_key: body.payload.login_key,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::SealedBody;
    use crate::keys::NodeSigningKey;

    const NOW: i64 = 1_800_000_000;

    fn control() -> NodeSigningKey {
        NodeSigningKey::from_seed(&[1; 32])
    }

    fn ticket() -> RelayTicket {
        RelayTicket {
            node_key: TunnelPublicKey([7; 32]),
            login_key: NodeSigningKey::from_seed(&[2; 32]).public(),
            peers: vec![
                TunnelPublicKey([9; 32]),
                TunnelPublicKey([8; 32]),
                TunnelPublicKey([9; 32]),
            ],
        }
    }

    fn wire(key: &NodeSigningKey, body: &SignedBody<RelayTicket>) -> Vec<u8> {
        SealedBody::seal(key, body)
            .unwrap()
            .to_envelope()
            .unwrap()
            .to_json()
            .into_bytes()
    }

    fn verify(bytes: &[u8]) -> Result<VerifiedTicket, TicketError> {
        verify_ticket(
            bytes,
            &[
                NodeSigningKey::from_seed(&[5; 32]).public(),
                control().public(),
            ],
            &TicketPolicy::default(),
            NOW,
        )
    }

    #[test]
    fn a_valid_ticket_verifies_with_any_listed_control_key() {
        let t = verify(&wire(
            &control(),
            &ticket().into_body(NodeId(3), 4, NOW, NOW + 60),
        ))
        .unwrap();
        assert_eq!(t.node_id, NodeId(3));
        assert_eq!(t.generation, 4);
        assert_eq!(t.node_key, TunnelPublicKey([7; 32]));
        // Sorted and deduplicated.
        assert_eq!(
            t.peers,
            vec![TunnelPublicKey([8; 32]), TunnelPublicKey([9; 32])]
        );
        assert!(t.allows(&TunnelPublicKey([9; 32])));
        assert!(!t.allows(&TunnelPublicKey([7; 32])));
    }

    #[test]
    fn refusals_are_typed() {
        let other = NodeSigningKey::from_seed(&[6; 32]);
        let ok = ticket().into_body(NodeId(3), 4, NOW, NOW + 60);
        assert_eq!(verify(&wire(&other, &ok)), Err(TicketError::BadSignature));
        let expired = ticket().into_body(NodeId(3), 4, NOW - 120, NOW);
        assert!(matches!(
            verify(&wire(&control(), &expired)),
            Err(TicketError::Expired { .. })
        ));
        let future = ticket().into_body(NodeId(3), 4, NOW + 61, NOW + 120);
        assert!(matches!(
            verify(&wire(&control(), &future)),
            Err(TicketError::FutureDated { .. })
        ));
        let long = ticket().into_body(NodeId(3), 4, NOW, NOW + 24 * 3600 + 1);
        assert_eq!(
            verify(&wire(&control(), &long)),
            Err(TicketError::Validity(24 * 3600 + 1))
        );
        let backwards = ticket().into_body(NodeId(3), 4, NOW, NOW);
        assert_eq!(
            verify(&wire(&control(), &backwards)),
            Err(TicketError::Validity(0))
        );
        let mut weak = ticket();
        weak.login_key = SigningPublicKey([0; 32]);
        let weak = weak.into_body(NodeId(3), 4, NOW, NOW + 60);
        assert_eq!(
            verify(&wire(&control(), &weak)),
            Err(TicketError::BadLoginKey)
        );
        assert!(matches!(verify(b"{}"), Err(TicketError::Malformed(_))));
        assert!(matches!(
            verify(&vec![b' '; 300 * 1024]),
            Err(TicketError::TooLarge { .. })
        ));
    }

    #[test]
    fn too_many_peers_is_refused() {
        let policy = TicketPolicy {
            max_peers: 2,
            ..TicketPolicy::default()
        };
        let mut t = ticket();
        t.peers.push(TunnelPublicKey([1; 32]));
        let bytes = wire(&control(), &t.into_body(NodeId(3), 4, NOW, NOW + 60));
        assert_eq!(
            verify_ticket(&bytes, &[control().public()], &policy, NOW),
            Err(TicketError::TooManyPeers { count: 4, max: 2 })
        );
    }

    #[test]
    fn a_signed_netmap_is_not_a_ticket() {
        let body = SignedBody {
            kind: BodyKind::Netmap,
            node_id: NodeId(3),
            generation: 1,
            issued_at: NOW,
            expires_at: NOW + 60,
            payload: ticket(),
        };
        assert_eq!(
            verify(&wire(&control(), &body)),
            Err(TicketError::WrongKind)
        );
    }

    #[test]
    fn a_tampered_body_fails_the_signature() {
        let bytes = wire(&control(), &ticket().into_body(NodeId(3), 4, NOW, NOW + 60));
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace("\"generation\":4", "\"generation\":5");
        assert_eq!(verify(text.as_bytes()), Err(TicketError::BadSignature));
    }
}
