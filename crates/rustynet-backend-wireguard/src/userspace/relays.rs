//! The engine's relay connections: one client thread per relay of the map,
//! the choice of a home relay, and the sink that feeds relayed packets into
//! the same receive path as UDP.
//!
//! The sink holds only a weak reference to the device: the device owns the
//! relay set, which owns the clients, which own the sink; a strong
//! reference would keep a stopped interface alive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustynet_proto::netmap::RelayInfo;
use rustynet_relay::{ClientConfig, ClientSink, ClientTimeouts, ConnState, RelayClient};
use rustynet_tunnel::{RelayLogin, RelayStatus, TunnelPublicKey};

use super::device::{Device, PeerTable, lock};
use super::rx::TunBatch;

/// Bytes of relayed data that may wait for a relay connection's thread.
const SEND_QUEUE_BYTES: usize = 4 << 20;
/// No home relay chosen yet.
const NO_HOME: usize = usize::MAX;

/// One relay and its connection.
pub(crate) struct RelayConn {
    pub(crate) info: RelayInfo,
    client: Arc<RelayClient>,
}

/// The relays of the current map.
#[derive(Default)]
pub(crate) struct RelaySet {
    pub(crate) conns: Vec<RelayConn>,
    home: AtomicUsize,
}

impl RelaySet {
    /// Connects to every relay of `infos`, keeping `old`'s connections to
    /// relays that did not change (they get the new ticket). Connections of
    /// relays no longer listed close when the last snapshot holding them is
    /// dropped (a data thread may hold one for the rest of its batch).
    pub(crate) fn build(
        old: &RelaySet,
        infos: &[RelayInfo],
        login: Option<&RelayLogin>,
        fwmark: Option<u32>,
        dev: &Arc<Device>,
    ) -> Self {
        let Some(login) = login else {
            return Self::empty();
        };
        let mut conns = Vec::with_capacity(infos.len());
        for info in infos {
            if let Some(prev) = old.conns.iter().find(|c| c.info == *info) {
                prev.client.update_ticket(login.ticket.clone());
                conns.push(RelayConn {
                    info: info.clone(),
                    client: Arc::clone(&prev.client),
                });
                continue;
            }
            match spawn(info, login, fwmark, dev) {
                Ok(client) => conns.push(RelayConn {
                    info: info.clone(),
                    client: Arc::new(client),
                }),
                Err(e) => {
                    tracing::warn!(relay = %info.name, error = %e, "cannot start relay client")
                }
            }
        }
        Self {
            conns,
            home: AtomicUsize::new(NO_HOME),
        }
    }

    fn empty() -> Self {
        Self {
            conns: Vec::new(),
            home: AtomicUsize::new(NO_HOME),
        }
    }

    /// The connection to use for a peer whose home relay is `name`: that
    /// relay if connected, else this node's home relay.
    pub(crate) fn pick(&self, name: Option<&str>) -> Option<&RelayConn> {
        if let Some(name) = name
            && let Some(c) = self.conns.iter().find(|c| c.info.name == name)
            && c.is_up()
        {
            return Some(c);
        }
        self.home()
    }

    /// This node's home relay: kept while it is up, else the connected relay
    /// with the lowest round trip.
    pub(crate) fn home(&self) -> Option<&RelayConn> {
        let current = self.home.load(Ordering::Relaxed);
        if let Some(c) = self.conns.get(current)
            && c.is_up()
        {
            return Some(c);
        }
        let best = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_up())
            .min_by_key(|(_, c)| c.client.rtt().unwrap_or(Duration::MAX))?;
        self.home.store(best.0, Ordering::Relaxed);
        Some(best.1)
    }

    /// Status of every relay.
    pub(crate) fn status(&self) -> Vec<RelayStatus> {
        let home = self.home().map(|c| c.info.name.clone());
        self.conns
            .iter()
            .map(|c| {
                let state = c.client.state();
                RelayStatus {
                    name: c.info.name.clone(),
                    connected: matches!(state, ConnState::Connected { .. }),
                    rtt: c.client.rtt(),
                    error: match state {
                        ConnState::Down { reason } => Some(reason.to_string()),
                        _ => None,
                    },
                    home: home.as_deref() == Some(c.info.name.as_str()),
                    udp: c.udp_ready(),
                }
            })
            .collect()
    }

    /// The connection whose UDP relay address is `src`.
    pub(crate) fn by_udp_addr(&self, src: SocketAddr) -> Option<&RelayConn> {
        self.conns.iter().find(|c| c.client.udp_addr() == Some(src))
    }

    /// Binding (STUN) addresses of every relay.
    pub(crate) fn binding_addrs(&self) -> Vec<SocketAddr> {
        self.conns
            .iter()
            .flat_map(|c| c.info.stun.clone())
            .collect()
    }
}

