//! Inbound worker: UDP -> decrypt -> cryptokey check -> TUN; also path
//! probes and binding answers on the same socket, and (on the relay client
//! threads) packets a relay delivered.
//!
//! `recvmmsg` fills up to 32 buffers, each possibly a GRO train of equal-size
//! datagrams (`stride`). Decrypted packets go into TUN buffers with
//! virtio-net headroom; `send_multiple` with a `GROTable` coalesces TCP
//! segments into large packets, so the kernel sees a few big writes instead of
//! one per datagram. Buffers are allocated once per thread.
//!
//! Input from the network is untrusted: every packet is parsed by boringtun,
//! which returns errors (never panics) for malformed data, and only packets
//! that decrypted under a peer's session count as evidence of a path (they
//! prompt a probe; only a probe round trip makes an address the path).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use bytes::BytesMut;
use quinn_udp::RecvMeta;
use rustynet_tunnel::TunnelPublicKey;
use tun_rs::GROTable;

use super::device::{Device, Peer, PeerTable, lock};
use super::net::{Ready, canonical, wait};
use super::paths::{self, Bytes};
use super::relays::RelaySet;
use super::tx::is_gone_error;
use crate::path::Via;

/// Room for one GRO train (the kernel caps it at 64 KiB).
pub(crate) const RECV_BUF: usize = 65_536;
/// Type byte of a cookie reply: sending one proves nothing about the peer.
const MSG_COOKIE_REPLY: u8 = 3;
/// Headroom the TUN needs in front of each packet for the virtio-net header.
const TUN_OFFSET: usize = tun_rs::VIRTIO_NET_HDR_LEN;

/// Decrypted packets waiting for one `send_multiple` to the TUN.
pub(crate) struct TunBatch {
    bufs: Vec<BytesMut>,
    len: usize,
    gro: GROTable,
}

