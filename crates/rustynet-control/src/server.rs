//! `rustynet-control serve`: the TLS listener, the HTTP service and the
//! background task that notices admin changes made by other processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{AppState, Signer, router};
use crate::conn::ConnConfig;
use crate::conn_limits::ConnTable;
use crate::datadir::{DataDir, DataDirError};
use crate::embedded_relay::{self, EmbeddedRelayError, RelayOptions};
use crate::fdlimit::raise_nofile_limit;
use crate::metrics::ControlMetrics;
use crate::network::Network;
use crate::nonce_cache::{MAX_NONCES, NonceCache};
use crate::ratelimit::{Rate, RateLimiter};
use crate::relay_tickets::TicketIssuer;
use crate::store::{Store, StoreError};
use crate::tls::{TlsError, server_config, server_config_pem};

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
    /// Keepalive on idle map streams at most this often apart (less for a
    /// client that declares a shorter silence limit, see
    /// `rustynet_proto::control_api::STREAM_SILENCE_HEADER`).
    pub keepalive: Duration,
    /// How often to look for changes committed by admin commands.
    pub change_poll: Duration,
    /// Enrollment requests allowed per source address (IPv6: per /64).
    pub register_rate: Rate,
    /// Updates (`/v1/update`) allowed per node: each change rebuilds maps
    /// and makes every peer verify and apply one.
    pub update_rate: Rate,
    /// Least time between two maps sent to one node once its small burst
    /// is spent (changes in between are coalesced into the next).
    pub min_map_interval: Duration,
    /// Relay tickets (`/v1/relay-ticket`) allowed per node (a bucket of
    /// its own, as large as the update bucket).
    pub ticket_rate: Rate,
    /// The relay to run inside this process (`--relay-listen`), if any.
    pub relay: Option<RelayOptions>,
    /// Lifetime of a node's keys from enrollment or renewal; a node whose
    /// keys expired is refused like an expired node until it renews with
    /// `rustynet up --force-reauth`. `None`: keys never expire.
    pub node_key_expiry: Option<Duration>,
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
    /// Plain-HTTP Prometheus `/metrics` listener (`--metrics-listen`);
    /// `None` (the default): no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// How often nodes with an open map stream are recorded as seen.
    pub presence_interval: Duration,
    /// A TLS certificate chain and key to serve instead of the data
    /// directory's (`--tls-cert`/`--tls-key`: bring your own).
    pub tls_files: Option<TlsFiles>,
}

/// A certificate chain (PEM) and its private key (PEM, owner-only).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// Private key.
    pub key: std::path::PathBuf,
}

impl ServeOptions {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            map_ttl: Duration::from_secs(30 * 60),
            keepalive: Duration::from_secs(60),
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
            ticket_rate: Rate {
                burst: 10,
                every: Duration::from_secs(6),
            },
            relay: None,
            node_key_expiry: Some(Duration::from_secs(180 * 24 * 3600)),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_connections_per_source: 1024,
            metrics_listen: None,
            presence_interval: crate::presence::PRESENCE_INTERVAL,
            tls_files: None,
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
    /// The embedded relay could not start.
    #[error("embedded relay: {0}")]
    Relay(#[from] EmbeddedRelayError),
    /// A registered relay has the embedded relay's name.
    #[error(
        "a registered relay is named {0:?} like the embedded relay: `relays remove {0}` or \
         pick another --relay-name"
    )]
    RelayNameTaken(String),
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
    /// The embedded relay, as announced, and where it is bound.
    pub relay: Option<RelayRunning>,
    /// The `/metrics` listener, as bound (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// The server's metrics (tests read them).
    pub metrics: ControlMetrics,
    task: tokio::task::JoinHandle<()>,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
}

