//! CI smoke run of the load generator: 1,000 simulated nodes enroll over
//! real TLS 1.3 with a server in this process, hold their map streams and
//! verify every map. Asserts correctness only (timing goals are the
//! benchmark's, `scripts/bench/control_scale.sh`): every node streams, every
//! node gets its new map after a policy change touching all of them, every
//! node a rename affects gets its map, and no map is refused (no generation
//! went backwards or repeated, every signature verified).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rustynet_control_load::scenario::{Config, run};
use rustynet_control_load::server::ServerSpec;

const NODES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nodes_hold_streams_and_get_every_change() {
    // The server runs in this process: what it logs (why it closed a
    // stream, a store error) shows in the output of a failed run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,rustynet_control=info",
        ))
        .with_test_writer()
        .try_init();
    let fds = rustynet_control_load::raise_fd_limit(8_192).unwrap();
    assert!(fds >= 2 * NODES as u64 + 256, "open-file limit {fds}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        nodes: NODES,
        per_source: 100,
        work_dir: dir.path().to_owned(),
        data_dir: dir.path().join("data"),
        server: ServerSpec::InProcess,
        database: None,
        idle_window: Duration::from_secs(1),
        quiet: Duration::from_millis(1500),
        phase_deadline: Duration::from_secs(60),
        labels: serde_json::json!({"run": "ci smoke"}),
    };
    let (figures, v) = run(&cfg).await.unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&figures).unwrap());
    assert_eq!(
        v.streaming, NODES,
        "every node holds a stream with a map; why streams ended: {}",
        figures["maps"]["stream_ends"]
    );
    assert!(v.policy_change_ok, "every node got the policy change");
    assert!(
        v.single_affected > 1,
        "the renamed node has peers: {}",
        v.single_affected
    );
    assert!(v.rename_ok, "every node the rename affects got its map");
    assert!(
        v.endpoint_update_ok,
        "every peer of the node that reported an endpoint got its map"
    );
    assert_eq!(v.backwards, 0, "no generation went backwards or repeated");
    assert_eq!(v.verify_failures, 0, "every map verified");
    assert_eq!(
        figures["maps"]["reconnects"], 0,
        "no stream dropped; why streams ended: {}",
        figures["maps"]["stream_ends"]
    );
}