impl TunBatch {
    pub(crate) fn new() -> Self {
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

    pub(crate) fn flush(&mut self, dev: &Device) {
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

/// Where a tunnel datagram came from.
#[derive(Clone, Copy)]
enum From<'a> {
    /// Straight from this UDP address.
    Direct(SocketAddr),
    /// Through a relay, which says it is from this node.
    Relay(&'a TunnelPublicKey),
}

fn peer_by_index(table: &PeerTable, receiver_idx: u32) -> Option<&Arc<Peer>> {
    table.by_index.get(&(receiver_idx >> 8))
}

/// Sends a reply the session produced back the way the datagram came.
fn reply(dev: &Device, peer: &Peer, from: From<'_>, pkt: &[u8]) {
    match from {
        From::Direct(src) => {
            dev.udp.send(src, pkt, None, dev.waker.fd());
            peer.path.add_bytes(Bytes::DirectTx, pkt.len());
        }
        From::Relay(_) => {
            paths::relay_send(dev, peer, pkt, false);
        }
    }
}

fn handle_datagram(
    dev: &Device,
    table: &PeerTable,
    from: From<'_>,
    datagram: &[u8],
    out: &mut TunBatch,
    scratch: &mut [u8],
    now: Instant,
) {
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        return;
    };
    let src_ip = match from {
        From::Direct(src) => Some(src.ip()),
        From::Relay(_) => None,
    };
    let (peer, kind) = match &packet {
        Packet::HandshakeInit(init) => {
            // mac1 (and the cookie when under load) before any DH work.
            match dev.rate_limiter.verify_packet(src_ip, datagram, scratch) {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    if let From::Direct(src) = from {
                        dev.udp.send(src, cookie, None, dev.waker.fd());
                    }
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
    // A relay says who sent a packet; the session must agree.
    if let From::Relay(claimed) = from
        && *claimed != peer.key
    {
        return;
    }
    match from {
        From::Direct(_) => peer.path.add_bytes(Bytes::DirectRx, datagram.len()),
        From::Relay(_) => peer.path.add_bytes(Bytes::RelayRx, datagram.len()),
    }
    // Take the slot first: it may flush the TUN batch, which should not
    // happen while the session lock blocks the outbound worker.
    let slot = out.slot(dev, datagram.len().max(256));
    let mut tunn = lock(&peer.tunn);
    let mut authenticated = false;
    let mut deliver_from = None;
    match tunn.decapsulate(src_ip, datagram, slot) {
        TunnResult::WriteToNetwork(pkt) => {
            authenticated = kind != Kind::Cookie && pkt.first() != Some(&MSG_COOKIE_REPLY);
            reply(dev, peer, from, pkt);
            // A completed handshake releases the packets queued behind it.
            let route = peer.path.route();
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], scratch) {
                paths::send_on_route(dev, peer, route, queued);
            }
        }
        TunnResult::WriteToTunnelV4(pkt, inner_src) => {
            deliver_from = Some((IpAddr::V4(inner_src), pkt.len()));
        }
        TunnResult::WriteToTunnelV6(pkt, inner_src) => {
            deliver_from = Some((IpAddr::V6(inner_src), pkt.len()));
        }
        // A decrypted keepalive is authenticated; a cookie reply is not.
        TunnResult::Done => authenticated = kind == Kind::Data,
        TunnResult::Err(e) => {
            tracing::trace!(error = ?e, "dropped inbound packet");
        }
    }
    drop(tunn);
    if let Some((inner_src, len)) = deliver_from {
        authenticated = deliver(dev, table, peer, inner_src, len, out);
    }
    if authenticated && let From::Direct(src) = from {
        paths::note_rx(dev, peer, Some(src), now);
    }
}

/// Cryptokey routing, inbound, as WireGuard defines it: the inner source must
/// route back to the very peer it came from through the one allowed-IPs table
/// (longest match). Checking only that the source lies somewhere inside the
/// sender's own prefixes is not enough: a selected exit holds `0.0.0.0/0`, so
/// it could claim any other peer's tunnel address (or a LAN behind another
/// router) and its packets would pass the firewall as that peer's. Returns
/// whether the packet was delivered.
fn deliver(
    dev: &Device,
    table: &PeerTable,
    peer: &Arc<Peer>,
    inner_src: IpAddr,
    len: usize,
    out: &mut TunBatch,
) -> bool {
    let owner = table.routes.lookup(inner_src);
    if !owner.is_some_and(|o| Arc::ptr_eq(o, peer)) {
        dev.count_source_mismatch();
        tracing::debug!(
            peer = %peer.key,
            source = %inner_src,
            owner = ?owner.map(|o| o.key),
            "dropped packet whose source does not route back to its sender"
        );
        return false;
    }
    out.commit(len);
    true
}

/// A packet a relay delivered from `src` (on the relay client's thread),
/// with the peer table and time the caller took for its whole read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn handle_relayed(
    dev: &Device,
    table: &PeerTable,
    relay: &str,
    src: TunnelPublicKey,
    payload: &[u8],
    probe: bool,
    out: &mut TunBatch,
    scratch: &mut [u8],
    now: Instant,
) {
    if crate::path::is_probe(payload) {
        paths::on_probe(dev, table, payload, Via::Relay, Some(&src));
        return;
    }
    if probe {
        tracing::trace!(relay, "non-probe payload on the probe queue dropped");
        return;
    }
    handle_datagram(dev, table, From::Relay(&src), payload, out, scratch, now);
}

const HELLO_ACK_TYPE: u8 = rustynet_relay::udp::HELLO_ACK_TYPE;

/// What the relay datagrams of one receive batch share: the relay set
/// (looked up once per batch, not per datagram) and the last sender id
/// resolved (a GRO train comes from one relay address and mostly carries
/// one sender, so its datagrams after the first skip the client's lock).
#[derive(Default)]
struct RelayRx {
    set: Option<Arc<RelaySet>>,
    /// Relay address, sender id there, and the node the relay told us it is.
    last: Option<(SocketAddr, u32, TunnelPublicKey)>,
}

/// A datagram from a relay's UDP address: a hello's echo, or a relayed
/// tunnel message that enters the same path as one that came over TLS.
/// From anywhere else it is dropped (only the relay speaks this format).
#[allow(clippy::too_many_arguments)]
fn on_relay_udp(
    dev: &Device,
    table: &PeerTable,
    src: SocketAddr,
    datagram: &mut [u8],
    out: &mut TunBatch,
    scratch: &mut [u8],
    now: Instant,
    cache: &mut RelayRx,
) {
    let id = rustynet_relay::udp::id_of(datagram);
    if let Some((at, known, key)) = cache.last
        && at == src
        && id == Some(known)
    {
        rustynet_relay::udp::decode(datagram);
        handle_datagram(dev, table, From::Relay(&key), datagram, out, scratch, now);
        return;
    }
    let relays = cache.set.get_or_insert_with(|| dev.paths.relays());
    let Some(conn) = relays.by_udp_addr(src) else {
        return;
    };
    let Some(key) = conn.udp_received(datagram) else {
        return;
    };
    if let Some(id) = id {
        cache.last = Some((src, id, key));
    }
    handle_datagram(dev, table, From::Relay(&key), datagram, out, scratch, now);
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
        let now = Instant::now();
        let mut relay_rx = RelayRx::default();
        for (i, m) in meta.iter().enumerate().take(n) {
            let src = canonical(m.addr);
            let start = i * RECV_BUF;
            let data = &mut storage[start..start + m.len.min(RECV_BUF)];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for datagram in data.chunks_mut(stride) {
                if datagram
                    .first()
                    .is_some_and(|b| rustynet_relay::udp::is_data(*b) || *b == HELLO_ACK_TYPE)
                {
                    on_relay_udp(
                        dev,
                        &table,
                        src,
                        datagram,
                        &mut out,
                        &mut scratch,
                        now,
                        &mut relay_rx,
                    );
                    continue;
                }
                let datagram = &*datagram;
                match datagram.first() {
                    Some(&b) if crate::path::is_probe(datagram) && b != 0 => {
                        paths::on_probe(dev, &table, datagram, Via::Direct(src), None);
                    }
                    Some(&b) if b == rustynet_relay::binding::RESPONSE_TYPE => {
                        lock(&dev.paths.discovery).on_response(src, datagram, now);
                    }
                    _ => handle_datagram(
                        dev,
                        &table,
                        From::Direct(src),
                        datagram,
                        &mut out,
                        &mut scratch,
                        now,
                    ),
                }
            }
        }
        out.flush(dev);
    }
}
