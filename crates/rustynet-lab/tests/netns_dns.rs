//! Root-only end-to-end tests of Magic DNS and protected DNS (issue 5): the
//! real control server and real `rustynetd`s in network namespaces, queried
//! with `dig` from inside each node's namespace.
//!
//! 1. Every node resolves itself and every visible peer (A, empty AAAA,
//!    PTR); ACL-invisible names and addresses are NXDOMAIN; a policy change
//!    (a new signed map) is the only thing that adds a record; a host
//!    outside the node gets no answer from its 100.100.100.100.
//! 2. Two nodes asking for the same hostname get `web` and `web-2` in
//!    enrollment order, and keep them across daemon restarts, a control
//!    restart and a crash; removing `web` never promotes `web-2`;
//!    `dns inspect` explains the rename.
//! 3. With an exit node selected, DNS sent straight to outside resolvers
//!    (UDP, TCP, DoT port, IPv6) puts zero packets on the client's link,
//!    while queries through 100.100.100.100 are answered via the exit.
//!    Protected DNS on demand (`rustynet dns protect on`) without an exit
//!    blocks the same queries but leaves other traffic alone, and survives
//!    a restart.
//!    The exit's own resolver answers only clients holding an exit grant.
//! 4. The exit's DNS service unreachable, its upstream cut, or its daemon
//!    killed: SERVFAIL, nothing leaks; restored: answers again.
//! 5. resolv.conf is restored byte for byte after `down`, and after SIGKILL
//!    plus restart (the stale takeover is repaired first thing at start).
//! 6. A flood of malformed queries over UDP and TCP (64 KiB messages
//!    included) leaves the resolver answering and the daemon's memory
//!    bounded.
//! 7. Split DNS from the policy (`dns.split`): names under the domain go to
//!    its resolver, directly or through the exit (nothing on the client's
//!    link), and stop doing so when the policy drops the route.
//!
//! Cases 3, 4 and 7 live in netns_dns_protect.rs.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_dns -- --test-threads=2`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use dns_support::*;
use rustynet_lab::Cluster;
use rustynet_lab::topology::DNS_IP;
use rustynet_proto::ipc::DataplaneState;
use serde_json::json;

