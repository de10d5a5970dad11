use super::*;
use rustynet_netos::{
    ChainKind, Match, Policy as ChainPolicy, PortRange as NftPortRange, TupleValue, Verdict,
};
use rustynet_proto::netmap::NETMAP_VERSION;
use rustynet_proto::{ExitGrant, FilterRule, PortRange, Proto, SelfInfo, TunnelPublicKey};

fn peer(id: u64, name: &str, ip: &str, exit: bool, routes: &[&str]) -> PeerInfo {
    let tunnel_ip: Ipv4Addr = ip.parse().unwrap();
    let mut allowed_ips = vec![host(tunnel_ip)];
    allowed_ips.extend(routes.iter().map(|r| r.parse::<IpNet>().unwrap()));
    PeerInfo {
        path_key: None,
        node_id: NodeId(id),
        hostname: name.into(),
        dns_name: format!("{name}.rustynet.internal"),
        node_key: TunnelPublicKey([id as u8; 32]),
        tunnel_ip,
        endpoints: vec![format!("192.0.2.{id}:41641").parse().unwrap()],
        home_relay: None,
        allowed_ips,
        online: true,
        exit_node: exit,
    }
}

fn client_map() -> Netmap {
    Netmap {
        relays: Vec::new(),
        version: NETMAP_VERSION,
        self_node: SelfInfo {
            node_id: NodeId(1),
            hostname: "client".into(),
            dns_name: "client.rustynet.internal".into(),
            tunnel_ip: "100.64.0.1".parse().unwrap(),
            node_key: TunnelPublicKey([1; 32]),
            user: "bob".into(),
            tags: vec![],
            advertise_exit_node: false,
            advertised_routes: vec![],
            approved_routes: vec![],
        },
        peers: vec![
            peer(2, "exit", "100.64.0.2", true, &["192.168.77.0/24"]),
            peer(3, "other", "100.64.0.3", false, &[]),
        ],
        packet_filter: vec![FilterRule {
            src: vec!["100.64.0.2/32".parse().unwrap()],
            dst: vec!["100.64.0.1/32".parse().unwrap()],
            proto: Proto::Tcp,
            ports: vec![PortRange::single(22)],
        }],
        exit_clients: vec![],
        forward_filter: vec![],
        exit_grants: vec![ExitGrant {
            node_id: NodeId(2),
            hostname: "exit".into(),
        }],
        lan_grants: vec![LanGrant {
            via: NodeId(2),
            dst: "192.168.77.0/24".parse().unwrap(),
            proto: Proto::Tcp,
            ports: vec![PortRange::single(22)],
        }],
        dns: DnsConfig {
            suffix: "rustynet.internal".into(),
            records: vec![],
            split: vec![],
        },
    }
}

fn ctx() -> LocalContext {
    LocalContext {
        tun: "rn0".into(),
        fwmark: 0x524e,
        dns_mark: 0x5244,
        table: 5600,
        rule_priority: 5600,
        system_resolvers: vec!["198.51.100.53".parse().unwrap()],
        on_link: vec![],
    }
}

fn chain<'a>(d: &'a Desired, name: &str) -> &'a rustynet_netos::Chain {
    d.firewall.chains.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn mesh_only_plan() {
    let d = plan(&client_map(), 5, &Choices::default(), &ctx()).unwrap();
    assert!(!d.protected && !d.dns_protected && d.exit.is_none());
    assert_eq!(d.peers.len(), 2);
    // LAN prefixes are not accepted from the router while LAN access is off.
    assert_eq!(
        d.peers[0].allowed_ips,
        vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
    );
    assert!(d.routing.rules.is_empty());
    assert_eq!(
        d.routing.routes.len(),
        1,
        "only 100.64.0.0/10 into the tunnel"
    );
    assert_eq!(
        chain(&d, "output").base.unwrap().policy,
        ChainPolicy::Accept
    );
    assert_eq!(
        d.dns.upstream,
        DnsUpstream::System(vec!["198.51.100.53".parse().unwrap()])
    );
    assert_eq!(d.sysctls, super::ARP_HARDENING.to_vec());
}

