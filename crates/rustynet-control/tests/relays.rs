//! Relays and paths over real TLS 1.3 and a real SQLite file: the relay
//! embedded in control admitting nodes with control's tickets, tickets
//! following the policy, registered relays in the maps, and path keys and
//! home relays reported by nodes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, Node, map_until, next_map};
use rustynet_control::datadir::DataDir;
use rustynet_control::embedded_relay::RelayOptions;
use rustynet_control::relay_registry::{self, PinSource, RelaySpec};
use rustynet_control::server::{ServeError, ServeOptions, start};
use rustynet_control_client::ClientError;
use rustynet_proto::control_api::{API_VERSION, UpdateRequest};
use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::relay::{RelayTicket, TicketPolicy, verify_ticket};
use rustynet_proto::{
    NodeId, NodeSigningKey, PathPublicKey, SealedBody, SignedBody, SignedEnvelope, TunnelPublicKey,
};
use rustynet_relay::client::DownReason;
use rustynet_relay::frame::{GoneReason, RefuseCode};
use rustynet_relay::{ClientConfig, ClientSink, ClientTimeouts, ConnState, RelayClient};

const WAIT: Duration = Duration::from_secs(15);

/// a and b may talk; c may talk to nobody.
const POLICY_AB: &str =
    r#"{"acls": [{"action": "accept", "src": ["node:a"], "dst": ["node:b:*"]}]}"#;
/// a and c may talk; b to nobody.
const POLICY_AC: &str =
    r#"{"acls": [{"action": "accept", "src": ["node:a"], "dst": ["node:c:*"]}]}"#;

fn node_key(seed: u8) -> TunnelPublicKey {
    TunnelPublicKey([seed; 32])
}

/// The peers a ticket lists, after the relay's own verification.
fn ticket_peers(h: &Harness, ticket: &SignedEnvelope) -> Vec<TunnelPublicKey> {
    let control = h.data.signing_key().unwrap().public();
    verify_ticket(
        ticket.to_json().as_bytes(),
        &[control],
        &TicketPolicy::default(),
        rustynet_control::now_unix(),
    )
    .unwrap()
    .peers
}

fn generation(ticket: &SignedEnvelope) -> u64 {
    let body: SignedBody<RelayTicket> = serde_json::from_slice(ticket.body_bytes()).unwrap();
    body.generation
}

/// Records what a relay client reports.
#[derive(Default)]
struct Recorder {
    packets: Mutex<Vec<(TunnelPublicKey, Vec<u8>)>>,
    states: Mutex<Vec<ConnState>>,
    gone: Mutex<Vec<(TunnelPublicKey, GoneReason)>>,
}

impl ClientSink for Recorder {
    fn packet(&self, src: TunnelPublicKey, payload: &[u8], _probe: bool) {
        self.packets.lock().unwrap().push((src, payload.to_vec()));
    }
    fn state(&self, state: ConnState) {
        self.states.lock().unwrap().push(state);
    }
    fn peer_gone(&self, key: TunnelPublicKey, reason: GoneReason) {
        self.gone.lock().unwrap().push((key, reason));
    }
}

impl Recorder {
    fn refused(&self) -> Option<RefuseCode> {
        self.states.lock().unwrap().iter().find_map(|s| match s {
            ConnState::Down {
                reason: DownReason::Refused { code, .. },
            } => Some(*code),
            _ => None,
        })
    }
}

