//! Root-only: the nftables firewall applied for real in private network
//! namespaces — atomic replacement, rejection leaves the old table, the
//! table outlives its process, and a kill switch really blocks traffic.
#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{
    NamedNetns, in_netns, representative_ruleset, require_root_and_tools, run, succeeds, unique,
};
use rustynet_netos::{
    BaseChain, Chain, ChainKind, Firewall, FirewallError, FirewallRule, Hook, Match, NftFirewall,
    Policy, Ruleset, Verdict,
};

const TUNNEL_MARK: u32 = 0xca6c;

/// A kill switch: output policy drop; loopback and marked packets pass;
/// everything else is counted and dropped.
fn kill_switch(table: &str) -> Ruleset {
    Ruleset {
        table: table.to_owned(),
        chains: vec![Chain {
            name: "out".into(),
            base: Some(BaseChain {
                kind: ChainKind::Filter,
                hook: Hook::Output,
                priority: 0,
                policy: Policy::Drop,
            }),
            rules: vec![
                FirewallRule::new(
                    vec![Match::Oifname {
                        name: "lo".into(),
                        negate: false,
                    }],
                    Verdict::Accept,
                ),
                FirewallRule::new(
                    vec![Match::Mark {
                        value: TUNNEL_MARK,
                        mask: None,
                        negate: false,
                    }],
                    Verdict::Accept,
                )
                .with_comment("tunnel transport"),
                FirewallRule::new(vec![], Verdict::Drop)
                    .counted()
                    .with_comment("kill switch"),
            ],
        }],
    }
}

/// A different ruleset (other chain names) to prove replacement.
fn other_ruleset(table: &str) -> Ruleset {
    Ruleset {
        table: table.to_owned(),
        chains: vec![Chain {
            name: "in_v2".into(),
            base: Some(BaseChain {
                kind: ChainKind::Filter,
                hook: Hook::Input,
                priority: 10,
                policy: Policy::Accept,
            }),
            rules: vec![
                FirewallRule::new(
                    vec![Match::Iifname {
                        name: "rn0".into(),
                        negate: false,
                    }],
                    Verdict::Drop,
                )
                .with_comment("generation two"),
            ],
        }],
    }
}

fn chain_names(json: &serde_json::Value) -> Vec<String> {
    json["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| {
            o.get("chain")
                .and_then(|c| c["name"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

fn rule_count(json: &serde_json::Value) -> usize {
    json["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter(|o| o.get("rule").is_some())
        .count()
}

#[test]
fn apply_replace_check_and_remove() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        run(
            "nft",
            &[
                "add table inet foreign; add chain inet foreign keep { type filter hook input priority 5; }",
            ],
        );
        let table = unique("rnfw");
        let mut fw = NftFirewall::new(&table).expect("valid table name");
        assert_eq!(fw.current().expect("list"), None);

        fw.check(&kill_switch(&table))
            .expect("kernel accepts the kill switch");
        assert_eq!(fw.current().expect("list"), None, "check must not commit");

        fw.apply(&kill_switch(&table)).expect("apply v1");
        let v1 = fw.current().expect("list").expect("table exists");
        assert_eq!(chain_names(&v1), ["out"]);
        assert_eq!(rule_count(&v1), 3);
        assert!(run("nft", &["list", "table", "inet", &table]).contains("comment \"kill switch\""));

        fw.apply(&other_ruleset(&table)).expect("apply v2");
        let v2 = fw.current().expect("list").expect("table exists");
        assert_eq!(
            chain_names(&v2),
            ["in_v2"],
            "nothing of v1 may survive the replacement"
        );
        fw.apply(&other_ruleset(&table)).expect("apply v2 again");
        assert_eq!(
            chain_names(&fw.current().expect("list").expect("exists")),
            ["in_v2"]
        );

        fw.remove().expect("remove");
        assert_eq!(fw.current().expect("list"), None);
        fw.remove().expect("remove is idempotent");
        let foreign = run("nft", &["list", "chain", "inet", "foreign", "keep"]);
        assert!(
            foreign.contains("type filter hook input priority filter + 5"),
            "foreign table kept: {foreign}"
        );
    });
}

#[test]
fn representative_ruleset_is_accepted_by_the_kernel() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        let table = unique("rnrep");
        let ruleset = representative_ruleset(&table);
        let mut fw = NftFirewall::new(&table).expect("valid");
        fw.apply(&ruleset)
            .expect("kernel accepts the representative ruleset");
        let live = fw.current().expect("list").expect("exists");
        let expected: Vec<String> = ruleset.chains.iter().map(|c| c.name.clone()).collect();
        assert_eq!(chain_names(&live), expected);
        assert_eq!(
            rule_count(&live),
            ruleset.chains.iter().map(|c| c.rules.len()).sum::<usize>()
        );
        fw.remove().expect("remove");
    });
}