/// The embedded relay of a running server.
pub struct RelayRunning {
    /// Its entry in every map.
    pub info: rustynet_proto::netmap::RelayInfo,
    /// Its TLS listener, as bound (useful with port 0).
    pub addr: SocketAddr,
    /// Its binding (UDP) sockets, as bound.
    pub stun: Vec<SocketAddr>,
    /// Dropping it (with the server) stops the relay.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RunningServer {
    /// Stops accepting, aborts open connections and stops the embedded
    /// relay (which closes its connections).
    pub fn shutdown(self) {
        self.task.abort();
        if let Some(task) = self.metrics_task {
            task.abort();
        }
        drop(self.relay);
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
    data.finish_rotation()?;
    data.check_secrets()?;
    let signer = RwLock::new(Arc::new(load_signer(data)?));
    let store: Arc<dyn Store> = Arc::from(data.open_store()?);
    let tls = match &opts.tls_files {
        Some(files) => {
            crate::datadir::check_owner_only(&files.key)?;
            server_config(&files.cert, &files.key)?
        }
        None => server_config_pem(
            &data.server_cert(),
            &data.server_key(),
            &data.server_key_pem()?,
        )?,
    };
    let control_key = signer
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .key
        .public();
    let relay = match &opts.relay {
        Some(relay) => {
            if store.relays()?.iter().any(|r| r.name == relay.name) {
                return Err(ServeError::RelayNameTaken(relay.name.clone()));
            }
            Some(embedded_relay::bind(data, relay, control_key).await?)
        }
        None => None,
    };
    let relay_keys = relay.as_ref().map(|r| r.server.control_keys());
    let network = Network::load_with_relay(store, relay.as_ref().map(|r| r.info.clone()))?;
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
    let metrics = ControlMetrics::new(relay.as_ref().map(|r| r.server.metrics()).as_ref());
    let metrics_listener = match opts.metrics_listen {
        Some(at) => {
            let l = crate::metrics::bind(at)
                .await
                .map_err(|source| ServeError::Bind { addr: at, source })?;
            Some(l)
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    let state = Arc::new(AppState {
        network: network.clone(),
        signer,
        map_ttl_secs: i64::try_from(opts.map_ttl.as_secs())
            .unwrap_or(i64::MAX)
            .max(2),
        keepalive: opts.keepalive,
        body_timeout: opts.body_timeout,
        min_map_interval: opts.min_map_interval,
        node_key_expiry: opts.node_key_expiry,
        update_limit: Mutex::new(RateLimiter::new(opts.update_rate, MAX_TRACKED_NODES)),
        ticket_limit: Mutex::new(RateLimiter::new(opts.ticket_rate, MAX_TRACKED_NODES)),
        tickets: TicketIssuer::new(i64::try_from(opts.map_ttl.as_secs()).unwrap_or(i64::MAX)),
        register_limit: Mutex::new(RateLimiter::new(opts.register_rate, MAX_TRACKED_SOURCES)),
        enroll_nonces: Mutex::new(NonceCache::new(MAX_NONCES)),
        relay_keys,
        metrics: metrics.clone(),
    });
    let table = ConnTable::new(
        connection_cap(opts.max_connections),
        opts.max_connections_per_source,
    );
    let cfg = Arc::new(ConnConfig {
        acceptor: TlsAcceptor::from(tls),
        app: router(state.clone()),
        handshake_timeout: opts.handshake_timeout,
        header_timeout: opts.header_timeout,
        metrics: metrics.clone(),
    });
    tokio::spawn(watch_signing_key(
        data.clone(),
        state.clone(),
        opts.change_poll,
    ));
    tokio::spawn(watch_external_changes(network.clone(), opts.change_poll));
    tokio::spawn(crate::presence::record_presence(
        network.clone(),
        opts.presence_interval,
    ));
    let task = tokio::spawn(accept_loop(listener, table, cfg));
    tracing::info!(%addr, "control server listening (TLS 1.3 only)");
    if let Some(at) = metrics_addr {
        tracing::info!(addr = %at, "metrics listening");
    }
    let metrics_task =
        metrics_listener.map(|l| tokio::spawn(crate::metrics::serve(l, metrics.clone())));
    let relay = relay.map(run_relay);
    Ok(RunningServer {
        addr,
        network,
        relay,
        metrics_addr,
        metrics,
        task,
        metrics_task,
    })
}

/// Runs the embedded relay on this runtime until its handle is dropped.
fn run_relay(bound: embedded_relay::BoundRelay) -> RelayRunning {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = bound.server.local_addrs().first().copied();
    let stun = bound.server.binding_addrs();
    let info = bound.info;
    tracing::info!(
        name = %info.name,
        listen = ?addr,
        announced = ?info.addrs,
        stun = ?info.stun,
        "embedded relay serving"
    );
    tokio::spawn(async move {
        let until = async {
            let _ = stopped.await;
        };
        if let Err(e) = bound.server.run(until).await {
            tracing::error!(error = %e, "embedded relay stopped");
        }
    });
    RelayRunning {
        addr: addr.unwrap_or_else(|| info.addrs[0]),
        stun,
        info,
        _stop: stop,
    }
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
                cfg.metrics.rejected("connection_limit");
                drop(tcp);
            }
        }
    }
}

