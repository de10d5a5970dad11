//! The outbound worker's relay side: the relay lookups it makes once per
//! TUN read instead of once per packet, and the GSO run that carries the
//! relay's copies while a peer's route is `Both`.

use std::net::SocketAddr;
use std::sync::Arc;

use rustynet_tunnel::MAX_MTU;

use super::device::{Device, Peer};
use super::paths::Bytes;
use super::relays::RelaySet;
use super::tx::{DATA_OVERHEAD, MAX_GSO_BYTES};

/// The relay's UDP address and a peer's id there.
type UdpRoute = (SocketAddr, u32);

/// The relay set and relayed peers' UDP relay routes as of this TUN read.
/// Looking them up costs a lock, a clock read and a hash per call; a read
/// carries up to 64 KiB for mostly one peer, so once per read is enough
/// (a route that changes applies from the next read, microseconds later).
#[derive(Default)]
pub(super) struct RelayCache {
    set: Option<Arc<RelaySet>>,
    /// Per peer: the relay's UDP address and the peer's id there, or `None`
    /// (TLS carries its packets). A handful of peers per read at most.
    routes: Vec<(Arc<Peer>, Option<UdpRoute>)>,
}

impl RelayCache {
    fn set(&mut self, dev: &Device) -> &RelaySet {
        self.set.get_or_insert_with(|| dev.paths.relays())
    }

    pub(super) fn udp_route(&mut self, dev: &Device, peer: &Arc<Peer>) -> Option<UdpRoute> {
        if let Some((_, route)) = self.routes.iter().find(|(p, _)| Arc::ptr_eq(p, peer)) {
            return *route;
        }
        let route = self
            .set(dev)
            .pick(peer.config.home_relay.as_deref())
            .and_then(|c| c.udp_route(&peer.key));
        self.routes.push((Arc::clone(peer), route));
        route
    }

    /// Queues a datagram on the peer's TLS relay connection.
    pub(super) fn send_tls(&mut self, dev: &Device, peer: &Peer, datagram: &[u8]) {
        let Some(conn) = self.set(dev).pick(peer.config.home_relay.as_deref()) else {
            return;
        };
        if conn.send(&peer.key, datagram, false) {
            peer.path.add_bytes(Bytes::RelayTx, datagram.len());
        }
    }

    /// Forgets everything (the end of a TUN read).
    pub(super) fn clear(&mut self) {
        self.set = None;
        self.routes.clear();
    }
}

/// Copies of data datagrams for the relay's UDP address while the route is
/// `Both` (the direct address is in doubt, so every packet also goes
/// through the relay). They leave as GSO runs like the direct ones: a copy
/// per datagram is far cheaper than the syscall per datagram it replaces.
pub(super) struct MirrorRun {
    buf: Vec<u8>,
    used: usize,
    seg: usize,
    count: usize,
    /// The last datagram was shorter: GSO allows that only at the end.
    closed: bool,
    peer: Option<Arc<Peer>>,
    dest: Option<SocketAddr>,
    max_segments: usize,
}

impl MirrorRun {
    pub(super) fn new(max_segments: usize) -> Self {
        Self {
            buf: vec![0u8; MAX_GSO_BYTES + usize::from(MAX_MTU) + DATA_OVERHEAD],
            used: 0,
            seg: 0,
            count: 0,
            closed: false,
            peer: None,
            dest: None,
            max_segments,
        }
    }

    /// Adds a copy of `datagram` (an encrypted data message) for `peer`,
    /// to go to the relay's UDP address `to` with the peer's `id` there.
    pub(super) fn push(
        &mut self,
        dev: &Device,
        peer: &Arc<Peer>,
        to: SocketAddr,
        id: u32,
        datagram: &[u8],
    ) {
        let len = datagram.len();
        let same_run = self.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, peer))
            && self.dest == Some(to)
            && !self.closed
            && self.count < self.max_segments
            && len <= self.seg
            && self.used + len <= MAX_GSO_BYTES;
        if !same_run {
            self.flush(dev);
        }
        let copy = &mut self.buf[self.used..self.used + len];
        copy.copy_from_slice(datagram);
        if !rustynet_relay::udp::encode(copy, id) {
            return;
        }
        if self.count == 0 {
            self.peer = Some(Arc::clone(peer));
            self.dest = Some(to);
            self.seg = len;
        } else if len < self.seg {
            self.closed = true;
        }
        self.count += 1;
        self.used += len;
    }

    pub(super) fn flush(&mut self, dev: &Device) {
        if let (Some(dest), Some(peer)) = (self.dest, self.peer.as_ref())
            && self.count > 0
        {
            dev.udp.send(
                dest,
                &self.buf[..self.used],
                (self.count > 1).then_some(self.seg),
                dev.waker.fd(),
            );
            peer.path.add_bytes(Bytes::RelayTx, self.used);
        }
        self.used = 0;
        self.count = 0;
        self.seg = 0;
        self.closed = false;
        self.peer = None;
        self.dest = None;
    }
}
