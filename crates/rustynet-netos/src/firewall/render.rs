//! Rendering the IR to the JSON batch `nft -j -f -` reads
//! (libnftables-json(5)).
//!
//! Everything that reaches the JSON is either an enum we map to a fixed
//! keyword, a number, an address formatted by the standard library, or a
//! name that passed validation; nothing from the caller is spliced into nft
//! syntax.

use ipnet::IpNet;
use serde_json::{Value, json};

use super::{
    BaseChain, ChainKind, CtState, FirewallError, Hook, Match, Policy, PortProto, PortRange, Rule,
    Ruleset, TupleField, TupleValue, Verdict, validate_ruleset,
};
use crate::IpFamily;

/// Renders the full replacement batch for `ruleset`: create the table if
/// missing, delete it, re-create it with every chain and rule. Applied as
/// one `nft` invocation this is a single kernel transaction, so the old
/// table stays in force until the new one is complete.
pub fn render_ruleset(ruleset: &Ruleset) -> Result<Value, FirewallError> {
    validate_ruleset(ruleset)?;
    let table = ruleset.table.as_str();
    let mut cmds = vec![
        json!({"add": {"table": table_obj(table)}}),
        json!({"delete": {"table": table_obj(table)}}),
        json!({"add": {"table": table_obj(table)}}),
    ];
    // Chains first (all of them), so jumps resolve regardless of order.
    for chain in &ruleset.chains {
        let mut obj = json!({"family": "inet", "table": table, "name": chain.name});
        if let Some(base) = &chain.base {
            add_base(&mut obj, base);
        }
        cmds.push(json!({"add": {"chain": obj}}));
    }
    for chain in &ruleset.chains {
        for rule in &chain.rules {
            cmds.push(json!({"add": {"rule": render_rule(table, &chain.name, rule)}}));
        }
    }
    Ok(json!({"nftables": cmds}))
}

/// The batch that removes the table whether or not it exists.
pub(crate) fn render_removal(table: &str) -> Value {
    json!({"nftables": [
        {"add": {"table": table_obj(table)}},
        {"delete": {"table": table_obj(table)}},
    ]})
}

fn table_obj(table: &str) -> Value {
    json!({"family": "inet", "name": table})
}

fn add_base(obj: &mut Value, base: &BaseChain) {
    let kind = match base.kind {
        ChainKind::Filter => "filter",
        ChainKind::Nat => "nat",
        ChainKind::Route => "route",
    };
    let hook = match base.hook {
        Hook::Input => "input",
        Hook::Output => "output",
        Hook::Forward => "forward",
        Hook::Prerouting => "prerouting",
        Hook::Postrouting => "postrouting",
    };
    let policy = match base.policy {
        Policy::Accept => "accept",
        Policy::Drop => "drop",
    };
    if let Value::Object(map) = obj {
        map.insert("type".into(), kind.into());
        map.insert("hook".into(), hook.into());
        map.insert("prio".into(), base.priority.into());
        map.insert("policy".into(), policy.into());
    }
}

fn render_rule(table: &str, chain: &str, rule: &Rule) -> Value {
    let mut expr: Vec<Value> = rule.matches.iter().map(render_match).collect();
    if rule.counter {
        expr.push(json!({"counter": null}));
    }
    match &rule.verdict {
        Verdict::Accept => expr.push(json!({"accept": null})),
        Verdict::Drop => expr.push(json!({"drop": null})),
        Verdict::Reject => expr.push(json!({"reject": null})),
        Verdict::Jump(target) => expr.push(json!({"jump": {"target": target}})),
        Verdict::Return => expr.push(json!({"return": null})),
        Verdict::Masquerade => expr.push(json!({"masquerade": null})),
        Verdict::SetMark(mark) => {
            expr.push(json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": mark}}))
        }
        Verdict::Continue => {}
    }
    let mut obj = json!({"family": "inet", "table": table, "chain": chain, "expr": expr});
    if let (Some(comment), Value::Object(map)) = (&rule.comment, &mut obj) {
        map.insert("comment".into(), comment.as_str().into());
    }
    obj
}

fn op(negate: bool) -> &'static str {
    if negate { "!=" } else { "==" }
}

fn cmp(negate: bool, left: Value, right: Value) -> Value {
    json!({"match": {"op": op(negate), "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

/// A single element stays bare; several become an anonymous set (nft merges
/// overlapping prefixes in anonymous sets itself).
fn one_or_set(mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        items.remove(0)
    } else {
        json!({"set": items})
    }
}

fn prefix(net: &IpNet) -> Value {
    let net = net.trunc();
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string().into()
    } else {
        json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix_len()}})
    }
}

