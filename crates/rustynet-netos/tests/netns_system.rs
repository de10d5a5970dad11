//! Root-only: sysctls and the capability probe, for real, in a private
//! network namespace.
#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use common::{in_netns, require_root_and_tools, run};
use rustynet_netos::{ProcSysctl, Sysctl, SysctlError, nft_usable, probe};

const FORWARD: &str = "net.ipv4.ip_forward";
const SRC_VALID_MARK: &str = "net.ipv4.conf.all.src_valid_mark";

/// Read by a child process (in the caller's namespace), independent of the
/// code under test.
fn cat(key: &str) -> String {
    run("cat", &[&format!("/proc/sys/{}", key.replace('.', "/"))])
        .trim()
        .to_owned()
}

#[test]
fn sysctl_set_and_restore_in_namespace_only() {
    require_root_and_tools(&["cat"]);
    let host_forward = cat(FORWARD);
    in_netns(|| {
        let mut sysctl = ProcSysctl::new();
        let before = (
            sysctl.get(FORWARD).expect("get"),
            sysctl.get(SRC_VALID_MARK).expect("get"),
        );
        assert_eq!(before, (cat(FORWARD), cat(SRC_VALID_MARK)));
        let flip = |v: &str| if v == "1" { "0" } else { "1" }.to_owned();

        assert!(sysctl.set(FORWARD, &flip(&before.0)).expect("set forward"));
        assert!(
            sysctl
                .set(SRC_VALID_MARK, &flip(&before.1))
                .expect("set src_valid_mark")
        );
        assert_eq!(cat(FORWARD), flip(&before.0));
        assert_eq!(cat(SRC_VALID_MARK), flip(&before.1));
        assert_eq!(sysctl.saved().len(), 2);

        assert!(matches!(
            sysctl.set("net.ipv4.no_such_knob", "1"),
            Err(SysctlError::NotFound(_))
        ));
        assert!(matches!(
            sysctl.set("net.ipv4.ip_forward", "banana"),
            Err(SysctlError::Io { .. })
        ));

        let restored = sysctl.restore().expect("restore");
        assert_eq!(restored, [SRC_VALID_MARK, FORWARD]);
        assert_eq!((cat(FORWARD), cat(SRC_VALID_MARK)), before);
    });
    assert_eq!(
        cat(FORWARD),
        host_forward,
        "the host's value must be untouched"
    );
}

#[test]
fn probe_reports_a_capable_root_namespace() {
    require_root_and_tools(&["nft"]);
    in_netns(|| {
        let caps = probe();
        assert!(caps.is_root, "{caps:?}");
        assert!(caps.cap_net_admin, "{caps:?}");
        assert!(caps.nft_usable, "{caps:?}");
        assert!(caps.policy_routing, "{caps:?}");
        assert_eq!(
            caps.tun_device,
            std::path::Path::new("/dev/net/tun").exists(),
            "{caps:?}"
        );
        nft_usable().expect("nft usable");
    });
}
