//! Root-only end-to-end tests of the host DNS modes (issue 11, "DNS on real
//! systems"): the real control server and real `rustynetd`s in network
//! namespaces.
//!
//! 1. A user's first run: `rustynetd` with no flags at all inside
//!    `ip netns exec`, whose `/etc/resolv.conf` is a bind mount (as in
//!    Docker and Kubernetes). It reaches `dataplane_applied`, says it chose
//!    the in-place mode and why, names resolve through the file it wrote in
//!    place (short names too: the search list keeps the original domains),
//!    and SIGTERM puts the original bytes back.
//! 2. A symlinked resolv.conf (another manager's file) is replaced, not
//!    written through, and the link comes back on SIGTERM.
//! 3. NetworkManager managing resolv.conf (its behaviour simulated: NM is
//!    not run here): the mode names it; when "NM" replaces the file on a
//!    network change the daemon takes it over again within a few seconds,
//!    and SIGTERM restores NM's latest file, not the first one.
//! 4. systemd-resolved running (a real resolved on a private system bus,
//!    see `rustynet_lab::resolved` for what is real and what differs):
//!    the daemon chooses the `resolved` mode by itself, the tunnel link gets
//!    100.100.100.100 and `~<suffix>` (plus `~.` only while DNS is
//!    protected) over resolved's D-Bus API, names resolve through
//!    resolved's stub 127.0.0.53, resolv.conf is untouched, and SIGTERM
//!    reverts the link's settings in resolved.
//! 5. A read-only `/etc`: the daemon (defaults, `ip netns exec`) still
//!    reaches `dataplane_applied`, says the host configuration cannot be
//!    changed and why, leaves the file alone, and Magic DNS answers when
//!    asked directly.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_host_dns`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use std::time::Duration;

use anyhow::ensure;
use dns_support::*;
use rustynet_lab::Cluster;
use rustynet_lab::topology::DNS_IP;
use rustynet_proto::ipc::DataplaneState;

const POLICY: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

#[test]
fn defaults_inside_ip_netns_exec_reach_dataplane_applied() {
    run_case(E2E, "host_dns_bind_mount_defaults", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let original = format!(
            "# written by the lab, bind-mounted by ip netns exec\nnameserver {DNS_IP}\nsearch corp.example\noptions edns0\n"
        );
        let key = c.preauth("alice", &[])?;
        c.start_daemon_with_defaults("alice", &original, false)?;
        c.up("alice", &key, &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let status = c.wait_status("alice", SETTLE, |s| {
            s.state == DataplaneState::DataplaneApplied && s.peers.len() == 1
        })?;
        ensure!(
            status.dns_mode.starts_with("in-place:") && status.dns_mode.contains("mount point"),
            "status must say the in-place mode and why: {:?}",
            status.dns_mode
        );
        ev.set("dns_mode", &status.dns_mode);
        let backing = c.node("alice").unwrap().resolv_conf.clone();
        let live = std::fs::read_to_string(&backing)?;
        ensure!(
            live.contains(&format!("nameserver {MAGIC}"))
                && live.contains(&format!("search {SUFFIX} corp.example"))
                && live.contains("options edns0"),
            "the bind-mounted file was not written in place: {live}"
        );
        // The same path seen through a new `ip netns exec` (the bind mount).
        let ns = &lab.node("alice").ns;
        let through_mount = ns.stdout(&["cat", "/etc/resolv.conf"])?;
        ensure!(through_mount == live, "mount and source differ");
        // Names resolve through the system resolver configuration: a full
        // name, and a short one through the search list.
        let bob_ip = status.peers[0].tunnel_ip.to_string();
        let full = ns.stdout(&["dig", "+short", &format!("bob.{SUFFIX}")])?;
        let short = ns.stdout(&["dig", "+short", "+search", "bob"])?;
        ensure!(
            full.trim() == bob_ip && short.trim() == bob_ip,
            "bob must resolve through resolv.conf: full {full:?} short {short:?}, want {bob_ip}"
        );
        let inspect = inspect(&c, "alice", None)?;
        ensure!(inspect.os_config.starts_with("in-place:"), "{inspect:?}");
        c.stop_daemon("alice");
        let after = std::fs::read_to_string(&backing)?;
        ensure!(
            after == original,
            "SIGTERM must put the original bytes back: {after:?}"
        );
        let state_dir = c.node("alice").unwrap().state_dir.clone();
        ensure!(
            !state_dir.join("resolv.conf.rustynet-backup").exists(),
            "backup left behind after a clean stop"
        );
        ev.set("restored_on_sigterm", true);
        Ok(())
    });
}

