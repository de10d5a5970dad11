//! The tokio shell around [`ResolverConfig::decide`]: one UDP socket and one
//! TCP listener on the same address, bounded in connections and in-flight
//! upstream queries so a flood costs bounded memory.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rand_core::{OsRng, RngCore};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::answer::{self, MAX_MESSAGE, MIN_UDP_PAYLOAD};
use crate::config::ResolverConfig;
use crate::decide::{AnswerKind, Decision, Forward};
use crate::metrics::{Counters, DnsMetrics, bump};
use crate::upstream::UpstreamTransport;

/// Who may query the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everyone who can reach the address (the node-local 100.100.100.100).
    Any,
    /// Only sources inside these prefixes, e.g. the exit clients on an exit
    /// node's tunnel address. Others get REFUSED.
    Prefixes(Vec<IpNet>),
}

impl Access {
    /// Whether `source` may query.
    pub fn allows(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        match self {
            Access::Any => true,
            Access::Prefixes(prefixes) => prefixes.iter().any(|p| p.contains(&source)),
        }
    }
}

/// Resource bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open TCP connections; further connections are closed at accept.
    pub max_tcp_connections: usize,
    /// Upstream queries in flight; further forwarded queries get SERVFAIL.
    pub max_in_flight: usize,
    /// A TCP connection that sends nothing (or stalls mid-message) this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Total time for one forwarded query, shared by the resolvers tried.
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tcp_connections: 64,
            max_in_flight: 256,
            tcp_idle_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// How the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// UDP and TCP address (`100.100.100.100:53` in the daemon; port 0 picks one).
    pub listen: SocketAddr,
    /// Source-address check.
    pub access: Access,
    /// Resource bounds.
    pub limits: Limits,
    /// `IP_FREEBIND`: bind before the address is configured on an interface.
    pub freebind: bool,
}

