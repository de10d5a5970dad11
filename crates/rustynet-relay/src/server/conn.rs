//! One relay connection: TLS handshake and HTTP upgrade under the handshake
//! deadline, then frames in both directions until either side closes.
//!
//! After the upgrade the rustls session is driven by hand over the
//! nonblocking socket (see `tlsio`): that keeps every buffer in view, so an
//! idle connection holds no read or write buffer of ours (they are
//! per-thread scratch space, used synchronously between awaits).

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut as _, BytesMut};
use rand_core::RngCore as _;
use rustls::ServerConnection;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{ConnHandle, Shared};
use crate::core::{ConnId, Now};
use crate::frame::{Decoder, Frame};
use crate::tlsio;
use crate::upgrade::{self, MAX_HEAD, Route};

/// Plaintext handed to rustls per write (it cuts it into 16 KiB records).
const WRITE_BATCH: usize = 64 * 1024;
/// Reads (of up to 64 KiB) per readiness event before giving other tasks,
/// notably the destinations' writers, a turn: a destination queue (1 MiB by
/// default) must not overflow from one sender's single turn.
const READ_BUDGET: usize = 4;
/// How long closing waits for the final frame and close_notify to go out.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

thread_local! {
    static RX: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; tlsio::READ_CHUNK].into_boxed_slice());
    static TX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A TCP connection the core admitted.
pub(super) struct Accepted {
    pub(super) tcp: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) id: ConnId,
    pub(super) handle: Arc<ConnHandle>,
}

/// Serves one connection and reports its end to the core.
pub(super) async fn run(
    accepted: Accepted,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    handshake_timeout: Duration,
    cancel: CancellationToken,
) {
    let id = accepted.id;
    let peer = accepted.peer;
    let reason = tokio::select! {
        _ = cancel.cancelled() => "shutdown",
        reason = serve(accepted, acceptor, &shared, handshake_timeout) => reason,
    };
    tracing::debug!(%peer, reason, "relay connection ended");
    shared.lock().closed(id, reason);
}

async fn serve(
    accepted: Accepted,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: &Arc<Shared>,
    handshake_timeout: Duration,
) -> &'static str {
    let Accepted {
        tcp, id, handle, ..
    } = accepted;
    let _ = tcp.set_nodelay(true);
    set_notsent_lowat(&tcp);
    // Each phase's future is boxed so its memory is freed when the phase
    // ends: an idle connection then holds only the session's state (the
    // handshake futures are several KiB).
    let (tcp, mut tls, leftover) =
        match tokio::time::timeout(handshake_timeout, Box::pin(upgrade(tcp, acceptor))).await {
            Err(_) => return "handshake_timeout",
            Ok(Err(reason)) => return reason,
            Ok(Ok(None)) => return "http_answered",
            Ok(Ok(Some(upgraded))) => upgraded,
        };
    let Ok(exporter) = tlsio::exporter(&tls) else {
        return "tls_error";
    };
    let mut challenge = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut challenge);
    let decoder = {
        let mut state = shared.lock();
        state.core.handle_upgraded(id, exporter, challenge);
        state.dispatch();
        state.core.decoder()
    };
    tls.set_buffer_limit(None);
    let session = Session {
        tcp,
        tls,
        id,
        handle,
        shared: Arc::clone(shared),
        rbuf: leftover,
        decoder,
        want_fill: true,
    };
    Box::pin(session.run()).await
}

/// TLS handshake, then the HTTP request. `Ok(None)`: answered and done
/// (health check or refusal); `Ok(Some)`: upgraded, with any bytes that
/// followed the request head.
async fn upgrade(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
) -> Result<Option<(TcpStream, ServerConnection, BytesMut)>, &'static str> {
    let mut tls = acceptor.accept(tcp).await.map_err(|_| "tls_handshake")?;
    let mut head: Vec<u8> = Vec::new();
    let (route, len) = loop {
        match upgrade::parse_request(&head) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(_) => {
                let _ = tls.write_all(&upgrade::response(Route::Reject(400))).await;
                let _ = tls.shutdown().await;
                return Err("bad_http");
            }
        }
        // Read no further than one byte past the limit, so an oversized
        // head is detected without buffering more.
        let room = MAX_HEAD + 1 - head.len().min(MAX_HEAD);
        let n = tls
            .read_buf(&mut (&mut head).limit(room))
            .await
            .map_err(|_| "read_error")?;
        if n == 0 {
            return Err("eof");
        }
    };
    let answer = upgrade::response(route);
    tls.write_all(&answer).await.map_err(|_| "write_error")?;
    tls.flush().await.map_err(|_| "write_error")?;
    if route != Route::Relay {
        let _ = tls.shutdown().await;
        return Ok(None);
    }
    let leftover = BytesMut::from(&head[len..]);
    let (tcp, conn) = tls.into_inner();
    Ok(Some((tcp, conn, leftover)))
}

