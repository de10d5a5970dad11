//! Routing effects as the daemon sees them: reconcile Rustynet-owned
//! addresses, routes and rules, clear them, and tell whether the tunnel
//! interface still exists.

use rustynet_netos::{
    Links, RouteEntry, Routing, RoutingChanges, RoutingConfig, RoutingError, RuleEntry,
};

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

/// What the transaction and the health monitor need from routing.
pub trait RouteOps: Send {
    /// Makes Rustynet-owned routing state equal `desired` (idempotent).
    fn apply(&mut self, desired: &RoutingConfig) -> Result<RoutingChanges, RoutingError>;
    /// Removes everything Rustynet owns.
    fn clear(&mut self) -> Result<RoutingChanges, RoutingError>;
    /// Whether interface `name` exists.
    fn link_exists(&mut self, name: &str) -> Result<bool, RoutingError>;
    /// Every route in `table`, of any owner (`route explain`).
    fn list_routes(&mut self, table: u32) -> Result<Vec<RouteEntry>, RoutingError>;
    /// Every policy rule, of any owner (`route explain`).
    fn list_rules(&mut self) -> Result<Vec<RuleEntry>, RoutingError>;
    /// Every route of the main table (`local-lan` picks the on-link ones).
    fn main_routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError>;
}

impl<T: Routing + Links + Send> RouteOps for T {
    fn apply(&mut self, desired: &RoutingConfig) -> Result<RoutingChanges, RoutingError> {
        Routing::apply(self, desired)
    }

    fn clear(&mut self) -> Result<RoutingChanges, RoutingError> {
        Routing::clear(self)
    }

    fn link_exists(&mut self, name: &str) -> Result<bool, RoutingError> {
        Ok(self.link_state(name)?.is_some())
    }

    fn list_routes(&mut self, table: u32) -> Result<Vec<RouteEntry>, RoutingError> {
        Routing::list_routes(self, table)
    }

    fn list_rules(&mut self) -> Result<Vec<RuleEntry>, RoutingError> {
        Routing::list_rules(self)
    }

    fn main_routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        Routing::list_routes(self, MAIN_TABLE)
    }
}
