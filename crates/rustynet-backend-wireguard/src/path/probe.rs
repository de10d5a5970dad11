//! Path probes on the wire: format, sealing and opening.
//!
//! ```text
//! [0xD1][version 1][sender path pubkey 32][nonce 24][ciphertext + tag 16]
//!  \______________ header (58 bytes) = AAD ______/
//! plaintext: [msg type u8][counter u64 BE][body]
//!   Ping        (1): txid[12]
//!   Pong        (2): txid[12] addr          (the ping's source as seen; family 0 = via relay)
//!   CallMeMaybe (3): n u8 (<= 16), n x addr
//!   addr: family u8 (0 none | 4 | 6), ip (0 | 4 | 16 bytes), port u16 BE
//! ```
//! Tunnel packets start with 1..=4, probes with 0xD1 (0xD2/0xD3 belong to
//! the relay crate's binding requests), so one byte tells them apart.
//!
//! The receiver reads the sender key from the clear header and looks it up
//! among configured peers before any crypto: an unknown sender costs nothing.
//! The header is the AAD, so a probe cannot be re-labelled with another
//! sender (and one reflected back at its sender names the receiver itself,
//! which is never a peer).
//!
//! Replay: the counter is the sender's wall-clock milliseconds, at least one
//! above the previous probe to this peer, so it keeps growing across sender
//! restarts without any state on disk. The receiver keeps a window per peer
//! ([`super::replay::ReplayWindow`]). It does not refuse counters that lie
//! in its own future: a node whose clock runs ahead would otherwise be cut
//! off, and only the key holder can mint counters anyway. The price: a
//! sender whose clock steps *back* across a restart is refused (as
//! `too_old`) by peers that saw its earlier probes, until its clock passes
//! its old counters or those peers rebuild their peer table (a new path key
//! resets the window). The tunnel keeps working over the relay meanwhile.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chacha20poly1305::aead::generic_array::GenericArray;
use chacha20poly1305::{AeadInPlace as _, XChaCha20Poly1305};
use rand_core::CryptoRngCore;

use super::keys::{PathPublicKey, PathSecret};
use super::replay::ReplayWindow;
use super::{PathError, Refusal};

/// First byte of every probe.
const PROBE_TYPE: u8 = 0xD1;
/// The only format version this code speaks.
const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Type, version, sender key, nonce.
const HEADER_LEN: usize = 2 + KEY_LEN + NONCE_LEN;
/// Transaction ids: random enough that a pong can only answer our ping.
pub(crate) const TXID_LEN: usize = 12;
/// Most candidates one call-me-maybe carries.
pub(crate) const MAX_CALL_ME_CANDIDATES: usize = 16;
/// Largest address encoding: family, IPv6, port.
const MAX_ADDR_LEN: usize = 1 + 16 + 2;
/// Largest plaintext: a full call-me-maybe of IPv6 addresses.
const MAX_PLAINTEXT: usize = 1 + 8 + 1 + MAX_CALL_ME_CANDIDATES * MAX_ADDR_LEN;
/// Largest probe on the wire; anything longer is malformed.
const MAX_PROBE_LEN: usize = HEADER_LEN + MAX_PLAINTEXT + TAG_LEN;
/// Smallest probe: an empty call-me-maybe.
const MIN_PROBE_LEN: usize = HEADER_LEN + 1 + 8 + 1 + TAG_LEN;

const MSG_PING: u8 = 1;
const MSG_PONG: u8 = 2;
const MSG_CALL_ME_MAYBE: u8 = 3;

/// A transaction id pairing a pong with our ping.
pub(crate) type TxId = [u8; TXID_LEN];

/// The logical content of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// "Are you there on this path?" Must be answered with a pong on the
    /// path it came in on.
    Ping {
        /// Echoed in the pong.
        txid: TxId,
    },
    /// The answer to a ping.
    Pong {
        /// The ping's txid.
        txid: TxId,
        /// The source address the ping arrived from (our address as the
        /// peer sees it); `None` when the ping came through the relay.
        observed: Option<SocketAddr>,
    },
    /// "Ping me at these addresses now", sent through the relay so both
    /// sides ping at once and both NATs open their mappings.
    CallMeMaybe {
        /// The sender's candidate addresses (at most 16).
        candidates: Vec<SocketAddr>,
    },
}

/// Whether a datagram on the tunnel socket is a path probe.
pub(crate) fn is_probe(datagram: &[u8]) -> bool {
    datagram.first() == Some(&PROBE_TYPE)
}

/// The sender's path key, read from the clear header without any crypto.
/// The caller looks it up among configured peers; unknown senders are
/// refused before a single AEAD operation.
pub(crate) fn sender_of(datagram: &[u8]) -> Result<PathPublicKey, Refusal> {
    if datagram.len() < MIN_PROBE_LEN
        || datagram.len() > MAX_PROBE_LEN
        || datagram[0] != PROBE_TYPE
        || datagram[1] != VERSION
    {
        return Err(Refusal::Malformed);
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&datagram[2..2 + KEY_LEN]);
    Ok(PathPublicKey(key))
}

