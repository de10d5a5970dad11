use super::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn scope() -> RoutingScope {
    RoutingScope::new("rn0").expect("valid scope")
}

fn full_tunnel() -> RoutingConfig {
    RoutingConfig {
        addresses: vec![net("100.64.0.7/32")],
        routes: vec![
            Route::dev(net("0.0.0.0/0"), "rn0", DEFAULT_TABLE),
            Route::unreachable(net("::/0"), DEFAULT_TABLE),
            Route::dev(net("100.64.0.0/10"), "rn0", 254),
        ],
        rules: vec![
            Rule {
                fwmark: Some((0xca6c, u32::MAX)),
                invert: true,
                ..Rule::lookup(5610, IpFamily::V4, DEFAULT_TABLE)
            },
            Rule {
                suppress_prefixlen: Some(0),
                ..Rule::lookup(5600, IpFamily::V4, 254)
            },
        ],
    }
}

#[test]
fn diff_adds_missing_and_removes_extra_and_duplicates() {
    let desired: BTreeSet<u32> = [1, 2, 3].into();
    let current = vec![
        (Some(2), "two"),
        (Some(4), "four"),
        (None, "unparseable"),
        (Some(2), "two again"),
    ];
    let (add, remove) = diff_sets(&desired, current);
    assert_eq!(add, vec![1, 3]);
    assert_eq!(remove, vec!["four", "unparseable", "two again"]);
}

#[test]
fn diff_of_equal_sets_is_empty() {
    let desired: BTreeSet<u32> = [1, 2].into();
    let (add, remove) = diff_sets(&desired, vec![(Some(2), 2), (Some(1), 1)]);
    assert!(add.is_empty() && remove.is_empty());
}

#[test]
fn metric_is_normalised_per_family() {
    let v4 = Route::dev(net("10.0.0.0/8"), "rn0", 254);
    let v6 = Route::dev(net("fd00::/8"), "rn0", 254);
    assert_eq!(v4.effective_metric(), 0);
    assert_eq!(v6.effective_metric(), 1024);
    assert_eq!(v6.normalized(), v6.clone().with_metric(1024));
    assert_eq!(v6.clone().with_metric(0).effective_metric(), 1024);
    assert_eq!(v4.clone().with_metric(0).effective_metric(), 0);
    // A kernel read-back of the IPv6 route (metric 1024) compares equal.
    let entry = RouteEntry {
        dst: net("fd00::/8"),
        table: 254,
        protocol: RUSTYNET_RT_PROTOCOL,
        kind: RouteType::Unicast,
        oif: Some(10),
        dev: Some("rn0".into()),
        gateway: None,
        metric: 1024,
        has_extras: false,
    };
    assert_eq!(entry.as_route(), Some(v6.normalized()));
}

#[test]
fn entries_with_extras_or_foreign_types_are_not_routes() {
    let mut entry = RouteEntry {
        dst: net("10.0.0.0/8"),
        table: 254,
        protocol: RUSTYNET_RT_PROTOCOL,
        kind: RouteType::Unicast,
        oif: Some(3),
        dev: Some("rn0".into()),
        gateway: None,
        metric: 0,
        has_extras: true,
    };
    assert_eq!(entry.as_route(), None);
    entry.has_extras = false;
    entry.kind = RouteType::Local;
    assert_eq!(entry.as_route(), None);
    entry.kind = RouteType::Unicast;
    entry.dev = None;
    assert_eq!(
        entry.as_route(),
        None,
        "an unresolvable device cannot be compared"
    );
}

#[test]
fn valid_full_tunnel_config_passes() {
    assert!(validate_config(&scope(), &full_tunnel()).is_ok());
}

#[test]
fn validation_rejects_out_of_scope_and_malformed_input() {
    let s = scope();
    let check = |f: &dyn Fn(&mut RoutingConfig)| {
        let mut cfg = full_tunnel();
        f(&mut cfg);
        validate_config(&s, &cfg)
    };
    assert!(matches!(
        check(&|c| c
            .rules
            .push(Rule::lookup(32000, IpFamily::V4, DEFAULT_TABLE))),
        Err(RoutingError::InvalidRule {
            reason: "priority outside Rustynet's band",
            ..
        })
    ));
    assert!(matches!(
        check(&|c| c.rules.push(Rule {
            invert: true,
            ..Rule::lookup(5620, IpFamily::V4, 7)
        })),
        Err(RoutingError::InvalidRule { .. })
    ));
    assert!(matches!(
        check(&|c| c.rules.push(Rule {
            fwmark: Some((0x1ff, 0xff)),
            ..Rule::lookup(5620, IpFamily::V4, 7)
        })),
        Err(RoutingError::InvalidRule { .. })
    ));
    assert!(matches!(
        check(&|c| c.rules.push(Rule {
            fwmark: Some((0, 0)),
            ..Rule::lookup(5620, IpFamily::V4, 7)
        })),
        Err(RoutingError::InvalidRule { .. })
    ));
    assert!(matches!(
        check(&|c| c.rules.push(Rule {
            suppress_prefixlen: Some(33),
            ..Rule::lookup(5620, IpFamily::V4, 254)
        })),
        Err(RoutingError::InvalidRule { .. })
    ));
    assert!(matches!(
        check(&|c| c.routes.push(Route::dev(net("10.0.0.0/8"), "eth0", 254))),
        Err(RoutingError::InvalidRoute { .. })
    ));
    assert!(matches!(
        check(&|c| c.routes.push(Route::blackhole(net("0.0.0.0/0"), 254))),
        Err(RoutingError::InvalidRoute { .. })
    ));
    assert!(matches!(
        check(&|c| c.routes.push(Route::dev(net("10.0.0.1/8"), "rn0", 254))),
        Err(RoutingError::InvalidRoute {
            reason: "destination has host bits set",
            ..
        })
    ));
    assert!(matches!(
        check(&|c| c.routes.push(
            Route::dev(net("10.0.0.0/8"), "rn0", 254).with_via("fd00::1".parse().expect("ip"))
        )),
        Err(RoutingError::InvalidRoute { .. })
    ));
    assert!(matches!(
        check(&|c| c
            .routes
            .push(Route::dev(net("0.0.0.0/0"), "rn0", DEFAULT_TABLE))),
        Err(RoutingError::InvalidRoute {
            reason: "duplicate (table, destination, metric)",
            ..
        })
    ));
    assert!(matches!(
        check(&|c| c
            .routes
            .push(Route::dev(net("10.0.0.0/8"), "rn 0", DEFAULT_TABLE))),
        Err(RoutingError::InvalidName(_))
    ));
    assert!(matches!(
        check(&|c| c.addresses.push(net("fe80::1/64"))),
        Err(RoutingError::InvalidValue(_))
    ));
    assert!(matches!(
        check(&|c| c.addresses.push(net("0.0.0.0/0"))),
        Err(RoutingError::InvalidValue(_))
    ));
    // Another interface is fine inside Rustynet's own table.
    assert!(
        check(&|c| c
            .routes
            .push(Route::dev(net("10.0.0.0/8"), "eth0", DEFAULT_TABLE)))
        .is_ok()
    );
}

