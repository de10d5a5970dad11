//! Which nodes each publication of the network touched, so a map stream can
//! tell without building its map that the map cannot have changed.
//!
//! Building a map and hashing it
//! costs tens of microseconds; at 10,000 streams a change to one node kept a
//! core busy for half a second before its peers had their maps, and every
//! keepalive rebuilt a map too. A node's map is made of its own record and
//! view, its visible peers' records and online state, the suffix and the
//! relays: the network remembers, per node, the last version that touched
//! it, and a stream whose node and peers were not touched since its last map
//! skips the build (one lookup per peer, however many versions it slept
//! through). A publication that may change anything (the suffix, the
//! relays, a nudge after a key rotation) touches every node.
//!
//! A publication wakes only the streams that may need a map ([`affected`]);
//! the touch table then tells a woken stream whether it really does (a
//! stream that slept through several versions checks them all at once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use rustynet_policy::NodeView;
use rustynet_proto::NodeId;

use crate::store::NodeRecord;

/// Hashes a node id with one multiplication (ids are control's own
/// sequence numbers, not attacker-chosen keys; SipHash cost more than the
/// rest of the check).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Default)]
struct Touches {
    /// The last version that may have changed every map.
    everything: u64,
    /// Per node: the last version that touched it.
    nodes: IdMap<u64>,
}

/// The last version that touched each node. Written by the publisher before
/// the snapshot of that version is visible, so a stream that holds version
/// `v` sees every touch up to `v` (and maybe later ones: it then builds,
/// which is only slower).
#[derive(Debug, Default)]
pub struct TouchTable {
    inner: RwLock<Touches>,
}

impl TouchTable {
    /// Records that `version` touched `touched` (`None`: everything).
    pub fn record(&self, version: u64, touched: Option<&HashSet<NodeId>>) {
        let mut t = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match touched {
            None => t.everything = version,
            Some(ids) => {
                for id in ids {
                    t.nodes.insert(*id, version);
                }
            }
        }
    }

    /// Forgets nodes that are no longer live (called with the live set on
    /// reload; a node that comes back is touched by that reload anyway).
    pub fn retain<V>(&self, live: &BTreeMap<NodeId, V>) {
        let mut t = self.inner.write().unwrap_or_else(|e| e.into_inner());
        t.nodes.retain(|id, _| live.contains_key(id));
    }

    /// Whether a map built at version `since` may differ from one built at
    /// `now` for a node whose map reads exactly `reads`.
    pub fn may_differ(
        &self,
        since: u64,
        now: u64,
        reads: impl IntoIterator<Item = NodeId>,
    ) -> bool {
        if since >= now {
            return since != now;
        }
        let t = self.inner.read().unwrap_or_else(|e| e.into_inner());
        t.everything > since
            || reads
                .into_iter()
                .any(|id| t.nodes.get(&id).is_some_and(|v| *v > since))
    }
}

/// The nodes whose map may change when the nodes `touched` change:
/// themselves and every node whose map shows them. A map shows its node's
/// visible peers and usable exits; exits are visible peers too, and
/// visibility is symmetric ([`rustynet_policy::PolicyIndex::nodes_affected_by`]),
/// so the nodes showing `t` are `t`'s own visible peers. A publication wakes
/// only these streams: at 10,000 streams, waking every stream for a change
/// to one node cost more than building the affected maps. (A node may
/// appear more than once.)
pub fn affected<'a>(
    views: &'a BTreeMap<NodeId, NodeView>,
    touched: &'a HashSet<NodeId>,
) -> impl Iterator<Item = NodeId> + 'a {
    touched.iter().flat_map(move |id| {
        let readers = views.get(id).map_or(&[][..], |v| &v.visible_peers[..]);
        std::iter::once(*id).chain(readers.iter().copied())
    })
}

/// Whether `a` and `b` read the same in every map: all fields but
/// `last_seen` (listed in full so that a new field is decided here).
pub fn same_in_maps(a: &NodeRecord, b: &NodeRecord) -> bool {
    let NodeRecord {
        id,
        hostname,
        requested_hostname,
        user,
        tags,
        tunnel_ip,
        node_key,
        signing_key,
        endpoints,
        advertise_exit_node,
        advertised_routes,
        lan_access,
        created_at,
        expired_at,
        last_seen: _,
        path_key,
        home_relay,
        admin_routes,
        key_expires_at,
    } = a;
    *id == b.id
        && *hostname == b.hostname
        && *requested_hostname == b.requested_hostname
        && *user == b.user
        && *tags == b.tags
        && *tunnel_ip == b.tunnel_ip
        && *node_key == b.node_key
        && *signing_key == b.signing_key
        && *endpoints == b.endpoints
        && *advertise_exit_node == b.advertise_exit_node
        && *advertised_routes == b.advertised_routes
        && *lan_access == b.lan_access
        && *created_at == b.created_at
        && *expired_at == b.expired_at
        && *path_key == b.path_key
        && *home_relay == b.home_relay
        && *admin_routes == b.admin_routes
        && *key_expires_at == b.key_expires_at
}

/// The nodes whose entry differs between `before` and `after` (present in
/// one only, or different by `same`).
pub fn differing<V>(
    before: &BTreeMap<NodeId, V>,
    after: &BTreeMap<NodeId, V>,
    same: impl Fn(&V, &V) -> bool,
    into: &mut HashSet<NodeId>,
) {
    for (id, b) in before {
        if after.get(id).is_none_or(|a| !same(b, a)) {
            into.insert(*id);
        }
    }
    into.extend(after.keys().filter(|id| !before.contains_key(id)));
}

