//! Arbitrary bytes through the resolver's pure core, as a query from a
//! client and as a reply from an upstream. Besides "never panics", checks
//! that every answer is a parseable response echoing the query id and that
//! a relayed reply carries the client's id.
#![no_main]

use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use rustynet_dns::{Decision, Forward, ResolverConfig, Upstream, UpstreamQuery, fit};
use rustynet_proto::{DnsConfig, DnsRecord, NodeId, SplitDnsRoute};

struct Fixture {
    config: ResolverConfig,
    forward: Box<Forward>,
    sent: UpstreamQuery,
}

fn record(name: &str, ip: &str, node: u64, requested: &str) -> DnsRecord {
    DnsRecord {
        name: name.to_owned(),
        ip: ip.parse().expect("fixture address"),
        node_id: NodeId(node),
        requested_hostname: requested.to_owned(),
        assigned_at: 1_795_341_600,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dns = DnsConfig {
            suffix: "rustynet.internal".to_owned(),
            records: vec![
                record("web.rustynet.internal", "100.64.0.5", 5, "web"),
                record("web-2.rustynet.internal", "100.64.0.7", 7, "web"),
                record("v6.rustynet.internal", "fd7a:115c::6", 6, "v6"),
                record("svc.lab.rustynet.internal", "100.65.1.2", 12, "svc"),
            ],
            split: vec![
                SplitDnsRoute {
                    domain: "corp.example".to_owned(),
                    resolvers: vec!["10.1.1.53".parse().expect("fixture address")],
                },
                SplitDnsRoute {
                    domain: "empty.example".to_owned(),
                    resolvers: vec![],
                },
            ],
        };
        let config = ResolverConfig::new(
            dns,
            Upstream::System(vec!["192.0.2.53:53".parse().expect("fixture")]),
        )
        .expect("fixture config");
        let mut query = Message::new(0x4242, MessageType::Query, OpCode::Query);
        query.add_query(Query::query(
            Name::from_ascii("example.com.").expect("name"),
            RecordType::A,
        ));
        let Decision::Forward(forward) = config.decide(&query.to_vec().expect("encode")) else {
            panic!("fixture query is not forwarded");
        };
        let sent = forward.upstream_query(0x1234);
        Fixture {
            config,
            forward,
            sent,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    match fixture.config.decide(data) {
        Decision::Drop => {}
        Decision::Answer(answer) => {
            let reply = Message::from_vec(&answer.bytes).expect("answers parse");
            assert_eq!(reply.message_type, MessageType::Response);
            assert_eq!(reply.id.to_be_bytes(), [data[0], data[1]]);
            let small = fit(answer.bytes, 512);
            assert!(Message::from_vec(&small).is_ok());
        }
        Decision::Forward(forward) => {
            assert!(!forward.to.is_empty());
            let sent = forward.upstream_query(7);
            assert!(Message::from_vec(sent.bytes()).is_ok());
            assert!(forward.servfail().is_some());
        }
    }
    // The same bytes as an upstream reply to a fixed query.
    if let Some(relayed) = fixture.forward.relay(&fixture.sent, data) {
        let reply = Message::from_vec(&relayed).expect("relayed replies parse");
        assert_eq!(reply.id, 0x4242);
        let _ = fit(relayed, 512);
    }
    let _ = rustynet_dns::servfail(data);
    let _ = rustynet_dns::refused(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fixture.config.explain(text);
    }
});
