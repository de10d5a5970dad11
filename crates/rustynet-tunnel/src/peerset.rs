//! The validated peer set and the reconcile diff.
//!
//! Every engine keeps its desired state as a [`PeerSet`] and derives changes
//! with [`PeerSet::diff`], so "declarative reconcile" means the same thing for
//! the fake, the userspace engine and the kernel engine, and the validation
//! runs before any engine touches the OS.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rustynet_proto::TunnelPublicKey;

use crate::{AllowedIps, PeerConfig, TunnelError};

/// Most peers one interface accepts. Bounds memory and per-call work.
pub const MAX_PEERS: usize = 4096;
/// Most allowed-IP prefixes one peer may carry.
pub const MAX_ALLOWED_IPS_PER_PEER: usize = 1024;
/// Most candidate addresses one peer may carry (as many as a node may report).
pub const MAX_CANDIDATES: usize = rustynet_proto::endpoint::MAX_ENDPOINTS;

/// A set of peers that passed validation: distinct keys, canonical prefixes,
/// and no prefix claimed by two peers.
///
/// Nested prefixes of different lengths are allowed on purpose: an exit node
/// owns `0.0.0.0/0` while every other peer owns its `/32`, and the longest
/// match decides. An *identical* prefix on two peers has no such answer, so it
/// is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    peers: BTreeMap<TunnelPublicKey, PeerConfig>,
}

/// What it takes to go from one [`PeerSet`] to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerDiff {
    /// Peers to create.
    pub added: Vec<PeerConfig>,
    /// Keys of peers to delete.
    pub removed: Vec<TunnelPublicKey>,
    /// Peers whose endpoint, allowed IPs or keepalive changed (new config).
    pub updated: Vec<PeerConfig>,
    /// Peers left exactly as they are (their sessions must survive).
    pub unchanged: Vec<TunnelPublicKey>,
}

impl PeerDiff {
    /// Whether applying the diff would change nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

fn normalize(peer: &PeerConfig) -> Result<PeerConfig, TunnelError> {
    if peer.public_key.0 == [0u8; 32] {
        return Err(TunnelError::InvalidPeerKey {
            key: peer.public_key,
            reason: "all-zero key",
        });
    }
    if peer.allowed_ips.len() > MAX_ALLOWED_IPS_PER_PEER {
        return Err(TunnelError::TooMany {
            what: "allowed IPs of one peer",
            got: peer.allowed_ips.len(),
            max: MAX_ALLOWED_IPS_PER_PEER,
        });
    }
    for net in &peer.allowed_ips {
        if *net != net.trunc() {
            return Err(TunnelError::InvalidAllowedIp {
                net: *net,
                reason: "host bits set (not the network address)",
            });
        }
    }
    if peer.candidates.len() > MAX_CANDIDATES {
        return Err(TunnelError::TooMany {
            what: "candidate addresses of one peer",
            got: peer.candidates.len(),
            max: MAX_CANDIDATES,
        });
    }
    let mut out = peer.clone();
    // Order is preference: keep the first of each address.
    let mut seen = std::collections::HashSet::with_capacity(out.candidates.len());
    out.candidates.retain(|c| seen.insert(*c));
    out.allowed_ips.sort();
    if let Some(w) = out.allowed_ips.windows(2).find(|w| w[0] == w[1]) {
        return Err(TunnelError::DuplicateAllowedIp {
            net: w[0],
            first: peer.public_key,
            second: peer.public_key,
        });
    }
    Ok(out)
}

impl PeerSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates a whole desired peer list.
    pub fn from_peers(peers: &[PeerConfig]) -> Result<Self, TunnelError> {
        if peers.len() > MAX_PEERS {
            return Err(TunnelError::TooMany {
                what: "peers",
                got: peers.len(),
                max: MAX_PEERS,
            });
        }
        let mut map = BTreeMap::new();
        for peer in peers {
            let norm = normalize(peer)?;
            if map.insert(peer.public_key, norm).is_some() {
                return Err(TunnelError::DuplicatePeer {
                    key: peer.public_key,
                });
            }
        }
        let set = Self { peers: map };
        set.check_prefix_owners()?;
        Ok(set)
    }

