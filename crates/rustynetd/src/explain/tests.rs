use super::*;
use crate::plan::{Choices, LocalContext, plan};
use rustynet_proto::netmap::NETMAP_VERSION;
use rustynet_proto::{DnsConfig, ExitGrant, NodeId, PeerInfo, SelfInfo, TunnelPublicKey};

fn route(dst: &str, table: u32, dev: Option<&str>, kind: RouteType) -> RouteEntry {
    RouteEntry {
        dst: dst.parse().unwrap(),
        table,
        protocol: 0,
        kind,
        oif: None,
        dev: dev.map(str::to_owned),
        gateway: None,
        metric: 0,
        has_extras: false,
    }
}

fn rule(priority: u32, table: u32) -> RuleEntry {
    RuleEntry {
        rule: Rule::lookup(priority, IpFamily::V4, table),
        protocol: 0,
        is_lookup: true,
        has_extras: false,
    }
}

/// The kernel's default rules, plus the full-tunnel pair when `exit`.
fn rules(exit: bool) -> Vec<RuleEntry> {
    let mut out = vec![rule(0, 255), rule(32766, 254), rule(32767, 253)];
    if exit {
        let mut suppress = rule(5600, 254);
        suppress.rule.suppress_prefixlen = Some(0);
        let mut tunnel = rule(5601, 5600);
        tunnel.rule.fwmark = Some((0x524e, u32::MAX));
        tunnel.rule.invert = true;
        out.extend([suppress, tunnel]);
    }
    out
}

fn tables(table: u32) -> Vec<RouteEntry> {
    match table {
        255 => vec![route("100.64.0.1/32", 255, Some("rn0"), RouteType::Local)],
        254 => vec![
            route("0.0.0.0/0", 254, Some("eth0"), RouteType::Unicast),
            route("198.51.100.0/30", 254, Some("eth0"), RouteType::Unicast),
            route("100.64.0.0/10", 254, Some("rn0"), RouteType::Unicast),
            route("192.168.77.0/24", 254, Some("rn0"), RouteType::Unicast),
        ],
        5600 => vec![
            route("0.0.0.0/0", 5600, Some("rn0"), RouteType::Unicast),
            route("::/0", 5600, None, RouteType::Unreachable),
        ],
        _ => vec![],
    }
}

fn lookup(addr: &str, mark: u32, exit: bool) -> Lookup {
    kernel_lookup(addr.parse().unwrap(), mark, &rules(exit), tables)
}

#[test]
fn policy_routing_is_emulated_like_the_kernel() {
    // Full tunnel: the internet goes to table 5600 (the main default route
    // is suppressed), specific main routes still win, marked packets skip
    // the tunnel table.
    let l = lookup("203.0.113.10", 0, true);
    assert_eq!(l.rule.as_ref().map(|r| r.table), Some(5600));
    assert_eq!(l.route.unwrap().dev.as_deref(), Some("rn0"));
    let l = lookup("192.168.77.10", 0, true);
    assert_eq!(l.rule.as_ref().map(|r| r.priority), Some(5600));
    assert_eq!(
        l.route.unwrap().dst,
        "192.168.77.0/24".parse::<IpNet>().unwrap()
    );
    let l = lookup("203.0.113.10", 0x524e, true);
    assert_eq!(l.rule.as_ref().map(|r| r.table), Some(254));
    assert_eq!(l.route.unwrap().dev.as_deref(), Some("eth0"));
    // Without an exit the main default route takes it.
    let l = lookup("203.0.113.10", 0, false);
    assert_eq!(l.route.unwrap().dev.as_deref(), Some("eth0"));
    // Local addresses come from the local table first.
    let l = lookup("100.64.0.1", 0, true);
    assert_eq!(l.route.unwrap().kind, RouteType::Local);
    // No rules listed: main alone.
    let l = kernel_lookup("192.168.77.10".parse().unwrap(), 0, &[], tables);
    assert_eq!((l.rule, l.route.map(|r| r.table)), (None, Some(254)));
}

