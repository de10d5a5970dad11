//! Interfaces, addresses, routes and policy rules.
//!
//! Ownership is explicit so that reconciling never touches anything Rustynet
//! did not create: every route and rule we install carries
//! [`RoutingScope::protocol`] in its `rtm_protocol` / `FRA_PROTOCOL` field,
//! rules must also sit inside [`RoutingScope::rule_priorities`], and
//! addresses are only managed on [`RoutingScope::interface`]. A route or rule
//! is "ours" exactly when it carries our protocol (and, for rules, a priority
//! in our band); everything else is read but never modified.

mod diff;
mod fake;
mod linux;
mod netlink;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::IpFamily;
use crate::validate::{InvalidName, validate_ifname};

pub use fake::{FakeRouting, RoutingCall};
pub use linux::NetlinkRouting;

pub(crate) use diff::{address_plan, diff_sets, is_managed_address};

/// The `rtm_protocol` value that marks routes and rules as Rustynet's.
/// Unassigned in iproute2's `rt_protos` (shows as `proto 114`).
pub const RUSTYNET_RT_PROTOCOL: u8 = 114;
/// Default routing table for full-tunnel routes.
pub const DEFAULT_TABLE: u32 = 5600;
/// Default priority band for Rustynet's policy rules: below `main` (32766),
/// clear of the priorities other VPN clients commonly use (e.g. 5210–5270).
pub const DEFAULT_RULE_PRIORITIES: RangeInclusive<u32> = 5600..=5699;

/// What Rustynet owns on this host. Fixed for the life of a
/// [`NetlinkRouting`]; the daemon builds it from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingScope {
    /// The tunnel interface whose addresses are reconciled (and which routes
    /// outside [`Self::tables`] must point at).
    pub interface: String,
    /// Protocol value stamped on every route and rule we create.
    pub protocol: u8,
    /// Priority band for our policy rules.
    pub rule_priorities: RangeInclusive<u32>,
    /// Routing tables that are entirely ours: a route there may point
    /// anywhere (including `unreachable` for fail-closed).
    pub tables: BTreeSet<u32>,
}

impl RoutingScope {
    /// The default scope for a tunnel interface: protocol
    /// [`RUSTYNET_RT_PROTOCOL`], rules in [`DEFAULT_RULE_PRIORITIES`], table
    /// [`DEFAULT_TABLE`].
    pub fn new(interface: impl Into<String>) -> Result<Self, RoutingError> {
        let interface = interface.into();
        validate_ifname(&interface)?;
        Ok(Self {
            interface,
            protocol: RUSTYNET_RT_PROTOCOL,
            rule_priorities: DEFAULT_RULE_PRIORITIES,
            tables: BTreeSet::from([DEFAULT_TABLE]),
        })
    }
}

/// Where a route sends packets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// Out of an interface, optionally via a gateway.
    Dev {
        /// Output interface name.
        dev: String,
        /// Next hop, same family as the destination.
        via: Option<IpAddr>,
    },
    /// Silently discard (`blackhole`).
    Blackhole,
    /// Discard with ICMP unreachable (`unreachable`): the fail-closed default
    /// of a tunnel table, so lookups never fall through to `main`.
    Unreachable,
}

/// One route Rustynet wants installed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix; host bits must be zero.
    pub dst: IpNet,
    /// Routing table id (254 is `main`).
    pub table: u32,
    /// Route metric (`priority`). `None` means the kernel default, which is
    /// 0 for IPv4 and 1024 for IPv6 (where an explicit 0 also means 1024);
    /// it is normalised to what the kernel stores so a re-read route
    /// compares equal.
    pub metric: Option<u32>,
    /// What the route does.
    pub target: RouteTarget,
}

impl Route {
    /// A route out of `dev` in `table`.
    pub fn dev(dst: IpNet, dev: impl Into<String>, table: u32) -> Self {
        Self {
            dst,
            table,
            metric: None,
            target: RouteTarget::Dev {
                dev: dev.into(),
                via: None,
            },
        }
    }

    /// An `unreachable` route in `table`.
    pub fn unreachable(dst: IpNet, table: u32) -> Self {
        Self {
            dst,
            table,
            metric: None,
            target: RouteTarget::Unreachable,
        }
    }

    /// A `blackhole` route in `table`.
    pub fn blackhole(dst: IpNet, table: u32) -> Self {
        Self {
            dst,
            table,
            metric: None,
            target: RouteTarget::Blackhole,
        }
    }

