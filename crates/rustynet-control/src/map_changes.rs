//! Which nodes a publication of the network touched, so a map stream can
//! tell without building its map that the map cannot have changed.
//!
//! Every change wakes every open map stream. Building a map and hashing it
//! costs tens of microseconds; at 10,000 streams a change to one node kept a
//! core busy for half a second before its peers had their maps. A node's map
//! is made of its own record and view, its visible peers' records and
//! online state, the suffix and the relays: when a publication says which
//! nodes it touched, a stream whose node and peers are not among them skips
//! the build. A publication that may change anything (the suffix, the
//! relays, a nudge after a key rotation) records no set, and every stream
//! builds.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use rustynet_policy::NodeView;
use rustynet_proto::NodeId;

use crate::store::NodeRecord;

/// How many publications are remembered: a stream that slept through more
/// (it was paced, or its client is slow) builds its map.
const REMEMBERED: usize = 64;

/// The nodes one publication touched; `None`: anything may have changed.
type Touched = Option<Arc<HashSet<NodeId>>>;

/// The last publications' touched sets, oldest first, one per version.
#[derive(Debug, Default, Clone)]
pub struct ChangeLog {
    entries: Arc<VecDeque<(u64, Touched)>>,
}

impl ChangeLog {
    /// This log with `version`'s publication appended (the oldest dropped
    /// beyond [`REMEMBERED`]).
    pub fn with(&self, version: u64, touched: Touched) -> Self {
        let mut entries = VecDeque::clone(&self.entries);
        if entries.len() == REMEMBERED {
            entries.pop_front();
        }
        entries.push_back((version, touched));
        Self {
            entries: Arc::new(entries),
        }
    }

    /// Whether a map built at version `since` may differ from one built at
    /// the newest version for a node that reads exactly `reads`.
    pub fn may_differ(&self, since: u64, reads: impl Fn(&HashSet<NodeId>) -> bool) -> bool {
        let Some(&(newest, _)) = self.entries.back() else {
            return true;
        };
        if since >= newest {
            return since != newest;
        }
        // Every version after `since` must be remembered.
        match self.entries.front() {
            Some(&(oldest, _)) if oldest <= since + 1 => {}
            _ => return true,
        }
        self.entries
            .iter()
            .filter(|(version, _)| *version > since)
            .any(|(_, touched)| touched.as_ref().is_none_or(|set| reads(set)))
    }
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

    fn set(ids: &[u64]) -> Touched {
        Some(Arc::new(ids.iter().map(|&i| NodeId(i)).collect()))
    }

    fn reads(ids: &'static [u64]) -> impl Fn(&HashSet<NodeId>) -> bool {
        move |s| ids.iter().any(|i| s.contains(&NodeId(*i)))
    }

    #[test]
    fn a_change_to_other_nodes_leaves_the_map_alone() {
        let log = ChangeLog::default()
            .with(1, None)
            .with(2, set(&[7]))
            .with(3, set(&[8]));
        assert!(!log.may_differ(1, reads(&[1, 2])));
        assert!(log.may_differ(1, reads(&[1, 8])), "a peer was touched");
        assert!(log.may_differ(2, reads(&[8])));
        assert!(!log.may_differ(2, reads(&[7])), "version 2 is already seen");
        assert!(!log.may_differ(3, reads(&[7, 8])), "nothing newer");
    }

    #[test]
    fn an_unknown_change_or_a_forgotten_version_means_build() {
        let log = ChangeLog::default()
            .with(1, set(&[]))
            .with(2, None)
            .with(3, set(&[]));
        assert!(
            log.may_differ(1, reads(&[])),
            "version 2 may change anything"
        );
        assert!(!log.may_differ(2, reads(&[])));
        assert!(ChangeLog::default().may_differ(0, reads(&[])), "empty log");
        let mut log = ChangeLog::default();
        for v in 1..=(REMEMBERED as u64 + 10) {
            log = log.with(v, set(&[]));
        }
        assert!(
            log.may_differ(1, reads(&[])),
            "versions 2..=10 are forgotten"
        );
        assert!(!log.may_differ(REMEMBERED as u64, reads(&[])));
        assert!(
            log.may_differ(REMEMBERED as u64 + 11, reads(&[])),
            "a version from elsewhere"
        );
    }

    #[test]
    fn differing_finds_added_removed_and_changed_entries() {
        let before: BTreeMap<NodeId, u8> = [(NodeId(1), 1), (NodeId(2), 2), (NodeId(3), 3)].into();
        let after: BTreeMap<NodeId, u8> = [(NodeId(1), 1), (NodeId(2), 9), (NodeId(4), 4)].into();
        let mut out = HashSet::new();
        differing(&before, &after, |a, b| a == b, &mut out);
        assert_eq!(out, [NodeId(2), NodeId(3), NodeId(4)].into());
        let mut out = HashSet::new();
        online_differing(
            &[NodeId(1), NodeId(2)].into(),
            &[NodeId(2), NodeId(5)].into(),
            &mut out,
        );
        assert_eq!(out, [NodeId(1), NodeId(5)].into());
    }
}
