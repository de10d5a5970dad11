//! `push --udp`: the same two clients, with the packets in the UDP relay
//! mode. Each client has a UDP socket (its "tunnel socket": hellos leave
//! from it, a thread receives on it with GRO and hands datagrams to
//! `udp_received`); the sender writes GSO runs of equal-size datagrams, as
//! the engine's outbound worker does.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use rustynet_proto::TunnelPublicKey;
use rustynet_relay::{ClientConfig, ClientSink, ClientTimeouts, ConnState, RelayClient};

use super::{Target, node, pin, seed, ticket};

/// Datagrams per GSO send.
const RUN: usize = 32;
/// Socket buffers (the kernel caps them at rmem_max / wmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// No delivery progress this long with the window full: count the packets
/// in flight as lost (UDP drops them) and go on.
const STALL: Duration = Duration::from_millis(20);

struct Sink {
    sock: Arc<UdpSocket>,
}

impl ClientSink for Sink {
    fn packet(&self, _src: TunnelPublicKey, _payload: &[u8], _probe: bool) {}
    fn state(&self, _state: ConnState) {}
    fn send_udp(&self, to: SocketAddr, datagram: &[u8]) {
        let _ = self.sock.send_to(datagram, to);
    }
}

#[derive(Default)]
struct Delivered {
    bytes: AtomicU64,
    packets: AtomicU64,
}

fn socket() -> anyhow::Result<Arc<UdpSocket>> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let s2 = socket2::SockRef::from(&sock);
    s2.set_recv_buffer_size(SOCKET_BUFFER)?;
    s2.set_send_buffer_size(SOCKET_BUFFER)?;
    Ok(Arc::new(sock))
}

