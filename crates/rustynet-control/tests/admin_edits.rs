//! Admin edits against a running server: `nodes rename` and `nodes tag`
//! re-issue maps, `policy check` reports who gains or loses access and
//! changes nothing, `nodes list` shows online/last seen, and `cert reissue`
//! gives the server new names while enrolled nodes keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Harness, POLICY_ALL, map_until};
use rustynet_control::node_admin;
use rustynet_control::server::{ServeOptions, start};
use rustynet_control_client::ControlClient;

fn control(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
        .args(args)
        .env("RUSTYNET_LOG", "warn")
        .env_remove("RUSTYNET_CONTROL_DATA_DIR")
        .output()
        .unwrap()
}

fn data_dir(h: &Harness) -> String {
    h.dir.path().join("control").to_string_lossy().into_owned()
}

const POLICY_TAGS: &str = r#"{
  "tag_owners": {"tag:web": ["alice"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:443"], "proto": "tcp"}]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_tag_reissue_maps_and_bad_input_changes_nothing() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_TAGS);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut stream = b.stream(&h).await;
    // No tags: b sees nobody.
    map_until(&mut stream, &b, &mut hw, |m| {
        m.body.payload.peers.is_empty()
    })
    .await;

    // Tagging a gives b a peer (b may reach a on 443).
    let n = node_admin::nodes_tag(&h.data, "a", &["tag:web".into()]).unwrap();
    assert_eq!(n.tags, ["tag:web"]);
    let map = map_until(&mut stream, &b, &mut hw, |m| {
        m.body.payload.peers.len() == 1
    })
    .await;
    assert_eq!(map.body.payload.peers[0].node_id, a.resp.node_id);

    // Renaming a reaches b's map: its peer has the new name.
    node_admin::nodes_rename(&h.data, "a", "web-1").unwrap();
    let map = map_until(&mut stream, &b, &mut hw, |m| {
        m.body
            .payload
            .peers
            .first()
            .is_some_and(|p| p.hostname == "web-1")
    })
    .await;
    assert_eq!(
        map.body.payload.peers[0].dns_name,
        "web-1.rustynet.internal"
    );

    // Bad input: a clear error, nothing changes.
    let bad = [
        node_admin::nodes_rename(&h.data, "web-1", "b").unwrap_err(), // taken
        node_admin::nodes_rename(&h.data, "web-1", "Bad_Name!").unwrap_err(),
        node_admin::nodes_rename(&h.data, "nope", "x").unwrap_err(),
        node_admin::nodes_tag(&h.data, "b", &["web".into()]).unwrap_err(),
        node_admin::nodes_tag(&h.data, "b", &["tag:db".into()]).unwrap_err(), // not owned
    ];
    let text: Vec<String> = bad.iter().map(ToString::to_string).collect();
    assert!(text[0].contains("already named \"b\""), "{text:?}");
    assert!(text[1].contains("invalid name"), "{text:?}");
    assert!(text[2].contains("no node named"), "{text:?}");
    assert!(text[3].contains("tag:NAME"), "{text:?}");
    assert!(text[4].contains("not owned"), "{text:?}");
    let nodes = rustynet_control::admin::nodes_list(&h.data).unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.hostname.as_str()).collect();
    assert_eq!(names, ["web-1", "b"]);
    assert!(nodes[1].tags.is_empty());

    // The CLI, with the data directory from the environment: the table
    // shows b online (its stream is open) and a never seen on a stream.
    let out = Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
        .args(["nodes", "list"])
        .env("RUSTYNET_LOG", "warn")
        .env("RUSTYNET_CONTROL_DATA_DIR", data_dir(&h))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("ONLINE"), "{table}");
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing: {table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("b")[5], "yes", "{table}");
    assert_eq!(row("web-1")[3], "alice", "{table}");
    let out = control(&["nodes", "tag", "b", "tag:web", "--data-dir", &data_dir(&h)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = control(&["nodes", "rename", "b", "-bad-", "--data-dir", &data_dir(&h)]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_reports_gains_and_losses_and_changes_nothing() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    h.enroll(&key, "laptop", 1).await;
    h.enroll(&key, "web", 2).await;
    let before = rustynet_control::admin::policy_get(&h.data).unwrap();
    let file = h.dir.path().join("new.hujson");
    std::fs::write(
        &file,
        r#"{
  // Only ssh to web from now on.
  "acls": [
    {"action": "accept", "src": ["node:laptop"], "dst": ["node:web:22"], "proto": "tcp",},
  ],
}"#,
    )
    .unwrap();
    let f = file.to_string_lossy().into_owned();
    let out = control(&["policy", "check", &f, "--data-dir", &data_dir(&h)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("+ laptop -> web tcp:22"), "{text}");
    assert!(text.contains("- laptop -> web any"), "{text}");
    assert!(text.contains("- web -> laptop any"), "{text}");
    let out = control(&["policy", "check", &f, "--json", "--data-dir", &data_dir(&h)]);
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diff["gained"], serde_json::json!(["laptop -> web tcp:22"]));
    assert_eq!(diff["lost"].as_array().unwrap().len(), 2);
    // Nothing changed.
    assert_eq!(
        rustynet_control::admin::policy_get(&h.data).unwrap(),
        before
    );
    // The same policy again: no change reported.
    let same = h.dir.path().join("same.json");
    std::fs::write(&same, POLICY_ALL).unwrap();
    let out = control(&[
        "policy",
        "check",
        same.to_str().unwrap(),
        "--data-dir",
        &data_dir(&h),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nobody gains or loses"));
    // Invalid: exit 1, the place named, nothing changed.
    std::fs::write(
        &file,
        r#"{"acls": [{"action": "accept", "src": ["group:x"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    let out = control(&["policy", "check", &f, "--data-dir", &data_dir(&h)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("group:x"));
    assert_eq!(
        rustynet_control::admin::policy_get(&h.data).unwrap(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_reissue_keeps_enrolled_nodes_working() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let ca_before = std::fs::read(h.data.ca_cert()).unwrap();
    let out = control(&[
        "cert",
        "reissue",
        "--san",
        "127.0.0.1",
        "--san",
        "control.example",
        "--data-dir",
        &data_dir(&h),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(h.data.ca_cert()).unwrap(), ca_before);
    // A bad name writes nothing.
    let cert = std::fs::read(h.data.server_cert()).unwrap();
    let out = control(&[
        "cert",
        "reissue",
        "--san",
        "bad name!",
        "--data-dir",
        &data_dir(&h),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(h.data.server_cert()).unwrap(), cert);

    // `serve` restarted on the same data directory: the node, with the CA
    // it pinned at enrollment and its keys, gets its maps without
    // re-enrolling.
    let server = start(&h.data, ServeOptions::new("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", server.addr.port());
    let client = ControlClient::new(&url, &h.ca_pem).unwrap();
    let mut stream = client.map_stream(&a.key, a.resp.node_id, 0).await.unwrap();
    let mut hw = 0;
    map_until(&mut stream, &a, &mut hw, |_| true).await;
    // The new name is served; a name the certificate no longer carries is not.
    let url = format!("https://control.example:{}", server.addr.port());
    assert!(
        tls_name_ok(&h, server.addr, "control.example").await,
        "{url}"
    );
    assert!(!tls_name_ok(&h, server.addr, "localhost").await);
    server.shutdown();
}

/// Whether a TLS 1.3 handshake to `addr` verifying `name` against the CA
/// succeeds.
async fn tls_name_ok(h: &Harness, addr: std::net::SocketAddr, name: &str) -> bool {
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
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(name, tcp).await.is_ok()
}