/// The nodes whose compiled view differs (pointer-equal maps: none).
pub fn views_differing(
    before: &Arc<BTreeMap<NodeId, NodeView>>,
    after: &Arc<BTreeMap<NodeId, NodeView>>,
    into: &mut HashSet<NodeId>,
) {
    if !Arc::ptr_eq(before, after) {
        differing(before, after, |a, b| a == b, into);
    }
}

/// The nodes online in exactly one of `before` and `after`.
pub fn online_differing(
    before: &HashSet<NodeId>,
    after: &HashSet<NodeId>,
    into: &mut HashSet<NodeId>,
) {
    into.extend(before.symmetric_difference(after).copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> HashSet<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    fn reads(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn a_change_to_other_nodes_leaves_the_map_alone() {
        let t = TouchTable::default();
        t.record(1, None);
        t.record(2, Some(&ids(&[7])));
        t.record(3, Some(&ids(&[8])));
        assert!(!t.may_differ(1, 3, reads(&[1, 2])));
        assert!(t.may_differ(1, 3, reads(&[1, 8])), "a peer was touched");
        assert!(t.may_differ(2, 3, reads(&[8])));
        assert!(
            !t.may_differ(2, 3, reads(&[7])),
            "version 2 is already seen"
        );
        assert!(!t.may_differ(3, 3, reads(&[7, 8])), "nothing newer");
        assert!(t.may_differ(4, 3, reads(&[])), "a version from elsewhere");
    }

    #[test]
    fn everything_touched_means_build() {
        let t = TouchTable::default();
        t.record(1, Some(&ids(&[])));
        t.record(2, None);
        t.record(3, Some(&ids(&[])));
        assert!(
            t.may_differ(1, 3, reads(&[])),
            "version 2 may change anything"
        );
        assert!(!t.may_differ(2, 3, reads(&[])));
        assert!(t.may_differ(0, 3, reads(&[])), "anything after version 0");
    }

    #[test]
    fn a_later_touch_than_the_snapshot_is_conservative() {
        // The stream holds version 2; version 3 (touching its peer) was
        // published since: it builds, which is only slower.
        let t = TouchTable::default();
        t.record(2, Some(&ids(&[1])));
        t.record(3, Some(&ids(&[5])));
        assert!(
            !t.may_differ(2, 2, reads(&[5])),
            "nothing after its own version"
        );
        assert!(t.may_differ(1, 2, reads(&[5])));
    }

    #[test]
    fn forgotten_nodes_are_dropped() {
        let t = TouchTable::default();
        t.record(1, Some(&ids(&[1, 2])));
        t.retain(&BTreeMap::<NodeId, ()>::new());
        assert!(!t.may_differ(0, 1, reads(&[1, 2])));
    }

    #[test]
    fn a_touch_wakes_the_node_and_the_nodes_that_show_it() {
        let compiled = |policy: &str| {
            let policy = rustynet_policy::Policy::parse(policy).unwrap();
            let facts: Vec<rustynet_policy::NodeFacts> = (1..=4)
                .map(|i| rustynet_policy::NodeFacts {
                    id: NodeId(i),
                    hostname: format!("n{i}"),
                    user: if i == 4 { "bob".into() } else { "alice".into() },
                    tags: if i == 3 {
                        vec!["tag:exit".into()]
                    } else {
                        vec![]
                    },
                    tunnel_ip: std::net::Ipv4Addr::new(100, 64, 0, i as u8),
                    advertise_exit_node: i == 3,
                    advertised_routes: vec![],
                    lan_access: false,
                    admin_routes: rustynet_policy::AdminRoutes::default(),
                })
                .collect();
            rustynet_policy::compile(&policy, &facts)
        };
        // alice's nodes reach each other; bob (4) uses the exit (3) only.
        let views = compiled(
            r#"{"tag_owners":{"tag:exit":["alice"]},
                "acls":[{"action":"accept","src":["alice"],"dst":["alice:*"]}],
                "exit_nodes":[{"users":["bob"],"nodes":["tag:exit"]}]}"#,
        );
        let woken = |touched: &[u64]| {
            let touched = ids(touched);
            let mut out: Vec<u64> = affected(&views, &touched).map(|id| id.0).collect();
            out.sort_unstable();
            out.dedup();
            out
        };
        assert_eq!(woken(&[3]), [1, 2, 3, 4], "the exit's users see it");
        assert_eq!(woken(&[4]), [3, 4], "bob is shown to his exit only");
        assert_eq!(woken(&[1]), [1, 2, 3]);
        assert_eq!(woken(&[]), Vec::<u64>::new());
        assert_eq!(woken(&[9]), [9], "an unknown node is still woken itself");
        // Whoever shows a node in its map is woken when it is touched.
        for (reader, view) in &views {
            for shown in view.visible_peers.iter().chain(&view.exit_grants) {
                assert!(
                    woken(&[shown.0]).contains(&reader.0),
                    "{reader:?} shows {shown:?}"
                );
            }
        }
    }

    #[test]
    fn differing_finds_added_removed_and_changed_entries() {
        let before: BTreeMap<NodeId, u8> = [(NodeId(1), 1), (NodeId(2), 2), (NodeId(3), 3)].into();
        let after: BTreeMap<NodeId, u8> = [(NodeId(1), 1), (NodeId(2), 9), (NodeId(4), 4)].into();
        let mut out = HashSet::new();
        differing(&before, &after, |a, b| a == b, &mut out);
        assert_eq!(out, ids(&[2, 3, 4]));
        let mut out = HashSet::new();
        online_differing(&ids(&[1, 2]), &ids(&[2, 5]), &mut out);
        assert_eq!(out, ids(&[1, 5]));
    }
}
