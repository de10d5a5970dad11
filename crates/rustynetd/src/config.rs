//! Daemon configuration: defaults, an optional TOML file, command-line
//! overrides. Unknown keys in the file are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Firewall mark on the tunnel's own UDP and on the control connection, so
/// full-tunnel policy routing lets them bypass the tunnel.
pub const DEFAULT_FWMARK: u32 = 0x524e;
/// Firewall mark on the Magic DNS forwarder's upstream queries, so protected
/// DNS can tell them from applications' queries.
pub const DEFAULT_DNS_MARK: u32 = 0x5244;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong (names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// Key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The config file (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// IPC socket path.
    pub socket: Option<PathBuf>,
    /// TUN interface name.
    pub tun: Option<String>,
    /// Prometheus metrics listen address.
    pub metrics: Option<SocketAddr>,
    /// UDP port for the tunnel (0 = ephemeral).
    pub listen_port: Option<u16>,
    /// Tunnel MTU.
    pub mtu: Option<u16>,
    /// resolv.conf path the DNS manager takes over.
    pub resolv_conf: Option<PathBuf>,
    /// Group allowed read-only IPC.
    pub ipc_group: Option<String>,
    /// Group allowed mutating IPC (besides root).
    pub admin_group: Option<String>,
    /// Secret under which the node keys are encrypted at rest.
    pub key_encryption_file: Option<PathBuf>,
    /// Tunnel engine: `userspace` (default) or `kernel`.
    pub engine: Option<String>,
    /// Lockdown mode always on (`rustynet set lockdown off` is refused).
    pub lockdown: Option<bool>,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Durable state (keys, last-known-safe generation).
    pub state_dir: PathBuf,
    /// IPC socket.
    pub socket: PathBuf,
    /// TUN interface name.
    pub tun: String,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// Tunnel UDP port.
    pub listen_port: u16,
    /// Tunnel MTU.
    pub mtu: u16,
    /// Bypass mark for the tunnel UDP socket and the control connection.
    pub fwmark: u32,
    /// Mark on Magic DNS upstream queries.
    pub dns_mark: u32,
    /// resolv.conf to take over for Magic DNS.
    pub resolv_conf: PathBuf,
    /// Read-only IPC group.
    pub ipc_group: String,
    /// Mutating IPC group.
    pub admin_group: String,
    /// Secret under which the node keys are encrypted at rest.
    pub key_encryption_file: Option<PathBuf>,
    /// Which tunnel engine to run.
    pub engine: rustynet_backend_wireguard::EngineChoice,
    /// Lockdown forced on by the config file (`lockdown = true`); otherwise
    /// `rustynet set lockdown` decides.
    pub lockdown: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            state_dir: "/var/lib/rustynet".into(),
            socket: "/run/rustynet/rustynetd.sock".into(),
            tun: "rustynet0".into(),
            metrics: None,
            listen_port: 41641,
            mtu: 1280,
            fwmark: DEFAULT_FWMARK,
            dns_mark: DEFAULT_DNS_MARK,
            resolv_conf: "/etc/resolv.conf".into(),
            ipc_group: "rustynet".into(),
            admin_group: "rustynet-admin".into(),
            key_encryption_file: None,
            engine: rustynet_backend_wireguard::EngineChoice::default(),
            lockdown: false,
        }
    }
}

