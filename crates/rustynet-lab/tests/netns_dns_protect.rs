//! Root-only end-to-end tests of protected DNS (issue 5), split from
//! netns_dns.rs: with an exit node or on demand, DNS sent straight to outside
//! resolvers never reaches the client's link; the exit's resolver serves only
//! granted clients; losing the path to the upstream gives SERVFAIL, never a
//! fallback; split-DNS routes from the policy.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_dns_protect -- --test-threads=2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use anyhow::ensure;
use dns_support::*;
use rustynet_lab::Cluster;
use rustynet_lab::topology::{DNS_IP, ECHO_IP};
use rustynet_proto::ipc::DataplaneState;
use std::net::Ipv4Addr;

#[test]
fn protected_dns_with_exit_leaks_nothing() {
    run_case(LEAK, "dns_protected_exit_no_direct_queries", |ev| {
        let lab = lab(&["alice", "exit"])?;
        let c = exit_lab(&lab)?;
        let alice = &lab.node("alice").ns;
        let drops_before = drop_counter(&lab, "alice", DNS_DROP);
        let (cap, exit_cap) = (
            capture(&lab, "alice", "dns")?,
            capture(&lab, "exit", "dns")?,
        );
        let (direct, answered) = direct_queries(&c, &lab, "alice", "direct");
        let via = unique("via-udp", &lab);
        let via_tcp = unique("via-tcp", &lab);
        let magic = dig(alice, MAGIC, &via, "A", &[]);
        let magic_tcp = dig(alice, MAGIC, &via_tcp, "A", &["+tcp"]);
        let alice_pcap = cap.stop_raw();
        let exit_pcap = exit_cap.stop_raw();
        let leaked = count(&alice_pcap, DNS_FILTER)?;
        let leaked_names: usize = direct
            .iter()
            .map(|n| occurrences(&alice_pcap, &wire(n)))
            .sum();
        let at_exit = count(
            &exit_pcap,
            &format!(
                "src host {} and dst host {DNS_IP} and port 53",
                lab.node("exit").addr
            ),
        )?;
        let via_at_exit =
            occurrences(&exit_pcap, &wire(&via)) + occurrences(&exit_pcap, &wire(&via_tcp));
        let drops = drop_counter(&lab, "alice", DNS_DROP) - drops_before;
        let doc = inspect(&c, "alice", Some(&via))?;
        ev.packets = Some(leaked.len());
        ev.set("direct_queries", &direct);
        ev.set("direct_answered", &answered);
        ev.set("dns_packets_on_client_link", leaked.len());
        ev.set("direct_names_on_client_link", leaked_names);
        ev.set("protected_dns_drop_counter_delta", drops);
        ev.set("magic_udp", &magic);
        ev.set("magic_tcp", &magic_tcp);
        ev.set("exit_queries_to_internet_resolver", at_exit.len());
        ev.set("forwarded_names_seen_at_exit", via_at_exit);
        ev.set("inspect", &doc);
        ensure!(answered.is_empty(), "direct DNS answered: {answered:?}");
        ensure!(
            leaked.is_empty() && leaked_names == 0,
            "DNS packets on alice's link: {leaked:?}\n{}",
            diag(&c, "alice")
        );
        ensure!(
            drops >= 4,
            "protected-DNS drop counters rose by {drops} only"
        );
        ensure!(
            magic.is_a(&[OUTSIDE_ANSWER]) && magic_tcp.is_a(&[OUTSIDE_ANSWER]),
            "Magic DNS via the exit: {magic:?} / {magic_tcp:?}\n{}",
            diag(&c, "alice")
        );
        ensure!(
            via_at_exit >= 2 && !at_exit.is_empty(),
            "the forwarded queries did not leave through the exit ({via_at_exit} names, {} packets)",
            at_exit.len()
        );
        ensure!(
            doc.protected
                && doc.upstream.contains("exit")
                && doc
                    .explanation
                    .as_deref()
                    .is_some_and(|e| e.contains("exit node exit")),
            "inspect: {doc:?}"
        );
        Ok(())
    });
}