#[test]
fn kernel_rejection_mid_batch_leaves_previous_table_intact() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        let table = unique("rnbad");
        let mut fw = NftFirewall::new(&table).expect("valid");
        fw.apply(&kill_switch(&table)).expect("apply good");
        let before = fw.current().expect("list").expect("exists");

        // Valid for our validator and for nft's parser, refused by the
        // kernel: masquerade outside a nat chain. The batch has already
        // deleted the table when the kernel reaches this rule.
        let mut broken = kill_switch(&table);
        broken.chains[0]
            .rules
            .insert(1, FirewallRule::new(vec![], Verdict::Masquerade));
        let err = fw.apply(&broken).expect_err("kernel must refuse");
        match &err {
            FirewallError::NftFailed { stderr, .. } => {
                assert!(
                    stderr.contains("Operation not supported"),
                    "expected a kernel refusal: {stderr}"
                )
            }
            other => panic!("expected NftFailed, got {other:?}"),
        }
        assert!(fw.check(&broken).is_err(), "check reports the same refusal");
        let after = fw
            .current()
            .expect("list")
            .expect("previous table still there");
        assert_eq!(
            after, before,
            "a refused batch must leave the previous table byte-for-byte"
        );
        fw.remove().expect("remove");
    });
}

#[test]
fn replacement_never_leaves_a_moment_without_the_table() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        let table = unique("rnatm");
        let mut fw = NftFirewall::new(&table).expect("valid");
        fw.apply(&kill_switch(&table)).expect("apply");
        let stop = Arc::new(AtomicBool::new(false));
        let (lists, gaps) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // Threads started here share this namespace.
        let watcher = {
            let (stop, lists, gaps, table) =
                (stop.clone(), lists.clone(), gaps.clone(), table.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = Command::new("nft")
                        .args(["list", "table", "inet", &table])
                        .output()
                        .expect("nft");
                    lists.fetch_add(1, Ordering::Relaxed);
                    let text = String::from_utf8_lossy(&out.stdout);
                    if !out.status.success() || !text.contains("policy drop") {
                        gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let mut alt = kill_switch(&table);
        alt.chains[0]
            .rules
            .insert(0, FirewallRule::new(vec![], Verdict::Continue).counted());
        let base = kill_switch(&table);
        for i in 0..40 {
            fw.apply(if i % 2 == 0 { &alt } else { &base })
                .expect("apply");
        }
        // Let the watcher observe at least a few listings on a slow machine.
        while lists.load(Ordering::Relaxed) < 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("watcher");
        assert_eq!(
            gaps.load(Ordering::Relaxed),
            0,
            "{} listings saw no table",
            gaps.load(Ordering::Relaxed)
        );
        fw.remove().expect("remove");
    });
}

/// Run only as a child process of `table_survives_the_applying_process`.
#[test]
#[ignore = "helper: spawned as a child process by table_survives_the_applying_process"]
fn child_apply_and_exit() {
    // Run by hand (or with --include-ignored) it has nothing to do.
    let Ok(table) = std::env::var("RUSTYNET_NETOS_CHILD_TABLE") else {
        return;
    };
    NftFirewall::new(&table)
        .expect("valid")
        .apply(&kill_switch(&table))
        .expect("child applies");
}

#[test]
fn table_survives_the_applying_process() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        let table = unique("rnsurv");
        // A child spawned from this thread lives in this namespace.
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "child_apply_and_exit",
                "--test-threads=1",
            ])
            .env("RUSTYNET_NETOS_CHILD_TABLE", &table)
            .output()
            .expect("spawn child");
        assert!(
            child.status.success(),
            "child failed: {}\n{}{}",
            child.status,
            String::from_utf8_lossy(&child.stdout),
            String::from_utf8_lossy(&child.stderr)
        );
        // The child has exited (status collected); its table is still in force.
        let mut fw = NftFirewall::new(&table).expect("valid");
        let live = fw
            .current()
            .expect("list")
            .expect("table outlives the process that applied it");
        assert_eq!(chain_names(&live), ["out"]);
        fw.remove().expect("remove");
    });
}

