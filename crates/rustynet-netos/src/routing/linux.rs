//! [`Routing`] and [`Links`] over a blocking rtnetlink socket.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType as NlRouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::{NlError, NlSocket};
use super::{
    LinkState, Links, Route, RouteEntry, RouteTarget, RouteType, Routing, RoutingChanges,
    RoutingConfig, RoutingError, RoutingScope, Rule, RuleEntry, address_plan, diff_sets,
    is_managed_address, validate_config,
};
use crate::IpFamily;
use crate::validate::validate_ifname;

/// The real routing backend: one rtnetlink socket, opened in the network
/// namespace of the constructing thread.
pub struct NetlinkRouting {
    scope: RoutingScope,
    sock: NlSocket,
}

impl std::fmt::Debug for NetlinkRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkRouting")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl NetlinkRouting {
    /// Opens the netlink socket. Fails only if rtnetlink is unavailable.
    pub fn new(scope: RoutingScope) -> Result<Self, RoutingError> {
        validate_ifname(&scope.interface)?;
        let sock = NlSocket::open().map_err(RoutingError::Socket)?;
        Ok(Self { scope, sock })
    }

    /// The ownership scope this instance manages.
    pub fn scope(&self) -> &RoutingScope {
        &self.scope
    }

    fn link_message(&mut self, name: &str) -> Result<Option<LinkMessage>, RoutingError> {
        validate_ifname(name)?;
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.sock.request(RouteNetlinkMessage::GetLink(req), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link),
                _ => None,
            })),
            Err(NlError::Kernel(e)) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(map_err("get link", name.to_owned(), e)),
        }
    }

    fn require_index(&mut self, name: &str) -> Result<u32, RoutingError> {
        self.link_index(name)?
            .ok_or_else(|| RoutingError::LinkNotFound(name.to_owned()))
    }

    fn link_names(&mut self) -> Result<BTreeMap<u32, String>, RoutingError> {
        let replies = self
            .sock
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|e| map_err("dump links", String::new(), e))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => {
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })?;
                    Some((link.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, RoutingError> {
        let replies = self
            .sock
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| map_err("dump addresses", String::new(), e))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => parse_address(&a),
                _ => None,
            })
            .filter(is_managed_address)
            .collect())
    }

    fn routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        let names = self.link_names()?;
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let replies = self
                .sock
                .dump(RouteNetlinkMessage::GetRoute(req))
                .map_err(|e| map_err("dump routes", String::new(), e))?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(&r, &names),
                _ => None,
            }));
        }
        Ok(out)
    }

    fn rules(&mut self) -> Result<Vec<(RuleEntry, RuleMessage)>, RoutingError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RuleMessage::default();
            req.header.family = family;
            let replies = self
                .sock
                .dump(RouteNetlinkMessage::GetRule(req))
                .map_err(|e| map_err("dump rules", String::new(), e))?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => parse_rule(&r).map(|e| (e, r)),
                _ => None,
            }));
        }
        Ok(out)
    }

    fn owned_routes(&mut self) -> Result<Vec<RouteEntry>, RoutingError> {
        let protocol = self.scope.protocol;
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| r.protocol == protocol)
            .collect())
    }

    fn owned_rules(&mut self) -> Result<Vec<(RuleEntry, RuleMessage)>, RoutingError> {
        let protocol = self.scope.protocol;
        let band = self.scope.rule_priorities.clone();
        Ok(self
            .rules()?
            .into_iter()
            .filter(|(e, _)| e.protocol == protocol && band.contains(&e.rule.priority))
            .collect())
    }

    fn delete_rule(&mut self, entry: &RuleEntry, msg: RuleMessage) -> Result<bool, RoutingError> {
        // Echoing the dumped message back is what `ip rule flush` does: the
        // kernel matches on exactly the attributes the rule has.
        ignore_missing(
            self.sock.request(RouteNetlinkMessage::DelRule(msg), 0),
            "delete rule",
            entry.rule.to_string(),
        )
    }

    fn delete_route(&mut self, entry: &RouteEntry) -> Result<bool, RoutingError> {
        let msg = route_message(
            entry.dst,
            entry.table,
            self.scope.protocol,
            entry.metric,
            NlRouteType::from(route_type_to_u8(entry.kind)),
            RouteScope::NoWhere,
            if entry.kind == RouteType::Unicast {
                entry.oif
            } else {
                None
            },
            entry.gateway,
        );
        ignore_missing(
            self.sock.request(RouteNetlinkMessage::DelRoute(msg), 0),
            "delete route",
            entry.to_string(),
        )
    }

    fn add_route(
        &mut self,
        route: &Route,
        names: &BTreeMap<String, u32>,
    ) -> Result<(), RoutingError> {
        let (kind, scope, oif, via) = match &route.target {
            RouteTarget::Dev { dev, via } => {
                let idx = *names
                    .get(dev)
                    .ok_or_else(|| RoutingError::LinkNotFound(dev.clone()))?;
                let scope = if via.is_some() {
                    RouteScope::Universe
                } else {
                    RouteScope::Link
                };
                (NlRouteType::Unicast, scope, Some(idx), *via)
            }
            RouteTarget::Blackhole => (NlRouteType::BlackHole, RouteScope::Universe, None, None),
            RouteTarget::Unreachable => {
                (NlRouteType::Unreachable, RouteScope::Universe, None, None)
            }
        };
        let msg = route_message(
            route.dst,
            route.table,
            self.scope.protocol,
            route.effective_metric(),
            kind,
            scope,
            oif,
            via,
        );
        self.sock
            .request(
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|e| map_err("add route", route.to_string(), e))
    }

    fn add_rule(&mut self, rule: &Rule) -> Result<(), RoutingError> {
        let mut msg = RuleMessage::default();
        msg.header.family = family_of(rule.family);
        msg.header.table = table_byte(rule.table);
        msg.header.action = RuleAction::ToTable;
        if rule.invert {
            msg.header.flags = RuleFlags::Invert;
        }
        msg.attributes.push(RuleAttribute::Priority(rule.priority));
        msg.attributes.push(RuleAttribute::Table(rule.table));
        if let Some((mark, mask)) = rule.fwmark {
            msg.attributes.push(RuleAttribute::FwMark(mark));
            msg.attributes.push(RuleAttribute::FwMask(mask));
        }
        if let Some(len) = rule.suppress_prefixlen {
            msg.attributes
                .push(RuleAttribute::SuppressPrefixLen(u32::from(len)));
        }
        msg.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(
                self.scope.protocol,
            )));
        self.sock
            .request(RouteNetlinkMessage::NewRule(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|e| map_err("add rule", rule.to_string(), e))
    }

    fn address_request(
        &mut self,
        index: u32,
        net: &IpNet,
        add: bool,
    ) -> Result<bool, RoutingError> {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(IpFamily::of_net(net));
        msg.header.prefix_len = net.prefix_len();
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        if add && matches!(net, IpNet::V6(_)) {
            // A tunnel address has no neighbours to collide with; skipping
            // DAD makes it usable at once instead of "tentative" for ~1 s.
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if add {
            self.sock
                .request(
                    RouteNetlinkMessage::NewAddress(msg),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
                .map(|_| true)
                .map_err(|e| map_err("add address", net.to_string(), e))
        } else {
            ignore_missing(
                self.sock.request(RouteNetlinkMessage::DelAddress(msg), 0),
                "delete address",
                net.to_string(),
            )
        }
    }

    /// Removal phase shared by apply and clear: stale rules, then stale
    /// routes (so no rule ever points at a half-emptied table).
    fn remove_stale(
        &mut self,
        rules: Vec<(RuleEntry, RuleMessage)>,
        routes: Vec<RouteEntry>,
        changes: &mut RoutingChanges,
    ) -> Result<(), RoutingError> {
        for (entry, msg) in rules {
            if self.delete_rule(&entry, msg)? {
                changes.rules_removed.push(entry.rule.to_string());
            }
        }
        for entry in routes {
            if self.delete_route(&entry)? {
                changes.routes_removed.push(entry.to_string());
            }
        }
        Ok(())
    }
}

impl Links for NetlinkRouting {
    fn link_state(&mut self, name: &str) -> Result<Option<LinkState>, RoutingError> {
        Ok(self.link_message(name)?.map(|link| LinkState {
            index: link.header.index,
            up: link.header.flags.contains(LinkFlags::Up),
            lower_up: link.header.flags.contains(LinkFlags::LowerUp),
            mtu: link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                })
                .unwrap_or(0),
        }))
    }

    fn set_link_up(&mut self, name: &str, up: bool) -> Result<(), RoutingError> {
        let index = self.require_index(name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = if up {
            LinkFlags::Up
        } else {
            LinkFlags::empty()
        };
        msg.header.change_mask = LinkFlags::Up;
        self.sock
            .request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| map_err("set link state of", name.to_owned(), e))
    }

    fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), RoutingError> {
        if mtu < 68 {
            return Err(RoutingError::InvalidValue(format!(
                "MTU {mtu} is below the IPv4 minimum of 68"
            )));
        }
        let index = self.require_index(name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.sock
            .request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(drop)
            .map_err(|e| map_err("set MTU of", name.to_owned(), e))
    }
}

