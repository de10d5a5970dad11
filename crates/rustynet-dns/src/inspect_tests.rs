//! Unit tests of `explain` and `inspect`.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustynet_proto::netmap::MAGIC_DNS_IP;

use crate::testutil::*;
use crate::{Decision, Upstream};

#[test]
fn explains_a_renamed_node() {
    let config = sample_system();
    let expected = "web-2.rustynet.internal -> 100.64.0.7: node 7 asked for \"web\"; the name was \
                    taken, so control renamed it web-2 at enrollment (2026-11-22T10:00:00Z)";
    for spelling in [
        "web-2.rustynet.internal",
        "WEB-2.RustyNet.internal.",
        " web-2 ",
    ] {
        let explanation = config.explain(spelling);
        assert_eq!(explanation.text, expected, "{spelling:?}");
        assert_eq!(explanation.records.len(), 1);
        assert_eq!(
            explanation.records[0].ip,
            "100.64.0.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(explanation.records[0].name, "web-2.rustynet.internal");
    }
    let first = config.explain("web");
    assert_eq!(
        first.text,
        "web.rustynet.internal -> 100.64.0.5: node 5 asked for \"web\" and got it at enrollment \
         (2026-11-22T09:00:00Z)"
    );
}

#[test]
fn explains_unknown_and_structural_names() {
    let config = sample_system();
    assert_eq!(
        config.explain("nope.rustynet.internal").text,
        "nope.rustynet.internal is unknown under rustynet.internal: NXDOMAIN (no visible node has that name)"
    );
    assert!(config.explain("nope.rustynet.internal").records.is_empty());
    assert!(config.explain("rustynet.internal").text.contains("apex"));
    assert!(
        config
            .explain("lab.rustynet.internal")
            .text
            .contains("NODATA")
    );
    assert!(
        config
            .explain("bad name!")
            .text
            .contains("not a valid DNS name")
    );
}

#[test]
fn explains_reverse_lookups() {
    let config = sample_system();
    let by_ip = config.explain("100.64.0.7");
    assert!(
        by_ip.text.starts_with(
            "100.64.0.7 -> web-2.rustynet.internal (7.0.64.100.in-addr.arpa PTR): node 7"
        ),
        "{}",
        by_ip.text
    );
    assert_eq!(by_ip.records.len(), 1);
    let by_name = config.explain("7.0.64.100.in-addr.arpa");
    assert!(
        by_name.text.contains("web-2.rustynet.internal (PTR)"),
        "{}",
        by_name.text
    );
    let unknown = config.explain("100.64.0.99");
    assert!(unknown.text.contains("NXDOMAIN"), "{}", unknown.text);
    assert!(unknown.text.contains("never forwarded"), "{}", unknown.text);
    let outside = config.explain("192.0.2.1");
    assert_eq!(
        outside.text,
        "192.0.2.1: reverse lookup 1.2.0.192.in-addr.arpa -> system resolvers 192.0.2.53:53"
    );
    let v6 = config.explain("2001:db8::1");
    assert!(
        v6.text
            .contains("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
        "{}",
        v6.text
    );
}

#[test]
fn explains_the_path_of_outside_names() {
    let exit: SocketAddr = "100.64.0.9:53".parse().unwrap();
    let via_exit = sample(Upstream::Exit {
        addr: exit,
        name: "db".to_owned(),
    });
    assert_eq!(
        via_exit.explain("Example.COM.").text,
        "example.com -> exit node db's resolver 100.64.0.9:53 (through the tunnel)"
    );
    assert_eq!(
        sample_system().explain("example.com").text,
        "example.com -> system resolvers 192.0.2.53:53"
    );
    assert!(
        sample(Upstream::None)
            .explain("example.com")
            .text
            .contains("SERVFAIL")
    );
    assert!(
        sample(Upstream::System(vec![]))
            .explain("example.com")
            .text
            .contains("SERVFAIL")
    );
    assert_eq!(
        sample_system().explain("a.internal.corp.example").text,
        "a.internal.corp.example -> split-DNS route internal.corp.example -> 10.1.2.53:53, 10.1.2.54:53"
    );
    assert!(
        sample_system()
            .explain("x.empty.example")
            .text
            .contains("SERVFAIL")
    );
}

#[test]
fn inspect_document() {
    let config = sample(Upstream::Exit {
        addr: "100.64.0.9:53".parse().unwrap(),
        name: "db".to_owned(),
    });
    let all = config.inspect(None, true, "resolv.conf /etc/resolv.conf");
    assert_eq!(all.resolver, IpAddr::V4(MAGIC_DNS_IP));
    assert_eq!(all.suffix, "rustynet.internal");
    assert_eq!(all.upstream, "exit node db (100.64.0.9:53)");
    assert!(all.protected);
    assert_eq!(all.os_config, "resolv.conf /etc/resolv.conf");
    assert_eq!(all.records.len(), sample_dns().records.len());
    assert_eq!(
        all.split,
        vec![
            "internal.corp.example -> 10.1.2.53, 10.1.2.54",
            "corp.example -> 10.1.1.53",
            "empty.example -> ",
        ]
    );
    assert!(all.explanation.is_none());

    let one = config.inspect(Some("web-2"), false, "none");
    assert_eq!(one.records.len(), 1);
    assert!(!one.protected);
    assert!(one.explanation.unwrap().contains("renamed it web-2"));
    assert_eq!(
        sample_system().upstream_description(),
        "system resolvers [192.0.2.53:53]"
    );
    assert!(
        sample(Upstream::None)
            .upstream_description()
            .contains("SERVFAIL")
    );
}

#[test]
fn negative_or_huge_timestamps_do_not_panic() {
    let mut dns = sample_dns();
    dns.records[0].assigned_at = -5;
    dns.records[1].assigned_at = i64::MAX;
    let config = crate::ResolverConfig::new(dns, Upstream::None).unwrap();
    assert!(config.explain("web").text.contains("unix time -5"));
    assert!(
        config
            .explain("web-2")
            .text
            .contains(&format!("unix time {}", i64::MAX))
    );
    let mut dns = sample_dns();
    dns.records[0].assigned_at = 253_402_300_799;
    let config = crate::ResolverConfig::new(dns, Upstream::None).unwrap();
    assert!(config.explain("web").text.contains("9999-12-31T23:59:59Z"));
}

/// The explanation and the answer come from one classification: every
/// record name explained as resolving is answered with the same addresses,
/// and every name explained as NXDOMAIN is answered NXDOMAIN.
#[test]
fn explanation_agrees_with_answers() {
    let config = sample_system();
    let names = [
        "web.rustynet.internal",
        "web-2.rustynet.internal",
        "db.rustynet.internal",
        "svc.lab.rustynet.internal",
        "nope.rustynet.internal",
        "x.web.rustynet.internal",
    ];
    for name in names {
        let explanation = config.explain(name);
        let decision = config.decide(&query(&format!("{name}."), RecordType::A));
        let Decision::Answer(answer) = decision else {
            panic!("{name} was not answered locally");
        };
        let reply = hickory_proto::op::Message::from_vec(&answer.bytes).unwrap();
        let explained: Vec<IpAddr> = explanation.records.iter().map(|r| r.ip).collect();
        assert_eq!(ips(&reply), explained, "{name}");
        assert_eq!(
            reply.response_code == ResponseCode::NXDomain,
            explanation.text.contains("NXDOMAIN"),
            "{name}"
        );
    }
}
