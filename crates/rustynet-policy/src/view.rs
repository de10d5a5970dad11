//! One node's compiled share of the policy: what it may see, accept, forward
//! and use. Control copies these lists into the node's signed netmap.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rayon::prelude::*;
use rustynet_proto::{FilterRule, LanGrant, NodeId, PortRange, Proto, SplitDnsRoute};
use serde::{Deserialize, Serialize};

use crate::bits::Bits;
use crate::cidr::{aggregate, host};
use crate::index::{NodeFacts, PolicyIndex};
use crate::model::Policy;

/// What the policy gives one node. Every list is sorted and deduplicated, and
/// mentions only the node itself and its visible peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Peers this node may know about: it may reach them or they it, either
    /// may use the other as exit, or either has a LAN grant through the other
    /// (counted as if its LAN-access toggle were on, so the toggle never
    /// changes who sees whom).
    pub visible_peers: Vec<NodeId>,
    /// Inbound filter for packets addressed to this node's tunnel address.
    pub packet_filter: Vec<FilterRule>,
    /// Prefixes (exactly the tunnel addresses of the clients) that may use
    /// this node as their exit. Empty unless the node advertises exit.
    pub exit_clients: Vec<IpNet>,
    /// Filter for packets this node forwards from clients into its approved
    /// routes. Names only clients whose LAN-access toggle is on.
    pub forward_filter: Vec<FilterRule>,
    /// Exit nodes this node may select.
    pub exit_grants: Vec<NodeId>,
    /// LAN prefixes this node may reach, and through which router. Empty
    /// while the node's LAN-access toggle is off.
    pub lan_grants: Vec<LanGrant>,
    /// This node's advertised routes that the policy approved.
    pub approved_routes: Vec<IpNet>,
    /// LAN prefixes reachable through each peer, for that peer's allowed
    /// addresses. Never a default route; empty while the toggle is off.
    pub peer_routes: BTreeMap<NodeId, Vec<IpNet>>,
    /// Split-DNS routes (the policy's `dns.split`, the same for every node).
    #[serde(default)]
    pub split_dns: Vec<SplitDnsRoute>,
}

/// Compiles the views of every accepted node, on all cores (views are
/// independent). Deterministic: independent of the order of `nodes` and of
/// scheduling.
pub fn compile(policy: &Policy, nodes: &[NodeFacts]) -> BTreeMap<NodeId, NodeView> {
    let index = PolicyIndex::new(policy, nodes);
    let ids: Vec<(NodeId, usize)> = index.ids().collect();
    let views: Vec<(NodeId, NodeView)> = ids
        .par_iter()
        .with_min_len(64)
        .map(|&(id, i)| (id, index.view_at(i)))
        .collect();
    views.into_iter().collect()
}

