//! The live network state and its change feed.
//!
//! A [`Snapshot`] is an immutable picture: live nodes, the compiled per-node
//! policy views and who is online. Any change publishes a new snapshot on a
//! `watch` channel; every open map stream wakes and, unless the publication
//! touched neither its node nor a peer it sees ([`crate::map_changes`]),
//! rebuilds its node's map and sends it only if it differs from what the
//! node already has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustynet_policy::{NodeFacts, NodeView, Policy};
use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::{NodeId, VerifyError};
use tokio::sync::{Notify, watch};

use crate::generations::Generations;
use crate::map_changes::{TouchTable, differing, online_differing, same_in_maps, views_differing};
use crate::map_check::check_view;
use crate::map_json::{MapJson, PeerFragments};
use crate::netmap_builder::{NetworkView, node_facts};
use crate::now_unix;
use crate::relay_registry::{Skipped, announce};
use crate::store::{NodeRecord, Store, StoreError};

/// An immutable picture of the network.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every publication.
    pub version: u64,
    /// Magic DNS suffix.
    pub suffix: String,
    /// Live (not expired) nodes.
    pub nodes: Arc<BTreeMap<NodeId, NodeRecord>>,
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
    facts: Vec<NodeFacts>,
    views: Arc<BTreeMap<NodeId, NodeView>>,
}

