//! Client of the Rustynet control API.
//!
//! TLS 1.3 only, trusting exactly one CA (the one pinned at `up`), never the
//! system roots. Every request after enrollment is signed with the node's
//! signing key (see `rustynet_proto::control_api`). The map stream yields
//! envelopes as received; verifying them is the caller's job, before any use.
#![warn(missing_docs)]

mod lines;
mod url;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand_core::RngCore as _;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use rustynet_proto::NodeId;
use rustynet_proto::control_api::{
    API_VERSION, AUTH_HEADER, ApiError, MAP_STREAM_SILENCE, MapRequest, RENEW_HEADER,
    RegisterRequest, RegisterResponse, RelayTicketRequest, RelayTicketResponse, RequestAuth,
    STREAM_SILENCE_HEADER, StreamFrame, UpdateRequest, paths,
};
use rustynet_proto::{NodeSigningKey, SignedEnvelope};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use lines::LineBuffer;
pub use url::ControlUrl;

/// Longest line accepted on the map stream.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control URL is not `https://HOST[:PORT]`.
    #[error("invalid control URL {url:?}: {reason} (expected https://HOST[:PORT])")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pinned CA file is not a PEM certificate.
    #[error("invalid CA certificate: {0}")]
    Ca(String),
    /// TCP connect or I/O failed.
    #[error("cannot reach control: {0}")]
    Io(#[from] std::io::Error),
    /// TLS failed (untrusted certificate, not TLS 1.3, ...).
    #[error("TLS with control failed: {0}")]
    Tls(String),
    /// HTTP-level failure.
    #[error("control connection failed: {0}")]
    Http(#[from] hyper::Error),
    /// Control answered with an error.
    #[error("control refused ({status}): {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
    },
    /// The answer did not parse or violated the protocol.
    #[error("control sent an invalid response: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("control did not answer within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// Control refused with this code (e.g. `auth_key_used`).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A control API client.
#[derive(Clone)]
pub struct ControlClient {
    url: ControlUrl,
    connector: TlsConnector,
    timeout: Duration,
    fwmark: Option<u32>,
    known_addrs: Vec<std::net::SocketAddr>,
    local_ip: Option<std::net::IpAddr>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ControlClient {
    /// A client for `control_url` trusting only `ca_pem`.
    pub fn new(control_url: &str, ca_pem: &str) -> Result<Self, ClientError> {
        let url = ControlUrl::parse(control_url)?;
        let mut roots = rustls::RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError::Ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(ClientError::Ca("no certificate in PEM".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ClientError::Ca(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            url,
            connector: TlsConnector::from(Arc::new(config)),
            timeout: Duration::from_secs(15),
            fwmark: None,
            known_addrs: Vec::new(),
            local_ip: None,
        })
    }

    /// Marks the connection's packets (`SO_MARK`) so a node in full-tunnel
    /// mode reaches control directly instead of through its exit node.
    pub fn with_fwmark(mut self, mark: u32) -> Self {
        self.fwmark = Some(mark);
        self
    }

    /// Addresses to try before resolving the host again: those it resolved
    /// to when the node enrolled. A network whose DNS later lies about the
    /// control host then cannot steer the connection (TLS with the pinned
    /// CA would refuse an impostor anyway; this keeps the node connected).
    pub fn with_known_addrs(mut self, addrs: Vec<std::net::SocketAddr>) -> Self {
        self.known_addrs = addrs;
        self
    }

    /// Connects from this local address. The load generator spreads
    /// thousands of simulated nodes over several loopback addresses, as
    /// nodes behind many NATs would arrive: each source address has its
    /// own ports and its own share of control's per-source limits.
    pub fn with_local_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.local_ip = Some(ip);
        self
    }

    async fn connect_tcp(&self) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for addr in &self.known_addrs {
            match self.connect_addr(*addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        let addrs = tokio::net::lookup_host((self.url.host.as_str(), self.url.port)).await?;
        for addr in addrs.filter(|a| !self.known_addrs.contains(a)) {
            match self.connect_addr(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Io(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "control host has no address")
        })))
    }

    async fn connect_addr(&self, addr: std::net::SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if let Some(mark) = self.fwmark {
            socket2::SockRef::from(&socket).set_mark(mark)?;
        }
        if let Some(ip) = self.local_ip {
            socket.bind(std::net::SocketAddr::new(ip, 0))?;
        }
        let stream = tokio::time::timeout(self.timeout, socket.connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The control URL.
    pub fn url(&self) -> &ControlUrl {
        &self.url
    }

    async fn send(
        &self,
        path: &str,
        body: Vec<u8>,
        auth: Option<(&NodeSigningKey, NodeId)>,
        extra: Option<(&str, String)>,
    ) -> Result<Response<Incoming>, ClientError> {
        let tcp = self.connect_tcp().await?;
        let server_name =
            ServerName::try_from(self.url.host.clone()).map_err(|_| ClientError::Url {
                url: self.url.to_string(),
                reason: "the host is not a valid server name",
            })?;
        let tls = self
            .connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection closed");
            }
        });
        let mut builder = Request::post(path)
            .header(hyper::header::HOST, self.url.authority())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some((key, node)) = auth {
            let mut nonce = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut nonce);
            let header = RequestAuth::sign(key, node, "POST", path, &body, now_ms(), nonce);
            builder = builder.header(AUTH_HEADER, header.to_header());
        }
        if let Some((name, value)) = extra {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refusal(response).await)
    }

    async fn refusal(&self, response: Response<Incoming>) -> ClientError {
        let status = response.status();
        let body =
            tokio::time::timeout(self.timeout, read_limited(response.into_body(), 64 * 1024))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => ClientError::Refused {
                status: status.as_u16(),
                code: e.code,
                message: e.message,
            },
            Err(_) => ClientError::Refused {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            },
        }
    }

    async fn call(
        &self,
        path: &str,
        body: Vec<u8>,
        auth: Option<(&NodeSigningKey, NodeId)>,
        extra: Option<(&str, String)>,
    ) -> Result<Bytes, ClientError> {
        let work = async {
            let response = self.send(path, body, auth, extra).await?;
            read_limited(response.into_body(), 1024 * 1024).await
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// Enrolls: the request is signed (as node 0) with the key it registers.
    pub async fn register(
        &self,
        key: &NodeSigningKey,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let bytes = self
            .call(paths::REGISTER, body, Some((key, NodeId(0))), None)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Renews enrolled node `node`'s keys (`req.renew` is set to it): the
    /// request is signed (as node 0) with the new key it registers, and the
    /// node's current key signs it too, as that node, proving it is the node
    /// it renews. The answer names the same node with its address and name.
    pub async fn renew(
        &self,
        new_key: &NodeSigningKey,
        current_key: &NodeSigningKey,
        node: NodeId,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let mut req = req.clone();
        req.renew = Some(node);
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let proof = RequestAuth::sign(
            current_key,
            node,
            "POST",
            paths::REGISTER,
            &body,
            now_ms(),
            nonce,
        );
        let bytes = self
            .call(
                paths::REGISTER,
                body,
                Some((new_key, NodeId(0))),
                Some((RENEW_HEADER, proof.to_header())),
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Reports endpoints/advertisements.
    pub async fn update(
        &self,
        key: &NodeSigningKey,
        node: NodeId,
        req: &UpdateRequest,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.call(paths::UPDATE, body, Some((key, node)), None)
            .await?;
        Ok(())
    }

    /// A fresh relay ticket for `node`: control's signed list of the peers
    /// this node may exchange relayed packets with, for logging in to the
    /// relays of its map. Returned as received; the relay verifies it.
    pub async fn relay_ticket(
        &self,
        key: &NodeSigningKey,
        node: NodeId,
    ) -> Result<SignedEnvelope, ClientError> {
        let req = RelayTicketRequest {
            version: API_VERSION,
        };
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let bytes = self
            .call(paths::RELAY_TICKET, body, Some((key, node)), None)
            .await?;
        let resp: RelayTicketResponse =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.version != API_VERSION {
            return Err(ClientError::Protocol(format!(
                "relay ticket of API version {} (this client speaks {API_VERSION})",
                resp.version
            )));
        }
        Ok(resp.ticket)
    }

    /// Opens the long-lived map stream.
    pub async fn map_stream(
        &self,
        key: &NodeSigningKey,
        node: NodeId,
        since_generation: u64,
    ) -> Result<MapStream, ClientError> {
        let req = MapRequest {
            version: API_VERSION,
            since_generation,
        };
        let body = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = tokio::time::timeout(
            self.timeout,
            self.send(
                paths::MAP_STREAM,
                body,
                Some((key, node)),
                Some((
                    STREAM_SILENCE_HEADER,
                    MAP_STREAM_SILENCE.as_secs().to_string(),
                )),
            ),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.timeout))??;
        Ok(MapStream {
            body: response.into_body(),
            lines: LineBuffer::default(),
        })
    }

    /// Checks control is reachable over TLS 1.3.
    pub async fn health(&self) -> Result<(), ClientError> {
        let work = async {
            let tcp = self.connect_tcp().await?;
            let server_name =
                ServerName::try_from(self.url.host.clone()).map_err(|_| ClientError::Url {
                    url: self.url.to_string(),
                    reason: "the host is not a valid server name",
                })?;
            self.connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            Ok(())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > limit {
                return Err(ClientError::Protocol(format!(
                    "response exceeds {limit} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

/// The map stream: one [`StreamFrame`] per line.
pub struct MapStream {
    body: Incoming,
    lines: LineBuffer,
}

impl MapStream {
    /// The next frame; `Ok(None)` when control closed the stream.
    pub async fn next_frame(&mut self) -> Result<Option<StreamFrame>, ClientError> {
        match self.next_line().await? {
            Some(line) => parse_frame(&line).map(Some),
            None => Ok(None),
        }
    }

    /// The next non-blank line of the stream, unparsed (for a caller that
    /// parses it elsewhere with [`parse_frame`]); `Ok(None)` when control
    /// closed the stream.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            if let Some(line) = self.lines.next_line()? {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.lines.push(&data);
                    }
                }
            }
        }
    }
}

/// Parses one line of a map stream ([`MapStream::next_line`]).
pub fn parse_frame(line: &[u8]) -> Result<StreamFrame, ClientError> {
    serde_json::from_slice(line)
        .map_err(|e| ClientError::Protocol(format!("bad stream frame: {e}")))
}

/// HTTP status helper for callers that map refusals.
pub fn is_auth_failure(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { status, .. }
        if *status == StatusCode::UNAUTHORIZED.as_u16() || *status == StatusCode::FORBIDDEN.as_u16())
}
