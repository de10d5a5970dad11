//! `rustynet-control serve`: the TLS listener, the HTTP service and the
//! background task that notices admin changes made by other processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{AppState, router};
use crate::conn::ConnConfig;
use crate::conn_limits::ConnTable;
use crate::datadir::{DataDir, DataDirError};
use crate::fdlimit::raise_nofile_limit;
use crate::network::Network;
use crate::nonce_cache::{MAX_NONCES, NonceCache};
use crate::ratelimit::{Rate, RateLimiter};
use crate::store::{Store, StoreError};
use crate::tls::{TlsError, server_config};

/// Most sources the enrollment rate limit tracks at once.
const MAX_TRACKED_SOURCES: usize = 65_536;
/// Most nodes the update rate limit tracks at once (idle ones are
/// forgotten when it is full).
const MAX_TRACKED_NODES: usize = 262_144;

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Validity of each signed map.
    pub map_ttl: Duration,
    /// Keepalive on idle map streams.
    pub keepalive: Duration,
    /// How often to look for changes committed by admin commands.
    pub change_poll: Duration,
    /// Enrollment requests allowed per source address (IPv6: per /64).
    pub register_rate: Rate,
    /// Updates (`/v1/update`) allowed per node: each change rebuilds maps
    /// and makes every peer verify and apply one.
    pub update_rate: Rate,
    /// Least time between two maps sent to one node (changes in between
    /// are coalesced into the next).
    pub min_map_interval: Duration,
    /// Deadline of the TLS handshake.
    pub handshake_timeout: Duration,
    /// Deadline of a request head, and the idle limit between requests.
    pub header_timeout: Duration,
    /// Deadline of a request body.
    pub body_timeout: Duration,
    /// Most connections open at once (also bounded by the open-file limit).
    pub max_connections: usize,
    /// Most connections from one source (an IPv4 address or an IPv6 /64);
    /// every node behind one NAT holds a map stream, so not small.
    pub max_connections_per_source: usize,
}

impl ServeOptions {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            map_ttl: Duration::from_secs(30 * 60),
            keepalive: Duration::from_secs(15),
            change_poll: Duration::from_millis(250),
            // A fleet enrolling from behind one NAT gets 64 at once and 10 a
            // second; a flood from one address gets no further.
            register_rate: Rate {
                burst: 64,
                every: Duration::from_millis(100),
            },
            // Endpoint changes and toggles: 10 at once, then one each 6 s.
            update_rate: Rate {
                burst: 10,
                every: Duration::from_secs(6),
            },
            min_map_interval: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_connections_per_source: 1024,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Data directory problem.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// TLS problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The live network (tests use it to observe state).
    pub network: Arc<Network>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting and aborts open connections.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

/// Descriptors kept for everything but client connections (listener,
/// database, logs, blocking threads).
const RESERVED_FDS: u64 = 128;

/// `wanted`, lowered to what the open-file limit allows once raised to its
/// hard limit.
fn connection_cap(wanted: usize) -> usize {
    match raise_nofile_limit() {
        Ok(soft) => {
            let fit = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
            if fit < wanted {
                tracing::warn!(
                    open_file_limit = soft,
                    connections = fit,
                    "the open-file limit caps connections below the configured maximum"
                );
            }
            wanted.min(fit).max(1)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            wanted
        }
    }
}

/// Opens the data directory, binds and starts serving in the background.
pub async fn start(data: &DataDir, opts: ServeOptions) -> Result<RunningServer, ServeError> {
    data.check_server_key()?;
    let signer = Arc::new(data.signing_key()?);
    let store: Arc<dyn Store> = Arc::new(data.open_store()?);
    let tls = server_config(&data.server_cert(), &data.server_key())?;
    let network = Network::load(store)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let state = Arc::new(AppState {
        network: network.clone(),
        signer,
        map_ttl_secs: i64::try_from(opts.map_ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(2),
        keepalive: opts.keepalive,
        body_timeout: opts.body_timeout,
        min_map_interval: opts.min_map_interval,
        update_limit: Mutex::new(RateLimiter::new(opts.update_rate, MAX_TRACKED_NODES)),
        register_limit: Mutex::new(RateLimiter::new(opts.register_rate, MAX_TRACKED_SOURCES)),
        enroll_nonces: Mutex::new(NonceCache::new(MAX_NONCES)),
    });
    let table = ConnTable::new(
        connection_cap(opts.max_connections),
        opts.max_connections_per_source,
    );
    let cfg = Arc::new(ConnConfig {
        acceptor: TlsAcceptor::from(tls),
        app: router(state),
        handshake_timeout: opts.handshake_timeout,
        header_timeout: opts.header_timeout,
    });
    tokio::spawn(watch_external_changes(network.clone(), opts.change_poll));
    let task = tokio::spawn(accept_loop(listener, table, cfg));
    tracing::info!(%addr, "control server listening (TLS 1.3 only)");
    Ok(RunningServer {
        addr,
        network,
        task,
    })
}

async fn accept_loop(listener: TcpListener, table: Arc<ConnTable>, cfg: Arc<ConnConfig>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match table.admit(peer.ip()) {
            Ok(slot) => {
                tokio::spawn(crate::conn::serve(tcp, peer, slot, cfg.clone()));
            }
            Err(reason) => {
                tracing::debug!(%peer, %reason, "connection refused");
                drop(tcp);
            }
        }
    }
}

/// Admin subcommands (`policy set`, `nodes expire`, ...) are separate
/// processes writing the same database; SQLite's data_version tells us when
/// someone else committed, and we republish.
async fn watch_external_changes(network: Arc<Network>, every: Duration) {
    let mut last = network.store().external_change_marker().ok();
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let network = network.clone();
        let result = tokio::task::spawn_blocking(move || {
            let marker = network.store().external_change_marker()?;
            Ok::<_, StoreError>((marker, network))
        })
        .await;
        let Ok(Ok((marker, network))) = result else {
            continue;
        };
        if Some(marker) != last {
            last = Some(marker);
            let reloaded = tokio::task::spawn_blocking(move || network.reload()).await;
            match reloaded {
                Ok(Ok(())) => tracing::info!("applied changes made by an admin command"),
                Ok(Err(e)) => tracing::error!(error = %e, "reload after external change failed"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }
}
