//! The core's side of the UDP relay mode (wire format and rationale in
//! [`crate::udp`]): sessions offered at login, addresses registered by
//! hellos, ids told to both ends of an allowed pair, and the per-datagram
//! forwarding decision, under the same tickets, pair rules and rate as the
//! TLS relay.

use std::collections::HashMap;
use std::net::SocketAddr;

use rustynet_proto::TunnelPublicKey;

use super::{ConnId, Now, Phase, RelayCore};
use crate::frame::{Frame, GoneReason};
use crate::udp::{self, HELLO_ACK_TYPE, MAX_ID, Token};

/// A connection's UDP relay session.
#[derive(Debug)]
pub(super) struct UdpSession {
    id: u32,
    token: Token,
    /// Where its hellos come from (its NAT's mapping towards the relay).
    addr: Option<SocketAddr>,
    /// Connections told this session's id: they hear when it goes away.
    watchers: Vec<ConnId>,
}

/// The lookup tables, across sessions.
#[derive(Debug, Default)]
pub(super) struct UdpTable {
    enabled: bool,
    by_token: HashMap<Token, ConnId>,
    by_addr: HashMap<SocketAddr, ConnId>,
    by_id: HashMap<u32, ConnId>,
    next_id: u32,
}

/// The last route [`RelayCore::handle_udp_in_batch`] decided, kept for
/// the rest of one batch of datagrams the shell hands over under one lock.
///
/// Within such a batch nothing but hellos can change a route's inputs
/// (registered addresses, ids, tickets, expiry all change under the lock,
/// between batches), and a hello clears the memo; so a datagram with the
/// memo's source and destination id gets the same verdict a full lookup
/// would give. Only the sender's token bucket is still charged per
/// datagram. A GRO train is one source's datagrams, mostly to one
/// destination: this saves four hash lookups and two ticket searches per
/// datagram.
#[derive(Debug, Default)]
pub struct UdpMemo {
    last: Option<Memo>,
}

#[derive(Debug, Clone, Copy)]
struct Memo {
    from: SocketAddr,
    dst_id: u32,
    sender: ConnId,
    to: SocketAddr,
    src_id: u32,
}

/// What the shell does with a datagram [`RelayCore::handle_udp`] looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpVerdict {
    /// Send the (rewritten) datagram back to its source (a hello's echo).
    Reply,
    /// Send the (rewritten) datagram to this address.
    Forward(SocketAddr),
    /// Drop it (counted).
    Drop,
}

impl RelayCore {
    /// Offers the UDP relay mode to clients that log in from now on (the
    /// shell has UDP sockets to receive on).
    pub fn enable_udp(&mut self) {
        self.udp.enabled = true;
    }

    /// Starts a session for `id`, just logged in; the token is derived from
    /// the TLS session's exporter, so only the two ends know it.
    pub(super) fn offer_udp(&mut self, id: ConnId, exporter: &[u8; 32]) {
        if !self.udp.enabled {
            return;
        }
        let Some(udp_id) = self.free_udp_id() else {
            return;
        };
        let hash = blake3::derive_key("rustynet relay udp token v1", exporter);
        let mut token = [0u8; 16];
        token.copy_from_slice(&hash[..16]);
        let Some(Phase::Authed(a)) = self.conns.get_mut(&id).map(|c| &mut c.phase) else {
            return;
        };
        a.udp = Some(UdpSession {
            id: udp_id,
            token,
            addr: None,
            watchers: Vec::new(),
        });
        self.udp.by_token.insert(token, id);
        self.udp.by_id.insert(udp_id, id);
        self.push_control(id, Frame::UdpOffer { token });
    }

    fn free_udp_id(&mut self) -> Option<u32> {
        // At most as many sessions as connections (a cap far below 2^24).
        for _ in 0..=MAX_ID {
            self.udp.next_id = if self.udp.next_id >= MAX_ID {
                1
            } else {
                self.udp.next_id + 1
            };
            if !self.udp.by_id.contains_key(&self.udp.next_id) {
                return Some(self.udp.next_id);
            }
        }
        None
    }

    /// Forgets `id`'s session (it closed) and tells its watchers.
    pub(super) fn end_udp(&mut self, id: ConnId, key: TunnelPublicKey, session: UdpSession) {
        self.udp.by_token.remove(&session.token);
        if self.udp.by_id.get(&session.id) == Some(&id) {
            self.udp.by_id.remove(&session.id);
        }
        if let Some(addr) = session.addr
            && self.udp.by_addr.get(&addr) == Some(&id)
        {
            self.udp.by_addr.remove(&addr);
        }
        for watcher in session.watchers {
            self.push_control(
                watcher,
                Frame::PeerGone {
                    key,
                    reason: GoneReason::NotConnected,
                },
            );
        }
    }