#[test]
fn symlinked_resolv_conf_is_replaced_and_the_link_comes_back() {
    run_case(E2E, "host_dns_symlink", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        // The lab's own file for alice, made a link to "another manager's" file.
        let dir = lab.path("alice");
        std::fs::create_dir_all(&dir)?;
        let managed = lab.path("alice-manager-resolv.conf");
        let theirs = format!("nameserver {DNS_IP}\nsearch corp.example\n");
        std::fs::write(&managed, &theirs)?;
        std::os::unix::fs::symlink(&managed, dir.join("resolv.conf"))?;
        enroll_as(&mut c, "alice", "alice", &[], "alice", &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let status = wait_peers(&c, "alice", &["bob"])?;
        ensure!(
            status.dns_mode.starts_with("file:") && status.dns_mode.contains("symlink"),
            "{}",
            status.dns_mode
        );
        let link = c.node("alice").unwrap().resolv_conf.clone();
        ensure!(
            std::fs::symlink_metadata(&link)?.is_file(),
            "link not replaced"
        );
        ensure!(
            std::fs::read_to_string(&managed)? == theirs,
            "wrote through the link"
        );
        c.stop_daemon("alice");
        ensure!(std::fs::read_link(&link)? == managed, "link not restored");
        ensure!(std::fs::read_to_string(&managed)? == theirs);
        ev.set("link_restored", true);
        std::thread::sleep(Duration::from_millis(10));
        Ok(())
    });
}

#[test]
fn read_only_etc_is_left_alone_and_said_so() {
    run_case(E2E, "host_dns_read_only_etc", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let original = format!("nameserver {DNS_IP}\nsearch corp.example\n");
        let key = c.preauth("alice", &[])?;
        c.start_daemon_with_defaults("alice", &original, true)?;
        c.up("alice", &key, &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let status = c.wait_status("alice", SETTLE, |s| {
            s.state == DataplaneState::DataplaneApplied && s.peers.len() == 1
        })?;
        ensure!(
            status.dns_mode.starts_with("unavailable:")
                && status.dns_mode.contains("Read-only file system"),
            "status must say the configuration cannot be changed and why: {:?}",
            status.dns_mode
        );
        ev.set("dns_mode", &status.dns_mode);
        let backing = c.node("alice").unwrap().resolv_conf.clone();
        ensure!(
            std::fs::read_to_string(&backing)? == original,
            "read-only file changed"
        );
        let bob_ip = status.peers[0].tunnel_ip;
        let a = dig(&lab.node("alice").ns, MAGIC, &fqdn("bob"), "A", &[]);
        ensure!(
            a.is_a(&[bob_ip]),
            "Magic DNS must still answer when asked: {a:?}"
        );
        c.stop_daemon("alice");
        ensure!(std::fs::read_to_string(&backing)? == original);
        Ok(())
    });
}

