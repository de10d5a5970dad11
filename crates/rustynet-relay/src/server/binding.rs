//! The UDP socket task: answers well-formed binding requests with the source
//! address it saw, rate-limited per source IP, and carries the UDP relay
//! mode (hellos and tunnel messages, decided by the core; see
//! [`crate::udp`]). Malformed datagrams get no answer at all.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::binding::{is_binding, parse_request, response};
use crate::core::{Now, UdpMemo, UdpVerdict};

/// Requests per second answered per source IP, and the burst.
const PER_IP_RATE: f64 = 20.0;
const PER_IP_BURST: f64 = 40.0;
/// Source IPs tracked at once; beyond this, new IPs are not answered until
/// idle ones are forgotten.
const MAX_TRACKED: usize = 65_536;
/// An IP unseen this long is forgotten (its bucket would be full again).
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// Per-IP token buckets over a bounded table.
pub(super) struct Limiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    pub(super) fn new() -> Self {
        Self {
            buckets: HashMap::new(),
        }
    }

    /// Whether a request from `ip` at `now` may be answered.
    pub(super) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED {
            self.buckets
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < FORGET_AFTER);
            if self.buckets.len() >= MAX_TRACKED {
                return false;
            }
        }
        let (tokens, seen) = self.buckets.entry(ip).or_insert((PER_IP_BURST, now));
        let refill = now.saturating_duration_since(*seen).as_secs_f64() * PER_IP_RATE;
        *tokens = (*tokens + refill).min(PER_IP_BURST);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Buffers per receive batch.
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// One receive buffer: a GRO batch of up to 64 KiB.
const RECV_BUF: usize = 64 * 1024;
/// Socket buffers: bulk UDP relay traffic must not overflow them between
/// two turns of this task (the kernel caps them at `net.core.rmem_max` /
/// `wmem_max`).
const SOCKET_BUFFER: usize = 4 << 20;

pub(super) async fn serve(socket: UdpSocket, shared: Arc<Shared>, cancel: CancellationToken) {
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    let state = match UdpSocketState::new(UdpSockRef::from(&socket)) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(error = %e, "relay UDP socket setup failed");
            return;
        }
    };
    let mut task = Task {
        socket: &socket,
        state,
        shared: &shared,
        limiter: Limiter::new(),
        out: Vec::new(),
    };
    let mut storage = vec![0u8; BATCH * RECV_BUF];
    let mut meta = vec![RecvMeta::default(); BATCH];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            received = socket.async_io(Interest::READABLE, || {
                let mut chunks = storage.chunks_mut(RECV_BUF).map(IoSliceMut::new);
                let mut slices: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                    chunks.next().unwrap_or_else(|| IoSliceMut::new(&mut []))
                });
                task.state.recv(UdpSockRef::from(&socket), &mut slices, &mut meta)
            }) => received,
        };
        let Ok(n) = received else {
            continue;
        };
        task.handle(&mut storage, &meta[..n]).await;
    }
}

/// What a batch of datagrams becomes: runs of equal-size datagrams for one
/// destination, sent as one GSO send each.
struct Run {
    to: SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
}

struct Task<'a> {
    socket: &'a UdpSocket,
    state: UdpSocketState,
    shared: &'a Shared,
    limiter: Limiter,
    out: Vec<Run>,
}

