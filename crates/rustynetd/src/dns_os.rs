//! The OS side of Magic DNS: which configurator this host gets (systemd-
//! resolved, resolv.conf replaced or written in place, or none) and the
//! reason, shown by `status` and `dns inspect`.

use std::net::IpAddr;
use std::path::Path;

use rustynet_netos::{
    DnsDetection, DnsMode, RepairOutcome, ResolvConf, ResolvedLink, ResolverConfigurator,
    ResolverError, parse_resolv_conf,
};

/// A configurator and why it was chosen.
pub struct OsDns {
    /// Does the work.
    pub configurator: Box<dyn ResolverConfigurator + Send>,
    /// Mode and reason.
    pub detection: DnsDetection,
    /// The resolv.conf looked at.
    pub path: std::path::PathBuf,
}

impl OsDns {
    /// `mode: why`, for `status` and `dns inspect`.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.detection.mode, self.detection.why)
    }
}

/// Where the original bytes of a bind-mounted resolv.conf are kept: in the
/// state directory, since the directory holding the mount point may be
/// read-only and a crash-restart must find them again.
pub fn in_place_backup(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("resolv.conf.rustynet-backup")
}

/// Picks the configurator for `resolv_conf` on this host. `tun` is the
/// link systemd-resolved configures.
pub fn select(resolv_conf: &Path, tun: &str, state_dir: &Path) -> OsDns {
    let detection = rustynet_netos::detect_dns_mode(resolv_conf);
    from_detection(detection, resolv_conf, tun, state_dir)
}

/// The configurator for a detection already made.
pub fn from_detection(
    detection: DnsDetection,
    resolv_conf: &Path,
    tun: &str,
    state_dir: &Path,
) -> OsDns {
    let configurator: Box<dyn ResolverConfigurator + Send> = match detection.mode {
        DnsMode::Resolved => match ResolvedLink::new(tun) {
            Ok(link) => Box::new(link),
            Err(e) => {
                return unavailable(
                    resolv_conf,
                    format!("systemd-resolved mode impossible: {e}"),
                );
            }
        },
        DnsMode::File => Box::new(ResolvConf::new(resolv_conf)),
        DnsMode::InPlace => {
            Box::new(ResolvConf::new(resolv_conf).in_place(in_place_backup(state_dir)))
        }
        DnsMode::Unavailable => Box::new(Unmanaged::new(resolv_conf)),
    };
    OsDns {
        configurator,
        detection,
        path: resolv_conf.to_path_buf(),
    }
}

/// The fallback when the host's configuration cannot be changed.
pub fn unavailable(resolv_conf: &Path, why: String) -> OsDns {
    OsDns {
        configurator: Box::new(Unmanaged::new(resolv_conf)),
        detection: DnsDetection {
            mode: DnsMode::Unavailable,
            why,
        },
        path: resolv_conf.to_path_buf(),
    }
}

/// Leaves the host's resolver configuration alone; only reads the
/// system's resolvers so Magic DNS can forward to them.
pub struct Unmanaged {
    path: std::path::PathBuf,
}

impl Unmanaged {
    /// Reads `path`, changes nothing.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl ResolverConfigurator for Unmanaged {
    fn take_over(&mut self, _: &[IpAddr], _: &[String]) -> Result<(), ResolverError> {
        Ok(())
    }

    fn restore(&mut self) -> Result<bool, ResolverError> {
        Ok(false)
    }

    fn repair_stale(&mut self) -> Result<RepairOutcome, ResolverError> {
        Ok(RepairOutcome::Clean)
    }

    fn original_nameservers(&self) -> Result<Vec<IpAddr>, ResolverError> {
        Ok(std::fs::read_to_string(&self.path)
            .map(|t| parse_resolv_conf(&t).nameservers)
            .unwrap_or_default())
    }

    fn is_taken_over(&self) -> Result<bool, ResolverError> {
        // Never "ours": nothing to restore.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unavailable_mode_changes_nothing_and_still_reads_the_resolvers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").unwrap();
        let mut os = unavailable(&path, "read-only".into());
        os.configurator
            .take_over(&["100.100.100.100".parse().unwrap()], &["x.example".into()])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        assert_eq!(
            os.configurator.original_nameservers().unwrap(),
            vec!["192.0.2.53".parse::<IpAddr>().unwrap()]
        );
        assert!(!os.configurator.restore().unwrap());
        assert_eq!(os.describe(), "unavailable: read-only");
    }

    #[test]
    fn a_plain_file_gets_file_mode_and_an_in_place_backup_lives_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 192.0.2.53\n").unwrap();
        let os = select(&path, "rn0", dir.path());
        assert_eq!(os.detection.mode, DnsMode::File, "{}", os.describe());
        assert_eq!(
            in_place_backup(Path::new("/var/lib/rustynet")),
            Path::new("/var/lib/rustynet/resolv.conf.rustynet-backup")
        );
    }
}