/// Receives on `sock` until `stop`, handing every datagram to `client`.
fn receiver(
    sock: Arc<UdpSocket>,
    client: Arc<RelayClient>,
    delivered: Arc<Delivered>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    let state = UdpSocketState::new(UdpSockRef::from(&*sock))?;
    Ok(std::thread::spawn(move || {
        const BATCH: usize = quinn_udp::BATCH_SIZE;
        const BUF: usize = 64 * 1024;
        let mut storage = vec![0u8; BATCH * BUF];
        let mut meta = vec![RecvMeta::default(); BATCH];
        while !stop.load(Ordering::Relaxed) {
            let mut chunks = storage.chunks_mut(BUF).map(IoSliceMut::new);
            let mut slices: [IoSliceMut<'_>; BATCH] =
                std::array::from_fn(|_| chunks.next().unwrap_or_else(|| IoSliceMut::new(&mut [])));
            let Ok(n) = state.recv(UdpSockRef::from(&*sock), &mut slices, &mut meta) else {
                continue;
            };
            for (i, m) in meta.iter().enumerate().take(n) {
                let data = &mut storage[i * BUF..i * BUF + m.len.min(BUF)];
                let stride = if m.stride == 0 { data.len() } else { m.stride };
                for datagram in data.chunks_mut(stride.max(1)) {
                    if client.udp_received(datagram).is_some() {
                        delivered
                            .bytes
                            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
                        delivered.packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }))
}

pub(super) fn push(
    target: &Target,
    udp: SocketAddr,
    mb: u64,
    size: usize,
    window: u64,
) -> anyhow::Result<()> {
    if !(4..=1472).contains(&size) {
        bail!("--size must be 4..=1472 in UDP mode");
    }
    let control = seed(&target.control_seed)?;
    let pin = pin(&target.pin)?;
    let (a_key, a_login) = node(1_000_011);
    let (b_key, b_login) = node(1_000_012);
    let config = |login, ticket| ClientConfig {
        udp: Some(udp),
        addrs: vec![target.relay],
        server_name: "localhost".into(),
        cert_sha256: pin,
        fwmark: None,
        ticket,
        login_key: login,
        timeouts: ClientTimeouts::default(),
        send_queue_bytes: 1 << 20,
    };
    let (a_sock, b_sock) = (socket()?, socket()?);
    let a = Arc::new(RelayClient::spawn(
        config(a_login, ticket(&control, 1_000_011, vec![b_key])?),
        Arc::new(Sink {
            sock: Arc::clone(&a_sock),
        }),
    )?);
    let b = Arc::new(RelayClient::spawn(
        config(b_login, ticket(&control, 1_000_012, vec![a_key])?),
        Arc::new(Sink {
            sock: Arc::clone(&b_sock),
        }),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let (a_rx, b_rx) = (
        Arc::new(Delivered::default()),
        Arc::new(Delivered::default()),
    );
    let threads = [
        receiver(
            Arc::clone(&a_sock),
            Arc::clone(&a),
            Arc::clone(&a_rx),
            Arc::clone(&stop),
        )?,
        receiver(
            Arc::clone(&b_sock),
            Arc::clone(&b),
            Arc::clone(&b_rx),
            Arc::clone(&stop),
        )?,
    ];
    let result = run(&a, &b, &a_sock, &b_key, &a_key, &b_rx, mb, size, window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run(
    a: &RelayClient,
    b: &RelayClient,
    a_sock: &UdpSocket,
    b_key: &TunnelPublicKey,
    a_key: &TunnelPublicKey,
    delivered: &Delivered,
    mb: u64,
    size: usize,
    window: u64,
) -> anyhow::Result<()> {
    // Both hellos echoed and b's id known (b must be registered too: ask
    // from b's side as well, so its address is in before a's lookup).
    let deadline = Instant::now() + Duration::from_secs(15);
    let (to, id) = loop {
        let _ = b.udp_route(a_key);
        if b.udp_ready()
            && let Some(route) = a.udp_route(b_key)
        {
            break route;
        }
        if Instant::now() > deadline {
            bail!(
                "UDP relay mode did not come up: {:?} {:?} ready {} {}",
                a.state(),
                b.state(),
                a.udp_ready(),
                b.udp_ready()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let state = UdpSocketState::new(UdpSockRef::from(a_sock))?;
    let segments = RUN.min(state.max_gso_segments().max(1));
    let mut run = vec![0x42u8; size * segments];
    for datagram in run.chunks_mut(size) {
        datagram[..4].copy_from_slice(&[4, 0, 0, 0]);
        if !rustynet_relay::udp::encode(datagram, id) {
            bail!("cannot encode for id {id}");
        }
    }
    let total = mb * 1_000_000 / size as u64;
    let started = Instant::now();
    let (mut sent, mut lost_in_stalls) = (0u64, 0u64);
    let mut last = (0u64, Instant::now());
    while sent < total {
        let got = delivered.packets.load(Ordering::Relaxed);
        if window > 0 && sent - got - lost_in_stalls >= window {
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > STALL {
                lost_in_stalls = sent - got;
            }
            std::thread::yield_now();
            continue;
        }
        let n = segments.min(usize::try_from(total - sent)?);
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &run[..n * size],
            segment_size: (n > 1).then_some(size),
            src_ip: None,
        };
        if state.send(UdpSockRef::from(a_sock), &transmit).is_ok() {
            sent += n as u64;
        } else {
            std::thread::yield_now();
        }
    }
    // Wait until delivery stops growing.
    let mut last = 0;
    let mut stable_since = Instant::now();
    loop {
        let now = delivered.packets.load(Ordering::Relaxed);
        if now == sent {
            break;
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = delivered.bytes.load(Ordering::Relaxed);
    let packets = delivered.packets.load(Ordering::Relaxed);
    println!(
        "{{\"sent_packets\": {sent}, \"delivered_packets\": {packets}, \"delivered_bytes\": {bytes}, \"seconds\": {seconds:.3}, \"mbit_per_sec\": {:.1}, \"payload_bytes\": {size}, \"window_packets\": {window}, \"gso_segments\": {segments}}}",
        bytes as f64 * 8.0 / seconds / 1e6
    );
    Ok(())
}