    /// A datagram that is a hello or a UDP relay packet arrived on a relay
    /// UDP socket from `from`. Rewrites it in place and says where it goes.
    pub fn handle_udp(&mut self, from: SocketAddr, datagram: &mut [u8], now: Now) -> UdpVerdict {
        self.handle_udp_in_batch(from, datagram, now, &mut UdpMemo::default())
    }

    /// [`RelayCore::handle_udp`] for one of a batch of datagrams handled
    /// without releasing the core in between, with a `memo` that lives
    /// exactly as long as that batch (see [`UdpMemo`]).
    pub fn handle_udp_in_batch(
        &mut self,
        from: SocketAddr,
        datagram: &mut [u8],
        now: Now,
        memo: &mut UdpMemo,
    ) -> UdpVerdict {
        if let Some(token) = udp::parse_hello(datagram, false) {
            // A hello may move an address: routes must be looked up again.
            memo.last = None;
            return self.hello(from, token, datagram);
        }
        let Some(dst_id) = udp::id_of(datagram) else {
            self.metrics.drop_packet("udp_malformed");
            return UdpVerdict::Drop;
        };
        let routed = match memo.last {
            Some(m) if m.from == from && m.dst_id == dst_id => self
                .charge(m.sender, datagram.len(), now)
                .map(|()| (m.to, m.src_id)),
            _ => self
                .udp_route(from, dst_id, datagram.len(), now)
                .map(|(to, src_id, sender)| {
                    memo.last = Some(Memo {
                        from,
                        dst_id,
                        sender,
                        to,
                        src_id,
                    });
                    (to, src_id)
                }),
        };
        match routed {
            Ok((to, src_id)) => {
                udp::set_id(datagram, src_id);
                self.metrics.udp_forwarded(datagram.len());
                UdpVerdict::Forward(to)
            }
            Err(reason) => {
                self.metrics.drop_packet(reason);
                UdpVerdict::Drop
            }
        }
    }

    fn hello(&mut self, from: SocketAddr, token: Token, datagram: &mut [u8]) -> UdpVerdict {
        let Some(&id) = self.udp.by_token.get(&token) else {
            self.metrics.drop_packet("udp_unknown_token");
            return UdpVerdict::Drop;
        };
        let Some(Phase::Authed(a)) = self.conns.get_mut(&id).map(|c| &mut c.phase) else {
            return UdpVerdict::Drop;
        };
        let Some(session) = a.udp.as_mut() else {
            return UdpVerdict::Drop;
        };
        let old = session.addr.replace(from);
        if old != Some(from) {
            if let Some(old) = old
                && self.udp.by_addr.get(&old) == Some(&id)
            {
                self.udp.by_addr.remove(&old);
            }
            // Another session registered from this address before (a NAT
            // reused the mapping): the newest hello owns it.
            if let Some(prev) = self.udp.by_addr.insert(from, id)
                && prev != id
                && let Some(Phase::Authed(p)) = self.conns.get_mut(&prev).map(|c| &mut c.phase)
                && let Some(s) = p.udp.as_mut()
            {
                s.addr = None;
            }
        }
        datagram[0] = HELLO_ACK_TYPE;
        self.metrics.udp_hello();
        UdpVerdict::Reply
    }

