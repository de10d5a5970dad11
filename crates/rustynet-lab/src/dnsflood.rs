//! `rustynet-lab dns-flood`: hostile DNS traffic at a resolver, to show it
//! stays up with bounded memory. UDP carries a rotating mix of malformed
//! messages (bad labels, compression loops, truncated packets, random bytes,
//! a header claiming 65535 questions, unknown EDNS versions, responses
//! instead of queries); several TCP connections at once send 64 KiB
//! messages and pipelined garbage. The sender counts what it sent and the
//! replies it got, and prints the counts as JSON.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What to send, where, and for how long.
#[derive(Debug, Clone)]
pub struct FloodOptions {
    /// The resolver (UDP and TCP).
    pub target: SocketAddr,
    /// How long to send.
    pub duration: Duration,
    /// UDP datagrams per second (the sender paces itself; 0 = as fast as it can).
    pub rate: u64,
    /// TCP senders running at once.
    pub tcp_senders: usize,
}

/// What the flood sent and got back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FloodReport {
    /// UDP datagrams sent.
    pub udp_sent: u64,
    /// UDP datagrams that could not be sent (buffer full, ...).
    pub udp_send_errors: u64,
    /// UDP replies received.
    pub udp_replies: u64,
    /// UDP datagrams sent, per kind of malformation.
    pub by_kind: BTreeMap<String, u64>,
    /// TCP connections established.
    pub tcp_connections: u64,
    /// TCP connections refused or reset before anything was sent.
    pub tcp_connect_failures: u64,
    /// Framed TCP messages sent (64 KiB ones included).
    pub tcp_messages: u64,
    /// 64 KiB TCP messages among them.
    pub tcp_64k_messages: u64,
    /// Bytes sent over TCP.
    pub tcp_bytes: u64,
    /// Framed TCP replies received.
    pub tcp_replies: u64,
    /// Wall time of the flood.
    pub seconds: f64,
}

/// The UDP message kinds, in rotation.
pub const KINDS: [&str; 9] = [
    "bad_label_type",
    "label_past_end",
    "name_too_long",
    "compression_self_loop",
    "compression_pair_loop",
    "truncated",
    "random_bytes",
    "qdcount_65535",
    "bad_edns_or_response",
];

/// A tiny deterministic generator (xorshift64*): the flood needs variety,
/// not unpredictability.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (never zero).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n.max(1) as u64)).unwrap_or(0)
    }
    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect()
    }
}

fn header(rng: &mut Rng, flags: u16, qdcount: u16, arcount: u16) -> Vec<u8> {
    let id = rng.next_u64().to_le_bytes();
    let mut h = vec![id[0], id[1]];
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&qdcount.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h.extend_from_slice(&arcount.to_be_bytes());
    h
}

/// Encodes `name` (dotted, ASCII) as wire labels with the root.
fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).unwrap_or(63));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// QTYPE A, QCLASS IN.
const A_IN: [u8; 4] = [0, 1, 0, 1];
/// Standard query with recursion desired.
const QUERY_RD: u16 = 0x0100;

/// A well-formed query for `name` (type A).
pub fn good_query(rng: &mut Rng, name: &str) -> Vec<u8> {
    let mut q = header(rng, QUERY_RD, 1, 0);
    q.extend(wire_name(name));
    q.extend_from_slice(&A_IN);
    q
}

/// One malformed message of kind `KINDS[kind % KINDS.len()]`.
pub fn malformed(rng: &mut Rng, kind: usize) -> Vec<u8> {
    match kind % KINDS.len() {
        0 => {
            // Label type 01 (extended, obsolete) and 10 (reserved).
            let mut q = header(rng, QUERY_RD, 1, 0);
            q.push(if rng.below(2) == 0 { 0x41 } else { 0x80 });
            q.extend(rng.bytes(8));
            q.push(0);
            q.extend_from_slice(&A_IN);
            q
        }
        1 => {
            // A 63-byte label announced, a few bytes present.
            let mut q = header(rng, QUERY_RD, 1, 0);
            q.push(63);
            let n = 1 + rng.below(20);
            q.extend(rng.bytes(n));
            q
        }
        2 => {
            // 130 one-byte labels: a name longer than 255 octets.
            let mut q = header(rng, QUERY_RD, 1, 0);
            for _ in 0..130 {
                q.extend_from_slice(&[1, b'a' + u8::try_from(rng.below(26)).unwrap_or(0)]);
            }
            q.push(0);
            q.extend_from_slice(&A_IN);
            q
        }
        3 => {
            // The question name is a pointer to itself (offset 12).
            let mut q = header(rng, QUERY_RD, 1, 0);
            q.extend_from_slice(&[0xc0, 0x0c]);
            q.extend_from_slice(&A_IN);
            q
        }
        4 => {
            // Two labels pointing at each other, or a pointer past the end.
            let mut q = header(rng, QUERY_RD, 1, 0);
            if rng.below(2) == 0 {
                q.extend_from_slice(&[1, b'x', 0xc0, 0x0f, 1, b'y', 0xc0, 0x0c]);
            } else {
                q.extend_from_slice(&[3, b'w', b'w', b'w', 0xc3, 0xff]);
            }
            q.extend_from_slice(&A_IN);
            q
        }
        5 => {
            // A good query cut short anywhere.
            let q = good_query(rng, "truncated.rustynet.internal");
            let keep = rng.below(q.len());
            q[..keep].to_vec()
        }
        6 => {
            let len = rng.below(600);
            rng.bytes(len)
        }
        7 => {
            // A bare header claiming 65535 questions.
            header(rng, QUERY_RD, u16::MAX, 0)
        }
        _ => {
            if rng.below(2) == 0 {
                // A response (QR set): must be ignored, never answered.
                let mut q = good_query(rng, "reflect.example");
                if let Some(b) = q.get_mut(2) {
                    *b |= 0x80;
                }
                q
            } else {
                // EDNS version 7 (BADVERS) with a 64 KiB payload size.
                let mut q = header(rng, QUERY_RD, 1, 1);
                q.extend(wire_name("edns.example"));
                q.extend_from_slice(&A_IN);
                q.extend_from_slice(&[0, 0, 41, 0xff, 0xff, 0, 7, 0, 0, 0, 0]);
                q
            }
        }
    }
}

