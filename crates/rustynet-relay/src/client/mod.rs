//! The node side of the relay: one thread per relay connection, made for
//! the thread-based dataplane engine (no async runtime needed).
//!
//! Why a hand-driven poll loop and not a tokio runtime on that thread: the
//! engine is built from plain threads and blocking batches, and the client's
//! work is the same shape: wait on one socket and one waker, move bytes
//! through rustls, call the sink. `mio` gives exactly that (epoll plus an
//! eventfd waker) with no executor, no task allocations and a predictable
//! stack; the TLS session is driven by hand (`tlsio`), as in the server.
//!
//! Sending is cheap for the hot path: [`RelayClient::send`] appends the frame
//! to a bounded byte queue under a short lock and wakes the thread only when
//! the queue was empty; the thread swaps the whole queue out and hands it to
//! rustls as one write, so many packets share a TLS record and a syscall.
//! When the socket is full the queue fills and `send` returns false (the
//! packet is dropped, as a congested UDP path would).

mod driver;
mod link;
mod machine;
mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustynet_proto::{NodeSigningKey, SignedEnvelope, TunnelPublicKey};

use crate::error::RelayError;
use crate::frame::{GoneReason, HEADER_LEN, KEY_LEN, MAX_PAYLOAD, RefuseCode, packet_header};

/// Probe bytes that may wait for the thread; probes are small and few.
const PROBE_QUEUE_BYTES: usize = 64 * 1024;

/// Where and how to connect.
pub struct ClientConfig {
    /// The relay's addresses, tried in turn.
    pub addrs: Vec<SocketAddr>,
    /// Name for SNI and the HTTP Host header (a DNS name or an IP).
    pub server_name: String,
    /// SHA-256 of the relay certificate's SubjectPublicKeyInfo (from the
    /// signed netmap): the only key the client accepts.
    pub cert_sha256: [u8; 32],
    /// `SO_MARK` for the TCP socket, so policy routing sends it around the
    /// tunnel and the kill switch admits it.
    pub fwmark: Option<u32>,
    /// The relay ticket control issued to this node.
    pub ticket: SignedEnvelope,
    /// The node's signing key (the ticket's `login_key`).
    pub login_key: NodeSigningKey,
    /// Timers.
    pub timeouts: ClientTimeouts,
    /// Data bytes that may wait for the thread before `send` drops.
    pub send_queue_bytes: usize,
    /// The relay's UDP address for the UDP relay mode (its first binding
    /// address); `None` keeps every packet on TLS.
    pub udp: Option<SocketAddr>,
}

