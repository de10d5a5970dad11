//! The `inet rustynet` table of a generation: inbound ACL on the tunnel,
//! exit/LAN forwarding with NAT, the client-side LAN toggle, protected DNS and
//! the kill switch. State in, ruleset out (like Mullvad's `FirewallPolicy`).
//!
//! Default deny on the tunnel in every direction; in protected mode (an exit
//! node selected) the output chain's policy is drop, so anything not
//! explicitly allowed — including all IPv6 — cannot leave.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rustynet_netos::{
    BaseChain, Chain, ChainKind, CtState, FirewallRule, Hook, Match, Policy, PortProto,
    PortRange as NftPorts, Ruleset, Verdict,
};
use rustynet_proto::netmap::{MAGIC_DNS_IP, TUNNEL_NET};
use rustynet_proto::{LanGrant, Netmap};

use super::allow::Allows;
use super::local_lan::OnLink;
use super::{ExitChoice, LocalContext};

/// The one table Rustynet owns.
pub const TABLE: &str = "rustynet";

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(a, b, c, d), len)
}

/// RFC 1918 space: blocked through the tunnel unless LAN access allows it.
pub const PRIVATE_V4: [(Ipv4Addr, u8); 3] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
];

/// Never "the internet" for an exit node: private, shared (tunnel), loopback,
/// link-local, multicast, reserved and "this network" space.
pub const NOT_INTERNET_V4: [(Ipv4Addr, u8); 9] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v4(224, 0, 0, 0, 4),
    v4(240, 0, 0, 0, 4),
    v4(0, 0, 0, 0, 8),
];

fn nets(list: &[(Ipv4Addr, u8)]) -> Vec<IpNet> {
    list.iter()
        .filter_map(|(a, l)| Ipv4Net::new(*a, *l).ok().map(IpNet::V4))
        .collect()
}

fn ula() -> Vec<IpNet> {
    Ipv6Net::new(std::net::Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7)
        .map(|n| vec![IpNet::V6(n)])
        .unwrap_or_default()
}

pub(super) struct Inputs<'a> {
    pub netmap: &'a Netmap,
    pub ctx: &'a LocalContext,
    pub exit: Option<&'a ExitChoice>,
    pub lan: &'a [LanGrant],
    /// On-link prefixes `local-lan` lets out beside the tunnel (empty
    /// unless it is on and an exit is in use).
    pub local_lan: &'a [OnLink],
    /// Lockdown: the kill switch holds without an exit too.
    pub lockdown: bool,
    pub dns_protected: bool,
    pub serves_exit_dns: bool,
    /// Masquerade clients forwarded into approved routes.
    pub snat_subnet_routes: bool,
}

fn iif(tun: &str, negate: bool) -> Match {
    Match::Iifname {
        name: tun.to_owned(),
        negate,
    }
}

fn oif(tun: &str, negate: bool) -> Match {
    Match::Oifname {
        name: tun.to_owned(),
        negate,
    }
}

fn saddr(prefixes: Vec<IpNet>) -> Match {
    Match::Saddr {
        prefixes,
        negate: false,
    }
}

