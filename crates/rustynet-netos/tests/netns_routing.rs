//! Root-only: addresses, routes, rules and links reconciled for real in a
//! private network namespace, compared with what `ip` reports.

#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use common::{in_netns, require_root_and_tools, run, unique};
use ipnet::IpNet;
use rustynet_netos::{
    DEFAULT_TABLE, IpFamily, Links, NetlinkRouting, ProcSysctl, Route, RouteType, Routing,
    RoutingConfig, RoutingError, RoutingScope, Rule, Sysctl,
};

const MARK: u32 = 0xca6c;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

/// Everything `ip` shows about rules and routes, both families.
fn snapshot() -> String {
    [
        run("ip", &["-4", "rule", "show"]),
        run("ip", &["-6", "rule", "show"]),
        run("ip", &["-4", "route", "show", "table", "all"]),
        run("ip", &["-6", "route", "show", "table", "all"]),
    ]
    .join("---\n")
}

/// A veth pair with `dev` up; IPv6 DAD off so link-local state is stable.
fn setup_link(dev: &str, peer: &str) -> NetlinkRouting {
    let mut sysctl = ProcSysctl::new();
    sysctl
        .set("net.ipv6.conf.all.accept_dad", "0")
        .expect("sysctl in netns");
    sysctl
        .set("net.ipv6.conf.default.accept_dad", "0")
        .expect("sysctl in netns");
    run(
        "ip",
        &["link", "add", dev, "type", "veth", "peer", "name", peer],
    );
    let mut routing =
        NetlinkRouting::new(RoutingScope::new(dev).expect("scope")).expect("netlink socket");
    routing.set_link_up(dev, true).expect("link up");
    routing.set_link_up(peer, true).expect("peer up");
    settle(dev);
    routing
}

