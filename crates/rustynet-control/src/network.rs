//! The live network state and its change feed.
//!
//! A [`Snapshot`] is an immutable picture: live nodes, the compiled per-node
//! policy views and who is online. Any change publishes a new snapshot on a
//! `watch` channel and wakes the map streams of the nodes it touched and of
//! the nodes that show them ([`crate::map_changes::affected`]); a woken
//! stream, unless the publications since its last map touched neither its
//! node nor a peer it sees ([`crate::map_changes`]), rebuilds its node's map
//! and sends it only if it differs from what the node already has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustynet_policy::{NodeFacts, NodeView, Policy};
use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::{NodeId, VerifyError};
use tokio::sync::{Notify, watch};

use crate::generations::Generations;
use crate::map_changes::{
    TouchTable, affected, differing, online_differing, same_in_maps, views_differing,
};
use crate::map_check::check_view;
use crate::map_json::{MapJson, PeerFragments};
use crate::netmap_builder::{LiveNodes, NetworkView, node_facts};
use crate::now_unix;
use crate::relay_registry::{Skipped, announce};
use crate::store::{NodeChanges, NodeRecord, Store, StoreError};

/// An immutable picture of the network.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publication.
    pub version: u64,
    /// Magic DNS suffix.
    pub suffix: String,
    /// Live (not expired) nodes.
    pub nodes: Arc<LiveNodes>,
    /// Compiled policy per live node.
    pub views: Arc<BTreeMap<NodeId, NodeView>>,
    /// Nodes with an open map stream.
    pub online: Arc<HashSet<NodeId>>,
    /// The relays every map announces.
    pub relays: Arc<[RelayInfo]>,
    /// Why the stored policy could not be used (the network then runs with
    /// an empty, deny-all policy).
    pub policy_error: Option<String>,
    /// The next time a live node expires (its keys' lifetime ends): the
    /// network is reloaded then, so it leaves every map and its stream
    /// closes without waiting for an unrelated change.
    pub next_expiry: Option<i64>,
    /// Shared map entries, serialized by the first stream that needs them.
    fragments: OnceLock<PeerFragments>,
}

impl Snapshot {
    /// A copy of this network for a publication that changes only what the
    /// caller sets (version, online set); fragments are rebuilt.
    fn same_network(&self) -> Self {
        Self {
            version: self.version,
            suffix: self.suffix.clone(),
            nodes: self.nodes.clone(),
            views: self.views.clone(),
            online: self.online.clone(),
            relays: self.relays.clone(),
            policy_error: self.policy_error.clone(),
            next_expiry: self.next_expiry,
            fragments: OnceLock::new(),
        }
    }

    /// The JSON of `id`'s current map, if it is a live node.
    pub fn netmap_json(&self, id: NodeId) -> Option<MapJson> {
        let view = self.views.get(&id)?;
        self.fragments
            .get_or_init(|| {
                PeerFragments::new(&self.suffix, self.nodes.clone(), self.online.clone())
                    .with_relays(self.relays.clone())
            })
            .netmap_json(id, view)
    }

    /// Checks `id`'s map against the node's verifier limits before it is
    /// signed ([`crate::map_check::check_view`]).
    pub fn check_map(&self, id: NodeId) -> Result<(), VerifyError> {
        let Some(view) = self.views.get(&id) else {
            return Ok(());
        };
        let net = NetworkView {
            suffix: &self.suffix,
            nodes: &self.nodes,
            online: &self.online,
            relays: &self.relays,
        };
        check_view(net, view)
    }
}

/// The inputs and output of the last policy compilation: a change that
/// leaves both inputs the same for the policy (an endpoint update, a node
/// coming online, a rename under a policy that names no host,
/// [`Policy::same_for`]) reuses the compiled views instead of recompiling
/// the network.
struct Compiled {
    json: String,
    policy: Policy,
    /// The facts of `nodes`, in id order.
    facts: Vec<NodeFacts>,
    nodes: Arc<LiveNodes>,
    views: Arc<BTreeMap<NodeId, NodeView>>,
}

