//! Root-only end-to-end test of issue 10 item 5: the tunnel address and
//! 100.100.100.100 must not answer ARP on the physical LAN.
//!
//! From the router (alice's neighbour on her physical link) `arping` asks
//! for addresses alice holds on other interfaces. Positive control before
//! Rustynet runs: an address on alice's loopback answers (Linux's default
//! weak-host ARP), proving the probe sees leaks. With alice's generation
//! applied, neither her tunnel address, nor 100.100.100.100, nor that
//! loopback address answers, while her physical address still does; after
//! `rustynet down` the sysctls are back to their original values.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_arp`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use anyhow::{anyhow, ensure};
use dns_support::*;
use rustynet_lab::{Cluster, Netns};

const POLICY: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
/// An address alice holds on loopback, standing for "any address not on
/// the physical interface".
const OTHER: &str = "192.0.2.77";

/// Whether `ip` answers ARP when `ns` asks on `ifname`.
fn answers(ns: &Netns, ifname: &str, ip: &str) -> bool {
    ns.succeeds(&["arping", "-q", "-c", "2", "-w", "3", "-I", ifname, ip])
}

fn sysctl(ns: &Netns, key: &str) -> anyhow::Result<String> {
    Ok(ns.stdout(&["sysctl", "-n", key])?.trim().to_owned())
}

#[test]
fn rustynet_addresses_do_not_answer_arp_on_the_lan() {
    assert!(
        rustynet_lab::netns::have("arping"),
        "this test needs arping (apt-get install iputils-arping)"
    );
    run_case(LEAK, "arp_hardening", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let alice = lab.node("alice");
        // The router's end of alice's link: the interface holding her /30.
        let peer = std::net::Ipv4Addr::from(u32::from(alice.addr) - 1);
        let rif = lab
            .router
            .stdout(&["ip", "-o", "-4", "addr", "show"])?
            .lines()
            .find(|l| l.contains(&format!("inet {peer}/30")))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .ok_or_else(|| anyhow!("no router interface for {peer}"))?;
        alice
            .ns
            .ip(&["addr", "add", &format!("{OTHER}/32"), "dev", "lo"])?;
        let original = sysctl(&alice.ns, "net.ipv4.conf.all.arp_ignore")?;
        ensure!(
            answers(&lab.router, &rif, &alice.addr.to_string()),
            "positive control: alice's own address must answer"
        );
        ensure!(
            answers(&lab.router, &rif, OTHER),
            "positive control: without hardening a loopback address answers on the LAN"
        );
        enroll_as(&mut c, "alice", "alice", &[], "alice", &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let s = wait_peers(&c, "alice", &["bob"])?;
        let tunnel = own_ip(&s)?.to_string();
        let mut table = serde_json::Map::new();
        for ip in [tunnel.as_str(), MAGIC, OTHER] {
            let leaked = answers(&lab.router, &rif, ip);
            table.insert(ip.to_owned(), leaked.into());
            ensure!(!leaked, "{ip} answered ARP on alice's physical link");
        }
        ensure!(
            answers(&lab.router, &rif, &alice.addr.to_string()),
            "alice's physical address must still answer"
        );
        ev.set("answered_while_applied", &table);
        ensure!(sysctl(&alice.ns, "net.ipv4.conf.all.arp_ignore")? == "1");
        ensure!(sysctl(&alice.ns, "net.ipv4.conf.all.arp_filter")? == "1");
        c.rustynet("alice", &["down"])?;
        let restored = sysctl(&alice.ns, "net.ipv4.conf.all.arp_ignore")?;
        ensure!(
            restored == original,
            "arp_ignore not restored by down: {restored} (was {original})"
        );
        ev.set("restored_arp_ignore", restored);
        Ok(())
    });
}
