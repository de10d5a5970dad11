//! A recording, state-simulating fake of [`Routing`] and [`Links`] for the
//! daemon's unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use super::{
    LinkState, Links, Route, RouteEntry, RouteTarget, RouteType, Routing, RoutingChanges,
    RoutingConfig, RoutingError, RoutingScope, Rule, RuleEntry, diff_sets, validate_config,
};
use crate::validate::validate_ifname;

/// One call made on a [`FakeRouting`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingCall {
    /// [`Routing::apply`] with this config.
    Apply(RoutingConfig),
    /// [`Routing::clear`].
    Clear,
    /// [`Routing::list_routes`] for this table.
    ListRoutes(u32),
    /// [`Routing::list_rules`].
    ListRules,
    /// [`Links::link_state`] for this interface.
    LinkState(String),
    /// [`Links::set_link_up`].
    SetLinkUp(String, bool),
    /// [`Links::set_mtu`].
    SetMtu(String, u32),
}

#[derive(Debug)]
struct Inner {
    scope: RoutingScope,
    links: BTreeMap<String, LinkState>,
    addresses: BTreeSet<IpNet>,
    routes: BTreeSet<Route>,
    rules: BTreeSet<Rule>,
    calls: Vec<RoutingCall>,
    fail_next: bool,
}

/// Simulates the kernel state Rustynet owns and records every call. Clones
/// share state, so a test keeps one clone to inspect while the code under
/// test owns another.
#[derive(Debug, Clone)]
pub struct FakeRouting {
    inner: Arc<Mutex<Inner>>,
}

impl FakeRouting {
    /// A fake host on which the scope's interface exists (index 10, down,
    /// MTU 1500) and nothing of ours is installed.
    pub fn new(scope: RoutingScope) -> Self {
        let links = BTreeMap::from([(
            scope.interface.clone(),
            LinkState {
                index: 10,
                up: false,
                lower_up: false,
                mtu: 1500,
            },
        )]);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                scope,
                links,
                addresses: BTreeSet::new(),
                routes: BTreeSet::new(),
                rules: BTreeSet::new(),
                calls: Vec::new(),
                fail_next: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the state from the others.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds (or replaces) an interface.
    pub fn add_link(&self, name: &str, state: LinkState) {
        self.lock().links.insert(name.to_owned(), state);
    }

    /// Removes an interface, as if the device vanished; routes through it
    /// vanish too, like in the kernel.
    pub fn remove_link(&self, name: &str) {
        let mut inner = self.lock();
        inner.links.remove(name);
        if inner.scope.interface == name {
            inner.addresses.clear();
        }
        inner
            .routes
            .retain(|r| !matches!(&r.target, RouteTarget::Dev { dev, .. } if dev == name));
    }

    /// Makes the next mutating call (apply, clear, set_link_up, set_mtu)
    /// fail without changing anything.
    pub fn fail_next_call(&self) {
        self.lock().fail_next = true;
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<RoutingCall> {
        self.lock().calls.clone()
    }

    /// Addresses currently on the scope's interface.
    pub fn addresses(&self) -> BTreeSet<IpNet> {
        self.lock().addresses.clone()
    }

    /// Rustynet routes currently installed (metrics normalised).
    pub fn routes(&self) -> BTreeSet<Route> {
        self.lock().routes.clone()
    }

    /// Rustynet rules currently installed.
    pub fn rules(&self) -> BTreeSet<Rule> {
        self.lock().rules.clone()
    }

    fn take_failure(inner: &mut Inner, op: &'static str) -> Result<(), RoutingError> {
        if std::mem::take(&mut inner.fail_next) {
            return Err(RoutingError::Io {
                op,
                source: std::io::Error::other("injected failure"),
            });
        }
        Ok(())
    }
}

impl Routing for FakeRouting {
    fn apply(&mut self, desired: &RoutingConfig) -> Result<RoutingChanges, RoutingError> {
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::Apply(desired.clone()));
        Self::take_failure(&mut inner, "apply")?;
        validate_config(&inner.scope, desired)?;
        for route in &desired.routes {
            if let RouteTarget::Dev { dev, .. } = &route.target
                && !inner.links.contains_key(dev)
            {
                return Err(RoutingError::LinkNotFound(dev.clone()));
            }
        }
        let has_link = inner.links.contains_key(&inner.scope.interface);
        if !desired.addresses.is_empty() && !has_link {
            return Err(RoutingError::LinkNotFound(inner.scope.interface.clone()));
        }

        let mut changes = RoutingChanges::default();
        let want_rules: BTreeSet<Rule> = desired.rules.iter().cloned().collect();
        let current = inner
            .rules
            .iter()
            .map(|r| (Some(r.clone()), r.clone()))
            .collect();
        let (add_rules, remove_rules) = diff_sets(&want_rules, current);
        let want_routes: BTreeSet<Route> = desired.routes.iter().map(Route::normalized).collect();
        let current = inner
            .routes
            .iter()
            .map(|r| (Some(r.clone()), r.clone()))
            .collect();
        let (add_routes, remove_routes) = diff_sets(&want_routes, current);

        changes.rules_removed = remove_rules.iter().map(ToString::to_string).collect();
        changes.routes_removed = remove_routes.iter().map(ToString::to_string).collect();
        if has_link {
            let want_addrs: BTreeSet<IpNet> = desired.addresses.iter().copied().collect();
            let current = inner.addresses.iter().map(|a| (Some(*a), *a)).collect();
            let (add, remove) = diff_sets(&want_addrs, current);
            changes.addresses_added = add;
            changes.addresses_removed = remove;
            inner.addresses = want_addrs;
        }
        changes.routes_added = add_routes;
        changes.rules_added = add_rules;
        inner.routes = want_routes;
        inner.rules = want_rules;
        Ok(changes)
    }

    fn clear(&mut self) -> Result<RoutingChanges, RoutingError> {
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::Clear);
        Self::take_failure(&mut inner, "clear")?;
        Ok(RoutingChanges {
            addresses_removed: std::mem::take(&mut inner.addresses).into_iter().collect(),
            routes_removed: std::mem::take(&mut inner.routes)
                .iter()
                .map(ToString::to_string)
                .collect(),
            rules_removed: std::mem::take(&mut inner.rules)
                .iter()
                .map(ToString::to_string)
                .collect(),
            ..RoutingChanges::default()
        })
    }