#[test]
fn exit_plan_is_protected() {
    let choices = Choices {
        exit_node: Some("exit".into()),
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &choices, &ctx()).unwrap();
    assert!(d.protected && d.dns_protected);
    assert!(
        d.peers[0]
            .allowed_ips
            .contains(&"0.0.0.0/0".parse().unwrap())
    );
    assert!(
        !d.peers[1]
            .allowed_ips
            .contains(&"0.0.0.0/0".parse().unwrap())
    );
    let out = chain(&d, "output");
    assert_eq!(out.base.unwrap().policy, ChainPolicy::Drop);
    assert!(out.rules.iter().any(|r| {
        r.matches
            .iter()
            .any(|m| matches!(m, Match::Mark { value: 0x524e, .. }))
    }));
    assert_eq!(
        d.routing.rules.len(),
        4,
        "suppress + not-fwmark, for v4 and v6"
    );
    assert_eq!(
        d.dns.upstream,
        DnsUpstream::Exit {
            ip: "100.64.0.2".parse().unwrap(),
            name: "exit".into()
        }
    );
    // By Magic DNS name too.
    let by_dns = Choices {
        exit_node: Some("exit.rustynet.internal".into()),
        ..Choices::default()
    };
    assert_eq!(
        plan(&client_map(), 5, &by_dns, &ctx()).unwrap().exit,
        d.exit
    );
}

#[test]
fn exit_without_grant_or_unknown_is_refused() {
    for (name, want) in [
        ("other", PlanError::ExitNotGranted("other".into())),
        ("ghost", PlanError::UnknownExit("ghost".into())),
    ] {
        let choices = Choices {
            exit_node: Some(name.into()),
            ..Choices::default()
        };
        assert_eq!(plan(&client_map(), 5, &choices, &ctx()).unwrap_err(), want);
    }
}

#[test]
fn lan_toggle_on_routes_and_allows_only_granted_ports() {
    let choices = Choices {
        lan_access: true,
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &choices, &ctx()).unwrap();
    assert!(
        d.peers[0]
            .allowed_ips
            .contains(&"192.168.77.0/24".parse().unwrap())
    );
    assert!(
        d.routing
            .routes
            .iter()
            .any(|r| r.dst == "192.168.77.0/24".parse().unwrap())
    );
    let out = chain(&d, "output");
    let accept = &out.rules[0];
    assert_eq!(accept.verdict, Verdict::Accept);
    let granted = vec![
        TupleValue::Net("192.168.77.0/24".parse().unwrap()),
        TupleValue::Ports(NftPortRange::single(22)),
    ];
    assert!(accept.matches.iter().any(|m| matches!(
        m,
        Match::Tuple { elements, .. } if elements == &vec![granted.clone()]
    )));
    // The RFC 1918 drop follows the grant.
    assert_eq!(out.rules[1].verdict, Verdict::Drop);
}

#[test]
fn exit_node_side_forwards_with_nat_for_granted_clients_only() {
    let mut m = client_map();
    m.exit_clients = vec!["100.64.0.9/32".parse().unwrap()];
    m.self_node.approved_routes = vec!["192.168.77.0/24".parse().unwrap()];
    let d = plan(&m, 5, &Choices::default(), &ctx()).unwrap();
    assert!(d.sysctls.contains(&("net.ipv4.ip_forward", "1")));
    let nat = chain(&d, "postrouting");
    assert_eq!(nat.base.unwrap().kind, ChainKind::Nat);
    assert_eq!(nat.rules[0].verdict, Verdict::Masquerade);
    let fwd = chain(&d, "forward");
    let internet = fwd
        .rules
        .iter()
        .find(|r| {
            r.verdict == Verdict::Accept
                && r.matches
                    .iter()
                    .any(|m| matches!(m, Match::Daddr { negate: true, .. }))
        })
        .unwrap();
    let excluded = internet
        .matches
        .iter()
        .find_map(|m| match m {
            Match::Daddr {
                prefixes,
                negate: true,
            } => Some(prefixes.clone()),
            _ => None,
        })
        .unwrap();
    for net in [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "192.168.77.0/24",
        "169.254.0.0/16",
    ] {
        assert!(
            excluded.contains(&net.parse().unwrap()),
            "{net} must not count as internet"
        );
    }
    assert_eq!(
        d.dns.exit_service,
        Some(("100.64.0.1".parse().unwrap(), m.exit_clients.clone()))
    );
}

#[test]
fn fail_closed_blocks_egress_in_protected_mode() {
    let d = fail_closed(&ctx(), true, false, "rustynet.internal");
    let out = chain(&d, "output");
    assert_eq!(out.base.unwrap().policy, ChainPolicy::Drop);
    assert!(d.peers.is_empty() && d.routing.routes.is_empty());
    assert_eq!(d.dns.upstream, DnsUpstream::None);
    assert!(d.dns_protected && d.dns.protected);
    let open = fail_closed(&ctx(), false, false, "rustynet.internal");
    assert_eq!(
        chain(&open, "output").base.unwrap().policy,
        ChainPolicy::Accept
    );
    assert!(!open.dns_protected && dns_drops(&open) == 0);
    // Unprotected: no tailnet names, but outside names still resolve.
    assert!(open.dns.config.records.is_empty());
    assert_eq!(
        open.dns.upstream,
        DnsUpstream::System(ctx().system_resolvers)
    );
}

