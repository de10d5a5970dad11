//! The product binaries the lab runs: built once per process (a no-op when
//! fresh), so a test never runs a stale daemon.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `rustynetd`.
    pub daemon: PathBuf,
    /// `rustynet`.
    pub cli: PathBuf,
    /// `rustynet-control`.
    pub control: PathBuf,
    /// `rustynet-lab` (for its helper services).
    pub lab: PathBuf,
}

fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Builds (if needed) and returns the binaries. The daemon is built with its
/// `fault-injection` feature so the transaction tests can fail chosen steps.
pub fn bins() -> anyhow::Result<Bins> {
    static BUILT: OnceLock<Result<Bins, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build() -> anyhow::Result<Bins> {
    let dir = profile_dir()?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let mut cmd = Command::new(cargo);
    // A test runs with the variables cargo sets for the package under test
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts that watch
    // them (ring's does) would then rebuild here and again in the next
    // plain `cargo build`, each time, with everything that depends on them.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    cmd.args(["build", "--locked", "--manifest-path", manifest, "--bins"])
        .args([
            "-p",
            "rustynetd",
            "-p",
            "rustynet-cli",
            "-p",
            "rustynet-control",
            "-p",
            "rustynet-lab",
        ])
        .args(["--features", "rustynetd/fault-injection"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status()?;
    if !status.success() {
        anyhow::bail!("building the product binaries failed");
    }
    let bins = Bins {
        daemon: dir.join("rustynetd"),
        cli: dir.join("rustynet"),
        control: dir.join("rustynet-control"),
        lab: dir.join("rustynet-lab"),
    };
    for path in [&bins.daemon, &bins.cli, &bins.control, &bins.lab] {
        if !path.is_file() {
            anyhow::bail!("{} was not built", path.display());
        }
    }
    Ok(bins)
}
