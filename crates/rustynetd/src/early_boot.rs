//! Protection before the daemon runs (issue 10 item 4), like Mullvad's
//! "block when disconnected".
//!
//! While protected mode is wanted (an exit node selected, or the state
//! failed its integrity check), the daemon keeps the restricted ruleset of
//! that mode — everything blocked but its own control connection — in
//! `<state_dir>/protect.nft.json`, as a self-contained `nft -j -f` batch;
//! the file is removed when protected mode is no longer wanted. Two things
//! load it:
//!
//! - the `rustynet-protect.service` unit, ordered before
//!   `network-pre.target`, so no interface comes up unprotected at boot;
//! - `rustynetd` itself, first thing at start — before the state directory,
//!   key file, socket or prerequisites can fail — so a start that fails
//!   leaves the host blocked, not open.
//!
//! `rustynetd --cleanup` (the unit's `ExecStopPost=`) keeps the firewall
//! while the file exists, for the same reason.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustynet_netos::{Ruleset, render_ruleset};

/// File name under the state directory.
pub const FILE: &str = "protect.nft.json";

/// The persisted ruleset's path.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Keeps the persisted ruleset in step with the wanted mode: `ruleset` is
/// only built (and written) when `protected`.
pub fn sync(
    state_dir: &Path,
    protected: bool,
    ruleset: impl FnOnce() -> Ruleset,
) -> io::Result<()> {
    let file = path(state_dir);
    if !protected {
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let batch = render_ruleset(&ruleset()).map_err(io::Error::other)?;
    let text = serde_json::to_vec(&batch).map_err(io::Error::other)?;
    if std::fs::read(&file).is_ok_and(|old| old == text) {
        return Ok(());
    }
    rustynet_netos::write_atomic(&file, &text, 0o600)
}

/// Whether protected mode was last wanted.
pub fn is_armed(state_dir: &Path) -> bool {
    path(state_dir).is_file()
}

/// Loads the persisted ruleset when there is one (`nft -j -f FILE`, the
/// same command the early-boot unit runs). Returns whether it was loaded.
pub fn install_persisted(state_dir: &Path) -> io::Result<bool> {
    let file = path(state_dir);
    if !file.is_file() {
        return Ok(false);
    }
    let out = Command::new("nft")
        .arg("-j")
        .arg("-f")
        .arg(&file)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft -j -f {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::plan::{self, LocalContext};

    fn ctx() -> LocalContext {
        LocalContext {
            tun: "rn0".into(),
            fwmark: 0x524e,
            dns_mark: 0x5244,
            table: 52,
            rule_priority: 5200,
            system_resolvers: vec![],
            on_link: vec![],
        }
    }

    #[test]
    fn written_while_protected_removed_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let ruleset = || plan::fail_closed(&ctx(), true, false, "rustynet.internal").firewall;
        sync(dir.path(), true, ruleset).unwrap();
        assert!(is_armed(dir.path()));
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        let batch: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(batch["nftables"].is_array(), "{text}");
        // The daemon's marked sockets (tunnel transport, control, relays)
        // stay allowed; nothing is allowed by address.
        assert!(
            text.contains(&0x524e_u32.to_string()),
            "the daemon's bypass mark stays allowed"
        );
        sync(dir.path(), true, ruleset).unwrap();
        sync(dir.path(), false, unreachable_ruleset).unwrap();
        assert!(!is_armed(dir.path()));
        sync(dir.path(), false, unreachable_ruleset).unwrap();
        assert!(!install_persisted(dir.path()).unwrap());
    }

    fn unreachable_ruleset() -> Ruleset {
        panic!("the ruleset is only built when protected")
    }
}
