//! Unit tests of [`ResolverConfig::decide`] and the forwarding helpers.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;

use crate::testutil::*;
use crate::{AnswerKind, ConfigError, Decision, Forward, MAGIC_TTL, ResolverConfig, Upstream, Via};

fn forward(decision: Decision) -> Box<Forward> {
    match decision {
        Decision::Forward(forward) => forward,
        other => panic!("expected a forward, got {other:?}"),
    }
}

fn kind(decision: &Decision) -> AnswerKind {
    match decision {
        Decision::Answer(answer) => answer.kind,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn soa_owner(message: &Message) -> String {
    match message.authorities.as_slice() {
        [record] => {
            let RData::SOA(soa) = &record.data else {
                panic!("authority is not a SOA: {record:?}");
            };
            assert_eq!(soa.minimum, MAGIC_TTL);
            record.name.to_ascii()
        }
        other => panic!("expected one SOA in authority, got {other:?}"),
    }
}

#[test]
fn magic_name_a_record() {
    let config = sample_system();
    let reply = answer(config.decide(&query("web-2.rustynet.internal.", RecordType::A)));
    assert_eq!(reply.id, 0x4242);
    assert_eq!(reply.message_type, MessageType::Response);
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert!(reply.authoritative);
    assert!(reply.recursion_desired);
    assert_eq!(ips(&reply), vec!["100.64.0.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(reply.answers[0].ttl, MAGIC_TTL);
    assert_eq!(reply.answers[0].dns_class, DNSClass::IN);
    assert!(reply.authorities.is_empty());
    assert_eq!(reply.queries.len(), 1);
}

#[test]
fn names_are_case_insensitive_and_answers_echo_the_case() {
    let config = sample_system();
    let reply = answer(config.decide(&query("WeB-2.RustyNet.INTERNAL.", RecordType::A)));
    assert_eq!(ips(&reply), vec!["100.64.0.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        reply.queries[0].name().to_ascii(),
        "WeB-2.RustyNet.INTERNAL."
    );
    assert_eq!(reply.answers[0].name.to_ascii(), "WeB-2.RustyNet.INTERNAL.");
}

#[test]
fn aaaa_for_ipv4_only_name_is_nodata_with_soa() {
    let config = sample_system();
    let decision = config.decide(&query("web.rustynet.internal.", RecordType::AAAA));
    assert_eq!(kind(&decision), AnswerKind::Local);
    let reply = answer(decision);
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert!(reply.authoritative);
    assert_eq!(soa_owner(&reply), "rustynet.internal.");
}

#[test]
fn ipv6_records_answer_aaaa_only() {
    let config = sample_system();
    let reply = answer(config.decide(&query("v6only.rustynet.internal.", RecordType::AAAA)));
    assert_eq!(
        ips(&reply),
        vec!["fd7a:115c::11".parse::<IpAddr>().unwrap()]
    );
    let reply = answer(config.decide(&query("v6only.rustynet.internal.", RecordType::A)));
    assert!(reply.answers.is_empty());
    assert_eq!(reply.response_code, ResponseCode::NoError);
}

#[test]
fn other_types_for_existing_names_are_nodata_and_any_gives_addresses() {
    let config = sample_system();
    for qtype in [
        RecordType::MX,
        RecordType::TXT,
        RecordType::PTR,
        RecordType::HTTPS,
    ] {
        let reply = answer(config.decide(&query("db.rustynet.internal.", qtype)));
        assert_eq!(reply.response_code, ResponseCode::NoError, "{qtype}");
        assert!(reply.answers.is_empty(), "{qtype}");
        assert_eq!(soa_owner(&reply), "rustynet.internal.");
    }
    let reply = answer(config.decide(&query("db.rustynet.internal.", RecordType::ANY)));
    assert_eq!(ips(&reply), vec!["100.64.0.9".parse::<IpAddr>().unwrap()]);
}

#[test]
fn unknown_names_under_the_suffix_are_nxdomain_never_forwarded() {
    let config = sample_system();
    for name in [
        "nope.rustynet.internal.",
        "x.web.rustynet.internal.",
        "we_b.rustynet.internal.",
        "web\\.2.rustynet.internal.",
    ] {
        let decision = config.decide(&query(name, RecordType::A));
        assert_eq!(kind(&decision), AnswerKind::Local, "{name}");
        let reply = answer(decision);
        assert_eq!(reply.response_code, ResponseCode::NXDomain, "{name}");
        assert!(reply.authoritative);
        assert_eq!(soa_owner(&reply), "rustynet.internal.");
    }
}

#[test]
fn apex_and_empty_non_terminals_are_nodata_and_apex_has_soa() {
    let config = sample_system();
    for name in [
        "rustynet.internal.",
        "RUSTYNET.internal.",
        "lab.rustynet.internal.",
    ] {
        let reply = answer(config.decide(&query(name, RecordType::A)));
        assert_eq!(reply.response_code, ResponseCode::NoError, "{name}");
        assert!(reply.answers.is_empty(), "{name}");
        assert_eq!(soa_owner(&reply), "rustynet.internal.");
    }
    let reply = answer(config.decide(&query("rustynet.internal.", RecordType::SOA)));
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].record_type(), RecordType::SOA);
    assert!(reply.authorities.is_empty());
    let reply = answer(config.decide(&query("svc.lab.rustynet.internal.", RecordType::A)));
    assert_eq!(ips(&reply), vec!["100.65.1.2".parse::<IpAddr>().unwrap()]);
}

#[test]
fn other_classes_and_zone_transfers_are_refused_for_our_zones() {
    let config = sample_system();
    let mut message = query_msg("web.rustynet.internal.", RecordType::A);
    message.queries[0].set_query_class(DNSClass::CH);
    let reply = answer(config.decide(&message.to_vec().unwrap()));
    assert_eq!(reply.response_code, ResponseCode::Refused);
    let reply = answer(config.decide(&query("rustynet.internal.", RecordType::AXFR)));
    assert_eq!(reply.response_code, ResponseCode::Refused);
}

#[test]
fn reverse_lookups_in_the_tunnel_range_are_answered_locally() {
    let config = sample_system();
    let reply = answer(config.decide(&query("7.0.64.100.in-addr.arpa.", RecordType::PTR)));
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert!(reply.authoritative);
    let targets: Vec<String> = reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::PTR(PTR(name)) => name.to_ascii(),
            other => panic!("not a PTR: {other:?}"),
        })
        .collect();
    assert_eq!(targets, vec!["web-2.rustynet.internal."]);

    // Unknown addresses: NXDOMAIN, never forwarded, even with upstreams configured.
    for (name, apex) in [
        ("8.0.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
        ("1.1.127.100.in-addr.arpa.", "127.100.in-addr.arpa."),
        ("x.7.0.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
        ("07.0.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
        ("5.64.100.in-addr.arpa.", "64.100.in-addr.arpa."),
    ] {
        let decision = config.decide(&query(name, RecordType::PTR));
        assert_eq!(kind(&decision), AnswerKind::Local, "{name}");
        let reply = answer(decision);
        assert_eq!(reply.response_code, ResponseCode::NXDomain, "{name}");
        assert_eq!(soa_owner(&reply), apex, "{name}");
    }

    // Prefixes of existing addresses and the zone apex: NODATA.
    for name in [
        "0.64.100.in-addr.arpa.",
        "64.100.in-addr.arpa.",
        "1.65.100.in-addr.arpa.",
    ] {
        let reply = answer(config.decide(&query(name, RecordType::PTR)));
        assert_eq!(reply.response_code, ResponseCode::NoError, "{name}");
        assert!(reply.answers.is_empty(), "{name}");
    }
    let reply = answer(config.decide(&query("7.0.64.100.in-addr.arpa.", RecordType::A)));
    assert!(reply.answers.is_empty());
    assert_eq!(reply.response_code, ResponseCode::NoError);

    // Outside 100.64.0.0/10: not ours, forwarded.
    for name in [
        "1.2.0.192.in-addr.arpa.",
        "1.0.128.100.in-addr.arpa.",
        "1.0.63.100.in-addr.arpa.",
    ] {
        let fwd = forward(config.decide(&query(name, RecordType::PTR)));
        assert_eq!(fwd.via, Via::System, "{name}");
    }
}

#[test]
fn split_routes_longest_suffix_wins() {
    let config = sample_system();
    let cases: [(&str, &str, Vec<&str>); 4] = [
        ("host.corp.example.", "corp.example", vec!["10.1.1.53:53"]),
        ("corp.example.", "corp.example", vec!["10.1.1.53:53"]),
        (
            "a.Internal.corp.example.",
            "internal.corp.example",
            vec!["10.1.2.53:53", "10.1.2.54:53"],
        ),
        (
            "internal.corp.example.",
            "internal.corp.example",
            vec!["10.1.2.53:53", "10.1.2.54:53"],
        ),
    ];
    for (name, domain, to) in cases {
        let fwd = forward(config.decide(&query(name, RecordType::A)));
        assert_eq!(fwd.via, Via::Split(domain.to_owned()), "{name}");
        let to: Vec<SocketAddr> = to.iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(fwd.to, to, "{name}");
    }
    let fwd = forward(config.decide(&query("notcorp.example.", RecordType::A)));
    assert_eq!(fwd.via, Via::System);
    // A route with no resolvers fails closed instead of falling through.
    let decision = config.decide(&query("x.empty.example.", RecordType::A));
    assert_eq!(kind(&decision), AnswerKind::FailClosed);
    assert_eq!(answer(decision).response_code, ResponseCode::ServFail);
}

#[test]
fn upstream_choice_for_other_names() {
    let exit: SocketAddr = "100.64.0.9:53".parse().unwrap();
    let config = sample(Upstream::Exit {
        addr: exit,
        name: "db".to_owned(),
    });
    let fwd = forward(config.decide(&query("example.com.", RecordType::A)));
    assert_eq!(fwd.to, vec![exit]);
    assert_eq!(fwd.via, Via::Exit("db".to_owned()));
    assert_eq!(fwd.query_id, 0x4242);
    assert_eq!(fwd.question.name().to_ascii(), "example.com.");

    let fwd = forward(sample_system().decide(&query("example.com.", RecordType::AAAA)));
    assert_eq!(fwd.to, vec![system()]);

    for upstream in [Upstream::None, Upstream::System(vec![])] {
        let decision = sample(upstream).decide(&query("example.com.", RecordType::A));
        assert_eq!(kind(&decision), AnswerKind::FailClosed);
        let reply = answer(decision);
        assert_eq!(reply.response_code, ResponseCode::ServFail);
        assert_eq!(reply.id, 0x4242);
        assert_eq!(reply.queries[0].name().to_ascii(), "example.com.");
    }
}

#[test]
fn malformed_queries() {
    let config = sample_system();
    // Too short to carry an id: dropped.
    assert!(matches!(config.decide(&[]), Decision::Drop));
    assert!(matches!(config.decide(&[0x12; 11]), Decision::Drop));

    // Responses are never answered.
    let mut response = query_msg("web.rustynet.internal.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(matches!(
        config.decide(&response.to_vec().unwrap()),
        Decision::Drop
    ));

    let header = |id: u16, flags: [u8; 2], qdcount: u16| {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&flags);
        bytes.extend_from_slice(&qdcount.to_be_bytes());
        bytes.extend_from_slice(&[0; 6]);
        bytes
    };
    let expect = |bytes: &[u8], id: u16, rcode: ResponseCode, expected_kind: AnswerKind| {
        let decision = config.decide(bytes);
        assert_eq!(kind(&decision), expected_kind);
        let reply = answer(decision);
        assert_eq!(reply.id, id);
        assert_eq!(reply.response_code, rcode);
        assert_eq!(reply.message_type, MessageType::Response);
    };
    // QDCOUNT 0, 2 and 65535 (the last must not allocate for 65535 questions).
    expect(
        &header(0x0101, [1, 0], 0),
        0x0101,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
    let mut two = query_msg("a.example.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("b.example.").unwrap(),
        RecordType::A,
    ));
    expect(
        &two.to_vec().unwrap(),
        0x4242,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
    expect(
        &header(0x0303, [1, 0], u16::MAX),
        0x0303,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
    // QDCOUNT 1 but no question bytes.
    expect(
        &header(0x0404, [1, 0], 1),
        0x0404,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
    // Opcodes other than QUERY: NOTIFY (4), UPDATE (5), unassigned (7), STATUS (2).
    for opcode in [4u8, 5, 7, 2] {
        let bytes = header(0x0505, [opcode << 3, 0], 1);
        expect(
            &bytes,
            0x0505,
            ResponseCode::NotImp,
            AnswerKind::NotImplemented,
        );
    }
    // A truncated question.
    let full = query("web.rustynet.internal.", RecordType::A);
    for cut in 13..full.len() {
        expect(
            &full[..cut],
            0x4242,
            ResponseCode::FormErr,
            AnswerKind::Malformed,
        );
    }
    // Label too long (64) and a name over 255 octets.
    let mut long_label = header(0x0606, [1, 0], 1);
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    expect(
        &long_label,
        0x0606,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
    let mut long_name = header(0x0707, [1, 0], 1);
    for _ in 0..5 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'a'; 63]);
    }
    long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
    expect(
        &long_name,
        0x0707,
        ResponseCode::FormErr,
        AnswerKind::Malformed,
    );
}

#[test]
fn compression_pointer_loops_are_rejected() {
    let config = sample_system();
    let header = |id: u16| {
        let mut bytes = id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        bytes
    };
    // Pointer to itself (offset 12).
    let mut to_self = header(0x0a0a);
    to_self.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    // Pointer forward, to a label that points back at the first pointer.
    let mut forward_ptr = header(0x0b0b);
    forward_ptr.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1, 0xc0, 12]);
    // A label followed by a pointer back to the label's start.
    let mut back_loop = header(0x0c0c);
    back_loop.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]);
    // Pointer past the end of the packet.
    let mut past_end = header(0x0d0d);
    past_end.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 1]);
    for (bytes, id) in [
        (to_self, 0x0a0a),
        (forward_ptr, 0x0b0b),
        (back_loop, 0x0c0c),
        (past_end, 0x0d0d),
    ] {
        let reply = answer(config.decide(&bytes));
        assert_eq!(reply.id, id);
        assert_eq!(reply.response_code, ResponseCode::FormErr);
    }
}

