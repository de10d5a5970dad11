//! The server on loopback against real upstream DNS servers run by the test.
// Test helpers outside #[test] fns may unwrap and panic, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustynet_dns::{Access, DnsServer, Limits, NetTransport, ServerConfig, Upstream};

fn config(upstream_timeout: Duration) -> ServerConfig {
    ServerConfig {
        limits: Limits {
            upstream_timeout,
            ..Limits::default()
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap())
    }
}

async fn start(upstream: Upstream, map: &[(SocketAddr, SocketAddr)]) -> DnsServer {
    DnsServer::start(
        config(Duration::from_secs(2)),
        resolver(upstream),
        Arc::new(RemapTransport::new(map)),
    )
    .await
    .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn magic_names_are_answered_locally_over_udp_and_tcp() {
    let server = start(Upstream::None, &[]).await;
    let addr = server.local_addr();
    let reply = udp_ask(addr, &query("Web.RustyNet.Internal.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("100.64.0.5")]);
    assert!(reply.authoritative);
    assert_eq!(reply.answers[0].name.to_ascii(), "Web.RustyNet.Internal.");
    let reply = tcp_ask(addr, &query("db.rustynet.internal.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("100.64.0.9")]);
    let reply = udp_ask(addr, &query("9.0.64.100.in-addr.arpa.", RecordType::PTR)).await;
    assert_eq!(reply.answers.len(), 1);
    let reply = udp_ask(addr, &query("nope.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NXDomain);
    // No upstream: outside names fail closed at once.
    let reply = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);

    let metrics = server.handle().metrics();
    assert_eq!(metrics.queries, 5);
    assert_eq!(metrics.answered_local, 4);
    assert_eq!(metrics.servfail, 1);
    assert_eq!(metrics.forwarded, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn forwards_to_the_system_upstream_over_udp_and_tcp() {
    let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    let server = start(Upstream::System(vec![upstream.addr]), &[]).await;
    let addr = server.local_addr();
    let sent = query("Example.COM.", RecordType::A);
    let reply = udp_ask(addr, &sent).await;
    assert_eq!(reply.id.to_be_bytes(), [sent[0], sent[1]]);
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert_eq!(ips(&reply), vec![ip("192.0.2.1")]);
    assert_eq!(reply.queries[0].name().to_ascii(), "Example.COM.");
    let reply = tcp_ask(addr, &query("example.org.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("192.0.2.1")]);
    assert_eq!(upstream.udp_queries(), 2);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.forwarded, 2);
    assert_eq!(metrics.upstream_failures, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_loss_gives_servfail_within_the_timeout_and_recovery_answers_again() {
    let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    let upstream_addr = upstream.addr;
    let timeout = Duration::from_secs(1);
    let server = DnsServer::start(
        config(timeout),
        resolver(Upstream::System(vec![upstream_addr])),
        Arc::new(NetTransport::default()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    assert_eq!(
        ips(&udp_ask(addr, &query("a.example.", RecordType::A)).await),
        vec![ip("192.0.2.1")]
    );

    upstream.stop().await;
    let started = Instant::now();
    let reply = udp_ask(addr, &query("b.example.", RecordType::A)).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    // Within the timeout (plus scheduling slack on a loaded machine).
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "took {elapsed:?}"
    );

    let upstream = FakeUpstream::start_on(upstream_addr, Ipv4Addr::new(192, 0, 2, 2)).await;
    let reply = udp_ask(addr, &query("c.example.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NoError);
    assert_eq!(ips(&reply), vec![ip("192.0.2.2")]);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.upstream_failures, 1);
    assert_eq!(metrics.forwarded, 3);
    drop(upstream);
    server.shutdown().await;
}

#[tokio::test]
async fn silent_or_spoofing_upstreams_time_out_to_servfail() {
    let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    let timeout = Duration::from_secs(1);
    let server = DnsServer::start(
        config(timeout),
        resolver(Upstream::System(vec![upstream.addr])),
        Arc::new(NetTransport::default()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    for mode in [Mode::Silent, Mode::WrongId] {
        upstream.set_mode(mode);
        let started = Instant::now();
        let reply = udp_ask(addr, &query("x.example.", RecordType::A)).await;
        let elapsed = started.elapsed();
        assert_eq!(reply.response_code, ResponseCode::ServFail, "{mode:?}");
        assert!(
            reply.answers.is_empty(),
            "{mode:?}: a spoofed answer was relayed"
        );
        assert!(
            elapsed >= timeout - Duration::from_millis(100),
            "{mode:?}: {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(5),
            "{mode:?}: {elapsed:?}"
        );
    }
    upstream.set_mode(Mode::Answer);
    let reply = udp_ask(addr, &query("x.example.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("192.0.2.1")]);
    assert_eq!(server.handle().metrics().upstream_failures, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn split_route_goes_to_the_split_resolver_only() {
    let system = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    let split = FakeUpstream::start(Ipv4Addr::new(198, 51, 100, 7)).await;
    let server = start(
        Upstream::System(vec![system.addr]),
        &[(split_resolver(), split.addr)],
    )
    .await;
    let addr = server.local_addr();
    let reply = udp_ask(addr, &query("host.Corp.Example.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("198.51.100.7")]);
    assert_eq!((split.udp_queries(), system.udp_queries()), (1, 0));
    let reply = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("192.0.2.1")]);
    assert_eq!((split.udp_queries(), system.udp_queries()), (1, 1));

    // Split resolver down: SERVFAIL, and the system resolver is NOT asked instead.
    split.stop().await;
    let reply = udp_ask(addr, &query("other.corp.example.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert_eq!(system.udp_queries(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn config_updates_apply_without_restart() {
    let exit = FakeUpstream::start(Ipv4Addr::new(203, 0, 113, 9)).await;
    let server = start(Upstream::None, &[]).await;
    let addr = server.local_addr();
    let handle = server.handle();
    let reply = udp_ask(addr, &query("new.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NXDomain);
    let reply = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);

    let mut dns = dns_config();
    dns.records
        .push(record("new.rustynet.internal", "100.64.0.11", 11));
    dns.records.remove(0);
    let next = rustynet_dns::ResolverConfig::new(
        dns,
        Upstream::Exit {
            addr: exit.addr,
            name: "exit-1".to_owned(),
        },
    )
    .unwrap();
    handle.update(next);
    assert_eq!(server.local_addr(), addr);
    let reply = udp_ask(addr, &query("new.rustynet.internal.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("100.64.0.11")]);
    let reply = udp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::NXDomain);
    let reply = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("203.0.113.9")]);
    assert!(
        handle
            .resolver()
            .explain("example.com")
            .text
            .contains("exit node exit-1")
    );

    // Exit deselected: back to fail closed.
    handle.update(handle.resolver().with_upstream(Upstream::None));
    let reply = udp_ask(addr, &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert_eq!(exit.udp_queries(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn access_check_refuses_other_sources() {
    let server = DnsServer::start(
        ServerConfig {
            access: Access::Prefixes(vec!["100.64.0.0/10".parse().unwrap()]),
            ..ServerConfig::new("127.0.0.1:0".parse().unwrap())
        },
        resolver(Upstream::None),
        Arc::new(NetTransport::default()),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let sent = query("web.rustynet.internal.", RecordType::A);
    let reply = udp_ask(addr, &sent).await;
    assert_eq!(reply.response_code, ResponseCode::Refused);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.id.to_be_bytes(), [sent[0], sent[1]]);
    let reply = tcp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::Refused);
    assert_eq!(server.handle().metrics().refused, 2);

    server
        .handle()
        .set_access(Access::Prefixes(vec!["127.0.0.0/8".parse().unwrap()]));
    let reply = udp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("100.64.0.5")]);
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_upstream_replies_are_fetched_over_tcp() {
    let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
    let server = start(Upstream::System(vec![upstream.addr]), &[]).await;
    let addr = server.local_addr();

    // UDP client without EDNS: the full answer does not fit in 512 bytes,
    // so it gets TC and the question, nothing else.
    let reply = udp_ask(addr, &query("big.example.", RecordType::A)).await;
    assert!(reply.truncation);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.queries.len(), 1);
    // The server itself went to TCP after the upstream's TC reply.
    assert_eq!((upstream.udp_queries(), upstream.tcp_queries()), (1, 1));

    // Over TCP the client gets all 100 records.
    let reply = tcp_ask(addr, &query("big.example.", RecordType::A)).await;
    assert!(!reply.truncation);
    assert_eq!(reply.answers.len(), 100);

    // A UDP client advertising 4096 bytes gets everything over UDP.
    let reply = udp_ask(addr, &query_with("big.example.", RecordType::A, Some(4096))).await;
    assert!(!reply.truncation);
    assert_eq!(reply.answers.len(), 100);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_sockets() {
    let server = start(Upstream::None, &[]).await;
    let addr = server.local_addr();
    server.shutdown().await;
    // Both ports are free again.
    let udp = tokio::net::UdpSocket::bind(addr).await.unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    drop((udp, tcp));
    // And a new server can take the address.
    let server = DnsServer::start(
        ServerConfig::new(addr),
        resolver(Upstream::None),
        Arc::new(NetTransport::default()),
    )
    .await
    .unwrap();
    assert_eq!(server.local_addr(), addr);
    let reply = udp_ask(addr, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(ips(&reply), vec![ip("100.64.0.5")]);
    server.shutdown().await;
}

#[tokio::test]
async fn zero_limits_are_refused() {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.limits.max_in_flight = 0;
    let result = DnsServer::start(
        config,
        resolver(Upstream::None),
        Arc::new(NetTransport::default()),
    )
    .await;
    assert!(matches!(
        result,
        Err(rustynet_dns::ServerError::Limit("max_in_flight"))
    ));
}
