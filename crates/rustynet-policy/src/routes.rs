//! Why a node's route is or is not approved, for the admin's listings
//! (`rustynet-control routes list`, `nodes list`) and `acl explain`.
//!
//! The answer is computed for one node from the same facts the compiler
//! uses ([`crate::PolicyIndex`] decides approvals with bitsets over the
//! whole network); a test holds the two to the same result.

use ipnet::IpNet;
use rustynet_proto::NodeId;
use serde::Serialize;

use crate::cidr::forbidden_route;
use crate::index::PolicyIndex;
use crate::model::Selector;

/// The state of one route of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RouteStatus {
    /// Approved: the node may route it for the clients the ACL names.
    Approved {
        /// What approved it: `exit role (exit_nodes[N])`,
        /// `route_approvers[N]` or `admin`.
        by: String,
    },
    /// An admin rejected it (or a prefix overlapping it).
    Rejected,
    /// It can never be approved (a default route, the tunnel range,
    /// loopback, link-local, multicast).
    Refused {
        /// Why.
        reason: String,
    },
    /// Waiting for an approval: no approver covers it and no admin approved it.
    Pending,
}

impl RouteStatus {
    /// Whether the route is approved.
    pub fn is_approved(&self) -> bool {
        matches!(self, RouteStatus::Approved { .. })
    }

    /// One word: `approved`, `rejected`, `refused` or `pending`.
    pub fn word(&self) -> &'static str {
        match self {
            RouteStatus::Approved { .. } => "approved",
            RouteStatus::Rejected => "rejected",
            RouteStatus::Refused { .. } => "refused",
            RouteStatus::Pending => "pending",
        }
    }
}

impl std::fmt::Display for RouteStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteStatus::Approved { by } => write!(f, "approved by {by}"),
            RouteStatus::Rejected => f.write_str("rejected by an admin"),
            RouteStatus::Refused { reason } => write!(f, "refused: {reason}"),
            RouteStatus::Pending => {
                f.write_str("pending (no route_approvers entry covers it; `routes approve` would)")
            }
        }
    }
}

impl PolicyIndex<'_> {
    /// The state `route` would have as an advertised route of node `id`
    /// (whether or not the node advertises it now), or `None` if the node
    /// is unknown or was rejected from the index.
    pub fn route_status(&self, id: NodeId, route: IpNet) -> Option<RouteStatus> {
        let i = self.index_of(id)?;
        let node = self.nodes[i];
        let route = route.trunc();
        if let Some(reason) = forbidden_route(route) {
            return Some(RouteStatus::Refused { reason });
        }
        if node.admin_routes.rejects(route) {
            return Some(RouteStatus::Rejected);
        }
        let matches_node = |sels: &[Selector]| sels.iter().any(|s| self.entry_matches(s, i));
        if node.advertise_exit_node {
            let usable = self.policy.exits.iter().position(|e| {
                matches_node(&e.nodes)
                    && e.users.iter().any(|u| match u {
                        Selector::Group(g) => {
                            self.policy.groups.get(g).is_some_and(|m| !m.is_empty())
                        }
                        _ => true,
                    })
            });
            if let Some(k) = usable {
                return Some(RouteStatus::Approved {
                    by: format!("exit role (exit_nodes[{k}])"),
                });
            }
        }
        let approver =
            self.policy.approvers.iter().position(|a| {
                matches_node(&a.nodes) && a.routes.iter().any(|ok| ok.contains(&route))
            });
        if let Some(k) = approver {
            return Some(RouteStatus::Approved {
                by: format!("route_approvers[{k}]"),
            });
        }
        if node.admin_routes.approves(route) {
            return Some(RouteStatus::Approved { by: "admin".into() });
        }
        Some(RouteStatus::Pending)
    }
}
