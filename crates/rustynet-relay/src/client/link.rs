//! One connection attempt and, once logged in, the connection: nonblocking
//! TCP connect with `SO_MARK`, TLS 1.3 against the pinned key, the HTTP
//! upgrade, the challenge-bound login, then frames.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use mio::{Interest, Registry};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, Socket, Type};

use super::machine::Machine;
use super::{ClientSink, DownReason, Inner, Queues, lock};
use crate::frame::{Decoder, Frame, PROTOCOL_VERSION};
use crate::login::sign_login;
use crate::tlsio;
use crate::upgrade;

/// The largest frame a relay sends us that is not a packet is small; the
/// decoder's ticket limit only matters server-side.
const DECODER_TICKET_LIMIT: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// TCP connect in progress.
    Connecting,
    /// TLS handshake and waiting for `101 Switching Protocols`.
    Upgrading,
    /// Waiting for the server's challenge.
    Challenge,
    /// Login sent; waiting for the verdict.
    LoggingIn,
    /// Logged in.
    Up,
}

/// What a link reports back to the driver.
pub(super) enum Progress {
    /// Nothing new.
    Idle,
    /// Logged in.
    LoggedIn(SocketAddr),
}

/// The driver's state a link works with.
pub(super) struct Ctx<'a> {
    pub(super) now: Instant,
    pub(super) machine: &'a mut Machine,
    pub(super) sink: &'a dyn ClientSink,
    pub(super) inner: &'a Inner,
    pub(super) ticket: &'a [u8],
    pub(super) login_key: &'a rustynet_proto::NodeSigningKey,
    /// Scratch space for ciphertext reads.
    pub(super) chunk: &'a mut [u8],
    /// The other half of the send queues' double buffer.
    pub(super) spare: &'a mut Queues,
}

pub(super) struct Link {
    tcp: mio::net::TcpStream,
    tls: ClientConnection,
    stage: Stage,
    /// Received plaintext not yet decoded; kept while the link lives.
    rbuf: BytesMut,
    decoder: Decoder,
}

fn io_down(e: &io::Error) -> DownReason {
    if e.kind() == io::ErrorKind::InvalidData {
        DownReason::Tls(e.to_string())
    } else {
        DownReason::Closed
    }
}

