//! A policy resolved against one node set: every selector becomes a bitset
//! of node indices once, so each per-node view afterwards only ORs the sets
//! of the rules that touch that node.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};

use ipnet::IpNet;
use rustynet_proto::NodeId;
use rustynet_proto::netmap::{MAGIC_DNS_IP, TUNNEL_NET};
use serde::{Deserialize, Serialize};

use crate::bits::Bits;
use crate::cidr::{aggregate, forbidden_route, intersect};
use crate::model::{Policy, Selector};
use crate::resolve::Resolver;

/// What the compiler needs to know about one node. Control fills it from its
/// node table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The node's id.
    pub id: NodeId,
    /// Its assigned host label (what `node:HOST` matches).
    pub hostname: String,
    /// The user that owns it.
    pub user: String,
    /// Tags it asked for; only those its user owns take effect.
    pub tags: Vec<String>,
    /// Its tunnel address, inside 100.64.0.0/10.
    pub tunnel_ip: Ipv4Addr,
    /// Whether it offers to be an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes it offers to route.
    pub advertised_routes: Vec<IpNet>,
    /// Its own LAN-access toggle (`lan-access on`). Off, it gets no LAN
    /// grants and no router forwards for it, whatever the ACL says: the
    /// routers enforce the toggle too, so a client that forces its routing
    /// still cannot reach a LAN. Visibility ignores it, so flipping it never
    /// adds or removes peers. Absent (older records) means off: fail closed.
    #[serde(default)]
    pub lan_access: bool,
    /// What an admin decided about its routes (`rustynet-control routes
    /// approve|reject`). Absent (older records) means no decision.
    #[serde(default)]
    pub admin_routes: AdminRoutes,
}

/// An admin's decisions about one node's routes, kept beside the policy's
/// own approvals (`route_approvers`, the exit role).
///
/// A rejection always wins, and it is wide: an advertised route that shares
/// any address with a rejected prefix is never approved, so approving a
/// wider route elsewhere cannot bring a rejected subnet back. An approval is
/// narrow: it approves advertised routes inside the approved prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdminRoutes {
    /// Approved prefixes.
    #[serde(default)]
    pub approved: Vec<IpNet>,
    /// Rejected prefixes.
    #[serde(default)]
    pub rejected: Vec<IpNet>,
}

impl AdminRoutes {
    /// Whether an admin approval covers `route`.
    pub fn approves(&self, route: IpNet) -> bool {
        self.approved.iter().any(|a| a.contains(&route))
    }

    /// Whether an admin rejection touches `route`.
    pub fn rejects(&self, route: IpNet) -> bool {
        self.rejected
            .iter()
            .any(|r| r.contains(&route) || route.contains(r))
    }
}

/// The node sets of one ACL rule.
#[derive(Debug)]
pub(crate) struct RuleSets {
    /// Nodes the sources match (by identity or by tunnel address in a source CIDR).
    pub src: Bits,
    /// The rule's entry in [`PolicyIndex::src_sets`]; rules with identical
    /// sources share one, so their prefixes are computed once.
    pub src_set: usize,
    /// Nodes some `dst` entry matches. Which entries match a given node is
    /// decided per node ([`PolicyIndex::entry_matches`]), so a rule with many
    /// entries costs one set, not one per entry.
    pub dst: Bits,
}

/// A distinct source set as packet filters admit it.
#[derive(Debug)]
pub(crate) struct SrcSet {
    /// A rule with these sources (its `src` bits are the matched nodes).
    rule: usize,
    /// Source CIDRs as written (admitted literally).
    literals: Vec<IpNet>,
    /// Node /32s plus literals, aggregated; computed on first use.
    cidrs: OnceLock<Arc<[IpNet]>>,
}

/// The node sets of one `exit_nodes` entry.
#[derive(Debug)]
pub(crate) struct ExitSets {
    /// Nodes whose user may use the exits.
    pub users: Bits,
    /// Nodes that are exits under this entry (they must advertise exit).
    pub nodes: Bits,
}

/// A LAN destination one rule grants through one router.
#[derive(Debug)]
pub(crate) struct LanEntry {
    /// Router node index.
    pub router: usize,
    /// ACL rule index.
    pub rule: usize,
    /// Index of the `dst` entry within the rule.
    pub entry: usize,
    /// The destination: the entry's prefix intersected with an approved route.
    pub dst: IpNet,
}