fn peer(id: u64, name: &str, ip: &str, routes: &[&str], exit: bool) -> PeerInfo {
    let tunnel_ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let mut allowed_ips = vec![IpNet::V4(Ipv4Net::from(tunnel_ip))];
    allowed_ips.extend(routes.iter().map(|r| r.parse::<IpNet>().unwrap()));
    PeerInfo {
        path_key: None,
        node_id: NodeId(id),
        hostname: name.into(),
        dns_name: format!("{name}.rustynet.internal"),
        node_key: TunnelPublicKey([id as u8; 32]),
        tunnel_ip,
        endpoints: vec![],
        home_relay: None,
        allowed_ips,
        online: true,
        exit_node: exit,
    }
}

/// Client 100.64.0.1 with two routers for 192.168.77.0/24 (tcp/22) and
/// bob, who may reach this node on tcp/22 and udp/53.
fn map() -> Netmap {
    let grant = |via: u64| LanGrant {
        via: NodeId(via),
        dst: "192.168.77.0/24".parse().unwrap(),
        proto: Proto::Tcp,
        ports: vec![PortRange::single(22)],
    };
    Netmap {
        relays: vec![],
        version: NETMAP_VERSION,
        self_node: SelfInfo {
            node_id: NodeId(1),
            hostname: "client".into(),
            dns_name: "client.rustynet.internal".into(),
            tunnel_ip: "100.64.0.1".parse().unwrap(),
            node_key: TunnelPublicKey([1; 32]),
            user: "alice".into(),
            tags: vec![],
            advertise_exit_node: false,
            advertised_routes: vec![],
            approved_routes: vec![],
        },
        peers: vec![
            peer(2, "r1", "100.64.0.2", &["192.168.77.0/24"], true),
            peer(3, "r2", "100.64.0.3", &["192.168.77.0/24"], false),
            peer(4, "bob", "100.64.0.4", &[], false),
        ],
        packet_filter: vec![
            FilterRule {
                src: vec!["100.64.0.4/32".parse().unwrap()],
                dst: vec!["100.64.0.1/32".parse().unwrap()],
                proto: Proto::Tcp,
                ports: vec![PortRange::single(22)],
            },
            FilterRule {
                src: vec!["100.64.0.4/32".parse().unwrap()],
                dst: vec!["100.64.0.1/32".parse().unwrap()],
                proto: Proto::Udp,
                ports: vec![PortRange::single(53)],
            },
        ],
        exit_clients: vec![],
        forward_filter: vec![],
        exit_grants: vec![ExitGrant {
            node_id: NodeId(2),
            hostname: "r1".into(),
        }],
        lan_grants: vec![grant(2), grant(3)],
        dns: DnsConfig {
            suffix: "rustynet.internal".into(),
            records: vec![],
            split: vec![],
        },
    }
}

fn ctx() -> LocalContext {
    LocalContext {
        on_link: Vec::new(),
        tun: "rn0".into(),
        fwmark: 0x524e,
        dns_mark: 0x5244,
        table: 5600,
        rule_priority: 5600,
        system_resolvers: vec![],
    }
}

fn desired(lan_access: bool, exit: bool) -> Desired {
    let choices = Choices {
        lan_access,
        exit_node: exit.then(|| "r1".to_owned()),
        ..Choices::default()
    };
    plan(&map(), 7, &choices, &ctx()).unwrap()
}

fn direct(_: &PeerInfo) -> (PathKind, Option<String>) {
    (PathKind::Direct, Some("198.51.100.6:41641".into()))
}

#[test]
fn a_lan_address_names_its_router_standby_path_and_granted_ports() {
    let d = desired(true, false);
    let addr: IpAddr = "192.168.77.10".parse().unwrap();
    let doc = route_explain(
        addr,
        &lookup("192.168.77.10", 0, false),
        "rn0",
        &map(),
        &d,
        &direct,
    );
    assert_eq!(doc.outcome, RouteOutcome::Tunnel);
    assert_eq!(doc.table, Some(254));
    let peer = doc.peer.unwrap();
    assert_eq!((peer.name.as_str(), peer.path), ("r1", PathKind::Direct));
    assert_eq!(peer.prefix, "192.168.77.0/24".parse::<IpNet>().unwrap());
    assert_eq!(doc.standby, vec!["r2".to_owned()]);
    assert_eq!(doc.allowed, vec!["tcp/22".to_owned()]);
    assert!(doc.firewall.contains("tcp/22"), "{}", doc.firewall);
}

