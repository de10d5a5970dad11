//! Root-only: the userspace engine's path selection on real sockets. Two
//! nodes in their own namespaces reach each other through a router
//! namespace that also runs a relay (TLS 1.3, tickets signed by a test
//! control key) with binding service on two addresses. Faults are nftables
//! drops in the router.
//!
//! - UDP between the nodes blocked from the start: traffic goes through
//!   the relay;
//! - direct path blackholed both ways under a 100 pkt/s ping: the longest
//!   delivery gap stays short, the path falls back to the relay and comes
//!   back to direct once healed, with no new handshake;
//! - probes from a stranger, forged and replayed probes are refused and
//!   counted, and change no path.

// Test code: a failed expectation should panic with context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Netns, run, unique};
use rustynet_backend_wireguard::{UserspaceBackend, generate_private_key, public_key};
use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{CertPin, NodeId, NodeSigningKey, PathPublicKey, SealedBody, TunnelPublicKey};
use rustynet_relay::{RelayServer, ServerConfig, core::Limits, tls};
use rustynet_tunnel::{
    InterfaceConfig, PathConfig, PathKind, PathSecret, PeerConfig, RelayLogin, TunnelBackend,
};

const TOOLS: &[&str] = &["ip", "ping", "nft"];
const RELAY_IP: &str = "192.0.2.10";
const BINDING_IP2: &str = "192.0.2.11";
const RELAY_PORT: u16 = 8443;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A relay served from inside `ns` on its own runtime thread.
struct Relay {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pin: [u8; 32],
}