#[test]
fn edns_is_echoed_and_sets_the_udp_limit() {
    let config = sample_system();
    let Decision::Answer(plain) = config.decide(&query("web.rustynet.internal.", RecordType::A))
    else {
        panic!("expected an answer");
    };
    assert_eq!(plain.udp_limit, 512);
    assert!(Message::from_vec(&plain.bytes).unwrap().edns.is_none());

    let Decision::Answer(with_edns) =
        config.decide(&query_edns("web.rustynet.internal.", RecordType::A, 4096))
    else {
        panic!("expected an answer");
    };
    assert_eq!(with_edns.udp_limit, 4096);
    let reply = Message::from_vec(&with_edns.bytes).unwrap();
    assert_eq!(
        reply.edns.as_ref().map(Edns::max_payload),
        Some(crate::EDNS_PAYLOAD)
    );

    let fwd = forward(config.decide(&query_edns("example.com.", RecordType::A, 1400)));
    assert_eq!(fwd.udp_limit, 1400);

    // Unknown EDNS version: BADVERS.
    let mut message = query_msg("web.rustynet.internal.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    message.set_edns(edns);
    let decision = config.decide(&message.to_vec().unwrap());
    assert_eq!(kind(&decision), AnswerKind::Malformed);
    // BADVERS and BADSIG share the value 16; hickory decodes it as the latter.
    assert_eq!(u16::from(answer(decision).response_code), 16);
}

/// An upstream reply to `query` with the given id.
fn upstream_reply(query: &[u8], id: u16, ip: [u8; 4]) -> Message {
    let request = Message::from_vec(query).unwrap();
    let mut reply = Message::response(id, OpCode::Query);
    reply.add_queries(request.queries.clone());
    reply.add_answer(Record::from_rdata(
        request.queries[0].name().clone(),
        300,
        RData::A(A(ip.into())),
    ));
    reply
}

#[test]
fn forward_rewrites_ids_and_relays_only_matching_replies() {
    let config = sample_system();
    // Trailing garbage after the question is not forwarded.
    let mut client_query = query("Example.com.", RecordType::A);
    client_query.extend_from_slice(b"trailing");
    let fwd = forward(config.decide(&client_query));
    let sent = fwd.upstream_query(0x9999);
    assert_eq!(sent.id(), 0x9999);
    assert_eq!(&sent.bytes()[..2], &[0x99, 0x99]);
    assert_eq!(&sent.bytes()[2..], &client_query[2..client_query.len() - 8]);

    let good = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1])
        .to_vec()
        .unwrap();
    assert!(sent.matches(&good));
    let relayed = Message::from_vec(&fwd.relay(&sent, &good).unwrap()).unwrap();
    assert_eq!(relayed.id, 0x4242);
    assert_eq!(ips(&relayed), vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);

    // 0x20 case randomisation by the upstream is accepted.
    let mut recased = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1]);
    recased.queries[0].set_name(Name::from_ascii("EXAMPLE.COM.").unwrap());
    assert!(fwd.relay(&sent, &recased.to_vec().unwrap()).is_some());

    // Wrong id, other name, other type, other class, a query, garbage: rejected.
    let wrong_id = upstream_reply(sent.bytes(), 0x9998, [192, 0, 2, 1]);
    let mut other_name = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1]);
    other_name.queries[0].set_name(Name::from_ascii("example.org.").unwrap());
    let mut other_type = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1]);
    other_type.queries[0].set_query_type(RecordType::AAAA);
    let mut other_class = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1]);
    other_class.queries[0].set_query_class(DNSClass::CH);
    let mut not_response = upstream_reply(sent.bytes(), 0x9999, [192, 0, 2, 1]);
    not_response.metadata.message_type = MessageType::Query;
    let mut no_question_ok = Message::response(0x9999, OpCode::Query);
    no_question_ok.metadata.response_code = ResponseCode::NoError;
    for bad in [
        wrong_id,
        other_name,
        other_type,
        other_class,
        not_response,
        no_question_ok,
    ] {
        let bytes = bad.to_vec().unwrap();
        assert!(!sent.matches(&bytes), "{bad:?}");
        assert!(fwd.relay(&sent, &bytes).is_none());
    }
    assert!(fwd.relay(&sent, &[0x99, 0x99, 0x80]).is_none());

    // An error reply without a question becomes the same code with the client's question.
    let refused = Message::error_msg(0x9999, OpCode::Query, ResponseCode::Refused);
    let relayed =
        Message::from_vec(&fwd.relay(&sent, &refused.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(relayed.response_code, ResponseCode::Refused);
    assert_eq!(relayed.id, 0x4242);
    assert_eq!(relayed.queries[0].name().to_ascii(), "Example.com.");

    let servfail = Message::from_vec(&fwd.servfail().unwrap()).unwrap();
    assert_eq!(servfail.response_code, ResponseCode::ServFail);
    assert_eq!(servfail.id, 0x4242);
    assert_eq!(servfail.queries.len(), 1);
}

#[test]
fn config_is_validated() {
    let mut dns = sample_dns();
    dns.records[0].name = "web.other.internal".to_owned();
    assert!(matches!(
        ResolverConfig::new(dns, Upstream::None),
        Err(ConfigError::OutsideSuffix { .. })
    ));
    let mut dns = sample_dns();
    dns.records[0].name = "rustynet.internal".to_owned();
    assert!(matches!(
        ResolverConfig::new(dns, Upstream::None),
        Err(ConfigError::OutsideSuffix { .. })
    ));
    let mut dns = sample_dns();
    dns.records[0].name = "Web.rustynet.internal".to_owned();
    assert_eq!(
        ResolverConfig::new(dns, Upstream::None).err(),
        Some(ConfigError::Name("Web.rustynet.internal".to_owned()))
    );
    let mut dns = sample_dns();
    dns.suffix = "bad_suffix".to_owned();
    assert!(matches!(
        ResolverConfig::new(dns, Upstream::None),
        Err(ConfigError::Name(_))
    ));
    let mut dns = sample_dns();
    dns.split[0].domain = "x.rustynet.internal".to_owned();
    assert!(matches!(
        ResolverConfig::new(dns, Upstream::None),
        Err(ConfigError::SplitOverlapsSuffix(_))
    ));
    // A suffix that merely ends with the same characters is not "under" it.
    let mut dns = sample_dns();
    dns.split[0].domain = "notrustynet.internal".to_owned();
    assert!(ResolverConfig::new(dns, Upstream::None).is_ok());
}

#[test]
fn with_upstream_keeps_records() {
    let config = sample(Upstream::None).with_upstream(Upstream::System(vec![system()]));
    assert!(matches!(
        config.decide(&query("example.com.", RecordType::A)),
        Decision::Forward(_)
    ));
    let reply = answer(config.decide(&query("web.rustynet.internal.", RecordType::A)));
    assert_eq!(ips(&reply), vec!["100.64.0.5".parse::<IpAddr>().unwrap()]);
}

/// Every answer is a well-formed response to the packet it answers.
fn check_decision(config: &ResolverConfig, packet: &[u8]) {
    match config.decide(packet) {
        Decision::Drop => {}
        Decision::Answer(answer) => {
            let reply = Message::from_vec(&answer.bytes).unwrap();
            assert_eq!(reply.message_type, MessageType::Response);
            assert_eq!(reply.id.to_be_bytes(), [packet[0], packet[1]]);
            assert!(answer.udp_limit >= 512);
        }
        Decision::Forward(forward) => {
            assert!(!forward.to.is_empty());
            let sent = forward.upstream_query(1);
            let reparsed = Message::from_vec(sent.bytes()).unwrap();
            assert_eq!(reparsed.queries.len(), 1);
        }
    }
}

proptest! {
    #[test]
    fn decide_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_decision(&sample_system(), &bytes);
    }

    #[test]
    fn decide_never_panics_on_mutated_queries(
        name in "[a-zA-Z0-9]{1,10}(-[a-zA-Z0-9]{1,8})?(\\.[a-zA-Z0-9]{1,20}){0,3}\\.(rustynet\\.internal|corp\\.example|in-addr\\.arpa|com)\\.",
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = query_edns(&name, RecordType::A, 1232);
        for (at, value) in flips {
            let index = at % bytes.len();
            bytes[index] = value;
        }
        let cut = 12 + cut % (bytes.len() - 11);
        bytes.truncate(cut);
        check_decision(&sample_system(), &bytes);
    }
}