/// `resolvectl ARGS` in the daemon's mount namespace (its private bus).
fn resolvectl(c: &Cluster<'_>, node: &str, args: &[&str]) -> anyhow::Result<String> {
    let pid = c
        .daemon_pid(node)
        .ok_or_else(|| anyhow::anyhow!("{node} not running"))?;
    let bins = rustynet_lab::resolved::bins()?;
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-n", "--"])
        .arg(bins.bin_dir.join("resolvectl"))
        .args(args)
        .output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn systemd_resolved_gets_the_tunnel_link() {
    run_case(E2E, "host_dns_systemd_resolved", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let key = c.preauth("alice", &[])?;
        let scratch = c.start_daemon_with_resolved("alice")?;
        c.up("alice", &key, &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let status = c.wait_status("alice", SETTLE, |s| {
            s.state == DataplaneState::DataplaneApplied && s.peers.len() == 1
        })?;
        let resolved_log =
            || std::fs::read_to_string(scratch.join("resolved.log")).unwrap_or_default();
        ensure!(
            status.dns_mode.starts_with("resolved:"),
            "the daemon must choose the resolved mode: {:?}\nresolved log:\n{}",
            status.dns_mode,
            resolved_log()
        );
        ev.set("dns_mode", &status.dns_mode);
        let link = resolvectl(&c, "alice", &["status", "rn0"])?;
        ensure!(
            link.contains(&format!("DNS Servers: {MAGIC}"))
                && link.contains(&format!("~{SUFFIX}"))
                && !link.contains("~."),
            "resolved's view of rn0 (not protected): {link}"
        );
        // Through resolved's stub: resolved routes the suffix to rn0's
        // server, Magic DNS answers.
        let bob_ip = status.peers[0].tunnel_ip;
        let ns = &lab.node("alice").ns;
        let (via_stub, d) = dig_until(ns, "127.0.0.53", &fqdn("bob"), "A", SETTLE, |d| {
            d.is_a(&[bob_ip])
        });
        ensure!(
            via_stub,
            "bob through resolved's stub: {d:?}\n{}",
            resolved_log()
        );
        let backing = c.node("alice").unwrap().resolv_conf.clone();
        ensure!(
            std::fs::read_to_string(&backing)?.contains("nameserver 127.0.0.53"),
            "resolv.conf must stay pointed at resolved"
        );
        // Protected DNS: every name goes to Magic DNS (~.), then back.
        c.rustynet("alice", &["dns", "protect", "on"])?;
        let protected = wait_text(
            || resolvectl(&c, "alice", &["status", "rn0"]),
            |t| t.contains("~."),
        )?;
        ensure!(
            protected.contains("+DefaultRoute"),
            "protected: {protected}"
        );
        c.rustynet("alice", &["dns", "protect", "off"])?;
        wait_text(
            || resolvectl(&c, "alice", &["status", "rn0"]),
            |t| !t.contains("~."),
        )?;
        ev.set("resolved_link_protected", &protected);
        // A clean stop reverts the link in resolved (`resolvectl revert`
        // while the TUN still exists; it goes with the daemon afterwards).
        // resolved logs nothing for a revert; the daemon logs success only
        // when resolvectl succeeded against the live link.
        c.stop_daemon("alice");
        let log = c.log("alice");
        ensure!(
            log.contains("host DNS configuration restored")
                && !log.contains("cannot restore the host DNS configuration"),
            "the daemon must revert rn0 in resolved on SIGTERM:\n{}",
            rustynet_lab::cluster::tail(&log, 20)
        );
        Ok(())
    });
}

fn wait_text(
    mut get: impl FnMut() -> anyhow::Result<String>,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let mut last = String::new();
    for _ in 0..50 {
        last = get()?;
        if pred(&last) {
            return Ok(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("condition not reached; last: {last}")
}

#[test]
fn network_manager_rewrites_are_taken_over_again() {
    run_case(E2E, "host_dns_network_manager", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let dir = lab.path("alice");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("resolv.conf");
        let nm = |ns: &str| {
            format!("# Generated by NetworkManager\nsearch home.example\nnameserver {ns}\n")
        };
        std::fs::write(&file, nm(&DNS_IP.to_string()))?;
        enroll_as(&mut c, "alice", "alice", &[], "alice", &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let status = wait_peers(&c, "alice", &["bob"])?;
        ensure!(
            status.dns_mode.contains("NetworkManager"),
            "{}",
            status.dns_mode
        );
        ensure!(std::fs::read_to_string(&file)?.contains(MAGIC));
        // NetworkManager on a network change: a new file, replaced atomically.
        let newer = nm("198.51.100.99");
        let tmp = dir.join(".resolv.conf.nm-tmp");
        std::fs::write(&tmp, &newer)?;
        std::fs::rename(&tmp, &file)?;
        let mut live = String::new();
        for _ in 0..50 {
            live = std::fs::read_to_string(&file)?;
            if live.contains(MAGIC) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        ensure!(
            live.contains(MAGIC) && live.contains("home.example"),
            "not taken over again: {live}"
        );
        ev.set("taken_over_again", true);
        c.stop_daemon("alice");
        let after = std::fs::read_to_string(&file)?;
        ensure!(
            after == newer,
            "SIGTERM must restore NetworkManager's latest file: {after:?}"
        );
        Ok(())
    });
}