impl Task<'_> {
    /// Answers binding requests, lets the core decide each UDP relay
    /// datagram (one lock per batch), rewrites them in place and sends them
    /// on in GSO runs.
    async fn handle(&mut self, storage: &mut [u8], meta: &[RecvMeta]) {
        let shared = self.shared;
        let now = Now::system();
        self.out.clear();
        {
            let mut locked = None;
            // Lives exactly as long as the lock: see `UdpMemo`.
            let mut memo = UdpMemo::default();
            for (i, m) in meta.iter().enumerate() {
                let from = SocketAddr::new(m.addr.ip().to_canonical(), m.addr.port());
                let start = i * RECV_BUF;
                let len = m.len.min(RECV_BUF);
                let stride = if m.stride == 0 { len.max(1) } else { m.stride };
                let mut offset = start;
                while offset < start + len {
                    let seg_len = stride.min(start + len - offset);
                    let datagram = &mut storage[offset..offset + seg_len];
                    if datagram.first().is_some_and(|b| is_binding(*b)) {
                        self.binding(datagram, from, &shared.metrics);
                    } else {
                        let state = locked.get_or_insert_with(|| shared.lock());
                        let to = match state
                            .core
                            .handle_udp_in_batch(from, datagram, now, &mut memo)
                        {
                            UdpVerdict::Reply => Some(from),
                            UdpVerdict::Forward(to) => Some(to),
                            UdpVerdict::Drop => None,
                        };
                        if let Some(to) = to {
                            push_run(&mut self.out, to, offset, seg_len);
                        }
                    }
                    offset += seg_len;
                }
            }
        }
        for run in std::mem::take(&mut self.out) {
            let contents = &storage[run.start..run.start + run.len];
            let transmit = Transmit {
                destination: run.to,
                ecn: None,
                contents,
                segment_size: (run.seg < run.len).then_some(run.seg),
                src_ip: None,
            };
            // Waits while the socket buffer is full (backpressure: the
            // receive queue then fills and the kernel drops, as a UDP hop).
            if let Err(e) = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    self.state.send(UdpSockRef::from(self.socket), &transmit)
                })
                .await
            {
                tracing::debug!(error = %e, len = run.len, "UDP relay send failed");
                self.shared.metrics.drop_packet("udp_send_error");
            }
        }
    }

    /// Answers a binding request (rate-limited per source IP).
    fn binding(&mut self, datagram: &[u8], from: SocketAddr, metrics: &crate::Metrics) {
        let Some(txid) = parse_request(datagram) else {
            metrics.binding_dropped("malformed");
            return;
        };
        if !self.limiter.allow(from.ip(), Instant::now()) {
            metrics.binding_dropped("rate_limited");
            return;
        }
        let (answer, n) = response(&txid, from);
        let transmit = Transmit {
            destination: from,
            ecn: None,
            contents: &answer[..n],
            segment_size: None,
            src_ip: None,
        };
        if self
            .socket
            .try_io(Interest::WRITABLE, || {
                self.state.send(UdpSockRef::from(self.socket), &transmit)
            })
            .is_ok()
        {
            metrics.binding_answered();
        }
    }
}

/// Adds a datagram to the last run when GSO allows (same destination,
/// contiguous, same size, or a shorter last one), else starts a new run.
fn push_run(out: &mut Vec<Run>, to: SocketAddr, start: usize, len: usize) {
    if let Some(run) = out.last_mut()
        && run.to == to
        && run.start + run.len == start
        && run.len % run.seg == 0
        && len <= run.seg
        && run.len / run.seg < MAX_SEGMENTS
    {
        run.len += len;
        return;
    }
    out.push(Run {
        to,
        start,
        len,
        seg: len.max(1),
    });
}

/// Most datagrams per GSO send.
const MAX_SEGMENTS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_to_one_destination_join_a_gso_run() {
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let mut out = Vec::new();
        push_run(&mut out, a, 0, 100);
        push_run(&mut out, a, 100, 100);
        push_run(&mut out, a, 200, 60); // a shorter last one
        push_run(&mut out, a, 260, 100); // nothing may follow it
        push_run(&mut out, b, 360, 100);
        push_run(&mut out, b, 500, 100); // not contiguous
        let runs: Vec<(usize, usize, usize)> =
            out.iter().map(|r| (r.start, r.len, r.seg)).collect();
        assert_eq!(
            runs,
            vec![
                (0, 260, 100),
                (260, 100, 100),
                (360, 100, 100),
                (500, 100, 100)
            ]
        );
    }

    #[test]
    fn each_ip_gets_its_own_burst_and_rate() {
        let mut l = Limiter::new();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(a, t0)).count();
        assert_eq!(allowed, PER_IP_BURST as usize);
        assert!(l.allow(b, t0), "another IP is unaffected");
        let t1 = t0 + Duration::from_millis(500);
        let allowed = (0..100).filter(|_| l.allow(a, t1)).count();
        assert_eq!(allowed, (PER_IP_RATE / 2.0) as usize);
    }
}
