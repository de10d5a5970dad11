//! Endpoint discovery: this node's own candidate addresses (its interfaces'
//! addresses and the mapped addresses relays and peers saw), from binding
//! requests sent on the tunnel's own UDP socket, plus `netcheck`.
//!
//! Sans-IO except for the two small effects it is handed (the device to send
//! from, the interface list): the timer worker calls [`Discovery::tick`],
//! the inbound worker [`Discovery::on_response`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use rustynet_relay::binding;
use rustynet_tunnel::{MappedAddr, NetcheckDone, NetcheckReport};

use super::device::Device;
use super::relays::RelaySet;

/// A discovery round every so often, so mappings that change unseen (a NAT
/// that rebinds) are found.
const ROUND_EVERY: Duration = Duration::from_secs(25);
/// Rounds asked for (trust expired, network changed) no more often.
const MIN_GAP: Duration = Duration::from_secs(2);
/// Answers count for this long.
const ANSWER_TTL: Duration = Duration::from_secs(90);
/// A request unanswered this long is forgotten.
const REQUEST_TTL: Duration = Duration::from_secs(3);
/// `netcheck` waits this long for answers at most.
const NETCHECK_WAIT: Duration = Duration::from_millis(1500);
/// Most candidates this node announces (as many as control accepts).
const MAX_CANDIDATES: usize = 16;

struct Pending {
    txid: binding::TxId,
    server: SocketAddr,
    sent: Instant,
}

#[derive(Clone, Copy)]
struct Answer {
    server: SocketAddr,
    mapped: SocketAddr,
    rtt: Duration,
    at: Instant,
    txid: binding::TxId,
}

struct Netcheck {
    started: Instant,
    txids: Vec<binding::TxId>,
    done: NetcheckDone,
}

/// See the module docs.
pub(crate) struct Discovery {
    pending: Vec<Pending>,
    answers: Vec<Answer>,
    /// Our address as peers saw it (from their pongs).
    observed: Vec<(SocketAddr, Instant)>,
    next_round: Option<Instant>,
    last_round: Option<Instant>,
    netchecks: Vec<Netcheck>,
    candidates: Arc<[SocketAddr]>,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            answers: Vec::new(),
            observed: Vec::new(),
            next_round: None,
            last_round: None,
            netchecks: Vec::new(),
            candidates: Arc::from(Vec::new()),
        }
    }
}

impl Discovery {
    /// Our candidates, as peers should try them (shared, cheap to clone).
    pub(crate) fn candidates(&self) -> Arc<[SocketAddr]> {
        Arc::clone(&self.candidates)
    }

    /// Our mapped (public) addresses, for control.
    pub(crate) fn mapped(&self, now: Instant) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self
            .answers
            .iter()
            .filter(|a| now.duration_since(a.at) < ANSWER_TTL)
            .map(|a| a.mapped)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Asks for a round soon (rate-limited).
    pub(crate) fn trigger(&mut self, now: Instant) {
        let earliest = self.last_round.map_or(now, |t| (t + MIN_GAP).max(now));
        self.next_round = Some(self.next_round.map_or(earliest, |t| t.min(earliest)));
    }

    /// A peer told us how it saw our address.
    pub(crate) fn observed(&mut self, addr: SocketAddr, now: Instant) {
        self.observed.retain(|(a, _)| *a != addr);
        self.observed.push((addr, now));
        self.observed.truncate(4);
    }

    /// Starts a `netcheck`: a fresh round whose answers `done` receives.
    pub(crate) fn start_netcheck(&mut self, dev: &Device, relays: &RelaySet, done: NetcheckDone) {
        let now = Instant::now();
        let txids = self.round(dev, relays, now);
        self.netchecks.push(Netcheck {
            started: now,
            txids,
            done,
        });
        self.finish_netchecks(relays, now);
    }

    /// Sends a binding request to every binding address of every relay.
    fn round(&mut self, dev: &Device, relays: &RelaySet, now: Instant) -> Vec<binding::TxId> {
        self.last_round = Some(now);
        self.next_round = Some(now + ROUND_EVERY);
        let mut sent = Vec::new();
        for server in relays.binding_addrs() {
            let mut txid = [0u8; 12];
            OsRng.fill_bytes(&mut txid);
            dev.udp
                .send(server, &binding::request(&txid), None, dev.waker.fd());
            self.pending.push(Pending {
                txid,
                server,
                sent: now,
            });
            sent.push(txid);
        }
        sent
    }

