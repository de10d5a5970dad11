//! Outbound worker: TUN -> encrypt -> UDP (or the relay, per the peer's route).
//!
//! One `read` on the TUN returns a TSO super-packet (up to 64 KiB) that
//! `recv_multiple` splits into MTU-sized segments. Consecutive segments for
//! the same peer encrypt to datagrams of equal size, so they are written into
//! one contiguous buffer and leave in a single `sendmsg` with UDP GSO. Every
//! buffer is allocated once at thread start; the loop itself never allocates
//! (boringtun copies a packet only while a handshake is pending).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::{Tunn, TunnResult};
use rustynet_tunnel::MAX_MTU;

use super::device::{Device, Peer, PeerTable, lock};
use super::net::{Ready, wait};
use super::paths::{self, Bytes};
use super::relay_tx::{MirrorRun, RelayCache};
use crate::path::Route;

/// Largest UDP payload one GSO send may carry.
pub(super) const MAX_GSO_BYTES: usize = 64_000;
/// Most segments per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 or more).
const MAX_GSO_SEGMENTS: usize = 64;
/// A data message adds a 16-byte header and a 16-byte tag.
pub(super) const DATA_OVERHEAD: usize = 32;
/// boringtun wants at least this much room for a handshake initiation.
const MIN_DST: usize = 148;
/// Type byte of a transport data message.
const MSG_DATA: u8 = 4;

/// Equal-size encrypted datagrams waiting to leave as one GSO send.
struct GsoBatch {
    buf: Vec<u8>,
    used: usize,
    seg: usize,
    count: usize,
    /// The last segment was shorter: GSO allows that only at the end.
    closed: bool,
    peer: Option<Arc<Peer>>,
    dest: Option<SocketAddr>,
    /// The run goes to a relay's UDP address (UDP relay mode).
    relayed: bool,
    max_segments: usize,
    relays: RelayCache,
    /// The relay's copies while the route is `Both`.
    mirror: MirrorRun,
}

impl GsoBatch {
    fn new(max_segments: usize) -> Self {
        Self {
            buf: vec![0u8; MAX_GSO_BYTES + usize::from(MAX_MTU) + MIN_DST + DATA_OVERHEAD],
            used: 0,
            seg: 0,
            count: 0,
            closed: false,
            peer: None,
            dest: None,
            relayed: false,
            max_segments: max_segments.clamp(1, MAX_GSO_SEGMENTS),
            relays: RelayCache::default(),
            mirror: MirrorRun::new(max_segments.clamp(1, MAX_GSO_SEGMENTS)),
        }
    }

    /// The end of a TUN read: everything out, the relay lookups forgotten.
    fn finish(&mut self, dev: &Device) {
        self.flush(dev);
        self.mirror.flush(dev);
        self.relays.clear();
    }

    fn flush(&mut self, dev: &Device) {
        if self.count > 0 {
            self.send_run(dev, self.used);
        }
        self.used = 0;
        self.count = 0;
        self.seg = 0;
        self.closed = false;
        self.peer = None;
        self.dest = None;
    }