    /// The same route with an explicit metric.
    pub fn with_metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    /// The same route via a gateway (only meaningful for [`RouteTarget::Dev`]).
    pub fn with_via(mut self, gateway: IpAddr) -> Self {
        if let RouteTarget::Dev { via, .. } = &mut self.target {
            *via = Some(gateway);
        }
        self
    }

    /// The metric the kernel will report for this route.
    pub fn effective_metric(&self) -> u32 {
        match (self.dst, self.metric) {
            // IPv6 treats metric 0 as "unset" too and stores 1024.
            (IpNet::V6(_), None | Some(0)) => 1024,
            (IpNet::V4(_), None) => 0,
            (_, Some(m)) => m,
        }
    }

    /// This route with its metric made explicit, for comparisons.
    pub(crate) fn normalized(&self) -> Self {
        Self {
            metric: Some(self.effective_metric()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            RouteTarget::Dev { dev, via: Some(gw) } => {
                write!(f, "{} via {gw} dev {dev}", self.dst)?
            }
            RouteTarget::Dev { dev, via: None } => write!(f, "{} dev {dev}", self.dst)?,
            RouteTarget::Blackhole => write!(f, "blackhole {}", self.dst)?,
            RouteTarget::Unreachable => write!(f, "unreachable {}", self.dst)?,
        }
        write!(
            f,
            " table {} metric {}",
            self.table,
            self.effective_metric()
        )
    }
}

/// One policy rule (`ip rule`) that sends matching lookups to a table.
///
/// A wg-quick/Mullvad-style full tunnel is two rules per family:
/// `not fwmark M lookup T` (everything except the tunnel's own marked UDP
/// goes to the tunnel table) and, at a smaller priority,
/// `lookup main suppress_prefixlength 0` (use specific routes from `main`,
/// but ignore its default route).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// Rule priority (`pref`); must be inside the scope's band.
    pub priority: u32,
    /// Address family the rule applies to.
    pub family: IpFamily,
    /// Match packets whose mark & mask == value: `(value, mask)`.
    pub fwmark: Option<(u32, u32)>,
    /// Invert the selector (`not fwmark ...`).
    pub invert: bool,
    /// Table to look up.
    pub table: u32,
    /// Ignore lookup results with a prefix length <= this
    /// (`suppress_prefixlength`).
    pub suppress_prefixlen: Option<u8>,
}

impl Rule {
    /// `lookup table` at `priority` for `family`, no selector.
    pub fn lookup(priority: u32, family: IpFamily, table: u32) -> Self {
        Self {
            priority,
            family,
            fwmark: None,
            invert: false,
            table,
            suppress_prefixlen: None,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fam = match self.family {
            IpFamily::V4 => "-4",
            IpFamily::V6 => "-6",
        };
        write!(f, "{fam} {}:", self.priority)?;
        if self.invert {
            write!(f, " not")?;
        }
        if let Some((mark, mask)) = self.fwmark {
            write!(f, " fwmark {mark:#x}/{mask:#x}")?;
        }
        write!(f, " lookup {}", self.table)?;
        if let Some(len) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {len}")?;
        }
        Ok(())
    }
}

/// Everything routing-related Rustynet wants on the host right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingConfig {
    /// Addresses (with prefix length) for the scope's interface, in order:
    /// the first IPv4 one is the source of traffic routed out of the
    /// interface, so the order given is kept on the interface. Extra
    /// addresses there are removed, except IPv6 link-local ones, which the
    /// kernel manages.
    pub addresses: Vec<IpNet>,
    /// Routes to install.
    pub routes: Vec<Route>,
    /// Policy rules to install.
    pub rules: Vec<Rule>,
}

/// What an apply or clear changed, for logs and metrics. Empty means the
/// host already matched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingChanges {
    /// Addresses added to the interface.
    pub addresses_added: Vec<IpNet>,
    /// Addresses removed from the interface.
    pub addresses_removed: Vec<IpNet>,
    /// Routes added.
    pub routes_added: Vec<Route>,
    /// Rustynet routes removed (rendered, since a stale route may not fit
    /// [`Route`]).
    pub routes_removed: Vec<String>,
    /// Rules added.
    pub rules_added: Vec<Rule>,
    /// Rustynet rules removed (rendered).
    pub rules_removed: Vec<String>,
}

impl RoutingChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Number of individual changes.
    pub fn total(&self) -> usize {
        self.addresses_added.len()
            + self.addresses_removed.len()
            + self.routes_added.len()
            + self.routes_removed.len()
            + self.rules_added.len()
            + self.rules_removed.len()
    }
}

