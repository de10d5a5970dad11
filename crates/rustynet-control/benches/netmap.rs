//! Compile + sign network maps for 1,000 and 10,000 nodes under a 100-rule
//! policy: the whole network ("full") and one node's map after a change
//! ("delta"). Writes `artifacts/bench/control_netmap.json`.
//!
//! Topology (fixed, recorded in the output): 90% client devices in 50 teams,
//! 10% servers tagged into 50 services; rule i lets team i reach service i on
//! 443/tcp and service i+1 on 22/tcp (100 rules). Group sizes grow with the
//! network, so maps get bigger as N grows; the output records the average
//! number of peers and bytes per map.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rustynet_control::map_json::{PeerFragments, seal_netmap_json};
use rustynet_control::netmap_builder::{LiveNodes, node_facts};
use rustynet_control::store::NodeRecord;
use rustynet_policy::{NodeFacts, Policy, PolicyIndex};
use rustynet_proto::control_api::map_frame_pieces;
use rustynet_proto::{NodeId, NodeSigningKey, SigningPublicKey, TunnelPublicKey};

const TEAMS: usize = 50;
const SUFFIX: &str = "rustynet.internal";
const SERVICES: usize = 50;

fn policy() -> Policy {
    let mut groups = serde_json::Map::new();
    let mut owners = serde_json::Map::new();
    for t in 0..TEAMS {
        groups.insert(
            format!("group:team{t}"),
            serde_json::json!([format!("user{t}")]),
        );
    }
    for s in 0..SERVICES {
        owners.insert(format!("tag:svc{s}"), serde_json::json!(["ops"]));
    }
    let mut acls = Vec::new();
    for i in 0..TEAMS {
        acls.push(
            serde_json::json!({"action": "accept", "src": [format!("group:team{i}")],
            "dst": [format!("tag:svc{i}:443")], "proto": "tcp"}),
        );
        acls.push(
            serde_json::json!({"action": "accept", "src": [format!("group:team{i}")],
            "dst": [format!("tag:svc{}:22", (i + 1) % SERVICES)], "proto": "tcp"}),
        );
    }
    let doc = serde_json::json!({"groups": groups, "tag_owners": owners, "acls": acls});
    Policy::parse(&doc.to_string()).expect("bench policy is valid")
}

fn nodes(n: usize) -> LiveNodes {
    (0..n)
        .map(|i| {
            let id = NodeId(i as u64 + 1);
            let server = i % 10 == 0;
            let (user, tags) = if server {
                (
                    "ops".to_owned(),
                    vec![format!("tag:svc{}", (i / 10) % SERVICES)],
                )
            } else {
                (format!("user{}", i % TEAMS), vec![])
            };
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32);
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let record = NodeRecord {
                id,
                hostname: format!("node{i}"),
                requested_hostname: format!("node{i}"),
                user,
                tags,
                tunnel_ip: ip,
                node_key: TunnelPublicKey(key),
                signing_key: SigningPublicKey(key),
                endpoints: vec![format!("198.51.100.{}:41641", i % 250 + 1).parse().unwrap()],
                advertise_exit_node: false,
                advertised_routes: vec![],
                lan_access: false,
                created_at: 1_800_000_000,
                expired_at: None,
                last_seen: None,
                path_key: None,
                home_relay: None,
                admin_routes: Default::default(),
                key_expires_at: None,
            };
            (id, Arc::new(record))
        })
        .collect()
}

