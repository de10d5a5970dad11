//! The relay embedded in `serve` (`--relay-listen`): `rustynet_relay`'s
//! server on control's own runtime, trusting control's signing key for
//! tickets, with its own TLS key and self-signed certificate in the data
//! directory (made on first use, the key owner-only). Nodes trust it by the
//! SHA-256 of that certificate's public key, which control announces in
//! every map with the relay's advertised address and binding addresses.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rustynet_proto::endpoint::check_endpoint;
use rustynet_proto::netmap::{MAX_RELAY_NAME, NetmapError, RelayInfo};
use rustynet_proto::{CertPin, SigningPublicKey};
use rustynet_relay::core::Limits;
use rustynet_relay::{RelayError, RelayServer, ServerConfig, tls};

use crate::datadir::DataDir;

/// The relay's name in maps unless `--relay-name` says otherwise.
pub const DEFAULT_RELAY_NAME: &str = "control";

/// Why the embedded relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedRelayError {
    /// Its TLS files could not be made or read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The relay itself (TLS setup, binding).
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// It listens on every address, so which one to announce is unknown.
    #[error(
        "--relay-listen {0} is an unspecified address: give --relay-advertise IP:PORT, the \
         address nodes connect to"
    )]
    NeedAdvertise(SocketAddr),
    /// The address it would announce is not one nodes may be sent to.
    #[error("the relay's {what} {addr} cannot be announced ({reason}): {hint}")]
    Unannounceable {
        /// `address` or `binding address`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The rule it breaks.
        reason: rustynet_proto::endpoint::EndpointError,
        /// What to do.
        hint: &'static str,
    },
    /// The relay as a whole fails the node's checks (e.g. its name).
    #[error("the embedded relay cannot be announced: {0}")]
    Invalid(NetmapError),
}

/// What `serve` was told about the relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// TCP address of the TLS relay.
    pub listen: SocketAddr,
    /// UDP addresses answering binding requests.
    pub stun: Vec<SocketAddr>,
    /// The address nodes connect to, when not the listen address.
    pub advertise: Option<SocketAddr>,
    /// Its name in maps.
    pub name: String,
    /// Forwarded bytes per second per node (0: unlimited).
    pub rate_bytes_per_sec: u64,
}

impl RelayOptions {
    /// Listens on `listen`, announced as itself, named [`DEFAULT_RELAY_NAME`].
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            stun: Vec::new(),
            advertise: None,
            name: DEFAULT_RELAY_NAME.to_owned(),
            rate_bytes_per_sec: Limits::default().rate_bytes_per_sec,
        }
    }
}

/// A relay bound to its addresses, and how it is announced.
pub struct BoundRelay {
    /// The server, to run on control's runtime.
    pub server: RelayServer,
    /// The entry every map carries for it.
    pub info: RelayInfo,
}

fn file_err(path: &Path, reason: impl ToString) -> EmbeddedRelayError {
    EmbeddedRelayError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), EmbeddedRelayError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_err(path, e))
}

/// Makes the relay's key and self-signed certificate in the data directory
/// unless both exist; one without the other is an error (never overwritten:
/// nodes pin the key).
pub fn ensure_tls_files(data: &DataDir, server_name: &str) -> Result<(), EmbeddedRelayError> {
    let (cert, key) = (data.relay_cert(), data.relay_key());
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(()),
        (false, false) => {}
        (true, false) => return Err(file_err(&key, "missing while relay.pem exists")),
        (false, true) => return Err(file_err(&cert, "missing while relay.key exists")),
    }
    let made = tls::self_signed(&[server_name.to_owned()])?;
    write_new(&key, made.key_pem.as_bytes(), 0o600)?;
    write_new(&cert, made.cert_pem.as_bytes(), 0o644)?;
    tracing::info!(cert = %cert.display(), "made the embedded relay's TLS key and certificate");
    Ok(())
}

