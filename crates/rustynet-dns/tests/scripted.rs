//! The server's forwarding policy against a scripted transport: resolver
//! order, time budget, reply validation and the in-flight cap.
// Test helpers outside #[test] fns may unwrap and panic, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rustynet_dns::{
    BoxFuture, DnsServer, Limits, ServerConfig, Upstream, UpstreamError, UpstreamQuery,
    UpstreamTransport,
};

#[derive(Debug, Clone, Copy)]
enum Script {
    Answer(Ipv4Addr),
    Fail,
    Hang,
    OtherQuestion,
}

#[derive(Default)]
struct Scripted {
    scripts: HashMap<SocketAddr, Script>,
    calls: Mutex<Vec<(SocketAddr, u16)>>,
}

impl Scripted {
    fn new(scripts: &[(SocketAddr, Script)]) -> Arc<Self> {
        Arc::new(Self {
            scripts: scripts.iter().copied().collect(),
            calls: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<SocketAddr> {
        self.calls.lock().unwrap().iter().map(|(s, _)| *s).collect()
    }
}

fn reply_to(query: &UpstreamQuery, name: Option<&str>, ip: Ipv4Addr) -> Vec<u8> {
    let request = Message::from_vec(query.bytes()).unwrap();
    assert_eq!(
        request.id,
        query.id(),
        "the sent bytes carry the exchange id"
    );
    let mut reply = Message::response(request.id, OpCode::Query);
    let mut question = request.queries[0].clone();
    if let Some(name) = name {
        question.set_name(Name::from_ascii(name).unwrap());
    }
    reply.add_query(question.clone());
    reply.add_answer(Record::from_rdata(
        question.name().clone(),
        60,
        RData::A(A(ip)),
    ));
    reply.to_vec().unwrap()
}

impl UpstreamTransport for Scripted {
    fn exchange<'a>(
        &'a self,
        server: SocketAddr,
        query: &'a UpstreamQuery,
    ) -> BoxFuture<'a, Result<Vec<u8>, UpstreamError>> {
        self.calls.lock().unwrap().push((server, query.id()));
        let script = self.scripts.get(&server).copied().unwrap_or(Script::Fail);
        Box::pin(async move {
            match script {
                Script::Answer(ip) => Ok(reply_to(query, None, ip)),
                Script::OtherQuestion => {
                    Ok(reply_to(query, Some("evil.example."), [6, 6, 6, 6].into()))
                }
                Script::Fail => Err(UpstreamError::Mismatch(server)),
                Script::Hang => std::future::pending().await,
            }
        })
    }
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(192, 0, 2, last).into(), 53)
}

async fn start(
    upstream: Upstream,
    transport: Arc<Scripted>,
    max_in_flight: usize,
    upstream_timeout: Duration,
) -> DnsServer {
    let config = ServerConfig {
        limits: Limits {
            max_in_flight,
            upstream_timeout,
            ..Limits::default()
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap())
    };
    DnsServer::start(config, resolver(upstream), transport)
        .await
        .unwrap()
}

#[tokio::test]
async fn resolvers_are_tried_in_order_within_the_budget() {
    let transport = Scripted::new(&[
        (addr(1), Script::Fail),
        (addr(2), Script::Answer(Ipv4Addr::new(192, 0, 2, 200))),
        (addr(3), Script::Hang),
        (addr(4), Script::Hang),
    ]);
    let budget = Duration::from_secs(1);
    let server = start(
        Upstream::System(vec![addr(1), addr(2)]),
        Arc::clone(&transport),
        8,
        budget,
    )
    .await;
    let sent = query("example.com.", RecordType::A);
    let reply = udp_ask(server.local_addr(), &sent).await;
    assert_eq!(
        ips(&reply),
        vec!["192.0.2.200".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        reply.id.to_be_bytes(),
        [sent[0], sent[1]],
        "client id restored"
    );
    assert_eq!(transport.calls(), vec![addr(1), addr(2)]);
    server.shutdown().await;

    // Both hang: SERVFAIL once the whole budget is spent, each tried once.
    let transport = Scripted::new(&[(addr(3), Script::Hang), (addr(4), Script::Hang)]);
    let server = start(
        Upstream::System(vec![addr(3), addr(4)]),
        Arc::clone(&transport),
        8,
        budget,
    )
    .await;
    let started = Instant::now();
    let reply = udp_ask(server.local_addr(), &query("example.com.", RecordType::A)).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(
        elapsed >= budget - Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert!(elapsed < budget + Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(transport.calls(), vec![addr(3), addr(4)]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_reply_to_another_question_is_never_relayed() {
    let transport = Scripted::new(&[(addr(1), Script::OtherQuestion)]);
    let server = start(
        Upstream::System(vec![addr(1)]),
        Arc::clone(&transport),
        8,
        Duration::from_secs(1),
    )
    .await;
    let reply = udp_ask(server.local_addr(), &query("example.com.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(reply.answers.is_empty());
    assert_eq!(server.handle().metrics().upstream_failures, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn the_in_flight_cap_turns_excess_forwards_into_servfail() {
    let transport = Scripted::new(&[(addr(1), Script::Hang)]);
    let server = start(
        Upstream::System(vec![addr(1)]),
        Arc::clone(&transport),
        1,
        Duration::from_secs(3),
    )
    .await;
    let target = server.local_addr();
    let first =
        tokio::spawn(async move { udp_ask(target, &query("one.example.", RecordType::A)).await });
    // Wait until the first query holds the only permit.
    let deadline = Instant::now() + WAIT;
    while server.handle().metrics().forwarded == 0 {
        assert!(Instant::now() < deadline, "first query never forwarded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let reply = udp_ask(target, &query("two.example.", RecordType::A)).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "busy SERVFAIL should be immediate"
    );
    // Local names never need a permit.
    let reply = udp_ask(target, &query("web.rustynet.internal.", RecordType::A)).await;
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(first.await.unwrap().response_code, ResponseCode::ServFail);
    let metrics = server.handle().metrics();
    assert_eq!(
        (metrics.busy, metrics.forwarded, metrics.upstream_failures),
        (1, 1, 1)
    );
    assert_eq!(transport.calls().len(), 1);
    server.shutdown().await;
}