    fn check_prefix_owners(&self) -> Result<(), TunnelError> {
        let mut owners: BTreeMap<IpNet, TunnelPublicKey> = BTreeMap::new();
        for peer in self.peers.values() {
            for net in &peer.allowed_ips {
                if let Some(first) = owners.insert(*net, peer.public_key) {
                    return Err(TunnelError::DuplicateAllowedIp {
                        net: *net,
                        first,
                        second: peer.public_key,
                    });
                }
            }
        }
        Ok(())
    }

    fn with(&self, peers: BTreeMap<TunnelPublicKey, PeerConfig>) -> Result<Self, TunnelError> {
        let set = Self { peers };
        set.check_prefix_owners()?;
        Ok(set)
    }

    /// This set plus `peer`; refused if the key exists or a prefix collides.
    pub fn with_added(&self, peer: &PeerConfig) -> Result<Self, TunnelError> {
        if self.peers.contains_key(&peer.public_key) {
            return Err(TunnelError::PeerExists {
                key: peer.public_key,
            });
        }
        if self.peers.len() >= MAX_PEERS {
            return Err(TunnelError::TooMany {
                what: "peers",
                got: self.peers.len() + 1,
                max: MAX_PEERS,
            });
        }
        let mut peers = self.peers.clone();
        peers.insert(peer.public_key, normalize(peer)?);
        self.with(peers)
    }

    /// This set with `peer` replacing the existing entry of the same key.
    pub fn with_updated(&self, peer: &PeerConfig) -> Result<Self, TunnelError> {
        if !self.peers.contains_key(&peer.public_key) {
            return Err(TunnelError::UnknownPeer {
                key: peer.public_key,
            });
        }
        let mut peers = self.peers.clone();
        peers.insert(peer.public_key, normalize(peer)?);
        self.with(peers)
    }

    /// This set without `key`.
    pub fn with_removed(&self, key: &TunnelPublicKey) -> Result<Self, TunnelError> {
        let mut peers = self.peers.clone();
        if peers.remove(key).is_none() {
            return Err(TunnelError::UnknownPeer { key: *key });
        }
        Ok(Self { peers })
    }

    /// The changes that turn `self` into `desired`, each list sorted by key.
    pub fn diff(&self, desired: &PeerSet) -> PeerDiff {
        let mut diff = PeerDiff::default();
        for (key, want) in &desired.peers {
            match self.peers.get(key) {
                None => diff.added.push(want.clone()),
                Some(have) if have == want => diff.unchanged.push(*key),
                Some(_) => diff.updated.push(want.clone()),
            }
        }
        diff.removed = self
            .peers
            .keys()
            .filter(|k| !desired.peers.contains_key(k))
            .copied()
            .collect();
        diff
    }

    /// The config of one peer (allowed IPs sorted).
    pub fn get(&self, key: &TunnelPublicKey) -> Option<&PeerConfig> {
        self.peers.get(key)
    }