/// Alice and bob may both reach the exit; only alice may use it as exit.
const GRANT_POLICY: &str = r#"{
  "tag_owners": {"tag:exit": ["admin"]},
  "acls": [{"action": "accept", "src": ["alice", "bob"], "dst": ["tag:exit:*"]}],
  "exit_nodes": [{"users": ["alice"], "nodes": ["tag:exit"]}]
}"#;

#[test]
fn exit_dns_service_serves_granted_clients_only() {
    run_case(E2E, "dns_exit_service_grant_only", |ev| {
        let lab = lab(&["alice", "bob", "exit"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(GRANT_POLICY)?;
        let advertise = ["--advertise-exit-node"];
        enroll_as(&mut c, "exit", "admin", &["tag:exit"], "exit", &advertise)?;
        enroll_as(&mut c, "alice", "alice", &[], "alice", &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let exit_ip = own_ip(&wait_peers(&c, "exit", &["alice", "bob"])?)?.to_string();
        wait_peers(&c, "alice", &["exit"])?;
        wait_peers(&c, "bob", &["exit"])?;
        // Straight at the exit's resolver on its tunnel address (the policy
        // lets both reach every port of the exit).
        let name = unique("granted", &lab);
        let (granted, alice) =
            dig_until(&lab.node("alice").ns, &exit_ip, &name, "A", SETTLE, |d| {
                d.is_a(&[OUTSIDE_ANSWER])
            });
        let bob_udp = dig(
            &lab.node("bob").ns,
            &exit_ip,
            &unique("denied", &lab),
            "A",
            &[],
        );
        let bob_tcp = dig(
            &lab.node("bob").ns,
            &exit_ip,
            &unique("denied-tcp", &lab),
            "A",
            &["+tcp"],
        );
        let select = c.cli("bob", &["exit-node", "select", "exit"])?;
        ev.set("alice_at_exit_resolver", &alice);
        ev.set("bob_at_exit_resolver_udp", &bob_udp);
        ev.set("bob_at_exit_resolver_tcp", &bob_tcp);
        ev.set(
            "bob_select_exit",
            String::from_utf8_lossy(&select.stderr).trim(),
        );
        ensure!(
            granted,
            "alice (exit grant) not served by the exit: {alice:?}"
        );
        // The exit's service forwards only (issue 10 item 6): bob is in the
        // exit's map but hidden from alice, and sweeping the exit's
        // resolver for his name or address finds nothing.
        let bob_ip = own_ip(&c.status("bob")?)?;
        let alice_ns = &lab.node("alice").ns;
        let hidden_a = dig(alice_ns, &exit_ip, &fqdn("bob"), "A", &[]);
        let hidden_ptr = dig(alice_ns, &exit_ip, &bob_ip.to_string(), "PTR", &[]);
        ev.set("hidden_a_at_exit", &hidden_a);
        ev.set("hidden_ptr_at_exit", &hidden_ptr);
        for (what, d) in [("A", &hidden_a), ("PTR", &hidden_ptr)] {
            ensure!(
                d.rcode() == "NXDOMAIN" && d.answers.is_empty(),
                "the exit's resolver leaked bob's {what} record to alice: {d:?}"
            );
        }
        for (what, d) in [("udp", &bob_udp), ("tcp", &bob_tcp)] {
            ensure!(
                d.rcode() == "REFUSED" && d.answers.is_empty(),
                "bob (no exit grant) over {what} must be REFUSED: {d:?}"
            );
        }
        ensure!(
            !select.status.success(),
            "bob selected an exit he has no grant for"
        );
        Ok(())
    });
}

#[test]
fn protected_dns_on_demand() {
    run_case(LEAK, "dns_protected_on_demand", |ev| {
        let lab = lab(&["solo"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(SOLO_POLICY)?;
        enroll_as(&mut c, "solo", "solo", &[], "solo", &[])?;
        wait_peers(&c, "solo", &[])?;
        let ns = &lab.node("solo").ns;
        let open = dig(ns, &DNS_IP.to_string(), &unique("before", &lab), "A", &[]);
        ensure!(
            open.is_a(&[OUTSIDE_ANSWER]),
            "the outside resolver must answer before protection: {open:?}"
        );
        let s = c.status("solo")?;
        ensure!(
            !s.dns_protected,
            "protected DNS on by default without an exit"
        );

        c.rustynet("solo", &["dns", "protect", "on"])?;
        let s = c.wait_status("solo", SETTLE, |s| s.dns_protected)?;
        ensure!(
            !s.kill_switch,
            "on-demand DNS protection must not assert the kill switch"
        );
        let doc = inspect(&c, "solo", None)?;
        ensure!(doc.protected, "inspect: {doc:?}");
        // A caller without the admin role cannot turn it off.
        let denied = c.cli_as("solo", Some((65534, 65534)), &["dns", "protect", "off"])?;
        ensure!(
            !denied.status.success() && c.status("solo")?.dns_protected,
            "an unprivileged caller changed protected DNS: {}",
            String::from_utf8_lossy(&denied.stderr)
        );
        ev.set(
            "unprivileged_off",
            String::from_utf8_lossy(&denied.stderr).trim(),
        );
        let cap = capture(&lab, "solo", "dns")?;
        let (direct, answered) = direct_queries(&c, &lab, "solo", "direct");
        let via = unique("via", &lab);
        let magic = dig(ns, MAGIC, &via, "A", &[]);
        let echo = c.probe(ns, "tcp", &format!("{ECHO_IP}:7"));
        let pcap = cap.stop_raw();
        let leaked_names: usize = direct.iter().map(|n| occurrences(&pcap, &wire(n))).sum();
        let dot = count(&pcap, "tcp port 853")?;
        let forwarded = occurrences(&pcap, &wire(&via));
        ev.set("direct_answered", &answered);
        ev.set("direct_names_on_link", leaked_names);
        ev.set("dot_packets_on_link", dot.len());
        ev.set("magic", &magic);
        ev.set("resolver_forwarded_queries_on_link", forwarded);
        ev.set("other_egress_open", echo.ok);
        ev.packets = Some(leaked_names + dot.len());
        ensure!(
            answered.is_empty(),
            "direct DNS answered under protection: {answered:?}"
        );
        ensure!(
            leaked_names == 0 && dot.is_empty(),
            "direct queries on the link: {leaked_names} names, {} DoT packets",
            dot.len()
        );
        ensure!(
            magic.is_a(&[OUTSIDE_ANSWER]),
            "Magic DNS under protection: {magic:?}\n{}",
            diag(&c, "solo")
        );
        ensure!(forwarded >= 1, "Magic DNS's own upstream query not seen");
        ensure!(
            echo.ok,
            "protected DNS must not block other egress: {echo:?}"
        );

        // The preference survives a restart.
        c.stop_daemon("solo");
        c.start_daemon("solo")?;
        c.wait_status("solo", SETTLE, |s| {
            s.state == DataplaneState::DataplaneApplied && s.dns_protected
        })?;
        let again = dig(ns, &DNS_IP.to_string(), &unique("restart", &lab), "A", &[]);
        ensure!(
            again.status.is_none(),
            "direct DNS answered after a restart: {again:?}"
        );

        c.rustynet("solo", &["dns", "protect", "off"])?;
        c.wait_status("solo", SETTLE, |s| !s.dns_protected)?;
        let (reopened, d) = dig_until(
            ns,
            &DNS_IP.to_string(),
            &unique("after", &lab),
            "A",
            SETTLE,
            |d| d.is_a(&[OUTSIDE_ANSWER]),
        );
        ev.set("direct_after_off", &d);
        ensure!(
            reopened,
            "direct DNS still blocked after `dns protect off`: {d:?}"
        );
        Ok(())
    });
}

#[test]
fn exit_dns_path_lost_fails_closed() {
    run_case(LEAK, "dns_exit_path_lost_servfail", |ev| {
        let lab = lab(&["alice", "exit"])?;
        let mut c = exit_lab(&lab)?;
        let alice = &lab.node("alice").ns;
        let exit_ip = own_ip(&c.status("exit")?)?;
        let (ok, first) = dig_until(alice, MAGIC, &unique("baseline", &lab), "A", SETTLE, |d| {
            d.is_a(&[OUTSIDE_ANSWER])
        });
        ensure!(ok, "baseline through the exit: {first:?}");
        let cap = capture(&lab, "alice", "cut")?;
        let mut phases = serde_json::Map::new();
        let mut names = Vec::new();

        // The exit's DNS service unreachable on its tunnel address.
        let rules: Vec<String> = ["udp", "tcp"]
            .iter()
            .map(|p| format!("ip daddr {exit_ip} {p} dport 53 counter drop"))
            .collect();
        let cut = NftCut::new(
            &lab.node("exit").ns,
            &format!("cut{}a", lab.id),
            "input",
            &rules,
        )?;
        let failed = lost(&lab, "exit-service", &mut names);
        let matched = cut.packets();
        drop(cut);
        let back = recovered(&lab, "exit-service", &mut names);
        phases.insert(
            "exit_dns_service_unreachable".into(),
            phase_json(&failed, Some(matched), &back),
        );

        // The exit's own upstream cut (on the router).
        let exit_addr = lab.node("exit").addr;
        let rules = vec![format!(
            "ip saddr {exit_addr} ip daddr {DNS_IP} counter drop"
        )];
        let cut = NftCut::new(&lab.router, &format!("cut{}b", lab.id), "forward", &rules)?;
        let failed_up = lost(&lab, "exit-upstream", &mut names);
        let matched_up = cut.packets();
        drop(cut);
        let back_up = recovered(&lab, "exit-upstream", &mut names);
        phases.insert(
            "exit_upstream_cut".into(),
            phase_json(&failed_up, Some(matched_up), &back_up),
        );

        // The exit's daemon, and with it its DNS service, killed.
        c.kill_daemon("exit");
        let failed_kill = lost(&lab, "exit-killed", &mut names);
        c.start_daemon("exit")?;
        wait_peers(&c, "exit", &["alice"])?;
        let back_kill = recovered(&lab, "exit-killed", &mut names);
        phases.insert(
            "exit_daemon_killed".into(),
            phase_json(&failed_kill, None, &back_kill),
        );

        let pcap = cap.stop_raw();
        let leaked = count(&pcap, DNS_FILTER)?;
        let leaked_names: usize = names.iter().map(|n| occurrences(&pcap, &wire(n))).sum();
        ev.packets = Some(leaked.len());
        ev.set("phases", phases);
        ev.set("dns_packets_on_client_link", leaked.len());
        ev.set("query_names_on_client_link", leaked_names);
        for (what, (failed, took), matched, (back, after)) in [
            (
                "exit DNS service unreachable",
                &failed,
                Some(matched),
                &back,
            ),
            ("exit upstream cut", &failed_up, Some(matched_up), &back_up),
            ("exit daemon killed", &failed_kill, None, &back_kill),
        ] {
            ensure!(
                failed.rcode() == "SERVFAIL",
                "{what}: want SERVFAIL, got {failed:?} after {took:.1}s\n{}",
                diag(&c, "alice")
            );
            ensure!(
                matched.is_none_or(|n| n > 0),
                "{what}: the cut never matched"
            );
            ensure!(*back, "{what}: no answer after restoring: {after:?}");
        }
        ensure!(
            leaked.is_empty() && leaked_names == 0,
            "DNS left alice's link outside the tunnel: {leaked:?}"
        );
        Ok(())
    });
}

/// The split-DNS resolver of test 7 and its answer.
const SPLIT_RESOLVER: &str = "203.0.113.54";
const SPLIT_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);

#[test]
fn split_dns_routes_from_the_policy() {
    run_case(E2E, "dns_split_routes_from_policy", |ev| {
        let lab = lab(&["alice", "exit"])?;
        let c = exit_lab_with(
            &lab,
            &EXIT_POLICY.replacen(
                '{',
                &format!(r#"{{"dns": {{"split": {{"corp.example": ["{SPLIT_RESOLVER}"]}}}},"#),
                1,
            ),
            false,
        )?;
        // A second resolver on the internet, answering differently.
        let _split = second_resolver(&c, SPLIT_RESOLVER, SPLIT_ANSWER)?;
        let alice = &lab.node("alice").ns;
        let doc = inspect(&c, "alice", Some("host.corp.example"))?;
        ensure!(
            doc.split == [format!("corp.example -> {SPLIT_RESOLVER}")]
                && doc.explanation.as_deref().is_some_and(|e| {
                    e.contains(&format!(
                        "split-DNS route corp.example -> {SPLIT_RESOLVER}:53"
                    ))
                }),
            "inspect: {doc:?}"
        );
        let (direct, split) = dig_until(alice, MAGIC, "host.corp.example", "A", SETTLE, |d| {
            d.is_a(&[SPLIT_ANSWER])
        });
        ensure!(
            direct,
            "split name without an exit: {split:?}\n{}",
            diag(&c, "alice")
        );
        let other = dig(alice, MAGIC, &unique("other", &lab), "A", &[]);
        ensure!(other.is_a(&[OUTSIDE_ANSWER]), "other names: {other:?}");

        // With an exit selected, the split query goes through the tunnel.
        c.rustynet("alice", &["exit-node", "select", "exit"])?;
        c.wait_status("alice", SETTLE, |s| s.state == DataplaneState::ExitActive)?;
        let (cap, exit_cap) = (
            capture(&lab, "alice", "split")?,
            capture(&lab, "exit", "split")?,
        );
        let name = format!("via-exit-{}.corp.example", lab.id);
        let via_exit = dig(alice, MAGIC, &name, "A", &[]);
        let pcap = cap.stop_raw();
        let exit_pcap = exit_cap.stop_raw();
        let on_client_link = count(&pcap, DNS_FILTER)?;
        let at_exit = count(
            &exit_pcap,
            &format!("dst host {SPLIT_RESOLVER} and port 53"),
        )?;
        ensure!(
            via_exit.is_a(&[SPLIT_ANSWER]),
            "split name through the exit: {via_exit:?}\n{}",
            diag(&c, "alice")
        );
        ensure!(
            on_client_link.is_empty(),
            "DNS on alice's link: {on_client_link:?}"
        );
        ensure!(
            !at_exit.is_empty() && occurrences(&exit_pcap, &wire(&name)) > 0,
            "the split query did not leave through the exit"
        );

        // The route goes with the next signed map.
        c.set_policy(EXIT_POLICY)?;
        let (gone, after) = dig_until(alice, MAGIC, "host.corp.example", "A", SETTLE, |d| {
            d.is_a(&[OUTSIDE_ANSWER])
        });
        let doc_after = inspect(&c, "alice", None)?;
        ev.set("inspect_with_route", &doc);
        ev.set("split_answer_direct", &split);
        ev.set("split_answer_via_exit", &via_exit);
        ev.set("dns_packets_on_client_link", on_client_link.len());
        ev.set("split_queries_from_exit", at_exit.len());
        ev.set("after_route_removed", &after);
        ev.packets = Some(on_client_link.len());
        ensure!(
            gone,
            "split route still used after the policy dropped it: {after:?}"
        );
        ensure!(doc_after.split.is_empty(), "{doc_after:?}");
        Ok(())
    });
}
