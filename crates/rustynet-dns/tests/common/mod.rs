//! Test support: a tiny hickory-proto DNS server to forward to, client
//! helpers, and a transport that maps netmap resolver addresses (port 53)
//! onto loopback test servers.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustynet_dns::{
    BoxFuture, NetTransport, ResolverConfig, SocketOptions, Upstream, UpstreamError, UpstreamQuery,
    UpstreamTransport,
};
use rustynet_proto::{DnsConfig, DnsRecord, NodeId, SplitDnsRoute};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Generous bound for any single network wait in tests (loaded 2-core box).
pub const WAIT: Duration = Duration::from_secs(15);

/// How the fake upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer every query.
    Answer,
    /// Receive but never answer.
    Silent,
    /// Answer with the wrong id (a spoof that must not be relayed).
    WrongId,
}

struct State {
    answer: Ipv4Addr,
    mode: Mutex<Mode>,
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
}

/// A loopback DNS server answering A queries with a fixed address
/// (`big.*` names get 100 addresses, so UDP replies are truncated).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    pub async fn start(answer: Ipv4Addr) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), answer).await
    }

    /// Binds UDP and TCP on `addr` (port 0: the same free port for both).
    pub async fn start_on(addr: SocketAddr, answer: Ipv4Addr) -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(addr).await.unwrap();
            let bound = udp.local_addr().unwrap();
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(_) if addr.port() == 0 => continue,
                Err(e) => panic!("bind tcp {bound}: {e}"),
            }
        };
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(State {
            answer,
            mode: Mutex::new(Mode::Answer),
            udp_queries: AtomicU64::new(0),
            tcp_queries: AtomicU64::new(0),
        });
        let udp_state = Arc::clone(&state);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                udp_state.udp_queries.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = respond(&udp_state, &buf[..len], true) {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });
        let tcp_state = Arc::clone(&state);
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let state = Arc::clone(&tcp_state);
                tokio::spawn(async move {
                    while let Ok(len) = stream.read_u16().await {
                        let mut message = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut message).await.is_err() {
                            return;
                        }
                        state.tcp_queries.fetch_add(1, Ordering::Relaxed);
                        if let Some(reply) = respond(&state, &message, false) {
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if stream.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn udp_queries(&self) -> u64 {
        self.state.udp_queries.load(Ordering::Relaxed)
    }

    pub fn tcp_queries(&self) -> u64 {
        self.state.tcp_queries.load(Ordering::Relaxed)
    }

    /// Stops serving and closes the sockets.
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn respond(state: &State, query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let mode = *state.mode.lock().unwrap();
    if mode == Mode::Silent {
        return None;
    }
    let id = if mode == Mode::WrongId {
        request.id.wrapping_add(1)
    } else {
        request.id
    };
    let mut reply = Message::response(id, OpCode::Query);
    reply.metadata.recursion_desired = request.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(request.queries.clone());
    let question = request.queries.first()?;
    if question.query_type() == RecordType::A {
        let count = if question
            .name()
            .to_ascii()
            .to_ascii_lowercase()
            .starts_with("big.")
        {
            100
        } else {
            1
        };
        for i in 0..count {
            let ip = Ipv4Addr::from(u32::from(state.answer) + i);
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                300,
                RData::A(A(ip)),
            ));
        }
    }
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        reply.set_edns(edns);
    }
    let bytes = reply.to_vec().ok()?;
    if udp && bytes.len() > usize::from(request.max_payload()) {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Forwards through the real transport, with netmap resolver addresses
/// mapped onto loopback test servers (split resolvers are always port 53).
pub struct RemapTransport {
    inner: NetTransport,
    map: HashMap<SocketAddr, SocketAddr>,
}

impl RemapTransport {
    pub fn new(map: &[(SocketAddr, SocketAddr)]) -> Self {
        Self {
            inner: NetTransport::new(SocketOptions::default()),
            map: map.iter().copied().collect(),
        }
    }
}

impl UpstreamTransport for RemapTransport {
    fn exchange<'a>(
        &'a self,
        server: SocketAddr,
        query: &'a UpstreamQuery,
    ) -> BoxFuture<'a, Result<Vec<u8>, UpstreamError>> {
        let target = self.map.get(&server).copied().unwrap_or(server);
        self.inner.exchange(target, query)
    }
}

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// A query with RD set and a fresh id.
pub fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    query_with(name, qtype, None)
}

pub fn query_with(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Vec<u8> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message.to_vec().unwrap()
}

/// Sends one UDP query and waits for the reply with the same id.
pub async fn udp_ask(server: SocketAddr, query: &[u8]) -> Message {
    try_udp_ask(server, query, WAIT)
        .await
        .unwrap_or_else(|| panic!("no UDP reply from {server} within {WAIT:?}"))
}

pub async fn try_udp_ask(server: SocketAddr, query: &[u8], wait: Duration) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(query, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    tokio::time::timeout(wait, async {
        loop {
            let (len, _) = socket.recv_from(&mut buf).await.unwrap();
            let reply = Message::from_vec(&buf[..len]).unwrap();
            if reply.id.to_be_bytes() == [query[0], query[1]] {
                return reply;
            }
        }
    })
    .await
    .ok()
}

/// Sends one query over a new TCP connection and reads the reply.
pub async fn tcp_ask(server: SocketAddr, query: &[u8]) -> Message {
    tokio::time::timeout(WAIT, try_tcp_ask(server, query))
        .await
        .unwrap_or_else(|_| panic!("no TCP reply from {server} within {WAIT:?}"))
        .unwrap()
}

/// Like [`tcp_ask`], but a refused, reset or closed connection is an error
/// to retry (a server at its connection cap drops new ones at once).
pub async fn try_tcp_ask(server: SocketAddr, query: &[u8]) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Message::from_vec(&reply).map_err(|e| std::io::Error::other(e.to_string()))
}

pub fn ips(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect()
}

pub fn record(name: &str, ip: &str, node: u64) -> DnsRecord {
    DnsRecord {
        name: name.to_owned(),
        ip: ip.parse().unwrap(),
        node_id: NodeId(node),
        requested_hostname: name.split('.').next().unwrap().to_owned(),
        assigned_at: 1_795_338_000,
    }
}

/// A tailnet with two nodes and one split route to `10.1.1.53`.
pub fn dns_config() -> DnsConfig {
    DnsConfig {
        suffix: "rustynet.internal".to_owned(),
        records: vec![
            record("web.rustynet.internal", "100.64.0.5", 5),
            record("db.rustynet.internal", "100.64.0.9", 9),
        ],
        split: vec![SplitDnsRoute {
            domain: "corp.example".to_owned(),
            resolvers: vec!["10.1.1.53".parse().unwrap()],
        }],
    }
}

pub fn resolver(upstream: Upstream) -> ResolverConfig {
    ResolverConfig::new(dns_config(), upstream).unwrap()
}

/// The split resolver address as the netmap names it.
pub fn split_resolver() -> SocketAddr {
    "10.1.1.53:53".parse().unwrap()
}
