//! Relay tickets: control's signed statement that a node may log in to a
//! relay with its signing key and exchange relayed packets with its peers
//! (see `rustynet_proto::relay`).
//!
//! A ticket lists the node keys of the node's visible peers in the current
//! network state, so the relay's pair rule (A's ticket lists B and B's
//! lists A) follows the policy. Generations come from the durable counter
//! maps use: the relay refuses a ticket update older than the ticket it
//! holds, so generations must grow across control restarts, and that
//! counter already guarantees it (reserved in blocks, floored at the wall
//! clock) at no extra durable write per ticket.
//!
//! Tickets are cached per node together with a hash of what they state
//! (node key, login key, sorted peer keys): a node asking again while
//! nothing it would be told changed gets the same signed ticket, until
//! half its validity has passed (the same re-signing point as maps).

use std::collections::HashMap;
use std::sync::Mutex;

use rustynet_proto::relay::{RelayTicket, TicketPolicy};
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody, SignedEnvelope, TunnelPublicKey};
use sha2::{Digest as _, Sha256};

use crate::network::Snapshot;
use crate::store::StoreError;

/// Why no ticket was issued.
#[derive(Debug, thiserror::Error)]
pub enum TicketRefusal {
    /// The node is not in the current network state (expired or removed
    /// since its request was authenticated).
    #[error("this node is not in the current network state")]
    NotLive,
    /// No generation could be reserved.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ticket did not serialize (cannot happen with plain data).
    #[error("ticket could not be sealed: {0}")]
    Seal(#[from] serde_json::Error),
}

/// A ticket as issued, and what it said.
#[derive(Debug, Clone)]
struct Cached {
    digest: [u8; 32],
    issued_at: i64,
    envelope: SignedEnvelope,
}

/// Issues tickets and remembers the last one of each node.
#[derive(Debug)]
pub struct TicketIssuer {
    /// Validity of each ticket, seconds.
    ttl_secs: i64,
    cache: Mutex<HashMap<NodeId, Cached>>,
}

/// What `node`'s ticket states in `snapshot`: its ticket body payload,
/// with peers sorted and deduplicated; `None` if the node is not live.
pub fn ticket_contents(snapshot: &Snapshot, node: NodeId) -> Option<RelayTicket> {
    let me = snapshot.nodes.get(&node)?;
    let view = snapshot.views.get(&node)?;
    let mut peers: Vec<TunnelPublicKey> = view
        .visible_peers
        .iter()
        .filter_map(|id| snapshot.nodes.get(id))
        .map(|peer| peer.node_key)
        .collect();
    peers.sort_unstable();
    peers.dedup();
    Some(RelayTicket {
        node_key: me.node_key,
        login_key: me.signing_key,
        peers,
    })
}

fn digest(ticket: &RelayTicket) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(ticket.node_key.as_bytes());
    hash.update(ticket.login_key.as_bytes());
    for peer in &ticket.peers {
        hash.update(peer.as_bytes());
    }
    hash.finalize().into()
}

