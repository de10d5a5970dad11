//! Two `rustynet-control serve` processes (replicas) sharing one PostgreSQL
//! database and one copied data directory: a node enrolled through either
//! streams from either, a change made through one reaches nodes streaming
//! from the other, and when a replica is killed its nodes carry on from the
//! other with generations that never go backwards. Needs the throwaway
//! cluster of `scripts/ci/with_postgres.sh` (`RUSTYNET_TEST_POSTGRES`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, POLICY_ALL, map_until};
use rustynet_control::admin;
use rustynet_control::datadir::DataDir;
use rustynet_control::store::DatabaseUrl;
use rustynet_control_client::{ControlClient, MapStream};
use rustynet_proto::control_api::{API_VERSION, RegisterRequest, SecretString};
use rustynet_proto::{NodeSigningKey, TunnelPublicKey};

/// A database of this test's own on the throwaway cluster, dropped at the
/// end. The driver's blocking client may not run on the async runtime, so
/// this runs on a plain thread.
struct TestDb {
    admin: String,
    name: String,
}

impl TestDb {
    fn new() -> Self {
        let Ok(admin) = std::env::var("RUSTYNET_TEST_POSTGRES") else {
            panic!(
                "RUSTYNET_TEST_POSTGRES is not set: this test needs a PostgreSQL server. Run it \
                 through scripts/ci/with_postgres.sh (a throwaway cluster on loopback), e.g. \
                 scripts/ci/with_postgres.sh cargo test -p rustynet-control --test replicas_postgres"
            );
        };
        let name = format!("rn_replicas_{}", std::process::id());
        let sql = format!("CREATE DATABASE {name}");
        let conn = admin.clone();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&conn, postgres::NoTls).unwrap();
            c.batch_execute(&sql).unwrap();
        })
        .join()
        .unwrap();
        Self { admin, name }
    }

    fn url(&self) -> String {
        format!("{} dbname={}", self.admin, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (conn, sql) = (
            self.admin.clone(),
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&conn, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}

/// One `serve` process, killed when dropped.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn spawn(dir: &Path, database: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            url: format!("https://{addr}"),
        }
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    ca_pem: String,
}

impl Cluster {
    fn client(&self, replica: &Replica) -> ControlClient {
        ControlClient::new(&replica.url, &self.ca_pem).unwrap()
    }

    async fn enroll(&self, through: &Replica, auth_key: &str, host: &str, seed: u8) -> Node {
        let key = NodeSigningKey::from_seed(&[seed; 32]);
        let req = RegisterRequest {
            path_key: None,
            version: API_VERSION,
            auth_key: SecretString::new(auth_key.to_owned()),
            hostname: host.to_owned(),
            node_key: TunnelPublicKey([seed; 32]),
            signing_key: key.public(),
            endpoints: vec![format!("192.0.2.{seed}:41641").parse().unwrap()],
            advertise_exit_node: false,
            advertise_routes: vec![],
            renew: None,
        };
        let resp = self.client(through).register(&key, &req).await.unwrap();
        Node { key, resp }
    }

    async fn stream(&self, from: &Replica, node: &Node) -> MapStream {
        self.client(from)
            .map_stream(&node.key, node.resp.node_id, 0)
            .await
            .unwrap()
    }
}

fn set_policy(data: &DataDir, dir: &Path, json: &str) {
    let path = dir.join("policy.json");
    std::fs::write(&path, json).unwrap();
    admin::policy_set(data, &path).unwrap();
}

const POLICY_SPLIT_DNS: &str = r#"{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "dns": {"split": {"corp.example": ["203.0.113.54"]}}
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_nodes_changes_and_generations() {
    let db = TestDb::new();
    let database = DatabaseUrl::parse(&db.url()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let data = DataDir::new(&dir_a).with_database(Some(database));
    data.init(
        "rustynet.internal",
        &["localhost".into(), "127.0.0.1".into()],
    )
    .unwrap();
    // The second replica gets a copy of the keys, as docs/scaling.md says.
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&dir_a)
        .arg(&dir_b)
        .status()
        .unwrap();
    assert!(copied.success());
    let cluster = Cluster {
        ca_pem: std::fs::read_to_string(data.ca_cert()).unwrap(),
    };
    set_policy(&data, tmp.path(), POLICY_ALL);
    let (key, _) = admin::preauth_create(&data, "alice", &[], true, None).unwrap();
    let key = key.to_string();
    let a = Replica::spawn(&dir_a, &db.url());
    let mut b = Replica::spawn(&dir_b, &db.url());

    // Enrolled through different replicas, one node streams from B.
    let n1 = cluster.enroll(&a, &key, "one", 1).await;
    let n2 = cluster.enroll(&b, &key, "two", 2).await;
    assert_ne!(n1.resp.tunnel_ip, n2.resp.tunnel_ip);
    let mut hw = 0;
    let mut s1 = cluster.stream(&b, &n1).await;
    map_until(&mut s1, &n1, &mut hw, |m| m.netmap().peers.len() == 1).await;

    // An enrollment through A reaches the node streaming from B.
    let started = Instant::now();
    cluster.enroll(&a, &key, "three", 3).await;
    map_until(&mut s1, &n1, &mut hw, |m| m.netmap().peers.len() == 2).await;
    let enrolled_ms = started.elapsed().as_millis();

    // A policy change (an admin command on the shared database) too.
    let started = Instant::now();
    set_policy(&data, tmp.path(), POLICY_SPLIT_DNS);
    map_until(&mut s1, &n1, &mut hw, |m| !m.netmap().dns.split.is_empty()).await;
    let policy_ms = started.elapsed().as_millis();
    println!(
        "enrollment via A seen on B: {enrolled_ms} ms; policy change seen on B: {policy_ms} ms"
    );
    assert!(
        enrolled_ms < 3000 && policy_ms < 3000,
        "changes took {enrolled_ms} / {policy_ms} ms to cross replicas"
    );

    // B dies mid-stream: the node's stream ends, and from A it gets the
    // same network under a newer generation (map_until refuses any
    // generation not above the last one seen from B).
    let before = hw;
    b.kill();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = s1.next_frame().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream from the killed replica did not end"
    );
    let mut s1 = cluster.stream(&a, &n1).await;
    let map = map_until(&mut s1, &n1, &mut hw, |_| true).await;
    assert!(hw > before, "generation {hw} is not newer than {before}");
    assert_eq!(map.netmap().peers.len(), 2);
    assert!(!map.netmap().dns.split.is_empty());
}
