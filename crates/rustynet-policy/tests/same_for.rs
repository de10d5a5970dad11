//! `Policy::same_for`: when control may keep the views it compiled instead
//! of compiling the network again.
#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::net::Ipv4Addr;

use rustynet_policy::{NodeFacts, Policy, compile};
use rustynet_proto::NodeId;

fn node(id: u8, host: &str, user: &str) -> NodeFacts {
    NodeFacts {
        id: NodeId(u64::from(id)),
        hostname: host.to_owned(),
        user: user.to_owned(),
        tags: vec![],
        tunnel_ip: Ipv4Addr::new(100, 64, 0, id),
        advertise_exit_node: false,
        advertised_routes: vec![],
        lan_access: false,
        admin_routes: Default::default(),
    }
}

fn renamed(mut facts: Vec<NodeFacts>, i: usize, to: &str) -> Vec<NodeFacts> {
    facts[i].hostname = to.to_owned();
    facts
}

const BY_USER: &str = r#"{"acls": [{"action": "accept", "src": ["alice"], "dst": ["bob:*"]}]}"#;
const BY_HOST: &str = r#"{"acls": [{"action": "accept", "src": ["alice"], "dst": ["node:db:*"]}]}"#;

#[test]
fn a_rename_keeps_the_views_of_a_policy_that_names_no_host() {
    let policy = Policy::parse(BY_USER).unwrap();
    let before = vec![node(1, "laptop", "alice"), node(2, "db", "bob")];
    let after = renamed(before.clone(), 1, "db2");
    assert!(policy.same_for(&before, &after));
    assert_eq!(
        compile(&policy, &before),
        compile(&policy, &after),
        "and they are the same"
    );
}

#[test]
fn a_rename_recompiles_a_policy_that_selects_by_host_label() {
    let policy = Policy::parse(BY_HOST).unwrap();
    let before = vec![node(1, "laptop", "alice"), node(2, "db", "bob")];
    let after = renamed(before.clone(), 1, "db2");
    assert!(!policy.same_for(&before, &after));
    assert_ne!(
        compile(&policy, &before),
        compile(&policy, &after),
        "db2 is no longer node:db"
    );
}

#[test]
fn any_other_fact_or_node_recompiles() {
    let policy = Policy::parse(BY_USER).unwrap();
    let before = vec![node(1, "laptop", "alice"), node(2, "db", "bob")];
    let mut other_user = before.clone();
    other_user[1].user = "carol".into();
    assert!(!policy.same_for(&before, &other_user));
    let mut exit = before.clone();
    exit[0].advertise_exit_node = true;
    assert!(!policy.same_for(&before, &exit));
    assert!(!policy.same_for(&before, &before[..1]), "a node left");
    let mut moved = before.clone();
    moved[0].tunnel_ip = Ipv4Addr::new(100, 64, 0, 9);
    assert!(!policy.same_for(&before, &moved));
}
