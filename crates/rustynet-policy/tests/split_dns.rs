//! The `dns.split` section: parsed, validated with located errors, kept out
//! of the canonical form while empty, and handed to every node's view.
#![allow(clippy::panic)] // helpers outside #[test] fns fail the test by panicking

use std::net::IpAddr;

use rustynet_policy::{NodeFacts, Policy, PolicyError, compile};
use rustynet_proto::{NodeId, SplitDnsRoute};

fn invalid(text: &str) -> (String, String) {
    match Policy::parse(text) {
        Err(PolicyError::Invalid { path, reason }) => (path, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("bad test address {text}"))
}

#[test]
fn split_routes_parse_sorted_and_round_trip() {
    let text = r#"{"dns": {"split": {
        "lab.example": ["192.168.77.53", "fd00:77::53"],
        "corp.example": ["203.0.113.54"]
    }}}"#;
    let policy = Policy::parse(text).unwrap();
    assert_eq!(
        policy.split_dns(),
        [
            SplitDnsRoute {
                domain: "corp.example".into(),
                resolvers: vec![ip("203.0.113.54")],
            },
            SplitDnsRoute {
                domain: "lab.example".into(),
                resolvers: vec![ip("192.168.77.53"), ip("fd00:77::53")],
            },
        ]
    );
    let canonical = policy.to_json_pretty();
    assert!(canonical.contains("\"split\""), "{canonical}");
    assert_eq!(Policy::parse(&canonical).unwrap(), policy);

    // Policies that never mention DNS keep their canonical text.
    let plain = Policy::parse(r#"{"acls": []}"#).unwrap();
    assert!(!plain.to_json_pretty().contains("dns"));
    assert!(plain.split_dns().is_empty());
    let empty = Policy::parse(r#"{"dns": {}}"#).unwrap();
    assert_eq!(empty, Policy::default());
}

#[test]
fn split_route_errors_are_located() {
    let cases = [
        (
            r#"{"Corp.example": ["192.0.2.53"]}"#,
            r#"dns.split["Corp.example"]"#,
        ),
        (
            r#"{"corp.example.": ["192.0.2.53"]}"#,
            r#"dns.split["corp.example."]"#,
        ),
        (r#"{"": ["192.0.2.53"]}"#, r#"dns.split[""]"#),
        (r#"{"corp.example": []}"#, r#"dns.split["corp.example"]"#),
        (
            r#"{"corp.example": ["192.0.2.53:53"]}"#,
            r#"dns.split["corp.example"][0]"#,
        ),
        (
            r#"{"corp.example": ["192.0.2.53", "100.100.100.100"]}"#,
            r#"dns.split["corp.example"][1]"#,
        ),
        (
            r#"{"corp.example": ["127.0.0.1"]}"#,
            r#"dns.split["corp.example"][0]"#,
        ),
        (
            r#"{"corp.example": ["0.0.0.0"]}"#,
            r#"dns.split["corp.example"][0]"#,
        ),
        (
            r#"{"corp.example": ["224.0.0.251"]}"#,
            r#"dns.split["corp.example"][0]"#,
        ),
        (
            r#"{"corp.example": ["192.0.2.1","192.0.2.2","192.0.2.3","192.0.2.4","192.0.2.5","192.0.2.6","192.0.2.7","192.0.2.8","192.0.2.9"]}"#,
            r#"dns.split["corp.example"]"#,
        ),
    ];
    for (split, want) in cases {
        let (path, reason) = invalid(&format!(r#"{{"dns": {{"split": {split}}}}}"#));
        assert_eq!(path, want, "{split}: {reason}");
    }
    let many: Vec<String> = (0..257)
        .map(|i| format!(r#""d{i}.example": ["192.0.2.53"]"#))
        .collect();
    let (path, _) = invalid(&format!(
        r#"{{"dns": {{"split": {{{}}}}}}}"#,
        many.join(",")
    ));
    assert_eq!(path, "dns.split");
}

#[test]
fn split_section_shape_is_strict() {
    for text in [
        r#"{"dns": {"splits": {}}}"#,
        r#"{"dns": [{"split": {}}]}"#,
        r#"{"dns": {"split": {"a.example": ["192.0.2.1"], "a.example": ["192.0.2.2"]}}}"#,
        r#"{"dns": {"split": {"a.example": "192.0.2.1"}}}"#,
    ] {
        assert!(
            matches!(Policy::parse(text), Err(PolicyError::Json { .. })),
            "{text} must be refused as a shape error"
        );
    }
}

#[test]
fn every_view_carries_the_split_routes() {
    let policy = Policy::parse(
        r#"{"acls": [{"action": "accept", "src": ["alice"], "dst": ["bob:*"]}],
            "dns": {"split": {"corp.example": ["203.0.113.54"]}}}"#,
    )
    .unwrap();
    let node = |id: u64, user: &str| NodeFacts {
        id: NodeId(id),
        hostname: user.into(),
        user: user.into(),
        tags: vec![],
        tunnel_ip: format!("100.64.0.{id}")
            .parse()
            .unwrap_or_else(|_| panic!()),
        advertise_exit_node: false,
        advertised_routes: vec![],
        lan_access: false,
        admin_routes: Default::default(),
    };
    let views = compile(
        &policy,
        &[node(1, "alice"), node(2, "bob"), node(3, "carol")],
    );
    assert_eq!(views.len(), 3);
    for view in views.values() {
        assert_eq!(view.split_dns, policy.split_dns());
    }
}
