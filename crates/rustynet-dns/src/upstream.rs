//! Sending a query to an upstream resolver. The server owns timeouts and
//! the order of resolvers; a transport only performs one exchange with one
//! server, so tests can script it and the daemon can steer its sockets.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::answer::MAX_MESSAGE;
use crate::decide::UpstreamQuery;

/// A boxed future, so [`UpstreamTransport`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One DNS exchange with one upstream server.
pub trait UpstreamTransport: Send + Sync + 'static {
    /// Sends `query` to `server` and resolves with the first reply for which
    /// [`UpstreamQuery::matches`] holds. Unrelated datagrams are ignored,
    /// not returned. The caller bounds the time with its own timeout.
    fn exchange<'a>(
        &'a self,
        server: SocketAddr,
        query: &'a UpstreamQuery,
    ) -> BoxFuture<'a, Result<Vec<u8>, UpstreamError>>;
}

/// How forwarding sockets are steered, so the daemon can route them into the
/// tunnel (or past its own kill switch) with policy routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_MARK` on every forwarding socket (needs CAP_NET_ADMIN).
    pub fwmark: Option<u32>,
    /// `SO_BINDTODEVICE` on every forwarding socket.
    pub bind_device: Option<String>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A forwarding socket could not be created or configured (mark, device).
    #[error("forwarding socket setup failed")]
    Socket(#[source] io::Error),
    /// Sending to or receiving from the server failed (refused, unreachable, reset).
    #[error("exchange with {server} failed")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Over TCP, the server replied with something that does not answer the query.
    #[error("{0} replied to a different query")]
    Mismatch(SocketAddr),
}

/// The real transport: UDP first, TCP when the reply is truncated.
#[derive(Debug, Clone, Default)]
pub struct NetTransport {
    options: SocketOptions,
}

impl NetTransport {
    /// A transport whose sockets carry `options`.
    pub fn new(options: SocketOptions) -> Self {
        Self { options }
    }

    async fn udp(
        &self,
        server: SocketAddr,
        query: &UpstreamQuery,
    ) -> Result<Vec<u8>, UpstreamError> {
        let socket = self.socket(server, Type::DGRAM, Protocol::UDP)?;
        socket
            .bind(&unspecified(server).into())
            .map_err(UpstreamError::Socket)?;
        // A connected socket: the kernel drops datagrams from any other source.
        let socket = UdpSocket::from_std(socket.into()).map_err(UpstreamError::Socket)?;
        let io_err = |source| UpstreamError::Io { server, source };
        socket.connect(server).await.map_err(io_err)?;
        socket.send(query.bytes()).await.map_err(io_err)?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let len = socket.recv(&mut buf).await.map_err(io_err)?;
            let Some(reply) = buf.get(..len) else {
                continue;
            };
            if query.matches(reply) {
                return Ok(reply.to_vec());
            }
            tracing::debug!(%server, len, "ignored a datagram that does not answer the query");
        }
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        query: &UpstreamQuery,
    ) -> Result<Vec<u8>, UpstreamError> {
        let socket = self.socket(server, Type::STREAM, Protocol::TCP)?;
        let socket = TcpSocket::from_std_stream(socket.into());
        let io_err = |source| UpstreamError::Io { server, source };
        let mut stream: TcpStream = socket.connect(server).await.map_err(io_err)?;
        let len = u16::try_from(query.bytes().len())
            .map_err(|_| io_err(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let mut framed = Vec::with_capacity(query.bytes().len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query.bytes());
        stream.write_all(&framed).await.map_err(io_err)?;
        let len = stream.read_u16().await.map_err(io_err)?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.map_err(io_err)?;
        if query.matches(&reply) {
            Ok(reply)
        } else {
            Err(UpstreamError::Mismatch(server))
        }
    }

    /// A non-blocking socket for `server`'s family with the steering options.
    fn socket(
        &self,
        server: SocketAddr,
        kind: Type,
        proto: Protocol,
    ) -> Result<Socket, UpstreamError> {
        let socket = Socket::new(Domain::for_address(server), kind, Some(proto))
            .map_err(UpstreamError::Socket)?;
        apply_options(&SockRef::from(&socket), &self.options).map_err(UpstreamError::Socket)?;
        socket
            .set_nonblocking(true)
            .map_err(UpstreamError::Socket)?;
        Ok(socket)
    }
}

impl UpstreamTransport for NetTransport {
    fn exchange<'a>(
        &'a self,
        server: SocketAddr,
        query: &'a UpstreamQuery,
    ) -> BoxFuture<'a, Result<Vec<u8>, UpstreamError>> {
        Box::pin(async move {
            let reply = self.udp(server, query).await?;
            if UpstreamQuery::is_truncated(&reply) {
                return self.tcp(server, query).await;
            }
            Ok(reply)
        })
    }
}

/// Applies mark and device to a socket.
fn apply_options(socket: &SockRef<'_>, options: &SocketOptions) -> io::Result<()> {
    if let Some(mark) = options.fwmark {
        socket.set_mark(mark)?;
    }
    if let Some(device) = &options.bind_device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    Ok(())
}

fn unspecified(server: SocketAddr) -> SocketAddr {
    let ip = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}