    /// All peers, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = &PeerConfig> + '_ {
        self.peers.values()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The cryptokey routing table: prefix -> owning peer.
    pub fn routing_table(&self) -> AllowedIps<TunnelPublicKey> {
        let mut table = AllowedIps::new();
        for peer in self.peers.values() {
            for net in &peer.allowed_ips {
                table.insert(*net, peer.public_key);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> TunnelPublicKey {
        TunnelPublicKey([b; 32])
    }
    fn peer(b: u8, nets: &[&str]) -> PeerConfig {
        PeerConfig {
            candidates: Vec::new(),
            home_relay: None,
            path_key: None,
            public_key: key(b),
            endpoint: None,
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            persistent_keepalive_secs: None,
        }
    }

    #[test]
    fn duplicate_prefix_across_peers_is_refused() {
        let err = PeerSet::from_peers(&[peer(1, &["100.64.0.1/32"]), peer(2, &["100.64.0.1/32"])])
            .unwrap_err();
        assert!(matches!(
            err,
            TunnelError::DuplicateAllowedIp { first, second, .. } if first == key(1) && second == key(2)
        ));
        assert!(err.is_invalid_input());
    }

    #[test]
    fn nested_prefixes_are_allowed_and_lpm_decides() {
        let set =
            PeerSet::from_peers(&[peer(1, &["0.0.0.0/0"]), peer(2, &["100.64.0.2/32"])]).unwrap();
        let table = set.routing_table();
        assert_eq!(table.lookup("100.64.0.2".parse().unwrap()), Some(&key(2)));
        assert_eq!(table.lookup("1.1.1.1".parse().unwrap()), Some(&key(1)));
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            PeerSet::from_peers(&[peer(1, &[]), peer(1, &[])]),
            Err(TunnelError::DuplicatePeer { .. })
        ));
        assert!(matches!(
            PeerSet::from_peers(&[peer(0, &[])]),
            Err(TunnelError::InvalidPeerKey { .. })
        ));
        assert!(matches!(
            PeerSet::from_peers(&[peer(1, &["10.0.0.1/8"])]),
            Err(TunnelError::InvalidAllowedIp { .. })
        ));
        assert!(matches!(
            PeerSet::from_peers(&[peer(1, &["10.0.0.0/8", "10.0.0.0/8"])]),
            Err(TunnelError::DuplicateAllowedIp { .. })
        ));
        let many: Vec<_> = (0..=MAX_PEERS)
            .map(|i| {
                let mut k = [1u8; 32];
                k[..8].copy_from_slice(&(i as u64).to_le_bytes());
                PeerConfig {
                    public_key: TunnelPublicKey(k),
                    ..peer(1, &[])
                }
            })
            .collect();
        assert!(matches!(
            PeerSet::from_peers(&many),
            Err(TunnelError::TooMany { what: "peers", .. })
        ));
    }

    #[test]
    fn diff_classifies_every_peer() {
        let have = PeerSet::from_peers(&[
            peer(1, &["100.64.0.1/32"]),
            peer(2, &["100.64.0.2/32"]),
            peer(3, &["100.64.0.3/32"]),
        ])
        .unwrap();
        let mut changed = peer(2, &["100.64.0.2/32"]);
        changed.persistent_keepalive_secs = Some(25);
        let want = PeerSet::from_peers(&[
            // same prefixes in another order: unchanged
            peer(1, &["100.64.0.1/32"]),
            changed.clone(),
            peer(4, &["100.64.0.3/32"]),
        ])
        .unwrap();
        let diff = have.diff(&want);
        assert_eq!(diff.added, vec![peer(4, &["100.64.0.3/32"])]);
        assert_eq!(diff.removed, vec![key(3)]);
        assert_eq!(diff.updated, vec![changed]);
        assert_eq!(diff.unchanged, vec![key(1)]);
        assert!(!diff.is_empty());
        assert!(want.diff(&want).is_empty());
    }

    #[test]
    fn order_of_allowed_ips_does_not_count_as_change() {
        let a = PeerSet::from_peers(&[peer(1, &["10.0.0.0/8", "192.0.2.0/24"])]).unwrap();
        let b = PeerSet::from_peers(&[peer(1, &["192.0.2.0/24", "10.0.0.0/8"])]).unwrap();
        assert!(a.diff(&b).is_empty());
    }

    #[test]
    fn single_peer_edits() {
        let set = PeerSet::from_peers(&[peer(1, &["100.64.0.1/32"])]).unwrap();
        assert!(matches!(
            set.with_added(&peer(1, &[])),
            Err(TunnelError::PeerExists { .. })
        ));
        assert!(matches!(
            set.with_added(&peer(2, &["100.64.0.1/32"])),
            Err(TunnelError::DuplicateAllowedIp { .. })
        ));
        assert!(matches!(
            set.with_updated(&peer(2, &[])),
            Err(TunnelError::UnknownPeer { .. })
        ));
        assert!(matches!(
            set.with_removed(&key(9)),
            Err(TunnelError::UnknownPeer { .. })
        ));
        let set2 = set.with_added(&peer(2, &["100.64.0.2/32"])).unwrap();
        assert_eq!(set2.len(), 2);
        let set3 = set2.with_updated(&peer(2, &["100.64.0.9/32"])).unwrap();
        assert_eq!(
            set3.get(&key(2)).unwrap().allowed_ips,
            vec!["100.64.0.9/32".parse::<IpNet>().unwrap()]
        );
        let set4 = set3.with_removed(&key(1)).unwrap();
        assert_eq!(set4.len(), 1);
        assert!(set4.get(&key(1)).is_none());
    }
}
