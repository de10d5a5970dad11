//! The relay server: a tokio shell around [`crate::core::RelayCore`].
//!
//! One task per connection (TLS handshake, HTTP upgrade, then frames in and
//! out), one per listener, one timer task, one task per binding socket. The
//! core sits behind one mutex that is never held across an await: a reader
//! decodes a whole batch of frames, takes the lock once to hand them over,
//! and wakes the destinations' tasks, which take the lock once to drain a
//! batch of up to 64 KiB of frames into a single TLS write.

mod binding;
mod conn;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rustynet_proto::SigningPublicKey;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{ConnId, Event, Limits, Now, RelayCore};
use crate::error::RelayError;
use crate::frame::Frame;
use crate::metrics::Metrics;

/// Longest the timer task sleeps; deadlines are honoured within this.
const TIMER_TICK: Duration = Duration::from_millis(250);

/// What a relay server needs.
#[derive(Clone)]
pub struct ServerConfig {
    /// TCP addresses for the TLS relay (port 0: any free port).
    pub listen: Vec<SocketAddr>,
    /// TLS 1.3 server configuration (see [`crate::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// Control signing keys whose tickets are accepted.
    pub control_keys: Vec<SigningPublicKey>,
    /// UDP addresses answering binding requests (two IPs let a node see
    /// whether its NAT mapping depends on the destination).
    pub binding: Vec<SocketAddr>,
    /// Address for a plain-HTTP Prometheus `/metrics` listener.
    pub metrics: Option<SocketAddr>,
    /// Caps, rates and timeouts.
    pub limits: Limits,
}

/// A bound, not yet running relay. [`RelayServer::run`] serves it.
pub struct RelayServer {
    listeners: Vec<TcpListener>,
    binding: Vec<UdpSocket>,
    metrics_listener: Option<TcpListener>,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    handshake_timeout: Duration,
}

/// See [`RelayServer::control_keys`].
#[derive(Clone)]
pub struct ControlKeys(Arc<Shared>);

impl ControlKeys {
    /// Accepts tickets signed by any of `keys` from now on (connections
    /// already logged in keep their admission; their next ticket update is
    /// checked against `keys`). An empty list is ignored: a relay that
    /// admits nobody is a misconfiguration, not a rotation.
    pub fn set(&self, keys: Vec<SigningPublicKey>) {
        if keys.is_empty() {
            return;
        }
        self.0.lock().core.set_control_keys(keys);
    }
}

/// Binds and serves `config` until `shutdown` completes.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    RelayServer::bind(config).await?.run(shutdown).await
}

/// State shared by every task.
pub(crate) struct Shared {
    state: Mutex<State>,
    metrics: Metrics,
}

pub(crate) struct State {
    pub(crate) core: RelayCore,
    handles: HashMap<ConnId, Arc<ConnHandle>>,
    next_id: u64,
}

/// How the core reaches a connection's task.
#[derive(Default)]
pub(crate) struct ConnHandle {
    /// Frames are pending, or the connection must close.
    pub(crate) wake: Notify,
    /// Set once when the core closes the connection: the final frame, if any.
    pub(crate) closing: OnceLock<Option<Frame>>,
}

impl Shared {
    /// The state, even if a panic elsewhere poisoned the lock (the core
    /// never panics on input, and a half-served relay beats a dead one).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Passes the core's events to the connection tasks.
    pub(crate) fn dispatch(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Writable(id) => {
                    if let Some(h) = self.handles.get(&id) {
                        h.wake.notify_one();
                    }
                }
                Event::Close { conn, last, .. } => {
                    if let Some(h) = self.handles.remove(&conn) {
                        let _ = h.closing.set(last);
                        h.wake.notify_one();
                    }
                }
            }
        }
    }

    /// The task for `id` ended (for `reason`).
    pub(crate) fn closed(&mut self, id: ConnId, reason: &'static str) {
        self.handles.remove(&id);
        self.core.handle_closed(id, reason);
        self.dispatch();
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, RelayError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RelayError::Bind { addr, source })
}