/// The client's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// From starting an attempt to `LoginOk`.
    pub handshake: Duration,
    /// Ping interval while connected (keepalive and round-trip time).
    pub keepalive: Duration,
    /// A ping unanswered this long, with nothing else received, means the
    /// connection is dead.
    pub pong: Duration,
    /// First retry delay (the first retry waits 1–2.5× this).
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
            pong: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The connection's state, as reported to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// An attempt is in progress.
    Connecting,
    /// Logged in; `observed` is this node's address as the relay saw it.
    Connected {
        /// The TCP source address the relay saw.
        observed: SocketAddr,
    },
    /// Not connected; a retry is scheduled.
    Down {
        /// Why the last attempt or connection ended.
        reason: DownReason,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// TCP connect or socket setup failed.
    Connect(String),
    /// TLS failed (including a certificate key that is not the pinned one).
    Tls(String),
    /// The relay did not switch protocols.
    Upgrade(String),
    /// The relay refused the login.
    Refused {
        /// Which check failed.
        code: RefuseCode,
        /// The relay's short explanation.
        reason: String,
    },
    /// No login within the handshake deadline, or no answer to pings.
    Timeout,
    /// The relay closed the connection.
    Closed,
    /// The relay sent something this client does not accept.
    Protocol(String),
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::Connect(e) => write!(f, "connect: {e}"),
            DownReason::Tls(e) => write!(f, "TLS: {e}"),
            DownReason::Upgrade(e) => write!(f, "upgrade: {e}"),
            DownReason::Refused { code, reason } => write!(f, "refused ({code:?}): {reason}"),
            DownReason::Timeout => f.write_str("timed out"),
            DownReason::Closed => f.write_str("closed by the relay"),
            DownReason::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// What the client delivers to. Called on the client's own thread, so a
/// callback must not block for long, nor close or drop its `RelayClient`
/// (that joins the very thread running the callback).
pub trait ClientSink: Send + Sync {
    /// A relayed packet from `src` (`probe`: it came on the probe queue).
    /// Keep the borrow short; the buffer is reused.
    fn packet(&self, src: TunnelPublicKey, payload: &[u8], probe: bool);
    /// The connection changed state.
    fn state(&self, state: ConnState);
    /// The packets of one read have all been delivered: a sink that batches
    /// (e.g. writes to a TUN device in bulk) writes its batch out now.
    fn flush(&self) {}
    /// The relay could not deliver to `key` (not connected there, not
    /// allowed, or a ticket expired). Rate-limited by the relay.
    fn peer_gone(&self, key: TunnelPublicKey, reason: GoneReason) {
        let _ = (key, reason);
    }
    /// Send `datagram` (a UDP relay hello) to `to` from the tunnel's UDP
    /// socket. A sink that cannot leaves the UDP relay mode unused.
    fn send_udp(&self, to: SocketAddr, datagram: &[u8]) {
        let _ = (to, datagram);
    }
}

/// A relay connection kept up by its own thread. See the module docs.
pub struct RelayClient {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

/// What the engine's threads and the client thread share.
pub(crate) struct Inner {
    queues: Mutex<Queues>,
    up: AtomicBool,
    stop: AtomicBool,
    waker: mio::Waker,
    /// Microseconds; 0 = none.
    rtt_us: AtomicU64,
    state: Mutex<ConnState>,
    new_ticket: Mutex<Option<SignedEnvelope>>,
    queue_bytes: usize,
    udp: Mutex<udp::UdpState>,
    udp_addr: Option<SocketAddr>,
}

#[derive(Default)]
pub(crate) struct Queues {
    pub(crate) probe: Vec<u8>,
    pub(crate) data: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RelayClient {
    /// Starts the client thread, which connects at once and keeps
    /// reconnecting until [`RelayClient::close`].
    pub fn spawn(cfg: ClientConfig, sink: Arc<dyn ClientSink>) -> Result<Self, RelayError> {
        if cfg.addrs.is_empty() {
            return Err(RelayError::Config("relay client needs an address".into()));
        }
        let tls = crate::tls::client_config(cfg.cert_sha256)?;
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), driver::WAKE)?;
        let inner = Arc::new(Inner {
            queues: Mutex::new(Queues::default()),
            up: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waker,
            rtt_us: AtomicU64::new(0),
            state: Mutex::new(ConnState::Connecting),
            new_ticket: Mutex::new(None),
            queue_bytes: cfg.send_queue_bytes.max(MAX_PAYLOAD + HEADER_LEN + KEY_LEN),
            udp: Mutex::new(udp::UdpState::default()),
            udp_addr: cfg.udp,
        });
        let driver = driver::Driver::new(cfg, tls, poll, Arc::clone(&inner), sink)?;
        let thread = std::thread::Builder::new()
            .name("relay-client".into())
            .spawn(move || driver.run())?;
        Ok(Self {
            inner,
            thread: Some(thread),
        })
    }

    /// Queues `payload` for `dst`. Never blocks; false means dropped (not
    /// connected, queue full, or larger than a frame can carry).
    pub fn send(&self, dst: &TunnelPublicKey, payload: &[u8], probe: bool) -> bool {
        if !self.inner.up.load(Ordering::Acquire) || payload.len() > MAX_PAYLOAD {
            return false;
        }
        let frame_len = HEADER_LEN + KEY_LEN + payload.len();
        let was_empty = {
            let mut q = lock(&self.inner.queues);
            let was_empty = q.probe.is_empty() && q.data.is_empty();
            let (buf, cap) = if probe {
                (&mut q.probe, PROBE_QUEUE_BYTES)
            } else {
                (&mut q.data, self.inner.queue_bytes)
            };
            if buf.len() + frame_len > cap {
                return false;
            }
            buf.extend_from_slice(&packet_header(true, probe, dst, payload.len()));
            buf.extend_from_slice(payload);
            was_empty
        };
        if was_empty {
            let _ = self.inner.waker.wake();
        }
        true
    }

    /// Where a tunnel message for `dst` goes in UDP relay mode: the relay's
    /// UDP address and the id to write with [`crate::udp::encode`]. `None`:
    /// use [`RelayClient::send`] (UDP not working, or `dst`'s id not known
    /// yet: a lookup is then started).
    pub fn udp_route(&self, dst: &TunnelPublicKey) -> Option<(SocketAddr, u32)> {
        let to = self.inner.udp_addr?;
        let routed = lock(&self.inner.udp).route(dst, std::time::Instant::now());
        match routed {
            Ok(id) => Some((to, id)),
            Err(wake) => {
                if wake {
                    let _ = self.inner.waker.wake();
                }
                None
            }
        }
    }

    /// The relay's UDP address, when the mode is configured.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.inner.udp_addr
    }

    /// Whether UDP relay mode works now (the relay echoes our hellos).
    pub fn udp_ready(&self) -> bool {
        self.inner.udp_addr.is_some() && lock(&self.inner.udp).is_ready(std::time::Instant::now())
    }

    /// A datagram from the relay's UDP address: an echo of our hello
    /// (`None` returned, state updated) or a relayed tunnel message, turned
    /// back into the message in place; returns its sender. Anything else,
    /// or an id this client was not told, is `None` (drop it).
    pub fn udp_received(&self, datagram: &mut [u8]) -> Option<TunnelPublicKey> {
        if let Some(token) = crate::udp::parse_hello(datagram, true) {
            lock(&self.inner.udp).echoed(&token, std::time::Instant::now());
            return None;
        }
        let id = crate::udp::id_of(datagram)?;
        let key = lock(&self.inner.udp).key_of(id)?;
        crate::udp::decode(datagram);
        Some(key)
    }

    /// Replaces the ticket: sent to the relay now if connected, used for
    /// every later login either way.
    pub fn update_ticket(&self, ticket: SignedEnvelope) {
        *lock(&self.inner.new_ticket) = Some(ticket);
        let _ = self.inner.waker.wake();
    }

    /// The last round-trip time to the relay, while connected.
    pub fn rtt(&self) -> Option<Duration> {
        match self.inner.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Whether the connection is logged in (what [`RelayClient::state`]
    /// says as `Connected`, without its lock: for per-packet callers).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// The current state.
    pub fn state(&self) -> ConnState {
        lock(&self.inner.state).clone()
    }

    /// Stops the thread and waits for it (closing the connection).
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let _ = self.inner.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        self.stop();
    }
}
