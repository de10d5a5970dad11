//! Parsing and validation: every refusal names its location exactly.
#![allow(clippy::panic)] // helpers outside #[test] fns fail the test by panicking

use rustynet_policy::{MAX_POLICY_BYTES, MAX_RULES, Policy, PolicyError};

const EXAMPLE: &str = r#"{
  "groups": {"group:admins": ["alice"], "group:staff": ["bob", "carol"]},
  "tag_owners": {"tag:exit": ["group:admins"], "tag:router": ["alice", "group:staff"]},
  "hosts": {"nas": "192.168.77.10/32", "lab6": "fd00:77::/64"},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["tag:exit:*"], "proto": "any"},
    {"action": "accept", "src": ["bob"], "dst": ["192.168.77.0/24:22,443"], "proto": "tcp"},
    {"action": "accept", "src": ["*"], "dst": ["nas:445", "[fd00::/64]:22", "lab6:80-90"]}
  ],
  "exit_nodes": [{"users": ["group:staff"], "nodes": ["tag:exit"]}],
  "route_approvers": [{"routes": ["10.20.0.0/16"], "nodes": ["tag:router"]}]
}"#;

/// Parses `{ "acls": [rule] }` plus the shared declarations.
fn with_decls(extra: &str) -> String {
    format!(
        r#"{{"groups": {{"group:staff": ["bob"]}}, "tag_owners": {{"tag:exit": ["alice"]}},
            "hosts": {{"nas": "192.168.77.10"}}, {extra}}}"#
    )
}