/// A node's open map stream: its number, and how to tell it to close.
type OpenStream = (u64, Arc<Notify>);

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
    /// older reading in force until the next change.
    reloading: Mutex<()>,
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
            reloading: Mutex::new(()),
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

    /// Re-reads nodes, relays and policy, recompiles, publishes.
    pub fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = lock(&self.reloading);
        let now = now_unix();
        let nodes: BTreeMap<NodeId, NodeRecord> = self
            .store
            .nodes()?
            .into_iter()
            .filter(|n| !n.is_expired(now))
            .map(|n| (n.id, n))
            .collect();
        self.rebuild(nodes, now)
    }

    /// [`Network::reload`] after a change to node `id` alone (its own
    /// update, its enrollment): that node's record is read again and the
    /// rest kept from the current snapshot, instead of reading every node.
    /// Anything else that changed the store reloads it whole: admin commands
    /// and other replicas through [`crate::server`]'s change watcher.
    pub fn reload_node(&self, id: NodeId) -> Result<(), StoreError> {
        let _one_at_a_time = lock(&self.reloading);
        let now = now_unix();
        let record = self.store.node(id)?.filter(|n| !n.is_expired(now));
        let mut nodes = (*self.current().nodes).clone();
        match record {
            Some(record) => nodes.insert(id, record),
            None => nodes.remove(&id),
        };
        self.rebuild(nodes, now)
    }

    /// Publishes `nodes` (the live ones) with the stored suffix, relays and
    /// policy, recompiling the views unless the policy and the facts it
    /// reads are as last time. Called with `reloading` held.
    fn rebuild(&self, nodes: BTreeMap<NodeId, NodeRecord>, now: i64) -> Result<(), StoreError> {
        let suffix = self.store.suffix()?;
        let relays = self.relays()?;
        let policy_json = self.store.policy()?.unwrap_or_default();
        let facts: Vec<NodeFacts> = nodes.values().map(node_facts).collect();
        let mut compiled = lock(&self.compiled);
        let (views, policy_error) = match compiled.as_mut() {
            Some(c) if c.json == policy_json && c.policy.same_for(&c.facts, &facts) => {
                // The facts the views stand for from now on.
                c.facts = facts;
                (c.views.clone(), self.current().policy_error.clone())
            }
            _ => {
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
                let views = Arc::new(rustynet_policy::compile(&policy, &facts));
                *compiled = Some(Compiled {
                    json: policy_json,
                    policy,
                    facts,
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
                    differing(&prev.nodes, &nodes, same_in_maps, &mut touched);
                    views_differing(&prev.views, &views, &mut touched);
                    online_differing(&prev.online, &online, &mut touched);
                    touched
                });
            let version = prev.version + 1;
            self.touches.retain(&nodes);
            self.touches.record(version, touched.as_ref());
            Snapshot {
                version,
                suffix,
                nodes: Arc::new(nodes),
                views,
                online: Arc::new(online),
                relays,
                policy_error,
                next_expiry,
                fragments: OnceLock::new(),
            }
        });
        Ok(())
    }

    fn publish(&self, make: impl FnOnce(&Snapshot) -> Snapshot) {
        self.state.send_modify(|current| {
            *current = Arc::new(make(current));
        });
    }

    fn publish_online(&self) {
        let online: HashSet<NodeId> = lock(&self.online).keys().copied().collect();
        self.publish(|prev| {
            let mut touched = HashSet::new();
            online_differing(&prev.online, &online, &mut touched);
            let version = prev.version + 1;
            self.touches.record(version, Some(&touched));
            Snapshot {
                version,
                suffix: prev.suffix.clone(),
                nodes: prev.nodes.clone(),
                views: prev.views.clone(),
                online: Arc::new(online),
                relays: prev.relays.clone(),
                policy_error: prev.policy_error.clone(),
                next_expiry: prev.next_expiry,
                fragments: OnceLock::new(),
            }
        });
    }

    /// Wakes every map stream without changing the network (they then see
    /// what else changed, such as the signing key).
    pub fn nudge(&self) {
        self.publish(|prev| {
            // Whatever the nudge is for (a new signing key) is not in the
            // snapshot: every stream looks.
            self.touches.record(prev.version + 1, None);
            Snapshot {
                version: prev.version + 1,
                suffix: prev.suffix.clone(),
                nodes: prev.nodes.clone(),
                views: prev.views.clone(),
                online: prev.online.clone(),
                relays: prev.relays.clone(),
                policy_error: prev.policy_error.clone(),
                next_expiry: prev.next_expiry,
                fragments: OnceLock::new(),
            }
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

    /// A receiver that wakes on every publication.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.state.subscribe()
    }

    /// Registers a map stream for `id`, which is online until the returned
    /// guard is dropped. A node has one stream: an older one is told to
    /// close ([`OnlineGuard::replaced`]), so a node (or a thief of its key)
    /// cannot make control keep many streams for it.
    pub fn stream_opened(self: &Arc<Self>, id: NodeId) -> OnlineGuard {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let replaced = Arc::new(Notify::new());
        let previous = lock(&self.online).insert(id, (stream, replaced.clone()));
        match previous {
            Some((_, older)) => older.notify_one(),
            None => self.publish_online(),
        }
        OnlineGuard {
            network: self.clone(),
            id,
            stream,
            replaced,
        }
    }
}

/// Keeps a node marked online while its map stream is open.
pub struct OnlineGuard {
    network: Arc<Network>,
    id: NodeId,
    stream: u64,
    replaced: Arc<Notify>,
}

impl OnlineGuard {
    /// Completes when a newer stream of the same node took over.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        let last = {
            let mut online = lock(&self.network.online);
            // Only the current stream takes the node offline.
            let current = online.get(&self.id).is_some_and(|(s, _)| *s == self.stream);
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
    }

    #[test]
    fn reloading_one_node_reads_it_again_and_keeps_the_rest() {
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
        net.reload_node(a.id).unwrap();
        let now = net.current();
        assert_eq!(now.nodes[&a.id].endpoints.len(), 1, "a read again");
        assert_eq!(now.nodes[&b.id], b, "b kept");
        assert!(
            Arc::ptr_eq(&views, &now.views),
            "an endpoint does not recompile"
        );
        assert!(net.map_may_differ(&now, a.id, v0));
        assert!(!net.map_may_differ(&now, b.id, v0), "b does not see a");
        store.expire_node("a", now_unix() - 1).unwrap();
        net.reload_node(a.id).unwrap();
        assert!(
            !net.current().nodes.contains_key(&a.id),
            "an expired node leaves"
        );
        assert!(net.current().nodes.contains_key(&b.id));
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