impl Routing for NetlinkRouting {
    fn apply(&mut self, desired: &RoutingConfig) -> Result<RoutingChanges, RoutingError> {
        validate_config(&self.scope, desired)?;
        let interface = self.scope.interface.clone();
        // Resolve every interface we need before touching anything, so a
        // missing device fails the apply with no change at all.
        let names: BTreeMap<String, u32> = self
            .link_names()?
            .into_iter()
            .map(|(i, n)| (n, i))
            .collect();
        let mut needed: BTreeSet<&str> = desired
            .routes
            .iter()
            .filter_map(|r| match &r.target {
                RouteTarget::Dev { dev, .. } => Some(dev.as_str()),
                _ => None,
            })
            .collect();
        if !desired.addresses.is_empty() {
            needed.insert(&interface);
        }
        if let Some(missing) = needed.into_iter().find(|n| !names.contains_key(*n)) {
            return Err(RoutingError::LinkNotFound(missing.to_owned()));
        }

        let want_rules: BTreeSet<Rule> = desired.rules.iter().cloned().collect();
        let want_routes: BTreeSet<Route> = desired.routes.iter().map(Route::normalized).collect();
        let mut changes = RoutingChanges::default();

        let (_, stale_rules) = diff_sets(&want_rules, keyed_rules(self.owned_rules()?));
        let (_, stale_routes) = diff_sets(&want_routes, keyed_routes(self.owned_routes()?));
        self.remove_stale(stale_rules, stale_routes, &mut changes)?;

        if let Some(&index) = names.get(&interface) {
            let current = self.addresses(index)?;
            let (remove, add) = address_plan(&desired.addresses, &current);
            for net in remove {
                if self.address_request(index, &net, false)? {
                    changes.addresses_removed.push(net);
                }
            }
            for net in add {
                self.address_request(index, &net, true)?;
                changes.addresses_added.push(net);
            }
        }

        // Re-read: removing an address can take routes with it.
        let (missing_routes, _) = diff_sets(&want_routes, keyed_routes(self.owned_routes()?));
        for route in missing_routes {
            self.add_route(&route, &names)?;
            changes.routes_added.push(route);
        }
        let (missing_rules, _) = diff_sets(&want_rules, keyed_rules(self.owned_rules()?));
        for rule in missing_rules {
            self.add_rule(&rule)?;
            changes.rules_added.push(rule);
        }
        Ok(changes)
    }