impl DaemonConfig {
    /// Applies a config file over the defaults.
    pub fn with_file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        self.merge(file)?;
        Ok(self)
    }

    /// Applies set fields of `file`; refuses an unknown engine name (and
    /// then changes nothing).
    pub fn merge(&mut self, file: FileConfig) -> Result<(), ConfigError> {
        let FileConfig {
            state_dir,
            socket,
            tun,
            metrics,
            listen_port,
            mtu,
            resolv_conf,
            ipc_group,
            admin_group,
            key_encryption_file,
            engine,
            lockdown,
        } = file;
        let engine = engine.map(|name| parse_engine(&name)).transpose()?;
        if let Some(v) = state_dir {
            self.state_dir = v;
        }
        if let Some(v) = socket {
            self.socket = v;
        }
        if let Some(v) = tun {
            self.tun = v;
        }
        if metrics.is_some() {
            self.metrics = metrics;
        }
        if let Some(v) = listen_port {
            self.listen_port = v;
        }
        if let Some(v) = mtu {
            self.mtu = v;
        }
        if let Some(v) = resolv_conf {
            self.resolv_conf = v;
        }
        if let Some(v) = ipc_group {
            self.ipc_group = v;
        }
        if let Some(v) = admin_group {
            self.admin_group = v;
        }
        if key_encryption_file.is_some() {
            self.key_encryption_file = key_encryption_file;
        }
        if let Some(v) = engine {
            self.engine = v;
        }
        if let Some(v) = lockdown {
            self.lockdown = v;
        }
        Ok(())
    }

    /// Checks values that could otherwise fail late.
    pub fn validate(&self) -> Result<(), ConfigError> {
        rustynet_tunnel::validate_ifname(&self.tun).map_err(|e| ConfigError::Invalid {
            key: "tun",
            reason: e.to_string(),
        })?;
        if !(rustynet_tunnel::MIN_MTU..=rustynet_tunnel::MAX_MTU).contains(&self.mtu) {
            return Err(ConfigError::Invalid {
                key: "mtu",
                reason: format!("{} is outside 576..=9000", self.mtu),
            });
        }
        for (key, group) in [
            ("ipc_group", &self.ipc_group),
            ("admin_group", &self.admin_group),
        ] {
            if group.is_empty()
                || group.len() > 32
                || !group
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("{group:?} is not a group name"),
                });
            }
        }
        Ok(())
    }
}

/// `userspace` or `kernel`.
fn parse_engine(name: &str) -> Result<rustynet_backend_wireguard::EngineChoice, ConfigError> {
    match name {
        "userspace" => Ok(rustynet_backend_wireguard::EngineChoice::Userspace),
        "kernel" => Ok(rustynet_backend_wireguard::EngineChoice::Kernel),
        other => Err(ConfigError::Invalid {
            key: "engine",
            reason: format!("{other:?} is not an engine (userspace or kernel)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "tun = \"rn1\"\nlisten_port = 5000\n").unwrap();
        let cfg = DaemonConfig::default().with_file(&path).unwrap();
        assert_eq!(cfg.tun, "rn1");
        assert_eq!(cfg.listen_port, 5000);
        cfg.validate().unwrap();
        std::fs::write(&path, "tunn = \"x\"\n").unwrap();
        let err = DaemonConfig::default().with_file(&path).unwrap_err();
        assert!(err.to_string().contains("tunn"), "{err}");
        std::fs::write(&path, "mtu = 10\n").unwrap();
        let cfg = DaemonConfig::default().with_file(&path).unwrap();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn engine_defaults_to_userspace_and_refuses_unknown_names_changing_nothing() {
        use rustynet_backend_wireguard::EngineChoice;
        assert_eq!(DaemonConfig::default().engine, EngineChoice::Userspace);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "engine = \"kernel\"\n").unwrap();
        let cfg = DaemonConfig::default().with_file(&path).unwrap();
        assert_eq!(cfg.engine, EngineChoice::Kernel);
        let mut cfg = DaemonConfig::default();
        let err = cfg
            .merge(FileConfig {
                tun: Some("rn9".into()),
                engine: Some("wg".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("engine"), "{err}");
        assert_eq!(cfg.tun, "rustynet0", "a refused file changes nothing");
        assert_eq!(cfg.engine, EngineChoice::Userspace);
    }

    #[test]
    fn lockdown_key() {
        assert!(!DaemonConfig::default().lockdown);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lockdown = true\n").unwrap();
        assert!(DaemonConfig::default().with_file(&path).unwrap().lockdown);
        std::fs::write(&path, "lockdown = \"yes\"\n").unwrap();
        assert!(DaemonConfig::default().with_file(&path).is_err());
    }
}
