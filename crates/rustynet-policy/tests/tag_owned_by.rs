//! `Policy::tag_owned_by`: the question control asks before issuing a
//! pre-auth key that carries a tag.
#![allow(clippy::unwrap_used)] // test helpers fail the test by panicking

use std::net::Ipv4Addr;

use rustynet_policy::{NodeFacts, Policy, compile};
use rustynet_proto::NodeId;

const POLICY: &str = r#"{
  "groups": {"group:admins": ["alice"], "group:staff": ["bob", "carol"], "group:none": []},
  "tag_owners": {"tag:exit": ["group:admins"], "tag:router": ["dave", "group:staff"],
                 "tag:free": [], "tag:ghost": ["group:none"]}
}"#;

fn policy() -> Policy {
    Policy::parse(POLICY).unwrap()
}

#[test]
fn direct_owner_owns() {
    let p = policy();
    assert!(p.tag_owned_by("tag:router", "dave"));
    assert!(!p.tag_owned_by("tag:exit", "dave"), "owns another tag only");
}

#[test]
fn group_member_owns() {
    let p = policy();
    assert!(p.tag_owned_by("tag:exit", "alice"));
    assert!(p.tag_owned_by("tag:router", "bob"));
    assert!(p.tag_owned_by("tag:router", "carol"));
}

#[test]
fn non_owner_does_not_own() {
    let p = policy();
    assert!(!p.tag_owned_by("tag:exit", "bob"));
    assert!(!p.tag_owned_by("tag:router", "alice"));
    assert!(!p.tag_owned_by("tag:router", "mallory"));
    assert!(
        !p.tag_owned_by("tag:free", "alice"),
        "declared with no owners"
    );
    assert!(
        !p.tag_owned_by("tag:ghost", "alice"),
        "owned by an empty group"
    );
    // A group's name is not one of its members.
    assert!(!p.tag_owned_by("tag:router", "group:staff"));
}

#[test]
fn undeclared_tag_has_no_owner() {
    let p = policy();
    for user in ["alice", "bob", "carol", "dave", ""] {
        assert!(!p.tag_owned_by("tag:nope", user), "{user}");
        assert!(!p.tag_owned_by("", user), "{user}");
    }
    // Only the full `tag:NAME` spelling names a tag.
    assert!(!p.tag_owned_by("router", "dave"));
    assert!(!p.tag_owned_by("TAG:router", "dave"));
    assert!(!Policy::default().tag_owned_by("tag:router", "dave"));
}

/// Ownership as `tag_owned_by` reports it is exactly ownership as the
/// compiler applies it: a node carrying the tag is matched by the tag's
/// selector iff its user owns the tag.
#[test]
fn agrees_with_compiled_tag_selectors() {
    let tags = ["tag:exit", "tag:router", "tag:free", "tag:ghost"];
    let users = ["alice", "bob", "carol", "dave", "mallory"];
    let mut owned = 0;
    for tag in tags {
        let p = Policy::parse(&POLICY.replace(
            "\n}",
            &format!(r#", "acls": [{{"action": "accept", "src": ["{tag}"], "dst": ["*:*"]}}]}}"#),
        ))
        .unwrap();
        let mut nodes: Vec<NodeFacts> = users
            .iter()
            .zip(1u8..)
            .map(|(user, k)| NodeFacts {
                id: NodeId(u64::from(k)),
                hostname: format!("n{k}"),
                user: (*user).to_owned(),
                tags: vec![tag.to_owned()],
                tunnel_ip: Ipv4Addr::new(100, 64, 0, k),
                advertise_exit_node: false,
                advertised_routes: vec![],
                lan_access: false,
                admin_routes: Default::default(),
            })
            .collect();
        // An untagged destination, so every source that counts sees it.
        nodes.push(NodeFacts {
            id: NodeId(99),
            hostname: "sink".to_owned(),
            user: "zed".to_owned(),
            tags: vec![],
            tunnel_ip: Ipv4Addr::new(100, 64, 0, 99),
            advertise_exit_node: false,
            advertised_routes: vec![],
            lan_access: false,
            admin_routes: Default::default(),
        });
        let views = compile(&p, &nodes);
        for n in &nodes[..users.len()] {
            let matched = views[&NodeId(99)].visible_peers.contains(&n.id);
            assert_eq!(p.tag_owned_by(tag, &n.user), matched, "{tag} {}", n.user);
            owned += usize::from(matched);
        }
    }
    assert_eq!(owned, 4, "alice owns exit; bob, carol and dave own router");
}