/// Output rules dropping DNS that is not Magic DNS's.
fn dns_drops(d: &Desired) -> usize {
    chain(d, "output")
        .rules
        .iter()
        .filter(|r| {
            r.verdict == Verdict::Drop
                && r.comment.as_deref() == Some("protected DNS: query outside Magic DNS")
        })
        .count()
}

#[test]
fn protected_dns_on_demand_without_exit() {
    let choices = Choices {
        protect_dns: true,
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &choices, &ctx()).unwrap();
    // DNS protection without the kill switch: other egress stays open and
    // Magic DNS keeps forwarding to the system's resolvers.
    assert!(d.dns_protected && d.dns.protected && !d.protected);
    assert_eq!(
        chain(&d, "output").base.unwrap().policy,
        ChainPolicy::Accept
    );
    assert_eq!(dns_drops(&d), 2, "UDP 53 and TCP 53/853");
    assert_eq!(
        d.dns.upstream,
        DnsUpstream::System(vec!["198.51.100.53".parse().unwrap()])
    );
    assert_eq!(
        dns_drops(&plan(&client_map(), 5, &Choices::default(), &ctx()).unwrap()),
        0
    );
    // It holds while failing closed, still without the kill switch.
    let closed = fail_closed(&ctx(), false, true, "rustynet.internal");
    assert!(closed.dns_protected && !closed.protected);
    assert_eq!(dns_drops(&closed), 2);
    assert_eq!(
        chain(&closed, "output").base.unwrap().policy,
        ChainPolicy::Accept
    );
}

#[test]
fn every_reported_endpoint_is_a_candidate_and_path_data_passes_through() {
    let mut m = client_map();
    m.peers[0]
        .endpoints
        .push("198.51.100.10:41641".parse().unwrap());
    m.peers[0].path_key = Some(rustynet_proto::PathPublicKey([9; 32]));
    m.peers[0].home_relay = Some("r1".into());
    let d = plan(&m, 5, &Choices::default(), &ctx()).unwrap();
    let p = &d.peers[0];
    assert_eq!(p.endpoint, Some(m.peers[0].endpoints[0]));
    assert_eq!(p.candidates, m.peers[0].endpoints);
    assert_eq!(p.path_key, m.peers[0].path_key);
    assert_eq!(p.home_relay.as_deref(), Some("r1"));
}

#[test]
fn loopback_is_exempt_from_anti_spoofing() {
    // Magic DNS (100.100.100.100) is inside 100.64.0.0/10 and local queries
    // to it arrive on lo: the spoofing drop must not catch them.
    let d = plan(&client_map(), 5, &Choices::default(), &ctx()).unwrap();
    let mut seen = 0;
    for r in &chain(&d, "input").rules {
        let spoof_rule = r.matches.iter().any(|m| matches!(m, Match::Saddr { prefixes, .. } if prefixes.contains(&"100.64.0.0/10".parse().unwrap())));
        if spoof_rule && r.verdict == Verdict::Drop {
            seen += 1;
            assert!(
                r.matches
                    .iter()
                    .any(|m| matches!(m, Match::Iifname { name, negate: true } if name == "lo"))
            );
        }
    }
    assert_eq!(seen, 1);
}

#[test]
fn magic_dns_only_answers_this_node() {
    // Queries from the node itself arrive on lo; anything else addressed to
    // 100.100.100.100 (a LAN host routing it here) is dropped first, in
    // every generation and while failing closed.
    let is_guard = |r: &rustynet_netos::FirewallRule| {
        r.verdict == Verdict::Drop
            && r.matches.iter().any(|m| matches!(m, Match::Iifname { name, negate: true } if name == "lo"))
            && r.matches.iter().any(|m| matches!(m, Match::Daddr { prefixes, negate: false } if prefixes == &vec!["100.100.100.100/32".parse::<IpNet>().unwrap()]))
            && !r.matches.iter().any(|m| matches!(m, Match::Iifname { negate: false, .. }))
    };
    let exit = Choices {
        exit_node: Some("exit".into()),
        ..Choices::default()
    };
    for d in [
        plan(&client_map(), 5, &Choices::default(), &ctx()).unwrap(),
        plan(&client_map(), 5, &exit, &ctx()).unwrap(),
        fail_closed(&ctx(), true, false, "rustynet.internal"),
        fail_closed(&ctx(), false, false, "rustynet.internal"),
    ] {
        let input = chain(&d, "input");
        assert!(
            input.rules.first().is_some_and(is_guard),
            "{:?}",
            input.rules.first()
        );
    }
}

