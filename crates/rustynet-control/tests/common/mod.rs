//! A real control server on loopback (TLS 1.3, SQLite in a temp dir) and a
//! real client, for integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::time::Duration;

use rustynet_control::admin;
use rustynet_control::datadir::DataDir;
use rustynet_control::server::{RunningServer, ServeOptions, start};
use rustynet_control_client::{ControlClient, MapStream};
use rustynet_proto::control_api::{
    API_VERSION, RegisterRequest, RegisterResponse, SecretString, StreamFrame,
};
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{
    NetmapVerifier, NodeSigningKey, TunnelPublicKey, VerifiedNetmap, VerifyPolicy,
};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub data: DataDir,
    pub server: RunningServer,
    pub ca_pem: String,
    pub url: String,
}

pub const POLICY_ALL: &str = r#"{
  "tag_owners": {"tag:exit": ["alice"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]
}"#;

impl Harness {
    pub async fn start(map_ttl: Duration) -> Self {
        Self::start_with(map_ttl, |_| {}).await
    }

    /// Starts with options changed by `tweak` after the test defaults.
    pub async fn start_with(map_ttl: Duration, tweak: impl FnOnce(&mut ServeOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("control"));
        data.init(
            "rustynet.internal",
            &["localhost".into(), "127.0.0.1".into()],
        )
        .unwrap();
        let mut opts = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        opts.map_ttl = map_ttl;
        opts.keepalive = Duration::from_secs(1);
        opts.change_poll = Duration::from_millis(100);
        tweak(&mut opts);
        let server = start(&data, opts).await.unwrap();
        let ca_pem = std::fs::read_to_string(data.ca_cert()).unwrap();
        let url = format!("https://127.0.0.1:{}", server.addr.port());
        Self {
            dir,
            data,
            server,
            ca_pem,
            url,
        }
    }

    pub fn client(&self) -> ControlClient {
        ControlClient::new(&self.url, &self.ca_pem).unwrap()
    }

    pub fn set_policy(&self, json: &str) {
        let path = self.dir.path().join("policy.json");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(json.as_bytes()).unwrap();
        admin::policy_set(&self.data, &path).unwrap();
    }

    pub fn preauth(&self, user: &str, reusable: bool, expires: Option<Duration>) -> String {
        let (key, _) = admin::preauth_create(&self.data, user, &[], reusable, expires).unwrap();
        key.to_string()
    }

    pub fn register_request(&self, auth_key: &str, hostname: &str, seed: u8) -> RegisterRequest {
        RegisterRequest {
            path_key: None,
            version: API_VERSION,
            auth_key: SecretString::new(auth_key.to_owned()),
            hostname: hostname.to_owned(),
            node_key: TunnelPublicKey([seed; 32]),
            signing_key: NodeSigningKey::from_seed(&[seed; 32]).public(),
            endpoints: vec![format!("192.0.2.{seed}:41641").parse().unwrap()],
            advertise_exit_node: false,
            advertise_routes: vec![],
            renew: None,
        }
    }

    /// Enrolls a node whose keys derive from `seed`.
    pub async fn enroll(&self, auth_key: &str, hostname: &str, seed: u8) -> Node {
        let key = NodeSigningKey::from_seed(&[seed; 32]);
        let resp = self
            .client()
            .register(&key, &self.register_request(auth_key, hostname, seed))
            .await
            .unwrap();
        Node { key, resp }
    }
}

pub struct Node {
    pub key: NodeSigningKey,
    pub resp: RegisterResponse,
}

impl Node {
    pub fn verifier(&self) -> NetmapVerifier {
        NetmapVerifier::new(
            self.resp.control_signing_key,
            self.resp.node_id,
            VerifyPolicy::default(),
        )
    }

    pub async fn stream(&self, h: &Harness) -> MapStream {
        h.client()
            .map_stream(&self.key, self.resp.node_id, 0)
            .await
            .unwrap()
    }
}

