//! A minimal blocking `NETLINK_ROUTE` socket.
//!
//! Why not the async `rtnetlink` crate: its message types
//! (`netlink-packet-route`) are what we use, but its connection needs a
//! tokio runtime and hands requests to a background task. A blocking socket
//! keeps the routing traits synchronous and dyn-compatible, works from any
//! thread, and makes the namespace rule trivial: the socket lives in the
//! network namespace of the thread that opened it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, ParseableParametrized,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkHeader, LinkMessage};

/// How long to wait for the kernel before giving up on a reply. The kernel
/// answers rtnetlink requests synchronously, so this only fires if something
/// is badly wrong; it keeps the daemon from hanging forever.
const RECV_TIMEOUT_SECS: libc::time_t = 10;
/// How many times an interrupted dump (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 5;
/// `RTM_NEWLINK`: a link reply, decoded by [`parse_link`] rather than by the
/// crate's full decoder.
const RTM_NEWLINK: u16 = 16;
/// `sizeof(struct ifinfomsg)`: the fixed header before a link's attributes.
const IFINFOMSG_LEN: usize = 16;
/// The only link attributes the routing backend reads (`IFLA_IFNAME`,
/// `IFLA_MTU`).
const WANTED_LINK_ATTRS: [u16; 2] = [3, 4];

/// Why a netlink exchange failed.
#[derive(Debug)]
pub(crate) enum NlError {
    /// Transport failure.
    Io(io::Error),
    /// The kernel answered with a negative errno.
    Kernel(io::Error),
    /// A reply did not decode.
    Decode(String),
}

/// A bound rtnetlink socket with a sequence counter.
pub(crate) struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Opens and binds a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call with constant arguments; the result is
        // checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }

        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS,
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends a request and waits for its acknowledgement. Any reply messages
    /// that arrive before the ACK (e.g. the answer to a GET) are returned.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let (replies, _) = self.collect(seq, false)?;
        Ok(replies)
    }

    /// Runs a dump request and returns every message of the dump. Retries
    /// when the kernel flags the dump as inconsistent (state changed while
    /// it was being read).
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut attempt = 0;
        loop {
            let seq = self.send(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            let (replies, interrupted) = self.collect(seq, true)?;
            attempt += 1;
            if !interrupted || attempt >= DUMP_RETRIES {
                return Ok(replies);
            }
        }
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        // SAFETY: `bytes` is a live buffer of the given length.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(NlError::Io(io::Error::last_os_error()));
        }
        Ok(self.seq)
    }

    /// Reads datagrams until the reply to `seq` is complete: the ACK for a
    /// request, `NLMSG_DONE` for a dump. Returns the inner messages and
    /// whether the dump was interrupted.
    fn collect(
        &mut self,
        seq: u32,
        dump: bool,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NlError> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let len = self.recv()?;
            let mut offset = 0;
            while offset < len {
                let chunk = &self.buf[offset..len];
                let msg_len = NetlinkBuffer::new_checked(chunk)
                    .map_err(|e| NlError::Decode(e.to_string()))?
                    .length() as usize;
                if msg_len == 0 || msg_len > chunk.len() {
                    return Err(NlError::Decode(format!("bad message length {msg_len}")));
                }
                let frame = NetlinkBuffer::new_checked(&chunk[..msg_len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                offset += (msg_len + 3) & !3;
                if frame.sequence_number() != seq {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                if frame.flags() & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                let payload = decode_payload(frame).map_err(|e| NlError::Decode(e.to_string()))?;
                match payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    // A dump that failed part-way ends with a negative errno.
                    NetlinkPayload::Done(done) if dump && done.code < 0 => {
                        return Err(NlError::Kernel(io::Error::from_raw_os_error(-done.code)));
                    }
                    NetlinkPayload::Done(_) if dump => return Ok((out, interrupted)),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None if !dump => Ok((out, interrupted)),
                            None => Err(NlError::Decode("unexpected ACK during dump".into())),
                            Some(code) => {
                                Err(NlError::Kernel(io::Error::from_raw_os_error(-code.get())))
                            }
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// Receives one datagram into `self.buf`, growing it if the datagram is
    /// larger (dumps of big tables can exceed the default).
    fn recv(&mut self) -> Result<usize, NlError> {
        loop {
            // SAFETY: `buf` is a live buffer; MSG_PEEK|MSG_TRUNC only reports
            // the datagram's full size without consuming it.
            let peek = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_PEEK | libc::MSG_TRUNC,
                )
            };
            if peek < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError::Io(err));
            }
            let size = peek as usize;
            if size > self.buf.len() {
                self.buf.resize(size, 0);
            }
            // SAFETY: as above; this call consumes the datagram.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if got < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError::Io(err));
            }
            return Ok(got as usize);
        }
    }
}

