//! A policy resolved against one node set: every selector becomes a bitset
//! of node indices once, so each per-node view afterwards only ORs the sets
//! of the rules that touch that node.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipnet::IpNet;
use rustynet_proto::NodeId;
use rustynet_proto::netmap::TUNNEL_NET;
use serde::{Deserialize, Serialize};

use crate::bits::Bits;
use crate::cidr::{aggregate, forbidden_route, intersect};
use crate::model::{Policy, Selector};

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
}

/// The node sets of one ACL rule.
#[derive(Debug)]
pub(crate) struct RuleSets {
    /// Nodes the sources match (by identity or by tunnel address in a source CIDR).
    pub src: Bits,
    /// Source CIDRs as written (admitted literally by packet filters).
    pub src_literals: Vec<IpNet>,
    /// Nodes each `dst` entry matches, by entry.
    pub entries: Vec<Bits>,
    /// Union of `entries`.
    pub dst: Bits,
    /// `src` as packet-filter prefixes: node /32s plus literals, aggregated.
    src_cidrs: OnceLock<Vec<IpNet>>,
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
/// tunnel address is outside 100.64.0.0/10, are left out entirely (see
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
    rejected: Vec<NodeId>,
    pub(crate) rules: Vec<RuleSets>,
    pub(crate) exits: Vec<ExitSets>,
    /// Approved routes by node index.
    pub(crate) approved: Vec<Vec<IpNet>>,
    /// LAN entries sorted by router.
    pub(crate) lan: Vec<LanEntry>,
    /// LAN entry indices by rule.
    pub(crate) lan_by_rule: Vec<Vec<usize>>,
}

impl<'a> PolicyIndex<'a> {
    /// Resolves `policy` against `nodes`. The result does not depend on the
    /// order of `nodes`.
    pub fn new(policy: &'a Policy, nodes: &'a [NodeFacts]) -> Self {
        let (nodes, rejected) = accept_nodes(nodes);
        let ips: Vec<u32> = nodes.iter().map(|n| n.tunnel_ip.to_bits()).collect();
        let mut by_id: Vec<(NodeId, usize)> =
            nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        by_id.sort_unstable();
        let resolver = Resolver::new(policy, &nodes, &ips);

        let rules: Vec<RuleSets> = policy
            .rules
            .iter()
            .map(|rule| {
                let mut src = Bits::new(nodes.len());
                let mut src_literals = Vec::new();
                for sel in &rule.src {
                    resolver.add(sel, &mut src);
                    if let Selector::Prefix(net) = sel {
                        src_literals.push(*net);
                    }
                }
                let mut dst = Bits::new(nodes.len());
                let entries = rule
                    .dst
                    .iter()
                    .map(|e| {
                        let mut bits = Bits::new(nodes.len());
                        resolver.add(&e.selector, &mut bits);
                        dst.or_assign(&bits);
                        bits
                    })
                    .collect();
                RuleSets {
                    src,
                    src_literals,
                    entries,
                    dst,
                    src_cidrs: OnceLock::new(),
                }
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
        Self {
            policy,
            nodes,
            ips,
            by_id,
            rejected,
            rules,
            exits,
            approved,
            lan,
            lan_by_rule,
        }
    }

    /// Ids of nodes left out because their id or tunnel address collides with
    /// another node's, or their tunnel address is outside 100.64.0.0/10.
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

    /// Accepted node ids in ascending order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = (NodeId, usize)> + '_ {
        self.by_id.iter().copied()
    }

    /// Rule `r`'s sources as packet-filter prefixes, computed on first use.
    pub(crate) fn src_cidrs(&self, r: usize) -> &[IpNet] {
        let sets = &self.rules[r];
        sets.src_cidrs
            .get_or_init(|| aggregate(sets.src.iter().map(|i| self.ips[i]), &sets.src_literals))
    }

    /// LAN entries whose router is node `i`.
    pub(crate) fn lan_of_router(&self, i: usize) -> &[LanEntry] {
        let lo = self.lan.partition_point(|e| e.router < i);
        let hi = self.lan.partition_point(|e| e.router <= i);
        &self.lan[lo..hi]
    }
}

/// Keeps nodes with a unique id, a unique tunnel address and a tunnel address
/// in the tunnel range, sorted by tunnel address.
fn accept_nodes(all: &[NodeFacts]) -> (Vec<&NodeFacts>, Vec<NodeId>) {
    let mut ids: HashMap<NodeId, usize> = HashMap::with_capacity(all.len());
    for n in all {
        *ids.entry(n.id).or_default() += 1;
    }
    let mut sorted: Vec<&NodeFacts> = all.iter().collect();
    sorted.sort_unstable_by_key(|n| (n.tunnel_ip, n.id));
    let mut kept = Vec::with_capacity(sorted.len());
    let mut rejected = Vec::new();
    for (pos, n) in sorted.iter().enumerate() {
        let shared_ip = (pos > 0 && sorted[pos - 1].tunnel_ip == n.tunnel_ip)
            || sorted
                .get(pos + 1)
                .is_some_and(|m| m.tunnel_ip == n.tunnel_ip);
        let shared_id = ids.get(&n.id).is_some_and(|&c| c > 1);
        if shared_ip || shared_id || !TUNNEL_NET.contains(&n.tunnel_ip) {
            rejected.push(n.id);
        } else {
            kept.push(*n);
        }
    }
    rejected.sort_unstable();
    rejected.dedup();
    (kept, rejected)
}

/// Maps from names to node indices (ascending), built once per index.
struct Resolver<'n> {
    len: usize,
    ips: &'n [u32],
    users: HashMap<&'n str, Vec<usize>>,
    hosts: HashMap<&'n str, Vec<usize>>,
    /// Effective tags only: the node's user owns the tag.
    tags: HashMap<&'n str, Vec<usize>>,
    groups: HashMap<&'n str, Vec<&'n str>>,
}

