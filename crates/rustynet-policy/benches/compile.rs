//! Compile cost on synthetic networks of 1k and 10k nodes with 100 rules:
//! full compile, index construction, and one node's view (a client laptop
//! and a busy server).
//!
//! The network: users own ~5 devices each, enrolled in a scrambled order (so
//! group members' tunnel addresses are scattered, the hard case for CIDR
//! merging); 10% of nodes are admin-owned servers under 20 service tags;
//! 10 exits and 20 subnet routers. Rules: group -> service, a few `*` ->
//! service, admins -> `*`, tag -> tag, group -> LAN CIDR, user -> node:HOST.

#![allow(clippy::print_stderr)] // a bench reports the shape of its network

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use rustynet_policy::{NodeFacts, Policy, PolicyIndex, compile};
use rustynet_proto::NodeId;

const GROUPS: usize = 20;
const TAGS: usize = 20;

/// A small deterministic scrambler (no RNG dependency, same network every run).
fn scramble(i: usize) -> usize {
    i.wrapping_mul(2_654_435_761) % 1_000_003
}

fn network(n: usize) -> Vec<NodeFacts> {
    let users = (n / 5).max(GROUPS);
    (0..n)
        .map(|i| {
            let (user, tags, exit, routes): (String, Vec<String>, bool, Vec<IpNet>) = if i % 10 == 0
            {
                let k = i / 10;
                let (tags, exit, routes) = if k < 10 {
                    (vec!["tag:exit".to_owned()], true, vec![])
                } else if k < 30 {
                    let route = format!("10.{}.0.0/16", k - 10)
                        .parse()
                        .unwrap_or(IpNet::V4(Default::default()));
                    (vec!["tag:router".to_owned()], false, vec![route])
                } else {
                    (vec![format!("tag:svc{}", k % TAGS)], false, vec![])
                };
                ("infra-bot".to_owned(), tags, exit, routes)
            } else if i % 1000 < 10 {
                (format!("admin{}", i % 5), vec![], false, vec![])
            } else {
                (format!("u{}", scramble(i) % users), vec![], false, vec![])
            };
            let offset = u32::try_from(i + 1).unwrap_or(0);
            NodeFacts {
                id: NodeId(1000 + i as u64),
                hostname: format!("host{i}"),
                user,
                tags,
                tunnel_ip: Ipv4Addr::from_bits(Ipv4Addr::new(100, 64, 0, 0).to_bits() + offset),
                advertise_exit_node: exit,
                advertised_routes: routes,
                // Every toggle on: the most grants and forward-filter work.
                lan_access: true,
                admin_routes: Default::default(),
            }
        })
        .collect()
}