/// Decodes one reply. Link replies go through [`parse_link`]; everything
/// else through the crate's decoder.
fn decode_payload(
    frame: NetlinkBuffer<&[u8]>,
) -> Result<NetlinkPayload<RouteNetlinkMessage>, DecodeError> {
    if frame.message_type() == RTM_NEWLINK {
        let link = parse_link(frame.payload())?;
        return Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(
            link,
        )));
    }
    NetlinkMessage::<RouteNetlinkMessage>::deserialize(frame.into_inner()).map(|m| m.payload)
}

/// Decodes a link reply keeping only the header and the attributes in
/// [`WANTED_LINK_ATTRS`].
///
/// Why not the full decoder: a link reply also carries statistics, link
/// info and per-family device configuration (`IFLA_AF_SPEC`), which kernels
/// extend faster than `netlink-packet-route` learns them. Decoding them made
/// the crate log a line for every link on every call (flooding the daemon's
/// log), and any attribute it failed to decode, on any link in the
/// namespace, would fail the whole routing apply. We never read them.
pub(crate) fn parse_link(payload: &[u8]) -> Result<LinkMessage, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let attrs = payload
        .get(IFINFOMSG_LEN..)
        .ok_or_else(|| DecodeError::from("link message shorter than its header"))?;
    let mut msg = LinkMessage::default();
    msg.header = header;
    for nla in NlasIterator::new(attrs) {
        let nla = nla?;
        if WANTED_LINK_ATTRS.contains(&nla.kind()) {
            msg.attributes.push(LinkAttribute::parse_with_param(
                &nla,
                msg.header.interface_family,
            )?);
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Parseable;
    use netlink_packet_route::link::LinkFlags;

    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("small attribute");
        let mut out = [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// A link reply as a newer kernel sends it: name and MTU, an IPv6
    /// device config longer than the crate knows, and an attribute the
    /// crate cannot decode (a zero-length `IFLA_OPERSTATE`).
    fn link_payload() -> Vec<u8> {
        let mut out = vec![0u8, 0];
        out.extend_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        out.extend_from_slice(&7i32.to_ne_bytes()); // index
        out.extend_from_slice(&0x1_0001u32.to_ne_bytes()); // UP | LOWER_UP
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend(nla(3, b"rn0\0"));
        out.extend(nla(4, &1380u32.to_ne_bytes()));
        let inet6_conf = nla(2, &[0u8; 4 * 200]);
        let af_inet6 = nla(10, &inet6_conf);
        out.extend(nla(26, &af_inet6));
        out.extend(nla(16, &[]));
        out
    }

    #[test]
    fn parse_link_keeps_header_name_and_mtu_and_skips_the_rest() {
        let payload = link_payload();
        assert!(
            LinkMessage::parse(payload.as_slice()).is_err(),
            "the full decoder must reject this reply, or the test proves nothing"
        );
        let link = parse_link(&payload).expect("filtered decode");
        assert_eq!(link.header.index, 7);
        assert!(
            link.header
                .flags
                .contains(LinkFlags::Up | LinkFlags::LowerUp)
        );
        assert_eq!(
            link.attributes,
            vec![
                LinkAttribute::IfName("rn0".into()),
                LinkAttribute::Mtu(1380)
            ]
        );
    }

    #[test]
    fn decode_payload_routes_link_replies_through_parse_link() {
        let payload = link_payload();
        let len = u32::try_from(16 + payload.len()).expect("small message");
        let mut frame = len.to_ne_bytes().to_vec();
        frame.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        frame.extend_from_slice(&0u16.to_ne_bytes());
        frame.extend_from_slice(&9u32.to_ne_bytes());
        frame.extend_from_slice(&0u32.to_ne_bytes());
        frame.extend_from_slice(&payload);
        let buf = NetlinkBuffer::new_checked(frame.as_slice()).expect("frame");
        match decode_payload(buf).expect("decoded") {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                assert_eq!(link.attributes.len(), 2, "{link:?}");
            }
            other => panic!("expected a link, got {other:?}"),
        }
    }

    #[test]
    fn parse_link_rejects_truncated_input_without_panicking() {
        let payload = link_payload();
        assert!(parse_link(&payload[..10]).is_err(), "short header");
        let mut bad = payload[..IFINFOMSG_LEN].to_vec();
        bad.extend_from_slice(&200u16.to_ne_bytes()); // length past the end
        bad.extend_from_slice(&3u16.to_ne_bytes());
        assert!(parse_link(&bad).is_err(), "attribute overruns the message");
    }
}
