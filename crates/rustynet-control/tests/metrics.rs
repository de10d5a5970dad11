//! `rustynet-control serve --metrics-listen`: the real binary with an
//! embedded relay; a node enrolls and streams, a bad enrollment is refused,
//! and the scraped `/metrics` shows each of those. Also: every control
//! metric the shipped alert rules and dashboard use exists (the relay's are
//! checked by rustynet-relay's tests, the daemon's by rustynetd's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustynet_control::admin;
use rustynet_control::datadir::DataDir;
use rustynet_control::metrics::ControlMetrics;
use rustynet_control_client::ControlClient;
use rustynet_proto::NodeSigningKey;
use rustynet_service::metric_names;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Kills the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` and returns it with its API and metrics addresses.
fn serve(data: &std::path::Path) -> (Server, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--relay-listen", "127.0.0.1:0"])
        .args(["--relay-advertise", "192.0.2.1:443"])
        .arg("--data-dir")
        .arg(data)
        .env("RUSTYNET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut api = None;
    let mut metrics = None;
    let mut lines = std::io::BufReader::new(stdout).lines();
    while api.is_none() || metrics.is_none() {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            api = Some(a.trim().parse().unwrap());
        } else if let Some(m) = line.strip_prefix("metrics on http://") {
            metrics = Some(m.trim().trim_end_matches("/metrics").parse().unwrap());
        }
    }
    (server, api.unwrap(), metrics.unwrap())
}

async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample line starting with `series ` (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn wait_for(addr: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if value(&text, series) == want {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never {want}:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_counts_streams_maps_enrollments_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("control"));
    data.init("rustynet.internal", &["127.0.0.1".into()])
        .unwrap();
    let (key, _) = admin::preauth_create(&data, "alice", &[], true, None).unwrap();
    let (_server, api, metrics) = serve(&dir.path().join("control"));
    let before = scrape(metrics).await;
    assert_eq!(
        value(&before, "rustynet_control_enrollments_total{kind=\"new\"}"),
        0.0
    );
    assert!(before.contains("rustynet_relay_logins_total"), "{before}");
    assert!(before.contains("rustynet_control_build_info{"), "{before}");

    let ca = std::fs::read_to_string(data.ca_cert()).unwrap();
    let client = ControlClient::new(&format!("https://{api}"), &ca).unwrap();
    let seed = 7;
    let signing = NodeSigningKey::from_seed(&[seed; 32]);
    let resp = client
        .register(&signing, &request(key.as_ref(), seed))
        .await
        .unwrap();
    let node = common::Node { key: signing, resp };
    let mut stream = client
        .map_stream(&node.key, node.resp.node_id, 0)
        .await
        .unwrap();
    let mut high_water = 0;
    common::next_map(&mut stream, &node, &mut high_water).await;
    let refused = client
        .register(
            &NodeSigningKey::from_seed(&[9; 32]),
            &request("not-a-key", 9),
        )
        .await;
    assert!(refused.is_err());

    let text = wait_for(metrics, "rustynet_control_map_streams", 1.0).await;
    assert_eq!(
        value(&text, "rustynet_control_enrollments_total{kind=\"new\"}"),
        1.0
    );
    assert!(
        value(&text, "rustynet_control_maps_sent_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "rustynet_control_map_build_seconds_count") >= 1.0,
        "{text}"
    );
    let refusals: f64 = text
        .lines()
        .filter(|l| l.starts_with("rustynet_control_rejected_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        refusals >= 1.0,
        "the bad enrollment was not counted:\n{text}"
    );
    assert!(!text.contains("reason=\"other\""), "{text}");

    drop(stream);
    wait_for(metrics, "rustynet_control_map_streams", 0.0).await;
}

/// An enrollment request for keys derived from `seed`.
fn request(auth_key: &str, seed: u8) -> rustynet_proto::control_api::RegisterRequest {
    use rustynet_proto::control_api::{API_VERSION, RegisterRequest, SecretString};
    RegisterRequest {
        path_key: None,
        version: API_VERSION,
        auth_key: SecretString::new(auth_key.to_owned()),
        hostname: format!("node{seed}"),
        node_key: rustynet_proto::TunnelPublicKey([seed; 32]),
        signing_key: NodeSigningKey::from_seed(&[seed; 32]).public(),
        endpoints: vec![format!("192.0.2.{seed}:41641").parse().unwrap()],
        advertise_exit_node: false,
        advertise_routes: vec![],
        renew: None,
    }
}

#[test]
fn every_control_metric_in_the_rules_and_dashboard_exists() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    // A value in every family (an empty family is not encoded).
    let m = ControlMetrics::default();
    let _stream = m.stream_opened();
    m.map_sent(Duration::from_millis(1));
    m.enrolled(false);
    m.rejected("bad_signature");
    let exposed = metric_names::exposed(&m.encode());
    let mut checked = 0;
    for file in [
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/rustynet.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for name in metric_names::used(&text, "rustynet_") {
            if name.starts_with("rustynet_control_") {
                assert!(
                    exposed.contains(&name),
                    "{file}: {name} is not a metric control exports"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} control metric uses found");
}