fn port_range(r: &PortRange) -> Value {
    if r.first == r.last {
        r.first.into()
    } else {
        json!({"range": [r.first, r.last]})
    }
}

fn addr_match(prefixes: &[IpNet], negate: bool, field: &str) -> Value {
    let proto = match prefixes.first().map(IpFamily::of_net) {
        Some(IpFamily::V6) => "ip6",
        _ => "ip",
    };
    cmp(
        negate,
        payload(proto, field),
        one_or_set(prefixes.iter().map(prefix).collect()),
    )
}

fn port_match(proto: PortProto, ports: &[PortRange], negate: bool, field: &str) -> Value {
    let proto = match proto {
        PortProto::Tcp => "tcp",
        PortProto::Udp => "udp",
    };
    cmp(
        negate,
        payload(proto, field),
        one_or_set(ports.iter().map(port_range).collect()),
    )
}

fn render_match(m: &Match) -> Value {
    match m {
        Match::Iifname { name, negate } => cmp(*negate, meta("iifname"), name.as_str().into()),
        Match::Oifname { name, negate } => cmp(*negate, meta("oifname"), name.as_str().into()),
        Match::Saddr { prefixes, negate } => addr_match(prefixes, *negate, "saddr"),
        Match::Daddr { prefixes, negate } => addr_match(prefixes, *negate, "daddr"),
        Match::L4Proto { protos, negate } => cmp(
            *negate,
            meta("l4proto"),
            one_or_set(protos.iter().map(|p| p.number().into()).collect()),
        ),
        Match::Dport {
            proto,
            ports,
            negate,
        } => port_match(*proto, ports, *negate, "dport"),
        Match::Sport {
            proto,
            ports,
            negate,
        } => port_match(*proto, ports, *negate, "sport"),
        Match::Mark {
            value,
            mask,
            negate,
        } => {
            let left = match mask {
                Some(mask) if *mask != u32::MAX => json!({"&": [meta("mark"), mask]}),
                _ => meta("mark"),
            };
            cmp(*negate, left, (*value).into())
        }
        Match::CtState { states } => {
            let names: Vec<Value> = states
                .iter()
                .map(|s| {
                    match s {
                        CtState::Established => "established",
                        CtState::Related => "related",
                        CtState::New => "new",
                        CtState::Invalid => "invalid",
                    }
                    .into()
                })
                .collect();
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": names}})
        }
        Match::NfProto(family) => {
            let name = match family {
                IpFamily::V4 => "ipv4",
                IpFamily::V6 => "ipv6",
            };
            cmp(false, meta("nfproto"), name.into())
        }
        Match::FibDaddrLocal { negate } => cmp(
            *negate,
            json!({"fib": {"result": "type", "flags": ["daddr"]}}),
            "local".into(),
        ),
        Match::IcmpType { types } => cmp(
            false,
            payload("icmp", "type"),
            one_or_set(types.iter().map(|t| (*t).into()).collect()),
        ),
        Match::Icmpv6Type { types } => cmp(
            false,
            payload("icmpv6", "type"),
            one_or_set(types.iter().map(|t| (*t).into()).collect()),
        ),
        Match::Tuple { fields, elements } => tuple_match(fields, elements),
    }
}

/// `f1 . f2 . f3 { v1 . v2 . v3, ... }`; always a set, so a one-element
/// tuple still loads as a lookup (nft infers the interval flag from the
/// prefixes and ranges).
fn tuple_match(fields: &[TupleField], elements: &[Vec<TupleValue>]) -> Value {
    let field = |f: &TupleField| match f {
        TupleField::Saddr(family) | TupleField::Daddr(family) => {
            let proto = match family {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            };
            let name = if matches!(f, TupleField::Saddr(_)) {
                "saddr"
            } else {
                "daddr"
            };
            payload(proto, name)
        }
        TupleField::Dport(PortProto::Tcp) => payload("tcp", "dport"),
        TupleField::Dport(PortProto::Udp) => payload("udp", "dport"),
    };
    let value = |v: &TupleValue| match v {
        TupleValue::Net(net) => prefix(net),
        TupleValue::Ports(r) => port_range(r),
    };
    let concat = |items: Vec<Value>| {
        if items.len() == 1 {
            items.into_iter().next().unwrap_or(Value::Null)
        } else {
            json!({"concat": items})
        }
    };
    let left = concat(fields.iter().map(field).collect());
    let right: Vec<Value> = elements
        .iter()
        .map(|e| concat(e.iter().map(value).collect()))
        .collect();
    cmp(false, left, json!({"set": right}))
}
