//! The relay over real TLS 1.3 on loopback: server, client, upgrade,
//! health check, metrics, binding, and reconnection after a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustynet_relay::binding;
use rustynet_relay::client::DownReason;
use rustynet_relay::frame::{GoneReason, RefuseCode};
use rustynet_relay::{ConnState, RelayClient};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn two_clients_exchange_packets_both_ways() {
    let relay = start_relay(RelayOptions::default());
    let (a, rec_a) = client(relay.addr, 1, &[2]);
    let (b, rec_b) = client(relay.addr, 2, &[1]);
    assert!(wait_until(WAIT, || connected(&a) && connected(&b)));
    let ConnState::Connected { observed } = a.state() else {
        panic!("not connected");
    };
    assert_eq!(observed.ip(), relay.addr.ip());
    assert_ne!(observed.port(), relay.addr.port());

    assert!(a.send(&node_key(2), b"from a", false));
    assert!(b.send(&node_key(1), b"from b", false));
    assert!(a.send(&node_key(2), b"probe from a", true));
    assert!(wait_until(WAIT, || rec_b.packets.lock().unwrap().len()
        == 2
        && rec_a.packets.lock().unwrap().len() == 1));
    let got_b = rec_b.packets.lock().unwrap().clone();
    assert!(got_b.contains(&(node_key(1), b"from a".to_vec(), false)));
    assert!(got_b.contains(&(node_key(1), b"probe from a".to_vec(), true)));
    assert_eq!(
        rec_a.packets.lock().unwrap()[0],
        (node_key(2), b"from b".to_vec(), false)
    );
    // The first ping's answer gives a round-trip time.
    assert!(wait_until(WAIT, || a.rtt().is_some()));
    assert!(a.rtt().unwrap() < Duration::from_secs(1));
    assert_eq!(relay.metrics.logins(), 2);
    assert_eq!(relay.metrics.forwarded_packets(), 3);

    // Bursts within the queues arrive complete and in order.
    let mut sent = 0;
    for burst in 0..20u32 {
        for i in 0..100u32 {
            let mut p = vec![0u8; 1200];
            p[..4].copy_from_slice(&(burst * 100 + i).to_be_bytes());
            assert!(a.send(&node_key(2), &p, false));
            sent += 1;
        }
        assert!(wait_until(WAIT, || rec_b.packets.lock().unwrap().len() == 2 + sent));
    }
    let seqs: Vec<u32> = rec_b.packets.lock().unwrap()[2..]
        .iter()
        .map(|(_, p, _)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        .collect();
    assert_eq!(seqs, (0..2000).collect::<Vec<u32>>());
    assert_eq!(relay.metrics.dropped("queue_full"), 0);
    a.close();
    b.close();
}

#[test]
fn clients_outside_the_network_or_the_pair_get_nothing() {
    let relay = start_relay(RelayOptions::default());
    let (a, rec_a) = client(relay.addr, 1, &[2, 3]);
    // Node 3 is in the network but does not list node 1.
    let (c, rec_c) = client(relay.addr, 3, &[]);
    // Node 2's ticket is signed by a key the relay does not trust.
    let rogue = rustynet_proto::NodeSigningKey::from_seed(&[77; 32]);
    let rec_b = Arc::new(Recorder::default());
    let b = RelayClient::spawn(
        client_config(relay.addr, 2, ticket_signed(&rogue, 2, &[1])),
        rec_b.clone(),
    )
    .unwrap();
    assert!(wait_until(WAIT, || connected(&a) && connected(&c)));
    assert!(wait_until(WAIT, || matches!(
        rec_b.last_down(),
        Some(DownReason::Refused {
            code: RefuseCode::Ticket,
            ..
        })
    )));
    assert!(!b.send(&node_key(1), b"x", false), "not connected: dropped");
    assert!(relay.metrics.refused("ticket_bad_signature") >= 1);

    assert!(a.send(&node_key(3), b"to c", false));
    assert!(a.send(&node_key(2), b"to b", false));
    assert!(wait_until(WAIT, || rec_a.gone.lock().unwrap().len() == 2));
    let gone = rec_a.gone.lock().unwrap().clone();
    assert!(gone.contains(&(node_key(3), GoneReason::NotAllowed)));
    assert!(gone.contains(&(node_key(2), GoneReason::NotConnected)));
    assert!(rec_c.packets.lock().unwrap().is_empty());
    b.close();
}

#[test]
fn a_wrong_pin_fails_tls() {
    let relay = start_relay(RelayOptions::default());
    let rec = Arc::new(Recorder::default());
    let mut cfg = client_config(relay.addr, 1, ticket(1, &[]));
    cfg.cert_sha256 = [0; 32];
    let c = RelayClient::spawn(cfg, rec.clone()).unwrap();
    assert!(wait_until(WAIT, || matches!(
        rec.last_down(),
        Some(DownReason::Tls(_))
    )));
    assert_eq!(relay.metrics.logins(), 0);
    c.close();
}

#[test]
fn clients_reconnect_by_themselves_after_a_relay_restart() {
    let relay = start_relay(RelayOptions::default());
    let addr = relay.addr;
    let (a, rec_a) = client(addr, 1, &[2]);
    let (b, rec_b) = client(addr, 2, &[1]);
    assert!(wait_until(WAIT, || connected(&a) && connected(&b)));
    drop(relay);
    assert!(wait_until(WAIT, || !connected(&a) && !connected(&b)));
    let relay = start_relay(RelayOptions {
        listen: addr,
        ..RelayOptions::default()
    });
    let started = std::time::Instant::now();
    assert!(wait_until(WAIT, || connected(&a) && connected(&b)));
    // The backoff is short after a long-lived connection dropped, but the
    // clients tried while the relay was down, so allow a few retries.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(rec_a.connected_count() >= 2 && rec_b.connected_count() >= 2);
    assert!(a.send(&node_key(2), b"again", false));
    assert!(wait_until(WAIT, || !rec_b
        .packets
        .lock()
        .unwrap()
        .is_empty()));
    drop(relay);
}

#[test]
fn binding_answers_with_the_observed_address_on_two_addresses() {
    let relay = start_relay(RelayOptions {
        binding: vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:0".parse().unwrap(),
        ],
        ..RelayOptions::default()
    });
    assert_eq!(relay.binding.len(), 2);
    for src in ["127.0.0.1:0", "127.0.0.3:0"] {
        let socket = UdpSocket::bind(src).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let local = socket.local_addr().unwrap();
        for (i, server) in relay.binding.iter().enumerate() {
            let txid = [i as u8 + 1; 12];
            socket.send_to(&binding::request(&txid), server).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from, *server, "answered from the address asked");
            assert!(n <= binding::REQUEST_LEN);
            assert_eq!(binding::parse_response(&buf[..n]), Some((txid, local)));
        }
    }
    // A malformed request gets no answer, and is counted.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    socket
        .send_to(&binding::request(&[1; 12])[..14], relay.binding[0])
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv_from(&mut buf).is_err());
    assert_eq!(relay.metrics.binding_dropped_total("malformed"), 1);
    assert_eq!(relay.metrics.binding_answered_total(), 4);
}