/// Runs the flood and returns what happened.
pub fn flood(opts: &FloodOptions) -> anyhow::Result<FloodReport> {
    let started = Instant::now();
    let deadline = started + opts.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let bind: SocketAddr = if opts.target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let udp = UdpSocket::bind(bind)?;
    udp.set_read_timeout(Some(Duration::from_millis(100)))?;
    let replies = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (udp, replies, stop) = (udp.try_clone()?, Arc::clone(&replies), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if udp.recv_from(&mut buf).is_ok() {
                    replies.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let tcp_stats: Vec<_> = (0..opts.tcp_senders)
        .map(|i| {
            let target = opts.target;
            std::thread::spawn(move || tcp_sender(target, deadline, i as u64 + 7))
        })
        .collect();
    let mut report = FloodReport::default();
    let mut rng = Rng::new(0x5eed_d0e5 ^ u64::from(std::process::id()));
    let mut kind = 0usize;
    while Instant::now() < deadline {
        let batch_start = Instant::now();
        for _ in 0..100 {
            let msg = malformed(&mut rng, kind);
            *report
                .by_kind
                .entry(KINDS[kind % KINDS.len()].to_owned())
                .or_default() += 1;
            kind += 1;
            match udp.send_to(&msg, opts.target) {
                Ok(_) => report.udp_sent += 1,
                Err(_) => report.udp_send_errors += 1,
            }
        }
        if opts.rate > 0 {
            // 100 datagrams per 100/rate seconds.
            let budget = Duration::from_secs_f64(100.0 / opts.rate as f64);
            if let Some(rest) = budget.checked_sub(batch_start.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    }
    for handle in tcp_stats {
        if let Ok(t) = handle.join() {
            report.tcp_connections += t.tcp_connections;
            report.tcp_connect_failures += t.tcp_connect_failures;
            report.tcp_messages += t.tcp_messages;
            report.tcp_64k_messages += t.tcp_64k_messages;
            report.tcp_bytes += t.tcp_bytes;
            report.tcp_replies += t.tcp_replies;
        }
    }
    // Late replies to the last datagrams.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    report.udp_replies = replies.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// One TCP sender: connection after connection until the deadline, each
/// carrying a 64 KiB message, pipelined malformed messages, or a message
/// cut off in the middle.
fn tcp_sender(target: SocketAddr, deadline: Instant, seed: u64) -> FloodReport {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut r = FloodReport::default();
    let mut round = 0usize;
    while Instant::now() < deadline {
        round += 1;
        let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            r.tcp_connect_failures += 1;
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        r.tcp_connections += 1;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut out = Vec::new();
        let mut messages = 0u64;
        match round % 3 {
            0 => {
                // 64 KiB: the largest frame RFC 7766 allows, random content.
                out.extend_from_slice(&u16::MAX.to_be_bytes());
                out.extend(rng.bytes(usize::from(u16::MAX)));
                messages += 1;
                r.tcp_64k_messages += 1;
            }
            1 => {
                for k in 0..32 {
                    let msg = malformed(&mut rng, k);
                    let Ok(len) = u16::try_from(msg.len()) else {
                        continue;
                    };
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend(msg);
                    messages += 1;
                }
            }
            _ => {
                // Announce 64 KiB, send a quarter, hang up.
                out.extend_from_slice(&u16::MAX.to_be_bytes());
                out.extend(rng.bytes(16_384));
            }
        }
        if stream.write_all(&out).is_ok() {
            r.tcp_bytes += out.len() as u64;
            r.tcp_messages += messages;
        }
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        r.tcp_replies += count_frames(&got);
    }
    r
}

/// Complete length-prefixed frames at the start of `bytes`.
fn count_frames(mut bytes: &[u8]) -> u64 {
    let mut n = 0;
    while let [a, b, rest @ ..] = bytes {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        let Some(next) = rest.get(len..) else {
            break;
        };
        n += 1;
        bytes = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Message;

    #[test]
    fn every_kind_is_malformed_or_a_response() {
        let mut rng = Rng::new(1);
        for round in 0..50 {
            for (kind, name) in KINDS.iter().enumerate() {
                if *name == "random_bytes" {
                    continue; // random bytes may, rarely, parse
                }
                let msg = malformed(&mut rng, kind + round * KINDS.len());
                let parsed = Message::from_vec(&msg);
                let acceptable_query = parsed.as_ref().is_ok_and(|m| {
                    m.metadata.message_type == hickory_proto::op::MessageType::Response
                        || m.edns.as_ref().is_some_and(|e| e.version() > 0)
                        || m.queries.len() != 1
                });
                assert!(
                    parsed.is_err() || acceptable_query,
                    "{name} parsed as a plain query: {msg:?}"
                );
            }
        }
        let good = good_query(&mut rng, "bob.rustynet.internal");
        assert_eq!(Message::from_vec(&good).unwrap().queries.len(), 1);
    }

    #[test]
    fn frames_are_counted() {
        assert_eq!(count_frames(&[0, 1, 9, 0, 2, 1, 2, 0]), 2);
        assert_eq!(count_frames(&[]), 0);
    }
}