    /// A binding response arrived from `from` on the tunnel socket. Only an
    /// answer to a request of ours, from the address we asked, counts.
    pub(crate) fn on_response(&mut self, from: SocketAddr, pkt: &[u8], now: Instant) {
        let Some((txid, mapped)) = binding::parse_response(pkt) else {
            return;
        };
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.txid == txid && p.server == from)
        else {
            return;
        };
        let p = self.pending.swap_remove(i);
        self.answers.retain(|a| a.server != p.server);
        self.answers.push(Answer {
            server: p.server,
            mapped: SocketAddr::new(mapped.ip().to_canonical(), mapped.port()),
            rtt: now.duration_since(p.sent),
            at: now,
            txid,
        });
    }

    /// Timer work: rounds when due, expiry, candidates, netchecks.
    pub(crate) fn tick(&mut self, dev: &Device, relays: &RelaySet, now: Instant) {
        if self.next_round.is_none_or(|t| t <= now) && !relays.conns.is_empty() {
            self.round(dev, relays, now);
        }
        self.pending
            .retain(|p| now.duration_since(p.sent) < REQUEST_TTL);
        self.answers
            .retain(|a| now.duration_since(a.at) < ANSWER_TTL);
        self.observed
            .retain(|(_, at)| now.duration_since(*at) < ANSWER_TTL);
        let fresh = self.compute_candidates(dev, now);
        if *fresh != *self.candidates {
            tracing::debug!(candidates = ?fresh, "own candidates changed");
            self.candidates = Arc::from(fresh);
        }
        self.finish_netchecks(relays, now);
    }

    fn compute_candidates(&self, dev: &Device, now: Instant) -> Vec<SocketAddr> {
        let port = dev.udp.port();
        let mut out: Vec<SocketAddr> = local_addrs(&dev.ifname)
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        out.extend(self.mapped(now));
        out.extend(self.observed.iter().map(|(a, _)| *a));
        let mut seen = std::collections::HashSet::new();
        out.retain(|a| seen.insert(*a));
        out.truncate(MAX_CANDIDATES);
        out
    }

    fn finish_netchecks(&mut self, relays: &RelaySet, now: Instant) {
        let mut i = 0;
        while i < self.netchecks.len() {
            let n = &self.netchecks[i];
            let answered: Vec<Answer> = self
                .answers
                .iter()
                .filter(|a| n.txids.contains(&a.txid))
                .copied()
                .collect();
            let complete = answered.len() == n.txids.len();
            if !complete && now.duration_since(n.started) < NETCHECK_WAIT {
                i += 1;
                continue;
            }
            let n = self.netchecks.swap_remove(i);
            (n.done)(report(&answered, relays, now.duration_since(n.started)));
        }
    }
}

/// What a netcheck round found.
fn report(answered: &[Answer], relays: &RelaySet, took: Duration) -> NetcheckReport {
    let mapped: Vec<MappedAddr> = answered
        .iter()
        .map(|a| MappedAddr {
            server: a.server,
            mapped: a.mapped,
            rtt: a.rtt,
        })
        .collect();
    // Destination-dependent mapping shows as different mapped addresses
    // from servers on different IPs.
    let mut by_ip: Vec<&MappedAddr> = Vec::new();
    for m in &mapped {
        if !by_ip.iter().any(|o| o.server.ip() == m.server.ip()) {
            by_ip.push(m);
        }
    }
    let mapping_varies =
        (by_ip.len() >= 2).then(|| by_ip.iter().any(|m| m.mapped != by_ip[0].mapped));
    let rtts: Vec<(String, Option<Duration>)> = relays
        .conns
        .iter()
        .map(|c| (c.info.name.clone(), c.is_up().then(|| c.rtt()).flatten()))
        .collect();
    let preferred_relay = rtts
        .iter()
        .filter_map(|(n, r)| r.map(|r| (n, r)))
        .min_by_key(|(_, r)| *r)
        .map(|(n, _)| n.clone());
    NetcheckReport {
        supported: true,
        udp: !mapped.is_empty(),
        mapped,
        mapping_varies,
        relays: rtts,
        preferred_relay,
        took,
    }
}

/// Addresses of this host's interfaces peers might reach (not the tunnel,
/// loopback, link-local, the tunnel range or multicast).
fn local_addrs(tun: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid
        // until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() == tun.as_bytes() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let ip = match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        if rustynet_proto::endpoint::check_endpoint(&SocketAddr::new(ip, 1)).is_ok() {
            out.push(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(server: &str, mapped: &str) -> Answer {
        Answer {
            server: server.parse().unwrap_or_else(|_| unreachable!()),
            mapped: mapped.parse().unwrap_or_else(|_| unreachable!()),
            rtt: Duration::from_millis(2),
            at: Instant::now(),
            txid: [0; 12],
        }
    }

    #[test]
    fn mapping_classification() {
        let relays = RelaySet::default();
        let same = [
            answer("198.51.100.2:3478", "203.0.113.5:41641"),
            answer("198.51.100.3:3478", "203.0.113.5:41641"),
        ];
        let r = report(&same, &relays, Duration::ZERO);
        assert_eq!(r.mapping_varies, Some(false));
        assert!(r.udp && r.supported);
        let differ = [
            answer("198.51.100.2:3478", "203.0.113.5:1024"),
            answer("198.51.100.3:3478", "203.0.113.5:2048"),
        ];
        assert_eq!(
            report(&differ, &relays, Duration::ZERO).mapping_varies,
            Some(true)
        );
        // Two ports on one IP cannot tell destination dependence apart.
        let one_ip = [
            answer("198.51.100.2:3478", "203.0.113.5:1024"),
            answer("198.51.100.2:3479", "203.0.113.5:2048"),
        ];
        assert_eq!(
            report(&one_ip, &relays, Duration::ZERO).mapping_varies,
            None
        );
        let none = report(&[], &relays, Duration::ZERO);
        assert!(!none.udp && none.mapping_varies.is_none());
    }

    #[test]
    fn trigger_is_rate_limited() {
        let mut d = Discovery::default();
        let t0 = Instant::now();
        d.last_round = Some(t0);
        d.next_round = Some(t0 + ROUND_EVERY);
        d.trigger(t0);
        assert_eq!(d.next_round, Some(t0 + MIN_GAP));
        d.trigger(t0 + Duration::from_secs(10));
        assert_eq!(d.next_round, Some(t0 + MIN_GAP), "an earlier round stays");
    }
}
