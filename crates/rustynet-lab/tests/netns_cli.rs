//! Root-only end-to-end test of the CLI habits of issue 11 against real
//! daemons and a real control server: `up --wait`, `ip`, `whois`, a bare
//! `up` that reconnects, and the reported bug — after an administrator
//! expired a node, `rustynet up --auth-key NEW` answered "up" (exit 0),
//! ignored the key and left the node failing closed, `down`+`up` alike.
//! Now a bare `up` on the refused node fails with `wrong_state`, and `up
//! --auth-key NEW` (with the saved control server and CA) enrolls it anew
//! and the mesh works again; `logout` forgets the enrollment.
//!
//! Run as root: `cargo test -p rustynet-lab --test netns_cli`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod dns_support;

use std::process::Output;

use anyhow::{anyhow, ensure};
use dns_support::*;
use rustynet_lab::Cluster;
use rustynet_lab::cluster::wait_for;
use rustynet_proto::ipc::DataplaneState;
use serde_json::Value;

/// The snake_case code and message of a failed `--json` command (one JSON
/// object on stderr).
fn error_code(out: &Output) -> anyhow::Result<(String, String)> {
    ensure!(!out.status.success(), "the command succeeded");
    let v: Value = serde_json::from_slice(&out.stderr).map_err(|e| {
        anyhow!(
            "no JSON error object ({e}): stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

#[test]
fn expired_node_reenrolls_with_a_new_key_and_cli_habits_hold() {
    run_case(E2E, "cli_expired_node_reenrolls", |ev| {
        let lab = lab(&["alice", "bob"])?;
        let mut c = Cluster::start(&lab, MAP_TTL)?;
        c.set_policy(EVERYONE_POLICY)?;
        enroll_as(&mut c, "bob", "bob", &[], "bob", &[])?;
        let key = c.preauth("alice", &[])?;
        c.start_daemon("alice")?;
        // `--wait` returns only once the dataplane is applied.
        let out = c.up("alice", &key, &["--wait", "--timeout", "60s"])?;
        ensure!(
            out.contains("connected: dataplane_applied"),
            "up --wait: {out}"
        );
        let first = wait_peers(&c, "alice", &["bob"])?;
        let old_id = first.self_node.as_ref().map(|s| s.node_id);
        let alice_ip = own_ip(&first)?.to_string();
        let bob_ip = first.peers[0].tunnel_ip.to_string();

        // `ip` and `whois` answer from the map.
        let ip_self = c.rustynet("alice", &["ip"])?;
        let ip_bob = c.rustynet("alice", &["ip", &fqdn("bob")])?;
        ensure!(ip_self.trim() == alice_ip, "ip: {ip_self}");
        ensure!(ip_bob.trim() == bob_ip, "ip bob: {ip_bob}");
        let who: Value =
            serde_json::from_str(&c.rustynet("alice", &["--json", "whois", &bob_ip])?)?;
        ensure!(
            who["name"] == "bob" && who["dns_name"] == fqdn("bob").as_str(),
            "whois: {who}"
        );
        let nobody = c.cli("alice", &["--json", "whois", "100.64.255.254"])?;
        ensure!(
            error_code(&nobody)?.0 == "not_found",
            "whois of an unused address: {nobody:?}"
        );

        // A bare `up` reconnects with the saved control server and CA.
        let bare = c.rustynet("alice", &["up", "--wait", "--timeout", "60s"])?;
        ensure!(bare.contains("dataplane_applied"), "bare up: {bare}");

        // The administrator expires alice; a control restart makes every
        // node reconnect, and control refuses alice.
        c.admin(&["nodes", "expire", "alice"])?;
        c.restart_control(MAP_TTL)?;
        let refused = c.wait_status("alice", SETTLE, |s| {
            s.state == DataplaneState::FailClosed
                && s.error.as_deref().is_some_and(|e| e.contains("refused"))
        })?;
        // Every transition so far is in alice's hash-chained audit log,
        // the fail-closed one last, and the chain verifies (issue 11).
        let audit = c
            .node("alice")
            .map(|n| n.state_dir.join("audit.log"))
            .ok_or_else(|| anyhow!("no alice"))?;
        let verified = std::process::Command::new(&c.bins.daemon)
            .args(["audit", "verify", "--file"])
            .arg(&audit)
            .output()?;
        ensure!(
            verified.status.success(),
            "audit verify: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let log = std::fs::read_to_string(&audit)?;
        ensure!(
            log.contains("\"to_state\":\"dataplane_applied\"")
                && log
                    .lines()
                    .last()
                    .is_some_and(|l| l.contains("\"to_state\":\"fail_closed\"")),
            "audit log lacks the transitions:\n{log}"
        );
        // A bare `up` no longer answers "up": it says what to do, before
        // and after `down`.
        let (code, message) = error_code(&c.cli("alice", &["--json", "up"])?)?;
        ensure!(
            code == "wrong_state" && message.contains("--auth-key"),
            "bare up on the refused node: {code} {message}"
        );
        c.rustynet("alice", &["down"])?;
        let (code_after_down, _) = error_code(&c.cli("alice", &["--json", "up"])?)?;
        ensure!(
            code_after_down == "wrong_state",
            "bare up after down: {code_after_down}"
        );

        // A new key, with the saved control server and CA: enrolled anew.
        let new_key = c.preauth("alice", &[])?;
        let again = c.rustynet(
            "alice",
            &[
                "up",
                "--auth-key",
                &new_key,
                "--hostname",
                "alice",
                "--wait",
                "--timeout",
                "90s",
            ],
        )?;
        let back = wait_peers(&c, "alice", &["bob"])?;
        let new_id = back.self_node.as_ref().map(|s| s.node_id);
        ensure!(
            new_id.is_some() && new_id != old_id,
            "still the expired node: {old_id:?} -> {new_id:?}"
        );
        let new_ip = own_ip(&back)?;
        let alice_ns = &lab.node("alice").ns;
        let reached = wait_for(SETTLE, || {
            alice_ns
                .succeeds(&["ping", "-c", "1", "-W", "2", &bob_ip])
                .then_some(())
        });
        ensure!(
            reached.is_some(),
            "re-enrolled alice cannot reach bob\n{}",
            c.diagnose("alice")
        );
        c.wait_status("bob", SETTLE, |s| {
            s.peers.iter().any(|p| p.tunnel_ip == new_ip)
        })?;

        // `logout`: down and forget; the next bare `up` needs a key.
        c.rustynet("alice", &["logout"])?;
        let gone = c.status("alice")?;
        ensure!(gone.self_node.is_none(), "still enrolled: {gone:?}");
        let (code_out, message_out) = error_code(&c.cli("alice", &["--json", "up"])?)?;
        ensure!(
            code_out == "invalid_argument" && message_out.contains("not enrolled"),
            "bare up after logout: {code_out} {message_out}"
        );
        ev.set("refused_error", refused.error.unwrap_or_default());
        ev.set("bare_up_on_refused_node", &message);
        ev.set("reenrolled", again.trim());
        ev.set("old_and_new_node", format!("{old_id:?} -> {new_id:?}"));
        Ok(())
    });
}
