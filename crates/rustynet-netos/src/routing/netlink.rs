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
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;

/// How long to wait for the kernel before giving up on a reply. The kernel
/// answers rtnetlink requests synchronously, so this only fires if something
/// is badly wrong; it keeps the daemon from hanging forever.
const RECV_TIMEOUT_SECS: libc::time_t = 10;
/// How many times an interrupted dump (`NLM_F_DUMP_INTR`) is retried.
const DUMP_RETRIES: usize = 5;

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
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&chunk[..msg_len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
                offset += (msg_len + 3) & !3;
                if parsed.header.sequence_number != seq {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                if parsed.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match parsed.payload {
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