#[test]
fn plan_is_deterministic() {
    let choices = Choices {
        exit_node: Some("exit".into()),
        lan_access: true,
        ..Choices::default()
    };
    assert_eq!(
        plan(&client_map(), 5, &choices, &ctx()).unwrap(),
        plan(&client_map(), 5, &choices, &ctx()).unwrap()
    );
}

/// The forward chain's last rule, if it drops everything left.
fn forward_catch_all(d: &Desired) -> bool {
    chain(d, "forward").rules.last().is_some_and(|r| {
        r.verdict == Verdict::Drop
            && r.matches.is_empty()
            && r.comment.as_deref() == Some("kill switch: forwarded traffic outside the tunnel")
    })
}

fn forwarded_dns_drops(d: &Desired) -> usize {
    chain(d, "forward")
        .rules
        .iter()
        .filter(|r| {
            r.comment.as_deref() == Some("protected DNS: forwarded query outside Magic DNS")
        })
        .count()
}

/// Audit item 2: the kill switch covers forwarded traffic (containers, VMs,
/// namespaces behind the node) in every protected generation and while
/// failing closed in protected mode; protected DNS covers forwarded queries.
#[test]
fn kill_switch_covers_the_forward_hook() {
    let exit = Choices {
        exit_node: Some("exit".into()),
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &exit, &ctx()).unwrap();
    assert!(
        forward_catch_all(&d),
        "protected generation forwards freely"
    );
    // The exit's own role still forwards its clients: those rules come first.
    let mut m = client_map();
    m.exit_clients = vec!["100.64.0.9/32".parse().unwrap()];
    let serving = plan(&m, 5, &Choices::default(), &ctx()).unwrap();
    assert!(!forward_catch_all(&serving) && forwarded_dns_drops(&serving) == 0);
    assert!(forward_catch_all(&fail_closed(
        &ctx(),
        true,
        false,
        "rustynet.internal"
    )));
    let open = fail_closed(&ctx(), false, false, "rustynet.internal");
    assert!(!forward_catch_all(&open) && forwarded_dns_drops(&open) == 0);
    let dns_only = Choices {
        protect_dns: true,
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &dns_only, &ctx()).unwrap();
    assert!(!forward_catch_all(&d));
    assert_eq!(forwarded_dns_drops(&d), 2, "UDP 53 and TCP 53/853");
    assert_eq!(
        forwarded_dns_drops(&fail_closed(&ctx(), false, true, "rustynet.internal")),
        2
    );
}

/// A router for 192.168.77.0/24 forwarding client 100.64.0.5 (tcp/22),
/// also the exit of 100.64.0.9.
fn router_map() -> Netmap {
    let mut m = client_map();
    m.self_node.approved_routes = vec!["192.168.77.0/24".parse().unwrap()];
    m.forward_filter = vec![FilterRule {
        src: vec!["100.64.0.5/32".parse().unwrap()],
        dst: vec!["192.168.77.0/24".parse().unwrap()],
        proto: Proto::Tcp,
        ports: vec![PortRange::single(22)],
    }];
    m.exit_clients = vec!["100.64.0.9/32".parse().unwrap()];
    m
}

fn masquerade_rules(d: &Desired) -> Vec<&rustynet_netos::FirewallRule> {
    d.firewall
        .chains
        .iter()
        .filter(|c| c.name == "postrouting")
        .flat_map(|c| c.rules.iter())
        .filter(|r| r.verdict == Verdict::Masquerade)
        .collect()
}

