//! Root-only: real tunnels between two network namespaces joined by a veth
//! pair. Ping and TCP through the userspace engine, only UDP (and no
//! plaintext) on the wire, roaming, inbound cryptokey routing, and interop
//! with wireguard-go configured through `wg set`.

// Test code: a failed expectation should panic with context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{ChildGuard, Link, Netns, unique};
use rustynet_backend_wireguard::{UserspaceBackend, generate_private_key, public_key};
use rustynet_tunnel::{
    InterfaceConfig, PeerConfig, TunnelBackend, TunnelPrivateKey, TunnelPublicKey,
};

const TOOLS: &[&str] = &["ip", "ping", "tcpdump"];

/// One engine running inside a namespace, with a tunnel address.
struct Node {
    backend: UserspaceBackend,
    key: TunnelPublicKey,
    ifname: String,
    port: u16,
}

fn start_node(ns: &Netns, tunnel_addr: &str) -> Node {
    let private = generate_private_key();
    let ifname = unique("rnt");
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
    ns.ip(&["addr", "add", &format!("{tunnel_addr}/10"), "dev", &ifname]);
    let port = backend.stats().unwrap().listen_port;
    Node {
        backend,
        key: public_key(&private),
        ifname,
        port,
    }
}

fn peer(key: TunnelPublicKey, endpoint: SocketAddr, allowed: &str) -> PeerConfig {
    PeerConfig {
        candidates: Vec::new(),
        home_relay: None,
        path_key: None,
        public_key: key,
        endpoint: Some(endpoint),
        allowed_ips: vec![allowed.parse().unwrap()],
        persistent_keepalive_secs: None,
    }
}

fn endpoint(addr: &str, port: u16) -> SocketAddr {
    format!("{addr}:{port}").parse().unwrap()
}

/// A, B and the link, with each side knowing the other.
fn pair(subnet: u8) -> (Link, Node, Node) {
    let link = Link::new(subnet);
    let mut a = start_node(&link.a, "100.64.0.1");
    let mut b = start_node(&link.b, "100.64.0.2");
    a.backend
        .set_peers(&[peer(b.key, endpoint(&link.b_addr, b.port), "100.64.0.2/32")])
        .unwrap();
    b.backend
        .set_peers(&[peer(a.key, endpoint(&link.a_addr, a.port), "100.64.0.1/32")])
        .unwrap();
    (link, a, b)
}

struct TempFile(String);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts tcpdump and waits until it is capturing.
fn capture(ns: &Netns, args: &[&str]) -> ChildGuard {
    let mut full = vec!["-n", "-U", "-l", "--immediate-mode"];
    full.extend_from_slice(args);
    let guard = ns.spawn("tcpdump", &full);
    std::thread::sleep(Duration::from_millis(1500));
    guard
}

fn echo_server(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    })
}

#[test]
fn ping_and_tcp_cross_the_tunnel_and_only_udp_is_on_the_wire() {
    common::require_root_and_tools(TOOLS);
    let (link, a, b) = pair(91);
    let pcap = TempFile(format!("/tmp/{}.pcap", unique("rnp")));
    let dump = capture(&link.b, &["-i", &link.b_if, "-w", &pcap.0]);

    assert!(
        link.a
            .ping_until("100.64.0.2", &[], Duration::from_secs(20)),
        "no ping reply through the tunnel"
    );

    let marker = format!("RUSTYNET-CLEARTEXT-MARKER-{}", unique("m"));
    let listener = link.b.enter(|| TcpListener::bind("100.64.0.2:0").unwrap());
    let server_addr = listener.local_addr().unwrap();
    let server = echo_server(listener);
    let mut stream = link
        .a
        .enter(|| TcpStream::connect_timeout(&server_addr, Duration::from_secs(10)).unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let payload: Vec<u8> = marker
        .as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(2 << 20)
        .collect();
    let writer = {
        let mut w = stream.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || w.write_all(&payload).unwrap())
    };
    let mut echoed = vec![0u8; payload.len()];
    stream.read_exact(&mut echoed).unwrap();
    writer.join().unwrap();
    assert!(
        echoed == payload,
        "TCP echo through the tunnel corrupted data"
    );
    drop(stream);
    server.join().unwrap();

    let out = dump.finish();
    let bytes = std::fs::read(&pcap.0).unwrap();
    assert!(
        bytes.len() > 2 << 20,
        "capture too small: {} bytes",
        bytes.len()
    );
    assert!(
        !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "plaintext marker seen on the veth"
    );
    let filter = format!(
        "not arp and not ip6 and not (udp and host {} and host {})",
        link.a_addr, link.b_addr
    );
    let other = common::run("tcpdump", &["-n", "-r", &pcap.0, &filter]);
    assert!(
        other.trim().is_empty(),
        "non-tunnel traffic on the wire:\n{other}"
    );
    let tunnel = common::run("tcpdump", &["-n", "-r", &pcap.0, "udp"]);
    assert!(
        tunnel.lines().count() > 100,
        "too few UDP packets:\n{:?}",
        out
    );

    for (node, peer) in [(&a, &b), (&b, &a)] {
        let stats = node.backend.stats().unwrap();
        let p = stats.peer(&peer.key).unwrap();
        assert!(p.last_handshake.is_some(), "no handshake recorded");
        assert!(p.rx_bytes > 2 << 20 && p.tx_bytes > 2 << 20, "{p:?}");
    }
}