/// A raw TLS connection to the relay, sending `request` and returning what
/// came back until the server closed or 2 s passed.
async fn raw_exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let config = rustynet_relay::tls::client_config(cert().pin).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut out)).await;
    out
}

#[test]
fn http_upgrade_health_and_metrics() {
    let relay = start_relay(RelayOptions {
        metrics: true,
        ..RelayOptions::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let health = raw_exchange(relay.addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(health.starts_with(b"HTTP/1.1 200 OK"), "{health:?}");
        assert!(health.ends_with(b"ok\n"));
        let missing = raw_exchange(relay.addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with(b"HTTP/1.1 404"));
        let no_upgrade =
            raw_exchange(relay.addr, "GET /relay/v1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(no_upgrade.starts_with(b"HTTP/1.1 426"));
        // A proper upgrade switches and the challenge follows at once (the
        // connection then times out waiting for a login; 2 s is enough to
        // see the challenge).
        let upgraded = raw_exchange(
            relay.addr,
            "GET /relay/v1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: rustynet-relay/1\r\n\r\n",
        )
        .await;
        let head_len = rustynet_relay::upgrade::parse_response(&upgraded)
            .unwrap()
            .unwrap();
        let mut rest = bytes::BytesMut::from(&upgraded[head_len..]);
        let frame = rustynet_relay::frame::Decoder::new(0)
            .decode(&mut rest)
            .unwrap();
        assert!(matches!(
            frame,
            Some(rustynet_relay::frame::Frame::ServerChallenge { version: 1, .. })
        ));

        let mut tcp = tokio::net::TcpStream::connect(relay.metrics_addr.unwrap())
            .await
            .unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"));
        assert!(text.contains("rustynet_relay_connections"), "{text}");
    });
}

#[test]
fn the_handshake_deadline_closes_a_silent_connection() {
    let relay = start_relay(RelayOptions {
        limits: rustynet_relay::core::Limits {
            handshake_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        ..RelayOptions::default()
    });
    let mut tcp = std::net::TcpStream::connect(relay.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    // Says nothing: the relay closes it (EOF or reset) well before 5 s.
    let _ = std::io::Read::read(&mut tcp, &mut buf);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(wait_until(WAIT, || relay.metrics.connections("handshake") == 0));
}