fn policy(n: usize) -> Policy {
    let users = (n / 5).max(GROUPS);
    let mut groups: Vec<String> = (0..GROUPS)
        .map(|g| {
            let members: Vec<String> = (g..users)
                .step_by(GROUPS)
                .map(|u| format!("\"u{u}\""))
                .collect();
            format!("\"group:g{g}\": [{}]", members.join(","))
        })
        .collect();
    groups.push(
        "\"group:admins\": [\"admin0\",\"admin1\",\"admin2\",\"admin3\",\"admin4\"]".to_owned(),
    );
    groups.push("\"group:infra\": [\"infra-bot\"]".to_owned());
    let mut tags: Vec<String> = (0..TAGS)
        .map(|t| format!("\"tag:svc{t}\": [\"group:infra\"]"))
        .collect();
    tags.push("\"tag:exit\": [\"group:infra\"]".to_owned());
    tags.push("\"tag:router\": [\"group:infra\"]".to_owned());
    let rule = |src: String, dst: String, proto: &str| {
        format!("{{\"action\":\"accept\",\"src\":[{src}],\"dst\":[{dst}],\"proto\":\"{proto}\"}}")
    };
    let mut rules = Vec::new();
    for r in 0..60 {
        rules.push(rule(
            format!("\"group:g{}\"", r % GROUPS),
            format!("\"tag:svc{}:443,8000-8100\"", (r * 7) % TAGS),
            "tcp",
        ));
    }
    rules.push(rule("\"*\"".into(), "\"tag:svc0:53\"".into(), "udp"));
    rules.push(rule("\"*\"".into(), "\"tag:svc1:9100\"".into(), "tcp"));
    for port in [22, 443, 9090] {
        rules.push(rule(
            "\"group:admins\"".into(),
            format!("\"*:{port}\""),
            "tcp",
        ));
    }
    for r in 0..15 {
        rules.push(rule(
            format!("\"tag:svc{}\"", r % TAGS),
            format!("\"tag:svc{}:5432\"", (r + 3) % TAGS),
            "tcp",
        ));
    }
    for r in 0..10 {
        rules.push(rule(
            format!("\"group:g{}\"", r % GROUPS),
            format!("\"10.{r}.0.0/16:*\""),
            "any",
        ));
    }
    for r in 0..10 {
        rules.push(rule(
            format!("\"u{r}\""),
            format!("\"node:host{}:22\"", r * 10 + 300),
            "tcp",
        ));
    }
    let text = format!(
        "{{\"groups\":{{{}}},\"tag_owners\":{{{}}},\"acls\":[{}],\
          \"exit_nodes\":[{{\"users\":[\"group:g0\",\"group:g1\",\"group:g2\"],\"nodes\":[\"tag:exit\"]}}],\
          \"route_approvers\":[{{\"routes\":[\"10.0.0.0/8\"],\"nodes\":[\"tag:router\"]}}]}}",
        groups.join(","),
        tags.join(","),
        rules.join(",")
    );
    let parsed = Policy::parse(&text);
    assert!(parsed.is_ok(), "bench policy must parse: {parsed:?}");
    parsed.unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    for n in [1_000usize, 10_000] {
        let nodes = network(n);
        let policy = policy(n);
        assert_eq!(policy.rule_count(), 100);
        let client = nodes[17].id; // an ordinary laptop
        let server = nodes[310].id; // tag:svc11, reached by several groups
        let index = PolicyIndex::new(&policy, &nodes);
        let views = compile(&policy, &nodes);
        let server_view = index.view(server).unwrap_or_default();
        assert!(
            server_view.packet_filter.len() >= 3,
            "the server must be reached by several rules"
        );
        eprintln!(
            "{n} nodes: visible peers {}, packet-filter sources {}, lan grants {}; server sees {} peers",
            views.values().map(|v| v.visible_peers.len()).sum::<usize>(),
            views
                .values()
                .flat_map(|v| &v.packet_filter)
                .map(|r| r.src.len())
                .sum::<usize>(),
            views.values().map(|v| v.lan_grants.len()).sum::<usize>(),
            server_view.visible_peers.len(),
        );
        let client_view = index.view(client).unwrap_or_default();
        eprintln!(
            "client: {} peers, {} filter rules, {} lan grants, {} exits",
            client_view.visible_peers.len(),
            client_view.packet_filter.len(),
            client_view.lan_grants.len(),
            client_view.exit_grants.len()
        );
        let mut group = c.benchmark_group(format!("{n}_nodes_100_rules"));
        group.sample_size(if n > 1_000 { 10 } else { 30 });
        group.bench_function("compile_all", |b| {
            b.iter(|| compile(black_box(&policy), black_box(&nodes)))
        });
        group.bench_function("index_new", |b| {
            b.iter(|| PolicyIndex::new(black_box(&policy), black_box(&nodes)))
        });
        group.bench_function("view_client", |b| b.iter(|| index.view(black_box(client))));
        group.bench_function("view_server", |b| b.iter(|| index.view(black_box(server))));
        group.bench_function("index_new_plus_view", |b| {
            b.iter(|| PolicyIndex::new(black_box(&policy), black_box(&nodes)).view(client))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
