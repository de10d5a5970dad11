//! Inbound worker: UDP -> decrypt -> cryptokey check -> TUN.
//!
//! `recvmmsg` fills up to 32 buffers, each possibly a GRO train of equal-size
//! datagrams (`stride`). Decrypted packets go into TUN buffers with
//! virtio-net headroom; `send_multiple` with a `GROTable` coalesces TCP
//! segments into large packets, so the kernel sees a few big writes instead of
//! one per datagram. Buffers are allocated once per thread.
//!
//! Input from the network is untrusted: every packet is parsed by boringtun,
//! which returns errors (never panics) for malformed data, and only packets
//! that decrypted under a peer's session may move that peer's endpoint.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use bytes::BytesMut;
use quinn_udp::RecvMeta;
use rustynet_tunnel::TunnelPublicKey;
use tun_rs::GROTable;

use super::device::{Device, Peer, PeerTable, lock};
use super::net::{Ready, canonical, wait};
use super::tx::is_gone_error;

/// Room for one GRO train (the kernel caps it at 64 KiB).
const RECV_BUF: usize = 65_536;
/// Type byte of a cookie reply: sending one proves nothing about the peer.
const MSG_COOKIE_REPLY: u8 = 3;
/// Headroom the TUN needs in front of each packet for the virtio-net header.
const TUN_OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// Decrypted packets waiting for one `send_multiple` to the TUN.
struct TunBatch {
    bufs: Vec<BytesMut>,
    len: usize,
    gro: GROTable,
}

impl TunBatch {
    fn new() -> Self {
        Self {
            bufs: (0..tun_rs::IDEAL_BATCH_SIZE)
                .map(|_| BytesMut::with_capacity(TUN_OFFSET + RECV_BUF))
                .collect(),
            len: 0,
            gro: GROTable::new(),
        }
    }

    /// A zeroed slot of `room` bytes (after the headroom) for the next packet.
    fn slot(&mut self, dev: &Device, room: usize) -> &mut [u8] {
        if self.len == self.bufs.len() {
            self.flush(dev);
        }
        let buf = &mut self.bufs[self.len];
        buf.clear();
        buf.resize(TUN_OFFSET + room, 0);
        &mut buf[TUN_OFFSET..]
    }

    /// Keeps the packet just written into the current slot.
    fn commit(&mut self, len: usize) {
        self.bufs[self.len].truncate(TUN_OFFSET + len);
        self.len += 1;
    }

    fn flush(&mut self, dev: &Device) {
        if self.len == 0 {
            return;
        }
        if let Err(e) = dev
            .tun
            .send_multiple(&mut self.gro, &mut self.bufs[..self.len], TUN_OFFSET)
        {
            if is_gone_error(&e) {
                dev.mark_gone();
            } else {
                tracing::debug!(error = %e, "TUN write failed");
            }
        }
        self.len = 0;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Handshake,
    Cookie,
    Data,
}

/// Moves the peer's endpoint to the source of an authenticated packet.
fn roam(peer: &Peer, src: SocketAddr) {
    let mut ep = lock(&peer.endpoint);
    if *ep != Some(src) {
        tracing::debug!(peer = %peer.key, endpoint = %src, "peer endpoint changed");
        *ep = Some(src);
    }
}

fn peer_by_index(table: &PeerTable, receiver_idx: u32) -> Option<&Arc<Peer>> {
    table.by_index.get(&(receiver_idx >> 8))
}

fn handle_datagram(
    dev: &Device,
    table: &PeerTable,
    src: SocketAddr,
    datagram: &[u8],
    out: &mut TunBatch,
    scratch: &mut [u8],
) {
    let wake = dev.waker.fd();
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        return;
    };
    let (peer, kind) = match &packet {
        Packet::HandshakeInit(init) => {
            // mac1 (and the cookie when under load) before any DH work.
            match dev
                .rate_limiter
                .verify_packet(Some(src.ip()), datagram, scratch)
            {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    dev.udp.send(src, cookie, None, wake);
                    return;
                }
                Err(_) => return,
            }
            let Ok(half) = parse_handshake_anon(&dev.static_private, &dev.static_public, init)
            else {
                return;
            };
            let Some(peer) = table.by_key.get(&TunnelPublicKey(half.peer_static_public)) else {
                return;
            };
            (peer, Kind::Handshake)
        }
        Packet::HandshakeResponse(r) => match peer_by_index(table, r.receiver_idx) {
            Some(p) => (p, Kind::Handshake),
            None => return,
        },
        Packet::PacketCookieReply(c) => match peer_by_index(table, c.receiver_idx) {
            Some(p) => (p, Kind::Cookie),
            None => return,
        },
        Packet::PacketData(d) => match peer_by_index(table, d.receiver_idx) {
            Some(p) => (p, Kind::Data),
            None => return,
        },
    };
    // Take the slot first: it may flush the TUN batch, which should not
    // happen while the session lock blocks the outbound worker.
    let slot = out.slot(dev, datagram.len().max(256));
    let mut tunn = lock(&peer.tunn);
    match tunn.decapsulate(Some(src.ip()), datagram, slot) {
        TunnResult::WriteToNetwork(reply) => {
            let authenticated = kind != Kind::Cookie && reply.first() != Some(&MSG_COOKIE_REPLY);
            dev.udp.send(src, reply, None, wake);
            if authenticated {
                roam(peer, src);
            }
            // A completed handshake releases the packets queued behind it.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], scratch) {
                if let Some(ep) = peer.endpoint() {
                    dev.udp.send(ep, queued, None, wake);
                }
            }
        }
        TunnResult::WriteToTunnelV4(pkt, inner_src) => {
            let len = pkt.len();
            deliver(dev, table, peer, IpAddr::V4(inner_src), src, len, out);
        }
        TunnResult::WriteToTunnelV6(pkt, inner_src) => {
            let len = pkt.len();
            deliver(dev, table, peer, IpAddr::V6(inner_src), src, len, out);
        }
        TunnResult::Done => {
            // A decrypted keepalive is authenticated; a cookie reply is not.
            if kind == Kind::Data {
                roam(peer, src);
            }
        }
        TunnResult::Err(e) => {
            tracing::trace!(error = ?e, from = %src, "dropped inbound packet");
        }
    }
}

