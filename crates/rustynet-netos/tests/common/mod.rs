//! Shared helpers for the integration tests: namespaces, unique names,
//! command runners, and the representative ruleset.
#![allow(dead_code)] // each test target uses a different subset
#![allow(clippy::expect_used, clippy::panic)] // test helpers fail loudly by design

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rustynet_netos::{
    BaseChain, Chain, ChainKind, CtState, FirewallRule, Hook, IpFamily, L4Proto, Match, Policy,
    PortProto, PortRange, Ruleset, TupleField, TupleValue, Verdict,
};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<prefix><pid>x<n>`.
/// Prefixes are kept short so the result fits IFNAMSIZ.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 1_000_000)
}

/// Fails (never skips) when the test cannot prove anything here.
pub fn require_root_and_tools(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "netns tests must run as root (they create network namespaces); euid is {euid}"
    );
    for tool in tools {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file());
        assert!(found, "required tool `{tool}` is not installed");
    }
}

/// Runs `f` on a new thread inside a fresh, private network namespace (with
/// `lo` up). The namespace disappears when the thread ends, whatever
/// happened, so there is nothing to clean up on the host.
pub fn in_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only affects the calling thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed: {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        f()
    });
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a command (from the calling thread, so in its namespace) and
/// returns stdout; panics with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a command succeeds.
pub fn succeeds(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A named namespace (`ip netns add`), deleted on drop even if the test
/// panics.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) {
        enter_netns(&self.name);
    }
}

/// Moves the calling thread into the named namespace (`/run/netns/<name>`).
pub fn enter_netns(name: &str) {
    let file = std::fs::File::open(format!("/run/netns/{name}")).expect("open netns file");
    // SAFETY: a valid netns fd; setns only affects the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns failed: {}", std::io::Error::last_os_error());
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A representative Rustynet ruleset: kill-switch output chain, tunnel
/// input chain, exit-node forward chain, postrouting masquerade.
pub fn representative_ruleset(table: &str) -> Ruleset {
    let tun = "rn0";
    let wan = "eth0";
    let net = |s: &str| s.parse::<ipnet::IpNet>().expect("test prefix");
    let mesh4 = net("100.64.0.0/10");
    let established = Match::CtState {
        states: vec![CtState::Established, CtState::Related],
    };
    let control: IpAddr = "192.0.2.10".parse().expect("test addr");
    Ruleset {
        table: table.to_owned(),
        chains: vec![
            Chain {
                name: "killswitch_out".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Filter,
                    hook: Hook::Output,
                    priority: 0,
                    policy: Policy::Drop,
                }),
                rules: vec![
                    FirewallRule::new(
                        vec![Match::Oifname {
                            name: "lo".into(),
                            negate: false,
                        }],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![Match::Oifname {
                            name: tun.into(),
                            negate: false,
                        }],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![Match::Mark {
                            value: 0xca6c,
                            mask: None,
                            negate: false,
                        }],
                        Verdict::Accept,
                    )
                    .with_comment("tunnel transport (marked)"),
                    FirewallRule::new(
                        vec![
                            Match::Daddr {
                                prefixes: vec![net(&format!("{control}/32"))],
                                negate: false,
                            },
                            Match::Dport {
                                proto: PortProto::Tcp,
                                ports: vec![PortRange::single(443)],
                                negate: false,
                            },
                        ],
                        Verdict::Accept,
                    )
                    .with_comment("control server"),
                    FirewallRule::new(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::Dport {
                                proto: PortProto::Udp,
                                ports: vec![PortRange {
                                    first: 67,
                                    last: 68,
                                }],
                                negate: false,
                            },
                        ],
                        Verdict::Accept,
                    )
                    .with_comment("dhcp"),
                    FirewallRule::new(
                        vec![Match::Icmpv6Type {
                            types: vec![133, 135, 136],
                        }],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![
                            Match::L4Proto {
                                protos: vec![L4Proto::Tcp, L4Proto::Udp],
                                negate: false,
                            },
                            Match::Daddr {
                                prefixes: vec![net("100.100.100.100/32")],
                                negate: true,
                            },
                        ],
                        Verdict::Jump("dns_guard".into()),
                    ),
                    FirewallRule::new(vec![], Verdict::Reject)
                        .counted()
                        .with_comment("kill switch"),
                ],
            },
            Chain {
                name: "dns_guard".into(),
                base: None,
                rules: vec![
                    FirewallRule::new(
                        vec![Match::Dport {
                            proto: PortProto::Udp,
                            ports: vec![PortRange::single(53), PortRange::single(853)],
                            negate: false,
                        }],
                        Verdict::Drop,
                    )
                    .counted(),
                    FirewallRule::new(vec![], Verdict::Return),
                ],
            },
            Chain {
                name: "tunnel_in".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Filter,
                    hook: Hook::Input,
                    priority: 0,
                    policy: Policy::Accept,
                }),
                rules: vec![
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            established.clone(),
                        ],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            Match::Saddr {
                                prefixes: vec![net("100.64.0.2/32"), net("100.64.0.3/32")],
                                negate: false,
                            },
                            Match::Dport {
                                proto: PortProto::Tcp,
                                ports: vec![
                                    PortRange::single(22),
                                    PortRange {
                                        first: 8000,
                                        last: 8080,
                                    },
                                ],
                                negate: false,
                            },
                        ],
                        Verdict::Accept,
                    ),
                    // A per-peer ACL as one set lookup (with a prefix and
                    // a port range in the elements: an interval set).
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            Match::Tuple {
                                fields: vec![
                                    TupleField::Saddr(IpFamily::V4),
                                    TupleField::Daddr(IpFamily::V4),
                                    TupleField::Dport(PortProto::Tcp),
                                ],
                                elements: vec![
                                    vec![
                                        TupleValue::Net(net("100.64.0.4/32")),
                                        TupleValue::Net(net("100.64.0.1/32")),
                                        TupleValue::Ports(PortRange::single(22)),
                                    ],
                                    vec![
                                        TupleValue::Net(net("100.64.1.0/24")),
                                        TupleValue::Net(net("100.64.0.1/32")),
                                        TupleValue::Ports(PortRange {
                                            first: 8000,
                                            last: 8080,
                                        }),
                                    ],
                                ],
                            },
                        ],
                        Verdict::Accept,
                    ),
                    // IPv6, two fields.
                    FirewallRule::new(
                        vec![Match::Tuple {
                            fields: vec![
                                TupleField::Saddr(IpFamily::V6),
                                TupleField::Dport(PortProto::Udp),
                            ],
                            elements: vec![
                                vec![
                                    TupleValue::Net(net("fd7a:115c:a1e0::2/128")),
                                    TupleValue::Ports(PortRange::single(53)),
                                ],
                                vec![
                                    TupleValue::Net(net("fd7a:115c:a1e0::/64")),
                                    TupleValue::Ports(PortRange {
                                        first: 60000,
                                        last: 60010,
                                    }),
                                ],
                            ],
                        }],
                        Verdict::Accept,
                    ),
                    // One field (a LAN grant for any protocol).
                    FirewallRule::new(
                        vec![Match::Tuple {
                            fields: vec![TupleField::Daddr(IpFamily::V4)],
                            elements: vec![
                                vec![TupleValue::Net(net("192.168.77.0/24"))],
                                vec![TupleValue::Net(net("192.168.78.5/32"))],
                            ],
                        }],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            Match::IcmpType { types: vec![8] },
                        ],
                        Verdict::Accept,
                    ),
                    FirewallRule::new(
                        vec![Match::Iifname {
                            name: tun.into(),
                            negate: false,
                        }],
                        Verdict::Drop,
                    )
                    .counted(),
                ],
            },
            Chain {
                name: "exit_fwd".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Filter,
                    hook: Hook::Forward,
                    priority: 0,
                    policy: Policy::Drop,
                }),
                rules: vec![
                    FirewallRule::new(vec![established], Verdict::Accept),
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            Match::Oifname {
                                name: wan.into(),
                                negate: false,
                            },
                            Match::Saddr {
                                prefixes: vec![mesh4],
                                negate: false,
                            },
                            Match::Daddr {
                                prefixes: vec![
                                    net("10.0.0.0/8"),
                                    net("172.16.0.0/12"),
                                    net("192.168.0.0/16"),
                                ],
                                negate: true,
                            },
                        ],
                        Verdict::Accept,
                    )
                    .with_comment("internet for granted clients"),
                    FirewallRule::new(
                        vec![
                            Match::Iifname {
                                name: tun.into(),
                                negate: false,
                            },
                            Match::Saddr {
                                prefixes: vec![net("100.64.0.2/32")],
                                negate: false,
                            },
                            Match::Daddr {
                                prefixes: vec![net("192.168.1.0/24")],
                                negate: false,
                            },
                        ],
                        Verdict::Accept,
                    )
                    .with_comment("LAN grant"),
                    FirewallRule::new(
                        vec![Match::Saddr {
                            prefixes: vec![net("fd7a:115c:a1e0::/48")],
                            negate: false,
                        }],
                        Verdict::Drop,
                    ),
                ],
            },
            Chain {
                name: "exit_nat".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Nat,
                    hook: Hook::Postrouting,
                    priority: 100,
                    policy: Policy::Accept,
                }),
                rules: vec![FirewallRule::new(
                    vec![
                        Match::Saddr {
                            prefixes: vec![mesh4],
                            negate: false,
                        },
                        Match::Oifname {
                            name: tun.into(),
                            negate: true,
                        },
                    ],
                    Verdict::Masquerade,
                )],
            },
            Chain {
                name: "mark_tunnel".into(),
                base: Some(BaseChain {
                    kind: ChainKind::Route,
                    hook: Hook::Output,
                    priority: -150,
                    policy: Policy::Accept,
                }),
                rules: vec![FirewallRule::new(
                    vec![
                        Match::Sport {
                            proto: PortProto::Udp,
                            ports: vec![PortRange::single(41641)],
                            negate: false,
                        },
                        Match::Mark {
                            value: 0,
                            mask: Some(0xffff),
                            negate: false,
                        },
                        Match::FibDaddrLocal { negate: true },
                    ],
                    Verdict::SetMark(0xca6c),
                )],
            },
        ],
    }
}