fn load_signer(data: &DataDir) -> Result<Signer, DataDirError> {
    Ok(Signer {
        key: data.signing_key()?,
        handovers: data.signing_handovers()?,
    })
}

/// `signing-key rotate` is a separate process: when the key file changes,
/// the new key and its handover are loaded and every map stream sends a map
/// signed by it at once (with the handover, so nodes move their pin).
async fn watch_signing_key(data: DataDir, state: Arc<AppState>, every: Duration) {
    let modified = |data: &DataDir| {
        std::fs::metadata(data.signing_key_path())
            .and_then(|m| m.modified())
            .ok()
    };
    let mut seen = modified(&data);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let now = modified(&data);
        if now == seen {
            continue;
        }
        seen = now;
        let loaded = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || {
                data.finish_rotation()?;
                load_signer(&data)
            })
            .await
        };
        match loaded {
            Ok(Ok(signer)) if signer.key.public() != state.signer().key.public() => {
                tracing::info!(key = %signer.key.public(), "signing with the rotated control key");
                let (old, new) = (state.signer().key.public(), signer.key.public());
                state.set_signer(signer);
                // The embedded relay takes tickets signed by the new key, and
                // by the old one until they expire.
                if let Some(keys) = &state.relay_keys {
                    keys.set(vec![new, old]);
                }
                state.tickets.clear();
                state.network.nudge();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot load the rotated signing key; still signing with the old one")
            }
            Err(e) => tracing::error!(error = %e, "signing key reload task failed"),
        }
    }
}

/// Admin subcommands (`policy set`, `nodes expire`, ...) and other replicas
/// are separate processes writing the same database; the store's change
/// marker (SQLite's data_version, a counter in PostgreSQL) tells us when
/// someone else committed, and we republish. PostgreSQL also pushes a
/// notification on every commit, which wakes this at once; the poll stays
/// as the catch-up for a notification that never came.
async fn watch_external_changes(network: Arc<Network>, every: Duration) {
    let mut last = network.store().external_change_marker().ok();
    let pushed = network.store().change_notifications();
    let mut ticker = tokio::time::interval(every);
    loop {
        match &pushed {
            Some(pushed) => tokio::select! {
                _ = ticker.tick() => {}
                () = pushed.notified() => {}
            },
            None => {
                ticker.tick().await;
            }
        }
        let network = network.clone();
        let result = tokio::task::spawn_blocking(move || {
            let marker = network.store().external_change_marker()?;
            Ok::<_, StoreError>((marker, network))
        })
        .await;
        let Ok(Ok((marker, network))) = result else {
            continue;
        };
        let expiry_due = network
            .current()
            .next_expiry
            .is_some_and(|t| t <= crate::now_unix());
        if Some(marker) != last || expiry_due {
            last = Some(marker);
            let started = std::time::Instant::now();
            let reloaded = tokio::task::spawn_blocking(move || network.reload()).await;
            match reloaded {
                Ok(Ok(())) => tracing::info!(
                    took_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "network reloaded (an admin command committed, or a node expired)"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "reload after external change failed"),
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }
}