fn invalid(text: &str) -> (String, String) {
    match Policy::parse(text) {
        Err(PolicyError::Invalid { path, reason }) => (path, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn invalid_rule(rule: &str) -> (String, String) {
    invalid(&with_decls(&format!(r#""acls": [{rule}]"#)))
}

fn json_error(text: &str) -> (usize, usize, String) {
    match Policy::parse(text) {
        Err(PolicyError::Json {
            line,
            column,
            message,
        }) => (line, column, message),
        other => panic!("expected Json error, got {other:?}"),
    }
}

#[test]
fn example_parses_and_round_trips() {
    let policy = Policy::parse(EXAMPLE).unwrap();
    assert_eq!(policy.rule_count(), 3);
    let canonical = policy.to_json_pretty();
    let again = Policy::parse(&canonical).unwrap();
    assert_eq!(again, policy);
    assert_eq!(
        again.to_json_pretty(),
        canonical,
        "canonical form is a fixed point"
    );
    // The omitted default is spelled out in the canonical form.
    assert_eq!(canonical.matches("\"proto\": \"any\"").count(), 2);
    assert!(canonical.contains("\"route_approvers\""));
}

#[test]
fn empty_policy_is_default() {
    let empty = Policy::parse("{}").unwrap();
    assert_eq!(empty, Policy::default());
    assert_eq!(empty.rule_count(), 0);
    assert_eq!(Policy::parse(&empty.to_json_pretty()).unwrap(), empty);
}

#[test]
fn canonical_form_ignores_key_order_and_whitespace() {
    let a =
        Policy::parse(r#"{"hosts": {"b": "10.0.0.2", "a": "10.0.0.1"}, "groups": {}}"#).unwrap();
    let b = Policy::parse(r#"{"groups":{},"hosts":{"a":"10.0.0.1","b":"10.0.0.2"}}"#).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_json_pretty(), b.to_json_pretty());
}

#[test]
fn shape_errors_carry_line_and_column() {
    let (line, column, message) = json_error("{\n  \"aclz\": []\n}");
    assert_eq!((line, column), (2, 8));
    assert!(message.starts_with("unknown field `aclz`"), "{message}");

    let (line, _, message) = json_error(
        "{\"acls\": [\n {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"port\": 22}]}",
    );
    assert_eq!(line, 2);
    assert!(message.starts_with("unknown field `port`"), "{message}");

    let (_, _, message) = json_error(r#"{"acls": {}}"#);
    assert!(
        message.starts_with("invalid type: map, expected a sequence"),
        "{message}"
    );

    let (_, _, message) = json_error(r#"{"acls": [{"src": ["*"], "dst": ["*:*"]}]}"#);
    assert!(message.starts_with("missing field `action`"), "{message}");

    let (_, _, message) = json_error(r#"{"acls": [{"action": "accept", "src": "*", "dst": []}]}"#);
    assert!(message.starts_with("invalid type: string"), "{message}");

    let (_, _, message) = json_error(
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": null}]}"#,
    );
    assert!(message.starts_with("invalid type: null"), "{message}");

    let (line, _, message) =
        json_error("{\"groups\": {\"group:a\": [],\n \"group:a\": [\"bob\"]}}");
    assert_eq!(line, 2);
    assert!(
        message.starts_with("duplicate key \"group:a\""),
        "{message}"
    );

    let (_, _, message) = json_error("{\"hosts\": {\"a\": \"10.0.0.1\", \"a\": \"10.0.0.2\"}}");
    assert!(message.starts_with("duplicate key \"a\""), "{message}");

    let (_, _, message) = json_error(r#"{"groups": {}, "groups": {}}"#);
    assert!(message.starts_with("duplicate field `groups`"), "{message}");

    let (_, _, message) = json_error("{\"acls\": [");
    assert!(message.starts_with("EOF while parsing"), "{message}");
    // Serde would take a struct written as a positional array; the policy does not.
    let (_, _, message) = json_error("[]");
    assert!(
        message.starts_with("invalid type: sequence, expected a JSON object"),
        "{message}"
    );
    let (_, _, message) = json_error(r#"{"acls": [["accept", ["*"], ["*:*"], "any"]]}"#);
    assert!(
        message.starts_with("invalid type: sequence, expected a JSON object"),
        "{message}"
    );
    let (_, _, message) = json_error(r#"{"exit_nodes": [[["*"], ["*"]]]}"#);
    assert!(message.starts_with("invalid type: sequence"), "{message}");
    let (_, _, message) = json_error("{} {}");
    assert!(message.starts_with("trailing characters"), "{message}");
    let err = Policy::parse("[]").unwrap_err();
    assert!(
        err.to_string().starts_with("policy JSON, line 1 column"),
        "{err}"
    );
}

#[test]
fn hostile_sizes_are_refused() {
    let huge = format!(
        "{{\"hosts\": {{\"a\": \"{}\"}}}}",
        "x".repeat(MAX_POLICY_BYTES)
    );
    assert_eq!(
        Policy::parse(&huge),
        Err(PolicyError::TooLarge {
            size: huge.len(),
            limit: MAX_POLICY_BYTES
        })
    );
    let rule = r#"{"action":"accept","src":["*"],"dst":["*:*"]}"#;
    let many = format!("{{\"acls\": [{}]}}", vec![rule; MAX_RULES + 1].join(","));
    assert_eq!(
        invalid(&many),
        (
            "acls".to_owned(),
            format!("{} entries, limit is {MAX_RULES}", MAX_RULES + 1)
        )
    );
    for (key, entry) in [
        ("exit_nodes", r#"{"users":["*"],"nodes":["*"]}"#),
        (
            "route_approvers",
            r#"{"routes":["10.0.0.0/8"],"nodes":["*"]}"#,
        ),
    ] {
        let many = format!("{{\"{key}\": [{}]}}", vec![entry; MAX_RULES + 1].join(","));
        assert_eq!(invalid(&many).0, key);
    }
    let exactly = format!("{{\"acls\": [{}]}}", vec![rule; MAX_RULES].join(","));
    assert_eq!(Policy::parse(&exactly).unwrap().rule_count(), MAX_RULES);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        Policy::parse(&deep),
        Err(PolicyError::Json { .. })
    ));
}

#[test]
fn rule_errors_name_their_field() {
    assert_eq!(
        invalid_rule(r#"{"action": "deny", "src": ["*"], "dst": ["*:*"]}"#),
        (
            "acls[0].action".to_owned(),
            "expected \"accept\", found \"deny\"".to_owned()
        )
    );
    let text = with_decls(
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]},
                    {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "TCP"}]"#,
    );
    assert_eq!(
        invalid(&text),
        (
            "acls[1].proto".to_owned(),
            "expected one of tcp, udp, icmp, any".to_owned()
        )
    );
    let text = with_decls(
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]},
                    {"action": "accept", "src": ["*"], "dst": ["*:*"]},
                    {"action": "accept", "src": ["*"], "dst": ["group:foo:*"]}]"#,
    );
    assert_eq!(
        invalid(&text),
        (
            "acls[2].dst[0]".to_owned(),
            "unknown group \"group:foo\"".to_owned()
        )
    );
    assert_eq!(
        invalid_rule(r#"{"action": "accept", "src": ["bob", "tag:nope"], "dst": ["*:*"]}"#),
        (
            "acls[0].src[1]".to_owned(),
            "unknown tag \"tag:nope\" (declare it in tag_owners)".to_owned()
        )
    );
    assert_eq!(
        invalid_rule(r#"{"action": "accept", "src": [], "dst": ["*:*"]}"#),
        ("acls[0].src".to_owned(), "must not be empty".to_owned())
    );
    assert_eq!(
        invalid_rule(r#"{"action": "accept", "src": ["*"], "dst": []}"#),
        ("acls[0].dst".to_owned(), "must not be empty".to_owned())
    );
    assert_eq!(
        invalid_rule(r#"{"action": "accept", "src": ["*"], "dst": ["*:22"], "proto": "icmp"}"#),
        (
            "acls[0].dst[0]".to_owned(),
            "ports do not apply to icmp; use \"*\"".to_owned()
        )
    );
    let (path, reason) = invalid_rule(r#"{"action": "accept", "src": ["Alice"], "dst": ["*:*"]}"#);
    assert_eq!(path, "acls[0].src[0]");
    assert!(
        reason.starts_with("\"Alice\" is not a selector"),
        "{reason}"
    );
    let (path, reason) =
        invalid_rule(r#"{"action": "accept", "src": ["node:Bad_Host"], "dst": ["*:*"]}"#);
    assert_eq!(path, "acls[0].src[0]");
    assert!(
        reason.starts_with("invalid host label in \"node:Bad_Host\""),
        "{reason}"
    );
    let (path, reason) =
        invalid_rule(r#"{"action": "accept", "src": ["group:Staff"], "dst": ["*:*"]}"#);
    assert_eq!(path, "acls[0].src[0]");
    assert!(
        reason.starts_with("invalid name \"group:Staff\""),
        "{reason}"
    );
    let (path, reason) =
        invalid_rule(r#"{"action": "accept", "src": ["10.0.0.1/8"], "dst": ["*:*"]}"#);
    assert_eq!(path, "acls[0].src[0]");
    assert_eq!(
        reason,
        "\"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\"?"
    );
}

#[test]
fn dst_entries_need_ports_and_brackets() {
    let dst_err = |dst: &str| {
        invalid_rule(&format!(
            r#"{{"action": "accept", "src": ["*"], "dst": ["*:*", {dst:?}]}}"#
        ))
    };
    for missing in [
        "group:staff",
        "tag:exit",
        "node:nas",
        "bob",
        "10.0.0.0/8",
        "*",
    ] {
        let (path, reason) = dst_err(missing);
        assert_eq!(path, "acls[0].dst[1]");
        assert!(reason.contains("has no port list"), "{missing}: {reason}");
    }
    for unbracketed in ["fd00::/64:22", "fd00::1:22", "::1:*"] {
        let (path, reason) = dst_err(unbracketed);
        assert_eq!(path, "acls[0].dst[1]");
        assert!(
            reason.contains("IPv6 destinations must be bracketed"),
            "{reason}"
        );
    }
    let (_, reason) = dst_err("[10.0.0.0/8]:22");
    assert!(
        reason.contains("brackets hold an IPv6 address or CIDR only"),
        "{reason}"
    );
    let (_, reason) = dst_err("[fd00::1]22");
    assert!(reason.contains("must look like [IPV6]:PORTS"), "{reason}");
    for bad_ports in [
        "*:0", "*:65536", "*:10-5", "*:", "*:22,", "*:a", "*:+22", "*:-5", "*:22 ,23", "*:1-2-3",
    ] {
        let (path, reason) = dst_err(bad_ports);
        assert_eq!(path, "acls[0].dst[1]", "{bad_ports}");
        assert!(reason.starts_with("invalid port"), "{bad_ports}: {reason}");
    }
    let (_, reason) = dst_err("*:10-5");
    assert_eq!(
        reason,
        "invalid port range \"10-5\": first port is larger than last"
    );
    for good in [
        "[fd00::/64]:22",
        "[fd00::1]:*",
        "tag:exit:1-65535",
        "node:nas:22,80",
        "nas:445",
        "bob:1",
    ] {
        let text = with_decls(&format!(
            r#""acls": [{{"action": "accept", "src": ["*"], "dst": [{good:?}]}}]"#
        ));
        assert!(Policy::parse(&text).is_ok(), "{good}");
    }
}

#[test]
fn every_selector_kind_is_accepted_in_src() {
    let text = with_decls(
        r#""acls": [{"action": "accept",
            "src": ["*", "alice", "user.name-2_x@example.com", "group:staff", "tag:exit",
                    "node:nas-1", "nas", "10.0.0.1", "10.0.0.0/8", "fd00::/64", "fd00::1"],
            "dst": ["*:*"]}]"#,
    );
    assert!(Policy::parse(&text).is_ok());
}

#[test]
fn group_errors() {
    assert_eq!(
        invalid(r#"{"groups": {"staff": ["bob"]}}"#),
        (
            "groups[\"staff\"]".to_owned(),
            "\"staff\" must start with \"group:\"".to_owned()
        )
    );
    assert_eq!(
        invalid(r#"{"groups": {"group:a": ["bob"], "group:b": ["carol", "group:a"]}}"#),
        (
            "groups[\"group:b\"][1]".to_owned(),
            "groups contain users only; nested group \"group:a\" is not supported".to_owned()
        )
    );
    let (path, reason) = invalid(r#"{"groups": {"group:a": ["Bob"]}}"#);
    assert_eq!(path, "groups[\"group:a\"][0]");
    assert!(reason.starts_with("invalid user name \"Bob\""), "{reason}");
    let (path, _) = invalid(r#"{"groups": {"group:a": ["tag:x"]}}"#);
    assert_eq!(path, "groups[\"group:a\"][0]");
    let (path, _) = invalid(r#"{"groups": {"group:": []}}"#);
    assert_eq!(path, "groups[\"group:\"]");
}

#[test]
fn tag_owner_errors() {
    assert_eq!(
        invalid(r#"{"tag_owners": {"exit": ["bob"]}}"#),
        (
            "tag_owners[\"exit\"]".to_owned(),
            "\"exit\" must start with \"tag:\"".to_owned()
        )
    );
    assert_eq!(
        invalid(r#"{"tag_owners": {"tag:exit": ["bob", "group:nope"]}}"#),
        (
            "tag_owners[\"tag:exit\"][1]".to_owned(),
            "unknown group \"group:nope\"".to_owned()
        )
    );
    let (path, reason) = invalid(r#"{"tag_owners": {"tag:a": [], "tag:exit": ["tag:a"]}}"#);
    assert_eq!(path, "tag_owners[\"tag:exit\"][0]");
    assert!(
        reason.ends_with("(tag owners are users or groups)"),
        "{reason}"
    );
}

#[test]
fn host_alias_errors() {
    assert_eq!(
        invalid(r#"{"hosts": {"10.0.0.1": "10.0.0.1"}}"#),
        (
            "hosts[\"10.0.0.1\"]".to_owned(),
            "an alias may not look like an IP address".to_owned()
        )
    );
    assert_eq!(
        invalid(r#"{"hosts": {"nas": "nas.local"}}"#),
        (
            "hosts[\"nas\"]".to_owned(),
            "\"nas.local\" is not an IP address or CIDR".to_owned()
        )
    );
    let (path, reason) = invalid(r#"{"hosts": {"net": "192.168.1.1/24"}}"#);
    assert_eq!(path, "hosts[\"net\"]");
    assert!(reason.contains("has host bits set"), "{reason}");
    let (path, reason) = invalid(r#"{"hosts": {"NAS": "10.0.0.1"}}"#);
    assert_eq!(path, "hosts[\"NAS\"]");
    assert!(reason.starts_with("invalid alias"), "{reason}");
}

#[test]
fn exit_node_errors() {
    let exit = |entry: &str| invalid(&with_decls(&format!(r#""exit_nodes": [{entry}]"#)));
    assert_eq!(
        exit(r#"{"users": ["tag:exit"], "nodes": ["tag:exit"]}"#),
        (
            "exit_nodes[0].users[0]".to_owned(),
            "\"tag:exit\" is not allowed here: exit clients are users, groups or \"*\"".to_owned()
        )
    );
    assert_eq!(
        exit(r#"{"users": ["*"], "nodes": ["tag:exit", "10.0.0.0/8"]}"#),
        (
            "exit_nodes[0].nodes[1]".to_owned(),
            "\"10.0.0.0/8\" is not allowed here: name nodes by tag:NAME, node:HOST, user, group or \"*\""
                .to_owned()
        )
    );
    let (path, _) = exit(r#"{"users": ["node:x"], "nodes": ["*"]}"#);
    assert_eq!(path, "exit_nodes[0].users[0]");
    let (path, _) = exit(r#"{"users": ["bob"], "nodes": ["nas"]}"#);
    assert_eq!(path, "exit_nodes[0].nodes[0]", "host aliases are addresses");
    assert_eq!(
        exit(r#"{"users": [], "nodes": ["*"]}"#),
        (
            "exit_nodes[0].users".to_owned(),
            "must not be empty".to_owned()
        )
    );
    assert_eq!(
        exit(r#"{"users": ["*"], "nodes": []}"#),
        (
            "exit_nodes[0].nodes".to_owned(),
            "must not be empty".to_owned()
        )
    );
    let (path, reason) = exit(r#"{"users": ["group:nope"], "nodes": ["*"]}"#);
    assert_eq!(
        (path.as_str(), reason.as_str()),
        ("exit_nodes[0].users[0]", "unknown group \"group:nope\"")
    );
}

#[test]
fn route_approver_errors() {
    let appr = |entry: &str| invalid(&with_decls(&format!(r#""route_approvers": [{entry}]"#)));
    assert_eq!(
        appr(r#"{"routes": ["10.0.0.0/8", "100.64.0.0/16"], "nodes": ["*"]}"#),
        (
            "route_approvers[0].routes[1]".to_owned(),
            "100.64.0.0/16 lies inside the tunnel range 100.64.0.0/10 and can never be approved"
                .to_owned()
        )
    );
    let (path, reason) = appr(r#"{"routes": ["10.0.0.1/8"], "nodes": ["*"]}"#);
    assert_eq!(path, "route_approvers[0].routes[0]");
    assert!(reason.contains("host bits"), "{reason}");
    let (path, _) = appr(r#"{"routes": ["nas"], "nodes": ["*"]}"#);
    assert_eq!(path, "route_approvers[0].routes[0]");
    let (path, _) = appr(r#"{"routes": ["10.0.0.0/8"], "nodes": ["192.168.0.0/16"]}"#);
    assert_eq!(path, "route_approvers[0].nodes[0]");
    assert_eq!(
        appr(r#"{"routes": [], "nodes": ["*"]}"#),
        (
            "route_approvers[0].routes".to_owned(),
            "must not be empty".to_owned()
        )
    );
    // A broad approver is allowed: only forbidden sub-routes are refused later.
    assert!(
        Policy::parse(r#"{"route_approvers": [{"routes": ["0.0.0.0/0"], "nodes": ["*"]}]}"#)
            .is_ok()
    );
}

#[test]
fn display_includes_path() {
    let err =
        Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["group:x:*"]}]}"#)
            .unwrap_err();
    assert_eq!(err.to_string(), "acls[0].dst[0]: unknown group \"group:x\"");
}

#[test]
fn name_errors() {
    let (path, reason) = invalid(r#"{"tag_owners": {"tag:Exit": []}}"#);
    assert_eq!(path, "tag_owners[\"tag:Exit\"]");
    assert!(
        reason.starts_with("invalid name \"tag:Exit\": character 'E'"),
        "{reason}"
    );
    let (path, reason) =
        invalid_rule(r#"{"action": "accept", "src": ["*"], "dst": ["tag:a_B:*"]}"#);
    assert_eq!(path, "acls[0].dst[0]");
    assert!(reason.starts_with("invalid name \"tag:a_B\""), "{reason}");
    let long = "a".repeat(129);
    let (path, reason) = invalid_rule(&format!(
        r#"{{"action": "accept", "src": ["{long}"], "dst": ["*:*"]}}"#
    ));
    assert_eq!(path, "acls[0].src[0]");
    assert!(
        reason.starts_with(&format!("\"{long}\" is not a selector")),
        "{reason}"
    );
    let (path, reason) = invalid(&format!(r#"{{"groups": {{"group:x": ["{long}"]}}}}"#));
    assert_eq!(path, "groups[\"group:x\"][0]");
    assert!(reason.ends_with("longer than 128 characters"), "{reason}");
    let max = "a".repeat(128);
    assert!(Policy::parse(&format!(r#"{{"groups": {{"group:x": ["{max}"]}}}}"#)).is_ok());
}

#[test]
fn more_approver_errors() {
    let appr = |entry: &str| invalid(&with_decls(&format!(r#""route_approvers": [{entry}]"#)));
    assert_eq!(
        appr(r#"{"routes": ["10.0.0.0/8"], "nodes": []}"#),
        (
            "route_approvers[0].nodes".to_owned(),
            "must not be empty".to_owned()
        )
    );
    let (path, reason) = appr(r#"{"routes": ["10.0.0.0/8"], "nodes": ["*", "tag:nope"]}"#);
    assert_eq!(path, "route_approvers[0].nodes[1]");
    assert!(reason.starts_with("unknown tag"), "{reason}");
    let (path, reason) = appr(r#"{"routes": ["fe80::/64"], "nodes": ["*"]}"#);
    assert_eq!(path, "route_approvers[0].routes[0]");
    assert!(reason.contains("link-local"), "{reason}");
}

#[test]
fn hujson_comments_and_trailing_commas_are_accepted() {
    let text = r#"{
  // Staff may use the exit nodes.
  "groups": {"group:staff": ["bob",],},
  /* The tag's owners. */
  "tag_owners": {"tag:exit": ["alice"]},
  "acls": [
    {"action": "accept", "src": ["group:staff"], "dst": ["tag:exit:*"],}, // trailing
  ],
}"#;
    let policy = Policy::parse(text).unwrap();
    let plain = Policy::parse(
        r#"{"groups": {"group:staff": ["bob"]}, "tag_owners": {"tag:exit": ["alice"]},
            "acls": [{"action": "accept", "src": ["group:staff"], "dst": ["tag:exit:*"]}]}"#,
    )
    .unwrap();
    assert_eq!(policy, plain);
    // The canonical form has no comments and parses to the same policy.
    assert!(!policy.to_json_pretty().contains("//"));
    // Errors still point into the file as written.
    let (line, _, _) = json_error("{\n  // c\n  \"acls\": 5,\n}");
    assert_eq!(line, 3);
}