/// A policy resolved against a node set. Build it once per change of policy
/// or node table; then [`PolicyIndex::view`] is cheap per node.
///
/// Nodes that share an id or a tunnel address with another node, or whose
/// tunnel address is outside 100.64.0.0/10 or is the Magic DNS address, are
/// left out entirely (see
/// [`PolicyIndex::rejected`]): guessing which of two claimants owns an
/// address could hand one node the other's access.
#[derive(Debug)]
pub struct PolicyIndex<'a> {
    pub(crate) policy: &'a Policy,
    /// Accepted nodes in ascending tunnel-address order; a node's index is its
    /// position here.
    pub(crate) nodes: Vec<&'a NodeFacts>,
    /// `nodes[i].tunnel_ip` as integers, ascending.
    pub(crate) ips: Vec<u32>,
    /// `(id, index)` sorted by id.
    by_id: Vec<(NodeId, usize)>,
    /// Whether ids ascend with tunnel addresses (control allocates both in
    /// enrollment order), so id lists built in index order are already sorted.
    ids_follow_ips: bool,
    rejected: Vec<NodeId>,
    pub(crate) rules: Vec<RuleSets>,
    src_sets: Vec<SrcSet>,
    /// Prefixes of unions of several source sets, keyed by their sorted ids:
    /// nodes matched by the same rules share one computation.
    merged: Mutex<HashMap<Vec<usize>, Arc<[IpNet]>>>,
    pub(crate) exits: Vec<ExitSets>,
    /// Approved routes by node index.
    pub(crate) approved: Vec<Vec<IpNet>>,
    /// LAN entries sorted by router.
    pub(crate) lan: Vec<LanEntry>,
    /// LAN entry indices by rule.
    pub(crate) lan_by_rule: Vec<Vec<usize>>,
    /// Nodes whose LAN-access toggle is on: the only clients LAN grants and
    /// forward filters may name. LAN entries themselves ignore it, so
    /// visibility does not depend on the toggle.
    pub(crate) lan_on: Bits,
}

impl<'a> PolicyIndex<'a> {
    /// Resolves `policy` against `nodes`. The result does not depend on the
    /// order of `nodes`.
    pub fn new(policy: &'a Policy, nodes: &'a [NodeFacts]) -> Self {
        let (nodes, rejected) = accept_nodes(nodes);
        let ips: Vec<u32> = nodes.iter().map(|n| n.tunnel_ip.to_bits()).collect();
        let mut by_id: Vec<(NodeId, usize)> =
            nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        let ids_follow_ips = by_id.windows(2).all(|w| w[0].0 < w[1].0);
        by_id.sort_unstable();
        let resolver = Resolver::new(policy, &nodes, &ips);

        let mut src_sets: Vec<SrcSet> = Vec::new();
        let mut src_ids: HashMap<(Bits, Vec<IpNet>), usize> = HashMap::new();
        let rules: Vec<RuleSets> = policy
            .rules
            .iter()
            .enumerate()
            .map(|(r, rule)| {
                let mut src = Bits::new(nodes.len());
                let mut literals = Vec::new();
                for sel in &rule.src {
                    resolver.add(sel, &mut src);
                    if let Selector::Prefix(net) = sel {
                        literals.push(*net);
                    }
                }
                literals.sort_unstable();
                literals.dedup();
                let src_set = *src_ids
                    .entry((src.clone(), literals.clone()))
                    .or_insert_with(|| {
                        src_sets.push(SrcSet {
                            rule: r,
                            literals,
                            cidrs: OnceLock::new(),
                        });
                        src_sets.len() - 1
                    });
                let mut dst = Bits::new(nodes.len());
                rule.dst
                    .iter()
                    .for_each(|e| resolver.add(&e.selector, &mut dst));
                RuleSets { src, src_set, dst }
            })
            .collect();

        let exits: Vec<ExitSets> = policy
            .exits
            .iter()
            .map(|e| {
                let mut users = Bits::new(nodes.len());
                e.users.iter().for_each(|s| resolver.add(s, &mut users));
                let mut matched = Bits::new(nodes.len());
                e.nodes.iter().for_each(|s| resolver.add(s, &mut matched));
                let mut exit_nodes = Bits::new(nodes.len());
                for i in matched.iter().filter(|&i| nodes[i].advertise_exit_node) {
                    exit_nodes.set(i);
                }
                ExitSets {
                    users,
                    nodes: exit_nodes,
                }
            })
            .collect();

        let approved = approve_routes(policy, &nodes, &resolver);
        let (lan, lan_by_rule) = lan_entries(policy, &rules, &approved);
        let mut lan_on = Bits::new(nodes.len());
        for (i, _) in nodes.iter().enumerate().filter(|(_, n)| n.lan_access) {
            lan_on.set(i);
        }
        Self {
            policy,
            nodes,
            ips,
            by_id,
            ids_follow_ips,
            rejected,
            rules,
            src_sets,
            merged: Mutex::new(HashMap::new()),
            exits,
            approved,
            lan,
            lan_by_rule,
            lan_on,
        }
    }