impl<'n> Resolver<'n> {
    fn new(policy: &'n Policy, nodes: &[&'n NodeFacts], ips: &'n [u32]) -> Self {
        let groups: HashMap<&str, Vec<&str>> = policy
            .groups
            .iter()
            .map(|(g, members)| (g.as_str(), members.iter().map(String::as_str).collect()))
            .collect();
        let owners: HashMap<&str, HashSet<&str>> = policy
            .tag_owners
            .iter()
            .map(|(tag, list)| {
                let mut set = HashSet::new();
                for owner in list {
                    match owner {
                        Selector::User(u) => {
                            set.insert(u.as_str());
                        }
                        Selector::Group(g) => {
                            set.extend(groups.get(g.as_str()).into_iter().flatten().copied());
                        }
                        _ => {}
                    }
                }
                (tag.as_str(), set)
            })
            .collect();
        let mut users: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut hosts: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut tags: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            users.entry(n.user.as_str()).or_default().push(i);
            hosts.entry(n.hostname.as_str()).or_default().push(i);
            for tag in &n.tags {
                let owned = owners
                    .get(tag.as_str())
                    .is_some_and(|o| o.contains(n.user.as_str()));
                if owned {
                    let list = tags.entry(tag.as_str()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        Self {
            len: nodes.len(),
            ips,
            users,
            hosts,
            tags,
            groups,
        }
    }

    /// Adds the nodes `sel` matches to `out`.
    fn add(&self, sel: &Selector, out: &mut Bits) {
        let set_all = |list: Option<&Vec<usize>>, out: &mut Bits| {
            list.into_iter().flatten().for_each(|&i| out.set(i));
        };
        match sel {
            Selector::All => out.set_range(0, self.len),
            Selector::User(u) => set_all(self.users.get(u.as_str()), out),
            Selector::Group(g) => {
                for member in self.groups.get(g.as_str()).into_iter().flatten() {
                    set_all(self.users.get(member), out);
                }
            }
            Selector::Tag(t) => set_all(self.tags.get(t.as_str()), out),
            Selector::Node(h) => set_all(self.hosts.get(h.as_str()), out),
            Selector::Prefix(IpNet::V4(net)) => {
                let lo = self.ips.partition_point(|&ip| ip < net.network().to_bits());
                let hi = self
                    .ips
                    .partition_point(|&ip| ip <= net.broadcast().to_bits());
                out.set_range(lo, hi);
            }
            // Tunnel addresses are IPv4; an IPv6 prefix names no node.
            Selector::Prefix(IpNet::V6(_)) => {}
        }
    }
}

/// Each node's approved routes: advertised, not forbidden, and either the
/// node is an exit some user may use (its LAN comes with the role) or a
/// `route_approvers` entry for the node covers the route.
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
                .filter(|r| forbidden_route(*r).is_none())
                .filter(|r| {
                    exit_role
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
                // A grant needs a client other than the router itself.
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