/// Cryptokey routing, inbound, as WireGuard defines it: the inner source must
/// route back to the very peer it came from through the one allowed-IPs table
/// (longest match). Checking only that the source lies somewhere inside the
/// sender's own prefixes is not enough: a selected exit holds `0.0.0.0/0`, so
/// it could claim any other peer's tunnel address (or a LAN behind another
/// router) and its packets would pass the firewall as that peer's.
fn deliver(
    dev: &Device,
    table: &PeerTable,
    peer: &Arc<Peer>,
    inner_src: IpAddr,
    outer_src: SocketAddr,
    len: usize,
    out: &mut TunBatch,
) {
    let owner = table.routes.lookup(inner_src);
    if !owner.is_some_and(|o| Arc::ptr_eq(o, peer)) {
        dev.count_source_mismatch();
        tracing::debug!(
            peer = %peer.key,
            source = %inner_src,
            owner = ?owner.map(|o| o.key),
            "dropped packet whose source does not route back to its sender"
        );
        return;
    }
    roam(peer, outer_src);
    out.commit(len);
}

/// Runs until stop is requested or the TUN disappears.
pub(crate) fn run(dev: &Device) {
    const BATCH: usize = quinn_udp::BATCH_SIZE;
    let mut storage = vec![0u8; BATCH * RECV_BUF];
    let mut meta = vec![RecvMeta::default(); BATCH];
    let mut out = TunBatch::new();
    let mut scratch = vec![0u8; RECV_BUF];
    while !dev.is_stopping() && !dev.is_gone() {
        let received = {
            let mut chunks = storage.chunks_mut(RECV_BUF).map(IoSliceMut::new);
            let mut slices: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| chunks.next().unwrap_or_else(|| IoSliceMut::new(&mut [])));
            dev.udp.recv(&mut slices, &mut meta)
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait(dev.udp.fd(), libc::POLLIN, dev.waker.fd(), -1) {
                    Ready::Wake => return,
                    _ => continue,
                }
            }
            Err(e) => {
                // ICMP errors surface here (ECONNREFUSED...); nothing to do.
                tracing::trace!(error = %e, "UDP receive error");
                continue;
            }
        };
        let table = dev.table();
        for (i, m) in meta.iter().enumerate().take(n) {
            let src = canonical(m.addr);
            let start = i * RECV_BUF;
            let data = &storage[start..start + m.len.min(RECV_BUF)];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for datagram in data.chunks(stride) {
                handle_datagram(dev, &table, src, datagram, &mut out, &mut scratch);
            }
        }
        out.flush(dev);
    }
}