/// The address announced for a relay bound at `bound`: `advertise` if
/// given, else `bound` unless it is unspecified. Checked as a node checks
/// it.
pub fn announced_addr(
    bound: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Result<SocketAddr, EmbeddedRelayError> {
    let addr = match advertise {
        Some(addr) => addr,
        None if bound.ip().is_unspecified() => {
            return Err(EmbeddedRelayError::NeedAdvertise(bound));
        }
        None => bound,
    };
    check_endpoint(&addr).map_err(|reason| EmbeddedRelayError::Unannounceable {
        what: "address",
        addr,
        reason,
        hint: "give --relay-advertise IP:PORT, the address nodes connect to",
    })?;
    Ok(addr)
}

/// The address announced for a binding socket bound at `bound`: with an
/// unspecified IP, the relay's announced IP and the bound port.
pub fn announced_stun(
    bound: SocketAddr,
    relay_ip: IpAddr,
) -> Result<SocketAddr, EmbeddedRelayError> {
    let addr = if bound.ip().is_unspecified() {
        SocketAddr::new(relay_ip, bound.port())
    } else {
        bound
    };
    check_endpoint(&addr).map_err(|reason| EmbeddedRelayError::Unannounceable {
        what: "binding address",
        addr,
        reason,
        hint: "give --relay-stun an address nodes can reach",
    })?;
    Ok(addr)
}

/// Binds the relay for `opts` (making its TLS files if needed), trusting
/// tickets signed by `control_key`, and builds its announced entry.
pub async fn bind(
    data: &DataDir,
    opts: &RelayOptions,
    control_key: SigningPublicKey,
) -> Result<BoundRelay, EmbeddedRelayError> {
    // Everything but ports that are only known once bound is checked
    // before a file is made or a socket bound.
    let port_known = |mut addr: SocketAddr| {
        if addr.port() == 0 {
            addr.set_port(1);
        }
        addr
    };
    let planned = announced_addr(port_known(opts.listen), opts.advertise)?;
    for stun in &opts.stun {
        announced_stun(port_known(*stun), planned.ip())?;
    }
    if rustynet_proto::names::validate_label(&opts.name, MAX_RELAY_NAME).is_err() {
        return Err(EmbeddedRelayError::Invalid(NetmapError::Name(
            opts.name.clone(),
        )));
    }
    ensure_tls_files(data, &planned.ip().to_string())?;
    let pin = tls::spki_sha256_of_pem_file(&data.relay_cert())?;
    let server = RelayServer::bind(ServerConfig {
        listen: vec![opts.listen],
        tls: tls::server_config(&data.relay_cert(), &data.relay_key())?,
        control_keys: vec![control_key],
        binding: opts.stun.clone(),
        metrics: None,
        limits: Limits {
            rate_bytes_per_sec: opts.rate_bytes_per_sec,
            ..Limits::default()
        },
    })
    .await?;
    let bound = server.local_addrs().first().copied().unwrap_or(opts.listen);
    let addr = announced_addr(bound, opts.advertise)?;
    let stun = server
        .binding_addrs()
        .into_iter()
        .map(|b| announced_stun(b, addr.ip()))
        .collect::<Result<Vec<_>, _>>()?;
    let info = RelayInfo {
        name: opts.name.clone(),
        addrs: vec![addr],
        server_name: addr.ip().to_string(),
        cert_sha256: CertPin(pin),
        stun,
    };
    info.check().map_err(EmbeddedRelayError::Invalid)?;
    Ok(BoundRelay { server, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_listen_address_is_announced_unless_advertised_or_unspecified() {
        let public = addr("198.51.100.7:443");
        assert_eq!(announced_addr(public, None).unwrap(), public);
        assert_eq!(
            announced_addr(addr("0.0.0.0:443"), Some(public)).unwrap(),
            public
        );
        assert!(matches!(
            announced_addr(addr("0.0.0.0:443"), None),
            Err(EmbeddedRelayError::NeedAdvertise(_))
        ));
        assert!(matches!(
            announced_addr(addr("[::]:443"), None),
            Err(EmbeddedRelayError::NeedAdvertise(_))
        ));
        let err = announced_addr(addr("127.0.0.1:443"), None).unwrap_err();
        assert!(err.to_string().contains("--relay-advertise"), "{err}");
        assert!(announced_addr(public, Some(addr("100.64.0.1:443"))).is_err());
    }

    #[test]
    fn unspecified_binding_addresses_take_the_relay_ip() {
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            announced_stun(addr("0.0.0.0:3478"), ip).unwrap(),
            addr("198.51.100.7:3478")
        );
        assert_eq!(
            announced_stun(addr("203.0.113.9:3478"), ip).unwrap(),
            addr("203.0.113.9:3478")
        );
        assert!(announced_stun(addr("127.0.0.1:3478"), ip).is_err());
    }

    #[test]
    fn tls_files_are_made_once_owner_only_and_never_half_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        ensure_tls_files(&data, "198.51.100.7").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.relay_key()), 0o600);
        let pin = tls::spki_sha256_of_pem_file(&data.relay_cert()).unwrap();
        ensure_tls_files(&data, "198.51.100.7").unwrap();
        assert_eq!(
            tls::spki_sha256_of_pem_file(&data.relay_cert()).unwrap(),
            pin,
            "kept across restarts: nodes pin it"
        );
        std::fs::remove_file(data.relay_cert()).unwrap();
        assert!(matches!(
            ensure_tls_files(&data, "198.51.100.7"),
            Err(EmbeddedRelayError::File { .. })
        ));
        assert!(!data.relay_cert().exists());
    }
}
