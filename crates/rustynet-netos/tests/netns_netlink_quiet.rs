//! Root-only: the routing backend's netlink traffic must not make the
//! packet-decoding crates log anything. Link replies carry per-family
//! device configuration (`IFLA_AF_SPEC`) that newer kernels extend faster
//! than the crate learns it; decoding it logged a line on every call and
//! flooded the daemon's log. The backend reads only the link attributes it
//! uses, so even at trace level nothing may come from those crates.

#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use std::sync::Mutex;

use common::{in_netns, require_root_and_tools, run, unique};
use ipnet::IpNet;
use rustynet_netos::{
    DEFAULT_TABLE, IpFamily, Links, NetlinkRouting, Route, Routing, RoutingConfig, RoutingScope,
    Rule,
};

/// Every record whose target is one of the netlink packet crates.
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("netlink_packet") {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(line);
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

#[test]
fn link_route_rule_and_address_calls_log_nothing_from_the_packet_crates() {
    require_root_and_tools(&["ip"]);
    log::set_logger(&CAPTURE).expect("only this test installs a logger");
    log::set_max_level(log::LevelFilter::Trace);

    let mtu = in_netns(|| {
        let (dev, peer) = (unique("rnq"), unique("rnr"));
        run(
            "ip",
            &["link", "add", &dev, "type", "veth", "peer", "name", &peer],
        );
        // IPv6 on, so every link reply carries the IPv6 device config.
        let conf = run("sysctl", &["-n", &format!("net.ipv6.conf.{dev}.mtu")]);
        assert!(!conf.trim().is_empty(), "IPv6 must be enabled on {dev}");

        let mut routing =
            NetlinkRouting::new(RoutingScope::new(&dev).expect("scope")).expect("netlink socket");
        routing.set_link_up(&dev, true).expect("link up");
        routing.set_mtu(&dev, 1380).expect("set mtu");
        let state = routing
            .link_state(&dev)
            .expect("link state")
            .expect("link exists");
        assert!(state.up, "{state:?}");
        assert!(
            routing.link_state("rnqnothere").expect("query").is_none(),
            "a missing link reads as None"
        );

        let cfg = RoutingConfig {
            addresses: vec![net("100.64.0.9/32"), net("fd7a:115c:a1e0::9/128")],
            routes: vec![
                Route::dev(net("0.0.0.0/0"), &dev, DEFAULT_TABLE),
                Route::dev(net("::/0"), &dev, DEFAULT_TABLE),
            ],
            rules: vec![Rule::lookup(5610, IpFamily::V4, DEFAULT_TABLE)],
        };
        let changes = routing.apply(&cfg).expect("apply");
        assert_eq!(changes.total(), 5, "{changes:?}");
        let routes = routing.list_routes(DEFAULT_TABLE).expect("list routes");
        assert!(
            routes
                .iter()
                .any(|r| r.dev.as_deref() == Some(dev.as_str())),
            "link names must still resolve: {routes:?}"
        );
        routing.list_rules().expect("list rules");
        let cleared = routing.clear().expect("clear");
        assert_eq!(cleared.total(), 5, "{cleared:?}");
        state.mtu
    });
    assert_eq!(mtu, 1380, "the MTU attribute must still be decoded");

    let logged = CAPTURE
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(
        logged.is_empty(),
        "netlink decoding logged {} line(s):\n{}",
        logged.len(),
        logged.join("\n")
    );
}
