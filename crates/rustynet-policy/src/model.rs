//! The validated policy: every selector parsed and every reference checked,
//! so the compiler and the reference evaluator never meet a malformed value.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::IpNet;
use rustynet_proto::{PortRange, Proto, SplitDnsRoute};

use serde::Deserialize as _;

use crate::doc::{Obj, PolicyDoc};
use crate::error::PolicyError;
use crate::index::NodeFacts;

/// Largest policy document accepted, in bytes. Refused before parsing so a
/// hostile upload can not make control allocate without bound.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;

/// Most entries accepted in each of `acls`, `exit_nodes` and `route_approvers`.
pub const MAX_RULES: usize = 10_000;

/// Most split-DNS domains (every node's map carries all of them).
pub(crate) const MAX_SPLIT_DNS: usize = 256;
/// Most resolvers for one split-DNS domain.
pub(crate) const MAX_SPLIT_RESOLVERS: usize = 8;

/// Who a selector names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Selector {
    /// `*`: every node (its tunnel address only).
    All,
    /// Nodes owned by this user.
    User(String),
    /// Nodes owned by a member of this group (full name, `group:NAME`).
    Group(String),
    /// Nodes carrying this tag, where the node's user owns the tag (`tag:NAME`).
    Tag(String),
    /// The node with this host label.
    Node(String),
    /// Addresses in this prefix (a CIDR, an address, or a resolved host alias).
    Prefix(IpNet),
}

/// One `dst` entry: who, and which ports (empty = every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DstEntry {
    /// The destination selector.
    pub selector: Selector,
    /// Sorted, merged port ranges; empty means all ports.
    pub ports: Vec<PortRange>,
}

/// One accept rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Sources.
    pub src: Vec<Selector>,
    /// Destinations with ports.
    pub dst: Vec<DstEntry>,
    /// Protocol selector.
    pub proto: Proto,
}

/// One `exit_nodes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExitEntry {
    /// Clients, by user (`User`, `Group` or `All`).
    pub users: Vec<Selector>,
    /// Exit nodes (node selectors, never prefixes).
    pub nodes: Vec<Selector>,
}

/// One `route_approvers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Approver {
    /// Advertised routes inside one of these are approved.
    pub routes: Vec<IpNet>,
    /// For these nodes (node selectors, never prefixes).
    pub nodes: Vec<Selector>,
}

/// Numbers for the names the policy mentions, so resolving it against a node
/// table costs one lookup per node instead of maps built from every node.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameTable {
    /// Every user named anywhere: selectors, group members, tag owners.
    pub users: HashMap<String, usize>,
    /// Every host label named by a `node:` selector.
    pub hosts: HashMap<String, usize>,
    /// Declared tags: number, and the sorted numbers of the users owning it
    /// (directly or through a group).
    pub tags: HashMap<String, (usize, Vec<usize>)>,
    /// Group -> member user numbers.
    pub groups: HashMap<String, Vec<usize>>,
}

/// A parsed and validated policy. Construct it with [`Policy::parse`]; the
/// default value is the empty policy, which denies everything.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub(crate) doc: PolicyDoc,
    /// `group:NAME` -> member users.
    pub(crate) groups: BTreeMap<String, BTreeSet<String>>,
    /// `tag:NAME` -> owners as written (`User` or `Group` selectors).
    pub(crate) tag_owners: BTreeMap<String, Vec<Selector>>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) exits: Vec<ExitEntry>,
    pub(crate) approvers: Vec<Approver>,
    /// Split-DNS routes, sorted by domain.
    pub(crate) split_dns: Vec<SplitDnsRoute>,
    pub(crate) names: NameTable,
}

/// Two policies are equal when their canonical documents are; everything
/// else is derived from the document.
impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.doc == other.doc
    }
}

impl Eq for Policy {}

impl Policy {
    /// Parses and validates a policy document, JSON or HuJSON (`//` and
    /// `/* */` comments, trailing commas, as Tailscale ACL files). Refuses
    /// the whole document on the first problem, naming where it is.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                size: text.len(),
                limit: MAX_POLICY_BYTES,
            });
        }
        let text = &crate::hujson::to_json(text)?;
        let json = |e: serde_json::Error| PolicyError::from_json(&e);
        let mut de = serde_json::Deserializer::from_str(text);
        let Obj(doc) = Obj::<PolicyDoc>::deserialize(&mut de).map_err(json)?;
        de.end().map_err(json)?;
        crate::validate::validate(doc)
    }

    /// The canonical form: keys sorted, every key and default (`proto`)
    /// spelled out, two-space indentation. `Policy::parse` of it yields an
    /// equal policy.
    pub fn to_json_pretty(&self) -> String {
        // Serialising maps of strings cannot fail; were it ever to, the empty
        // string fails to parse instead of silently becoming another policy.
        serde_json::to_string_pretty(&self.doc).unwrap_or_default()
    }

    /// The split-DNS routes (`dns.split`), sorted by domain: names under a
    /// domain are resolved by its resolvers instead of the upstream. Every
    /// node gets them through its map.
    pub fn split_dns(&self) -> &[SplitDnsRoute] {
        &self.split_dns
    }

    /// Number of ACL rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether compiling this policy against `a` and against `b` gives the
    /// same views: the same nodes in the same order with the same facts,
    /// where a node's host label counts only when the policy selects nodes
    /// by label (`node:HOST`). Renaming a node then recompiles nothing
    /// unless a rule names a host; control rebuilds its network on every
    /// change, and compiling 10,000 nodes is most of what a rename costs.
    pub fn same_for(&self, a: &[NodeFacts], b: &[NodeFacts]) -> bool {
        if !self.names.hosts.is_empty() {
            return a == b;
        }
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_but_label(x, y))
    }

    /// Whether `user` owns `tag` (spelled in full, `tag:NAME`): the tag is
    /// declared in `tag_owners` and `user` is listed there, directly or as a
    /// member of a listed group. Control asks this before issuing a pre-auth
    /// key that carries a tag, so a user can not mint keys for tags (and the
    /// access they bring) that are not theirs. An undeclared tag has no owner.
    pub fn tag_owned_by(&self, tag: &str, user: &str) -> bool {
        self.tag_owners.get(tag).is_some_and(|owners| {
            owners.iter().any(|owner| match owner {
                Selector::User(u) => u == user,
                Selector::Group(g) => self.groups.get(g).is_some_and(|m| m.contains(user)),
                _ => false,
            })
        })
    }
}

/// Facts equal but for the host label. Every field is named, so a new fact
/// cannot be left out of the comparison by accident.
fn same_but_label(x: &NodeFacts, y: &NodeFacts) -> bool {
    let NodeFacts {
        id,
        hostname: _,
        user,
        tags,
        tunnel_ip,
        advertise_exit_node,
        advertised_routes,
        lan_access,
        admin_routes,
    } = x;
    *id == y.id
        && *user == y.user
        && *tags == y.tags
        && *tunnel_ip == y.tunnel_ip
        && *advertise_exit_node == y.advertise_exit_node
        && *advertised_routes == y.advertised_routes
        && *lan_access == y.lan_access
        && *admin_routes == y.admin_routes
}
