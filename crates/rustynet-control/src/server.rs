//! `rustynet-control serve`: the TLS listener, the HTTP service and the
//! background task that notices admin changes made by other processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::{AppState, PeerAddr, router};
use crate::datadir::{DataDir, DataDirError};
use crate::network::Network;
use crate::nonce_cache::{MAX_NONCES, NonceCache};
use crate::ratelimit::{Rate, RateLimiter};
use crate::store::{Store, StoreError};
use crate::tls::{TlsError, server_config};

/// Most sources the enrollment rate limit tracks at once.
const MAX_TRACKED_SOURCES: usize = 65_536;

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
                per_sec: 10,
            },
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
        register_limit: Mutex::new(RateLimiter::new(opts.register_rate, MAX_TRACKED_SOURCES)),
        enroll_nonces: Mutex::new(NonceCache::new(MAX_NONCES)),
    });
    tokio::spawn(watch_external_changes(network.clone(), opts.change_poll));
    let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), state));
    tracing::info!(%addr, "control server listening (TLS 1.3 only)");
    Ok(RunningServer {
        addr,
        network,
        task,
    })
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<AppState>) {
    let app = router(state);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req
            },
        ));
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
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
