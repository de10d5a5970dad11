//! Sockets and waiting: the dual-stack UDP socket with GSO/GRO, the wake-up
//! channel that stops worker threads, and a small `poll(2)` wrapper.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for (with `SO_*BUFFORCE` as root): bulk transfers
/// drop packets with the default ~200 KiB once batches get large.
const SOCKET_BUFFER: i32 = 8 << 20;

/// Wakes every worker blocked in [`wait`]: one byte is written and never
/// read, so the read end stays readable until the channel is dropped.
pub(crate) struct Waker {
    rx: UnixDatagram,
    tx: UnixDatagram,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        let (rx, tx) = UnixDatagram::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Self { rx, tx })
    }

    pub(crate) fn wake(&self) {
        // A full buffer means a wake-up byte is already pending: nothing to do.
        let _ = self.tx.send(&[1]);
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.rx.as_raw_fd()
    }
}

/// What [`wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// The watched fd is ready for the requested event.
    Io,
    /// Stop was requested.
    Wake,
    /// Nothing happened within the timeout.
    Timeout,
    /// The watched fd reported an error or hang-up (e.g. TUN deleted).
    Broken,
}

/// Waits until `fd` is ready for `events` (POLLIN/POLLOUT), the waker fires,
/// or `timeout_ms` passes (-1 = forever).
pub(crate) fn wait(fd: RawFd, events: libc::c_short, wake: RawFd, timeout_ms: i32) -> Ready {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two initialised pollfd structs
        // that outlives the call; the length passed matches.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Ready::Broken;
        }
        if n == 0 {
            return Ready::Timeout;
        }
        if fds[1].revents != 0 {
            return Ready::Wake;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Ready::Broken;
        }
        return Ready::Io;
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The tunnel's one UDP socket. Dual-stack (`[::]` with v4-mapped addresses)
/// when the host has IPv6, IPv4-only otherwise.
pub(crate) struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    dual_stack: bool,
    port: u16,
}

impl Udp {
    /// Binds `port` (0 = ephemeral) and marks the socket with `fwmark` so
    /// policy routing can send it around the tunnel.
    pub(crate) fn bind(port: u16, fwmark: Option<u32>) -> io::Result<Self> {
        let (socket, dual_stack) = match Self::socket(Domain::IPV6, port, fwmark) {
            Ok(s) => (s, true),
            Err(_) => (Self::socket(Domain::IPV4, port, fwmark)?, false),
        };
        let socket: UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let port = socket.local_addr()?.port();
        Ok(Self {
            socket,
            state,
            dual_stack,
            port,
        })
    }

    fn socket(domain: Domain, port: u16, fwmark: Option<u32>) -> io::Result<Socket> {
        let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
        if let Some(mark) = fwmark {
            socket.set_mark(mark)?;
        }
        let addr: SocketAddr = if domain == Domain::IPV6 {
            socket.set_only_v6(false)?;
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
        } else {
            SocketAddr::from(([0, 0, 0, 0], port))
        };
        let fd = socket.as_raw_fd();
        if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER).is_err() {
            let _ = socket.set_recv_buffer_size(SOCKET_BUFFER as usize);
        }
        if set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER).is_err() {
            let _ = socket.set_send_buffer_size(SOCKET_BUFFER as usize);
        }
        socket.bind(&addr.into())?;
        Ok(socket)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// How many equal-size datagrams one send may carry (1 without GSO).
    pub(crate) fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }

    /// Receives a batch (`recvmmsg`, GRO-coalesced). `WouldBlock` when empty.
    pub(crate) fn recv(
        &self,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.socket), bufs, meta)
    }

    /// Sends `contents` to `dest`, as `contents.len() / segment` datagrams
    /// when `segment` is given (GSO). Waits briefly when the socket buffer is
    /// full; gives up (dropping, as UDP may) after about a second or on stop.
    pub(crate) fn send(
        &self,
        dest: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
        wake: RawFd,
    ) {
        let destination = self.wire_addr(dest);
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        for _ in 0..2 {
            match self.state.send(UdpSockRef::from(&self.socket), &transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if wait(self.fd(), libc::POLLOUT, wake, 1000) != Ready::Io {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// The address form the socket needs (v4-mapped on a dual-stack socket).
    fn wire_addr(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(v4) if self.dual_stack => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            other => other,
        }
    }
}

/// Whether an interface of this name exists in our network namespace.
pub(crate) fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// The plain form of a received address (v4-mapped turned back into IPv4).
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