impl RelayConn {
    /// Logged in and usable (an atomic load: the data path asks per packet).
    pub(crate) fn is_up(&self) -> bool {
        self.client.is_up()
    }

    /// Queues a packet for `dst`; false when it was dropped.
    pub(crate) fn send(&self, dst: &TunnelPublicKey, payload: &[u8], probe: bool) -> bool {
        self.client.send(dst, payload, probe)
    }

    /// The relay's UDP address and `dst`'s id there, when UDP relay mode
    /// works for `dst` (else a lookup starts and TLS carries the packet).
    pub(crate) fn udp_route(&self, dst: &TunnelPublicKey) -> Option<(SocketAddr, u32)> {
        self.client.udp_route(dst)
    }

    /// Whether UDP relay mode works with this relay now.
    pub(crate) fn udp_ready(&self) -> bool {
        self.client.udp_ready()
    }

    /// A datagram from this relay's UDP address: see
    /// [`RelayClient::udp_received`].
    pub(crate) fn udp_received(&self, datagram: &mut [u8]) -> Option<TunnelPublicKey> {
        self.client.udp_received(datagram)
    }

    /// Keepalive round trip.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.client.rtt()
    }
}

fn spawn(
    info: &RelayInfo,
    login: &RelayLogin,
    fwmark: Option<u32>,
    dev: &Arc<Device>,
) -> Result<RelayClient, rustynet_relay::RelayError> {
    let cfg = ClientConfig {
        addrs: info.addrs.clone(),
        server_name: info.server_name.clone(),
        cert_sha256: info.cert_sha256.0,
        fwmark,
        ticket: login.ticket.clone(),
        login_key: rustynet_proto::NodeSigningKey::from_seed(&login.login_seed),
        timeouts: ClientTimeouts::default(),
        send_queue_bytes: SEND_QUEUE_BYTES,
        // UDP relay mode goes to the relay's first binding address.
        udp: info.stun.first().copied(),
    };
    let sink = Arc::new(Sink {
        dev: Arc::downgrade(dev),
        relay: info.name.clone(),
        rx: Mutex::new(SinkRx::new()),
    });
    RelayClient::spawn(cfg, sink)
}

/// Buffers of the relay thread's receive path, and the peer table and time
/// of the read being delivered (taken once per read, not per packet).
struct SinkRx {
    batch: TunBatch,
    scratch: Vec<u8>,
    read: Option<(Arc<PeerTable>, Instant)>,
}

impl SinkRx {
    fn new() -> Self {
        Self {
            batch: TunBatch::new(),
            scratch: vec![0u8; super::rx::RECV_BUF],
            read: None,
        }
    }
}

/// Where a relay client delivers. Called only from that client's thread,
/// so the buffers' lock is never contended.
struct Sink {
    dev: Weak<Device>,
    relay: String,
    rx: Mutex<SinkRx>,
}

impl ClientSink for Sink {
    fn packet(&self, src: TunnelPublicKey, payload: &[u8], probe: bool) {
        let Some(dev) = self.dev.upgrade() else {
            return;
        };
        let mut rx = lock(&self.rx);
        let SinkRx {
            batch,
            scratch,
            read,
        } = &mut *rx;
        let (table, now) = read.get_or_insert_with(|| (dev.table(), Instant::now()));
        super::rx::handle_relayed(
            &dev,
            table,
            &self.relay,
            src,
            payload,
            probe,
            batch,
            scratch,
            *now,
        );
    }

    fn send_udp(&self, to: SocketAddr, datagram: &[u8]) {
        if let Some(dev) = self.dev.upgrade() {
            dev.udp.send(to, datagram, None, dev.waker.fd());
        }
    }

    fn flush(&self) {
        let Some(dev) = self.dev.upgrade() else {
            return;
        };
        let mut rx = lock(&self.rx);
        rx.batch.flush(&dev);
        rx.read = None;
    }

    fn state(&self, state: ConnState) {
        tracing::info!(relay = %self.relay, ?state, "relay connection");
        if let Some(dev) = self.dev.upgrade() {
            dev.paths.relays_changed();
        }
    }
}
