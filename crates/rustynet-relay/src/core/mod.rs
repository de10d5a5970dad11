//! The relay's protocol core: admission, forwarding decisions, queues and
//! timers, with no I/O.
//!
//! The server shell feeds it what happened (`handle_accept`,
//! `handle_upgraded`, `handle_frame`, `handle_closed`, `handle_timeout`),
//! every input carrying `now`, and then polls what to do: `poll_event` says
//! which connections have frames to write or must close, and `drain` hands
//! out a connection's pending frames as bytes. Tests drive it on a fake
//! clock.
//!
//! Rules it enforces:
//! - admission: a ticket signed by a configured control key and unexpired,
//!   and a login signature by the ticket's login key over this session's
//!   exporter and challenge;
//! - A→B only when A's ticket lists B and B's lists A, both unexpired;
//! - one connection per node key (a new login replaces the old one);
//! - a global connection cap, caps on unauthenticated connections (in all
//!   and per source IP), a handshake deadline, an idle timeout;
//! - a token bucket per node on forwarded bytes (and a small one for
//!   probes), bounded drop-head queues per destination;
//! - an expired ticket stops forwarding at once and closes the connection
//!   after a grace period unless a newer ticket arrives.

mod bucket;
mod codel;
mod queue;
#[cfg(test)]
mod tests;
mod udp;

pub use udp::{UdpMemo, UdpVerdict};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustynet_proto::relay::{TicketPolicy, VerifiedTicket, verify_ticket};
use rustynet_proto::{Signature, SigningPublicKey, TunnelPublicKey};

use crate::frame::{Decoder, Frame, GoneReason, PROTOCOL_VERSION, RefuseCode};
use crate::login::verify_login;
use crate::metrics::Metrics;
use bucket::TokenBucket;
use queue::{Outbound, Pushed};

/// The clock every input carries: monotonic for deadlines, unix seconds for
/// ticket validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock unix seconds.
    pub unix: i64,
}

impl Now {
    /// The system clocks.
    pub fn system() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            instant: Instant::now(),
            unix,
        }
    }
}

/// A connection, numbered by the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Tunables. The defaults suit a relay serving thousands of nodes on a
/// small host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most, authenticated or not.
    pub max_conns: usize,
    /// Connections that have not logged in yet, at most (each may buffer a
    /// login frame of up to `ticket.max_bytes`, so this bounds that memory).
    pub max_unauth: usize,
    /// Connections from one IP that have not logged in yet, at most.
    pub max_unauth_per_ip: usize,
    /// From TCP accept to `LoginOk`.
    pub handshake_timeout: Duration,
    /// A logged-in connection that sends nothing (not even a ping) this long
    /// is closed. Clients ping well within it.
    pub idle_timeout: Duration,
    /// How long a connection whose ticket expired may stay (not forwarding)
    /// waiting for a `TicketUpdate`.
    pub expiry_grace: Duration,
    /// Forwarded payload bytes per second per node (0: unlimited).
    pub rate_bytes_per_sec: u64,
    /// Burst of the per-node bucket, bytes.
    pub burst_bytes: u64,
    /// Probe bytes per second per node (0: unlimited).
    pub probe_rate_bytes_per_sec: u64,
    /// Burst of the per-node probe bucket, bytes.
    pub probe_burst_bytes: u64,
    /// Queued data bytes per destination before the oldest is dropped: a
    /// hard memory bound. CoDel keeps the queue far shorter in practice (see
    /// `codel`), so this only has to cover bursts.
    pub data_queue_bytes: usize,
    /// Queued probes per destination before the oldest is dropped.
    pub probe_queue_len: usize,
    /// Ticket checks.
    pub ticket: TicketPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conns: 20_000,
            max_unauth: 2048,
            max_unauth_per_ip: 64,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            expiry_grace: Duration::from_secs(30),
            rate_bytes_per_sec: 250_000_000,
            burst_bytes: 16 << 20,
            probe_rate_bytes_per_sec: 64 * 1024,
            probe_burst_bytes: 32 * 1024,
            data_queue_bytes: 4 << 20,
            probe_queue_len: 32,
            ticket: TicketPolicy::default(),
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection has frames to write: call [`RelayCore::drain`].
    Writable(ConnId),
    /// Write `last` (if any), then close. The core has forgotten the
    /// connection already.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (a counter label).
        reason: &'static str,
        /// A final frame (a login refusal).
        last: Option<Frame>,
    },
}