impl Relay {
    fn start(ns: &Netns, control: &NodeSigningKey) -> Self {
        let cert = tls::self_signed(&["relay.test".into()]).unwrap();
        let pin = cert.pin;
        let server_tls = {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().unwrap();
            let (c, k) = (dir.path().join("relay.pem"), dir.path().join("relay.key"));
            std::fs::write(&c, &cert.cert_pem).unwrap();
            std::fs::write(&k, &cert.key_pem).unwrap();
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            tls::server_config(&c, &k).unwrap()
        };
        let config = ServerConfig {
            listen: vec![format!("{RELAY_IP}:{RELAY_PORT}").parse().unwrap()],
            tls: server_tls,
            control_keys: vec![control.public()],
            binding: vec![
                format!("{RELAY_IP}:3478").parse().unwrap(),
                format!("{BINDING_IP2}:3478").parse().unwrap(),
            ],
            metrics: None,
            limits: Limits::default(),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{}", ns.name);
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; only this thread switches.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = RelayServer::bind(config).await.unwrap();
                ready_tx.send(()).unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self {
            stop: Some(stop_tx),
            thread: Some(thread),
            pin,
        }
    }

    fn info(&self) -> RelayInfo {
        RelayInfo {
            name: "r1".into(),
            addrs: vec![format!("{RELAY_IP}:{RELAY_PORT}").parse().unwrap()],
            server_name: "relay.test".into(),
            cert_sha256: CertPin(self.pin),
            stun: vec![
                format!("{RELAY_IP}:3478").parse().unwrap(),
                format!("{BINDING_IP2}:3478").parse().unwrap(),
            ],
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One node: its engine, keys and addresses.
struct Node {
    ns: Netns,
    backend: UserspaceBackend,
    key: TunnelPublicKey,
    signing: NodeSigningKey,
    secret: PathSecret,
    addr: String,
    tunnel_ip: String,
    port: u16,
}

/// A, R (router + relay) and B; A in 10.S.1.0/24, B in 10.S.2.0/24.
struct World {
    a: Node,
    b: Node,
    r: Netns,
    relay: Relay,
    control: NodeSigningKey,
    table: String,
}

fn veth(r: &Netns, n: &Netns, subnet: &str) -> String {
    let (ri, ni) = (unique("rpr"), unique("rpn"));
    run(
        "ip",
        &[
            "link", "add", &ri, "netns", &r.name, "type", "veth", "peer", "name", &ni, "netns",
            &n.name,
        ],
    );
    r.ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &ri]);
    n.ip(&["addr", "add", &format!("{subnet}.2/24"), "dev", &ni]);
    r.ip(&["link", "set", &ri, "up"]);
    n.ip(&["link", "set", &ni, "up"]);
    n.ip(&["route", "add", "default", "via", &format!("{subnet}.1")]);
    format!("{subnet}.2")
}

fn start_node(ns: Netns, addr: String, tunnel_ip: &str, seed: u8) -> Node {
    let private = generate_private_key();
    let ifname = unique("rnp");
    let cfg = InterfaceConfig {
        ifname: ifname.clone(),
        private_key: private.clone(),
        listen_port: 0,
        mtu: 1420,
        fwmark: None,
    };
    let backend = ns.enter(|| {
        let mut b = UserspaceBackend::default();
        b.start(&cfg).unwrap();
        b
    });
    ns.ip(&["addr", "add", &format!("{tunnel_ip}/10"), "dev", &ifname]);
    let port = backend.stats().unwrap().listen_port;
    let signing = NodeSigningKey::from_seed(&[seed; 32]);
    let secret = PathSecret::derive(&signing.seed());
    Node {
        ns,
        backend,
        key: public_key(&private),
        signing,
        secret,
        addr,
        tunnel_ip: tunnel_ip.into(),
        port,
    }
}

fn ticket(
    control: &NodeSigningKey,
    me: &Node,
    peer: &Node,
    id: u64,
) -> rustynet_proto::SignedEnvelope {
    let now = unix_now();
    let body = RelayTicket {
        node_key: me.key,
        login_key: me.signing.public(),
        peers: vec![peer.key],
    }
    .into_body(NodeId(id), 1, now - 5, now + 3600);
    SealedBody::seal(control, &body)
        .unwrap()
        .to_envelope()
        .unwrap()
}

fn peer_of(n: &Node) -> PeerConfig {
    let ep: SocketAddr = format!("{}:{}", n.addr, n.port).parse().unwrap();
    PeerConfig {
        public_key: n.key,
        endpoint: Some(ep),
        candidates: vec![ep],
        path_key: Some(PathPublicKey(n.secret.public_key().0)),
        home_relay: Some("r1".into()),
        allowed_ips: vec![format!("{}/32", n.tunnel_ip).parse().unwrap()],
        persistent_keepalive_secs: Some(25),
    }
}

impl World {
    fn new(subnet: u8) -> Self {
        let r = Netns::new();
        let na = Netns::new();
        let nb = Netns::new();
        let a_addr = veth(&r, &na, &format!("10.{subnet}.1"));
        let b_addr = veth(&r, &nb, &format!("10.{subnet}.2"));
        r.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        for ip in [RELAY_IP, BINDING_IP2] {
            r.ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"]);
        }
        let table = format!("rnpaths{subnet}");
        let out = r.exec(
            "nft",
            &[&format!(
                "add table inet {table}; add chain inet {table} relayed {{ type filter hook forward priority 0 ; }}"
            )],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let control = NodeSigningKey::from_seed(&[7; 32]);
        let relay = Relay::start(&r, &control);
        let a = start_node(na, a_addr, "100.64.7.1", 11);
        let b = start_node(nb, b_addr, "100.64.7.2", 12);
        Self {
            a,
            b,
            r,
            relay,
            control,
            table,
        }
    }

    fn configure(&mut self) {
        let (pa, pb) = (peer_of(&self.b), peer_of(&self.a));
        let (ta, tb) = (
            ticket(&self.control, &self.a, &self.b, 1),
            ticket(&self.control, &self.b, &self.a, 2),
        );
        let relays = vec![self.relay.info()];
        for (node, peer, t) in [(&mut self.a, pa, ta), (&mut self.b, pb, tb)] {
            let config = PathConfig {
                secret: node.secret.clone(),
                relays: relays.clone(),
                login: Some(RelayLogin {
                    ticket: t,
                    login_seed: node.signing.seed(),
                }),
            };
            // The relay client's thread and socket belong to the namespace
            // of the thread that starts them, as in the daemon.
            let backend = &mut node.backend;
            node.ns.enter(|| backend.set_paths(&config)).unwrap();
            node.backend.set_peers(&[peer]).unwrap();
        }
    }

    /// Drops UDP between the two nodes in the router (`both`: each way;
    /// else only A -> B).
    fn block_direct(&self, both: bool) {
        let a = format!("10.{}.1.0/24", self.a.addr.split('.').nth(1).unwrap());
        let b = format!("10.{}.2.0/24", self.a.addr.split('.').nth(1).unwrap());
        let mut cmd = format!(
            "add rule inet {t} relayed ip saddr {a} ip daddr {b} udp dport != 3478 drop",
            t = self.table
        );
        if both {
            cmd.push_str(&format!(
                "; add rule inet {t} relayed ip saddr {b} ip daddr {a} udp dport != 3478 drop",
                t = self.table
            ));
        }
        let out = self.r.exec("nft", &[&cmd]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn heal(&self) {
        let out = self.r.exec(
            "nft",
            &[&format!("flush chain inet {} relayed", self.table)],
        );
        assert!(out.status.success());
    }

    fn path(&self, from_a: bool) -> (PathKind, Option<String>) {
        let (me, peer) = if from_a {
            (&self.a, &self.b)
        } else {
            (&self.b, &self.a)
        };
        let s = me.backend.stats().unwrap();
        let p = s.peer(&peer.key).unwrap();
        (p.path.kind, p.path.relay.clone())
    }

    fn wait_path(&self, from_a: bool, want: PathKind, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.path(from_a).0 == want {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Pings B from A at 100 packets/s for `secs` and returns the received
/// sequence numbers.
fn ping_flood(w: &World, secs: u32) -> Vec<u32> {
    let count = (secs * 100).to_string();
    let out = w.a.ns.exec(
        "ping",
        &["-n", "-i", "0.01", "-c", &count, "-W", "1", &w.b.tunnel_ip],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|s| s.parse().ok())
        })
        .collect()
}

/// The longest run of missing sequence numbers, in packets (10 ms each).
fn longest_gap(seqs: &[u32], sent: u32) -> u32 {
    let mut seen = vec![false; sent as usize + 2];
    for s in seqs {
        if let Some(x) = seen.get_mut(*s as usize) {
            *x = true;
        }
    }
    let (mut best, mut run) = (0, 0);
    for &got in seen.iter().skip(1).take(sent as usize) {
        if got {
            run = 0;
        } else {
            run += 1;
            best = best.max(run);
        }
    }
    best
}

#[test]
fn relay_carries_traffic_when_udp_between_nodes_is_blocked() {
    common::require_root_and_tools(TOOLS);
    let mut w = World::new(71);
    w.block_direct(true);
    w.configure();
    assert!(
        w.a.ns
            .ping_until(&w.b.tunnel_ip, &[], Duration::from_secs(15)),
        "no traffic through the relay: A {:#?}\nB {:#?}",
        w.a.backend.stats(),
        w.b.backend.stats()
    );
    let (kind, relay) = w.path(true);
    assert_eq!(kind, PathKind::Relay, "path should be the relay");
    assert_eq!(relay.as_deref(), Some("r1"));
    let s = w.a.backend.stats().unwrap();
    let p = s.peer(&w.b.key).unwrap();
    assert!(
        p.path.relay_tx > 0 && p.path.relay_rx > 0,
        "relay bytes counted: {:?}",
        p.path
    );
    assert!(
        s.relays
            .iter()
            .any(|r| r.name == "r1" && r.connected && r.home)
    );
    // Binding answers came back on the tunnel socket from both addresses.
    assert!(!s.mapped.is_empty(), "no mapped address discovered: {s:?}");
    drop(w.relay);
}

#[test]
fn direct_blackholed_falls_back_to_relay_and_heals_back_to_direct() {
    common::require_root_and_tools(TOOLS);
    let mut w = World::new(72);
    w.configure();
    assert!(
        w.a.ns
            .ping_until(&w.b.tunnel_ip, &[], Duration::from_secs(15))
    );
    // Traffic both ways keeps both machines active; wait for direct.
    let direct = std::thread::scope(|s| {
        let flood = s.spawn(|| ping_flood(&w, 4));
        let t = w.wait_path(true, PathKind::Direct, Duration::from_secs(10));
        flood.join().unwrap();
        t
    });
    assert!(direct.is_some(), "never went direct: {:?}", w.path(true));
    let handshake_before =
        w.a.backend
            .stats()
            .unwrap()
            .peer(&w.b.key)
            .unwrap()
            .last_handshake;

    // Blackhole both ways 2 s into a 10 s flood; heal at 6 s.
    let (seqs, fell_back, healed_in) = std::thread::scope(|s| {
        let flood = s.spawn(|| ping_flood(&w, 10));
        std::thread::sleep(Duration::from_secs(2));
        w.block_direct(true);
        let fell_back = w.wait_path(true, PathKind::Relay, Duration::from_secs(4));
        std::thread::sleep(Duration::from_millis(
            4000u64.saturating_sub(fell_back.map_or(4000, |d| d.as_millis() as u64)),
        ));
        w.heal();
        let healed_in = w.wait_path(true, PathKind::Direct, Duration::from_secs(5));
        (flood.join().unwrap(), fell_back, healed_in)
    });
    let gap = longest_gap(&seqs, 1000);
    assert!(fell_back.is_some(), "never fell back to the relay");
    assert!(
        gap <= 150,
        "longest delivery gap {gap} packets ({} ms) over the 1.5 s goal",
        gap * 10
    );
    let healed =
        healed_in.unwrap_or_else(|| panic!("not direct again after healing: {:?}", w.path(true)));
    assert!(healed <= Duration::from_secs(3), "failback took {healed:?}");
    let handshake_after =
        w.a.backend
            .stats()
            .unwrap()
            .peer(&w.b.key)
            .unwrap()
            .last_handshake;
    // The session is the same: the handshake only aged (no new one on a
    // path change; a rekey every 2 min is WireGuard's own and would be
    // younger than the 10 s of this flood).
    assert!(
        handshake_after >= handshake_before,
        "a new handshake happened on a path change: {handshake_before:?} -> {handshake_after:?}"
    );
    eprintln!(
        "fallback: gap {} ms, fell back after {:?}, failback {:?}, received {}/1000",
        gap * 10,
        fell_back,
        healed,
        seqs.len()
    );
}

#[test]
fn strangers_forged_and_replayed_probes_change_nothing() {
    common::require_root_and_tools(&["ip", "ping", "nft", "tcpdump"]);
    let mut w = World::new(73);
    w.configure();
    assert!(
        w.a.ns
            .ping_until(&w.b.tunnel_ip, &[], Duration::from_secs(15))
    );
    let before = w.b.backend.stats().unwrap().probes;
    let target: SocketAddr = format!("{}:{}", w.b.addr, w.b.port).parse().unwrap();
    // Capture one real probe from A to B in the router, then replay it.
    let cap = w.r.spawn(
        "tcpdump",
        &[
            "-i",
            "any",
            "-n",
            "-U",
            "-c",
            "1",
            "-x",
            &format!("udp and dst host {} and udp[8] = 0xd1", w.b.addr),
        ],
    );
    std::thread::sleep(Duration::from_millis(1000));
    // Traffic makes A's path machine active: it heartbeats B every 250 ms.
    let _ = ping_flood(&w, 2);
    let dump = String::from_utf8_lossy(&cap.finish().stdout).into_owned();
    let bytes: Vec<u8> = dump
        .lines()
        .filter(|l| l.trim_start().starts_with("0x"))
        .flat_map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
        .flat_map(|h| {
            (0..h.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    // IPv4 header (20) + UDP header (8), then the probe.
    let probe = bytes.get(28..).map(<[u8]>::to_vec).unwrap_or_default();
    assert!(probe.first() == Some(&0xd1), "no probe captured:\n{dump}");
    let path_before = w.path(false);
    w.r.enter(|| {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        // A stranger: a well-formed probe from a path key no peer has.
        let mut stranger = probe.clone();
        stranger[2..34].copy_from_slice(&[0x55; 32]);
        // Forged: A's key, tampered ciphertext.
        let mut forged = probe.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        for pkt in [&stranger, &forged, &probe, &probe] {
            sock.send_to(pkt, target).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = w.b.backend.stats().unwrap().probes;
    assert!(
        after.unknown_sender > before.unknown_sender,
        "stranger not counted: {after:?}"
    );
    assert!(
        after.bad_auth > before.bad_auth,
        "forgery not counted: {after:?}"
    );
    assert!(
        after.replayed >= before.replayed + 2,
        "replays not counted: {before:?} -> {after:?}"
    );
    // The replayed ping came from the router's address: had it been taken,
    // B would have added that address as a candidate and pinged it; the
    // path stays where it was.
    assert_eq!(
        w.path(false),
        path_before,
        "a refused probe changed the path"
    );
}
