//! Shared fixtures for the unit tests: a small tailnet and query builders.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rustynet_proto::{DnsConfig, DnsRecord, NodeId, SplitDnsRoute};

use crate::{Decision, ResolverConfig, Upstream};

/// 2026-11-22T10:00:00Z.
pub(crate) const RENAMED_AT: i64 = 1_795_341_600;
/// 2026-11-22T09:00:00Z.
pub(crate) const FIRST_AT: i64 = 1_795_338_000;

pub(crate) fn record(name: &str, ip: &str, node: u64, requested: &str, at: i64) -> DnsRecord {
    DnsRecord {
        name: name.to_owned(),
        ip: ip.parse().unwrap(),
        node_id: NodeId(node),
        requested_hostname: requested.to_owned(),
        assigned_at: at,
    }
}

pub(crate) fn sample_dns() -> DnsConfig {
    DnsConfig {
        suffix: "rustynet.internal".to_owned(),
        records: vec![
            record("web.rustynet.internal", "100.64.0.5", 5, "web", FIRST_AT),
            record(
                "web-2.rustynet.internal",
                "100.64.0.7",
                7,
                "web",
                RENAMED_AT,
            ),
            record("db.rustynet.internal", "100.64.0.9", 9, "db", FIRST_AT),
            record(
                "v6only.rustynet.internal",
                "fd7a:115c::11",
                11,
                "v6only",
                FIRST_AT,
            ),
            record(
                "svc.lab.rustynet.internal",
                "100.65.1.2",
                12,
                "svc",
                FIRST_AT,
            ),
        ],
        split: vec![
            SplitDnsRoute {
                domain: "corp.example".to_owned(),
                resolvers: vec!["10.1.1.53".parse().unwrap()],
            },
            SplitDnsRoute {
                domain: "internal.corp.example".to_owned(),
                resolvers: vec!["10.1.2.53".parse().unwrap(), "10.1.2.54".parse().unwrap()],
            },
            SplitDnsRoute {
                domain: "empty.example".to_owned(),
                resolvers: vec![],
            },
        ],
    }
}

pub(crate) fn system() -> SocketAddr {
    "192.0.2.53:53".parse().unwrap()
}

pub(crate) fn sample(upstream: Upstream) -> ResolverConfig {
    ResolverConfig::new(sample_dns(), upstream).unwrap()
}

pub(crate) fn sample_system() -> ResolverConfig {
    sample(Upstream::System(vec![system()]))
}

pub(crate) fn query_msg(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

pub(crate) fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    query_msg(name, qtype).to_vec().unwrap()
}

pub(crate) fn query_edns(name: &str, qtype: RecordType, payload: u16) -> Vec<u8> {
    let mut message = query_msg(name, qtype);
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// The parsed local answer; panics on any other decision.
pub(crate) fn answer(decision: Decision) -> Message {
    match decision {
        Decision::Answer(answer) => Message::from_vec(&answer.bytes).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

pub(crate) fn ips(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| r.data.ip_addr())
        .collect()
}
