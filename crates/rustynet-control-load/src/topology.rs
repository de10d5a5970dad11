//! The simulated network's shape, the same as the map-building benchmark's
//! (`benches/netmap.rs` of the control crate): 90% client devices in 50
//! teams, 10% servers tagged into 50 services; rule i lets team i reach
//! service i on 443/tcp and service i+`shift` on 22/tcp. Changing `shift`
//! changes the map of every node: each client sees other servers, each
//! server admits other clients.

use serde_json::{Map, Value, json};

/// Teams of client devices (one user each).
pub const TEAMS: usize = 50;
/// Services (one tag each, owned by user `ops`).
pub const SERVICES: usize = 50;
/// The user owning every service tag.
pub const OPS_USER: &str = "ops";

/// What a simulated node is: which pre-auth key enrolls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client device of this team.
    Client(usize),
    /// A server of this service.
    Server(usize),
}

/// The role of node number `i` (every tenth node is a server).
pub fn role(i: usize) -> Role {
    if i.is_multiple_of(10) {
        Role::Server((i / 10) % SERVICES)
    } else {
        Role::Client(i % TEAMS)
    }
}

/// The user a team's devices enroll as.
pub fn team_user(team: usize) -> String {
    format!("user{team}")
}

/// The tag a service's servers carry.
pub fn service_tag(service: usize) -> String {
    format!("tag:svc{service}")
}

/// The host label node number `i` asks for.
pub fn hostname(i: usize) -> String {
    format!("n{i}")
}

/// The policy (100 rules) with team i reaching service i+`shift` on 22.
pub fn policy(shift: usize) -> Value {
    let mut groups = Map::new();
    for t in 0..TEAMS {
        groups.insert(format!("group:team{t}"), json!([team_user(t)]));
    }
    let mut owners = Map::new();
    for s in 0..SERVICES {
        owners.insert(service_tag(s), json!([OPS_USER]));
    }
    let mut acls = Vec::new();
    for i in 0..TEAMS {
        acls.push(
            json!({"action": "accept", "src": [format!("group:team{i}")],
            "dst": [format!("{}:443", service_tag(i))], "proto": "tcp"}),
        );
        acls.push(
            json!({"action": "accept", "src": [format!("group:team{i}")],
            "dst": [format!("{}:22", service_tag((i + shift) % SERVICES))], "proto": "tcp"}),
        );
    }
    json!({"groups": groups, "tag_owners": owners, "acls": acls})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_tenth_node_is_a_server_and_the_policies_parse() {
        assert_eq!(role(0), Role::Server(0));
        assert_eq!(role(10), Role::Server(1));
        assert_eq!(role(1), Role::Client(1));
        assert_eq!(role(51), Role::Client(1));
        for shift in [1, 2] {
            let doc = policy(shift);
            assert_eq!(doc["acls"].as_array().unwrap().len(), 2 * TEAMS);
            rustynet_policy::Policy::parse(&doc.to_string()).unwrap();
        }
        assert_ne!(policy(1), policy(2));
    }
}
