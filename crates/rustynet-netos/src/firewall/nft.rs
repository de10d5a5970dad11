//! [`Firewall`] over the `nft` binary, argv only, JSON on stdin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::render::{render_removal, render_ruleset};
use super::{Firewall, FirewallError, Ruleset};
use crate::validate::validate_nft_name;

/// Where `nft` is looked for. Absolute paths only: the daemon must not run
/// whatever an attacker-controlled `PATH` points at.
const NFT_CANDIDATES: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

/// The real firewall: manages one `table inet <name>` through `nft -j`.
///
/// `nft` runs as a child of the calling thread, so it acts in that thread's
/// network namespace.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    table: String,
    binary: PathBuf,
}

impl NftFirewall {
    /// Manages `table` with the first `nft` found in the standard system
    /// directories.
    pub fn new(table: &str) -> Result<Self, FirewallError> {
        Self::with_binary(table, locate_nft())
    }

    /// Manages `table` with an explicit `nft` binary.
    pub fn with_binary(table: &str, binary: impl Into<PathBuf>) -> Result<Self, FirewallError> {
        validate_nft_name("table name", table)?;
        Ok(Self {
            table: table.to_owned(),
            binary: binary.into(),
        })
    }

    /// The managed table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The `nft` binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&Value>,
    ) -> Result<Vec<u8>, FirewallError> {
        let spawn_err = |source| FirewallError::Spawn {
            path: self.binary.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.binary)
            .args(args)
            .env_clear()
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads its whole input before it prints anything, so
            // writing everything first cannot deadlock on a full pipe.
            if let Err(e) = pipe.write_all(input.to_string().as_bytes()) {
                // Reap the child either way; its stderr explains more than
                // the broken pipe does.
                let out = child.wait_with_output().map_err(spawn_err)?;
                return Err(FirewallError::NftFailed {
                    action,
                    code: out.status.code(),
                    stderr: format!(
                        "{} (writing input: {e})",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(FirewallError::NftFailed {
                action,
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Runs a harmless read (`nft -j list tables`) to prove nft can talk to
    /// the kernel with our privileges.
    pub(crate) fn list_tables(&self) -> Result<(), FirewallError> {
        self.run("list tables", &["-j", "list", "tables"], None)
            .map(drop)
    }

    fn check_table(&self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        if ruleset.table != self.table {
            return Err(FirewallError::TableMismatch {
                expected: self.table.clone(),
                got: ruleset.table.clone(),
            });
        }
        Ok(())
    }
}

impl Firewall for NftFirewall {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        self.check_table(ruleset)?;
        let batch = render_ruleset(ruleset)?;
        self.run("apply", &["-j", "-f", "-"], Some(&batch))
            .map(drop)
    }

    fn check(&mut self, ruleset: &Ruleset) -> Result<(), FirewallError> {
        self.check_table(ruleset)?;
        let batch = render_ruleset(ruleset)?;
        self.run("check", &["--check", "-j", "-f", "-"], Some(&batch))
            .map(drop)
    }

    fn remove(&mut self) -> Result<(), FirewallError> {
        self.run(
            "remove",
            &["-j", "-f", "-"],
            Some(&render_removal(&self.table)),
        )
        .map(drop)
    }

    fn current(&mut self) -> Result<Option<Value>, FirewallError> {
        match self.run("list", &["-j", "list", "table", "inet", &self.table], None) {
            Ok(stdout) => serde_json::from_slice(&stdout)
                .map(Some)
                .map_err(FirewallError::BadOutput),
            Err(FirewallError::NftFailed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The first `nft` in the standard system directories (or the first
/// candidate, so the error later names a sensible path).
pub(crate) fn locate_nft() -> PathBuf {
    NFT_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(NFT_CANDIDATES[0]))
}
