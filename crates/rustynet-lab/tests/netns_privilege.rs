//! Root-only end-to-end test of issue 10 item 14: `rustynetd` as a
//! dedicated, unprivileged user holding only CAP_NET_ADMIN, CAP_NET_RAW and
//! CAP_NET_BIND_SERVICE as ambient capabilities (what the systemd unit
//! gives it) enrolls, applies its map (TUN, routes, nftables through its
//! `nft` child, Magic DNS on port 53) and reaches its peer; it runs with
//! `no_new_privs` and nothing else, and its IPC socket is born 0660 with
//! the IPC group.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_privilege`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use anyhow::ensure;
use dns_support::*;
use rustynet_lab::Cluster;

const POLICY: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
/// nobody:nogroup.
const NOBODY: (u32, u32) = (65534, 65534);

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn unprivileged_user_with_ambient_caps_runs_the_dataplane() {
    run_case(E2E, "privilege_dedicated_user", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(POLICY)?;
        let key = c.preauth("alice", &[])?;
        c.start_daemon_as_user("alice", NOBODY.0, NOBODY.1)?;
        c.up("alice", &key, &[])?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let s = wait_peers(&c, "alice", &["bob"])?;
        // Bob must have applied alice too: a packet that reaches bob before
        // his routes and firewall are in place is dropped (fail closed), and
        // the single ping below would race that.
        wait_peers(&c, "bob", &["alice"])?;
        let pid = c.daemon_pid("alice").unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let uid = status_field(&status, "Uid:");
        ensure!(
            uid.split_whitespace().all(|u| u == "65534"),
            "daemon must run as the unprivileged user: Uid {uid}"
        );
        // CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
        let want = format!("{:016x}", (1u64 << 10) | (1 << 12) | (1 << 13));
        for set in ["CapEff:", "CapPrm:", "CapAmb:"] {
            ensure!(
                status_field(&status, set) == want,
                "{set} {} (want {want})",
                status_field(&status, set)
            );
        }
        ensure!(
            status_field(&status, "NoNewPrivs:") == "1",
            "no_new_privs not set"
        );
        let socket = &c.node("alice").unwrap().socket;
        let meta = std::fs::metadata(socket)?;
        ensure!(
            meta.permissions().mode() & 0o777 == 0o660,
            "socket mode {:o}",
            meta.permissions().mode()
        );
        ensure!(meta.gid() == NOBODY.1, "socket group {}", meta.gid());
        // The mesh works: Magic DNS (port 53) answers and bob is reachable.
        let ns = &lab.node("alice").ns;
        let bob = s.peers[0].tunnel_ip.to_string();
        let a = dig(ns, MAGIC, &fqdn("bob"), "A", &[]);
        ensure!(a.data("A") == [bob.clone()], "Magic DNS as non-root: {a:?}");
        ensure!(
            ns.succeeds(&["ping", "-c", "1", "-W", "3", &bob]),
            "alice cannot reach bob through the tunnel"
        );
        ev.set("uid", 65534);
        ev.set("caps", &want);
        Ok(())
    });
}