fn set_mark(sock: &UdpSocket, mark: u32) {
    // SAFETY: valid socket fd, valid u32 option value and length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_MARK: {}", std::io::Error::last_os_error());
}

/// Positive expectations may retry (a loaded machine can lose a first
/// packet to neighbour resolution); negative ones use [`delivered`] once.
fn eventually_delivered(sock: &UdpSocket, rx: &mpsc::Receiver<Vec<u8>>, payload: &[u8]) -> bool {
    (0..5).any(|_| delivered(sock, rx, payload))
}

/// Sends `payload` and reports whether the peer received it.
fn delivered(sock: &UdpSocket, rx: &mpsc::Receiver<Vec<u8>>, payload: &[u8]) -> bool {
    while rx.try_recv().is_ok() {}
    if sock.send_to(payload, "10.201.0.2:40000").is_err() {
        return false; // EPERM: dropped on output
    }
    matches!(rx.recv_timeout(Duration::from_secs(3)), Ok(got) if got == payload)
}

fn ping_ok() -> bool {
    succeeds("ping", &["-c", "1", "-W", "2", "10.201.0.2"])
}

#[test]
fn kill_switch_blocks_egress_and_removal_restores_it() {
    require_root_and_tools(&["nft", "ip", "ping"]);
    let peer = NamedNetns::new("rnks");
    let peer_name = peer.name.clone();
    in_netns(move || {
        let (va, vb) = (unique("rka"), unique("rkb"));
        run(
            "ip",
            &[
                "link", "add", &va, "type", "veth", "peer", "name", &vb, "netns", &peer_name,
            ],
        );
        run("ip", &["addr", "add", "10.201.0.1/24", "dev", &va]);
        run("ip", &["link", "set", &va, "up"]);
        run(
            "ip",
            &["-n", &peer_name, "addr", "add", "10.201.0.2/24", "dev", &vb],
        );
        run("ip", &["-n", &peer_name, "link", "set", &vb, "up"]);
        run("ip", &["-n", &peer_name, "link", "set", "lo", "up"]);

        // A UDP receiver in the peer namespace, for as long as this test runs.
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let (stop, name) = (stop.clone(), peer_name.clone());
            std::thread::spawn(move || {
                common::enter_netns(&name);
                let sock = UdpSocket::bind("10.201.0.2:40000").expect("bind in peer namespace");
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let _ = tx.send(b"ready".to_vec());
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = sock.recv_from(&mut buf) {
                        let _ = tx.send(buf[..n].to_vec());
                    }
                }
            })
        };

        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30))
                .expect("receiver ready"),
            b"ready"
        );
        let plain = UdpSocket::bind("10.201.0.1:0").expect("bind");
        let marked = UdpSocket::bind("10.201.0.1:0").expect("bind");
        set_mark(&marked, TUNNEL_MARK);

        // Carrier comes up asynchronously; give it time on a busy machine.
        assert!(
            (0..10).any(|_| ping_ok()),
            "no connectivity before the kill switch"
        );
        assert!(
            eventually_delivered(&plain, &rx, b"before"),
            "UDP did not work before the kill switch"
        );

        let table = unique("rnks");
        let mut fw = NftFirewall::new(&table).expect("valid");
        fw.apply(&kill_switch(&table)).expect("apply kill switch");
        assert!(!ping_ok(), "ping must be blocked by the kill switch");
        assert!(
            !delivered(&plain, &rx, b"blocked"),
            "unmarked UDP must be blocked"
        );
        assert!(
            eventually_delivered(&marked, &rx, b"tunnel"),
            "marked (tunnel) UDP must still pass"
        );
        let listing = run("nft", &["list", "chain", "inet", &table, "out"]);
        assert!(
            !listing.contains("counter packets 0 "),
            "drop counter must have counted: {listing}"
        );

        fw.remove().expect("remove kill switch");
        assert!(
            (0..5).any(|_| ping_ok()),
            "ping must work again after removal"
        );
        assert!(
            eventually_delivered(&plain, &rx, b"after"),
            "UDP must work again after removal"
        );

        stop.store(true, Ordering::Relaxed);
        receiver.join().expect("receiver");
    });
    drop(peer);
}