/// Unsent bytes the kernel may hold for this socket. Without a limit the send
/// buffer autotunes to megabytes and a destination's backlog hides there,
/// where the core's queue (and its CoDel) cannot see how long packets wait;
/// with it, the kernel keeps what is in flight plus a little, and the
/// backlog stays in the core's queue.
const NOTSENT_LOWAT: u32 = 128 * 1024;

fn set_notsent_lowat(tcp: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}

/// Nonblocking writes of a tokio socket as `io::Write`.
struct TryIo<'a>(&'a TcpStream);

impl Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Session {
    tcp: TcpStream,
    tls: ServerConnection,
    id: ConnId,
    handle: Arc<ConnHandle>,
    shared: Arc<Shared>,
    /// Received plaintext not yet decoded (empty and unallocated when idle).
    rbuf: BytesMut,
    decoder: Decoder,
    /// The core may hold frames for us.
    want_fill: bool,
}

impl Session {
    async fn run(mut self) -> &'static str {
        if let Err(reason) = self.hand_over() {
            return reason;
        }
        loop {
            if let Some(last) = self.handle.closing.get() {
                let last = last.clone();
                return Box::pin(self.finish(last)).await;
            }
            if self.want_fill && !self.tls.wants_write() {
                self.want_fill = self.fill();
            }
            if tlsio::flush(&mut self.tls, &mut TryIo(&self.tcp)).is_err() {
                return "write_error";
            }
            let writing = self.tls.wants_write() || self.want_fill;
            tokio::select! {
                ready = self.tcp.readable() => {
                    if ready.is_err() {
                        return "read_error";
                    }
                    if let Err(reason) = self.read() {
                        return reason;
                    }
                }
                ready = self.tcp.writable(), if writing => {
                    if ready.is_err() {
                        return "write_error";
                    }
                }
                _ = self.handle.wake.notified() => self.want_fill = true,
            }
        }
    }

    /// Reads what the socket has (up to a budget), decrypts it and hands
    /// the frames to the core.
    fn read(&mut self) -> Result<(), &'static str> {
        RX.with_borrow_mut(|chunk| {
            for _ in 0..READ_BUDGET {
                let n = match self.tcp.try_read(chunk) {
                    Ok(0) => return Err("eof"),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err("read_error"),
                };
                let closed = tlsio::feed(&mut self.tls, &chunk[..n], &mut self.rbuf)
                    .map_err(|_| "tls_error")?;
                self.hand_over()?;
                if closed {
                    return Err("eof");
                }
            }
            Ok(())
        })
    }

    /// Decodes every complete frame and passes them to the core in one lock.
    fn hand_over(&mut self) -> Result<(), &'static str> {
        let mut result = Ok(());
        {
            let mut state = self.shared.lock();
            let now = Now::system();
            loop {
                match self.decoder.decode(&mut self.rbuf) {
                    Ok(Some(frame)) => state.core.handle_frame(self.id, frame, now),
                    Ok(None) => break,
                    Err(e) => {
                        result = Err(e.reason());
                        break;
                    }
                }
            }
            state.dispatch();
        }
        if self.rbuf.is_empty() {
            // Give the buffer back while idle.
            self.rbuf = BytesMut::new();
        }
        result
    }

    /// Moves a batch of the core's pending frames into rustls. Returns
    /// whether more are pending.
    fn fill(&mut self) -> bool {
        TX.with_borrow_mut(|batch| {
            batch.clear();
            let more = self
                .shared
                .lock()
                .core
                .drain(self.id, batch, WRITE_BATCH, Now::system());
            // With no buffer limit, rustls takes the whole batch.
            if !batch.is_empty() && self.tls.writer().write_all(batch).is_err() {
                return false;
            }
            more
        })
    }

    /// Sends the final frame (if any) and close_notify, briefly.
    async fn finish(mut self, last: Option<Frame>) -> &'static str {
        if let Some(frame) = last {
            let mut bytes = Vec::with_capacity(frame.encoded_len());
            frame.encode(&mut bytes);
            let _ = self.tls.writer().write_all(&bytes);
        }
        self.tls.send_close_notify();
        let _ = tokio::time::timeout(CLOSE_FLUSH, async {
            loop {
                if tlsio::flush(&mut self.tls, &mut TryIo(&self.tcp)).is_err()
                    || !self.tls.wants_write()
                {
                    return;
                }
                if self.tcp.writable().await.is_err() {
                    return;
                }
            }
        })
        .await;
        "closed_by_relay"
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, F: std::future::Future>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size5<A, B, C, D, E, F: std::future::Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection holds its task's future: the outer one and the
    /// boxed session. The handshake's futures (several KiB) must stay boxed
    /// and freed, or the idle-memory goal (16 KiB per client) is lost.
    #[test]
    fn an_idle_connection_future_stays_small() {
        let outer = future_size5(run);
        let session = future_size(Session::run);
        assert!(outer <= 2048, "connection future {outer} bytes");
        assert!(session <= 4096, "session future {session} bytes");
    }
}