    /// Ids of nodes left out because their id or tunnel address collides with
    /// another node's, or their tunnel address is outside 100.64.0.0/10 or is
    /// the Magic DNS address.
    /// Sorted. Control should never produce such nodes; this is the fail-closed net.
    pub fn rejected(&self) -> &[NodeId] {
        &self.rejected
    }

    /// Index of node `id`, if it was accepted.
    pub(crate) fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id
            .binary_search_by_key(&id, |(nid, _)| *nid)
            .ok()
            .map(|pos| self.by_id[pos].1)
    }

    /// Whether node ids ascend with node indices.
    pub(crate) fn ids_follow_ips(&self) -> bool {
        self.ids_follow_ips
    }

    /// Accepted node ids in ascending order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = (NodeId, usize)> + '_ {
        self.by_id.iter().copied()
    }

    /// The packet-filter prefixes admitting the union of the given source
    /// sets (ids sorted, distinct), computed once per distinct combination.
    pub(crate) fn src_cidrs(&self, set_ids: &[usize]) -> Arc<[IpNet]> {
        let compute = |ids: &[usize]| -> Arc<[IpNet]> {
            let mut bits = Bits::new(self.nodes.len());
            let mut literals = Vec::new();
            for &id in ids {
                bits.or_assign(&self.rules[self.src_sets[id].rule].src);
                literals.extend_from_slice(&self.src_sets[id].literals);
            }
            aggregate(bits.iter().map(|i| self.ips[i]), &literals).into()
        };
        if let [id] = set_ids {
            return Arc::clone(self.src_sets[*id].cidrs.get_or_init(|| compute(set_ids)));
        }
        // A poisoned lock only means another view panicked; the map is still valid.
        let mut merged = self.merged.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            merged
                .entry(set_ids.to_vec())
                .or_insert_with(|| compute(set_ids)),
        )
    }

    /// Whether `sel` (a `dst` entry's selector) matches node `i`; the same
    /// meaning as the resolved sets, decided for one node.
    pub(crate) fn entry_matches(&self, sel: &Selector, i: usize) -> bool {
        let node = self.nodes[i];
        match sel {
            Selector::All => true,
            Selector::User(u) => node.user == *u,
            Selector::Group(g) => self
                .policy
                .groups
                .get(g)
                .is_some_and(|m| m.contains(&node.user)),
            Selector::Tag(t) => {
                node.tags.contains(t)
                    && self.policy.names.tags.get(t).is_some_and(|(_, owners)| {
                        let user = self.policy.names.users.get(&node.user);
                        user.is_some_and(|u| owners.binary_search(u).is_ok())
                    })
            }
            Selector::Node(h) => node.hostname == *h,
            Selector::Prefix(net) => net.contains(&IpAddr::V4(node.tunnel_ip)),
        }
    }

    /// LAN entries whose router is node `i`.
    pub(crate) fn lan_of_router(&self, i: usize) -> &[LanEntry] {
        let lo = self.lan.partition_point(|e| e.router < i);
        let hi = self.lan.partition_point(|e| e.router <= i);
        &self.lan[lo..hi]
    }
}

