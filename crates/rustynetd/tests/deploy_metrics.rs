//! The shipped alert rules and Grafana dashboard only use metrics the
//! daemon really exports (control's are checked by rustynet-control's
//! tests, the relay's by rustynet-relay's), and the dashboard is valid JSON
//! with queries.
#![allow(clippy::unwrap_used, clippy::panic)]

use rustynet_service::metric_names;
use rustynetd::metrics::Metrics;

fn deploy(file: &str) -> String {
    let path = format!("{}/../../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Metrics with a value in every family (an empty family is not encoded),
/// as a daemon has them after a while.
fn populated() -> Metrics {
    use rustynet_tunnel::{PathKind, PeerPath, PeerStats, RelayStatus, TunnelStats};
    let m = Metrics::default();
    m.set_state(
        rustynet_proto::ipc::DataplaneState::DataplaneApplied,
        1,
        true,
        true,
    );
    m.apply_ok(std::time::Duration::from_millis(3));
    m.apply_failed("dns");
    m.map_rejected(&rustynet_proto::VerifyError::BadSignature);
    m.fail_closed_entered();
    m.exit_failure("plan");
    let mut stats = TunnelStats {
        peers: vec![PeerStats {
            public_key: rustynet_tunnel::TunnelPublicKey([7; 32]),
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            path: PeerPath {
                kind: PathKind::Relay,
                ..Default::default()
            },
        }],
        relays: vec![RelayStatus::default()],
        ..Default::default()
    };
    stats.path_switches = vec![("pong", 1)];
    m.set_paths(&stats);
    m.set_peers(&[rustynetd::metrics::PeerSample {
        name: "bob".into(),
        handshake_age: Some(std::time::Duration::from_secs(5)),
        rx_bytes: 1,
        tx_bytes: 2,
    }]);
    m.set_dns(&rustynetd::dns_manager::DnsCounters::default());
    m
}

#[test]
fn every_daemon_metric_in_the_rules_and_dashboard_exists() {
    let fresh = Metrics::default().encode();
    assert!(
        fresh.contains("rustynet_apply_failure_total{reason=\"dns\"} 0"),
        "apply failure series exist before the first failure:\n{fresh}"
    );
    let exposed = metric_names::exposed(&populated().encode());
    assert!(exposed.contains(&"rustynet_fail_closed_entered_total".to_owned()));
    let mut checked = 0;
    for file in [
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/rustynet.json",
    ] {
        for name in metric_names::used(&deploy(file), "rustynet_") {
            if name.starts_with("rustynet_control_") || name.starts_with("rustynet_relay_") {
                continue;
            }
            assert!(
                exposed.contains(&name),
                "{file}: {name} is not a metric rustynetd exports"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} daemon metric uses found");
}

#[test]
fn the_dashboard_is_json_with_a_query_in_every_panel() {
    let dash: serde_json::Value = serde_json::from_str(&deploy("grafana/rustynet.json")).unwrap();
    assert_eq!(dash["uid"], "rustynet");
    let panels = dash["panels"].as_array().unwrap();
    let mut queries = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("rustynet_")));
            queries += 1;
        }
    }
    assert!(queries >= 30, "{queries} queries");
    // The list: paths per peer, relay bytes, handshake age, DNS,
    // apply failures, control streams and maps.
    let text = deploy("grafana/rustynet.json");
    for needed in [
        "rustynet_peers_by_path",
        "rustynet_relay_forwarded_bytes_total",
        "rustynet_peer_handshake_age_seconds",
        "rustynet_dns_queries_total",
        "rustynet_apply_failure_total",
        "rustynet_control_map_streams",
        "rustynet_control_maps_sent_total",
    ] {
        assert!(text.contains(needed), "dashboard lacks {needed}");
    }
}