struct Stats {
    p50: f64,
    p95: f64,
    min: f64,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        p50: at(0.5),
        p95: at(0.95),
        min: ms(samples[0]),
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let key = NodeSigningKey::from_seed(&[42; 32]);
    let policy = policy();
    let online: Arc<HashSet<NodeId>> = Arc::default();
    let mut runs = Vec::new();
    let sizes: &[usize] = if measuring { &[1_000, 10_000] } else { &[200] };
    for &n in sizes {
        let nodes = Arc::new(nodes(n));
        let facts: Vec<NodeFacts> = nodes.values().map(|n| node_facts(n)).collect();
        // What the map streams do after a change that touches every map:
        // a new snapshot (empty fragment slots), then each node's map JSON,
        // sealed and framed for the wire.
        let full_once = || {
            let index = PolicyIndex::new(&policy, &facts);
            let fragments = PeerFragments::new(SUFFIX, nodes.clone(), online.clone());
            let ids: Vec<NodeId> = nodes.keys().copied().collect();
            ids.par_iter()
                .map(|id| {
                    let view = index.view(*id).expect("node is in the index");
                    let map = fragments.netmap_json(*id, &view).expect("node is live");
                    let map_len = map.payload().len();
                    let sealed = seal_netmap_json(&key, map, *id, 7, 1_800_000_000, 1800);
                    let frame: usize = map_frame_pieces(sealed.sealed, &[])
                        .iter()
                        .map(|p| p.len())
                        .sum();
                    (view.visible_peers.len(), map_len, frame)
                })
                .collect::<Vec<_>>()
        };
        let shape = full_once();
        let avg_peers = shape.iter().map(|s| s.0).sum::<usize>() as f64 / n as f64;
        let avg_bytes = shape.iter().map(|s| s.1).sum::<usize>() as f64 / n as f64;
        let avg_frame = shape.iter().map(|s| s.2).sum::<usize>() as f64 / n as f64;
        let reps = match (measuring, n <= 1_000) {
            (false, _) => 1,
            (true, true) => 30,
            (true, false) => 16,
        };
        let full: Vec<Duration> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(full_once());
                t.elapsed()
            })
            .collect();
        // Delta: one node changed, so a new snapshot (with empty fragment
        // slots) is published and its map (and each affected peer's, one at
        // a time as each stream does) is rebuilt from the index, re-signed
        // and framed. The first map after a change pays for serializing its
        // peers' entries, as measured here.
        let index = PolicyIndex::new(&policy, &facts);
        let probe = NodeId(2); // a client device
        let delta: Vec<Duration> = (0..if measuring { 300 } else { 3 })
            .map(|_| {
                let t = Instant::now();
                let fragments = PeerFragments::new(SUFFIX, nodes.clone(), online.clone());
                let view = index.view(probe).expect("node is in the index");
                let map = fragments.netmap_json(probe, &view).expect("node is live");
                let sealed = seal_netmap_json(&key, map, probe, 8, 1_800_000_000, 1800);
                std::hint::black_box(map_frame_pieces(sealed.sealed, &[]));
                t.elapsed()
            })
            .collect();
        let index_build: Vec<Duration> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(PolicyIndex::new(&policy, &facts));
                t.elapsed()
            })
            .collect();
        let (f, d, ib) = (stats(full), stats(delta), stats(index_build));
        println!(
            "nodes={n} rules=100 avg_peers={avg_peers:.1} avg_map_bytes={avg_bytes:.0} avg_frame_bytes={avg_frame:.0} \
             full p50={:.1}ms p95={:.1}ms | delta p50={:.3}ms p95={:.3}ms | index p50={:.1}ms",
            f.p50, f.p95, d.p50, d.p95, ib.p50
        );
        runs.push(serde_json::json!({
            "nodes": n, "rules": 100, "avg_peers_per_map": avg_peers, "avg_map_json_bytes": avg_bytes,
            "avg_frame_bytes": avg_frame,
            "full_ms": {"p50": f.p50, "p95": f.p95, "min": f.min, "samples": reps},
            "delta_one_map_ms": {"p50": d.p50, "p95": d.p95, "min": d.min, "samples": 300},
            "policy_index_build_ms": {"p50": ib.p50, "p95": ib.p95},
        }));
    }
    if !measuring {
        println!("netmap: smoke run only (pass --bench, e.g. via cargo bench, to measure)");
        return;
    }
    let full_10k = runs[1]["full_ms"]["p50"].as_f64().unwrap_or(f64::MAX);
    let delta_10k = runs[1]["delta_one_map_ms"]["p50"]
        .as_f64()
        .unwrap_or(f64::MAX);
    let report = serde_json::json!({
        "bench": "control_netmap_compile_and_sign",
        "threads": rayon::current_num_threads(),
        "envelope": format!("v{}: Ed25519 over BLAKE3 of the raw JSON body", rustynet_proto::envelope::ENVELOPE_VERSION),
        "topology": "90% clients in 50 teams, 10% servers in 50 tagged services; team i -> svc i:443/tcp and svc i+1:22/tcp",
        "runs": runs,
        "goals": {"full_10k_ms": 150.0, "delta_ms": 1.0},
        "goal_met": {"full_10k": full_10k <= 150.0, "delta_10k": delta_10k <= 1.0},
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../artifacts/bench");
    std::fs::create_dir_all(&root).expect("create artifacts/bench");
    let path = root.join("control_netmap.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).expect("write report");
    println!("wrote {}", path.display());
}
