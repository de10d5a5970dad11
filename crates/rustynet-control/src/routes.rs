//! `rustynet-control routes list|approve|reject`: an admin's decisions
//! about the LAN routes nodes advertise, beside the policy's own approvals
//! (`route_approvers`, the exit role).
//!
//! Decisions are kept per node ([`AdminRoutes`]) and survive withdrawal and
//! re-advertisement: approving before a router advertises is allowed. A
//! rejection wins over every approval; approving exactly a rejected prefix
//! lifts that rejection, and an approval that another rejection would
//! silently cancel is refused with the way out. Like `policy set`, a
//! decision whose maps a node's verifier would refuse changes nothing.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rustynet_policy::{AdminRoutes, NodeFacts, Policy, PolicyIndex, RouteStatus};
use rustynet_proto::NodeId;
use serde::Serialize;

use crate::admin::AdminError;
use crate::datadir::DataDir;
use crate::map_check::check_network;
use crate::netmap_builder::{LiveNodes, node_facts};
use crate::now_unix;
use crate::store::NodeRecord;

/// One route of one node, as `routes list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRow {
    /// The node's host label.
    pub node: String,
    /// Its id (routers for one prefix are used lowest id first).
    pub node_id: NodeId,
    /// The prefix.
    pub prefix: IpNet,
    /// Whether the node advertises it now.
    pub advertised: bool,
    /// The admin's decision on exactly this prefix, if any.
    pub admin: Option<&'static str>,
    /// Whether it is (or, not advertised, would be) approved, and why.
    #[serde(flatten)]
    pub status: RouteStatus,
    /// The node is also an exit node.
    pub exit_node: bool,
}

/// What an `approve` or `reject` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The row as it stands afterwards.
    pub route: RouteRow,
    /// What changed, in a sentence.
    pub message: String,
}

/// The live nodes and the policy, as the compiler sees them.
struct Network {
    policy: Policy,
    suffix: String,
    live: LiveNodes,
}

fn load(data: &DataDir) -> Result<Network, AdminError> {
    let store = data.open_store()?;
    let policy = match store.policy()? {
        Some(json) => Policy::parse(&json)?,
        None => Policy::default(),
    };
    let now = now_unix();
    let live = store
        .nodes()?
        .into_iter()
        .filter(|n| !n.is_expired(now))
        .map(|n| (n.id, std::sync::Arc::new(n)))
        .collect();
    Ok(Network {
        policy,
        suffix: store.suffix()?,
        live,
    })
}

impl Network {
    fn facts(&self) -> Vec<NodeFacts> {
        self.live.values().map(|n| node_facts(n)).collect()
    }

    fn rows(&self) -> Vec<RouteRow> {
        let facts = self.facts();
        let index = PolicyIndex::new(&self.policy, &facts);
        let mut rows = Vec::new();
        for n in self.live.values() {
            let mut prefixes: Vec<IpNet> = n
                .advertised_routes
                .iter()
                .chain(&n.admin_routes.approved)
                .chain(&n.admin_routes.rejected)
                .map(IpNet::trunc)
                .collect();
            prefixes.sort();
            prefixes.dedup();
            for prefix in prefixes {
                let Some(status) = index.route_status(n.id, prefix) else {
                    continue;
                };
                rows.push(row(n, prefix, status));
            }
        }
        rows
    }
}

fn row(n: &NodeRecord, prefix: IpNet, status: RouteStatus) -> RouteRow {
    let admin = if n.admin_routes.rejected.contains(&prefix) {
        Some("rejected")
    } else if n.admin_routes.approved.contains(&prefix) {
        Some("approved")
    } else {
        None
    };
    RouteRow {
        node: n.hostname.clone(),
        node_id: n.id,
        prefix,
        advertised: n.advertised_routes.iter().any(|r| r.trunc() == prefix),
        admin,
        status,
        exit_node: n.advertise_exit_node,
    }
}

/// `routes list`: every advertised route and every admin decision of the
/// live nodes, by node id then prefix.
pub fn list(data: &DataDir) -> Result<Vec<RouteRow>, AdminError> {
    Ok(load(data)?.rows())
}

/// The state of each advertised route of each live node (for `nodes list`).
pub fn statuses(data: &DataDir) -> Result<BTreeMap<(NodeId, IpNet), RouteStatus>, AdminError> {
    Ok(list(data)?
        .into_iter()
        .filter(|r| r.advertised)
        .map(|r| ((r.node_id, r.prefix), r.status))
        .collect())
}

