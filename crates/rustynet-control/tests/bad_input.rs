//! Every kind of bad input gets a clear error, a non-2xx status and changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, POLICY_ALL, post_head_only, raw_post};
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

    // An unknown node gets exactly the answer a known node with a bad
    // signature gets: no oracle for which node ids exist.
    let body = br#"{"version":1,"since_generation":0}"#.to_vec();
    let ghost = NodeSigningKey::from_seed(&[7; 32]);
    let unknown = raw_post(
        &h,
        paths::MAP_STREAM,
        &[(AUTH_HEADER, sign(&body, 4242, paths::MAP_STREAM, &ghost, 7))],
        body.clone(),
    )
    .await;
    let forged = raw_post(
        &h,
        paths::MAP_STREAM,
        &[(AUTH_HEADER, sign(&body, 1, paths::MAP_STREAM, &ghost, 8))],
        body,
    )
    .await;
    assert_eq!(unknown.0, 401);
    assert!(unknown.1.contains("bad_signature"), "{}", unknown.1);
    assert_eq!(unknown, forged);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_timestamps_are_refused_as_stale() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let signer = NodeSigningKey::from_seed(&[1; 32]);
    let body = serde_json::to_vec(&h.register_request(&key, "a", 1)).unwrap();
    let now = rustynet_control::now_unix_ms();
    // i64::MIN + now used to wrap into the window in release builds (and
    // panic the handler in debug ones).
    for (nonce, ts) in [
        (1u8, i64::MIN),
        (2, i64::MAX),
        (3, i64::MIN + now),
        (4, now - 121_000),
    ] {
        let auth = RequestAuth::sign(
            &signer,
            NodeId(0),
            "POST",
            paths::REGISTER,
            &body,
            ts,
            [nonce; 16],
        );
        let (status, text) = raw_post(
            &h,
            paths::REGISTER,
            &[(AUTH_HEADER, auth.to_header())],
            body.clone(),
        )
        .await;
        assert_eq!(status, 401, "ts {ts}: {text}");
        assert!(text.contains("stale_request"), "ts {ts}: {text}");
    }
    assert_eq!(node_count(&h), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_pointing_a_peer_at_itself_are_refused() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let client = h.client();
    let bad = [
        "[::ffff:127.0.0.1]:41641",
        "127.0.0.1:41641",
        "100.100.100.100:53",
        "100.64.0.7:41641",
        "169.254.169.254:80",
        "[fe80::1]:41641",
        "0.0.0.0:41641",
        "239.0.0.1:41641",
        "[::]:41641",
    ];
    let signer = NodeSigningKey::from_seed(&[1; 32]);
    for ep in bad {
        let mut req = h.register_request(&key, "a", 1);
        req.endpoints = vec![ep.parse().unwrap()];
        let err = client.register(&signer, &req).await.unwrap_err();
        assert_eq!(err.code(), Some("bad_request"), "{ep}");
    }
    assert_eq!(node_count(&h), 0);
    let node = h.enroll(&key, "a", 1).await;
    for ep in bad {
        let update = rustynet_proto::control_api::UpdateRequest {
            version: rustynet_proto::control_api::API_VERSION,
            endpoints: Some(vec![ep.parse().unwrap()]),
            ..Default::default()
        };
        let err = client
            .update(&node.key, node.resp.node_id, &update)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("bad_request"), "{ep}");
    }
    let stored = h.data.open_store().unwrap().nodes().unwrap();
    assert_eq!(
        stored[0].endpoints,
        vec!["192.0.2.1:41641".parse().unwrap()]
    );
}

/// 1,000 rules, each 100 ports of TCP and UDP from every node: 200
/// combinations a rule with two nodes (far within its bound), 400,000 set
/// elements a map (past the cap). Valid as a policy; every map refused.
fn too_wide_policy() -> String {
    let acls: Vec<_> = (0..1000)
        .map(|k| {
            let mut ports: Vec<String> = (0..99).map(|j| (10 * j + 1).to_string()).collect();
            ports.push((2000 + k).to_string());
            serde_json::json!({"action": "accept", "src": ["*"],
                "dst": [format!("*:{}", ports.join(","))], "proto": "any"})
        })
        .collect();
    serde_json::json!({ "acls": acls }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_past_the_limits_is_never_signed() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let _b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut stream = a.stream(&h).await;
    common::next_map(&mut stream, &a, &mut hw).await;
    // Stored behind admin's back (an older admin binary): the server
    // compiles it, but signs no map from it.
    h.data
        .open_store()
        .unwrap()
        .set_policy(&too_wide_policy(), 1)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.set_policy("{}");
    // next_map verifies every map it reads: a refused one fails the test.
    let next = common::next_map(&mut stream, &a, &mut hw).await;
    assert!(next.netmap().peers.is_empty());
    assert!(next.netmap().packet_filter.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_whose_maps_nodes_would_refuse_is_not_stored() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let _b = h.enroll(&key, "b", 2).await;
    let mut hw = 0;
    let mut stream = a.stream(&h).await;
    common::next_map(&mut stream, &a, &mut hw).await;
    let before = rustynet_control::admin::policy_get(&h.data).unwrap();
    let path = h.dir.path().join("wide.json");
    std::fs::write(&path, too_wide_policy()).unwrap();
    let err = rustynet_control::admin::policy_set(&h.data, &path).unwrap_err();
    assert!(err.to_string().contains("would be refused"), "{err}");
    assert!(err.to_string().contains("set elements"), "{err}");
    assert_eq!(
        rustynet_control::admin::policy_get(&h.data).unwrap(),
        before
    );
    // Nothing changed: the next (valid) change still reaches the stream.
    h.set_policy("{}");
    common::map_until(&mut stream, &a, &mut hw, |m| m.netmap().peers.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_keys_and_tags_no_longer_owned_are_refused_at_use() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let client = h.client();
    let signer = NodeSigningKey::from_seed(&[1; 32]);
    let key = h.preauth("alice", true, None);
    let id = rustynet_control::admin::preauth_list(&h.data).unwrap()[0].id;
    rustynet_control::admin::preauth_revoke(&h.data, id).unwrap();
    let err = client
        .register(&signer, &h.register_request(&key, "a", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("auth_key_revoked"));
    // A tagged key made while alice owned tag:exit...
    let (tagged, _) =
        rustynet_control::admin::preauth_create(&h.data, "alice", &["tag:exit".into()], true, None)
            .unwrap();
    // ...is refused once the policy gives the tag to someone else.
    h.set_policy(
        r#"{"tag_owners": {"tag:exit": ["bob"]},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    );
    let err = client
        .register(&signer, &h.register_request(&tagged, "a", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("tag_not_owned"), "{err}");
    assert_eq!(node_count(&h), 0);
    h.set_policy(POLICY_ALL);
    client
        .register(&signer, &h.register_request(&tagged, "a", 1))
        .await
        .unwrap();
    assert_eq!(node_count(&h), 1);
}