/// Kernel route type, as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteType {
    /// Normal forwarding route.
    Unicast,
    /// `blackhole`.
    Blackhole,
    /// `unreachable`.
    Unreachable,
    /// `local` (table local).
    Local,
    /// `broadcast` (table local).
    Broadcast,
    /// Anything else, by its `RTN_*` number.
    Other(u8),
}

/// A route as read from the kernel (any owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// Destination prefix.
    pub dst: IpNet,
    /// Table id.
    pub table: u32,
    /// `rtm_protocol`.
    pub protocol: u8,
    /// Route type.
    pub kind: RouteType,
    /// Output interface index, if any.
    pub oif: Option<u32>,
    /// Output interface name, if it could be resolved.
    pub dev: Option<String>,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Metric (0 when the kernel reported none).
    pub metric: u32,
    /// Whether it carries something [`Route`] cannot express (multipath,
    /// source prefix, ...).
    pub has_extras: bool,
}

impl RouteEntry {
    /// This entry as a [`Route`], when it is expressible as one.
    pub fn as_route(&self) -> Option<Route> {
        if self.has_extras {
            return None;
        }
        let target = match self.kind {
            RouteType::Unicast => RouteTarget::Dev {
                dev: self.dev.clone()?,
                via: self.gateway,
            },
            RouteType::Blackhole => RouteTarget::Blackhole,
            RouteType::Unreachable => RouteTarget::Unreachable,
            _ => return None,
        };
        Some(Route {
            dst: self.dst,
            table: self.table,
            metric: Some(self.metric),
            target,
        })
    }
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_route() {
            Some(r) => write!(f, "{r}"),
            None => write!(
                f,
                "{:?} {} table {} metric {}",
                self.kind, self.dst, self.table, self.metric
            ),
        }
    }
}

/// A policy rule as read from the kernel (any owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEntry {
    /// The rule's fields that [`Rule`] models.
    pub rule: Rule,
    /// `FRA_PROTOCOL` (0 when absent).
    pub protocol: u8,
    /// Whether the action is "lookup table" (as opposed to goto, nop,
    /// blackhole, ...).
    pub is_lookup: bool,
    /// Whether it has selectors [`Rule`] cannot express (from/to, iif/oif,
    /// uid range, ports, ...).
    pub has_extras: bool,
}

/// Interface state, as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// MTU in bytes.
    pub mtu: u32,
}

/// Errors from [`Routing`] and [`Links`].
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The netlink socket could not be opened or configured.
    #[error("opening rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request (the errno is kept as the source).
    #[error("kernel refused to {op} {what}: {source}")]
    Kernel {
        /// The operation ("add route", "delete rule", ...).
        op: &'static str,
        /// The object, rendered.
        what: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// Sending to or receiving from the netlink socket failed.
    #[error("rtnetlink I/O during {op}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A reply from the kernel could not be decoded.
    #[error("undecodable rtnetlink reply during {op}: {detail}")]
    Decode {
        /// The operation.
        op: &'static str,
        /// Decoder message.
        detail: String,
    },
    /// The named interface does not exist (or vanished).
    #[error("interface {0:?} not found")]
    LinkNotFound(String),
    /// An interface name failed validation.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// A desired route is malformed.
    #[error("invalid route {route}: {reason}")]
    InvalidRoute {
        /// The route, rendered.
        route: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A desired rule is malformed or outside the scope's priority band.
    #[error("invalid rule {rule}: {reason}")]
    InvalidRule {
        /// The rule, rendered.
        rule: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An address or MTU value is unusable.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

impl RoutingError {
    /// The kernel errno behind this error, if it is a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RoutingError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether retrying the same call later might succeed (transport
    /// trouble, or a device that is not there yet); everything else needs a
    /// different input.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            RoutingError::Io { .. } | RoutingError::LinkNotFound(_)
        ) || self
            .errno()
            .is_some_and(|e| e == libc::EBUSY || e == libc::EAGAIN)
    }
}

/// Interface control: the parts of link management the daemon needs.
pub trait Links {
    /// The state of `name`, or `None` if no such interface exists (which is
    /// how the daemon notices its tunnel device has gone).
    fn link_state(&mut self, name: &str) -> Result<Option<LinkState>, RoutingError>;

    /// The ifindex of `name`, or `None` if it does not exist.
    fn link_index(&mut self, name: &str) -> Result<Option<u32>, RoutingError> {
        Ok(self.link_state(name)?.map(|s| s.index))
    }

    /// Sets `name` administratively up or down.
    fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), RoutingError>;

    /// Sets the MTU of `name`.
    fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), RoutingError>;
}