#[test]
fn roaming_peer_is_followed_to_its_new_address() {
    common::require_root_and_tools(TOOLS);
    let (link, a, b) = pair(92);
    assert!(
        link.a
            .ping_until("100.64.0.2", &[], Duration::from_secs(20))
    );
    let old = endpoint(&link.b_addr, b.port);
    assert_eq!(
        a.backend.stats().unwrap().peer(&b.key).unwrap().endpoint,
        Some(old)
    );

    link.b.ip(&[
        "addr",
        "del",
        &format!("{}/24", link.b_addr),
        "dev",
        &link.b_if,
    ]);
    link.b
        .ip(&["addr", "add", "10.92.0.3/24", "dev", &link.b_if]);
    // B speaks first from its new address; A must follow it.
    assert!(
        link.b
            .ping_until("100.64.0.1", &[], Duration::from_secs(20)),
        "B cannot reach A after moving"
    );
    let new = endpoint("10.92.0.3", b.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ep = a.backend.stats().unwrap().peer(&b.key).unwrap().endpoint;
        if ep == Some(new) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A still sends to {ep:?}, expected {new}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        link.a
            .ping_until("100.64.0.2", &[], Duration::from_secs(10)),
        "A cannot reach B at its new address"
    );
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped() {
    common::require_root_and_tools(TOOLS);
    let (link, a, b) = pair(93);
    assert!(
        link.b
            .ping_until("100.64.0.1", &[], Duration::from_secs(20))
    );
    // B may use 100.64.0.2 only; give it a second address and spoof with it.
    link.b
        .ip(&["addr", "add", "100.64.0.99/32", "dev", &b.ifname]);
    let dump = capture(&link.a, &["-i", &a.ifname]);
    let spoofed = link
        .b
        .ping_until("100.64.0.1", &["-I", "100.64.0.99"], Duration::from_secs(4));
    assert!(
        link.b
            .ping_until("100.64.0.1", &[], Duration::from_secs(10))
    );
    let out = dump.finish();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(!spoofed, "spoofed ping got an answer");
    assert!(
        seen.contains("100.64.0.2 > 100.64.0.1"),
        "control packets missing from A's TUN capture:\n{seen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !seen.contains("100.64.0.99"),
        "a packet with a spoofed inner source reached A's TUN:\n{seen}"
    );
}

/// Cryptokey routing is exclusive (the audit's item 1): a peer whose allowed
/// IPs include a default route (a selected exit) still cannot use another
/// peer's address, because a source must route back to its sender through
/// the one table, longest match first.
#[test]
fn exit_peer_cannot_claim_another_peers_address() {
    common::require_root_and_tools(TOOLS);
    let link = Link::new(94);
    let mut a = start_node(&link.a, "100.64.0.1");
    let mut b = start_node(&link.b, "100.64.0.2");
    // A uses B as its exit (0.0.0.0/0) and also knows C at 100.64.0.3, a
    // peer that is offline; B knows A.
    let c_key = public_key(&generate_private_key());
    a.backend
        .set_peers(&[
            peer(b.key, endpoint(&link.b_addr, b.port), "0.0.0.0/0"),
            peer(c_key, endpoint(&link.b_addr, 9), "100.64.0.3/32"),
        ])
        .unwrap();
    b.backend
        .set_peers(&[peer(a.key, endpoint(&link.a_addr, a.port), "100.64.0.1/32")])
        .unwrap();
    assert!(
        link.b
            .ping_until("100.64.0.1", &[], Duration::from_secs(20)),
        "the exit cannot reach A with its own address"
    );
    let before = a.backend.stats().unwrap().rx_source_mismatch;
    link.b
        .ip(&["addr", "add", "100.64.0.3/32", "dev", &b.ifname]);
    let dump = capture(&link.a, &["-i", &a.ifname]);
    let spoofed = link
        .b
        .ping_until("100.64.0.1", &["-I", "100.64.0.3"], Duration::from_secs(3));
    let out = dump.finish();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(!spoofed, "a ping claiming C's address got an answer");
    assert!(
        !seen.contains("100.64.0.3"),
        "a packet claiming C's address reached A's TUN:\n{seen}"
    );
    let dropped = a.backend.stats().unwrap().rx_source_mismatch - before;
    assert!(
        dropped >= 2,
        "A counted {dropped} spoofed packets, expected the pings"
    );
    // A source that routes back to B (anything but C or A) still passes.
    link.b
        .ip(&["addr", "add", "100.64.0.9/32", "dev", &b.ifname]);
    assert!(
        link.b
            .ping_until("100.64.0.1", &["-I", "100.64.0.9"], Duration::from_secs(10)),
        "a source inside the exit's own default route was refused"
    );
}

#[test]
fn interoperates_with_wireguard_go() {
    common::require_root_and_tools(&["ip", "ping", "wireguard-go", "wg"]);
    let link = Link::new(94);
    let mut a = start_node(&link.a, "100.64.0.1");

    let b_private: TunnelPrivateKey = generate_private_key();
    let b_public = public_key(&b_private);
    let key_file = TempFile(format!("/tmp/{}.key", unique("rnk")));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_file.0)
            .unwrap();
        f.write_all(b_private.to_base64().as_bytes()).unwrap();
    }
    let wg_if = unique("rwg");
    let _wg = link.b.spawn_env(
        "wireguard-go",
        &["-f", &wg_if],
        &[("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")],
    );
    let sock = format!("/var/run/wireguard/{wg_if}.sock");
    // wireguard-go leaves its socket behind when killed.
    let _sock_guard = TempFile(sock.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::path::Path::new(&sock).exists() {
        assert!(Instant::now() < deadline, "wireguard-go did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_endpoint = format!("{}:{}", link.a_addr, a.port);
    let a_key = a.key.to_base64();
    let out = link.b.exec(
        "wg",
        &[
            "set",
            &wg_if,
            "private-key",
            &key_file.0,
            "listen-port",
            "51820",
            "peer",
            &a_key,
            "endpoint",
            &a_endpoint,
            "allowed-ips",
            "100.64.0.1/32",
        ],
    );
    assert!(
        out.status.success(),
        "wg set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    link.b.ip(&["addr", "add", "100.64.0.2/10", "dev", &wg_if]);
    link.b.ip(&["link", "set", &wg_if, "up"]);
    a.backend
        .set_peers(&[peer(
            b_public,
            endpoint(&link.b_addr, 51820),
            "100.64.0.2/32",
        )])
        .unwrap();

    assert!(
        link.a
            .ping_until("100.64.0.2", &[], Duration::from_secs(20)),
        "Rustynet -> wireguard-go: no reply"
    );
    assert!(
        link.b
            .ping_until("100.64.0.1", &[], Duration::from_secs(10)),
        "wireguard-go -> Rustynet: no reply"
    );
    let shown = link.b.exec("wg", &["show", &wg_if, "latest-handshakes"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    let ts: u64 = shown
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(ts > 0, "wireguard-go reports no handshake: {shown}");
    let stats = a.backend.stats().unwrap();
    let p = stats.peer(&b_public).unwrap();
    assert!(
        p.last_handshake.is_some() && p.rx_bytes > 0 && p.tx_bytes > 0,
        "{p:?}"
    );
}