/// Probe crypto for one peer: the shared key, our send counter and the
/// peer's replay window. Built once per peer when the peer table is built.
pub(crate) struct ProbeKey {
    cipher: XChaCha20Poly1305,
    ours: PathPublicKey,
    theirs: PathPublicKey,
    last_sent: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeKey")
            .field("theirs", &self.theirs)
            .finish_non_exhaustive()
    }
}

impl ProbeKey {
    /// Derives the key shared with `peer` (one X25519 and one BLAKE3).
    pub(crate) fn new(ours: &PathSecret, peer: PathPublicKey) -> Result<Self, PathError> {
        Ok(Self {
            cipher: ours.shared_cipher(&peer)?,
            ours: ours.public(),
            theirs: peer,
            last_sent: 0,
            window: ReplayWindow::default(),
        })
    }

    #[cfg(test)]
    /// The peer's path key.
    pub(crate) fn peer(&self) -> PathPublicKey {
        self.theirs
    }

    /// Seals `msg` into `out` (cleared first). `wall_ms` is the sender's
    /// wall clock in milliseconds since the Unix epoch.
    pub(crate) fn seal(
        &mut self,
        msg: &Message,
        wall_ms: u64,
        rng: &mut impl CryptoRngCore,
        out: &mut Vec<u8>,
    ) -> Result<(), PathError> {
        let counter = wall_ms.max(self.last_sent.saturating_add(1));
        out.clear();
        out.push(PROBE_TYPE);
        out.push(VERSION);
        out.extend_from_slice(&self.ours.0);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        encode(msg, counter, out)?;
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(GenericArray::from_slice(&nonce), header, body)
            .map_err(|_| PathError::Seal)?;
        out.extend_from_slice(&tag);
        self.last_sent = counter;
        Ok(())
    }

    /// Authenticates and decodes a probe from this peer, then checks its
    /// counter. Any refusal leaves the window as it was.
    pub(crate) fn open(&mut self, datagram: &[u8]) -> Result<Message, Refusal> {
        if sender_of(datagram)? != self.theirs {
            return Err(Refusal::UnknownSender);
        }
        let (header, sealed) = datagram.split_at(HEADER_LEN);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut plain = [0u8; MAX_PLAINTEXT];
        let plain = &mut plain[..ciphertext.len()];
        plain.copy_from_slice(ciphertext);
        let nonce = GenericArray::from_slice(&header[2 + KEY_LEN..]);
        self.cipher
            .decrypt_in_place_detached(nonce, header, plain, GenericArray::from_slice(tag))
            .map_err(|_| Refusal::AuthFailed)?;
        let (counter, msg) = decode(plain).ok_or(Refusal::BadBody)?;
        self.window.accept(counter)?;
        Ok(msg)
    }
}

fn encode(msg: &Message, counter: u64, out: &mut Vec<u8>) -> Result<(), PathError> {
    match msg {
        Message::Ping { txid } => {
            out.push(MSG_PING);
            out.extend_from_slice(&counter.to_be_bytes());
            out.extend_from_slice(txid);
        }
        Message::Pong { txid, observed } => {
            out.push(MSG_PONG);
            out.extend_from_slice(&counter.to_be_bytes());
            out.extend_from_slice(txid);
            put_addr(*observed, out);
        }
        Message::CallMeMaybe { candidates } => {
            if candidates.len() > MAX_CALL_ME_CANDIDATES {
                return Err(PathError::TooManyCandidates(candidates.len()));
            }
            out.push(MSG_CALL_ME_MAYBE);
            out.extend_from_slice(&counter.to_be_bytes());
            // Checked above: at most 16.
            out.push(candidates.len() as u8);
            for c in candidates {
                put_addr(Some(*c), out);
            }
        }
    }
    Ok(())
}

fn put_addr(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    match addr.map(|a| (a.ip().to_canonical(), a.port())) {
        None => out.push(0),
        Some((IpAddr::V4(ip), port)) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(&port.to_be_bytes());
        }
        Some((IpAddr::V6(ip), port)) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
}

/// A cursor over an authenticated plaintext; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn addr(&mut self) -> Option<Option<SocketAddr>> {
        let ip = match self.array::<1>()?[0] {
            0 => return Some(None),
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        let port = u16::from_be_bytes(self.array::<2>()?);
        Some(Some(SocketAddr::new(ip, port)))
    }
}

/// Strict: unknown types, short bodies and trailing bytes are all refused.
fn decode(plain: &[u8]) -> Option<(u64, Message)> {
    let mut r = Reader(plain);
    let kind = r.array::<1>()?[0];
    let counter = u64::from_be_bytes(r.array::<8>()?);
    let msg = match kind {
        MSG_PING => Message::Ping { txid: r.array()? },
        MSG_PONG => Message::Pong {
            txid: r.array()?,
            observed: r.addr()?,
        },
        MSG_CALL_ME_MAYBE => {
            let n = usize::from(r.array::<1>()?[0]);
            if n > MAX_CALL_ME_CANDIDATES {
                return None;
            }
            let mut candidates = Vec::with_capacity(n);
            for _ in 0..n {
                candidates.push(r.addr()??);
            }
            Message::CallMeMaybe { candidates }
        }
        _ => return None,
    };
    r.0.is_empty().then_some((counter, msg))
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
