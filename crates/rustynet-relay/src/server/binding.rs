//! The UDP binding responder: answers well-formed requests with the source
//! address it saw, rate-limited per source IP. Malformed datagrams get no
//! answer at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::binding::{REQUEST_LEN, parse_request, response};
use crate::metrics::Metrics;

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

pub(super) async fn serve(socket: UdpSocket, metrics: Metrics, cancel: CancellationToken) {
    let mut limiter = Limiter::new();
    // One byte more than a request, so an oversized datagram is seen as such.
    let mut buf = [0u8; REQUEST_LEN + 1];
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let Ok((len, from)) = received else {
            continue;
        };
        let Some(txid) = parse_request(&buf[..len]) else {
            metrics.binding_dropped("malformed");
            continue;
        };
        if !limiter.allow(from.ip().to_canonical(), Instant::now()) {
            metrics.binding_dropped("rate_limited");
            continue;
        }
        let (answer, n) = response(&txid, from);
        if socket.send_to(&answer[..n], from).await.is_ok() {
            metrics.binding_answered();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
