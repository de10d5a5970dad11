//! `rustynet ping`: one ICMP echo through the tunnel to a peer's tunnel
//! address (raw socket; the daemon runs with CAP_NET_RAW).

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum = sum.wrapping_add(u32::from(word));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one echo request to `dst` and waits up to `timeout` for its reply.
pub fn icmp_echo(dst: Ipv4Addr, timeout: Duration) -> Option<Duration> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).ok()?;
    let ident = (std::process::id() & 0xffff) as u16;
    let seq: u16 = 1;
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"rustynet-ping");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let start = Instant::now();
    socket
        .send_to(&packet, &SocketAddr::V4(SocketAddrV4::new(dst, 0)).into())
        .ok()?;
    let mut buf = [0u8; 1500];
    let mut socket = socket;
    while start.elapsed() < timeout {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(left)).ok()?;
        let n = socket.read(&mut buf).ok()?;
        let data = &buf[..n];
        // A raw ICMP socket delivers the IPv4 header too: check its source.
        if data.len() < 28 || data[12..16] != dst.octets() {
            continue;
        }
        let ihl = usize::from(data[0] & 0x0f) * 4;
        let Some(icmp) = data.get(ihl..) else {
            continue;
        };
        if icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Some(start.elapsed());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_known_header() {
        // Echo request, id 1 seq 1, no payload: checksum 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