impl Compiled {
    /// Whether the views also stand for `next`: the same nodes, and the
    /// records that changed (a new allocation) changed nothing the policy
    /// reads. If so the facts and nodes are moved on to `next`. Only the
    /// changed records are compared and converted: building and comparing
    /// the facts of all 10,000 nodes for an endpoint update took most of a
    /// reload.
    fn follow(&mut self, next: &Arc<LiveNodes>) -> bool {
        if self.nodes.len() != next.len() {
            return false;
        }
        let mut changed = Vec::new();
        for ((id, before), (next_id, after)) in self.nodes.iter().zip(next.iter()) {
            if id != next_id {
                return false;
            }
            if !Arc::ptr_eq(before, after) {
                changed.push(*id);
            }
        }
        let mut updates = Vec::with_capacity(changed.len());
        for id in changed {
            let Ok(at) = self.facts.binary_search_by_key(&id, |f| f.id) else {
                return false;
            };
            let facts = node_facts(&next[&id]);
            if !self.policy.same_for(
                std::slice::from_ref(&self.facts[at]),
                std::slice::from_ref(&facts),
            ) {
                return false;
            }
            updates.push((at, facts));
        }
        for (at, facts) in updates {
            self.facts[at] = facts;
        }
        self.nodes = next.clone();
        true
    }
}

/// A node's open map stream.
struct OpenStream {
    /// Which stream of the node this is.
    number: u64,
    /// Tells it to close (a newer stream took over).
    replaced: Arc<Notify>,
    /// Tells it that its map may have changed.
    changed: Arc<Notify>,
}

