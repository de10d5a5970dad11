//! Just enough netlink to drive the in-kernel implementation: rtnetlink link
//! create/delete/up, generic-netlink family lookup, and the `wireguard`
//! family's SET_DEVICE / GET_DEVICE (attribute numbers from the kernel's
//! `include/uapi/linux/wireguard.h`, a stable documented ABI).
//!
//! Encoding is pure and unit-tested; only [`NlSocket`] does I/O.

use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_MTU: u16 = 4;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFLA_INFO_KIND: u16 = 1;

pub(crate) const GENL_ID_CTRL: u16 = 0x10;
pub(crate) const CTRL_CMD_GETFAMILY: u8 = 3;
pub(crate) const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub(crate) const CTRL_ATTR_FAMILY_NAME: u16 = 2;

pub(crate) const WG_GENL_NAME: &str = "wireguard";
pub(crate) const WG_GENL_VERSION: u8 = 1;
pub(crate) const WG_CMD_GET_DEVICE: u8 = 0;
pub(crate) const WG_CMD_SET_DEVICE: u8 = 1;
pub(crate) const WGDEVICE_A_IFNAME: u16 = 2;
pub(crate) const WGDEVICE_A_PRIVATE_KEY: u16 = 3;
pub(crate) const WGDEVICE_A_FLAGS: u16 = 5;
pub(crate) const WGDEVICE_A_LISTEN_PORT: u16 = 6;
pub(crate) const WGDEVICE_A_FWMARK: u16 = 7;
pub(crate) const WGDEVICE_A_PEERS: u16 = 8;
pub(crate) const WGPEER_A_PUBLIC_KEY: u16 = 1;
pub(crate) const WGPEER_A_FLAGS: u16 = 3;
pub(crate) const WGPEER_A_ENDPOINT: u16 = 4;
pub(crate) const WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL: u16 = 5;
pub(crate) const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
pub(crate) const WGPEER_A_RX_BYTES: u16 = 7;
pub(crate) const WGPEER_A_TX_BYTES: u16 = 8;
pub(crate) const WGPEER_A_ALLOWEDIPS: u16 = 9;
pub(crate) const WGPEER_F_REMOVE_ME: u32 = 1;
pub(crate) const WGPEER_F_REPLACE_ALLOWEDIPS: u32 = 2;
pub(crate) const WGALLOWEDIP_A_FAMILY: u16 = 1;
pub(crate) const WGALLOWEDIP_A_IPADDR: u16 = 2;
pub(crate) const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: header, fixed family header, attributes.
pub(crate) struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    pub(crate) fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by the socket
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id 0 = kernel
        Self { buf }
    }

    /// Appends raw fixed-size family header bytes (ifinfomsg, genlmsghdr).
    pub(crate) fn raw(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        // Attribute payloads here are keys, addresses and names: far below u16::MAX.
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    pub(crate) fn attr_str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v);
    }

    pub(crate) fn attr_u16(&mut self, kind: u16, v: u16) {
        self.attr(kind, &v.to_ne_bytes());
    }

    pub(crate) fn attr_u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_ne_bytes());
    }

    /// Opens a nested attribute; close it with [`MsgBuilder::nest_end`].
    pub(crate) fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub(crate) fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A genlmsghdr: command, version, reserved.
pub(crate) fn genl_header(cmd: u8, version: u8) -> [u8; 4] {
    [cmd, version, 0, 0]
}

/// An ifinfomsg: family, pad, type, index, flags, change.
pub(crate) fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// The kernel's `struct sockaddr_in` / `sockaddr_in6` bytes for an endpoint.
pub(crate) fn sockaddr_bytes(addr: &SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&[0u8; 8]);
            v
        }
        SocketAddr::V6(a) => {
            let mut v = Vec::with_capacity(28);
            v.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            v.extend_from_slice(&a.port().to_be_bytes());
            v.extend_from_slice(&a.flowinfo().to_be_bytes());
            v.extend_from_slice(&a.ip().octets());
            v.extend_from_slice(&a.scope_id().to_ne_bytes());
            v
        }
    }
}

/// Parses the kernel's sockaddr bytes back; `None` if malformed.
pub(crate) fn parse_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::from((ip, port)))
    } else if family == libc::AF_INET6 as u16 {
        let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
        Some(SocketAddr::from((ip, port)))
    } else {
        None
    }
}

/// One parsed attribute.
pub(crate) struct Attr<'a> {
    pub(crate) kind: u16,
    pub(crate) payload: &'a [u8],
}

/// Iterates attributes in `buf`, stopping at the first malformed one.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = Attr<'_>> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(rest.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?) & !NLA_F_NESTED;
        if len < 4 {
            return None;
        }
        let payload = rest.get(4..len)?;
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(Attr { kind, payload })
    })
}

pub(crate) fn u16_of(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(0..2)?.try_into().ok()?))
}

pub(crate) fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(0..8)?.try_into().ok()?))
}

/// One message of a reply: the payload after the netlink header.
pub(crate) struct Reply {
    pub(crate) payload: Vec<u8>,
}

/// A blocking netlink socket (route or generic) talking to the kernel.
pub(crate) struct NlSocket {
    socket: Socket,
    seq: u32,
}

impl NlSocket {
    pub(crate) fn route() -> io::Result<Self> {
        Self::open(libc::NETLINK_ROUTE)
    }

    pub(crate) fn generic() -> io::Result<Self> {
        Self::open(libc::NETLINK_GENERIC)
    }

    fn open(protocol: libc::c_int) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.cloexec(),
            Some(Protocol::from(protocol)),
        )?;
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self { socket, seq: 1 })
    }

    /// Sends one request and collects its replies: until the ACK for an ACK
    /// request, until DONE for a dump. A kernel error becomes an `io::Error`
    /// with its errno.
    pub(crate) fn request(&mut self, mut msg: Vec<u8>) -> io::Result<Vec<Reply>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req_flags = u16::from_ne_bytes([msg[6], msg[7]]);
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.socket.send(&msg)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = (&self.socket).read(&mut buf)?;
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let msg_type = u16::from_ne_bytes([rest[4], rest[5]]);
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                let rseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink reply",
                    ));
                }
                let payload = &rest[NLMSG_HDRLEN..len];
                rest = rest.get(align4(len)..).unwrap_or(&[]);
                if rseq != seq {
                    continue;
                }
                match msg_type {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => {
                        out.push(Reply {
                            payload: payload.to_vec(),
                        });
                        if flags & NLM_F_MULTI == 0 && req_flags & NLM_F_ACK == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}
