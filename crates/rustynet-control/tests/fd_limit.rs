//! The real `rustynet-control serve` binary started with the common default
//! open-file limit (1,024): idle TLS connections past that number must not
//! stop a node from enrolling and streaming (the server raises its limit to
//! the hard limit at start, bounds connections per source and closes idle
//! ones at the head deadline).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::BufRead as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustynet_control::admin;
use rustynet_control::datadir::DataDir;
use rustynet_control_client::ControlClient;
use rustynet_proto::control_api::StreamFrame;
use rustynet_proto::{NodeSigningKey, TunnelPublicKey};

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_with_nofile(data: &std::path::Path, soft: u64) -> (Server, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rustynet-control"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUSTYNET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (getrlimit/setrlimit).
    unsafe {
        cmd.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = soft.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (server, addr)
}

fn connector(ca: &str) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustynet_control::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_past_the_default_file_limit_do_not_stop_a_node() {
    // This process holds the client ends (and the server's limit is raised
    // to the same hard limit): both need room past 1,024.
    let own = rustynet_control::fdlimit::raise_nofile_limit().unwrap();
    assert!(
        own >= 4096,
        "this test needs an open-file hard limit of at least 4096 (ulimit -Hn is {own})"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("control"));
    data.init("rustynet.internal", &["127.0.0.1".into()])
        .unwrap();
    let (key, _) = admin::preauth_create(&data, "alice", &[], true, None).unwrap();
    let (_server, addr) = serve_with_nofile(&dir.path().join("control"), 1024);
    let ca = std::fs::read_to_string(data.ca_cert()).unwrap();
    // 1,200 idle TLS connections from two sources: past the server's
    // starting limit, each held open after its handshake.
    let connector = connector(&ca);
    let mut handshakes = tokio::task::JoinSet::new();
    for (src, count) in [(2u8, 600), (3, 600)] {
        for _ in 0..count {
            let connector = connector.clone();
            handshakes.spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4().ok()?;
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, src)), 0);
                socket.bind(from).ok()?;
                let work = async {
                    let tcp = socket.connect(addr).await.ok()?;
                    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").ok()?;
                    connector.connect(name, tcp).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(5), work)
                    .await
                    .ok()
                    .flatten()
            });
        }
    }
    let mut idle = Vec::new();
    while let Some(done) = handshakes.join_next().await {
        idle.extend(done.unwrap());
    }
    assert!(idle.len() > 1024, "only {} idle connections", idle.len());
    let client = ControlClient::new(&format!("https://{addr}"), &ca).unwrap();
    let signing = NodeSigningKey::from_seed(&[1; 32]);
    let request = rustynet_proto::control_api::RegisterRequest {
        path_key: None,
        version: rustynet_proto::control_api::API_VERSION,
        auth_key: rustynet_proto::control_api::SecretString::new(key.to_string()),
        hostname: "real".into(),
        node_key: TunnelPublicKey([1; 32]),
        signing_key: signing.public(),
        endpoints: vec![],
        advertise_exit_node: false,
        advertise_routes: vec![],
        renew: None,
    };
    let started = Instant::now();
    let enrolled = client.register(&signing, &request).await.unwrap();
    let mut stream = client
        .map_stream(&signing, enrolled.node_id, 0)
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), stream.next_frame())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(frame, Some(StreamFrame::Map { .. })), "{frame:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}
