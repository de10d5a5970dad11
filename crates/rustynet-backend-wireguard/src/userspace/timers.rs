//! Timer worker: handshake retries, rekeying and keepalives for every peer,
//! the path machines' heartbeats and timeouts, endpoint discovery, the
//! handshake rate limiter's reset, and a liveness check of the interface.

use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;

use super::device::{Device, lock};
use super::net::{Ready, interface_exists, wait};
use super::paths;

/// boringtun's timers have one-second granularity; ticking faster keeps
/// handshake retries and keepalives close to the protocol's schedule.
const TICK_MS: i32 = 100;
/// How often to confirm the interface still exists (covers deletions the
/// TUN file descriptor does not report, e.g. while no traffic flows).
const LIVENESS_EVERY: Duration = Duration::from_millis(500);

/// Runs until stop is requested or the interface disappears.
pub(crate) fn run(dev: &Device) {
    let mut buf = vec![0u8; 2048];
    let mut last_check = Instant::now();
    loop {
        if wait(-1, 0, dev.waker.fd(), TICK_MS) == Ready::Wake || dev.is_stopping() {
            return;
        }
        dev.rate_limiter.reset_count();
        let table = dev.table();
        for peer in table.by_key.values() {
            let len = match lock(&peer.tunn).update_timers(&mut buf) {
                TunnResult::WriteToNetwork(pkt) => pkt.len(),
                _ => 0,
            };
            if len > 0 {
                paths::send_on_route(dev, peer, peer.path.route(), &buf[..len]);
            }
        }
        paths::tick(dev, &table);
        if last_check.elapsed() >= LIVENESS_EVERY {
            last_check = Instant::now();
            if !interface_exists(&dev.ifname) {
                dev.mark_gone();
                return;
            }
        }
    }
}
