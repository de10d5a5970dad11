//! Load generator for `scripts/bench/relay.sh` (not a product binary).
//!
//! - `pubkey SEED`: prints the control public key for a base64 seed.
//! - `idle`: logs in N clients over real TLS (from several loopback source
//!   addresses), prints the login figures as JSON, then holds the
//!   connections idle until stdin closes.
//! - `push`: two real `RelayClient`s; one sends M MB to the other as fast
//!   as the relay takes it; prints bytes, time and loss as JSON. With
//!   `--udp ADDR` (the relay's UDP address) the packets take the UDP relay
//!   mode instead of TLS, sent in GSO runs and received with GRO as the
//!   engine does.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;
use clap::{Parser, Subcommand};
use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody, SignedEnvelope, TunnelPublicKey};
use rustynet_relay::frame::{Decoder, Frame};
use rustynet_relay::{ClientConfig, ClientSink, ClientTimeouts, ConnState, RelayClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

mod udp_push;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Target {
    /// Relay TLS address.
    #[arg(long)]
    relay: SocketAddr,
    /// Relay SPKI pin, base64.
    #[arg(long)]
    pin: String,
    /// Control signing key seed, base64 (signs the tickets).
    #[arg(long)]
    control_seed: String,
}

#[derive(Subcommand)]
enum Command {
    Pubkey {
        seed: String,
    },
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// Loopback source addresses 127.0.0.(2..2+N).
        #[arg(long, default_value_t = 16)]
        sources: u8,
        #[arg(long, default_value_t = 128)]
        concurrency: usize,
    },
    Push {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1000)]
        mb: u64,
        #[arg(long, default_value_t = 1200)]
        size: usize,
        /// Packets in flight at most (sent, not yet delivered), as a
        /// congestion-controlled flow would keep; 0 = blast.
        #[arg(long, default_value_t = 2048)]
        window: u64,
        /// The relay's UDP address: push through the UDP relay mode.
        #[arg(long)]
        udp: Option<SocketAddr>,
    },
}

fn seed(text: &str) -> anyhow::Result<NodeSigningKey> {
    let bytes = B64.decode(text.trim()).context("seed is not base64")?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("seed is not 32 bytes"))?;
    Ok(NodeSigningKey::from_seed(&seed))
}

