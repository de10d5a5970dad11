//! Root-only: proves that forwarding sockets really carry the configured
//! SO_MARK and device binding, by dropping unmarked upstream traffic with
//! nftables inside a private network namespace.
//!
//! Runs in a thread that `unshare(CLONE_NEWNET)`s, so the namespace, its
//! loopback and its nftables table vanish with the thread; the table is
//! also deleted explicitly on drop.
// Test helpers outside #[test] fns may unwrap and panic, as the tests do.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustynet_dns::{DnsServer, Limits, NetTransport, ServerConfig, SocketOptions, Upstream};

const MARK: u32 = 0x5151;
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "netns_fwmark needs root (CAP_NET_ADMIN for namespaces, SO_MARK and nft)"
    );
    for tool in ["nft", "ip"] {
        let ok = Command::new(tool)
            .arg(if tool == "nft" { "--version" } else { "-V" })
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "netns_fwmark needs `{tool}` on PATH");
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An nftables table in the current namespace, deleted on drop.
struct NftTable {
    name: String,
}

impl NftTable {
    /// Drops UDP and TCP to `port` unless the packet carries [`MARK`].
    fn drop_unmarked(port: u16) -> Self {
        let name = format!(
            "rustynet_dns_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ruleset = format!(
            "table inet {name} {{\n\
             chain out {{\n\
             type filter hook output priority 0; policy accept;\n\
             udp dport {port} meta mark != {MARK:#x} counter drop\n\
             tcp dport {port} meta mark != {MARK:#x} counter drop\n\
             }}\n\
             }}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft refused {ruleset}");
        Self { name }
    }

    /// Packets the UDP drop rule has counted.
    fn udp_drops(&self) -> u64 {
        let listing = run("nft", &["list", "table", "inet", &self.name]);
        listing
            .lines()
            .find(|line| line.contains("udp dport"))
            .and_then(|line| line.split("packets ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {listing}"))
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.name])
            .output();
    }
}

/// Runs `test` on a thread with a private network namespace and its own runtime.
fn in_private_netns<F>(test: F)
where
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static,
{
    preflight();
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(test());
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn server(upstream: std::net::SocketAddr, options: SocketOptions) -> DnsServer {
    let config = ServerConfig {
        limits: Limits {
            upstream_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..ServerConfig::new("127.0.0.1:0".parse().unwrap())
    };
    DnsServer::start(
        config,
        resolver(Upstream::System(vec![upstream])),
        Arc::new(NetTransport::new(options)),
    )
    .await
    .unwrap()
}

#[test]
fn forwarding_sockets_carry_the_mark_and_device() {
    in_private_netns(|| {
        Box::pin(async {
            let upstream = FakeUpstream::start(Ipv4Addr::new(192, 0, 2, 1)).await;
            let table = NftTable::drop_unmarked(upstream.addr.port());

            // Unmarked: the firewall drops the forwarded query -> SERVFAIL.
            let plain = server(upstream.addr, SocketOptions::default()).await;
            let reply = udp_ask(plain.local_addr(), &query("a.example.", RecordType::A)).await;
            assert_eq!(reply.response_code, ResponseCode::ServFail);
            assert_eq!(upstream.udp_queries(), 0);
            assert!(table.udp_drops() >= 1);
            plain.shutdown().await;

            // Marked: passes the firewall and is answered.
            let marked = server(
                upstream.addr,
                SocketOptions {
                    fwmark: Some(MARK),
                    bind_device: None,
                },
            )
            .await;
            let reply = udp_ask(marked.local_addr(), &query("b.example.", RecordType::A)).await;
            assert_eq!(reply.response_code, ResponseCode::NoError);
            assert_eq!(
                ips(&reply),
                vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
            );
            // The TCP retry path carries the mark as well.
            let reply = udp_ask(marked.local_addr(), &query("big.example.", RecordType::A)).await;
            assert!(reply.truncation);
            assert_eq!(upstream.tcp_queries(), 1);
            marked.shutdown().await;

            // Bound to lo (and marked): answered.
            let on_lo = server(
                upstream.addr,
                SocketOptions {
                    fwmark: Some(MARK),
                    bind_device: Some("lo".to_owned()),
                },
            )
            .await;
            let reply = udp_ask(on_lo.local_addr(), &query("c.example.", RecordType::A)).await;
            assert_eq!(reply.response_code, ResponseCode::NoError);
            on_lo.shutdown().await;

            // A device that does not exist: the socket cannot be set up -> SERVFAIL,
            // never an unsteered socket.
            let queries_before = upstream.udp_queries();
            let missing = server(
                upstream.addr,
                SocketOptions {
                    fwmark: Some(MARK),
                    bind_device: Some("rnmissing0".to_owned()),
                },
            )
            .await;
            let reply = udp_ask(missing.local_addr(), &query("d.example.", RecordType::A)).await;
            assert_eq!(reply.response_code, ResponseCode::ServFail);
            assert_eq!(upstream.udp_queries(), queries_before);
            missing.shutdown().await;
        })
    });
}