    fn list_routes(&mut self, table: u32) -> Result<Vec<RouteEntry>, RoutingError> {
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::ListRoutes(table));
        let protocol = inner.scope.protocol;
        Ok(inner
            .routes
            .iter()
            .filter(|r| r.table == table)
            .map(|r| {
                let (kind, dev, gateway) = match &r.target {
                    RouteTarget::Dev { dev, via } => (RouteType::Unicast, Some(dev.clone()), *via),
                    RouteTarget::Blackhole => (RouteType::Blackhole, None, None),
                    RouteTarget::Unreachable => (RouteType::Unreachable, None, None),
                };
                let oif = dev
                    .as_ref()
                    .and_then(|d| inner.links.get(d))
                    .map(|l| l.index);
                RouteEntry {
                    dst: r.dst,
                    table: r.table,
                    protocol,
                    kind,
                    oif,
                    dev,
                    gateway,
                    metric: r.effective_metric(),
                    has_extras: false,
                }
            })
            .collect())
    }

    fn list_rules(&mut self) -> Result<Vec<RuleEntry>, RoutingError> {
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::ListRules);
        let protocol = inner.scope.protocol;
        Ok(inner
            .rules
            .iter()
            .map(|r| RuleEntry {
                rule: r.clone(),
                protocol,
                is_lookup: true,
                has_extras: false,
            })
            .collect())
    }
}

impl Links for FakeRouting {
    fn link_state(&mut self, name: &str) -> Result<Option<LinkState>, RoutingError> {
        validate_ifname(name)?;
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::LinkState(name.to_owned()));
        Ok(inner.links.get(name).cloned())
    }

    fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), RoutingError> {
        validate_ifname(name)?;
        let mut inner = self.lock();
        inner
            .calls
            .push(RoutingCall::SetLinkUp(name.to_owned(), up));
        Self::take_failure(&mut inner, "set link state")?;
        let link = inner
            .links
            .get_mut(name)
            .ok_or_else(|| RoutingError::LinkNotFound(name.to_owned()))?;
        link.up = up;
        link.lower_up = up;
        Ok(())
    }

    fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), RoutingError> {
        validate_ifname(name)?;
        let mut inner = self.lock();
        inner.calls.push(RoutingCall::SetMtu(name.to_owned(), mtu));
        Self::take_failure(&mut inner, "set mtu")?;
        if mtu < 68 {
            return Err(RoutingError::InvalidValue(format!(
                "MTU {mtu} is below the IPv4 minimum of 68"
            )));
        }
        let link = inner
            .links
            .get_mut(name)
            .ok_or_else(|| RoutingError::LinkNotFound(name.to_owned()))?;
        link.mtu = mtu;
        Ok(())
    }
}