    /// Where a packet from `from` to the session `dst_id` goes, the
    /// sender's id to put in it and the sender's connection; or why not.
    fn udp_route(
        &mut self,
        from: SocketAddr,
        dst_id: u32,
        len: usize,
        now: Now,
    ) -> Result<(SocketAddr, u32, ConnId), &'static str> {
        let &sender_conn = self.udp.by_addr.get(&from).ok_or("udp_unknown_source")?;
        let &receiver_conn = self.udp.by_id.get(&dst_id).ok_or("not_connected")?;
        let receiver = self
            .conns
            .get(&receiver_conn)
            .and_then(|c| c.authed())
            .ok_or("not_connected")?;
        let to = receiver
            .udp
            .as_ref()
            .and_then(|s| s.addr)
            .ok_or("udp_no_address")?;
        let (receiver_key, receiver_expired) = (receiver.ticket.node_key, receiver.expired);
        let receiver_allows = |k: &TunnelPublicKey| receiver.ticket.allows(k);
        let sender = self
            .conns
            .get(&sender_conn)
            .and_then(|c| c.authed())
            .ok_or("udp_unknown_source")?;
        if sender.expired {
            return Err("sender_expired");
        }
        if receiver_expired {
            return Err("peer_expired");
        }
        if !(sender.ticket.allows(&receiver_key) && receiver_allows(&sender.ticket.node_key)) {
            return Err("not_allowed");
        }
        let src_id = sender
            .udp
            .as_ref()
            .map(|s| s.id)
            .ok_or("udp_unknown_source")?;
        self.charge(sender_conn, len, now)?;
        Ok((to, src_id, sender_conn))
    }

    /// Takes `len` bytes from the sender's data bucket.
    fn charge(&mut self, sender: ConnId, len: usize, now: Now) -> Result<(), &'static str> {
        let Some(Phase::Authed(sender)) = self.conns.get_mut(&sender).map(|c| &mut c.phase) else {
            return Err("udp_unknown_source");
        };
        if !sender.data_bucket.take(len as u64, now.instant) {
            return Err("rate_limited");
        }
        Ok(())
    }

    /// `UdpLookup { key }` from `from`: tells both ends each other's id if
    /// the pair may talk and both have a registered address.
    pub(super) fn udp_lookup(&mut self, from: ConnId, key: TunnelPublicKey, now: Now) {
        let verdict = self.lookup_verdict(from, &key);
        match verdict {
            Ok((to, sender_key, sender_id, receiver_id)) => {
                self.watch(to, from);
                self.watch(from, to);
                self.push_control(
                    from,
                    Frame::UdpPeer {
                        key,
                        id: receiver_id,
                    },
                );
                self.push_control(
                    to,
                    Frame::UdpPeer {
                        key: sender_key,
                        id: sender_id,
                    },
                );
            }
            Err((reason, gone)) => {
                self.metrics.drop_packet(reason);
                self.peer_gone(from, key, gone, now);
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn lookup_verdict(
        &self,
        from: ConnId,
        key: &TunnelPublicKey,
    ) -> Result<(ConnId, TunnelPublicKey, u32, u32), (&'static str, GoneReason)> {
        let not_connected = ("not_connected", GoneReason::NotConnected);
        let sender = self
            .conns
            .get(&from)
            .and_then(|c| c.authed())
            .ok_or(not_connected)?;
        let sender_id = sender
            .udp
            .as_ref()
            .map(|s| s.id)
            .ok_or(("udp_off", GoneReason::NotConnected))?;
        let &to = self.by_key.get(key).ok_or(not_connected)?;
        let receiver = self
            .conns
            .get(&to)
            .and_then(|c| c.authed())
            .ok_or(not_connected)?;
        let receiver_id = match &receiver.udp {
            Some(s) if s.addr.is_some() => s.id,
            _ => return Err(("udp_no_address", GoneReason::NotConnected)),
        };
        if sender.expired || receiver.expired {
            return Err(("peer_expired", GoneReason::Expired));
        }
        if !(sender.ticket.allows(key) && receiver.ticket.allows(&sender.ticket.node_key)) {
            return Err(("not_allowed", GoneReason::NotAllowed));
        }
        Ok((to, sender.ticket.node_key, sender_id, receiver_id))
    }

    /// Remembers that `watcher` knows `of`'s id (forgetting watchers that
    /// have closed, so reconnecting peers do not grow the list).
    fn watch(&mut self, of: ConnId, watcher: ConnId) {
        let Some(session) = self
            .conns
            .get(&of)
            .and_then(|c| c.authed())
            .and_then(|a| a.udp.as_ref())
        else {
            return;
        };
        let stale: Vec<ConnId> = session
            .watchers
            .iter()
            .copied()
            .filter(|w| !self.conns.contains_key(w))
            .collect();
        if let Some(Phase::Authed(a)) = self.conns.get_mut(&of).map(|c| &mut c.phase)
            && let Some(s) = a.udp.as_mut()
        {
            s.watchers.retain(|w| !stale.contains(w));
            if !s.watchers.contains(&watcher) {
                s.watchers.push(watcher);
            }
        }
    }

    /// The UDP session id of the node `key` (tests and status).
    pub fn udp_id(&self, key: &TunnelPublicKey) -> Option<u32> {
        let to = self.by_key.get(key)?;
        self.conns.get(to)?.authed()?.udp.as_ref().map(|s| s.id)
    }
}