impl ServerConfig {
    /// Listens on `listen`, open to everyone, default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            access: Access::Any,
            limits: Limits::default(),
            freebind: false,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Creating or binding a listening socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A limit is zero (which would refuse every query) or absurdly large.
    #[error("limit {0} must be between 1 and 1048576")]
    Limit(&'static str),
}

/// A running resolver. Dropping it (or [`DnsServer::shutdown`]) stops every task.
#[derive(Debug)]
pub struct DnsServer {
    handle: DnsHandle,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A cloneable handle to a running server: swap its configuration, read metrics.
#[derive(Clone)]
pub struct DnsHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DnsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHandle")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

struct Shared {
    resolver: watch::Sender<Arc<ResolverConfig>>,
    access: watch::Sender<Arc<Access>>,
    counters: Counters,
    transport: Arc<dyn UpstreamTransport>,
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    limits: Limits,
}

/// What to do after the synchronous part of handling a packet.
enum Step {
    Reply(Vec<u8>, u16),
    Nothing,
    Forward(Box<Forward>, OwnedSemaphorePermit),
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` and starts serving `resolver`
    /// on the current tokio runtime, forwarding through `transport`.
    pub async fn start(
        config: ServerConfig,
        resolver: ResolverConfig,
        transport: Arc<dyn UpstreamTransport>,
    ) -> Result<Self, ServerError> {
        let limits = config.limits;
        let max_tcp = permits(limits.max_tcp_connections, "max_tcp_connections")?;
        let max_in_flight = permits(limits.max_in_flight, "max_in_flight")?;
        let (udp, tcp) = bind(config.listen, config.freebind)?;
        let bind_err = |source| ServerError::Bind {
            addr: config.listen,
            source,
        };
        let local_addr = udp.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            resolver: watch::Sender::new(Arc::new(resolver)),
            access: watch::Sender::new(Arc::new(config.access)),
            counters: Counters::default(),
            transport,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            connections: Arc::new(Semaphore::new(max_tcp)),
            limits,
        });
        let (stop, _) = watch::channel(false);
        let udp = Arc::new(udp);
        let tasks = vec![
            tokio::spawn(udp_loop(udp, Arc::clone(&shared), stop.subscribe())),
            tokio::spawn(tcp_loop(tcp, Arc::clone(&shared), stop.subscribe())),
        ];
        tracing::info!(%local_addr, "resolver listening");
        Ok(Self {
            handle: DnsHandle { shared },
            local_addr,
            stop,
            tasks,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for configuration updates and metrics.
    pub fn handle(&self) -> DnsHandle {
        self.handle.clone()
    }

    /// Stops listening, ends open connections and in-flight forwards, and
    /// waits for all of them (the sockets are closed on return).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            if let Err(error) = task.await {
                tracing::warn!(%error, "resolver task ended abnormally");
            }
        }
        // Every connection and forward holds a permit until its task has
        // dropped its sockets; holding all permits means they are all gone.
        let shared = &self.handle.shared;
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
            let all = |limit: usize| u32::try_from(limit).unwrap_or(u32::MAX);
            let in_flight = shared
                .in_flight
                .acquire_many(all(shared.limits.max_in_flight));
            let connections = shared
                .connections
                .acquire_many(all(shared.limits.max_tcp_connections));
            drop((in_flight.await, connections.await));
        })
        .await;
        if drained.is_err() {
            tracing::warn!("resolver tasks still running after shutdown");
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl DnsHandle {
    /// Serves `resolver` from the next query on (a new netmap or exit choice);
    /// queries already being handled finish with the snapshot they started with.
    pub fn update(&self, resolver: ResolverConfig) {
        self.shared.resolver.send_replace(Arc::new(resolver));
    }

    /// Replaces the source-address check.
    pub fn set_access(&self, access: Access) {
        self.shared.access.send_replace(Arc::new(access));
    }

    /// The snapshot currently served.
    pub fn resolver(&self) -> Arc<ResolverConfig> {
        Arc::clone(&self.shared.resolver.borrow())
    }

    /// The counters so far.
    pub fn metrics(&self) -> DnsMetrics {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    /// Everything that needs no waiting: access check, decision, permit.
    fn step(&self, packet: &[u8], source: IpAddr) -> Step {
        let counters = &self.counters;
        bump(&counters.queries);
        if !self.access.borrow().allows(source) {
            return match answer::refused(packet) {
                Some(bytes) => {
                    bump(&counters.refused);
                    Step::Reply(bytes, MIN_UDP_PAYLOAD)
                }
                None => {
                    bump(&counters.malformed);
                    Step::Nothing
                }
            };
        }
        let resolver = Arc::clone(&self.resolver.borrow());
        match resolver.decide(packet) {
            Decision::Drop => {
                bump(&counters.malformed);
                Step::Nothing
            }
            Decision::Answer(reply) => {
                bump(match reply.kind {
                    AnswerKind::Local => &counters.answered_local,
                    AnswerKind::Malformed | AnswerKind::NotImplemented => &counters.malformed,
                    AnswerKind::FailClosed => &counters.servfail,
                });
                Step::Reply(reply.bytes, reply.udp_limit)
            }
            Decision::Forward(forward) => match Arc::clone(&self.in_flight).try_acquire_owned() {
                Ok(permit) => {
                    bump(&counters.forwarded);
                    Step::Forward(forward, permit)
                }
                Err(_) => {
                    bump(&counters.busy);
                    bump(&counters.servfail);
                    match forward.servfail() {
                        Some(bytes) => Step::Reply(bytes, forward.udp_limit),
                        None => Step::Nothing,
                    }
                }
            },
        }
    }

    /// Asks the route's resolvers in order within the time budget; SERVFAIL
    /// when none answers. Never tries a resolver outside `forward.to`.
    async fn resolve_upstream(&self, forward: &Forward) -> Option<Vec<u8>> {
        let attempts = u32::try_from(forward.to.len()).unwrap_or(u32::MAX).max(1);
        let per_server = self.limits.upstream_timeout / attempts;
        for &server in &forward.to {
            let query = forward.upstream_query(random_id());
            match tokio::time::timeout(per_server, self.transport.exchange(server, &query)).await {
                Ok(Ok(reply)) => match forward.relay(&query, &reply) {
                    Some(bytes) => return Some(bytes),
                    None => tracing::debug!(%server, "upstream reply rejected"),
                },
                Ok(Err(error)) => tracing::debug!(%server, %error, "upstream exchange failed"),
                Err(_) => tracing::debug!(%server, "upstream timed out"),
            }
        }
        bump(&self.counters.upstream_failures);
        bump(&self.counters.servfail);
        forward.servfail()
    }
}

/// Upper bound on a limit, so permits fit a semaphore and memory stays sane.
const MAX_LIMIT: usize = 1 << 20;

/// How long [`DnsServer::shutdown`] waits for connections and forwards to end.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

fn permits(limit: usize, name: &'static str) -> Result<usize, ServerError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ServerError::Limit(name));
    }
    Ok(limit)
}

/// Resolves once shutdown is requested (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A fresh query id per upstream exchange (RFC 5452: unpredictable ids).
fn random_id() -> u16 {
    let [a, b, ..] = OsRng.next_u32().to_be_bytes();
    u16::from_be_bytes([a, b])
}

async fn udp_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let received = tokio::select! {
            () = stopped(&mut stop) => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, client) = match received {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        match shared.step(packet, client.ip()) {
            Step::Nothing => {}
            Step::Reply(bytes, limit) => send_udp(&socket, client, bytes, limit).await,
            Step::Forward(forward, permit) => {
                let socket = Arc::clone(&socket);
                let shared = Arc::clone(&shared);
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stopped(&mut stop) => {}
                        reply = shared.resolve_upstream(&forward) => {
                            if let Some(bytes) = reply {
                                send_udp(&socket, client, bytes, forward.udp_limit).await;
                            }
                        }
                    }
                    // The permit goes last: shutdown counts on it meaning
                    // "this task holds no socket any more".
                    drop(socket);
                    drop(permit);
                });
            }
        }
    }
}

async fn send_udp(socket: &UdpSocket, client: SocketAddr, bytes: Vec<u8>, limit: u16) {
    let bytes = answer::fit(bytes, usize::from(limit));
    if let Err(error) = socket.send_to(&bytes, client).await {
        tracing::debug!(%client, %error, "udp send failed");
    }
}

async fn tcp_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::debug!(%error, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            bump(&shared.counters.tcp_rejected);
            drop(stream);
            continue;
        };
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopped(&mut stop) => {}
                () = serve_tcp(stream, client, &shared) => {}
            }
            drop(permit);
        });
    }
}

/// Serves length-prefixed messages (RFC 7766) until the client closes, idles
/// out, or stalls mid-message.
async fn serve_tcp(mut stream: TcpStream, client: SocketAddr, shared: &Shared) {
    let idle = shared.limits.tcp_idle_timeout;
    let mut message = Vec::new();
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(idle, stream.read_u16()).await else {
            return;
        };
        if len == 0 {
            return;
        }
        message.resize(usize::from(len), 0);
        let Ok(Ok(_)) = tokio::time::timeout(idle, stream.read_exact(&mut message)).await else {
            return;
        };
        let reply = match shared.step(&message, client.ip()) {
            Step::Nothing => continue,
            Step::Reply(bytes, _) => bytes,
            Step::Forward(forward, permit) => {
                let reply = shared.resolve_upstream(&forward).await;
                drop(permit);
                match reply {
                    Some(bytes) => bytes,
                    None => continue,
                }
            }
        };
        let reply = answer::fit(reply, MAX_MESSAGE);
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(
            tokio::time::timeout(idle, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Binds UDP and TCP on the same address; with port 0, retries until both
/// get the same port.
fn bind(addr: SocketAddr, freebind: bool) -> Result<(UdpSocket, TcpListener), ServerError> {
    let bind_err = |source| ServerError::Bind { addr, source };
    let mut last_error = None;
    for _ in 0..16 {
        let udp = socket(addr, Type::DGRAM, Protocol::UDP, freebind).map_err(bind_err)?;
        udp.bind(&addr.into()).map_err(bind_err)?;
        let udp_addr = udp
            .local_addr()
            .map_err(bind_err)?
            .as_socket()
            .ok_or_else(|| bind_err(io::Error::from(io::ErrorKind::AddrNotAvailable)))?;
        let tcp = socket(udp_addr, Type::STREAM, Protocol::TCP, freebind).map_err(bind_err)?;
        tcp.set_reuse_address(true).map_err(bind_err)?;
        match tcp.bind(&udp_addr.into()) {
            Ok(()) => {
                tcp.listen(1024).map_err(bind_err)?;
                let udp = UdpSocket::from_std(udp.into()).map_err(bind_err)?;
                let tcp = TcpListener::from_std(tcp.into()).map_err(bind_err)?;
                return Ok((udp, tcp));
            }
            Err(error) if addr.port() == 0 && error.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(error);
            }
            Err(error) => return Err(bind_err(error)),
        }
    }
    Err(bind_err(last_error.unwrap_or_else(|| {
        io::Error::from(io::ErrorKind::AddrInUse)
    })))
}

fn socket(addr: SocketAddr, kind: Type, proto: Protocol, freebind: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(proto))?;
    if freebind {
        match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}