impl Link {
    /// Starts connecting to `addr` (registered on `registry` as `token`).
    pub(super) fn open(
        addr: SocketAddr,
        server_name: &str,
        fwmark: Option<u32>,
        tls: &Arc<rustls::ClientConfig>,
        registry: &Registry,
        token: mio::Token,
    ) -> Result<Self, DownReason> {
        let connect_err = |e: io::Error| DownReason::Connect(e.to_string());
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )
        .map_err(connect_err)?;
        if let Some(mark) = fwmark {
            socket.set_mark(mark).map_err(connect_err)?;
        }
        socket.set_tcp_nodelay(true).map_err(connect_err)?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(connect_err(e)),
        }
        let mut tcp = mio::net::TcpStream::from_std(socket.into());
        registry
            .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(connect_err)?;
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| DownReason::Tls(format!("invalid server name {server_name:?}")))?;
        let mut conn = ClientConnection::new(Arc::clone(tls), name)
            .map_err(|e| DownReason::Tls(e.to_string()))?;
        conn.set_buffer_limit(None);
        // Buffered by rustls until the handshake completes.
        conn.writer()
            .write_all(&upgrade::request(server_name))
            .map_err(|e| DownReason::Tls(e.to_string()))?;
        Ok(Self {
            tcp,
            tls: conn,
            stage: Stage::Connecting,
            rbuf: BytesMut::new(),
            decoder: Decoder::new(DECODER_TICKET_LIMIT),
        })
    }

    /// Does all the I/O that is possible now. `Ok(true)` in the second
    /// field: more queued data could be written at once (poll again without
    /// waiting, the socket readiness is edge-triggered).
    pub(super) fn pump(&mut self, cx: &mut Ctx<'_>) -> Result<(Progress, bool), DownReason> {
        if self.stage == Stage::Connecting {
            if let Ok(Some(e)) | Err(e) = self.tcp.take_error() {
                return Err(DownReason::Connect(e.to_string()));
            }
            match self.tcp.peer_addr() {
                Ok(_) => self.stage = Stage::Upgrading,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return Ok((Progress::Idle, false));
                }
                Err(e) => return Err(DownReason::Connect(e.to_string())),
            }
        }
        let progress = self.read(cx)?;
        let more = self.write(cx)?;
        Ok((progress, more))
    }

    /// Queues a control frame (ping, ticket update) ahead of later data.
    pub(super) fn send_frame(&mut self, frame: &Frame) {
        let mut bytes = Vec::with_capacity(frame.encoded_len());
        frame.encode(&mut bytes);
        let _ = self.tls.writer().write_all(&bytes);
    }

    /// Whether the link is logged in.
    pub(super) fn is_up(&self) -> bool {
        self.stage == Stage::Up
    }

    /// Sends close_notify, best effort (the socket closes on drop).
    pub(super) fn close(mut self) {
        self.tls.send_close_notify();
        let _ = tlsio::flush(&mut self.tls, &mut &self.tcp);
    }

    fn read(&mut self, cx: &mut Ctx<'_>) -> Result<Progress, DownReason> {
        let mut progress = Progress::Idle;
        loop {
            let n = match (&self.tcp).read(cx.chunk) {
                Ok(0) => return Err(DownReason::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_down(&e)),
            };
            cx.machine.on_rx(cx.now);
            let closed = tlsio::feed(&mut self.tls, &cx.chunk[..n], &mut self.rbuf)
                .map_err(|e| io_down(&e))?;
            if let Progress::LoggedIn(addr) = self.handle_plaintext(cx)? {
                progress = Progress::LoggedIn(addr);
            }
            if closed {
                return Err(DownReason::Closed);
            }
        }
    }

    fn handle_plaintext(&mut self, cx: &mut Ctx<'_>) -> Result<Progress, DownReason> {
        let mut progress = Progress::Idle;
        if self.stage == Stage::Upgrading {
            match upgrade::parse_response(&self.rbuf) {
                Ok(Some(len)) => {
                    self.rbuf.advance(len);
                    self.stage = Stage::Challenge;
                }
                Ok(None) => return Ok(progress),
                Err(e) => return Err(DownReason::Upgrade(e.to_string())),
            }
        }
        let mut delivered = false;
        let result = self.decode_frames(cx, &mut progress, &mut delivered);
        if delivered {
            cx.sink.flush();
        }
        result?;
        Ok(progress)
    }

    fn decode_frames(
        &mut self,
        cx: &mut Ctx<'_>,
        progress: &mut Progress,
        delivered: &mut bool,
    ) -> Result<(), DownReason> {
        loop {
            let frame = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => return Err(DownReason::Protocol(e.to_string())),
            };
            match (self.stage, frame) {
                (
                    Stage::Up,
                    Frame::Recv {
                        src,
                        payload,
                        probe,
                    },
                ) => {
                    cx.sink.packet(src, &payload, probe);
                    *delivered = true;
                }
                (Stage::Up, Frame::Pong(data)) => {
                    if let Some(rtt) = cx.machine.on_pong(data, cx.now) {
                        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
                        cx.inner
                            .rtt_us
                            .store(us, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                (Stage::Up, Frame::PeerGone { key, reason }) => {
                    lock(&cx.inner.udp).forget(&key);
                    cx.sink.peer_gone(key, reason);
                }
                (Stage::Up, Frame::UdpOffer { token }) => lock(&cx.inner.udp).offered(token),
                (Stage::Up, Frame::UdpPeer { key, id }) => lock(&cx.inner.udp).learned(key, id),
                (Stage::Challenge, Frame::ServerChallenge { version, challenge }) => {
                    if version != PROTOCOL_VERSION {
                        return Err(DownReason::Protocol(format!(
                            "relay speaks version {version}"
                        )));
                    }
                    let exporter = tlsio::exporter(&self.tls).map_err(|e| io_down(&e))?;
                    let sig = sign_login(cx.login_key, &exporter, &challenge, cx.ticket);
                    self.send_frame(&Frame::Login {
                        sig,
                        ticket: bytes::Bytes::copy_from_slice(cx.ticket),
                    });
                    self.stage = Stage::LoggingIn;
                }
                (Stage::LoggingIn, Frame::LoginOk { observed }) => {
                    self.stage = Stage::Up;
                    *progress = Progress::LoggedIn(observed);
                }
                (Stage::LoggingIn, Frame::LoginRefused { code, reason }) => {
                    return Err(DownReason::Refused { code, reason });
                }
                (stage, frame) => {
                    return Err(DownReason::Protocol(format!(
                        "unexpected {} while {stage:?}",
                        frame_name(&frame)
                    )));
                }
            }
        }
        // The buffer is kept for the next read (a node has one link per
        // relay): once the frames' payloads are dropped, `feed` reuses it
        // instead of allocating 64 KiB per read.
        Ok(())
    }

    /// Moves queued packets into rustls when it has room and writes what
    /// the socket takes. Returns whether queued data is still waiting while
    /// the socket could take more.
    fn write(&mut self, cx: &mut Ctx<'_>) -> Result<bool, DownReason> {
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            tlsio::flush(&mut self.tls, &mut &self.tcp).map_err(|e| io_down(&e))?;
            if self.tls.wants_write() || self.stage != Stage::Up {
                return Ok(false);
            }
            {
                let mut q = lock(&cx.inner.queues);
                if q.probe.is_empty() && q.data.is_empty() {
                    return Ok(false);
                }
                std::mem::swap(&mut *q, cx.spare);
            }
            // Probes first. With no buffer limit, rustls takes everything.
            let mut writer = self.tls.writer();
            for part in [&cx.spare.probe, &cx.spare.data] {
                if !part.is_empty() {
                    let _ = writer.write_all(part);
                }
            }
            cx.spare.probe.clear();
            cx.spare.data.clear();
        }
        tlsio::flush(&mut self.tls, &mut &self.tcp).map_err(|e| io_down(&e))?;
        let q = lock(&cx.inner.queues);
        let queued = !q.probe.is_empty() || !q.data.is_empty();
        Ok(queued && !self.tls.wants_write())
    }
}

fn frame_name(frame: &Frame) -> &'static str {
    match frame {
        Frame::ServerChallenge { .. } => "ServerChallenge",
        Frame::Login { .. } => "Login",
        Frame::LoginOk { .. } => "LoginOk",
        Frame::LoginRefused { .. } => "LoginRefused",
        Frame::Send { .. } => "Send",
        Frame::Recv { .. } => "Recv",
        Frame::PeerGone { .. } => "PeerGone",
        Frame::Ping(_) => "Ping",
        Frame::Pong(_) => "Pong",
        Frame::TicketUpdate { .. } => "TicketUpdate",
        Frame::UdpOffer { .. } => "UdpOffer",
        Frame::UdpLookup { .. } => "UdpLookup",
        Frame::UdpPeer { .. } => "UdpPeer",
    }
}