    fn clear(&mut self) -> Result<RoutingChanges, RoutingError> {
        let mut changes = RoutingChanges::default();
        let rules = self.owned_rules()?;
        let routes = self.owned_routes()?;
        self.remove_stale(rules, routes, &mut changes)?;
        let interface = self.scope.interface.clone();
        if let Some(index) = self.link_index(&interface)? {
            for net in self.addresses(index)? {
                if self.address_request(index, &net, false)? {
                    changes.addresses_removed.push(net);
                }
            }
        }
        Ok(changes)
    }

    fn list_routes(&mut self, table: u32) -> Result<Vec<RouteEntry>, RoutingError> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| r.table == table)
            .collect())
    }

    fn list_rules(&mut self) -> Result<Vec<RuleEntry>, RoutingError> {
        Ok(self.rules()?.into_iter().map(|(e, _)| e).collect())
    }
}

fn keyed_routes(entries: Vec<RouteEntry>) -> Vec<(Option<Route>, RouteEntry)> {
    entries.into_iter().map(|e| (e.as_route(), e)).collect()
}

fn keyed_rules(
    entries: Vec<(RuleEntry, RuleMessage)>,
) -> Vec<(Option<Rule>, (RuleEntry, RuleMessage))> {
    entries
        .into_iter()
        .map(|(e, m)| {
            let key = (e.is_lookup && !e.has_extras).then(|| e.rule.clone());
            (key, (e, m))
        })
        .collect()
}

fn map_err(op: &'static str, what: String, err: NlError) -> RoutingError {
    match err {
        NlError::Io(source) => RoutingError::Io { op, source },
        NlError::Kernel(source) => RoutingError::Kernel { op, what, source },
        NlError::Decode(detail) => RoutingError::Decode { op, detail },
    }
}

/// A delete whose object is already gone is a success that changed nothing.
fn ignore_missing(
    result: Result<Vec<RouteNetlinkMessage>, NlError>,
    op: &'static str,
    what: String,
) -> Result<bool, RoutingError> {
    match result {
        Ok(_) => Ok(true),
        Err(NlError::Kernel(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::ESRCH | libc::ENOENT | libc::EADDRNOTAVAIL | libc::ENODEV)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(map_err(op, what, e)),
    }
}

fn family_of(f: IpFamily) -> AddressFamily {
    match f {
        IpFamily::V4 => AddressFamily::Inet,
        IpFamily::V6 => AddressFamily::Inet6,
    }
}

/// The legacy 8-bit table field: the id itself below 256, else
/// `RT_TABLE_UNSPEC` with the real id in the 32-bit attribute.
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC)
}