/// Shared network state.
pub struct Network {
    store: Arc<dyn Store>,
    /// Where map generations come from (blocks, safe across replicas).
    generations: Generations,
    state: watch::Sender<Arc<Snapshot>>,
    /// One map stream per node; a node is online while it has one.
    online: Mutex<HashMap<NodeId, OpenStream>>,
    next_stream: AtomicU64,
    compiled: Mutex<Option<Compiled>>,
    /// Held for a whole reload, from reading the store to publishing: two
    /// reloads at once could otherwise publish out of order, leaving the
    /// older reading in force until the next change. Holds the store's row
    /// version the published nodes are complete up to (none before the
    /// first reading).
    reloading: Mutex<Option<i64>>,
    /// The relay running inside this process, announced first.
    embedded_relay: Option<RelayInfo>,
    /// Relays last left out of the list (logged when this changes).
    skipped_relays: Mutex<Vec<Skipped>>,
    /// The last version that touched each node ([`crate::map_changes`]).
    touches: TouchTable,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Network {
    /// Loads the initial snapshot from the store.
    pub fn load(store: Arc<dyn Store>) -> Result<Arc<Self>, StoreError> {
        Self::load_with_relay(store, None)
    }

    /// Loads the initial snapshot, announcing `embedded_relay` (the relay
    /// running in this process) before the registered ones.
    pub fn load_with_relay(
        store: Arc<dyn Store>,
        embedded_relay: Option<RelayInfo>,
    ) -> Result<Arc<Self>, StoreError> {
        let (state, _) = watch::channel(Arc::new(Snapshot::default()));
        let network = Arc::new(Self {
            generations: Generations::new(store.clone()),
            store,
            state,
            online: Mutex::new(HashMap::new()),
            next_stream: AtomicU64::new(0),
            compiled: Mutex::new(None),
            reloading: Mutex::new(None),
            embedded_relay,
            skipped_relays: Mutex::new(Vec::new()),
            touches: TouchTable::default(),
        });
        network.reload()?;
        Ok(network)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The source of map generations.
    pub fn generations(&self) -> &Generations {
        &self.generations
    }

    /// The relays to announce, from the registered ones in the store.
    fn relays(&self) -> Result<Arc<[RelayInfo]>, StoreError> {
        let (relays, skipped) = announce(self.embedded_relay.as_ref(), &self.store.relays()?);
        let mut last = lock(&self.skipped_relays);
        if *last != skipped {
            for s in &skipped {
                tracing::error!(relay = %s.name, reason = %s.reason, "relay not announced");
            }
            *last = skipped;
        }
        Ok(relays.into())
    }

    /// Reads what changed in the store, recompiles if needed, publishes.
    /// Nodes are read incrementally: only the rows whose row version is
    /// newer than the last reading's ([`Store::node_changes`]), on top of
    /// the published ones (10,000 nodes took 70–100 ms to read whole inside
    /// a loaded server, for a change to one). Suffix, relays and policy are
    /// read whole (one row each).
    pub fn reload(&self) -> Result<(), StoreError> {
        let mut read_up_to = lock(&self.reloading);
        let started = std::time::Instant::now();
        let now = now_unix();
        let changes = self.store.node_changes(*read_up_to)?;
        let queried = started.elapsed();
        let (nodes, version) = match changes {
            NodeChanges::All { nodes, version } => {
                let live = nodes
                    .into_iter()
                    .filter(|n| !n.is_expired(now))
                    .map(|n| (n.id, Arc::new(n)))
                    .collect();
                (live, version)
            }
            NodeChanges::Since {
                changed,
                removed,
                version,
            } => (
                apply_changes(&self.current().nodes, changed, &removed, now),
                version,
            ),
        };
        let read = started.elapsed();
        self.rebuild(nodes, now)?;
        *read_up_to = Some(version);
        tracing::debug!(
            query_ms = queried.as_secs_f64() * 1000.0,
            read_ms = read.as_secs_f64() * 1000.0,
            total_ms = started.elapsed().as_secs_f64() * 1000.0,
            version,
            "network reloaded"
        );
        Ok(())
    }

    /// Publishes `nodes` (the live ones) with the stored suffix, relays and
    /// policy, recompiling the views unless the policy and the facts it
    /// reads are as last time. Called with `reloading` held (and only then
    /// are the published nodes replaced: [`Network::reload`] builds on
    /// them).
    fn rebuild(&self, nodes: LiveNodes, now: i64) -> Result<(), StoreError> {
        let suffix = self.store.suffix()?;
        let relays = self.relays()?;
        let policy_json = self.store.policy()?.unwrap_or_default();
        let nodes = Arc::new(nodes);
        let mut compiled = lock(&self.compiled);
        let reused = compiled
            .as_mut()
            .filter(|c| c.json == policy_json)
            .and_then(|c| c.follow(&nodes).then(|| c.views.clone()));
        let (views, policy_error) = match reused {
            Some(views) => (views, self.current().policy_error.clone()),
            None => {
                let (policy, policy_error) = if policy_json.is_empty() {
                    (Policy::default(), None)
                } else {
                    match Policy::parse(&policy_json) {
                        Ok(p) => (p, None),
                        Err(e) => {
                            tracing::error!(error = %e, "stored policy is invalid; denying everything");
                            (Policy::default(), Some(e.to_string()))
                        }
                    }
                };
                let facts: Vec<NodeFacts> = nodes.values().map(|n| node_facts(n)).collect();
                let views = Arc::new(rustynet_policy::compile(&policy, &facts));
                *compiled = Some(Compiled {
                    json: policy_json,
                    policy,
                    facts,
                    nodes: nodes.clone(),
                    views: views.clone(),
                });
                (views, policy_error)
            }
        };
        drop(compiled);
        let online: HashSet<NodeId> = lock(&self.online)
            .keys()
            .filter(|id| nodes.contains_key(id))
            .copied()
            .collect();
        let next_expiry = nodes
            .values()
            .flat_map(|n| [n.key_expires_at, n.expired_at])
            .flatten()
            .filter(|t| *t > now)
            .min();
        self.publish(|prev| {
            // Relative to the snapshot this one replaces (another thread
            // may have published since this reload began).
            let touched = (prev.version > 0 && prev.suffix == suffix && prev.relays == relays)
                .then(|| {
                    let mut touched = HashSet::new();
                    differing(
                        &prev.nodes,
                        &nodes,
                        |a, b| Arc::ptr_eq(a, b) || same_in_maps(a, b),
                        &mut touched,
                    );
                    views_differing(&prev.views, &views, &mut touched);
                    online_differing(&prev.online, &online, &mut touched);
                    touched
                });
            self.touches.retain(&nodes);
            let snapshot = Snapshot {
                version: prev.version + 1,
                suffix,
                nodes,
                views,
                online: Arc::new(online),
                relays,
                policy_error,
                next_expiry,
                fragments: OnceLock::new(),
            };
            (snapshot, touched)
        });
        Ok(())
    }

    /// Publishes the snapshot `make` returns with the nodes it touched
    /// (`None`: maybe every node), records the touches, then wakes the
    /// streams that may need a new map. The touches are recorded before
    /// the snapshot is visible and the streams woken after, so a woken
    /// stream always reads a snapshot at least as new as its reason.
    fn publish(&self, make: impl FnOnce(&Snapshot) -> (Snapshot, Option<HashSet<NodeId>>)) {
        let mut woken = None;
        self.state.send_modify(|current| {
            let (next, touched) = make(current);
            self.touches.record(next.version, touched.as_ref());
            woken = Some((next.views.clone(), touched));
            *current = Arc::new(next);
        });
        let Some((views, touched)) = woken else {
            return;
        };
        let online = lock(&self.online);
        match touched {
            None => online.values().for_each(|s| s.changed.notify_one()),
            Some(touched) => {
                for id in affected(&views, &touched) {
                    if let Some(s) = online.get(&id) {
                        s.changed.notify_one();
                    }
                }
            }
        }
    }

    fn publish_online(&self) {
        let online: HashSet<NodeId> = lock(&self.online).keys().copied().collect();
        self.publish(|prev| {
            let mut touched = HashSet::new();
            online_differing(&prev.online, &online, &mut touched);
            let snapshot = Snapshot {
                version: prev.version + 1,
                online: Arc::new(online),
                ..prev.same_network()
            };
            (snapshot, Some(touched))
        });
    }

    /// Wakes every map stream without changing the network (they then see
    /// what else changed, such as the signing key).
    pub fn nudge(&self) {
        self.publish(|prev| {
            let snapshot = Snapshot {
                version: prev.version + 1,
                ..prev.same_network()
            };
            // Whatever the nudge is for (a new signing key) is not in the
            // snapshot: every stream looks.
            (snapshot, None)
        });
    }

    /// Whether `id`'s map in `snapshot` may differ from the one built at
    /// version `since`: false only when no version since touched the node,
    /// a peer it sees or an exit node it may use ([`crate::map_changes`]).
    pub fn map_may_differ(&self, snapshot: &Snapshot, id: NodeId, since: u64) -> bool {
        let Some(view) = snapshot.views.get(&id) else {
            return true;
        };
        let reads = std::iter::once(id)
            .chain(view.visible_peers.iter().copied())
            .chain(view.exit_grants.iter().copied());
        self.touches.may_differ(since, snapshot.version, reads)
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.state.borrow().clone()
    }

    /// Registers a map stream for `id`, which is online until the returned
    /// guard is dropped. A node has one stream: an older one is told to
    /// close ([`OnlineGuard::replaced`]), so a node (or a thief of its key)
    /// cannot make control keep many streams for it.
    pub fn stream_opened(self: &Arc<Self>, id: NodeId) -> OnlineGuard {
        let number = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let open = OpenStream {
            number,
            replaced: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
        };
        let (replaced, changed) = (open.replaced.clone(), open.changed.clone());
        let previous = lock(&self.online).insert(id, open);
        match previous {
            Some(older) => older.replaced.notify_one(),
            None => self.publish_online(),
        }
        OnlineGuard {
            network: self.clone(),
            id,
            stream: number,
            replaced,
            changed,
        }
    }
}

/// The live nodes after `changed` and `removed` on top of `published`:
/// changed records replace the published ones, removed and expired nodes
/// leave (a node also expires when its key lifetime passes, with no row
/// changed).
fn apply_changes(
    published: &LiveNodes,
    changed: Vec<NodeRecord>,
    removed: &[NodeId],
    now: i64,
) -> LiveNodes {
    let mut nodes = published.clone();
    for id in removed {
        nodes.remove(id);
    }
    for node in changed {
        nodes.insert(node.id, Arc::new(node));
    }
    nodes.retain(|_, n| !n.is_expired(now));
    nodes
}

/// Keeps a node marked online while its map stream is open.
pub struct OnlineGuard {
    network: Arc<Network>,
    id: NodeId,
    stream: u64,
    replaced: Arc<Notify>,
    changed: Arc<Notify>,
}

impl OnlineGuard {
    /// Completes when a newer stream of the same node took over.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }

    /// Completes when a publication since the last call may have changed
    /// this node's map (at once if one came while nobody waited).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        let last = {
            let mut online = lock(&self.network.online);
            // Only the current stream takes the node offline.
            let current = online
                .get(&self.id)
                .is_some_and(|s| s.number == self.stream);
            if current {
                online.remove(&self.id);
            }
            current
        };
        if last {
            self.network.publish_online();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewPreauth, NodeUpdate, Registration, SqliteStore};
    use rustynet_proto::{SigningPublicKey, TunnelPublicKey};
    use sha2::{Digest as _, Sha256};

    fn enroll(store: &SqliteStore, name: &str, key: u8) -> NodeRecord {
        store
            .register(
                &Registration {
                    key_hash: Sha256::digest(b"k").into(),
                    hostname: name.into(),
                    node_key: TunnelPublicKey([key; 32]),
                    signing_key: SigningPublicKey([key; 32]),
                    endpoints: vec![],
                    advertise_exit_node: false,
                    advertised_routes: vec![],
                    path_key: None,
                    key_expires_at: None,
                },
                2,
            )
            .unwrap()
    }

    fn store_with_key(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
        let store = Arc::new(SqliteStore::create(&dir.path().join("c.db"), "x.internal").unwrap());
        store
            .create_preauth(
                &NewPreauth {
                    key_hash: Sha256::digest(b"k").into(),
                    user: "alice".into(),
                    tags: vec![],
                    reusable: true,
                    expires_at: None,
                },
                1,
            )
            .unwrap();
        store
    }

    #[test]
    fn a_map_is_rebuilt_only_when_its_node_or_a_peer_was_touched() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(&dir);
        let a = enroll(&store, "a", 1);
        let b = enroll(&store, "b", 2);
        let c = enroll(&store, "c", 3);
        store
            .set_policy(
                &format!(
                    r#"{{"acls":[{{"action":"accept","src":["{}"],"dst":["{}:*"]}}]}}"#,
                    a.tunnel_ip, b.tunnel_ip
                ),
                3,
            )
            .unwrap();
        let net = Network::load(store.clone()).unwrap();
        let v0 = net.current().version;
        assert!(net.current().views[&a.id].visible_peers.contains(&b.id));
        let endpoint = |id| {
            let update = NodeUpdate {
                endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
                ..NodeUpdate::default()
            };
            assert!(store.update_node(id, &update).unwrap());
            net.reload().unwrap();
        };
        endpoint(c.id);
        let now = net.current();
        assert!(!net.map_may_differ(&now, a.id, v0), "c is not a's peer");
        assert!(!net.map_may_differ(&now, b.id, v0));
        assert!(net.map_may_differ(&now, c.id, v0), "c itself changed");
        assert!(
            !net.map_may_differ(&now, c.id, now.version),
            "nothing after the last build"
        );
        let v1 = now.version;
        endpoint(b.id);
        let now = net.current();
        assert!(net.map_may_differ(&now, a.id, v1), "b is a's peer");
        assert!(!net.map_may_differ(&now, c.id, v1));
        let v2 = now.version;
        let online = net.stream_opened(b.id);
        assert!(
            net.map_may_differ(&net.current(), a.id, v2),
            "b came online"
        );
        assert!(!net.map_may_differ(&net.current(), c.id, v2));
        drop(online);
        let v3 = net.current().version;
        net.nudge();
        assert!(
            net.map_may_differ(&net.current(), c.id, v3),
            "a nudge may change anything"
        );
    }