/// How often at most a sender hears `PeerGone` about one destination.
const GONE_INTERVAL: Duration = Duration::from_secs(1);
/// Destinations a connection remembers `PeerGone` times for.
const GONE_MEMORY: usize = 16;

enum Phase {
    /// TCP accepted; TLS and the HTTP upgrade are in progress.
    Accepted,
    /// Challenge sent; waiting for `Login`.
    Challenged {
        exporter: [u8; 32],
        challenge: [u8; 32],
    },
    /// Logged in.
    Authed(Box<Authed>),
}

struct Authed {
    ticket: VerifiedTicket,
    /// When the ticket expires, on the monotonic clock.
    expires: Instant,
    expired: bool,
    data_bucket: TokenBucket,
    probe_bucket: TokenBucket,
    gone_sent: Vec<(TunnelPublicKey, Instant)>,
    /// The UDP relay session, when offered.
    udp: Option<udp::UdpSession>,
}

struct Conn {
    peer: SocketAddr,
    phase: Phase,
    handshake_deadline: Instant,
    last_rx: Instant,
    /// The `at` of the one live timer entry for this connection.
    timer_at: Option<Instant>,
    out: Outbound,
}

impl Conn {
    fn due(&self, limits: &Limits) -> Instant {
        match &self.phase {
            Phase::Accepted | Phase::Challenged { .. } => self.handshake_deadline,
            Phase::Authed(a) => {
                let expiry = if a.expired {
                    a.expires + limits.expiry_grace
                } else {
                    a.expires
                };
                (self.last_rx + limits.idle_timeout).min(expiry)
            }
        }
    }

    fn authed(&self) -> Option<&Authed> {
        match &self.phase {
            Phase::Authed(a) => Some(a),
            _ => None,
        }
    }
}

/// The relay's state. See the module docs.
pub struct RelayCore {
    limits: Limits,
    control_keys: Vec<SigningPublicKey>,
    metrics: Metrics,
    conns: HashMap<ConnId, Conn>,
    by_key: HashMap<TunnelPublicKey, ConnId>,
    unauth_by_ip: HashMap<IpAddr, usize>,
    unauth_total: usize,
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    events: VecDeque<Event>,
    udp: udp::UdpTable,
}

impl RelayCore {
    /// A relay admitting tickets signed by any of `control_keys`.
    pub fn new(limits: Limits, control_keys: Vec<SigningPublicKey>, metrics: Metrics) -> Self {
        Self {
            limits,
            control_keys,
            metrics,
            conns: HashMap::new(),
            by_key: HashMap::new(),
            unauth_by_ip: HashMap::new(),
            unauth_total: 0,
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            udp: udp::UdpTable::default(),
        }
    }

    /// Replaces the control keys tickets are checked against.
    pub fn set_control_keys(&mut self, keys: Vec<SigningPublicKey>) {
        self.control_keys = keys;
    }

    /// A frame decoder with this relay's ticket size limit.
    pub fn decoder(&self) -> Decoder {
        Decoder::new(self.limits.ticket.max_bytes)
    }