impl TicketIssuer {
    /// Tickets valid for `ttl_secs` (capped at what a relay accepts).
    pub fn new(ttl_secs: i64) -> Self {
        Self {
            ttl_secs: ttl_secs.clamp(2, TicketPolicy::default().max_validity_secs),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `node`'s ticket in `snapshot` at unix time `now`: the cached one if
    /// it states the same and is less than half way through its validity,
    /// else a fresh one signed by `signer` with a generation from
    /// `generation`.
    pub fn issue(
        &self,
        snapshot: &Snapshot,
        node: NodeId,
        signer: &NodeSigningKey,
        now: i64,
        generation: impl FnOnce() -> Result<u64, StoreError>,
    ) -> Result<SignedEnvelope, TicketRefusal> {
        let contents = ticket_contents(snapshot, node).ok_or(TicketRefusal::NotLive)?;
        let digest = digest(&contents);
        let fresh_until = |issued_at: i64| issued_at.saturating_add(self.ttl_secs / 2);
        if let Some(cached) = crate::api::lock(&self.cache).get(&node)
            && cached.digest == digest
            && now >= cached.issued_at
            && now < fresh_until(cached.issued_at)
        {
            return Ok(cached.envelope.clone());
        }
        let body = contents.into_body(node, generation()?, now, now.saturating_add(self.ttl_secs));
        let envelope = SealedBody::seal(signer, &body)?.to_envelope()?;
        let mut cache = crate::api::lock(&self.cache);
        // Forget nodes that left the network once they could make up half
        // the table: the table stays within twice the live nodes.
        if cache.len() >= 2 * snapshot.nodes.len() + 64 {
            cache.retain(|id, _| snapshot.nodes.contains_key(id));
        }
        cache.insert(
            node,
            Cached {
                digest,
                issued_at: now,
                envelope: envelope.clone(),
            },
        );
        Ok(envelope)
    }

    /// Forgets every cached ticket (the signing key changed).
    pub fn clear(&self) {
        crate::api::lock(&self.cache).clear();
    }

    /// How many tickets are remembered.
    pub fn cached(&self) -> usize {
        crate::api::lock(&self.cache).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Network;
    use crate::store::{NewPreauth, Registration, SqliteStore, Store as _};
    use rustynet_proto::SigningPublicKey;
    use rustynet_proto::relay::verify_ticket;
    use std::cell::Cell;
    use std::sync::Arc;

    const NOW: i64 = 1_800_000_000;

    fn key(n: u8) -> TunnelPublicKey {
        TunnelPublicKey([n; 32])
    }

    /// Nodes a, b, c (keys 1, 2, 3) under `policy`.
    fn network(policy: &str) -> (tempfile::TempDir, Arc<SqliteStore>, Arc<Network>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::create(&dir.path().join("c.db"), "x.internal").unwrap());
        let hash = Sha256::digest(b"k").into();
        store
            .create_preauth(
                &NewPreauth {
                    key_hash: hash,
                    user: "alice".into(),
                    tags: vec![],
                    reusable: true,
                    expires_at: None,
                },
                1,
            )
            .unwrap();
        for (n, name) in [(1, "a"), (2, "b"), (3, "c")] {
            store
                .register(
                    &Registration {
                        key_expires_at: Default::default(),
                        key_hash: hash,
                        hostname: name.into(),
                        node_key: key(n),
                        signing_key: NodeSigningKey::from_seed(&[n; 32]).public(),
                        endpoints: vec![],
                        advertise_exit_node: false,
                        advertised_routes: vec![],
                        path_key: None,
                    },
                    2,
                )
                .unwrap();
        }
        store.set_policy(policy, 3).unwrap();
        let net = Network::load(store.clone()).unwrap();
        (dir, store, net)
    }

    const A_B: &str = r#"{"acls": [{"action": "accept",
        "src": ["node:a"], "dst": ["node:b:*"]}]}"#;

    fn verify(env: &SignedEnvelope, control: &NodeSigningKey, now: i64) -> Vec<TunnelPublicKey> {
        let verified = verify_ticket(
            env.to_json().as_bytes(),
            &[control.public()],
            &TicketPolicy::default(),
            now,
        )
        .unwrap();
        verified.peers
    }

    #[test]
    fn tickets_follow_the_policy_and_are_reused_until_it_changes() {
        let (_d, store, net) = network(A_B);
        let control = NodeSigningKey::from_seed(&[9; 32]);
        let issuer = TicketIssuer::new(600);
        let a = NodeId(1);
        let signed = Cell::new(0u64);
        let generation = || {
            signed.set(signed.get() + 1);
            Ok(100 + signed.get())
        };
        let first = issuer
            .issue(&net.current(), a, &control, NOW, generation)
            .unwrap();
        assert_eq!(verify(&first, &control, NOW), vec![key(2)], "b, not c");
        let body: rustynet_proto::SignedBody<RelayTicket> =
            serde_json::from_slice(first.body_bytes()).unwrap();
        assert_eq!(body.node_id, a);
        assert_eq!(body.generation, 101);
        assert_eq!((body.issued_at, body.expires_at), (NOW, NOW + 600));
        assert_eq!(body.payload.node_key, key(1));
        assert_eq!(
            body.payload.login_key,
            NodeSigningKey::from_seed(&[1; 32]).public()
        );
        // c sees nobody: its ticket lists no peer.
        let c = issuer
            .issue(&net.current(), NodeId(3), &control, NOW, generation)
            .unwrap();
        assert!(verify(&c, &control, NOW).is_empty());

        // Asked again with nothing changed: the same ticket, not re-signed.
        let again = issuer
            .issue(&net.current(), a, &control, NOW + 299, generation)
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(signed.get(), 2);
        // An unrelated change (an endpoint) keeps it too.
        net.reload().unwrap();
        assert_eq!(
            issuer
                .issue(&net.current(), a, &control, NOW + 1, generation)
                .unwrap(),
            first
        );

        // The policy changes: a new ticket without b, newer generation.
        store
            .set_policy(
                r#"{"acls": [{"action": "accept", "src": ["node:a"], "dst": ["node:c:*"]}]}"#,
                4,
            )
            .unwrap();
        net.reload().unwrap();
        let changed = issuer
            .issue(&net.current(), a, &control, NOW + 2, generation)
            .unwrap();
        assert_eq!(verify(&changed, &control, NOW + 2), vec![key(3)]);
        assert_eq!(signed.get(), 3);
        // Half way through its validity it is signed afresh.
        let late = issuer
            .issue(&net.current(), a, &control, NOW + 2 + 300, generation)
            .unwrap();
        assert_ne!(late, changed);
        assert_eq!(signed.get(), 4);
        assert_eq!(issuer.cached(), 2);
    }

    #[test]
    fn a_node_that_left_gets_no_ticket_and_nothing_is_signed() {
        let (_d, store, net) = network(A_B);
        let control = NodeSigningKey::from_seed(&[9; 32]);
        let issuer = TicketIssuer::new(600);
        store.expire_node("b", 5).unwrap();
        net.reload().unwrap();
        let never = || -> Result<u64, StoreError> { panic!("no generation for a refusal") };
        assert!(matches!(
            issuer.issue(&net.current(), NodeId(2), &control, NOW, never),
            Err(TicketRefusal::NotLive)
        ));
        // a's ticket no longer lists the expired b.
        let a = issuer
            .issue(&net.current(), NodeId(1), &control, NOW, || Ok(1))
            .unwrap();
        assert!(verify(&a, &control, NOW).is_empty());
        let other = SigningPublicKey([0; 32]);
        assert!(
            verify_ticket(
                a.to_json().as_bytes(),
                &[other],
                &TicketPolicy::default(),
                NOW
            )
            .is_err()
        );
    }

    #[test]
    fn validity_is_capped_at_what_a_relay_accepts() {
        let max = TicketPolicy::default().max_validity_secs;
        assert_eq!(TicketIssuer::new(i64::MAX).ttl_secs, max);
        assert_eq!(TicketIssuer::new(0).ttl_secs, 2);
    }
}