/// Waits until carrier and IPv6 link-local setup (both asynchronous in the
/// kernel) are done, so before/after snapshots compare like with like.
fn settle(dev: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = String::new();
    loop {
        let link = run("ip", &["link", "show", dev]);
        let addrs = run("ip", &["-6", "addr", "show", "dev", dev]);
        let now = snapshot();
        if link.contains("LOWER_UP")
            && addrs.contains("fe80::")
            && !addrs.contains("tentative")
            && now == last
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "link {dev} did not settle: {link}{addrs}"
        );
        last = now;
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn full_tunnel(dev: &str) -> RoutingConfig {
    let t = DEFAULT_TABLE;
    let not_marked = |family| Rule {
        fwmark: Some((MARK, 0xffff_ffff)),
        invert: true,
        ..Rule::lookup(5610, family, t)
    };
    let suppress = |family| Rule {
        suppress_prefixlen: Some(0),
        ..Rule::lookup(5600, family, 254)
    };
    RoutingConfig {
        addresses: vec![
            net("100.64.0.7/32"),
            net("fd7a:115c:a1e0::7/128"),
            net("10.77.0.2/24"),
        ],
        routes: vec![
            Route::dev(net("0.0.0.0/0"), dev, t),
            Route::dev(net("::/0"), dev, t),
            Route::unreachable(net("0.0.0.0/0"), t).with_metric(4000),
            Route::unreachable(net("::/0"), t).with_metric(4000),
            // IPv6 stores metric 0 as 1024; the reconcile must still converge.
            Route::dev(net("fd78::/48"), dev, t).with_metric(0),
            Route::blackhole(net("198.51.100.0/24"), t),
            Route::dev(net("100.64.0.0/10"), dev, 254),
            Route::dev(net("10.78.0.0/16"), dev, 254)
                .with_via("10.77.0.1".parse().expect("gw"))
                .with_metric(50),
        ],
        rules: vec![
            not_marked(IpFamily::V4),
            not_marked(IpFamily::V6),
            suppress(IpFamily::V4),
            suppress(IpFamily::V6),
        ],
    }
}

#[test]
fn reconcile_is_idempotent_scoped_and_clear_restores_prior_state() {
    require_root_and_tools(&["ip"]);
    in_netns(|| {
        let (dev, peer) = (unique("rnt"), unique("rnp"));
        let mut routing = setup_link(&dev, &peer);
        // Foreign state that must survive everything: a route in our table
        // and a rule in our band without our protocol, an address elsewhere.
        // (The foreign route uses the peer: the kernel itself flushes every
        // IPv4 route through a device when its last IPv4 address goes.)
        run(
            "ip",
            &[
                "route",
                "add",
                "10.99.0.0/16",
                "dev",
                &peer,
                "table",
                &DEFAULT_TABLE.to_string(),
            ],
        );
        run("ip", &["rule", "add", "priority", "5650", "lookup", "77"]);
        run("ip", &["addr", "add", "10.77.0.9/24", "dev", &peer]);
        let before = snapshot();

        let cfg = full_tunnel(&dev);
        let first = routing.apply(&cfg).expect("first apply");
        assert_eq!(first.addresses_added.len(), 3, "{first:?}");
        assert_eq!(first.routes_added.len(), 8, "{first:?}");
        assert_eq!(first.rules_added.len(), 4, "{first:?}");
        assert!(
            first.addresses_removed.is_empty()
                && first.routes_removed.is_empty()
                && first.rules_removed.is_empty()
        );

        let rules4 = run("ip", &["-4", "rule", "show"]);
        assert!(
            rules4.contains("5610:\tnot from all fwmark 0xca6c lookup 5600 proto 114"),
            "{rules4}"
        );
        assert!(
            rules4.contains("5600:\tfrom all lookup main suppress_prefixlength 0 proto 114"),
            "{rules4}"
        );
        let table = run(
            "ip",
            &["-4", "route", "show", "table", &DEFAULT_TABLE.to_string()],
        );
        assert!(
            table.contains(&format!("default dev {dev} proto 114 scope link")),
            "{table}"
        );
        assert!(
            table.contains("unreachable default proto 114 metric 4000"),
            "{table}"
        );
        let main = run("ip", &["-4", "route", "show", "table", "main"]);
        assert!(
            main.contains(&format!(
                "10.78.0.0/16 via 10.77.0.1 dev {dev} proto 114 metric 50"
            )),
            "{main}"
        );
        let addrs = run("ip", &["addr", "show", "dev", &dev]);
        assert!(
            addrs.contains("inet 100.64.0.7/32") && addrs.contains("inet6 fd7a:115c:a1e0::7/128"),
            "{addrs}"
        );

        // Second apply with the same config: nothing to do.
        let second = routing.apply(&cfg).expect("second apply");
        assert!(second.is_empty(), "apply twice must be a no-op: {second:?}");

        // Reading back through the trait sees ours with our protocol.
        let ours: Vec<_> = routing
            .list_routes(DEFAULT_TABLE)
            .expect("list routes")
            .into_iter()
            .filter(|r| r.protocol == 114)
            .collect();
        assert_eq!(ours.len(), 6, "{ours:?}");
        assert!(
            table.contains("blackhole 198.51.100.0/24 proto 114"),
            "{table}"
        );
        assert!(
            ours.iter().any(|r| r.kind == RouteType::Unreachable
                && r.dst == net("::/0")
                && r.metric == 4000)
        );
        let foreign = routing
            .list_routes(DEFAULT_TABLE)
            .expect("list")
            .into_iter()
            .filter(|r| r.protocol != 114)
            .count();
        assert_eq!(
            foreign, 1,
            "the foreign route in our table is listed but not ours"
        );
        let rules = routing.list_rules().expect("list rules");
        assert_eq!(rules.iter().filter(|r| r.protocol == 114).count(), 4);
        assert!(
            rules
                .iter()
                .any(|r| r.rule.priority == 5650 && r.protocol != 114)
        );

        // A changed config is applied as exactly its difference.
        let mut changed = cfg.clone();
        changed.addresses.retain(|a| *a != net("10.77.0.2/24"));
        changed.addresses.push(net("10.77.0.3/24"));
        changed.routes.retain(|r| r.dst != net("100.64.0.0/10"));
        changed.rules.retain(|r| r.family == IpFamily::V4);
        let diff = routing.apply(&changed).expect("changed apply");
        assert_eq!(diff.addresses_added, vec![net("10.77.0.3/24")]);
        assert_eq!(diff.addresses_removed, vec![net("10.77.0.2/24")]);
        assert!(diff.routes_added.is_empty(), "{diff:?}");
        assert_eq!(diff.routes_removed.len(), 1, "{diff:?}");
        assert_eq!(diff.rules_removed.len(), 2, "{diff:?}");
        assert!(routing.apply(&changed).expect("again").is_empty());
        // The route via 10.77.0.1 survived the address swap.
        assert!(
            run("ip", &["-4", "route", "show", "table", "main"])
                .contains("10.78.0.0/16 via 10.77.0.1")
        );

        let cleared = routing.clear().expect("clear");
        assert_eq!(cleared.rules_removed.len(), 2);
        assert_eq!(cleared.routes_removed.len(), 7);
        assert_eq!(cleared.addresses_removed.len(), 3);
        assert_eq!(
            snapshot(),
            before,
            "clear must restore the exact prior routing state"
        );
        assert!(routing.clear().expect("clear twice").is_empty());
        assert!(
            run("ip", &["addr", "show", "dev", &peer]).contains("10.77.0.9/24"),
            "foreign address kept"
        );
    });
}

#[test]
fn invalid_config_or_missing_link_changes_nothing() {
    require_root_and_tools(&["ip"]);
    in_netns(|| {
        let (dev, peer) = (unique("rnt"), unique("rnp"));
        let mut routing = setup_link(&dev, &peer);
        let before = snapshot();

        let mut bad = full_tunnel(&dev);
        bad.rules
            .push(Rule::lookup(100, IpFamily::V4, DEFAULT_TABLE));
        assert!(matches!(
            routing.apply(&bad),
            Err(RoutingError::InvalidRule { .. })
        ));

        let mut bad = full_tunnel(&dev);
        bad.routes.push(Route::unreachable(net("0.0.0.0/0"), 254));
        assert!(matches!(
            routing.apply(&bad),
            Err(RoutingError::InvalidRoute { .. })
        ));

        let mut bad = full_tunnel(&dev);
        bad.routes.push(Route::dev(net("10.1.2.3/8"), &dev, 254));
        assert!(matches!(
            routing.apply(&bad),
            Err(RoutingError::InvalidRoute { .. })
        ));

        let mut missing =
            NetlinkRouting::new(RoutingScope::new(unique("rng")).expect("scope")).expect("socket");
        let scope_dev = missing.scope().interface.clone();
        let err = missing
            .apply(&full_tunnel(&scope_dev))
            .expect_err("device does not exist");
        assert!(
            matches!(err, RoutingError::LinkNotFound(ref n) if *n == scope_dev),
            "{err}"
        );

        assert_eq!(
            snapshot(),
            before,
            "a refused apply must not change anything"
        );
    });
}

#[test]
fn links_state_mtu_up_down_and_gone() {
    require_root_and_tools(&["ip"]);
    in_netns(|| {
        let (dev, peer) = (unique("rnt"), unique("rnp"));
        let mut routing = setup_link(&dev, &peer);
        let state = routing.link_state(&dev).expect("query").expect("exists");
        assert!(state.up, "{state:?}");
        assert_eq!(routing.link_index(&dev).expect("query"), Some(state.index));
        let shown = run("ip", &["-o", "link", "show", &dev]);
        assert!(shown.starts_with(&format!("{}: ", state.index)), "{shown}");

        routing.set_mtu(&dev, 1380).expect("mtu");
        assert!(run("ip", &["link", "show", &dev]).contains("mtu 1380"));
        assert_eq!(
            routing
                .link_state(&dev)
                .expect("query")
                .expect("exists")
                .mtu,
            1380
        );
        assert!(matches!(
            routing.set_mtu(&dev, 10),
            Err(RoutingError::InvalidValue(_))
        ));

        routing.set_link_up(&dev, false).expect("down");
        assert!(!routing.link_state(&dev).expect("query").expect("exists").up);
        assert!(!run("ip", &["link", "show", &dev]).contains(",UP"));

        run("ip", &["link", "del", &dev]);
        assert_eq!(
            routing.link_state(&dev).expect("query"),
            None,
            "deleted link must read as gone"
        );
        assert!(matches!(
            routing.set_link_up(&dev, true),
            Err(RoutingError::LinkNotFound(_))
        ));
        assert!(matches!(
            routing.link_state("bad name"),
            Err(RoutingError::InvalidName(_))
        ));
    });
}