#[allow(clippy::too_many_arguments)]
fn route_message(
    dst: IpNet,
    table: u32,
    protocol: u8,
    metric: u32,
    kind: NlRouteType,
    scope: RouteScope,
    oif: Option<u32>,
    via: Option<IpAddr>,
) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(IpFamily::of_net(&dst));
    msg.header.destination_prefix_length = dst.prefix_len();
    msg.header.table = table_byte(table);
    msg.header.protocol = RouteProtocol::from(protocol);
    msg.header.scope = scope;
    msg.header.kind = kind;
    if dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(dst.network())));
    }
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes.push(RouteAttribute::Priority(metric));
    if let Some(idx) = oif {
        msg.attributes.push(RouteAttribute::Oif(idx));
    }
    if let Some(gw) = via {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    msg
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn parse_route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_type_to_u8(t: RouteType) -> u8 {
    match t {
        RouteType::Unicast => NlRouteType::Unicast.into(),
        RouteType::Blackhole => NlRouteType::BlackHole.into(),
        RouteType::Unreachable => NlRouteType::Unreachable.into(),
        RouteType::Local => NlRouteType::Local.into(),
        RouteType::Broadcast => NlRouteType::Broadcast.into(),
        RouteType::Other(n) => n,
    }
}

fn parse_address(msg: &AddressMessage) -> Option<IpNet> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    IpNet::new(local.or(address)?, msg.header.prefix_len).ok()
}

fn parse_route(msg: &RouteMessage, names: &BTreeMap<u32, String>) -> Option<RouteEntry> {
    let h = &msg.header;
    let unspecified = match h.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let mut dst = unspecified;
    let mut table = u32::from(h.table);
    let mut oif = None;
    let mut gateway = None;
    let mut metric = 0;
    let mut has_extras = h.source_prefix_length != 0 || h.tos != 0;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = parse_route_address(a)?,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => gateway = parse_route_address(a),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::MultiPath(_)
            | RouteAttribute::Source(_)
            | RouteAttribute::Via(_)
            | RouteAttribute::Encap(_)
            | RouteAttribute::NewDestination(_) => has_extras = true,
            _ => {}
        }
    }
    let kind = match h.kind {
        NlRouteType::Unicast => RouteType::Unicast,
        NlRouteType::BlackHole => RouteType::Blackhole,
        NlRouteType::Unreachable => RouteType::Unreachable,
        NlRouteType::Local => RouteType::Local,
        NlRouteType::Broadcast => RouteType::Broadcast,
        other => RouteType::Other(other.into()),
    };
    if matches!(kind, RouteType::Blackhole | RouteType::Unreachable) {
        // IPv6 reports these "dev lo"; the device is not part of the route.
        oif = None;
    }
    Some(RouteEntry {
        dst: IpNet::new(dst, h.destination_prefix_length).ok()?,
        table,
        protocol: h.protocol.into(),
        kind,
        dev: oif.and_then(|i| names.get(&i).cloned()),
        oif,
        gateway,
        metric,
        has_extras,
    })
}

fn parse_rule(msg: &RuleMessage) -> Option<RuleEntry> {
    let h = &msg.header;
    let family = match h.family {
        AddressFamily::Inet => IpFamily::V4,
        AddressFamily::Inet6 => IpFamily::V6,
        _ => return None,
    };
    let mut rule = Rule {
        priority: 0,
        family,
        fwmark: None,
        invert: h.flags.contains(RuleFlags::Invert),
        table: u32::from(h.table),
        suppress_prefixlen: None,
    };
    let (mut mark, mut mask, mut protocol) = (None, None, 0);
    let mut has_extras = h.dst_len != 0 || h.src_len != 0 || h.tos != 0;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::SuppressPrefixLen(l) => {
                rule.suppress_prefixlen = u8::try_from(*l).ok().filter(|l| *l <= 128)
            }
            RuleAttribute::SuppressIfGroup(g) => has_extras |= *g != u32::MAX,
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            RuleAttribute::Destination(_)
            | RuleAttribute::Source(_)
            | RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_)
            | RuleAttribute::TunId(_)
            | RuleAttribute::Realm(_) => has_extras = true,
            RuleAttribute::L3MDev(on) => has_extras |= *on,
            _ => {}
        }
    }
    if mark.is_some() || mask.is_some() {
        rule.fwmark = Some((mark.unwrap_or(0), mask.unwrap_or(u32::MAX)));
    }
    Some(RuleEntry {
        rule,
        protocol,
        is_lookup: h.action == RuleAction::ToTable,
        has_extras,
    })
}