fn daddr(prefixes: Vec<IpNet>, negate: bool) -> Match {
    Match::Daddr { prefixes, negate }
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> FirewallRule {
    FirewallRule::new(matches, verdict)
}

fn dropped(matches: Vec<Match>, why: &str) -> FirewallRule {
    FirewallRule::new(matches, Verdict::Drop)
        .counted()
        .with_comment(why)
}

fn established() -> Match {
    Match::CtState {
        states: vec![CtState::Established, CtState::Related],
    }
}

fn base_chain(
    name: &str,
    kind: ChainKind,
    hook: Hook,
    priority: i32,
    policy: Policy,
    rules: Vec<FirewallRule>,
) -> Chain {
    Chain {
        name: name.to_owned(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
            policy,
        }),
        rules,
    }
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

fn input_chain(i: &Inputs<'_>) -> Chain {
    let tun = i.ctx.tun.as_str();
    let me = i.netmap.self_node.tunnel_ip;
    // Loopback is exempt: the node's own traffic to its tunnel address and
    // to Magic DNS (100.100.100.100, inside 100.64.0.0/10) arrives there.
    let mut rules = vec![
        magic_dns_local_only(),
        dropped(
            vec![
                iif(tun, true),
                iif("lo", true),
                daddr(vec![host(me)], false),
            ],
            "tunnel address reached from outside the tunnel",
        ),
        dropped(
            vec![
                iif(tun, true),
                iif("lo", true),
                saddr(vec![IpNet::V4(TUNNEL_NET)]),
            ],
            "tunnel source address on a physical interface",
        ),
        rule(vec![iif(tun, false), established()], Verdict::Accept),
    ];
    if i.serves_exit_dns {
        for proto in [PortProto::Udp, PortProto::Tcp] {
            rules.push(rule(
                vec![
                    iif(tun, false),
                    saddr(i.netmap.exit_clients.clone()),
                    daddr(vec![host(me)], false),
                    Match::Dport {
                        proto,
                        ports: vec![NftPorts::single(53)],
                        negate: false,
                    },
                ],
                Verdict::Accept,
            ));
        }
    }
    rules.extend(Allows::from_filter(&i.netmap.packet_filter).rules(&[iif(tun, false)]));
    rules.push(dropped(
        vec![iif(tun, false)],
        "inbound from the mesh not allowed by policy",
    ));
    base_chain(
        "input",
        ChainKind::Filter,
        Hook::Input,
        0,
        Policy::Accept,
        rules,
    )
}

/// Magic DNS serves this node only: its queries arrive on loopback. Anyone
/// else who routes 100.100.100.100 to the node (a host on its LAN, a peer)
/// would otherwise get the tailnet's names and a free forwarder.
fn magic_dns_local_only() -> FirewallRule {
    dropped(
        vec![iif("lo", true), daddr(vec![host(MAGIC_DNS_IP)], false)],
        "Magic DNS reached from outside this node",
    )
}

fn forward_chain(i: &Inputs<'_>) -> Chain {
    let tun = i.ctx.tun.as_str();
    let mut rules = vec![
        dropped(
            vec![iif(tun, true), saddr(vec![IpNet::V4(TUNNEL_NET)])],
            "tunnel source address on a physical interface",
        ),
        rule(vec![iif(tun, false), established()], Verdict::Accept),
        rule(vec![oif(tun, false), established()], Verdict::Accept),
    ];
    rules.extend(
        Allows::from_filter(&i.netmap.forward_filter).rules(&[iif(tun, false), oif(tun, true)]),
    );
    if !i.netmap.exit_clients.is_empty() {
        let mut excluded = nets(&NOT_INTERNET_V4);
        excluded.extend(
            i.netmap
                .self_node
                .approved_routes
                .iter()
                .filter(|n| n.addr().is_ipv4()),
        );
        rules.push(rule(
            vec![
                iif(tun, false),
                oif(tun, true),
                saddr(i.netmap.exit_clients.clone()),
                daddr(excluded, true),
            ],
            Verdict::Accept,
        ));
    }
    rules.push(dropped(
        vec![iif(tun, false)],
        "forwarding from the mesh not allowed by policy",
    ));
    rules.push(dropped(
        vec![oif(tun, false)],
        "forwarding into the mesh not allowed",
    ));
    // What is left is forwarding between physical interfaces (containers,
    // VMs, other namespaces on this node). The kill switch covers it like
    // the node's own traffic: with an exit selected nothing leaves outside
    // the tunnel, and protected DNS holds for forwarded queries too.
    if i.exit.is_some() || i.lockdown {
        rules.push(forward_kill_switch());
    } else if i.dns_protected {
        rules.extend(forwarded_dns_protection(tun));
    }
    base_chain(
        "forward",
        ChainKind::Filter,
        Hook::Forward,
        0,
        Policy::Accept,
        rules,
    )
}

/// Masquerade for forwarded clients: exit clients going to the internet
/// always; clients going into this node's approved routes unless
/// `--snat-subnet-routes=false` asked to keep their tunnel addresses.
fn nat_chain(i: &Inputs<'_>) -> Option<Chain> {
    let v4 = |nets: &mut Vec<IpNet>| {
        nets.retain(|n| n.addr().is_ipv4());
        nets.sort();
        nets.dedup();
    };
    let tun = i.ctx.tun.as_str();
    let mut rules = Vec::new();
    if i.snat_subnet_routes {
        let mut sources: Vec<IpNet> = i.netmap.exit_clients.clone();
        sources.extend(
            i.netmap
                .forward_filter
                .iter()
                .flat_map(|r| r.src.iter().copied()),
        );
        v4(&mut sources);
        if !sources.is_empty() {
            rules.push(rule(
                vec![oif(tun, true), saddr(sources)],
                Verdict::Masquerade,
            ));
        }
    } else {
        let mut clients = i.netmap.exit_clients.clone();
        v4(&mut clients);
        let mut lans: Vec<IpNet> = i.netmap.self_node.approved_routes.clone();
        v4(&mut lans);
        if !clients.is_empty() {
            let mut matches = vec![oif(tun, true), saddr(clients)];
            if !lans.is_empty() {
                matches.push(daddr(lans, true));
            }
            rules.push(
                rule(matches, Verdict::Masquerade)
                    .with_comment("exit clients to the internet; LAN traffic keeps its source"),
            );
        }
    }
    if rules.is_empty() {
        return None;
    }
    Some(base_chain(
        "postrouting",
        ChainKind::Nat,
        Hook::Postrouting,
        100,
        Policy::Accept,
        rules,
    ))
}

/// Loopback, our marked sockets and DHCP; then drop.
///
/// The control connection is one of the marked sockets. There is no
/// exception by control address: that would let any process reach that
/// address outside the tunnel, and a hostile network that controls DNS or
/// DHCP could choose it (TunnelCrack's "ServerIP" leak). Setting the mark
/// needs CAP_NET_ADMIN, which only the daemon holds.
fn kill_switch(ctx: &LocalContext, via_tunnel: bool) -> Vec<FirewallRule> {
    let mut rules = vec![
        rule(
            vec![Match::Oifname {
                name: "lo".into(),
                negate: false,
            }],
            Verdict::Accept,
        ),
        rule(
            vec![Match::Mark {
                value: ctx.fwmark,
                mask: None,
                negate: false,
            }],
            Verdict::Accept,
        )
        .with_comment("tunnel transport and control connection"),
    ];
    if via_tunnel {
        rules.push(rule(vec![oif(&ctx.tun, false)], Verdict::Accept));
    }
    rules.push(
        rule(
            vec![
                Match::Sport {
                    proto: PortProto::Udp,
                    ports: vec![NftPorts::single(68)],
                    negate: false,
                },
                Match::Dport {
                    proto: PortProto::Udp,
                    ports: vec![NftPorts::single(67)],
                    negate: false,
                },
            ],
            Verdict::Accept,
        )
        .with_comment("DHCP"),
    );
    rules.push(dropped(vec![], "kill switch: egress outside the tunnel"));
    rules
}

fn dns_protection(ctx: &LocalContext) -> Vec<FirewallRule> {
    let not_lo = Match::Oifname {
        name: "lo".into(),
        negate: true,
    };
    vec![
        rule(
            vec![Match::Mark {
                value: ctx.dns_mark,
                mask: None,
                negate: false,
            }],
            Verdict::Accept,
        )
        .with_comment("Magic DNS upstream queries"),
        dropped(
            vec![
                not_lo.clone(),
                Match::Dport {
                    proto: PortProto::Udp,
                    ports: vec![NftPorts::single(53)],
                    negate: false,
                },
            ],
            "protected DNS: query outside Magic DNS",
        ),
        dropped(
            vec![
                not_lo,
                Match::Dport {
                    proto: PortProto::Tcp,
                    ports: vec![NftPorts::single(53), NftPorts::single(853)],
                    negate: false,
                },
            ],
            "protected DNS: query outside Magic DNS",
        ),
    ]
}

fn forward_kill_switch() -> FirewallRule {
    dropped(vec![], "kill switch: forwarded traffic outside the tunnel")
}

/// Forwarded DNS that does not come from the mesh (containers and VMs on
/// this node asking resolvers outside): the forward-hook twin of
/// [`dns_protection`].
fn forwarded_dns_protection(tun: &str) -> Vec<FirewallRule> {
    [
        (PortProto::Udp, vec![NftPorts::single(53)]),
        (
            PortProto::Tcp,
            vec![NftPorts::single(53), NftPorts::single(853)],
        ),
    ]
    .into_iter()
    .map(|(proto, ports)| {
        dropped(
            vec![
                iif(tun, true),
                Match::Dport {
                    proto,
                    ports,
                    negate: false,
                },
            ],
            "protected DNS: forwarded query outside Magic DNS",
        )
    })
    .collect()
}

fn output_chain(i: &Inputs<'_>) -> Chain {
    let tun = i.ctx.tun.as_str();
    let mut lan = Allows::default();
    for g in i.lan {
        lan.add(&[], &[g.dst], g.proto, &g.ports);
    }
    let mut rules = lan.rules(&[oif(tun, false)]);
    rules.push(dropped(
        vec![oif(tun, false), daddr(nets(&PRIVATE_V4), false)],
        "LAN through the tunnel without LAN access",
    ));
    rules.push(dropped(
        vec![oif(tun, false), daddr(ula(), false)],
        "LAN through the tunnel without LAN access",
    ));
    if i.dns_protected {
        rules.extend(dns_protection(i.ctx));
    }
    let policy = if i.exit.is_some() || i.lockdown {
        // After protected DNS: a resolver on the LAN stays blocked.
        rules.extend(i.local_lan.iter().map(|l| {
            rule(
                vec![oif(&l.dev, false), daddr(vec![l.net], false)],
                Verdict::Accept,
            )
            .with_comment("local-lan: on-link LAN beside the exit")
        }));
        rules.extend(kill_switch(i.ctx, true));
        Policy::Drop
    } else {
        Policy::Accept
    };
    base_chain("output", ChainKind::Filter, Hook::Output, 0, policy, rules)
}

pub(super) fn ruleset(i: &Inputs<'_>) -> Ruleset {
    let mut chains = vec![input_chain(i), forward_chain(i)];
    chains.extend(nat_chain(i));
    chains.push(output_chain(i));
    Ruleset {
        table: TABLE.to_owned(),
        chains,
    }
}

/// The restricted ruleset while failing closed.
pub(super) fn fail_closed(ctx: &LocalContext, protected: bool, dns_protected: bool) -> Ruleset {
    let tun = ctx.tun.as_str();
    let input = vec![
        magic_dns_local_only(),
        dropped(vec![iif(tun, false)], "fail-closed: tunnel blocked"),
        dropped(
            vec![
                iif(tun, true),
                iif("lo", true),
                saddr(vec![IpNet::V4(TUNNEL_NET)]),
            ],
            "tunnel source address on a physical interface",
        ),
    ];
    let mut forward = vec![
        dropped(vec![iif(tun, false)], "fail-closed: tunnel blocked"),
        dropped(vec![oif(tun, false)], "fail-closed: tunnel blocked"),
    ];
    if protected {
        forward.push(forward_kill_switch());
    } else if dns_protected {
        forward.extend(forwarded_dns_protection(tun));
    }
    let (output, policy) = if protected {
        let mut rules = dns_protection(ctx);
        rules.extend(kill_switch(ctx, false));
        (rules, Policy::Drop)
    } else {
        let mut rules = vec![dropped(
            vec![oif(tun, false)],
            "fail-closed: tunnel blocked",
        )];
        if dns_protected {
            rules.extend(dns_protection(ctx));
        }
        (rules, Policy::Accept)
    };
    Ruleset {
        table: TABLE.to_owned(),
        chains: vec![
            base_chain(
                "input",
                ChainKind::Filter,
                Hook::Input,
                0,
                Policy::Accept,
                input,
            ),
            base_chain(
                "forward",
                ChainKind::Filter,
                Hook::Forward,
                0,
                Policy::Accept,
                forward,
            ),
            base_chain("output", ChainKind::Filter, Hook::Output, 0, policy, output),
        ],
    }
}
