//! `rustynetd audit verify` on a real log: exit status and the line it names.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use rustynetd::audit_log::{AuditLog, FILE_NAME};

fn verify(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rustynetd"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn fill(path: &Path, n: u64) {
    let mut log = AuditLog::new(path);
    for g in 0..n {
        log.append("control_trusted", "dataplane_applied", "applied", g, 100)
            .unwrap();
    }
}

#[test]
fn verify_accepts_an_intact_log_in_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    fill(&dir.path().join(FILE_NAME), 4);
    let state_dir = dir.path().to_str().unwrap();
    let config = dir.path().join("none.toml");
    std::fs::write(&config, "").unwrap();
    let (ok, text) = verify(&[
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state_dir,
        "audit",
        "verify",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("audit log ok: 4 entries (seq 0..=3)"),
        "{text}"
    );
}

#[test]
fn verify_names_the_tampered_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fill(&path, 4);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(1);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (ok, text) = verify(&["audit", "verify", "--file", path.to_str().unwrap()]);
    assert!(!ok, "a broken chain verified: {text}");
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("removed, inserted or reordered"), "{text}");
}

#[test]
fn verify_fails_without_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (ok, text) = verify(&["audit", "verify", "--file", path.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(text.contains("no audit log"), "{text}");
}