/// Next verified map on `stream`, skipping keepalives; `high_water` is updated.
pub async fn next_map(stream: &mut MapStream, node: &Node, high_water: &mut u64) -> VerifiedNetmap {
    let verifier = node.verifier();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.next_frame())
            .await
            .expect("no frame within 20 s")
            .unwrap()
            .expect("stream closed");
        if let StreamFrame::Map { envelope, .. } = frame {
            let now = rustynet_control::now_unix();
            let verified = verifier
                .verify(envelope, GenerationRule::After(*high_water), now)
                .unwrap();
            *high_water = verified.generation();
            return verified;
        }
    }
}

/// Waits for a map satisfying `pred`.
pub async fn map_until(
    stream: &mut MapStream,
    node: &Node,
    high_water: &mut u64,
    pred: impl Fn(&VerifiedNetmap) -> bool,
) -> VerifiedNetmap {
    loop {
        let map = next_map(stream, node, high_water).await;
        if pred(&map) {
            return map;
        }
    }
}

/// A TLS 1.3 connection to the harness's server, trusting only its CA.
pub async fn tls_connect(h: &Harness) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(h.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustynet_control::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// POSTs `body` with the given headers and returns (status, body text).
pub async fn raw_post(
    h: &Harness,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, String) {
    use http_body_util::{BodyExt as _, Full};
    let tls = tls_connect(h).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::post(path).header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends only the head of a POST declaring `content_length` body bytes and
/// reads the response without ever sending the body.
///
/// A server that refuses on the declared length answers before reading, and
/// then closes with the body unread; a client that was still writing would
/// race that close (EPIPE), so this one never writes the body at all.
pub async fn post_head_only(h: &Harness, path: &str, content_length: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = tls_connect(h).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {content_length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let text = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (status, text);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("server answered a declared oversized body within 10 s")
            .unwrap();
        assert!(n > 0, "server closed before a complete response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A TLS 1.3 connection to the harness's server from the loopback address
/// `src` (any 127.0.0.0/8 address works), so tests can play several sources.
pub async fn tls_connect_from(
    h: &Harness,
    src: std::net::IpAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    try_tls_connect_from(h, src).await.unwrap()
}

/// [`tls_connect_from`], reporting a refused or closed connection.
pub async fn try_tls_connect_from(
    h: &Harness,
    src: std::net::IpAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(h.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustynet_control::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(src, 0))?;
    let tcp = socket.connect(h.server.addr).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// Sends `per_conn` enrollments with a wrong pre-auth key (each properly
/// signed, with its own nonce) on each of `conns` keep-alive connections from
/// `src`; returns every status.
pub async fn flood_bad_enrollments(
    h: &Harness,
    src: std::net::IpAddr,
    conns: usize,
    per_conn: usize,
) -> Vec<u16> {
    use http_body_util::{BodyExt as _, Full};
    use rustynet_proto::control_api::{AUTH_HEADER, RequestAuth, paths};
    let mut tasks = Vec::new();
    for c in 0..conns {
        let tls = tls_connect_from(h, src).await;
        let body = serde_json::to_vec(&h.register_request("rnk_wrong", "flood", 200)).unwrap();
        tasks.push(tokio::spawn(async move {
            let key = NodeSigningKey::from_seed(&[200; 32]);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut statuses = Vec::new();
            for i in 0..per_conn {
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&(c as u32).to_le_bytes().repeat(2));
                nonce[8..].copy_from_slice(&(i as u64).to_le_bytes());
                let ts = rustynet_control::now_unix_ms();
                let auth = RequestAuth::sign(
                    &key,
                    rustynet_proto::NodeId(0),
                    "POST",
                    paths::REGISTER,
                    &body,
                    ts,
                    nonce,
                );
                let req = hyper::Request::post(paths::REGISTER)
                    .header("host", "127.0.0.1")
                    .header(AUTH_HEADER, auth.to_header())
                    .body(Full::new(bytes::Bytes::from(body.clone())))
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                statuses.push(resp.status().as_u16());
                resp.into_body().collect().await.unwrap();
            }
            statuses
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Size and modification time of the control database and its WAL: any
/// durable write changes one of them.
pub fn db_fingerprint(h: &Harness) -> Vec<(u64, std::time::SystemTime)> {
    ["control.db", "control.db-wal"]
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(h.dir.path().join("control").join(name)).unwrap();
            (meta.len(), meta.modified().unwrap())
        })
        .collect()
}