#[test]
fn names_resolve_for_visible_peers_only() {
    run_case(E2E, "dns_visible_names_resolve", |ev| {
        let nodes = ["alice", "bob", "carol", "dave"];
        let lab = lab(&nodes)?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(VISIBILITY_POLICY)?;
        for n in nodes {
            enroll_as(&mut c, n, n, &[], n, &[])?;
        }
        let expected_peers: BTreeMap<&str, Vec<&str>> = [
            ("alice", vec!["bob", "dave"]),
            ("bob", vec!["alice"]),
            ("carol", vec![]),
            ("dave", vec!["alice"]),
        ]
        .into();
        let mut ips = BTreeMap::new();
        for (n, peers) in &expected_peers {
            ips.insert(*n, own_ip(&wait_peers(&c, n, peers)?)?);
        }
        let mut table = BTreeMap::new();
        let (mut resolved, mut nxdomain) = (0, 0);
        for (n, peers) in &expected_peers {
            let ns = &lab.node(n).ns;
            let conf = std::fs::read_to_string(&c.node(n).unwrap().resolv_conf)?;
            ensure!(
                conf.contains(&format!("nameserver {MAGIC}")) && conf.contains(SUFFIX),
                "{n}'s resolv.conf does not point at Magic DNS: {conf}"
            );
            for m in nodes {
                let ip = ips[m];
                let a = dig(ns, MAGIC, &fqdn(m), "A", &[]);
                let ptr = dig(ns, MAGIC, &ip.to_string(), "PTR", &[]);
                if m == *n || peers.contains(&m) {
                    ensure!(a.is_a(&[ip]), "{n}: {m} -> {a:?}, want {ip}");
                    ensure!(
                        ptr.rcode() == "NOERROR" && ptr.data("PTR") == [format!("{}.", fqdn(m))],
                        "{n}: PTR {ip} -> {ptr:?}"
                    );
                    let aaaa = dig(ns, MAGIC, &fqdn(m), "AAAA", &[]);
                    ensure!(
                        aaaa.rcode() == "NOERROR"
                            && aaaa.answers.is_empty()
                            && aaaa.authority.contains(&"SOA".to_owned()),
                        "{n}: AAAA {m} must be NODATA (the mesh is IPv4): {aaaa:?}"
                    );
                    resolved += 1;
                    table.insert(
                        format!("{n} -> {m}"),
                        json!({"a": a.data("A"), "ptr": ptr.data("PTR"), "aaaa": aaaa.rcode()}),
                    );
                } else {
                    ensure!(
                        a.rcode() == "NXDOMAIN" && a.answers.is_empty(),
                        "{n}: invisible {m} must be NXDOMAIN: {a:?}"
                    );
                    ensure!(
                        ptr.rcode() == "NXDOMAIN",
                        "{n}: PTR of invisible {m} ({ip}) must be NXDOMAIN: {ptr:?}"
                    );
                    nxdomain += 1;
                    table.insert(
                        format!("{n} -> {m}"),
                        json!({"a": a.rcode(), "ptr": ptr.rcode()}),
                    );
                }
            }
        }
        let alice = &lab.node("alice").ns;
        let unknown = dig(alice, MAGIC, &fqdn("nosuch"), "A", &[]);
        ensure!(unknown.rcode() == "NXDOMAIN", "unknown name: {unknown:?}");
        let mixed = dig(alice, MAGIC, "BoB.RustyNet.Internal", "A", &[]);
        ensure!(
            mixed.is_a(&[ips["bob"]]),
            "case-insensitive lookup: {mixed:?}"
        );
        let tcp = dig(alice, MAGIC, &fqdn("dave"), "A", &["+tcp"]);
        ensure!(tcp.is_a(&[ips["dave"]]), "over TCP: {tcp:?}");

        // Records change only with a new signed map: a policy change makes
        // carol visible to alice, and only then does her name resolve.
        let before = c.status("alice")?.generation;
        c.set_policy(&VISIBILITY_POLICY.replace(
            r#"{"action": "accept", "src": ["alice"], "dst": ["dave:*"]}"#,
            r#"{"action": "accept", "src": ["alice"], "dst": ["dave:*", "carol:*"]}"#,
        ))?;
        let after = wait_peers(&c, "alice", &["bob", "carol", "dave"])?;
        let (ok, carol) = dig_until(alice, MAGIC, &fqdn("carol"), "A", SETTLE, |d| {
            d.is_a(&[ips["carol"]])
        });
        ensure!(
            ok,
            "carol not resolvable after the policy change: {carol:?}"
        );
        ensure!(after.generation > before, "no new generation");
        let bob_view = dig(&lab.node("bob").ns, MAGIC, &fqdn("carol"), "A", &[]);
        ensure!(
            bob_view.rcode() == "NXDOMAIN",
            "bob must still not see carol: {bob_view:?}"
        );
        // Magic DNS answers its own node only: a host on alice's physical
        // network that routes 100.100.100.100 to her gets nothing.
        let via = lab.node("alice").addr.to_string();
        lab.router
            .ip(&["route", "add", &format!("{MAGIC}/32"), "via", &via])?;
        let from_lan = dig(&lab.router, MAGIC, &fqdn("alice"), "A", &["+time=2"]);
        let from_lan_tcp = dig(
            &lab.router,
            MAGIC,
            &fqdn("alice"),
            "A",
            &["+time=2", "+tcp"],
        );
        ensure!(
            from_lan.status.is_none() && from_lan_tcp.status.is_none(),
            "Magic DNS answered a host outside the node: {from_lan:?} / {from_lan_tcp:?}"
        );
        ev.set(
            "outside_host_query",
            [from_lan.rcode(), from_lan_tcp.rcode()],
        );
        ev.set("visible_answers", resolved);
        ev.set("nxdomain_answers", nxdomain);
        ev.set("tunnel_ips", &ips);
        ev.set("lookups", table);
        ev.set("generation_before_after_policy", [before, after.generation]);
        ev.set("carol_from_alice_after_policy_change", carol.data("A"));
        Ok(())
    });
}

