//! The admin commands as an operator runs them: the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use rustynet_control::datadir::DataDir;

fn control(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
        .args(args)
        .env("RUSTYNET_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = control(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn preauth_keys_expire_by_default_and_can_be_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("control");
    DataDir::new(&root).init("rustynet.internal", &[]).unwrap();
    let d = root.to_str().unwrap();
    let before = rustynet_control::now_unix();
    let key = ok(&["preauth", "create", "--user", "alice", "--data-dir", d]);
    assert!(key.trim().starts_with("rnk_"));
    ok(&[
        "preauth",
        "create",
        "--user",
        "bob",
        "--reusable",
        "--expires",
        "never",
        "--data-dir",
        d,
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["preauth", "list", "--json", "--data-dir", d])).unwrap();
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    // Default: one hour.
    let expires = keys[0]["expires_at"].as_i64().unwrap();
    assert!(
        (before + 3600..=before + 3700).contains(&expires),
        "{expires}"
    );
    assert!(keys[1]["expires_at"].is_null());
    // The key itself is never listed.
    assert!(!list.to_string().contains(key.trim()));
    let id = keys[1]["id"].as_i64().unwrap().to_string();
    ok(&["preauth", "revoke", &id, "--data-dir", d]);
    let table = ok(&["preauth", "list", "--data-dir", d]);
    let bob = table.lines().find(|l| l.contains("bob")).unwrap();
    assert!(bob.contains("revoked"), "{table}");
    let alice = table.lines().find(|l| l.contains("alice")).unwrap();
    assert!(alice.contains("active"), "{table}");
    // Bad input: a clear error and a non-zero exit.
    let out = control(&["preauth", "revoke", "9999", "--data-dir", d]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("9999"));
    let out = control(&[
        "preauth",
        "create",
        "--user",
        "alice",
        "--expires",
        "0s",
        "--data-dir",
        d,
    ]);
    assert!(!out.status.success());
}