fn pin(text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = B64.decode(text.trim()).context("pin is not base64")?;
    bytes.try_into().map_err(|_| anyhow!("pin is not 32 bytes"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn node(i: u64) -> (TunnelPublicKey, NodeSigningKey) {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key[31] = 0x5a;
    let mut login = [0u8; 32];
    login[..8].copy_from_slice(&i.to_be_bytes());
    login[31] = 0xa5;
    (TunnelPublicKey(key), NodeSigningKey::from_seed(&login))
}

fn ticket(
    control: &NodeSigningKey,
    i: u64,
    peers: Vec<TunnelPublicKey>,
) -> anyhow::Result<SignedEnvelope> {
    let (node_key, login) = node(i);
    let now = unix_now();
    let body = RelayTicket {
        node_key,
        login_key: login.public(),
        peers,
    }
    .into_body(NodeId(i), 1, now - 5, now + 3600);
    Ok(SealedBody::seal(control, &body)?.to_envelope()?)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Pubkey { seed: s } => {
            println!("{}", seed(&s)?.public());
            Ok(())
        }
        Command::Idle {
            target,
            clients,
            sources,
            concurrency,
        } => tokio::runtime::Runtime::new()?.block_on(idle(target, clients, sources, concurrency)),
        Command::Push {
            target,
            mb,
            size,
            window,
            udp: None,
        } => push(&target, mb, size, window),
        Command::Push {
            target,
            mb,
            size,
            window,
            udp: Some(udp),
        } => udp_push::push(&target, udp, mb, size, window),
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn read_more(tls: &mut Tls, buf: &mut BytesMut) -> anyhow::Result<()> {
    buf.reserve(4096);
    if tls.read_buf(buf).await? == 0 {
        bail!("relay closed the connection");
    }
    Ok(())
}

/// One full login over TLS, as the real client does it.
async fn login(
    relay: SocketAddr,
    source: IpAddr,
    connector: tokio_rustls::TlsConnector,
    ticket: Vec<u8>,
    key: NodeSigningKey,
) -> anyhow::Result<Tls> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(relay).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(&rustynet_relay::upgrade::request("localhost"))
        .await?;
    let mut buf = BytesMut::new();
    loop {
        if let Some(len) = rustynet_relay::upgrade::parse_response(&buf)? {
            let _ = buf.split_to(len);
            break;
        }
        read_more(&mut tls, &mut buf).await?;
    }
    let decoder = Decoder::new(0);
    let next = async |tls: &mut Tls, buf: &mut BytesMut| -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = decoder.decode(buf)? {
                return Ok(frame);
            }
            read_more(tls, buf).await?;
        }
    };
    let Frame::ServerChallenge { challenge, .. } = next(&mut tls, &mut buf).await? else {
        bail!("no challenge");
    };
    let exporter: [u8; 32] = tls.get_ref().1.export_keying_material(
        [0u8; 32],
        rustynet_relay::login::EXPORTER_LABEL,
        None,
    )?;
    let sig = rustynet_relay::login::sign_login(&key, &exporter, &challenge, &ticket);
    let mut out = Vec::new();
    Frame::Login {
        sig,
        ticket: ticket.into(),
    }
    .encode(&mut out);
    tls.write_all(&out).await?;
    match next(&mut tls, &mut buf).await? {
        Frame::LoginOk { .. } => Ok(tls),
        other => bail!("login failed: {other:?}"),
    }
}

async fn idle(
    target: Target,
    clients: usize,
    sources: u8,
    concurrency: usize,
) -> anyhow::Result<()> {
    let control = seed(&target.control_seed)?;
    let config = rustynet_relay::tls::client_config(pin(&target.pin)?)?;
    let connector = tokio_rustls::TlsConnector::from(config);
    // Tickets and keys are control's work: made before the clock starts.
    let mut prepared = Vec::with_capacity(clients);
    for i in 0..clients as u64 {
        let (_, key) = node(i);
        prepared.push((ticket(&control, i, Vec::new())?.to_json().into_bytes(), key));
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (ticket, key)) in prepared.into_iter().enumerate() {
        let permit = Arc::clone(&sem).acquire_owned().await?;
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(sources)) as u8,
        ));
        let connector = connector.clone();
        let relay = target.relay;
        tasks.spawn(async move {
            let t = Instant::now();
            let r = login(relay, source, connector, ticket, key).await;
            drop(permit);
            r.map(|tls| (tls, t.elapsed()))
        });
    }
    let mut held = Vec::with_capacity(clients);
    let mut latencies = Vec::with_capacity(clients);
    let mut failed = 0usize;
    while let Some(done) = tasks.join_next().await {
        match done? {
            Ok((tls, latency)) => {
                held.push(tls);
                latencies.push(latency.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                if failed == 0 {
                    eprintln!("first login failure: {e:#}");
                }
                failed += 1;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{{\"logged_in\": {}, \"failed\": {failed}, \"seconds\": {seconds:.3}, \"logins_per_sec\": {:.1}, \"login_ms_p50\": {:.2}, \"login_ms_p99\": {:.2}, \"concurrency\": {concurrency}, \"sources\": {sources}}}",
        held.len(),
        held.len() as f64 / seconds,
        pct(0.5),
        pct(0.99)
    );
    // Hold every connection, idle, until the caller closes stdin.
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await?;
    drop(held);
    Ok(())
}

#[derive(Default)]
struct Counter {
    bytes: AtomicU64,
    packets: AtomicU64,
}

impl ClientSink for Counter {
    fn packet(&self, _src: TunnelPublicKey, payload: &[u8], _probe: bool) {
        self.bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.packets.fetch_add(1, Ordering::Relaxed);
    }
    fn state(&self, _state: ConnState) {}
}

fn push(target: &Target, mb: u64, size: usize, window: u64) -> anyhow::Result<()> {
    let control = seed(&target.control_seed)?;
    let pin = pin(&target.pin)?;
    let (a_key, a_login) = node(1_000_001);
    let (b_key, b_login) = node(1_000_002);
    let config = |login, ticket| ClientConfig {
        udp: None,
        addrs: vec![target.relay],
        server_name: "localhost".into(),
        cert_sha256: pin,
        fwmark: None,
        ticket,
        login_key: login,
        timeouts: ClientTimeouts::default(),
        send_queue_bytes: 1 << 20,
    };
    let a_sink = Arc::new(Counter::default());
    let b_sink = Arc::new(Counter::default());
    let a = RelayClient::spawn(
        config(a_login, ticket(&control, 1_000_001, vec![b_key])?),
        a_sink,
    )?;
    let b = RelayClient::spawn(
        config(b_login, ticket(&control, 1_000_002, vec![a_key])?),
        b_sink.clone(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(matches!(a.state(), ConnState::Connected { .. })
        && matches!(b.state(), ConnState::Connected { .. }))
    {
        if Instant::now() > deadline {
            bail!("clients did not connect: {:?} {:?}", a.state(), b.state());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let payload = vec![0x42u8; size];
    let total = mb * 1_000_000 / size as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut refused = 0u64;
    while sent < total {
        if window > 0 && sent - b_sink.packets.load(Ordering::Relaxed) >= window {
            std::thread::yield_now();
            continue;
        }
        if a.send(&b_key, &payload, false) {
            sent += 1;
        } else {
            // Queue full: let the client thread drain it.
            refused += 1;
            std::thread::yield_now();
        }
    }
    // Wait until delivery stops growing.
    let mut last = 0;
    let mut stable_since = Instant::now();
    loop {
        let now = b_sink.packets.load(Ordering::Relaxed);
        if now == sent {
            break;
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = started.elapsed().as_secs_f64();
    let delivered = b_sink.bytes.load(Ordering::Relaxed);
    println!(
        "{{\"sent_packets\": {sent}, \"delivered_packets\": {}, \"delivered_bytes\": {delivered}, \"seconds\": {seconds:.3}, \"mbit_per_sec\": {:.1}, \"send_retries\": {refused}, \"payload_bytes\": {size}, \"window_packets\": {window}}}",
        b_sink.packets.load(Ordering::Relaxed),
        delivered as f64 * 8.0 / seconds / 1e6
    );
    a.close();
    b.close();
    Ok(())
}