/// Keeps nodes with a unique id, a unique tunnel address and a tunnel address
/// in the tunnel range other than the Magic DNS address, sorted by tunnel
/// address.
fn accept_nodes(all: &[NodeFacts]) -> (Vec<&NodeFacts>, Vec<NodeId>) {
    let mut ids: Vec<NodeId> = all.iter().map(|n| n.id).collect();
    ids.sort_unstable();
    let shared_ids: Vec<NodeId> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let mut sorted: Vec<&NodeFacts> = all.iter().collect();
    sorted.sort_unstable_by_key(|n| (n.tunnel_ip, n.id));
    let mut kept = Vec::with_capacity(sorted.len());
    let mut rejected = Vec::new();
    for (pos, n) in sorted.iter().enumerate() {
        let shared_ip = (pos > 0 && sorted[pos - 1].tunnel_ip == n.tunnel_ip)
            || sorted
                .get(pos + 1)
                .is_some_and(|m| m.tunnel_ip == n.tunnel_ip);
        let shared_id = shared_ids.binary_search(&n.id).is_ok();
        let bad_ip = !TUNNEL_NET.contains(&n.tunnel_ip) || n.tunnel_ip == MAGIC_DNS_IP;
        if shared_ip || shared_id || bad_ip {
            rejected.push(n.id);
        } else {
            kept.push(*n);
        }
    }
    rejected.sort_unstable();
    rejected.dedup();
    (kept, rejected)
}

/// Each node's approved routes: advertised, not forbidden, not rejected by
/// an admin, and either the node is an exit some user may use (its LAN
/// comes with the role), a `route_approvers` entry for the node covers the
/// route, or an admin approved it.
///
/// "Some user may use" is decided from the policy (an `exit_nodes` entry
/// names the node and at least one user could match its `users`), not from
/// which clients are enrolled right now, so a node's approvals depend only on
/// its own facts and the policy and a one-node delta stays local.
fn approve_routes(
    policy: &Policy,
    nodes: &[&NodeFacts],
    resolver: &Resolver<'_>,
) -> Vec<Vec<IpNet>> {
    let usable_exits: Vec<Bits> = policy
        .exits
        .iter()
        .filter(|e| {
            e.users.iter().any(|u| match u {
                Selector::Group(g) => policy.groups.get(g).is_some_and(|m| !m.is_empty()),
                _ => true,
            })
        })
        .map(|e| {
            let mut bits = Bits::new(nodes.len());
            e.nodes.iter().for_each(|s| resolver.add(s, &mut bits));
            bits
        })
        .collect();
    let approvers: Vec<Bits> = policy
        .approvers
        .iter()
        .map(|a| {
            let mut bits = Bits::new(nodes.len());
            a.nodes.iter().for_each(|s| resolver.add(s, &mut bits));
            bits
        })
        .collect();
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if n.advertised_routes.is_empty() {
                return Vec::new();
            }
            let exit_role = n.advertise_exit_node && usable_exits.iter().any(|b| b.get(i));
            let routes: BTreeSet<IpNet> = n
                .advertised_routes
                .iter()
                .map(IpNet::trunc)
                .filter(|r| forbidden_route(*r).is_none() && !n.admin_routes.rejects(*r))
                .filter(|r| {
                    exit_role
                        || n.admin_routes.approves(*r)
                        || policy.approvers.iter().zip(&approvers).any(|(a, bits)| {
                            bits.get(i) && a.routes.iter().any(|ok| ok.contains(r))
                        })
                })
                .collect();
            routes.into_iter().collect()
        })
        .collect()
}

/// Every (router, rule, dst entry, approved route) combination whose prefix
/// destination overlaps the route, sorted by router, plus an index by rule.
/// Node selectors never appear here: only CIDR and host-alias destinations
/// grant LAN access.
fn lan_entries(
    policy: &Policy,
    rules: &[RuleSets],
    approved: &[Vec<IpNet>],
) -> (Vec<LanEntry>, Vec<Vec<usize>>) {
    let prefix_dsts: Vec<(usize, usize, IpNet)> = policy
        .rules
        .iter()
        .enumerate()
        .flat_map(|(r, rule)| {
            rule.dst
                .iter()
                .enumerate()
                .filter_map(move |(k, e)| match e.selector {
                    Selector::Prefix(net) => Some((r, k, net)),
                    _ => None,
                })
        })
        .collect();
    let mut lan = Vec::new();
    let mut by_rule = vec![Vec::new(); policy.rules.len()];
    for (router, routes) in approved.iter().enumerate() {
        for route in routes {
            for &(r, k, net) in &prefix_dsts {
                let Some(dst) = intersect(net, *route) else {
                    continue;
                };
                // A grant needs a client other than the router itself. Its
                // LAN-access toggle does not count here: entries also decide
                // visibility, which must not change when a toggle flips.
                if rules[r].src.any_except(router) {
                    by_rule[r].push(lan.len());
                    lan.push(LanEntry {
                        router,
                        rule: r,
                        entry: k,
                        dst,
                    });
                }
            }
        }
    }
    (lan, by_rule)
}