#[test]
fn duplicate_hostnames_stay_stable() {
    run_case(E2E, "dns_duplicate_hostnames_stable", |ev| {
        let lab = lab(&["web1", "web2", "obs"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(EVERYONE_POLICY)?;
        // Enrollment order decides: web1 first.
        enroll_as(&mut c, "web1", "u1", &[], "web", &[])?;
        enroll_as(&mut c, "web2", "u2", &[], "web", &[])?;
        enroll_as(&mut c, "obs", "u3", &[], "obs", &[])?;
        let s1 = wait_peers(&c, "web1", &["web-2", "obs"])?;
        let s2 = wait_peers(&c, "web2", &["web", "obs"])?;
        wait_peers(&c, "obs", &["web", "web-2"])?;
        let (ip1, ip2) = (own_ip(&s1)?, own_ip(&s2)?);
        ensure!(
            s1.self_node.as_ref().unwrap().name == "web"
                && s2.self_node.as_ref().unwrap().name == "web-2",
            "names: {:?} / {:?}",
            s1.self_node,
            s2.self_node
        );
        let obs = &lab.node("obs").ns;
        let check = |when: &str| -> anyhow::Result<()> {
            for (ns, who) in [(obs, "obs"), (&lab.node("web1").ns, "web1")] {
                let (ok, web) = dig_until(ns, MAGIC, &fqdn("web"), "A", SETTLE, |d| d.is_a(&[ip1]));
                ensure!(ok, "{when}: {who} sees web as {web:?}, want {ip1}");
                let (ok, web2) =
                    dig_until(ns, MAGIC, &fqdn("web-2"), "A", SETTLE, |d| d.is_a(&[ip2]));
                ensure!(ok, "{when}: {who} sees web-2 as {web2:?}, want {ip2}");
            }
            let ptr = dig(obs, MAGIC, &ip2.to_string(), "PTR", &[]);
            ensure!(
                ptr.data("PTR") == [format!("{}.", fqdn("web-2"))],
                "{when}: PTR {ip2} -> {ptr:?}"
            );
            Ok(())
        };
        check("after enrollment")?;
        let doc = inspect(&c, "obs", Some("web-2"))?;
        let why = doc.explanation.clone().unwrap_or_default();
        ensure!(
            why.contains("asked for \"web\"")
                && why.contains("renamed it web-2 at enrollment (20")
                && doc.records.len() == 1
                && doc.records[0].ip == std::net::IpAddr::V4(ip2),
            "inspect web-2 does not explain the rename: {doc:?}"
        );
        let first = inspect(&c, "obs", Some("web"))?;
        let first_why = first.explanation.clone().unwrap_or_default();
        ensure!(
            first_why.contains("asked for \"web\" and got it at enrollment"),
            "inspect web: {first:?}"
        );

        // Both daemons restart, the renamed one first.
        c.stop_daemon("web1");
        c.stop_daemon("web2");
        c.start_daemon("web2")?;
        c.start_daemon("web1")?;
        wait_peers(&c, "web1", &["web-2", "obs"])?;
        wait_peers(&c, "web2", &["web", "obs"])?;
        check("after daemon restarts")?;

        // Control restarts: every node re-syncs and gets a fresh map.
        let gen_before = c.status("obs")?.generation;
        c.restart_control(MAP_TTL)?;
        let resynced = c.wait_status("obs", SETTLE, |s| s.generation > gen_before);
        let gen_after = resynced.as_ref().map(|s| s.generation).unwrap_or(0);
        check("after a control restart")?;

        // A crashed observer restores and re-syncs.
        c.kill_daemon("obs");
        c.start_daemon("obs")?;
        wait_peers(&c, "obs", &["web", "web-2"])?;
        check("after the observer crashed and restarted")?;

        // Removing the first "web" never hands its name to web-2.
        c.admin(&["nodes", "remove", "web"])?;
        wait_peers(&c, "obs", &["web-2"])?;
        let (gone, web) = dig_until(obs, MAGIC, &fqdn("web"), "A", SETTLE, |d| {
            d.rcode() == "NXDOMAIN"
        });
        ensure!(gone, "removed web still resolves: {web:?}");
        let web2 = dig(obs, MAGIC, &fqdn("web-2"), "A", &[]);
        ensure!(web2.is_a(&[ip2]), "web-2 changed after web left: {web2:?}");
        let still = inspect(&c, "obs", Some("web-2"))?;
        ensure!(
            still
                .explanation
                .as_deref()
                .is_some_and(|t| t.contains("renamed it web-2")),
            "{still:?}"
        );
        resynced?;
        ev.set("web", ip1);
        ev.set("web_2", ip2);
        ev.set("inspect_web_2", why);
        ev.set("inspect_web", first_why);
        ev.set(
            "obs_generation_before_after_control_restart",
            [gen_before, gen_after],
        );
        ev.set(
            "after_removing_web",
            json!({"web": web.rcode(), "web-2": web2.data("A")}),
        );
        Ok(())
    });
}

#[test]
fn resolv_conf_restored_after_down_and_crash() {
    run_case(E2E, "dns_resolv_conf_restore_and_repair", |ev| {
        let lab = lab(&["solo"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(SOLO_POLICY)?;
        let dir = lab.path("solo");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("resolv.conf");
        let backup = dir.join("resolv.conf.rustynet-backup");
        let original = format!(
            "# the lab's original resolver file\nsearch corp.example\nnameserver {DNS_IP}\noptions edns0 timeout:2\n"
        );
        std::fs::write(&path, &original)?;
        let key = c.preauth("solo", &[])?;
        c.start_daemon("solo")?;
        let up = |c: &Cluster<'_>| -> anyhow::Result<()> {
            let args = up_args(c, &key, "solo");
            c.rustynet("solo", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
            wait_peers(c, "solo", &[]).map(|_| ())
        };
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        let ours = is_takeover;
        let resolves = |c: &Cluster<'_>| {
            dig_until(
                &lab.node("solo").ns,
                MAGIC,
                &fqdn("solo"),
                "A",
                SETTLE,
                |d| d.status.as_deref() == Some("NOERROR") && !d.answers.is_empty(),
            )
            .0 && c.node("solo").is_some()
        };

        up(&c)?;
        ensure!(ours(&read(&path)), "not taken over: {}", read(&path));
        ensure!(
            read(&backup) == original,
            "backup differs from the original"
        );
        ensure!(resolves(&c), "Magic DNS does not answer");
        c.rustynet("solo", &["down"])?;
        let after_down = read(&path);
        ensure!(after_down == original, "after down: {after_down:?}");
        ensure!(!backup.exists(), "backup left after down");

        // Crash: the takeover stays behind until the daemon starts again.
        up(&c)?;
        ensure!(ours(&read(&path)), "not taken over again");
        c.kill_daemon("solo");
        let stale = read(&path);
        ensure!(
            ours(&stale) && read(&backup) == original,
            "crash left: {stale:?}"
        );
        c.start_daemon("solo")?;
        wait_peers(&c, "solo", &[])?;
        let log = c.log("solo");
        let checked = log_lines_with(&log, "resolver configuration checked");
        let restored = log_lines_with(&log, "Restored");
        let restoring = log_lines_with(&log, "restoring last-known-safe generation");
        let tunnel = log_lines_with(&log, "tunnel interface up");
        ensure!(
            !checked.is_empty() && restored.first() == checked.first(),
            "no stale-takeover repair in the log:\n{}",
            rustynet_lab::cluster::tail(&log, 20)
        );
        ensure!(
            restoring.first().is_some_and(|r| checked[0] < *r)
                && tunnel.first().is_some_and(|t| checked[0] < *t),
            "the repair must come first (lines: check {checked:?}, restore {restoring:?}, tunnel {tunnel:?})"
        );
        ensure!(ours(&read(&path)), "not taken over after the restart");
        ensure!(
            read(&backup) == original,
            "the backup must be the original, not our own file: {:?}",
            read(&backup)
        );
        ensure!(resolves(&c), "Magic DNS does not answer after the restart");
        c.rustynet("solo", &["down"])?;
        ensure!(
            read(&path) == original,
            "after crash + down: {:?}",
            read(&path)
        );

        // Crash, then the network manager rewrites the file before the
        // daemon comes back: its file wins, and becomes the new original.
        up(&c)?;
        c.kill_daemon("solo");
        let dhcp = "# written by the DHCP client after the crash\nnameserver 203.0.113.53\nsearch dhcp.example\n";
        std::fs::write(&path, dhcp)?;
        c.start_daemon("solo")?;
        wait_peers(&c, "solo", &[])?;
        let discarded = log_lines_with(&c.log("solo"), "DiscardedStaleBackup");
        ensure!(
            ours(&read(&path)) && read(&backup) == dhcp,
            "after the DHCP rewrite: {:?} / {:?}",
            read(&path),
            read(&backup)
        );
        c.rustynet("solo", &["down"])?;
        ensure!(read(&path) == dhcp, "after down: {:?}", read(&path));
        ensure!(!discarded.is_empty(), "no DiscardedStaleBackup in the log");
        ev.set("original", original);
        ev.set("after_down_equal", true);
        ev.set("stale_takeover_after_sigkill", stale.lines().next());
        ev.set(
            "repair_log_line",
            checked.first().and_then(|i| log.lines().nth(*i)),
        );
        ev.set("dhcp_rewrite_kept", true);
        Ok(())
    });
}

#[test]
fn malformed_query_flood_leaves_resolver_up() {
    run_case(E2E, "dns_malformed_flood", |ev| {
        let lab = lab(&["solo"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(SOLO_POLICY)?;
        enroll_as(&mut c, "solo", "solo", &[], "solo", &[])?;
        let ip = own_ip(&wait_peers(&c, "solo", &[])?)?;
        let ns = &lab.node("solo").ns;
        let (ok, first) = dig_until(ns, MAGIC, &fqdn("solo"), "A", SETTLE, |d| d.is_a(&[ip]));
        ensure!(ok, "no answer before the flood: {first:?}");
        let pid = daemon_pid(&c.node("solo").unwrap().state_dir)?;
        // Let start-up allocations settle before the baseline.
        std::thread::sleep(Duration::from_secs(2));
        let rss_before = vm_rss_kib(pid)?;
        let (report, peak, samples) = flood(&c, &lab, "solo", pid, 15)?;
        ensure!(
            alive(pid),
            "the daemon died under the flood\n{}",
            diag(&c, "solo")
        );
        let s = c.status("solo")?;
        let (answered, good) = dig_until(ns, MAGIC, &fqdn("solo"), "A", SETTLE, |d| d.is_a(&[ip]));
        let outside = dig(ns, MAGIC, &unique("after-flood", &lab), "A", &[]);
        let tcp = dig(ns, MAGIC, &fqdn("solo"), "A", &["+tcp"]);
        std::thread::sleep(Duration::from_secs(2));
        let rss_after = vm_rss_kib(pid)?;
        let panicked = c.log("solo").contains("panicked");
        ev.set("flood", &report);
        ev.set(
            "udp_rate_per_sec",
            (report.udp_sent as f64 / report.seconds).round(),
        );
        ev.set(
            "rss_kib",
            json!({"before": rss_before, "peak": peak, "after": rss_after, "samples": samples}),
        );
        ev.set("good_query_after", &good);
        ev.set("good_query_after_tcp", &tcp);
        ev.set("forwarded_query_after", &outside);
        ev.set("daemon_pid_unchanged", alive(pid));
        ensure!(
            report.udp_sent >= 20_000 && report.tcp_64k_messages >= 5,
            "the flood was too small to mean anything: {report:?}"
        );
        ensure!(
            answered && tcp.is_a(&[ip]),
            "no good answer after the flood: {good:?} / {tcp:?}"
        );
        ensure!(
            outside.is_a(&[OUTSIDE_ANSWER]),
            "forwarding broken after the flood: {outside:?}"
        );
        ensure!(
            matches!(s.state, DataplaneState::DataplaneApplied),
            "state after the flood: {:?}",
            s.state
        );
        ensure!(!panicked, "the daemon log shows a panic");
        // Bounded: the resolver's buffers and connection/in-flight limits
        // cap what a flood can cost, well under the 120 MB idle budget.
        ensure!(
            peak <= rss_before + 24 * 1024
                && rss_after <= rss_before + 16 * 1024
                && peak <= 120 * 1024,
            "memory grew under the flood: before {rss_before} KiB, peak {peak} KiB, after {rss_after} KiB"
        );
        Ok(())
    });
}