#[test]
fn without_lan_access_the_lan_is_not_tunnelled_and_the_kill_switch_is_named() {
    // The kernel has no LAN route: the main default route takes it.
    let d = desired(false, false);
    let no_lan = |t: u32| {
        tables(t)
            .into_iter()
            .filter(|r| !r.dst.to_string().starts_with("192.168."))
            .collect::<Vec<_>>()
    };
    let l = kernel_lookup("192.168.77.10".parse().unwrap(), 0, &rules(false), no_lan);
    let doc = route_explain(
        "192.168.77.10".parse().unwrap(),
        &l,
        "rn0",
        &map(),
        &d,
        &direct,
    );
    assert_eq!(doc.outcome, RouteOutcome::Outside);
    assert!(doc.peer.is_none() && doc.allowed == vec!["any".to_owned()]);
    // With an exit selected the same address goes to the exit table and
    // the output chain drops LAN traffic without a grant.
    let d = desired(false, true);
    let l = kernel_lookup("192.168.77.10".parse().unwrap(), 0, &rules(true), no_lan);
    let doc = route_explain(
        "192.168.77.10".parse().unwrap(),
        &l,
        "rn0",
        &map(),
        &d,
        &direct,
    );
    assert_eq!(doc.outcome, RouteOutcome::Tunnel);
    assert_eq!(doc.peer.unwrap().name, "r1");
    assert!(doc.allowed.is_empty(), "{:?}", doc.allowed);
    assert!(
        doc.firewall.contains("without LAN access"),
        "{}",
        doc.firewall
    );
    // Internet through the exit.
    let doc = route_explain(
        "203.0.113.10".parse().unwrap(),
        &lookup("203.0.113.10", 0, true),
        "rn0",
        &map(),
        &d,
        &direct,
    );
    assert_eq!(doc.table, Some(5600));
    assert_eq!(doc.peer.unwrap().name, "r1");
}

#[test]
fn acl_explain_lists_what_the_map_lets_in_and_out() {
    let d = desired(true, false);
    let doc = acl_explain(&map(), &d, "bob", None).unwrap();
    assert_eq!(doc.inbound, vec!["tcp/22".to_owned(), "udp/53".to_owned()]);
    assert!(doc.verdict.contains("admitted"), "{}", doc.verdict);
    let doc = acl_explain(&map(), &d, "bob", Some(53)).unwrap();
    assert_eq!(doc.inbound, vec!["udp/53".to_owned()]);
    let doc = acl_explain(&map(), &d, "bob.rustynet.internal", Some(80)).unwrap();
    assert!(doc.inbound.is_empty());
    assert!(doc.verdict.contains("denied"), "{}", doc.verdict);
    let doc = acl_explain(&map(), &d, "r1", None).unwrap();
    assert!(doc.exit_grant);
    assert_eq!(doc.outbound_lan, vec!["192.168.77.0/24 tcp/22".to_owned()]);
    let doc = acl_explain(&map(), &d, "r2", None).unwrap();
    assert!(
        doc.outbound_lan[0].contains("standby"),
        "{:?}",
        doc.outbound_lan
    );
    let off = desired(false, false);
    let doc = acl_explain(&map(), &off, "r1", None).unwrap();
    assert!(
        doc.outbound_lan[0].contains("lan-access is off"),
        "{:?}",
        doc.outbound_lan
    );
    assert_eq!(
        acl_explain(&map(), &d, "nobody", None),
        Err(ExplainError::UnknownPeer("nobody".into()))
    );
}

#[test]
fn rules_are_described_as_typed() {
    assert_eq!(describe(Proto::Any, &[]), "any");
    assert_eq!(
        describe(Proto::Any, &[PortRange::single(443)]),
        "tcp+udp/443"
    );
    assert_eq!(
        describe(
            Proto::Tcp,
            &[
                PortRange::single(22),
                PortRange {
                    first: 8000,
                    last: 8080
                }
            ]
        ),
        "tcp/22,8000-8080"
    );
    assert_eq!(describe(Proto::Icmp, &[]), "icmp");
}
