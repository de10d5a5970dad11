//! The control plane under hostile load, over real TLS 1.3 on loopback:
//! floods from one source must not keep real nodes from enrolling and
//! streaming, nor make the server write to disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Harness, POLICY_ALL, db_fingerprint, flood_bad_enrollments, next_map};

const FLOODER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_write_nothing_durable_and_are_rate_limited() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    // Let the server settle (its first reload, the policy) before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = db_fingerprint(&h);
    let statuses = flood_bad_enrollments(&h, FLOODER, 4, 100).await;
    assert_eq!(db_fingerprint(&h), before, "a bad enrollment wrote to disk");
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, 400, "{statuses:?}");
    // The burst (64) plus what refilled during the flood got an answer on
    // the key; the rest was cut off before its body was read.
    assert!(
        (64..200).contains(&refused),
        "{refused} reached the key check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_enrollments_does_not_delay_a_good_node() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let flood = flood_bad_enrollments(&h, FLOODER, 8, 250);
    let good = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let node = h.enroll(&key, "good", 1).await;
        let mut hw = 0;
        let mut stream = node.stream(&h).await;
        next_map(&mut stream, &node, &mut hw).await;
        started.elapsed()
    };
    let (statuses, took) = tokio::join!(flood, good);
    assert!(statuses.iter().filter(|s| **s == 429).count() > 1000);
    assert!(
        took < Duration::from_secs(2),
        "the good node took {took:?} to enroll and get its first map"
    );
}

/// Reads from `tls` until the server closes or `limit` passes; returns what
/// arrived and when the read ended.
async fn read_until_closed(
    tls: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, Duration) {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), tls.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_at_the_deadline() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.header_timeout = Duration::from_secs(1);
    })
    .await;
    let tls = common::tls_connect(&h).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    wr.write_all(b"POST /v1/register HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
        .await
        .unwrap();
    // Slowloris: one more header byte every 200 ms, never the end of the head.
    let trickle = tokio::spawn(async move {
        while wr.write_all(b"a").await.is_ok() && wr.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (_, took) = read_until_closed(&mut rd, Duration::from_secs(8)).await;
    trickle.abort();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "connection closed after {took:?}, deadline 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_and_a_slow_body_are_cut() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.header_timeout = Duration::from_secs(1);
        o.body_timeout = Duration::from_secs(1);
    })
    .await;
    // Idle after the TLS handshake: closed at the head deadline.
    let mut idle = common::tls_connect(&h).await;
    let (_, took) = read_until_closed(&mut idle, Duration::from_secs(8)).await;
    assert!(
        took < Duration::from_secs(3),
        "idle connection held {took:?}"
    );
    // A body that never completes: 408 at the body deadline.
    let mut tls = common::tls_connect(&h).await;
    tls.write_all(
        b"POST /v1/register HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n{\"vers",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let (got, took) = read_until_closed(&mut tls, Duration::from_secs(8)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(took < Duration::from_secs(3), "slow body held {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_not_spoken() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start(Duration::from_secs(600)).await;
    // Prior knowledge: the HTTP/2 preface and an empty SETTINGS frame.
    let mut tls = common::tls_connect(&h).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let (got, _) = read_until_closed(&mut tls, Duration::from_secs(5)).await;
    // An HTTP/2 server answers with its own SETTINGS frame (type 4).
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 "),
        "server spoke something other than HTTP/1.1: {:?}",
        &got[..got.len().min(32)]
    );
    // A client offering only h2 in ALPN fails the handshake.
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(h.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(rustynet_control::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let err = connector.connect(name, tcp).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("application"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_many_sources_cannot_lock_out_a_real_node() {
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.max_connections = 64;
        o.max_connections_per_source = 16;
    })
    .await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let peer = h.enroll(&key, "peer", 2).await;
    // 8 sources × 16 TLS connections that never send a request: twice the
    // whole table. Past a source's share, its sockets are closed at once.
    let mut idle = Vec::new();
    for src in 2..=9u8 {
        for _ in 0..20 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, src));
            if let Ok(Ok(tls)) = tokio::time::timeout(
                Duration::from_secs(5),
                common::try_tls_connect_from(&h, addr),
            )
            .await
            {
                idle.push(tls);
            }
        }
    }
    let started = Instant::now();
    let node = h.enroll(&key, "real", 1).await;
    let mut hw = 0;
    let mut stream = node.stream(&h).await;
    next_map(&mut stream, &node, &mut hw).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "real node took {took:?}");
    // A second wave cannot evict the streams (they are authenticated).
    for src in 10..=17u8 {
        for _ in 0..16 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, src));
            if let Ok(Ok(tls)) = tokio::time::timeout(
                Duration::from_secs(5),
                common::try_tls_connect_from(&h, addr),
            )
            .await
            {
                idle.push(tls);
            }
        }
    }
    let mut peer_stream = peer.stream(&h).await;
    let mut peer_hw = 0;
    next_map(&mut peer_stream, &peer, &mut peer_hw).await;
    common::map_until(&mut stream, &node, &mut hw, |m| {
        m.netmap()
            .peers
            .iter()
            .any(|p| p.hostname == "peer" && p.online)
    })
    .await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_stream_outlives_the_head_deadline() {
    let h = Harness::start_with(Duration::from_secs(600), |o| {
        o.header_timeout = Duration::from_secs(1);
    })
    .await;
    let key = h.preauth("alice", true, None);
    let node = h.enroll(&key, "a", 1).await;
    let _other = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut stream = node.stream(&h).await;
    next_map(&mut stream, &node, &mut hw).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    h.set_policy(POLICY_ALL);
    common::map_until(&mut stream, &node, &mut hw, |m| {
        !m.netmap().peers.is_empty()
    })
    .await;
}
