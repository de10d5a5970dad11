//! The policy parser and compiler. Besides "never panics": a policy that
//! parses prints to a canonical form that parses to the same policy and
//! prints the same again, and compiles over a small fixed network into
//! views whose filters the node's verifier accepts (or refuses with a
//! reason: never a panic).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustynet_policy::{NodeFacts, Policy, compile};
use rustynet_proto::NodeId;
use rustynet_proto::netmap::MapShape;

fn network() -> &'static [NodeFacts] {
    static NODES: OnceLock<Vec<NodeFacts>> = OnceLock::new();
    NODES.get_or_init(|| {
        let node = |id: u64, host: &str, user: &str, tags: &[&str]| NodeFacts {
            id: NodeId(id),
            hostname: host.to_owned(),
            user: user.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            tunnel_ip: std::net::Ipv4Addr::new(100, 64, 0, id as u8),
            advertise_exit_node: id % 2 == 0,
            advertised_routes: if id == 3 {
                vec!["192.168.77.0/24".parse().expect("fixture route")]
            } else {
                vec![]
            },
            lan_access: id != 2,
            admin_routes: Default::default(),
        };
        vec![
            node(1, "alice-laptop", "alice", &[]),
            node(2, "bob-desktop", "bob", &[]),
            node(3, "exit", "ops", &["tag:exit", "tag:router"]),
            node(4, "web", "ops", &["tag:web"]),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let canonical = policy.to_json_pretty();
    let again = Policy::parse(&canonical).expect("the canonical form parses");
    assert_eq!(again.to_json_pretty(), canonical, "canonical form is stable");
    for user in ["alice", "bob", "ops"] {
        for tag in ["tag:exit", "tag:web", "tag:none"] {
            let _ = policy.tag_owned_by(tag, user);
        }
    }
    for view in compile(&policy, network()).values() {
        let shape = MapShape {
            peers: view.visible_peers.len(),
            packet_filter: &view.packet_filter,
            forward_filter: &view.forward_filter,
            exit_clients: &view.exit_clients,
            exit_grants: view.exit_grants.len(),
            lan_grants: &view.lan_grants,
            dns_records: view.visible_peers.len() + 1,
            dns_split: view.split_dns.len(),
        };
        let _ = shape.check();
    }
});
