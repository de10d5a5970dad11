//! Root-only end-to-end test of issue 10 item 4: protection before the
//! daemon runs, and a failed start that keeps the host blocked.
//!
//! alice selects an exit (protected mode). The daemon keeps the blocking
//! ruleset in `<state>/protect.nft.json`. alice's daemon is killed and her
//! `inet rustynet` table deleted (as after a reboot): the internet is open.
//! Then a start that fails (its socket cannot be created) still installs
//! the blocking ruleset first: the internet is closed. `rustynetd --cleanup` (ExecStopPost) keeps it. The same
//! file loaded with `nft -j -f` (what `rustynet-protect.service` runs at
//! boot) blocks a fresh namespace too. After `rustynet down`, the file is
//! gone and `--cleanup` removes the table.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_early_boot`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exit_support;

use anyhow::ensure;
use exit_support::*;
use rustynet_lab::topology::{CONTROL_IP, ECHO_IP};
use rustynet_lab::{Cluster, Lab, NodeSpec};

fn table_present(ns: &rustynet_lab::Netns) -> bool {
    ns.succeeds(&["nft", "list", "table", "inet", "rustynet"])
}

#[test]
fn failed_start_in_protected_mode_keeps_the_host_blocked() {
    require_tools(&[]);
    let lab = Lab::new(&[NodeSpec::new("alice"), NodeSpec::with_lan("exit")]).unwrap();
    let mut c = Cluster::start(&lab, "10m").unwrap();
    let result = case("leak", "early_boot_failed_start_blocks", |ev| {
        enroll(&mut c, &["exit", "alice"])?;
        wait_peers(&c, "alice", &["exit"])?;
        select_exit(&c, "alice", "exit")?;
        let node = c.node("alice").unwrap();
        let (state_dir, daemon) = (node.state_dir.clone(), c.bins.daemon.clone());
        let protect = state_dir.join("protect.nft.json");
        ensure!(
            protect.is_file(),
            "protected mode must persist the blocking ruleset"
        );
        let ns = &lab.node("alice").ns;
        c.kill_daemon("alice");
        ns.exec(&["nft", "delete", "table", "inet", "rustynet"])?;
        let open = tcp(&c, ns, &echo4());
        ensure!(
            open.ok,
            "positive control: without the table the internet is open: {open:?}"
        );

        // A start that fails after the first step: its socket cannot be made.
        let out = ns
            .command(&daemon)
            .args(["--state-dir"])
            .arg(&state_dir)
            .args(["--socket", "/dev/null/rustynetd.sock", "--tun", "rn0"])
            .args(["--ipc-group", "nogroup", "--admin-group", "root"])
            .output()?;
        ensure!(!out.status.success(), "the start was meant to fail");
        ensure!(table_present(ns), "failed start left no blocking table");
        let blocked = tcp_quick(&c, ns, &echo4(), 1500);
        ensure!(
            !blocked.ok,
            "failed start in protected mode left the internet open: {blocked:?}"
        );
        let control = c.probe(ns, "tcp", &format!("{CONTROL_IP}:8443"));
        // Recorded, not required: whether an unmarked process may reach
        // control under the kill switch is the firewall plan's decision.
        ev.set("control_reachable_while_blocked", control.ok);

        // ExecStopPost: --cleanup keeps the blocking ruleset while armed.
        let cleanup = ns
            .command(&daemon)
            .args(["--cleanup", "--state-dir"])
            .arg(&state_dir)
            .args(["--tun", "rn0", "--resolv-conf"])
            .arg(&c.node("alice").unwrap().resolv_conf)
            .output()?;
        ensure!(
            cleanup.status.success(),
            "cleanup: {}",
            String::from_utf8_lossy(&cleanup.stderr)
        );
        ensure!(
            table_present(ns),
            "--cleanup removed the blocking table in protected mode"
        );

        // Early boot: the unit's command on a fresh namespace.
        let fresh = rustynet_lab::Netns::create(&format!("rn{}-boot", lab.id))?;
        let loaded = fresh
            .command("nft")
            .args(["-j", "-f"])
            .arg(&protect)
            .output()?;
        ensure!(
            loaded.status.success(),
            "nft -j -f: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let policy = fresh.stdout(&["nft", "list", "chain", "inet", "rustynet", "output"])?;
        ensure!(
            policy.contains("policy drop"),
            "boot ruleset must drop output: {policy}"
        );
        ensure!(
            !policy.contains(&ECHO_IP.to_string()),
            "no exception for the internet"
        );
        drop(fresh);

        // Normal start again, then down: file gone, cleanup removes the table.
        c.start_daemon("alice")?;
        c.rustynet("alice", &["down"])?;
        ensure!(!protect.exists(), "down must disarm the early-boot ruleset");
        c.stop_daemon("alice");
        ns.exec(&["nft", "add", "table", "inet", "rustynet"])?;
        let cleanup = ns
            .command(&daemon)
            .args(["--cleanup", "--state-dir"])
            .arg(&state_dir)
            .args(["--tun", "rn0", "--resolv-conf"])
            .arg(&c.node("alice").unwrap().resolv_conf)
            .output()?;
        ensure!(
            cleanup.status.success(),
            "cleanup: {}",
            String::from_utf8_lossy(&cleanup.stderr)
        );
        ensure!(
            !table_present(ns),
            "--cleanup must remove the table when not protected"
        );
        ev.set("blocked_after_failed_start", true);
        Ok(())
    });
    must(result, || c.diagnose("alice"));
}