#[test]
fn link_local_v6_is_never_managed() {
    assert!(!is_managed_address(&net("fe80::1/64")));
    assert!(!is_managed_address(&net("febf::1/64")));
    assert!(is_managed_address(&net("fec0::1/64")));
    assert!(is_managed_address(&net("fd7a:115c:a1e0::1/128")));
    assert!(is_managed_address(&net("169.254.1.1/16")));
}

#[test]
fn display_is_readable() {
    let rule = Rule {
        fwmark: Some((0xca6c, u32::MAX)),
        invert: true,
        ..Rule::lookup(5610, IpFamily::V4, 5600)
    };
    assert_eq!(
        rule.to_string(),
        "-4 5610: not fwmark 0xca6c/0xffffffff lookup 5600"
    );
    let route =
        Route::dev(net("10.78.0.0/16"), "rn0", 254).with_via("10.77.0.1".parse().expect("ip"));
    assert_eq!(
        route.to_string(),
        "10.78.0.0/16 via 10.77.0.1 dev rn0 table 254 metric 0"
    );
}

#[test]
fn fake_reconciles_and_reports_like_the_real_one() {
    let fake = FakeRouting::new(scope());
    let mut routing = fake.clone();
    let first = routing.apply(&full_tunnel()).expect("apply");
    assert_eq!(
        (
            first.addresses_added.len(),
            first.routes_added.len(),
            first.rules_added.len()
        ),
        (1, 3, 2)
    );
    assert!(
        routing
            .apply(&full_tunnel())
            .expect("apply twice")
            .is_empty()
    );

    let mut smaller = full_tunnel();
    smaller.routes.pop();
    let diff = routing.apply(&smaller).expect("apply smaller");
    assert_eq!(
        diff.routes_removed,
        vec!["100.64.0.0/10 dev rn0 table 254 metric 0".to_owned()]
    );
    assert_eq!(diff.total(), 1);
    assert_eq!(fake.routes().len(), 2);

    let cleared = routing.clear().expect("clear");
    assert_eq!(cleared.total(), 5);
    assert!(fake.routes().is_empty() && fake.rules().is_empty() && fake.addresses().is_empty());
    assert_eq!(fake.calls().len(), 4);
}

#[test]
fn fake_failures_and_missing_links_change_nothing() {
    let fake = FakeRouting::new(scope());
    let mut routing = fake.clone();
    fake.fail_next_call();
    assert!(matches!(
        routing.apply(&full_tunnel()),
        Err(RoutingError::Io { .. })
    ));
    assert!(fake.routes().is_empty());
    fake.remove_link("rn0");
    assert!(matches!(
        routing.apply(&full_tunnel()),
        Err(RoutingError::LinkNotFound(_))
    ));
    assert_eq!(routing.link_state("rn0").expect("query"), None);
    assert!(fake.rules().is_empty());
}

#[test]
fn implementations_can_move_into_actor_tasks() {
    fn send<T: Send + 'static>() {}
    send::<NetlinkRouting>();
    send::<FakeRouting>();
    send::<crate::NftFirewall>();
    send::<crate::FakeFirewall>();
    send::<crate::ProcSysctl>();
    send::<crate::FakeSysctl>();
    send::<crate::ResolvConf>();
    send::<crate::FakeResolver>();
}

#[test]
fn fake_links() {
    let mut fake = FakeRouting::new(scope());
    fake.set_mtu("rn0", 1380).expect("mtu");
    fake.set_link_up("rn0", true).expect("up");
    let state = fake.link_state("rn0").expect("query").expect("exists");
    assert!(state.up && state.mtu == 1380);
    assert!(matches!(
        fake.set_mtu("rn9", 1380),
        Err(RoutingError::LinkNotFound(_))
    ));
    assert!(matches!(
        fake.set_mtu("rn0", 20),
        Err(RoutingError::InvalidValue(_))
    ));
}