impl RelayServer {
    /// Binds every listener (failing if any cannot be bound).
    pub async fn bind(config: ServerConfig) -> Result<Self, RelayError> {
        if config.listen.is_empty() {
            return Err(RelayError::Config("no --listen address".into()));
        }
        if config.control_keys.is_empty() {
            return Err(RelayError::Config("no control key".into()));
        }
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(bind_tcp(*addr).await?);
        }
        let mut binding = Vec::new();
        for addr in &config.binding {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| RelayError::Bind {
                    addr: *addr,
                    source,
                })?;
            binding.push(socket);
        }
        let metrics_listener = match config.metrics {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let metrics = Metrics::default();
        let handshake_timeout = config.limits.handshake_timeout;
        let mut core = RelayCore::new(config.limits, config.control_keys, metrics.clone());
        if !binding.is_empty() {
            // The binding sockets also carry the UDP relay mode.
            core.enable_udp();
        }
        Ok(Self {
            listeners,
            binding,
            metrics_listener,
            acceptor: tokio_rustls::TlsAcceptor::from(config.tls),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    core,
                    handles: HashMap::new(),
                    next_id: 0,
                }),
                metrics,
            }),
            handshake_timeout,
        })
    }

    /// The TLS relay addresses, as bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The binding (UDP) addresses, as bound.
    pub fn binding_addrs(&self) -> Vec<SocketAddr> {
        self.binding
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// The `/metrics` address, as bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The relay's counters (to add to an embedding server's registry).
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// A handle that replaces the control keys whose tickets are accepted
    /// while the relay runs (a control server that rotates its signing key
    /// gives its embedded relay the new key and keeps the old one until the
    /// old tickets expire).
    pub fn control_keys(&self) -> ControlKeys {
        ControlKeys(Arc::clone(&self.shared))
    }

    /// Serves until `shutdown` completes, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        for listener in self.listeners {
            tasks.spawn(accept_loop(
                listener,
                self.acceptor.clone(),
                Arc::clone(&self.shared),
                self.handshake_timeout,
                cancel.clone(),
                tasks.clone(),
            ));
        }
        for socket in self.binding {
            tasks.spawn(binding::serve(
                socket,
                Arc::clone(&self.shared),
                cancel.clone(),
            ));
        }
        if let Some(listener) = self.metrics_listener {
            let metrics = self.shared.metrics.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                let serve = rustynet_service::metrics_http::serve_on(
                    listener,
                    move || metrics.render(),
                    rustynet_service::metrics_http::MAX_CONNECTIONS,
                );
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = serve => {}
                }
            });
        }
        tasks.spawn(timer_loop(Arc::clone(&self.shared), cancel.clone()));
        shutdown.await;
        tracing::info!("relay shutting down");
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    handshake_timeout: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = {
            let mut state = shared.lock();
            let id = ConnId(state.next_id);
            state.next_id += 1;
            match state.core.handle_accept(id, peer, Now::system()) {
                Ok(()) => {
                    let handle = Arc::new(ConnHandle::default());
                    state.handles.insert(id, Arc::clone(&handle));
                    Some((id, handle))
                }
                Err(_) => None,
            }
        };
        let Some((id, handle)) = admitted else {
            continue; // dropping `tcp` closes it
        };
        tasks.spawn(conn::run(
            conn::Accepted {
                tcp,
                peer,
                id,
                handle,
            },
            acceptor.clone(),
            Arc::clone(&shared),
            handshake_timeout,
            cancel.clone(),
        ));
    }
}

async fn timer_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let next = {
            let mut state = shared.lock();
            state.core.handle_timeout(Now::system());
            state.dispatch();
            state.core.next_timeout()
        };
        let tick = tokio::time::Instant::now() + TIMER_TICK;
        let wake = next.map_or(tick, |at| tokio::time::Instant::from_std(at).min(tick));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