    /// Open connections (all phases).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A TCP connection arrived from `peer`. `Err(reason)`: over a cap;
    /// close it at once (the refusal is counted).
    pub fn handle_accept(
        &mut self,
        id: ConnId,
        peer: SocketAddr,
        now: Now,
    ) -> Result<(), &'static str> {
        let reason = if self.conns.len() >= self.limits.max_conns {
            Some("conn_cap")
        } else if self.unauth_total >= self.limits.max_unauth {
            Some("unauth_cap")
        } else if self.unauth_by_ip.get(&peer.ip()).copied().unwrap_or(0)
            >= self.limits.max_unauth_per_ip
        {
            Some("per_ip_cap")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.metrics.refuse(reason);
            return Err(reason);
        }
        *self.unauth_by_ip.entry(peer.ip()).or_insert(0) += 1;
        self.unauth_total += 1;
        self.metrics.conn_gauge("handshake", 1);
        self.conns.insert(
            id,
            Conn {
                peer,
                phase: Phase::Accepted,
                handshake_deadline: now.instant + self.limits.handshake_timeout,
                last_rx: now.instant,
                timer_at: None,
                out: Outbound::default(),
            },
        );
        self.arm(id);
        Ok(())
    }

    /// TLS is up and the client upgraded: send the challenge. `exporter` is
    /// the session's keying material (label `login::EXPORTER_LABEL`),
    /// `challenge` fresh random bytes.
    pub fn handle_upgraded(&mut self, id: ConnId, exporter: [u8; 32], challenge: [u8; 32]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Accepted) {
            return;
        }
        conn.phase = Phase::Challenged {
            exporter,
            challenge,
        };
        self.push_control(
            id,
            Frame::ServerChallenge {
                version: PROTOCOL_VERSION,
                challenge,
            },
        );
    }

    /// A frame arrived on `id`.
    pub fn handle_frame(&mut self, id: ConnId, frame: Frame, now: Now) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_rx = now.instant;
        let authed = matches!(conn.phase, Phase::Authed(_));
        match frame {
            Frame::Login { sig, ticket } if !authed => self.login(id, sig, ticket, now),
            Frame::Send {
                dst,
                payload,
                probe,
            } if authed => self.forward(id, dst, payload, probe, now),
            Frame::Ping(data) if authed => self.push_control(id, Frame::Pong(data)),
            Frame::TicketUpdate { ticket } if authed => self.update_ticket(id, &ticket, now),
            Frame::UdpLookup { key } if authed => self.udp_lookup(id, key, now),
            _ => self.close(id, "protocol", None),
        }
    }

    /// The shell saw the connection end (EOF, I/O error, undecodable bytes).
    pub fn handle_closed(&mut self, id: ConnId, reason: &'static str) {
        if self.forget(id) {
            self.metrics.close(reason);
        }
    }

    /// Fires due deadlines.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now.instant {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.timer_at != Some(at) {
                continue; // superseded by an earlier entry
            }
            conn.timer_at = None;
            if conn.due(&self.limits) > now.instant {
                self.arm(id);
                continue;
            }
            let close = match &mut conn.phase {
                Phase::Accepted | Phase::Challenged { .. } => Some("handshake_timeout"),
                Phase::Authed(_) if now.instant >= conn.last_rx + self.limits.idle_timeout => {
                    Some("idle")
                }
                Phase::Authed(a) if a.expired => Some("ticket_expired"),
                Phase::Authed(a) => {
                    // Stop forwarding now; close after the grace period.
                    a.expired = true;
                    None
                }
            };
            match close {
                Some(reason) => self.close(id, reason, None),
                None => self.arm(id),
            }
        }
    }

    /// When [`RelayCore::handle_timeout`] next has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next thing the shell must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Appends `id`'s pending frames to `out` up to about `max` bytes.
    /// Returns whether more remain (call again once `out` is written).
    pub fn drain(&mut self, id: ConnId, out: &mut Vec<u8>, max: usize, now: Now) -> bool {
        match self.conns.get_mut(&id) {
            Some(conn) => {
                let drained = conn.out.drain(out, max, now.instant);
                for _ in 0..drained.dropped {
                    self.metrics.drop_packet("queue_delay");
                }
                drained.more
            }
            None => false,
        }
    }

    fn login(&mut self, id: ConnId, sig: Signature, ticket: Bytes, now: Now) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let Phase::Challenged {
            exporter,
            challenge,
        } = conn.phase
        else {
            self.close(id, "protocol", None);
            return;
        };
        let verified =
            match verify_ticket(&ticket, &self.control_keys, &self.limits.ticket, now.unix) {
                Ok(v) => v,
                Err(e) => {
                    self.refuse(id, RefuseCode::Ticket, e.reason(), e.to_string());
                    return;
                }
            };
        if !verify_login(&verified.login_key, &exporter, &challenge, &ticket, &sig) {
            self.refuse(
                id,
                RefuseCode::Signature,
                "bad_signature",
                "login signature does not verify".into(),
            );
            return;
        }
        let node_key = verified.node_key;
        if let Some(old) = self.by_key.insert(node_key, id) {
            self.close(old, "replaced", None);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = conn.peer;
        let expires = expiry_instant(&verified, now);
        conn.phase = Phase::Authed(Box::new(Authed {
            ticket: verified,
            expires,
            expired: false,
            data_bucket: TokenBucket::new(
                self.limits.rate_bytes_per_sec,
                self.limits.burst_bytes,
                now.instant,
            ),
            probe_bucket: TokenBucket::new(
                self.limits.probe_rate_bytes_per_sec,
                self.limits.probe_burst_bytes,
                now.instant,
            ),
            gone_sent: Vec::new(),
            udp: None,
        }));
        self.release_unauth(peer.ip());
        self.metrics.conn_gauge("handshake", -1);
        self.metrics.conn_gauge("authenticated", 1);
        self.metrics.login();
        self.arm(id);
        self.push_control(id, Frame::LoginOk { observed: peer });
        self.offer_udp(id, &exporter);
    }

    fn update_ticket(&mut self, id: ConnId, ticket: &[u8], now: Now) {
        let verified =
            match verify_ticket(ticket, &self.control_keys, &self.limits.ticket, now.unix) {
                Ok(v) => v,
                Err(e) => {
                    self.metrics.refuse(e.reason());
                    self.close(id, "ticket_update_refused", None);
                    return;
                }
            };
        let Some(Phase::Authed(a)) = self.conns.get_mut(&id).map(|c| &mut c.phase) else {
            return;
        };
        let current = &a.ticket;
        if verified.node_key != current.node_key
            || verified.login_key != current.login_key
            || verified.node_id != current.node_id
        {
            self.metrics.refuse("ticket_update_other_node");
            self.close(id, "ticket_update_refused", None);
            return;
        }
        if verified.generation < current.generation {
            self.metrics.refuse("ticket_update_older");
            self.close(id, "ticket_update_refused", None);
            return;
        }
        a.expires = expiry_instant(&verified, now);
        a.expired = false;
        a.ticket = verified;
        self.arm(id);
    }

    fn forward(
        &mut self,
        from: ConnId,
        dst: TunnelPublicKey,
        payload: Bytes,
        probe: bool,
        now: Now,
    ) {
        let Some(sender) = self.conns.get(&from).and_then(Conn::authed) else {
            return;
        };
        let src = sender.ticket.node_key;
        let verdict = if sender.expired {
            Err(("sender_expired", GoneReason::Expired))
        } else {
            match self
                .by_key
                .get(&dst)
                .and_then(|to| self.conns.get(to)?.authed())
            {
                None => Err(("not_connected", GoneReason::NotConnected)),
                Some(receiver) if receiver.expired => Err(("peer_expired", GoneReason::Expired)),
                Some(receiver) if !(sender.ticket.allows(&dst) && receiver.ticket.allows(&src)) => {
                    Err(("not_allowed", GoneReason::NotAllowed))
                }
                Some(_) => Ok(()),
            }
        };
        if let Err((reason, gone)) = verdict {
            self.metrics.drop_packet(reason);
            self.peer_gone(from, dst, gone, now);
            return;
        }
        let Some(Phase::Authed(sender)) = self.conns.get_mut(&from).map(|c| &mut c.phase) else {
            return;
        };
        let bucket = if probe {
            &mut sender.probe_bucket
        } else {
            &mut sender.data_bucket
        };
        if !bucket.take(payload.len() as u64, now.instant) {
            self.metrics.drop_packet("rate_limited");
            return;
        }
        let Some(&to) = self.by_key.get(&dst) else {
            return;
        };
        let Some(receiver) = self.conns.get_mut(&to) else {
            return;
        };
        let len = payload.len();
        let pushed = if probe {
            receiver
                .out
                .push_probe(src, payload, self.limits.probe_queue_len)
        } else {
            receiver
                .out
                .push_data(src, payload, self.limits.data_queue_bytes, now.instant)
        };
        for _ in 0..pushed.dropped {
            self.metrics.drop_packet("queue_full");
        }
        self.metrics.forwarded(len);
        self.wake(to);
    }

    /// Tells `from` that `dst` is unreachable, at most once a second per
    /// destination.
    fn peer_gone(&mut self, from: ConnId, dst: TunnelPublicKey, reason: GoneReason, now: Now) {
        let Some(Phase::Authed(a)) = self.conns.get_mut(&from).map(|c| &mut c.phase) else {
            return;
        };
        a.gone_sent
            .retain(|(_, at)| now.instant.saturating_duration_since(*at) < GONE_INTERVAL);
        if a.gone_sent.iter().any(|(k, _)| *k == dst) || a.gone_sent.len() >= GONE_MEMORY {
            return;
        }
        a.gone_sent.push((dst, now.instant));
        self.push_control(from, Frame::PeerGone { key: dst, reason });
    }

    fn refuse(&mut self, id: ConnId, code: RefuseCode, reason: &'static str, text: String) {
        self.metrics.refuse(reason);
        self.close(
            id,
            "login_refused",
            Some(Frame::LoginRefused { code, reason: text }),
        );
    }

    fn push_control(&mut self, id: ConnId, frame: Frame) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Pushed { dropped } = conn.out.push_control(frame);
        if dropped > 0 {
            self.metrics.drop_packet("control_queue_full");
        }
        self.wake(id);
    }

    fn wake(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.out.wake_pending
            && !conn.out.is_empty()
        {
            conn.out.wake_pending = true;
            self.events.push_back(Event::Writable(id));
        }
    }

    /// (Re)arms `id`'s timer if its deadline is earlier than the live entry.
    fn arm(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let due = conn.due(&self.limits);
        if conn.timer_at.is_none_or(|at| due < at) {
            conn.timer_at = Some(due);
            self.timers.push(Reverse((due, id)));
        }
    }

    fn close(&mut self, id: ConnId, reason: &'static str, last: Option<Frame>) {
        if self.forget(id) {
            self.metrics.close(reason);
            self.events.push_back(Event::Close {
                conn: id,
                reason,
                last,
            });
        }
    }

    /// Drops every trace of `id`; false if it was unknown.
    fn forget(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.remove(&id) else {
            return false;
        };
        match conn.phase {
            Phase::Authed(a) => {
                let key = a.ticket.node_key;
                if self.by_key.get(&key) == Some(&id) {
                    self.by_key.remove(&key);
                }
                if let Some(session) = a.udp {
                    self.end_udp(id, key, session);
                }
                self.metrics.conn_gauge("authenticated", -1);
            }
            Phase::Accepted | Phase::Challenged { .. } => {
                self.release_unauth(conn.peer.ip());
                self.metrics.conn_gauge("handshake", -1);
            }
        }
        true
    }

    fn release_unauth(&mut self, ip: IpAddr) {
        self.unauth_total = self.unauth_total.saturating_sub(1);
        if let Some(n) = self.unauth_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.unauth_by_ip.remove(&ip);
            }
        }
    }
}

/// The ticket's expiry on the monotonic clock.
fn expiry_instant(ticket: &VerifiedTicket, now: Now) -> Instant {
    let left = u64::try_from(ticket.expires_at.saturating_sub(now.unix)).unwrap_or(0);
    now.instant + Duration::from_secs(left)
}