impl PolicyIndex<'_> {
    /// The view of node `id`, or `None` if the node is unknown or was rejected.
    /// Costs work proportional to the rules that touch the node and the size
    /// of its output, not to the whole network.
    pub fn view(&self, id: NodeId) -> Option<NodeView> {
        self.index_of(id).map(|i| self.view_at(i))
    }

    /// The nodes whose views mention `id` (its visible peers; visibility is
    /// symmetric), sorted; empty if `id` is unknown. When node X changes, the
    /// views to recompute are X's own plus `nodes_affected_by(X)` in both the
    /// old and the new index.
    ///
    /// That includes a flip of X's LAN-access toggle: it changes X's grants
    /// and the forward filters of the routers X has LAN grants through, and
    /// those routers are X's peers whatever the toggle (visibility ignores it).
    pub fn nodes_affected_by(&self, id: NodeId) -> Vec<NodeId> {
        self.index_of(id)
            .map(|i| self.node_ids(&self.visible(i)))
            .unwrap_or_default()
    }

    pub(crate) fn view_at(&self, i: usize) -> NodeView {
        let lan_grants = self.lan_grants(i);
        let mut peer_routes: BTreeMap<NodeId, Vec<IpNet>> = BTreeMap::new();
        for g in &lan_grants {
            peer_routes.entry(g.via).or_default().push(g.dst);
        }
        for routes in peer_routes.values_mut() {
            *routes = aggregate([], routes);
        }
        NodeView {
            visible_peers: self.node_ids(&self.visible(i)),
            packet_filter: self.packet_filter(i),
            exit_clients: self.exit_clients(i),
            forward_filter: self.forward_filter(i),
            exit_grants: self.exit_grants(i),
            lan_grants,
            approved_routes: self.approved[i].clone(),
            peer_routes,
            split_dns: self.policy.split_dns().to_vec(),
        }
    }

    /// Sorted ids of the nodes in `set`.
    fn node_ids(&self, set: &Bits) -> Vec<NodeId> {
        let mut ids = Vec::with_capacity(set.count());
        ids.extend(set.iter().map(|j| self.nodes[j].id));
        if !self.ids_follow_ips() {
            ids.sort_unstable();
        }
        ids
    }

    /// Exact prefixes for the tunnel addresses of the nodes in `set`.
    fn tunnel_cidrs(&self, set: &Bits) -> Vec<IpNet> {
        aggregate(set.iter().map(|j| self.ips[j]), &[])
    }

    fn visible(&self, i: usize) -> Bits {
        let mut vis = Bits::new(self.nodes.len());
        for sets in &self.rules {
            if sets.src.get(i) {
                vis.or_assign(&sets.dst);
            }
            if sets.dst.get(i) {
                vis.or_assign(&sets.src);
            }
        }
        for e in &self.exits {
            if e.users.get(i) {
                vis.or_assign(&e.nodes);
            }
            if e.nodes.get(i) {
                vis.or_assign(&e.users);
            }
        }
        for entry in self.lan_of_router(i) {
            vis.or_assign(&self.rules[entry.rule].src);
        }
        for (r, sets) in self.rules.iter().enumerate() {
            if sets.src.get(i) {
                for &l in &self.lan_by_rule[r] {
                    vis.set(self.lan[l].router);
                }
            }
        }
        vis.unset(i);
        vis
    }

    /// Rules whose destination matches node `i`, grouped by (proto, ports) so
    /// rules that differ only in their sources become one filter rule.
    fn packet_filter(&self, i: usize) -> Vec<FilterRule> {
        let mut groups: BTreeMap<(Proto, &[PortRange]), Vec<usize>> = BTreeMap::new();
        for (rule, sets) in self.policy.rules.iter().zip(&self.rules) {
            if !sets.dst.get(i) {
                continue;
            }
            let single = rule.dst.len() == 1;
            for entry in &rule.dst {
                if single || self.entry_matches(&entry.selector, i) {
                    groups
                        .entry((rule.proto, &entry.ports))
                        .or_default()
                        .push(sets.src_set);
                }
            }
        }
        let dst = vec![host(self.nodes[i].tunnel_ip)];
        let mut out: Vec<FilterRule> = groups
            .into_iter()
            .filter_map(|((proto, ports), mut set_ids)| {
                set_ids.sort_unstable();
                set_ids.dedup();
                let src = self.src_cidrs(&set_ids);
                (!src.is_empty()).then(|| FilterRule {
                    src: src.to_vec(),
                    dst: dst.clone(),
                    proto,
                    ports: ports.to_vec(),
                })
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn exit_clients(&self, i: usize) -> Vec<IpNet> {
        let mut clients = Bits::new(self.nodes.len());
        for e in self.exits.iter().filter(|e| e.nodes.get(i)) {
            clients.or_assign(&e.users);
        }
        clients.unset(i);
        self.tunnel_cidrs(&clients)
    }

    fn exit_grants(&self, i: usize) -> Vec<NodeId> {
        let mut exits = Bits::new(self.nodes.len());
        for e in self.exits.iter().filter(|e| e.users.get(i)) {
            exits.or_assign(&e.nodes);
        }
        exits.unset(i);
        self.node_ids(&exits)
    }

    fn lan_grants(&self, i: usize) -> Vec<LanGrant> {
        let mut grants = Vec::new();
        if !self.lan_on.get(i) {
            return grants;
        }
        for (r, sets) in self.rules.iter().enumerate() {
            if !sets.src.get(i) {
                continue;
            }
            let rule = &self.policy.rules[r];
            for &l in &self.lan_by_rule[r] {
                let entry = &self.lan[l];
                if entry.router != i {
                    grants.push(LanGrant {
                        via: self.nodes[entry.router].id,
                        dst: entry.dst,
                        proto: rule.proto,
                        ports: rule.dst[entry.entry].ports.clone(),
                    });
                }
            }
        }
        grants.sort_unstable();
        grants.dedup();
        grants
    }

    /// One filter rule per (destination, proto, ports) this router forwards
    /// to, admitting exactly the tunnel addresses of the granted clients
    /// whose LAN-access toggle is on; none where no such client is left.
    fn forward_filter(&self, i: usize) -> Vec<FilterRule> {
        let mut groups: BTreeMap<(IpNet, Proto, &[PortRange]), Bits> = BTreeMap::new();
        for entry in self.lan_of_router(i) {
            let rule = &self.policy.rules[entry.rule];
            let key = (
                entry.dst,
                rule.proto,
                rule.dst[entry.entry].ports.as_slice(),
            );
            groups
                .entry(key)
                .or_insert_with(|| Bits::new(self.nodes.len()))
                .or_assign(&self.rules[entry.rule].src);
        }
        let mut out: Vec<FilterRule> = groups
            .into_iter()
            .filter_map(|((dst, proto, ports), mut clients)| {
                clients.unset(i);
                clients.and_assign(&self.lan_on);
                let src = self.tunnel_cidrs(&clients);
                (!src.is_empty()).then(|| FilterRule {
                    src,
                    dst: vec![dst],
                    proto,
                    ports: ports.to_vec(),
                })
            })
            .collect();
        out.sort_unstable();
        out
    }
}