/// A node's decisions after approving (`approve`) or rejecting `prefix`.
pub fn decide_on(
    current: &AdminRoutes,
    prefix: IpNet,
    approve: bool,
) -> Result<AdminRoutes, String> {
    let mut next = current.clone();
    if approve {
        next.rejected.retain(|r| *r != prefix);
        if let Some(other) = next
            .rejected
            .iter()
            .find(|r| r.contains(&prefix) || prefix.contains(*r))
        {
            return Err(format!(
                "{other} is rejected for this node and overlaps {prefix}, so the approval would have no effect; approve {other} itself to lift that rejection first"
            ));
        }
        if !next.approved.contains(&prefix) {
            next.approved.push(prefix);
        }
    } else {
        next.approved.retain(|r| *r != prefix);
        if !next.rejected.contains(&prefix) {
            next.rejected.push(prefix);
        }
    }
    next.approved.sort();
    next.rejected.sort();
    Ok(next)
}

fn parse_prefix(text: &str) -> Result<IpNet, AdminError> {
    let net: IpNet = text
        .parse()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| AdminError::Invalid(format!("{text:?} is not a CIDR")))?;
    if net.trunc() != net {
        return Err(AdminError::Invalid(format!(
            "{net} has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

/// `routes approve NODE CIDR` (`approve`) or `routes reject NODE CIDR`.
/// Nothing changes when the node is unknown, the prefix can never be
/// approved, the approval would be cancelled by another rejection, or a
/// node's map would break its verifier's limits.
pub fn decide(
    data: &DataDir,
    node: &str,
    prefix: &str,
    approve: bool,
) -> Result<Decision, AdminError> {
    let prefix = parse_prefix(prefix)?;
    let mut net = load(data)?;
    let record = net
        .live
        .values_mut()
        .find(|n| n.hostname == node)
        .ok_or_else(|| AdminError::Invalid(format!("no live node named {node:?}")))?;
    let next = decide_on(&record.admin_routes, prefix, approve).map_err(AdminError::Invalid)?;
    std::sync::Arc::make_mut(record).admin_routes = next.clone();
    let id = record.id;
    if approve {
        let facts = net.facts();
        let index = PolicyIndex::new(&net.policy, &facts);
        if let Some(RouteStatus::Refused { reason }) = index.route_status(id, prefix) {
            return Err(AdminError::Invalid(format!("cannot approve: {reason}")));
        }
    }
    let store = data.open_store()?;
    let (relays, _) = crate::relay_registry::announce(None, &store.relays()?);
    check_network(&net.policy, &net.suffix, net.live.clone(), &relays)?;
    store.set_admin_routes(node, &next)?;
    let route = net
        .rows()
        .into_iter()
        .find(|r| r.node_id == id && r.prefix == prefix)
        .ok_or_else(|| AdminError::Invalid(format!("{prefix} vanished from {node}")))?;
    let verb = if approve { "approved" } else { "rejected" };
    let advertised = if route.advertised {
        ""
    } else {
        " (not advertised yet: it takes effect when the node advertises it)"
    };
    let message = format!("{node} {prefix}: {verb}; now {}{advertised}", route.status);
    Ok(Decision { route, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn approving_a_rejected_prefix_lifts_exactly_that_rejection() {
        let rejected = decide_on(&AdminRoutes::default(), net("10.1.0.0/16"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rejected.rejected, vec![net("10.1.0.0/16")]);
        let lifted =
            decide_on(&rejected, net("10.1.0.0/16"), true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lifted.approved, vec![net("10.1.0.0/16")]);
        assert!(lifted.rejected.is_empty());
    }

    #[test]
    fn an_approval_another_rejection_would_cancel_is_refused() {
        let rejected = decide_on(&AdminRoutes::default(), net("10.0.0.0/8"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = decide_on(&rejected, net("10.1.0.0/16"), true).unwrap_err();
        assert!(err.contains("10.0.0.0/8 is rejected"), "{err}");
    }

    #[test]
    fn rejecting_drops_the_same_approval() {
        let approved = decide_on(&AdminRoutes::default(), net("10.1.0.0/16"), true)
            .unwrap_or_else(|e| panic!("{e}"));
        let rejected =
            decide_on(&approved, net("10.1.0.0/16"), false).unwrap_or_else(|e| panic!("{e}"));
        assert!(rejected.approved.is_empty());
        assert_eq!(rejected.rejected, vec![net("10.1.0.0/16")]);
    }
}