/// Reconciles Rustynet-owned addresses, routes and rules.
///
/// `apply` is idempotent: applying the same config twice changes nothing
/// the second time. It is not atomic (netlink has no transactions for
/// routes), but it is a reconcile, so applying the previous config again is
/// a correct rollback and [`Routing::clear`] always converges to "nothing of
/// ours left". Order inside one apply is leak-averse: stale rules go first,
/// then stale routes, then addresses, then new routes, then new rules, so a
/// rule never points at a table that is not filled yet.
pub trait Routing {
    /// Makes Rustynet-owned routing state equal `desired`. Validates the
    /// whole config before changing anything.
    fn apply(&mut self, desired: &RoutingConfig) -> Result<RoutingChanges, RoutingError>;

    /// Removes every route and rule carrying our protocol and every
    /// (non link-local) address on our interface.
    fn clear(&mut self) -> Result<RoutingChanges, RoutingError>;

    /// Every route in `table`, of any owner.
    fn list_routes(&mut self, table: u32) -> Result<Vec<RouteEntry>, RoutingError>;

    /// Every policy rule, both families, of any owner.
    fn list_rules(&mut self) -> Result<Vec<RuleEntry>, RoutingError>;
}

/// Validates a desired config against the scope; nothing is applied when
/// this fails.
pub(crate) fn validate_config(
    scope: &RoutingScope,
    cfg: &RoutingConfig,
) -> Result<(), RoutingError> {
    for addr in &cfg.addresses {
        if addr.addr().is_unspecified() || addr.addr().is_multicast() {
            return Err(RoutingError::InvalidValue(format!(
                "address {addr} is not a unicast address"
            )));
        }
        if !is_managed_address(addr) {
            return Err(RoutingError::InvalidValue(format!(
                "address {addr} is IPv6 link-local, which the kernel manages"
            )));
        }
    }
    for route in &cfg.routes {
        let bad = |reason| RoutingError::InvalidRoute {
            route: route.to_string(),
            reason,
        };
        if route.dst.trunc() != route.dst {
            return Err(bad("destination has host bits set"));
        }
        if route.table == 0 || route.table == 255 {
            return Err(bad("table 0 (unspec) and 255 (local) cannot be used"));
        }
        match &route.target {
            RouteTarget::Dev { dev, via } => {
                validate_ifname(dev)?;
                if let Some(gw) = via
                    && IpFamily::of(gw) != IpFamily::of_net(&route.dst)
                {
                    return Err(bad("gateway family differs from destination family"));
                }
                if dev != &scope.interface && !scope.tables.contains(&route.table) {
                    return Err(bad(
                        "route outside Rustynet's tables must use Rustynet's interface",
                    ));
                }
            }
            RouteTarget::Blackhole | RouteTarget::Unreachable => {
                if !scope.tables.contains(&route.table) {
                    return Err(bad(
                        "blackhole/unreachable routes are only allowed in Rustynet's tables",
                    ));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for route in &cfg.routes {
        let r = route.normalized();
        // The kernel identifies a route by (table, dst, metric); two desired
        // routes with the same key cannot both exist.
        if !seen.insert((r.table, r.dst, r.effective_metric())) {
            return Err(RoutingError::InvalidRoute {
                route: route.to_string(),
                reason: "duplicate (table, destination, metric)",
            });
        }
    }
    for rule in &cfg.rules {
        let bad = |reason| RoutingError::InvalidRule {
            rule: rule.to_string(),
            reason,
        };
        if !scope.rule_priorities.contains(&rule.priority) {
            return Err(bad("priority outside Rustynet's band"));
        }
        if rule.table == 0 {
            return Err(bad("table 0 is not a lookup target"));
        }
        if rule.invert && rule.fwmark.is_none() {
            return Err(bad("`not` needs a selector"));
        }
        if let Some((mark, mask)) = rule.fwmark
            && (mask == 0 || mark & !mask != 0)
        {
            return Err(bad(
                "fwmark needs a non-zero mask covering every bit of the value",
            ));
        }
        if let Some(len) = rule.suppress_prefixlen {
            let max = if rule.family == IpFamily::V4 { 32 } else { 128 };
            if len > max {
                return Err(bad("suppress_prefixlength longer than the address"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
