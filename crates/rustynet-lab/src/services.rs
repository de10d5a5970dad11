//! Helper services and probes the lab runs inside namespaces as real
//! processes (`rustynet-lab serve-echo`, `serve-dns`, `probe`).
//!
//! The echo service answers with the address it sees the client at, so a
//! test can tell whether traffic left through the exit node (NAT) or directly.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, Record, rdata::A};

/// The address every name resolves to on the lab's "internet" DNS server.
pub const INTERNET_DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);

/// TCP: writes `peer IP:PORT\n`, then echoes lines. UDP: replies
/// `peer IP:PORT <payload>`. Runs until killed.
pub fn serve_echo(listen: &[SocketAddr]) -> anyhow::Result<()> {
    let mut handles = Vec::new();
    for addr in listen.iter().copied() {
        let tcp = TcpListener::bind(addr)?;
        handles.push(std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                std::thread::spawn(move || echo_tcp(stream));
            }
        }));
        let udp = UdpSocket::bind(addr)?;
        handles.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let mut reply = format!("peer {from} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = udp.send_to(&reply, from);
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn echo_tcp(mut stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    if stream
        .write_all(format!("peer {peer}\n").as_bytes())
        .is_err()
    {
        return;
    }
    let Ok(read) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(read).lines() {
        let Ok(line) = line else {
            return;
        };
        if stream.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A DNS server answering every A query with [`INTERNET_DNS_ANSWER`].
pub fn serve_dns(listen: SocketAddr) -> anyhow::Result<()> {
    serve_dns_answering(listen, INTERNET_DNS_ANSWER)
}

/// A DNS server answering every A query with `answer` (a second server
/// with its own answer shows which one a query reached, e.g. split DNS).
pub fn serve_dns_answering(listen: SocketAddr, answer: Ipv4Addr) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(listen)?;
    let tcp = TcpListener::bind(listen)?;
    std::thread::spawn(move || {
        for mut stream in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                continue;
            }
            if let Some(reply) = dns_answer(&query, answer) {
                let Ok(n) = u16::try_from(reply.len()) else {
                    continue;
                };
                let _ = stream.write_all(&n.to_be_bytes());
                let _ = stream.write_all(&reply);
            }
        }
    });
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = udp.recv_from(&mut buf)?;
        if let Some(reply) = dns_answer(&buf[..n], answer) {
            let _ = udp.send_to(&reply, from);
        }
    }
}

fn dns_answer(query: &[u8], answer: Ipv4Addr) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.response_code = ResponseCode::NoError;
    for q in &request.queries {
        response.add_query(q.clone());
        if q.query_type() == hickory_proto::rr::RecordType::A {
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(answer)),
            ));
        }
    }
    response.to_vec().ok()
}

/// One probe's outcome, printed as JSON by `rustynet-lab probe`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    /// Whether an answer came back.
    pub ok: bool,
    /// The first line of the answer (the echo's `peer ...` line).
    pub answer: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Connects over TCP and reads the first line.
pub fn probe_tcp(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let result = (|| -> std::io::Result<String> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim().to_owned())
    })();
    outcome(result)
}

/// Sends one datagram and waits for one.
pub fn probe_udp(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    let result = (|| -> std::io::Result<String> {
        let bind: SocketAddr = if addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(std::io::Error::other)?;
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send_to(b"rustynet-lab-probe", addr)?;
        let mut buf = [0u8; 2048];
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })();
    outcome(result)
}

fn outcome(result: std::io::Result<String>) -> ProbeResult {
    match result {
        Ok(answer) if !answer.is_empty() => ProbeResult {
            ok: true,
            answer: Some(answer),
            error: None,
        },
        Ok(_) => ProbeResult {
            ok: false,
            answer: None,
            error: Some("empty answer".into()),
        },
        Err(e) => ProbeResult {
            ok: false,
            answer: None,
            error: Some(e.to_string()),
        },
    }
}

/// The IP the echo service saw (parsed from its `peer IP:PORT` line).
pub fn seen_ip(answer: &str) -> Option<std::net::IpAddr> {
    let addr = answer.strip_prefix("peer ")?.split_whitespace().next()?;
    addr.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_echo_answers() {
        assert_eq!(
            seen_ip("peer 198.51.100.6:4242"),
            Some("198.51.100.6".parse().unwrap())
        );
        assert_eq!(
            seen_ip("peer [2001:db8::1]:80 x"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(seen_ip("nope"), None);
    }

    #[test]
    fn dns_answers_a_queries() {
        let mut q = Message::query();
        q.add_query(hickory_proto::op::Query::query(
            "example.com.".parse().unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let reply =
            Message::from_vec(&dns_answer(&q.to_vec().unwrap(), INTERNET_DNS_ANSWER).unwrap())
                .unwrap();
        assert_eq!(reply.answers.len(), 1);
    }
}