    #[test]
    fn compiled_views_are_reused_until_policy_or_facts_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(&dir);
        let node = enroll(&store, "a", 1);
        let net = Network::load(store.clone()).unwrap();
        let before = net.current().views.clone();
        let update = NodeUpdate {
            endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
            ..NodeUpdate::default()
        };
        assert!(store.update_node(node.id, &update).unwrap());
        net.reload().unwrap();
        let after = net.current();
        assert!(
            Arc::ptr_eq(&before, &after.views),
            "an endpoint change must not recompile"
        );
        assert_eq!(after.nodes[&node.id].endpoints.len(), 1);
        store.set_policy("{}", 3).unwrap();
        net.reload().unwrap();
        let with_policy = net.current().views.clone();
        store.set_policy("{}", 4).unwrap();
        net.reload().unwrap();
        assert!(
            Arc::ptr_eq(&with_policy, &net.current().views),
            "same policy text: same views"
        );
        store
            .set_policy(
                r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#,
                4,
            )
            .unwrap();
        net.reload().unwrap();
        assert!(
            !Arc::ptr_eq(&before, &net.current().views),
            "a policy change recompiles"
        );
        // A change to one record that the policy reads (a tag) recompiles,
        // and the views are those of a fresh compilation.
        let tagged = r#"{"tag_owners":{"tag:web":["alice"]},
            "acls":[{"action":"accept","src":["*"],"dst":["tag:web:443"]}]}"#;
        let other = enroll(&store, "b", 2);
        store.set_policy(tagged, 5).unwrap();
        net.reload().unwrap();
        let untagged = net.current().views.clone();
        assert!(untagged[&node.id].visible_peers.is_empty());
        store
            .set_node_tags(&other.hostname, &["tag:web".to_owned()])
            .unwrap();
        net.reload().unwrap();
        let now = net.current();
        assert!(!Arc::ptr_eq(&untagged, &now.views), "a tag recompiles");
        assert!(now.views[&node.id].visible_peers.contains(&other.id));
        let facts: Vec<NodeFacts> = read_whole(&store).values().map(|n| node_facts(n)).collect();
        let fresh = rustynet_policy::compile(&Policy::parse(tagged).unwrap(), &facts);
        assert_eq!(*now.views, fresh);
    }

    /// The live nodes as a full reading finds them.
    fn read_whole(store: &SqliteStore) -> LiveNodes {
        store
            .nodes()
            .unwrap()
            .into_iter()
            .filter(|n| !n.is_expired(now_unix()))
            .map(|n| (n.id, Arc::new(n)))
            .collect()
    }

    #[test]
    fn a_reload_reads_what_changed_and_matches_a_whole_reading() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(&dir);
        let a = enroll(&store, "a", 1);
        let b = enroll(&store, "b", 2);
        let net = Network::load(store.clone()).unwrap();
        let views = net.current().views.clone();
        let update = NodeUpdate {
            endpoints: Some(vec!["192.0.2.1:41641".parse().unwrap()]),
            ..NodeUpdate::default()
        };
        assert!(store.update_node(a.id, &update).unwrap());
        let v0 = net.current().version;
        net.reload().unwrap();
        let now = net.current();
        assert_eq!(now.nodes[&a.id].endpoints.len(), 1, "a read again");
        assert_eq!(*now.nodes[&b.id], b, "b kept");
        assert!(
            Arc::ptr_eq(&views, &now.views),
            "an endpoint does not recompile"
        );
        assert!(net.map_may_differ(&now, a.id, v0));
        assert!(!net.map_may_differ(&now, b.id, v0), "b does not see a");
        // Every kind of change, each reloaded on top of the last reading.
        let c = enroll(&store, "c", 3);
        net.reload().unwrap();
        assert!(net.current().nodes.contains_key(&c.id), "enrolled");
        store.rename_node("b", "b2").unwrap();
        net.reload().unwrap();
        assert_eq!(net.current().nodes[&b.id].hostname, "b2");
        store.expire_node("a", now_unix() - 1).unwrap();
        net.reload().unwrap();
        assert!(
            !net.current().nodes.contains_key(&a.id),
            "an expired node leaves"
        );
        store.remove_node("c").unwrap();
        net.reload().unwrap();
        assert!(!net.current().nodes.contains_key(&c.id), "removed");
        assert_eq!(*net.current().nodes, read_whole(&store));
        // A node whose key lifetime passes leaves without any row changing.
        let d = store
            .register(
                &Registration {
                    key_hash: Sha256::digest(b"k").into(),
                    hostname: "d".into(),
                    node_key: TunnelPublicKey([4; 32]),
                    signing_key: SigningPublicKey([4; 32]),
                    endpoints: vec![],
                    advertise_exit_node: false,
                    advertised_routes: vec![],
                    path_key: None,
                    key_expires_at: Some(now_unix() + 1),
                },
                2,
            )
            .unwrap();
        net.reload().unwrap();
        assert!(net.current().nodes.contains_key(&d.id));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        net.reload().unwrap();
        assert!(!net.current().nodes.contains_key(&d.id), "key expired");
        assert_eq!(*net.current().nodes, read_whole(&store));
    }

    #[test]
    fn a_rename_recompiles_only_when_the_policy_names_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(&dir);
        enroll(&store, "a", 1);
        enroll(&store, "b", 2);
        store
            .set_policy(
                r#"{"acls":[{"action":"accept","src":["alice"],"dst":["alice:*"]}]}"#,
                3,
            )
            .unwrap();
        let net = Network::load(store.clone()).unwrap();
        let views = net.current().views.clone();
        store.rename_node("a", "a2").unwrap();
        net.reload().unwrap();
        assert!(
            Arc::ptr_eq(&views, &net.current().views),
            "no node: selector"
        );
        store
            .set_policy(
                r#"{"acls":[{"action":"accept","src":["alice"],"dst":["node:b:*"]}]}"#,
                4,
            )
            .unwrap();
        net.reload().unwrap();
        let views = net.current().views.clone();
        store.rename_node("b", "b2").unwrap();
        net.reload().unwrap();
        assert!(!Arc::ptr_eq(&views, &net.current().views), "node:b named");
    }
}
