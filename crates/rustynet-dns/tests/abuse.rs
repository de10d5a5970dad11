//! Hostile traffic at the server: garbage, malformed and oversized queries
//! over UDP and TCP, pointer loops, idle and stalled connections. The server
//! must stay up, keep memory bounded, and answer a good query afterwards.
// Test helpers outside #[test] fns may unwrap and panic, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustynet_dns::{DnsServer, Limits, NetTransport, ServerConfig, Upstream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// RSS growth allowed across the whole flood (client buffers included).
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// xorshift64*: deterministic garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn header(id: u16, flags: u8, qdcount: u16) -> Vec<u8> {
    let mut bytes = id.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[flags, 0]);
    bytes.extend_from_slice(&qdcount.to_be_bytes());
    bytes.extend_from_slice(&[0; 6]);
    bytes
}

/// One hostile packet of kind `i % 10`.
fn hostile(rng: &mut Rng, i: usize) -> Vec<u8> {
    let id = rng.next() as u16;
    match i % 10 {
        0 => {
            let len = (rng.next() % 600) as usize;
            rng.bytes(len)
        }
        1 => {
            // Header claiming 65535 questions, then junk.
            let mut p = header(id, 1, u16::MAX);
            p.extend(rng.bytes(32));
            p
        }
        2 => {
            // Compression pointer to itself.
            let mut p = header(id, 1, 1);
            p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            p
        }
        3 => {
            // Forward pointer into a chain of pointers.
            let mut p = header(id, 1, 1);
            p.extend_from_slice(&[0xc0, 14, 0xc0, 16, 0xc0, 12, 0, 1, 0, 1]);
            p
        }
        4 => {
            // Bad labels: 64-byte label, binary bytes.
            let mut p = header(id, 1, 1);
            p.push(64);
            p.extend(rng.bytes(64));
            p.extend_from_slice(&[0, 0, 1, 0, 1]);
            p
        }
        5 => {
            // A truncated valid query.
            let q = query("web.rustynet.internal.", RecordType::A);
            let cut = 12 + (rng.next() as usize) % (q.len() - 12);
            q[..cut].to_vec()
        }
        6 => {
            // A response (QR=1): must be dropped, never answered.
            let mut p = query("web.rustynet.internal.", RecordType::A);
            p[2] |= 0x80;
            p
        }
        7 => {
            // Unknown opcode.
            let mut p = header(id, 0x78, 1);
            p.extend(rng.bytes(20));
            p
        }
        8 => {
            // Valid query for a forwarded name (upstream is silent: holds permits).
            query(&format!("n{}.example.", rng.next() % 1000), RecordType::A)
        }
        _ => {
            // Valid query for a local name with random flips.
            let mut q = query("db.rustynet.internal.", RecordType::A);
            let at = 12 + (rng.next() as usize) % (q.len() - 12);
            q[at] = rng.next() as u8;
            q
        }
    }
}

async fn flood_udp(target: SocketAddr, packets: usize, seed: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = Rng(seed);
    for i in 0..packets {
        let packet = hostile(&mut rng, i);
        let _ = socket.send_to(&packet, target).await;
        if i % 32 == 31 {
            // Pace a little so the server sees most packets instead of the
            // kernel dropping them; replies pile up in our buffer unread.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_keeps_the_server_up_and_memory_bounded() {
    let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    upstream.set_mode(Mode::Silent);
    let limits = Limits {
        max_tcp_connections: 32,
        max_in_flight: 64,
        tcp_idle_timeout: Duration::from_secs(2),
        upstream_timeout: Duration::from_millis(500),
    };
    let server = DnsServer::start(
        ServerConfig {
            limits,
            ..ServerConfig::new("127.0.0.1:0".parse().unwrap())
        },
        resolver(Upstream::System(vec![upstream.addr])),
        Arc::new(NetTransport::default()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();

    // Warm up so allocator pools and runtime threads exist before measuring.
    for _ in 0..50 {
        udp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    }
    let rss_before = rss_kib();
    let started = Instant::now();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // UDP: 4 senders x 50k packets.
    let senders: Vec<_> = (0..4u64)
        .map(|seed| tokio::spawn(flood_udp(addr, 50_000, 0x9e37_79b9_7f4a_7c15 ^ (seed + 1))))
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let udp_done = started.elapsed();

    // TCP: oversized 64 KiB messages of garbage and of pointer loops.
    let mut rng = Rng(7);
    for round in 0..20 {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let mut body = if round % 2 == 0 {
            rng.bytes(65535)
        } else {
            let mut p = header(rng.next() as u16, 1, 1);
            while p.len() + 2 <= 65535 {
                p.extend_from_slice(&[0xc0, 12]);
            }
            p
        };
        body.truncate(65535);
        let mut framed = (body.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let _ = stream.write_all(&framed).await;
    }
    // Stalled connections: a length prefix promising 65535 bytes, then 10.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        if let Ok(mut stream) = TcpStream::connect(addr).await {
            let _ = stream
                .write_all(&[0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
                .await;
            stalled.push(stream);
        }
    }
    // Many idle connections, far beyond the cap.
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            idle.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sampler.abort();
    let rss_peak = peak.load(Ordering::Relaxed).max(rss_kib());
    let metrics = handle.metrics();

    // The server is still up: a local name is answered over UDP at once.
    let reply = udp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1);

    // Once the idle connections time out, TCP serves again too.
    drop(stalled);
    drop(idle);
    let deadline = Instant::now() + WAIT;
    let tcp_reply = loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(3),
            try_tcp_ask(addr, &query("db.rustynet.internal.", RecordType::A)),
        )
        .await;
        match attempt {
            Ok(Ok(reply)) => break reply,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Err(e)) => panic!("TCP never recovered: {e}"),
            Err(_) => panic!("TCP never recovered: timed out"),
        }
    };
    assert_eq!(tcp_reply.answers.len(), 1);

    // And forwarding works once the upstream answers again.
    upstream.set_mode(Mode::Answer);
    tokio::time::sleep(limits.upstream_timeout * 2).await;
    let reply = udp_ask(addr, &query("after.example.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NoError, "{reply:?}");
    assert_eq!(reply.answers.len(), 1);

    let rss_after = rss_kib();
    let growth = rss_peak.saturating_sub(rss_before);
    println!(
        "abuse: {} UDP packets in {udp_done:?}; RSS before {rss_before} KiB, peak {rss_peak} KiB, \
         after {rss_after} KiB (growth {growth} KiB); metrics {metrics:?}",
        4 * 50_000
    );
    assert!(growth < RSS_BOUND_KIB, "RSS grew by {growth} KiB");
    // Most packets reach the server (the kernel may drop some under load).
    assert!(metrics.queries > 20_000, "{metrics:?}");
    assert!(metrics.malformed > metrics.queries / 2, "{metrics:?}");
    assert!(metrics.tcp_rejected > 0, "{metrics:?}");
    assert!(
        metrics.busy > 0 || metrics.upstream_failures > 0,
        "{metrics:?}"
    );
    server.shutdown().await;
}