/// A relay client for the relay `info` announces, connecting to `bound`
/// (the announced address is a documentation address; the test reaches
/// the relay on loopback).
fn relay_client(
    info: &RelayInfo,
    bound: SocketAddr,
    ticket: SignedEnvelope,
    login_key: NodeSigningKey,
) -> (RelayClient, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let cfg = ClientConfig {
        udp: None,
        addrs: vec![bound],
        server_name: info.server_name.clone(),
        cert_sha256: *info.cert_sha256.as_bytes(),
        fwmark: None,
        ticket,
        login_key,
        timeouts: ClientTimeouts::default(),
        send_queue_bytes: 1 << 20,
    };
    (RelayClient::spawn(cfg, rec.clone()).unwrap(), rec)
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn connected(c: &RelayClient) -> bool {
    matches!(c.state(), ConnState::Connected { .. })
}

async fn with_relay() -> Harness {
    Harness::start_with(Duration::from_secs(600), |opts| {
        opts.relay = Some(RelayOptions {
            rate_bytes_per_sec: rustynet_relay::core::Limits::default().rate_bytes_per_sec,
            listen: "127.0.0.1:0".parse().unwrap(),
            // No binding socket: one the relay could announce would listen
            // on a host address (the announced-address rules are unit
            // tests of embedded_relay).
            stun: vec![],
            advertise: Some("192.0.2.1:443".parse().unwrap()),
            name: "ctl".into(),
        });
    })
    .await
}

async fn enroll_abc(h: &Harness) -> (Node, Node, Node) {
    let key = h.preauth("alice", true, None);
    (
        h.enroll(&key, "a", 1).await,
        h.enroll(&key, "b", 2).await,
        h.enroll(&key, "c", 3).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_relay_forwards_between_permitted_nodes_only() {
    let h = with_relay().await;
    h.set_policy(POLICY_AB);
    let (a, b, c) = enroll_abc(&h).await;
    let running = h.server.relay.as_ref().unwrap();

    // Every map announces the relay: its advertised address and the pin of
    // the key made in the data directory.
    let mut hw = 0;
    let map = next_map(&mut a.stream(&h).await, &a, &mut hw).await;
    let relays = &map.netmap().relays;
    assert_eq!(relays.len(), 1);
    let info = &relays[0];
    assert_eq!(info, &running.info);
    assert_eq!(info.name, "ctl");
    assert_eq!(info.addrs, ["192.0.2.1:443".parse().unwrap()]);
    assert_eq!(info.server_name, "192.0.2.1");
    let pin = rustynet_relay::tls::spki_sha256_of_pem_file(&h.data.relay_cert()).unwrap();
    assert_eq!(info.cert_sha256.as_bytes(), &pin);
    assert!(info.stun.is_empty() && running.stun.is_empty());

    let client = h.client();
    let ta = client.relay_ticket(&a.key, a.resp.node_id).await.unwrap();
    let tb = client.relay_ticket(&b.key, b.resp.node_id).await.unwrap();
    let tc = client.relay_ticket(&c.key, c.resp.node_id).await.unwrap();
    let (ca, ra) = relay_client(
        info,
        running.addr,
        ta.clone(),
        NodeSigningKey::from_seed(&[1; 32]),
    );
    let (cb, rb) = relay_client(info, running.addr, tb, NodeSigningKey::from_seed(&[2; 32]));
    let (cc, rc) = relay_client(info, running.addr, tc, NodeSigningKey::from_seed(&[3; 32]));
    // A ticket signed by another key, and a's real ticket with a login key
    // that is not a's: both refused.
    let rogue = NodeSigningKey::from_seed(&[66; 32]);
    let forged = SealedBody::seal(
        &rogue,
        &RelayTicket {
            node_key: node_key(4),
            login_key: rogue.public(),
            peers: vec![node_key(1)],
        }
        .into_body(
            NodeId(4),
            u64::MAX,
            rustynet_control::now_unix(),
            rustynet_control::now_unix() + 600,
        ),
    )
    .unwrap()
    .to_envelope()
    .unwrap();
    let (cr, rr) = relay_client(
        info,
        running.addr,
        forged,
        NodeSigningKey::from_seed(&[66; 32]),
    );
    let (cs, rs) = relay_client(info, running.addr, ta, rogue);

    let (a2, b2, c2) = tokio::task::spawn_blocking(move || {
        assert!(
            wait_until(WAIT, || connected(&ca) && connected(&cb) && connected(&cc)),
            "a, b and c log in with their tickets"
        );
        assert!(ca.send(&node_key(2), b"a to b", false));
        assert!(cb.send(&node_key(1), b"b to a", false));
        assert!(ca.send(&node_key(3), b"a to c", false));
        assert!(cc.send(&node_key(1), b"c to a", false));
        assert!(wait_until(WAIT, || {
            !rb.packets.lock().unwrap().is_empty() && !ra.packets.lock().unwrap().is_empty()
        }));
        assert!(wait_until(WAIT, || {
            rr.refused() == Some(RefuseCode::Ticket) && rs.refused() == Some(RefuseCode::Signature)
        }));
        assert!(!connected(&cr) && !connected(&cs));
        // a learns that c is not its peer; c's packet never reaches a.
        assert!(wait_until(WAIT, || ra
            .gone
            .lock()
            .unwrap()
            .contains(&(node_key(3), GoneReason::NotAllowed))));
        let to_b = rb.packets.lock().unwrap().clone();
        let to_a = ra.packets.lock().unwrap().clone();
        let to_c = rc.packets.lock().unwrap().clone();
        for client in [cr, cs] {
            client.close();
        }
        ((ca, to_a), (cb, to_b), (cc, to_c))
    })
    .await
    .unwrap();
    assert_eq!(b2.1, [(node_key(1), b"a to b".to_vec())]);
    assert_eq!(a2.1, [(node_key(2), b"b to a".to_vec())]);
    assert!(c2.1.is_empty());
    for client in [a2.0, b2.0, c2.0] {
        client.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_follow_the_policy_and_refuse_nodes_that_left() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_AB);
    let (a, _b, c) = enroll_abc(&h).await;
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    next_map(&mut sa, &a, &mut hw).await;
    let client = h.client();
    let first = client.relay_ticket(&a.key, a.resp.node_id).await.unwrap();
    assert_eq!(ticket_peers(&h, &first), [node_key(2)], "b, not c");
    let body: SignedBody<RelayTicket> = serde_json::from_slice(first.body_bytes()).unwrap();
    assert_eq!(body.node_id, a.resp.node_id);
    assert_eq!(body.payload.node_key, node_key(1));
    assert_eq!(body.payload.login_key, a.key.public());
    assert_eq!(body.expires_at - body.issued_at, 600, "the map TTL");
    assert!(
        ticket_peers(
            &h,
            &client.relay_ticket(&c.key, c.resp.node_id).await.unwrap()
        )
        .is_empty()
    );
    // Nothing changed: the same signed ticket.
    let again = client.relay_ticket(&a.key, a.resp.node_id).await.unwrap();
    assert_eq!(again, first);

    // The policy changes (by the admin command, noticed by serve): a new
    // ticket without b, with a newer generation.
    h.set_policy(POLICY_AC);
    map_until(&mut sa, &a, &mut hw, |m| {
        m.netmap().peer(c.resp.node_id).is_some() && m.netmap().peers.len() == 1
    })
    .await;
    let changed = client.relay_ticket(&a.key, a.resp.node_id).await.unwrap();
    assert_eq!(ticket_peers(&h, &changed), [node_key(3)]);
    assert!(generation(&changed) > generation(&first));

    // Expired and removed nodes get the refusals of every other endpoint.
    rustynet_control::admin::nodes_expire(&h.data, "c").unwrap();
    let err = client
        .relay_ticket(&c.key, c.resp.node_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("node_expired"), "{err}");
    rustynet_control::admin::nodes_remove(&h.data, "c").unwrap();
    let err = client
        .relay_ticket(&c.key, c.resp.node_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"), "{err}");
    // A request signed by another key for a's id is refused.
    let err = client
        .relay_ticket(&c.key, a.resp.node_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_requests_are_rate_limited_per_node() {
    let h = Harness::start_with(Duration::from_secs(600), |opts| {
        opts.ticket_rate.burst = 3;
        opts.ticket_rate.every = Duration::from_secs(3600);
    })
    .await;
    let (a, b, _c) = enroll_abc(&h).await;
    let client = h.client();
    for _ in 0..3 {
        client.relay_ticket(&a.key, a.resp.node_id).await.unwrap();
    }
    let err = client
        .relay_ticket(&a.key, a.resp.node_id)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 429, .. }),
        "{err}"
    );
    // Its own bucket: b's tickets and a's updates are unaffected.
    client.relay_ticket(&b.key, b.resp.node_id).await.unwrap();
    let update = UpdateRequest {
        version: API_VERSION,
        lan_access: Some(true),
        ..UpdateRequest::default()
    };
    client
        .update(&a.key, a.resp.node_id, &update)
        .await
        .unwrap();
}

fn spec(name: &str, addr: &str) -> RelaySpec {
    RelaySpec {
        name: name.into(),
        addrs: vec![addr.into()],
        server_name: Some("relay.example.net".into()),
        pin: PinSource::Text("11".repeat(32)),
        stun: vec!["198.51.100.20:3478".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_relays_and_homes_follow_admin_commands_and_updates() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_AB);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    // b enrolls with a path key.
    let b_key = NodeSigningKey::from_seed(&[2; 32]);
    let mut req = h.register_request(&key, "b", 2);
    req.path_key = Some(PathPublicKey([42; 32]));
    let b = Node {
        resp: h.client().register(&b_key, &req).await.unwrap(),
        key: b_key,
    };
    let mut hw = 0;
    let mut sa = a.stream(&h).await;
    let map = next_map(&mut sa, &a, &mut hw).await;
    assert!(map.netmap().relays.is_empty());
    let peer_b = map.netmap().peer(b.resp.node_id).unwrap();
    assert_eq!(peer_b.path_key, Some(PathPublicKey([42; 32])));
    assert_eq!(peer_b.home_relay, None);

    // A home relay must be announced; nothing changes otherwise.
    let client = h.client();
    let home = |name: &str| UpdateRequest {
        version: API_VERSION,
        home_relay: Some(name.into()),
        ..UpdateRequest::default()
    };
    let err = client
        .update(&b.key, b.resp.node_id, &home("r1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Refused { status: 400, message, .. } if message.contains("home_relay")),
        "{err}"
    );
    let stored = |h: &Harness| {
        h.server
            .network
            .store()
            .node(b.resp.node_id)
            .unwrap()
            .unwrap()
    };
    assert_eq!(stored(&h).home_relay, None);

    // `relays add` while serve runs: every map announces it.
    relay_registry::relays_add(&h.data, &spec("r1", "198.51.100.10:443")).unwrap();
    let map = map_until(&mut sa, &a, &mut hw, |m| !m.netmap().relays.is_empty()).await;
    let announced = &map.netmap().relays;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].name, "r1");
    assert_eq!(announced[0].addrs, ["198.51.100.10:443".parse().unwrap()]);
    assert_eq!(announced[0].cert_sha256.as_bytes(), &[0x11; 32]);

    // b homes on r1 and rotates its path key: a's map shows both.
    client
        .update(&b.key, b.resp.node_id, &home("r1"))
        .await
        .unwrap();
    let rotate = UpdateRequest {
        version: API_VERSION,
        path_key: Some(PathPublicKey([43; 32])),
        ..UpdateRequest::default()
    };
    client
        .update(&b.key, b.resp.node_id, &rotate)
        .await
        .unwrap();
    let map = map_until(&mut sa, &a, &mut hw, |m| {
        m.netmap()
            .peer(b.resp.node_id)
            .is_some_and(|p| p.home_relay.is_some() && p.path_key == Some(PathPublicKey([43; 32])))
    })
    .await;
    assert_eq!(
        map.netmap()
            .peer(b.resp.node_id)
            .unwrap()
            .home_relay
            .as_deref(),
        Some("r1")
    );
    // An all-zero path key is refused and changes nothing.
    let zero = UpdateRequest {
        version: API_VERSION,
        path_key: Some(PathPublicKey([0; 32])),
        ..UpdateRequest::default()
    };
    assert!(client.update(&b.key, b.resp.node_id, &zero).await.is_err());
    assert_eq!(stored(&h).path_key, Some(PathPublicKey([43; 32])));

    // `relays remove`: the relay and b's home vanish from maps; the home
    // stays stored (it comes back if r1 is registered again).
    relay_registry::relays_remove(&h.data, "r1").unwrap();
    let map = map_until(&mut sa, &a, &mut hw, |m| m.netmap().relays.is_empty()).await;
    assert_eq!(map.netmap().peer(b.resp.node_id).unwrap().home_relay, None);
    assert_eq!(stored(&h).home_relay.as_deref(), Some("r1"));

    // "" clears the home.
    client
        .update(&b.key, b.resp.node_id, &home(""))
        .await
        .unwrap();
    assert_eq!(stored(&h).home_relay, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_relay_it_cannot_announce_before_binding_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("control"));
    data.init("rustynet.internal", &["localhost".into()])
        .unwrap();
    let serve = |relay: RelayOptions| {
        let mut opts = ServeOptions::new("127.0.0.1:0".parse().unwrap());
        opts.relay = Some(relay);
        opts
    };
    let unspecified = RelayOptions::new("0.0.0.0:0".parse().unwrap());
    let err = start(&data, serve(unspecified)).await.err().unwrap();
    assert!(err.to_string().contains("--relay-advertise"), "{err}");
    let loopback = RelayOptions::new("127.0.0.1:0".parse().unwrap());
    let err = start(&data, serve(loopback)).await.err().unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
    let mut bad_name = RelayOptions::new("127.0.0.1:0".parse().unwrap());
    bad_name.advertise = Some("192.0.2.1:443".parse().unwrap());
    bad_name.name = "Bad Name".into();
    assert!(start(&data, serve(bad_name)).await.is_err());
    assert!(
        !data.relay_key().exists(),
        "nothing is written for a refused relay"
    );

    // A registered relay with the embedded relay's name: refused at start.
    relay_registry::relays_add(&data, &spec("control", "198.51.100.10:443")).unwrap();
    let mut clash = RelayOptions::new("127.0.0.1:0".parse().unwrap());
    clash.advertise = Some("192.0.2.1:443".parse().unwrap());
    let err = start(&data, serve(clash)).await.err().unwrap();
    assert!(
        matches!(err, ServeError::RelayNameTaken(ref n) if n == "control"),
        "{err}"
    );
}

/// Runs the `rustynet-control` binary; returns (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rustynet-control"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn relays_cli_refuses_bad_input_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("control");
    let data = DataDir::new(&root);
    data.init("rustynet.internal", &["localhost".into()])
        .unwrap();
    let d = root.to_str().unwrap();
    let cert = rustynet_relay::tls::self_signed(&["relay.example.net".into()]).unwrap();
    let cert_path = dir.path().join("relay.pem");
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();

    let (ok, out, err) = cli(&[
        "relays",
        "add",
        "r1",
        "--addr",
        "198.51.100.10:443,[2001:db8::10]:443",
        "--cert",
        cert_path.to_str().unwrap(),
        "--stun",
        "198.51.100.10:3478",
        "--server-name",
        "relay.example.net",
        "--data-dir",
        d,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("added relay r1"), "{out}");
    let list = || {
        let (ok, out, err) = cli(&["relays", "list", "--json", "--data-dir", d]);
        assert!(ok, "{err}");
        serde_json::from_str::<Vec<RelayInfo>>(&out).unwrap()
    };
    let before = list();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].cert_sha256.as_bytes(), &cert.pin);
    assert_eq!(before[0].addrs.len(), 2);

    let hex_pin = "ab".repeat(32);
    for (args, says) in [
        (
            vec!["r2", "--addr", "198.51.100.11:443", "--pin", "not-a-pin"],
            "--pin",
        ),
        (
            vec!["r2", "--addr", "198.51.100.11:443", "--pin", &hex_pin[..62]],
            "--pin",
        ),
        (
            vec!["r2", "--addr", "127.0.0.1:443", "--pin", &hex_pin],
            "loopback",
        ),
        (
            vec!["r2", "--addr", "relay.example.net:443", "--pin", &hex_pin],
            "IP:PORT",
        ),
        (
            vec!["r2", "--addr", "198.51.100.11", "--pin", &hex_pin],
            "IP:PORT",
        ),
        (
            vec!["R2", "--addr", "198.51.100.11:443", "--pin", &hex_pin],
            "relay name",
        ),
        (
            vec![
                "r2",
                "--addr",
                "198.51.100.11:443",
                "--pin",
                &hex_pin,
                "--stun",
                "[::]:3478",
            ],
            "--stun",
        ),
        (
            vec!["r1", "--addr", "198.51.100.11:443", "--pin", &hex_pin],
            "already registered",
        ),
    ] {
        let mut full = vec!["relays", "add"];
        full.extend(args.iter().copied());
        full.extend(["--data-dir", d]);
        let (ok, _, err) = cli(&full);
        assert!(!ok, "{args:?} accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(list(), before, "refused commands change nothing");

    let (ok, out, _) = cli(&["relays", "list", "--data-dir", d]);
    assert!(ok && out.contains("r1") && out.contains(&before[0].cert_sha256.to_string()));
    let (ok, _, err) = cli(&["relays", "remove", "nope", "--data-dir", d]);
    assert!(!ok && err.contains("no relay named"), "{err}");
    let (ok, out, err) = cli(&["relays", "remove", "r1", "--data-dir", d]);
    assert!(ok, "{err}");
    assert!(out.contains("removed relay r1"));
    assert!(list().is_empty());
    // A --relay-* flag without --relay-listen is a usage error.
    let (ok, _, err) = cli(&[
        "serve",
        "--data-dir",
        d,
        "--listen",
        "127.0.0.1:0",
        "--relay-name",
        "x",
    ]);
    assert!(!ok && err.contains("--relay-listen"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_names_are_not_told_to_unauthenticated_requests() {
    let h = Harness::start(Duration::from_secs(600)).await;
    relay_registry::relays_add(&h.data, &spec("r1", "198.51.100.10:443")).unwrap();
    for name in ["r1", "nope"] {
        let body = format!(r#"{{"version":{API_VERSION},"home_relay":"{name}"}}"#);
        let (status, text) = common::raw_post(
            &h,
            rustynet_proto::control_api::paths::UPDATE,
            &[("content-type", "application/json".into())],
            body.into_bytes(),
        )
        .await;
        assert_eq!(status, 401, "{name}: {text}");
        assert!(!text.contains("home_relay"), "{text}");
    }
    let body = format!(r#"{{"version":{API_VERSION}}}"#);
    let (status, _) = common::raw_post(
        &h,
        rustynet_proto::control_api::paths::RELAY_TICKET,
        &[],
        body.into_bytes(),
    )
    .await;
    assert_eq!(status, 401, "tickets only for signed requests");
}