    /// Encrypts one plaintext packet for the peer that owns its destination
    /// and sends it along the peer's route: batched for GSO when it goes to
    /// a direct address, straight to the relay client otherwise (both while
    /// the direct address is in doubt).
    fn push(&mut self, dev: &Device, table: &PeerTable, packet: &[u8], now_ns: u64) {
        let Some(dst) = Tunn::dst_address(packet) else {
            return;
        };
        // Cryptokey routing: no owner, no send.
        let Some(peer) = table.routes.lookup(dst) else {
            return;
        };
        let route = peer.path.route();
        // UDP relay mode: the datagram joins a GSO run to the relay's UDP
        // address, its first four bytes rewritten after encryption.
        let mut udp_relay = None;
        // Route::Both: a copy to the relay too (either way it works).
        let (dest, relay, tls_only) = match route {
            Route::None => return,
            Route::Direct(addr) => (Some(addr), false, false),
            Route::Both(addr) => (Some(addr), true, false),
            Route::Relay => match self.relays.udp_route(dev, peer) {
                Some((to, id)) => {
                    udp_relay = Some(id);
                    (Some(to), false, false)
                }
                None => (None, false, true),
            },
        };
        peer.path.note_tx(now_ns);
        let same_run = self.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, peer))
            && self.dest.is_some()
            && self.dest == dest
            && self.relayed == udp_relay.is_some();
        let room = (packet.len() + DATA_OVERHEAD).max(MIN_DST);
        if !same_run
            || self.closed
            || self.count >= self.max_segments
            || self.used + room > MAX_GSO_BYTES
        {
            self.flush(dev);
        }
        let (len, kind) = {
            let area = &mut self.buf[self.used..self.used + room];
            match lock(&peer.tunn).encapsulate(packet, area) {
                TunnResult::WriteToNetwork(out) => (out.len(), out.first().copied()),
                TunnResult::Err(e) => {
                    tracing::trace!(error = ?e, "encapsulate failed");
                    return;
                }
                // Queued until the handshake completes.
                _ => return,
            }
        };
        let start = self.used;
        if let Some(id) = udp_relay
            && !rustynet_relay::udp::encode(&mut self.buf[start..start + len], id)
        {
            return;
        }
        if relay {
            // The relay's copy (Route::Both): data joins the mirror's GSO
            // run, in UDP relay mode; the rest goes on its own.
            let datagram = &self.buf[start..start + len];
            match self.relays.udp_route(dev, peer) {
                Some((to, id)) if kind == Some(MSG_DATA) => {
                    self.mirror.push(dev, peer, to, id, datagram);
                }
                Some(_) => {
                    paths::relay_send(dev, peer, datagram, false);
                }
                None => self.relays.send_tls(dev, peer, datagram),
            }
        }
        if tls_only {
            self.relays
                .send_tls(dev, peer, &self.buf[start..start + len]);
        }
        let Some(dest) = dest else {
            return;
        };
        if kind != Some(MSG_DATA) {
            // A handshake initiation: send it on its own, keep the batch.
            dev.udp
                .send(dest, &self.buf[start..start + len], None, dev.waker.fd());
            peer.path.add_bytes(tx_bytes(udp_relay.is_some()), len);
            return;
        }
        if self.count == 0 {
            self.relayed = udp_relay.is_some();
            self.start_run(peer, dest, len);
        } else if len == self.seg {
            self.count += 1;
            self.used += len;
        } else if len < self.seg {
            self.count += 1;
            self.used += len;
            self.closed = true;
        } else {
            // Longer than the run's segment size: send the run, then move
            // this datagram to the front as the start of a new one.
            self.send_run(dev, start);
            self.buf.copy_within(start..start + len, 0);
            self.used = 0;
            self.count = 0;
            self.closed = false;
            self.relayed = udp_relay.is_some();
            self.start_run(peer, dest, len);
        }
    }

    /// Sends the first `len` bytes of the batch as one GSO run.
    fn send_run(&mut self, dev: &Device, len: usize) {
        if let (Some(dest), Some(peer)) = (self.dest, self.peer.as_ref()) {
            dev.udp
                .send(dest, &self.buf[..len], Some(self.seg), dev.waker.fd());
            peer.path.add_bytes(tx_bytes(self.relayed), len);
        }
    }

    fn start_run(&mut self, peer: &Arc<Peer>, dest: SocketAddr, len: usize) {
        self.peer = Some(Arc::clone(peer));
        self.dest = Some(dest);
        self.seg = len;
        self.count = 1;
        self.used += len;
        self.closed = false;
    }
}

/// Which byte counter a datagram sent on the UDP socket adds to.
fn tx_bytes(udp_relay: bool) -> Bytes {
    if udp_relay {
        Bytes::RelayTx
    } else {
        Bytes::DirectTx
    }
}

/// Whether a TUN read/write error means the interface no longer exists.
pub(crate) fn is_gone_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::ENODEV))
}

/// Runs until stop is requested or the TUN disappears.
pub(crate) fn run(dev: &Device) {
    let batch = tun_rs::IDEAL_BATCH_SIZE;
    let mut original = vec![0u8; tun_rs::VIRTIO_NET_HDR_LEN + 65_535];
    let mut bufs = vec![vec![0u8; usize::from(MAX_MTU) + 64]; batch];
    let mut sizes = vec![0usize; batch];
    let mut gso = GsoBatch::new(dev.udp.max_gso_segments());
    let tun_fd = std::os::fd::AsRawFd::as_raw_fd(&dev.tun);
    while !dev.is_stopping() {
        let n = match dev
            .tun
            .recv_multiple(&mut original, &mut bufs, &mut sizes, 0)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait(tun_fd, libc::POLLIN, dev.waker.fd(), -1) {
                    Ready::Io | Ready::Timeout => continue,
                    Ready::Wake => return,
                    Ready::Broken => {
                        dev.mark_gone();
                        return;
                    }
                }
            }
            Err(e) if is_gone_error(&e) => {
                dev.mark_gone();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "TUN read failed");
                continue;
            }
        };
        let table = dev.table();
        let now_ns = paths::now_ns(dev);
        for (buf, size) in bufs.iter().zip(sizes.iter()).take(n) {
            gso.push(dev, &table, &buf[..*size], now_ns);
        }
        gso.finish(dev);
    }
}
