//! Root-only: the backend conformance suite against the userspace engine, in a
//! private network namespace (the test thread unshares one; it vanishes with
//! the thread), plus engine selection on this host.

// Test code: a failed expectation should panic with context.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use rustynet_backend_wireguard::{
    EngineChoice, UserspaceBackend, generate_private_key, public_key, select_backend,
};
use rustynet_tunnel::conformance::{self, Harness};
use rustynet_tunnel::{InterfaceConfig, TunnelBackend, TunnelPublicKey};

/// Runs `f` on a thread with its own, empty network namespace.
fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: affects only this thread's namespace membership.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            common::run("ip", &["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

struct UserspaceHarness;

impl Harness for UserspaceHarness {
    type Backend = UserspaceBackend;

    fn backend(&mut self) -> UserspaceBackend {
        UserspaceBackend::default()
    }

    fn interface_config(&mut self) -> InterfaceConfig {
        InterfaceConfig {
            ifname: common::unique("rnc"),
            private_key: generate_private_key(),
            listen_port: 0,
            mtu: 1420,
            fwmark: Some(0x5259),
        }
    }

    fn peer_key(&mut self) -> TunnelPublicKey {
        public_key(&generate_private_key())
    }

    fn delete_interface_externally(&mut self, _backend: &UserspaceBackend, ifname: &str) {
        common::run("ip", &["link", "del", ifname]);
    }
}

#[test]
fn userspace_engine_passes_the_conformance_suite() {
    common::require_root_and_tools(&["ip"]);
    in_private_netns(|| conformance::run_all(&mut UserspaceHarness));
}

#[test]
fn stop_removes_the_interface_and_fixed_port_is_bound() {
    common::require_root_and_tools(&["ip"]);
    in_private_netns(|| {
        let mut b = UserspaceBackend::default();
        let mut cfg = UserspaceHarness.interface_config();
        cfg.listen_port = 47_123;
        b.start(&cfg).unwrap();
        let links = common::run("ip", &["-o", "link", "show", "dev", &cfg.ifname]);
        assert!(links.contains("UP"), "interface not up: {links}");
        assert!(links.contains("mtu 1420"), "MTU not applied: {links}");
        assert_eq!(b.stats().unwrap().listen_port, 47_123);
        let socks = common::run("ss", &["-uanp"]);
        assert!(socks.contains(":47123"), "UDP port not bound: {socks}");
        // A second engine cannot take the same name or port.
        let mut other = UserspaceBackend::default();
        assert!(other.start(&cfg).is_err());
        b.stop().unwrap();
        let gone = common::output("ip", &["link", "show", "dev", &cfg.ifname]);
        assert!(!gone.status.success(), "interface survived stop");
    });
}

#[test]
fn selection_picks_userspace_and_says_why() {
    common::require_root_and_tools(&["ip"]);
    in_private_netns(|| {
        let default = select_backend(EngineChoice::default());
        assert_eq!(default.info().engine, "userspace");
        assert!(
            default.info().detail.contains("relays and NAT traversal"),
            "{:?}",
            default.info()
        );
        // Asked for the kernel engine on a host without the module: the
        // userspace engine runs and says why; the probe leaves nothing.
        let before = common::run("ip", &["-o", "link"]);
        let backend = select_backend(EngineChoice::Kernel);
        let info = backend.info();
        assert_eq!(info.engine, "userspace", "{info:?}");
        assert!(
            info.detail
                .starts_with("userspace: kernel engine asked for but unavailable ("),
            "{info:?}"
        );
        assert!(!info.detail.contains("os error"), "{info:?}");
        let after = common::run("ip", &["-o", "link"]);
        assert_eq!(before, after, "the probe link was left behind");
    });
}
