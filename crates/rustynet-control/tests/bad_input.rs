//! Every kind of bad input gets a clear error, a non-2xx status and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, POLICY_ALL, post_head_only, raw_post};
use rustynet_control::store::Store as _;
use rustynet_proto::control_api::{AUTH_HEADER, RequestAuth, paths};
use rustynet_proto::{NodeId, NodeSigningKey};

fn node_count(h: &Harness) -> usize {
    h.data.open_store().unwrap().nodes().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_preauth_keys_are_refused_without_state_change() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let client = h.client();
    let k1 = NodeSigningKey::from_seed(&[1; 32]);

    let err = client
        .register(&k1, &h.register_request("rnk_wrong", "a", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("auth_key_invalid"));

    let short = h.preauth("alice", true, Some(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = client
        .register(&k1, &h.register_request(&short, "a", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("auth_key_expired"));
    assert_eq!(node_count(&h), 0);

    let once = h.preauth("alice", false, None);
    client
        .register(&k1, &h.register_request(&once, "a", 1))
        .await
        .unwrap();
    let k2 = NodeSigningKey::from_seed(&[2; 32]);
    let err = client
        .register(&k2, &h.register_request(&once, "b", 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("auth_key_used"));
    assert_eq!(node_count(&h), 1);

    // Same node keys again (with a good reusable key): conflict, nothing spent.
    let multi = h.preauth("alice", true, None);
    let err = client
        .register(&k1, &h.register_request(&multi, "a", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("duplicate_key"));
    assert_eq!(node_count(&h), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_unsigned_and_forged_requests() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let signer = NodeSigningKey::from_seed(&[1; 32]);
    let sign = |body: &[u8], node: u64, path: &str, key: &NodeSigningKey, nonce: u8| {
        let ts = rustynet_control::now_unix_ms();
        RequestAuth::sign(key, NodeId(node), "POST", path, body, ts, [nonce; 16]).to_header()
    };

    // Not JSON.
    let body = b"{not json".to_vec();
    let (status, text) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, sign(&body, 0, paths::REGISTER, &signer, 1))],
        body,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad_request"));

    // Unknown field.
    let mut v = serde_json::to_value(h.register_request(&key, "a", 1)).unwrap();
    v["surprise"] = serde_json::json!(1);
    let body = serde_json::to_vec(&v).unwrap();
    let (status, _) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, sign(&body, 0, paths::REGISTER, &signer, 2))],
        body,
    )
    .await;
    assert_eq!(status, 400);

    // Oversized: refused on the declared length, before any body is read.
    let (status, text) = post_head_only(&h, paths::REGISTER, 200 * 1024).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("too_large"), "{text}");

    // Unsigned, then signed by a key other than the one registered.
    let body = serde_json::to_vec(&h.register_request(&key, "a", 1)).unwrap();
    let (status, text) = raw_post(&h, paths::REGISTER, &[], body.clone()).await;
    assert_eq!(status, 401);
    assert!(text.contains("missing_auth"));
    let other = NodeSigningKey::from_seed(&[9; 32]);
    let (status, text) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, sign(&body, 0, paths::REGISTER, &other, 3))],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(text.contains("bad_signature"));

    // Bad hostname and host bits in a route.
    let mut req = h.register_request(&key, "bad_name!", 1);
    let body = serde_json::to_vec(&req).unwrap();
    let (status, text) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, sign(&body, 0, paths::REGISTER, &signer, 4))],
        body,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("hostname"));
    req.hostname = "ok".into();
    req.advertise_routes = vec!["192.168.1.1/24".parse().unwrap()];
    let body = serde_json::to_vec(&req).unwrap();
    let (status, text) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, sign(&body, 0, paths::REGISTER, &signer, 5))],
        body,
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("host bits"));
    assert_eq!(node_count(&h), 0);

    // A proper enrollment, then a replay of the same signed request.
    let body = serde_json::to_vec(&h.register_request(&key, "a", 1)).unwrap();
    let header = sign(&body, 0, paths::REGISTER, &signer, 6);
    let (status, _) = raw_post(
        &h,
        paths::REGISTER,
        &[(AUTH_HEADER, header.clone())],
        body.clone(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = raw_post(&h, paths::REGISTER, &[(AUTH_HEADER, header)], body).await;
    assert_eq!(status, 401);
    assert!(text.contains("replayed_request"));
    assert_eq!(node_count(&h), 1);

    // Unknown node.
    let body = br#"{"version":1,"since_generation":0}"#.to_vec();
    let ghost = NodeSigningKey::from_seed(&[7; 32]);
    let (status, text) = raw_post(
        &h,
        paths::MAP_STREAM,
        &[(AUTH_HEADER, sign(&body, 4242, paths::MAP_STREAM, &ghost, 7))],
        body,
    )
    .await;
    assert_eq!(status, 401);
    assert!(text.contains("unknown_node"));

    // Unknown endpoint.
    let (status, text) = raw_post(&h, "/v1/nope", &[], vec![]).await;
    assert_eq!(status, 404);
    assert!(text.contains("not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_changes_nothing() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let before = rustynet_control::admin::policy_get(&h.data).unwrap();
    let path = h.dir.path().join("bad.json");
    for bad in [
        "{",
        r#"{"acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]}"#,
        r#"{"unknown_key": 1}"#,
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:99999"]}]}"#,
        r#"{"dns": {"split": {"rustynet.internal": ["192.0.2.53"]}}}"#,
        r#"{"dns": {"split": {"svc.rustynet.internal": ["192.0.2.53"]}}}"#,
    ] {
        std::fs::write(&path, bad).unwrap();
        let err = rustynet_control::admin::policy_set(&h.data, &path).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        rustynet_control::admin::policy_get(&h.data).unwrap(),
        before
    );
    // A tag the user does not own cannot go on a pre-auth key.
    let err =
        rustynet_control::admin::preauth_create(&h.data, "bob", &["tag:exit".into()], false, None)
            .unwrap_err();
    assert!(err.to_string().contains("tag:exit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_client_is_refused() {
    use rustls_pki_types::pem::PemObject as _;
    let h = Harness::start(Duration::from_secs(600)).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(h.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustynet_control::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let err = connector.connect(name, tcp).await.unwrap_err();
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("protocol") || text.contains("version"),
        "{text}"
    );
    // And a client that does not trust our CA cannot talk to control at all.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let client = rustynet_control_client::ControlClient::new(&h.url, &other.cert.pem()).unwrap();
    assert!(matches!(
        client.health().await,
        Err(rustynet_control_client::ClientError::Tls(_))
    ));
}
