//! Root-only: the interface keeps `RoutingConfig::addresses` in the order
//! given, so the kernel picks the intended source address. Regression test
//! for a daemon that came back from fail-closed (which kept only the Magic
//! DNS address) with its tunnel address added second: every packet it then
//! sent carried 100.100.100.100 as its source and the peers dropped them.

#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use common::{in_netns, require_root_and_tools, run, unique};
use ipnet::IpNet;
use rustynet_netos::{Links, NetlinkRouting, Route, Routing, RoutingConfig, RoutingScope};

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn config(addresses: &[&str], dev: &str) -> RoutingConfig {
    RoutingConfig {
        addresses: addresses.iter().map(|a| net(a)).collect(),
        routes: vec![Route::dev(net("100.64.0.0/10"), dev, 254)],
        rules: vec![],
    }
}

fn source_for(dst: &str) -> String {
    let out = run("ip", &["-4", "route", "get", dst]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "src")
        .and_then(|i| words.get(i + 1))
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| panic!("no source in {out}"))
}

#[test]
fn addresses_keep_the_given_order_and_pick_the_source() {
    require_root_and_tools(&["ip"]);
    let (dev, peer) = (unique("rao"), unique("rap"));
    in_netns(move || {
        run(
            "ip",
            &["link", "add", &dev, "type", "veth", "peer", "name", &peer],
        );
        let mut routing =
            NetlinkRouting::new(RoutingScope::new(dev.as_str()).expect("scope")).expect("netlink");
        routing.set_link_up(&dev, true).expect("up");
        routing.set_link_up(&peer, true).expect("peer up");

        // Fail-closed: only the Magic DNS address.
        routing
            .apply(&config(&["100.100.100.100/32"], &dev))
            .expect("restricted");
        // Back: the tunnel address must come first and be the source.
        let wanted = config(&["100.64.0.1/32", "100.100.100.100/32"], &dev);
        routing.apply(&wanted).expect("full");
        let listed = run("ip", &["-4", "-o", "addr", "show", "dev", &dev]);
        let order: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(
            order,
            ["100.64.0.1/32", "100.100.100.100/32"],
            "address order on {dev}:\n{listed}"
        );
        assert_eq!(source_for("100.64.0.2"), "100.64.0.1");
        // Idempotent: a second apply changes nothing.
        let again = routing.apply(&wanted).expect("again");
        assert!(again.is_empty(), "second apply changed {again:?}");
    });
}
