//! Shared fixtures: a relay on loopback in its own runtime thread, tickets,
//! and a recording client sink.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody, SignedEnvelope, TunnelPublicKey};
use rustynet_relay::client::DownReason;
use rustynet_relay::core::Limits;
use rustynet_relay::frame::GoneReason;
use rustynet_relay::{
    ClientConfig, ClientSink, ClientTimeouts, ConnState, Metrics, RelayClient, RelayServer,
    ServerConfig, tls,
};

pub fn control() -> NodeSigningKey {
    NodeSigningKey::from_seed(&[1; 32])
}

pub fn node_key(n: u8) -> TunnelPublicKey {
    TunnelPublicKey([n; 32])
}

pub fn login_key(n: u8) -> NodeSigningKey {
    NodeSigningKey::from_seed(&[100 + n; 32])
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn ticket_signed(signer: &NodeSigningKey, n: u8, peers: &[u8]) -> SignedEnvelope {
    ticket_generation(signer, n, peers, 1)
}

pub fn ticket_generation(
    signer: &NodeSigningKey,
    n: u8,
    peers: &[u8],
    generation: u64,
) -> SignedEnvelope {
    let now = unix_now();
    let body = RelayTicket {
        node_key: node_key(n),
        login_key: login_key(n).public(),
        peers: peers.iter().map(|p| node_key(*p)).collect(),
    }
    .into_body(NodeId(u64::from(n)), generation, now - 5, now + 3600);
    SealedBody::seal(signer, &body)
        .unwrap()
        .to_envelope()
        .unwrap()
}

pub fn ticket(n: u8, peers: &[u8]) -> SignedEnvelope {
    ticket_signed(&control(), n, peers)
}

/// A certificate shared by the tests of one binary (generation is slow-ish).
pub fn cert() -> &'static tls::SelfSigned {
    static CERT: std::sync::OnceLock<tls::SelfSigned> = std::sync::OnceLock::new();
    CERT.get_or_init(|| tls::self_signed(&["localhost".into()]).unwrap())
}

pub fn server_tls() -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let c = cert();
    let certs =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
    tls::server_config_from_der(certs, key).unwrap()
}

/// A relay running on its own runtime thread until dropped.
pub struct TestRelay {
    pub addr: SocketAddr,
    pub binding: Vec<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub struct RelayOptions {
    pub listen: SocketAddr,
    pub binding: Vec<SocketAddr>,
    pub metrics: bool,
    pub limits: Limits,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().unwrap(),
            binding: vec![],
            metrics: false,
            limits: Limits::default(),
        }
    }
}

pub fn start_relay(opts: RelayOptions) -> TestRelay {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let config = ServerConfig {
        listen: vec![opts.listen],
        tls: server_tls(),
        control_keys: vec![control().public()],
        binding: opts.binding,
        metrics: opts.metrics.then(|| "127.0.0.1:0".parse().unwrap()),
        limits: opts.limits,
    };
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = RelayServer::bind(config).await.unwrap();
            ready_tx
                .send((
                    server.local_addrs()[0],
                    server.binding_addrs(),
                    server.metrics_addr(),
                    server.metrics(),
                ))
                .unwrap();
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
    });
    let (addr, binding, metrics_addr, metrics) = ready_rx.recv().unwrap();
    TestRelay {
        addr,
        binding,
        metrics_addr,
        metrics,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records everything a client reports.
#[derive(Default)]
pub struct Recorder {
    pub packets: Mutex<Vec<(TunnelPublicKey, Vec<u8>, bool)>>,
    pub states: Mutex<Vec<ConnState>>,
    pub gone: Mutex<Vec<(TunnelPublicKey, GoneReason)>>,
    pub bytes: std::sync::atomic::AtomicU64,
}

impl ClientSink for Recorder {
    fn packet(&self, src: TunnelPublicKey, payload: &[u8], probe: bool) {
        self.bytes
            .fetch_add(payload.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let mut p = self.packets.lock().unwrap();
        if p.len() < 100_000 {
            p.push((src, payload.to_vec(), probe));
        }
    }
    fn state(&self, state: ConnState) {
        self.states.lock().unwrap().push(state);
    }
    fn peer_gone(&self, key: TunnelPublicKey, reason: GoneReason) {
        self.gone.lock().unwrap().push((key, reason));
    }
}

impl Recorder {
    pub fn connected_count(&self) -> usize {
        self.states
            .lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s, ConnState::Connected { .. }))
            .count()
    }
    pub fn last_down(&self) -> Option<DownReason> {
        self.states
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|s| match s {
                ConnState::Down { reason } => Some(reason.clone()),
                _ => None,
            })
    }
}

pub fn client_config(relay: SocketAddr, n: u8, ticket: SignedEnvelope) -> ClientConfig {
    ClientConfig {
        udp: None,
        addrs: vec![relay],
        server_name: "localhost".into(),
        cert_sha256: cert().pin,
        fwmark: None,
        ticket,
        login_key: login_key(n),
        timeouts: ClientTimeouts::default(),
        send_queue_bytes: 1 << 20,
    }
}

pub fn client(relay: SocketAddr, n: u8, peers: &[u8]) -> (RelayClient, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let c = RelayClient::spawn(client_config(relay, n, ticket(n, peers)), rec.clone()).unwrap();
    (c, rec)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn connected(c: &RelayClient) -> bool {
    matches!(c.state(), ConnState::Connected { .. })
}
