use serde_json::json;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn output_chain(rules: Vec<Rule>) -> Ruleset {
    Ruleset {
        table: "rustynet".into(),
        chains: vec![
            Chain {
                name: "out".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Filter,
                    hook: Hook::Output,
                    priority: 0,
                    policy: Policy::Drop,
                }),
                rules,
            },
            Chain {
                name: "sub".into(),
                base: None,
                rules: vec![],
            },
        ],
    }
}

fn rendered_exprs(rule: Rule) -> Vec<serde_json::Value> {
    let batch = render_ruleset(&output_chain(vec![rule])).expect("valid");
    let cmds = batch["nftables"].as_array().expect("array").clone();
    let last = cmds.last().expect("has rule");
    last["add"]["rule"]["expr"]
        .as_array()
        .expect("expr")
        .clone()
}

fn invalid(rules: Vec<Rule>) -> FirewallError {
    validate_ruleset(&output_chain(rules)).expect_err("must be refused")
}

#[test]
fn batch_replaces_the_table_in_one_transaction() {
    let batch = render_ruleset(&output_chain(vec![])).expect("valid");
    let cmds = batch["nftables"].as_array().expect("array");
    let table = json!({"family": "inet", "name": "rustynet"});
    assert_eq!(cmds[0], json!({"add": {"table": table}}));
    assert_eq!(cmds[1], json!({"delete": {"table": table}}));
    assert_eq!(cmds[2], json!({"add": {"table": table}}));
    assert_eq!(
        cmds[3],
        json!({"add": {"chain": {"family": "inet", "table": "rustynet", "name": "out",
            "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}})
    );
    assert_eq!(
        cmds[4],
        json!({"add": {"chain": {"family": "inet", "table": "rustynet", "name": "sub"}}})
    );
    assert_eq!(
        render::render_removal("rustynet")["nftables"]
            .as_array()
            .expect("array")
            .len(),
        2
    );
}

#[test]
fn matches_render_with_negation_sets_and_masks() {
    let exprs = rendered_exprs(
        Rule::new(
            vec![
                Match::Oifname {
                    name: "rn0".into(),
                    negate: true,
                },
                Match::Daddr {
                    prefixes: vec![net("fd02::1/64")],
                    negate: false,
                },
                Match::Saddr {
                    prefixes: vec![net("fd00::1/128"), net("fd01::/16")],
                    negate: true,
                },
                Match::Mark {
                    value: 0x100,
                    mask: Some(0xff00),
                    negate: true,
                },
                Match::Mark {
                    value: 7,
                    mask: Some(u32::MAX),
                    negate: false,
                },
                Match::Sport {
                    proto: PortProto::Udp,
                    ports: vec![PortRange {
                        first: 1000,
                        last: 2000,
                    }],
                    negate: true,
                },
            ],
            Verdict::SetMark(0xca6c),
        )
        .counted(),
    );
    assert_eq!(
        exprs[0],
        json!({"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "rn0"}})
    );
    assert_eq!(
        exprs[1]["match"]["right"],
        json!({"prefix": {"addr": "fd02::", "len": 64}}),
        "host bits are cleared"
    );
    assert_eq!(
        exprs[2]["match"]["left"],
        json!({"payload": {"protocol": "ip6", "field": "saddr"}})
    );
    assert_eq!(
        exprs[2]["match"]["right"],
        json!({"set": ["fd00::1", {"prefix": {"addr": "fd01::", "len": 16}}]})
    );
    assert_eq!(
        exprs[3],
        json!({"match": {"op": "!=", "left": {"&": [{"meta": {"key": "mark"}}, 0xff00]}, "right": 0x100}})
    );
    assert_eq!(
        exprs[4]["match"]["left"],
        json!({"meta": {"key": "mark"}}),
        "a full mask is no mask"
    );
    assert_eq!(exprs[5]["match"]["right"], json!({"range": [1000, 2000]}));
    assert_eq!(exprs[6], json!({"counter": null}));
    assert_eq!(
        exprs[7],
        json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": 0xca6c}})
    );
}

#[test]
fn verdicts_render() {
    let last = |v: Verdict| rendered_exprs(Rule::new(vec![], v)).last().cloned();
    assert_eq!(last(Verdict::Accept), Some(json!({"accept": null})));
    assert_eq!(last(Verdict::Drop), Some(json!({"drop": null})));
    assert_eq!(last(Verdict::Reject), Some(json!({"reject": null})));
    assert_eq!(last(Verdict::Return), Some(json!({"return": null})));
    assert_eq!(last(Verdict::Masquerade), Some(json!({"masquerade": null})));
    assert_eq!(
        last(Verdict::Jump("sub".into())),
        Some(json!({"jump": {"target": "sub"}}))
    );
    assert_eq!(last(Verdict::Continue), None);
}

#[test]
fn names_and_comments_cannot_inject() {
    let err = invalid(vec![Rule::new(
        vec![Match::Iifname {
            name: "eth*".into(),
            negate: false,
        }],
        Verdict::Accept,
    )]);
    assert!(
        matches!(
            err,
            FirewallError::InvalidName(InvalidName::BadChar { ch: '*', .. })
        ),
        "{err}"
    );
    let err = invalid(vec![
        Rule::new(vec![], Verdict::Accept).with_comment("x\" ; flush ruleset"),
    ]);
    assert!(matches!(err, FirewallError::InvalidName(_)), "{err}");
    let err = invalid(vec![
        Rule::new(vec![], Verdict::Accept).with_comment("line\nbreak"),
    ]);
    assert!(matches!(err, FirewallError::InvalidName(_)), "{err}");

    let mut rs = output_chain(vec![]);
    rs.table = "rusty net".into();
    assert!(matches!(
        validate_ruleset(&rs),
        Err(FirewallError::InvalidName(_))
    ));
    let mut rs = output_chain(vec![]);
    rs.chains[1].name = "sub;".into();
    assert!(matches!(
        validate_ruleset(&rs),
        Err(FirewallError::InvalidName(_))
    ));
}

#[test]
fn structure_is_checked() {
    let mut dup = output_chain(vec![]);
    dup.chains[1].name = "out".into();
    assert!(
        matches!(validate_ruleset(&dup), Err(FirewallError::InvalidRuleset(m)) if m.contains("duplicate"))
    );

    for (rules, needle) in [
        (
            vec![Rule::new(vec![], Verdict::Jump("nope".into()))],
            "jump target",
        ),
        (
            vec![Rule::new(vec![], Verdict::Jump("out".into()))],
            "jump target",
        ),
        (
            vec![Rule::new(
                vec![Match::Daddr {
                    prefixes: vec![],
                    negate: false,
                }],
                Verdict::Drop,
            )],
            "empty prefix",
        ),
        (
            vec![Rule::new(
                vec![Match::Daddr {
                    prefixes: vec![net("10.0.0.0/8"), net("fd00::/8")],
                    negate: false,
                }],
                Verdict::Drop,
            )],
            "mixes IPv4 and IPv6",
        ),
        (
            vec![Rule::new(
                vec![
                    Match::NfProto(IpFamily::V6),
                    Match::Daddr {
                        prefixes: vec![net("10.0.0.0/8")],
                        negate: false,
                    },
                ],
                Verdict::Drop,
            )],
            "can never both hold",
        ),
        (
            vec![Rule::new(
                vec![
                    Match::Dport {
                        proto: PortProto::Tcp,
                        ports: vec![PortRange::single(53)],
                        negate: false,
                    },
                    Match::Dport {
                        proto: PortProto::Udp,
                        ports: vec![PortRange::single(53)],
                        negate: false,
                    },
                ],
                Verdict::Drop,
            )],
            "tcp and udp",
        ),
        (
            vec![Rule::new(
                vec![Match::Dport {
                    proto: PortProto::Tcp,
                    ports: vec![PortRange { first: 9, last: 1 }],
                    negate: false,
                }],
                Verdict::Drop,
            )],
            "reversed",
        ),
        (
            vec![Rule::new(
                vec![Match::CtState { states: vec![] }],
                Verdict::Drop,
            )],
            "empty ct state",
        ),
        (
            vec![Rule::new(
                vec![Match::IcmpType { types: vec![] }],
                Verdict::Drop,
            )],
            "empty icmp",
        ),
        (
            vec![Rule::new(
                vec![Match::L4Proto {
                    protos: vec![],
                    negate: false,
                }],
                Verdict::Drop,
            )],
            "empty protocol",
        ),
    ] {
        match validate_ruleset(&output_chain(rules)) {
            Err(FirewallError::InvalidRuleset(msg)) => {
                assert!(msg.contains(needle), "{msg} lacks {needle}")
            }
            other => panic!("expected InvalidRuleset containing {needle:?}, got {other:?}"),
        }
    }

    let mut self_jump = output_chain(vec![]);
    self_jump.chains[1]
        .rules
        .push(Rule::new(vec![], Verdict::Jump("sub".into())));
    assert!(
        matches!(validate_ruleset(&self_jump), Err(FirewallError::InvalidRuleset(m)) if m.contains("itself"))
    );
}

#[test]
fn nft_firewall_refuses_foreign_tables_before_running_anything() {
    let mut fw = NftFirewall::with_binary("rustynet", "/nonexistent/nft").expect("valid name");
    let mut other = output_chain(vec![]);
    other.table = "filter".into();
    assert!(matches!(
        fw.apply(&other),
        Err(FirewallError::TableMismatch { .. })
    ));
    // A valid ruleset gets as far as spawning, which fails with a typed error.
    assert!(matches!(
        fw.apply(&output_chain(vec![])),
        Err(FirewallError::Spawn { .. })
    ));
    assert!(NftFirewall::new("bad name").is_err());
}

#[test]
fn fake_records_validates_and_fails_transactionally() {
    let fake = FakeFirewall::new();
    let mut fw = fake.clone();
    let good = output_chain(vec![Rule::new(vec![], Verdict::Accept)]);
    fw.apply(&good).expect("apply");
    assert_eq!(fake.installed(), Some(good.clone()));

    fake.fail_next_call();
    let newer = output_chain(vec![]);
    assert!(matches!(
        fw.apply(&newer),
        Err(FirewallError::NftFailed { .. })
    ));
    assert_eq!(
        fake.installed(),
        Some(good.clone()),
        "a failed apply keeps the previous table"
    );

    let bad = output_chain(vec![Rule::new(vec![], Verdict::Jump("nope".into()))]);
    assert!(fw.apply(&bad).is_err());
    assert_eq!(fake.installed(), Some(good.clone()));

    assert!(fw.current().expect("current").is_some());
    fw.remove().expect("remove");
    fw.remove().expect("remove is idempotent");
    assert_eq!(fw.current().expect("current"), None);
    assert_eq!(
        fake.calls(),
        vec![
            FirewallCall::Apply(good),
            FirewallCall::Apply(newer),
            FirewallCall::Apply(bad),
            FirewallCall::Current,
            FirewallCall::Remove,
            FirewallCall::Remove,
            FirewallCall::Current,
        ]
    );
}