fn saddrs(r: &rustynet_netos::FirewallRule) -> Vec<IpNet> {
    r.matches
        .iter()
        .find_map(|m| match m {
            Match::Saddr { prefixes, .. } => Some(prefixes.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn router_masquerades_lan_clients_by_default() {
    let d = plan(&router_map(), 5, &Choices::default(), &ctx()).unwrap();
    let rules = masquerade_rules(&d);
    assert_eq!(rules.len(), 1);
    let src = saddrs(rules[0]);
    assert!(src.contains(&"100.64.0.5/32".parse().unwrap()), "{src:?}");
    assert!(src.contains(&"100.64.0.9/32".parse().unwrap()), "{src:?}");
}

#[test]
fn without_snat_lan_clients_keep_their_source_and_exit_clients_do_not() {
    let choices = Choices {
        no_snat_subnet_routes: true,
        ..Choices::default()
    };
    let d = plan(&router_map(), 5, &choices, &ctx()).unwrap();
    let rules = masquerade_rules(&d);
    assert_eq!(rules.len(), 1, "only the exit's internet masquerade");
    assert_eq!(saddrs(rules[0]), vec!["100.64.0.9/32".parse().unwrap()]);
    let lan: IpNet = "192.168.77.0/24".parse().unwrap();
    assert!(rules[0].matches.iter().any(|m| matches!(
        m,
        Match::Daddr { prefixes, negate: true } if prefixes.contains(&lan)
    )));
    // A router that is not an exit masquerades nothing.
    let mut m = router_map();
    m.exit_clients.clear();
    let d = plan(&m, 5, &choices, &ctx()).unwrap();
    assert!(masquerade_rules(&d).is_empty());
    // The forward filter is the same either way: the option changes only
    // the source the LAN sees, never what is let through.
    let with = plan(&m, 5, &Choices::default(), &ctx()).unwrap();
    assert_eq!(chain(&d, "forward"), chain(&with, "forward"));
}

/// Output rules `local-lan` adds, as (interface, prefix).
fn local_lan_rules(d: &Desired) -> Vec<(String, Vec<IpNet>)> {
    chain(d, "output")
        .rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some("local-lan: on-link LAN beside the exit"))
        .map(|r| {
            assert_eq!(r.verdict, Verdict::Accept);
            let dev = r.matches.iter().find_map(|m| match m {
                Match::Oifname {
                    name,
                    negate: false,
                } => Some(name.clone()),
                _ => None,
            });
            let nets = r.matches.iter().find_map(|m| match m {
                Match::Daddr {
                    prefixes,
                    negate: false,
                } => Some(prefixes.clone()),
                _ => None,
            });
            (dev.unwrap(), nets.unwrap())
        })
        .collect()
}

#[test]
fn local_lan_opens_only_on_link_prefixes_and_only_beside_an_exit() {
    let mut c = ctx();
    c.on_link = vec![local_lan::OnLink {
        dev: "eth0".into(),
        net: "192.168.1.0/24".parse().unwrap(),
    }];
    let exit_lan = Choices {
        exit_node: Some("exit".into()),
        local_lan: true,
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &exit_lan, &c).unwrap();
    assert_eq!(
        local_lan_rules(&d),
        [("eth0".to_owned(), vec!["192.168.1.0/24".parse().unwrap()])]
    );
    // After protected DNS (a LAN resolver stays blocked), before the kill
    // switch's final drop.
    let rules = &chain(&d, "output").rules;
    let pos = |comment: &str| {
        rules
            .iter()
            .position(|r| r.comment.as_deref() == Some(comment))
    };
    let lan = pos("local-lan: on-link LAN beside the exit").unwrap();
    assert!(pos("protected DNS: query outside Magic DNS").unwrap() < lan);
    assert!(lan < pos("kill switch: egress outside the tunnel").unwrap());
    assert_eq!(chain(&d, "output").base.unwrap().policy, ChainPolicy::Drop);
    // Off (the default), or no exit: nothing is opened.
    let off = Choices {
        exit_node: Some("exit".into()),
        ..Choices::default()
    };
    assert!(local_lan_rules(&plan(&client_map(), 5, &off, &c).unwrap()).is_empty());
    let no_exit = Choices {
        local_lan: true,
        ..Choices::default()
    };
    assert!(local_lan_rules(&plan(&client_map(), 5, &no_exit, &c).unwrap()).is_empty());
}

#[test]
fn lockdown_protects_without_an_exit() {
    let lockdown = Choices {
        lockdown: true,
        ..Choices::default()
    };
    let d = plan(&client_map(), 5, &lockdown, &ctx()).unwrap();
    assert!(d.protected && d.dns_protected && d.exit.is_none());
    let out = chain(&d, "output");
    assert_eq!(out.base.unwrap().policy, ChainPolicy::Drop);
    assert!(
        out.rules
            .iter()
            .any(|r| r.comment.as_deref() == Some("kill switch: egress outside the tunnel"))
    );
    // The mesh still flows through the tunnel; nothing routes the internet
    // into it (no exit), so the internet is simply blocked.
    assert!(out.rules.iter().any(|r| r.verdict == Verdict::Accept
        && r.matches
            == vec![Match::Oifname {
                name: "rn0".into(),
                negate: false
            }]));
    assert!(d.routing.rules.is_empty());
    assert!(forward_catch_all(&d));
    // The system's resolvers are outside the tunnel: no upstream.
    assert_eq!(d.dns.upstream, DnsUpstream::None);
    // No exit: no src_valid_mark.
    assert_eq!(d.sysctls, super::ARP_HARDENING.to_vec());
}
