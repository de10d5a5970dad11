//! A real systemd-resolved for namespace tests of the `resolved` host DNS
//! mode, without touching the host's.
//!
//! What is real: Debian's `systemd-resolved` and `resolvectl` binaries (the
//! package matching the host's systemd, fetched with `apt-get download` and
//! unpacked under the target directory, never installed), a real
//! `dbus-daemon` system bus, resolved's real `org.freedesktop.resolve1`
//! D-Bus API, its stub on 127.0.0.53, and its per-link routing of queries.
//! What differs from a host: the bus is private to one mount namespace
//! (`/run` there is a tmpfs) with a permissive bus policy instead of
//! resolved's own (which names the `systemd-resolve` user), and resolved
//! runs as `nobody` with the capabilities its unit would give it, since it
//! cannot drop to a user the host does not have.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The unpacked package.
#[derive(Debug, Clone)]
pub struct ResolvedBins {
    /// `systemd-resolved`.
    pub daemon: PathBuf,
    /// The directory holding `resolvectl` (put first on the daemon's PATH).
    pub bin_dir: PathBuf,
}

/// A permissive system-bus configuration listening where resolved and
/// resolvectl look for the system bus.
pub const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

/// Fetches (once) and unpacks `systemd-resolved` of the host's systemd
/// version under `target/systemd-resolved-<version>/`.
pub fn bins() -> anyhow::Result<ResolvedBins> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "systemd"])
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    anyhow::ensure!(
        out.status.success() && !version.is_empty(),
        "systemd is not installed (apt-get install systemd)"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let dir = target.join(format!(
        "systemd-resolved-{}",
        version.replace(['~', ':'], "_")
    ));
    let bins = ResolvedBins {
        daemon: dir.join("root/lib/systemd/systemd-resolved"),
        bin_dir: dir.join("root/usr/bin"),
    };
    if bins.daemon.is_file() && bins.bin_dir.join("resolvectl").is_file() {
        return Ok(bins);
    }
    std::fs::create_dir_all(&dir)?;
    let spec = format!("systemd-resolved={version}");
    let download = |dir: &Path| {
        Command::new("apt-get")
            .args(["download", &spec])
            .current_dir(dir)
            .output()
    };
    let mut got = download(&dir)?;
    if !got.status.success() {
        // Stale package lists on a fresh machine: refresh once.
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        got = download(&dir)?;
    }
    anyhow::ensure!(
        got.status.success(),
        "apt-get download {spec}: {}",
        String::from_utf8_lossy(&got.stderr).trim()
    );
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow::anyhow!("no .deb in {}", dir.display()))?;
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root"))
        .status()?;
    anyhow::ensure!(unpacked.success(), "dpkg-deb -x {}", deb.display());
    Ok(bins)
}

/// The shell that runs first in the daemon's mount namespace: a tmpfs on
/// `/run`, the private bus, resolved (as `nobody` with CAP_NET_RAW,
/// CAP_NET_BIND_SERVICE and CAP_SETPCAP, like its unit), then `exec` of
/// the given command with resolvectl on PATH. Arguments: `$1` the lab
/// scratch directory (bus config, pids, resolved's log), `$2` resolved,
/// `$3` the directory of resolvectl, then the command.
pub const PRELUDE: &str = r#"set -e
scratch="$1"; resolved="$2"; bindir="$3"; shift 3
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd/resolve
chown 65534:65534 /run/systemd/resolve
dbus-daemon --config-file="$scratch/bus.conf" --fork --print-pid >"$scratch/dbus.pid"
caps=+net_raw,+net_bind_service,+setpcap
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=$caps --ambient-caps=$caps \
  "$resolved" >"$scratch/resolved.log" 2>&1 &
echo $! >"$scratch/resolved.pid"
i=0
while [ ! -S /run/systemd/resolve/io.systemd.Resolve ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
export PATH="$bindir:$PATH"
exec "$@"
"#;

/// Kills the bus and resolved started by [`PRELUDE`] in `scratch`.
pub fn stop(scratch: &Path) {
    for file in ["resolved.pid", "dbus.pid"] {
        let pid = std::fs::read_to_string(scratch.join(file))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: kill(2) on a pid this lab started and recorded.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
