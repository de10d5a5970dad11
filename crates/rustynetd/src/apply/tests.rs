//! The transaction against recording fakes: every step's failure leaves the
//! previous generation intact, in every effect.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use rustynet_netos::{
    FakeFirewall, FakeRouting, FakeSysctl, LinkState, Route, RoutingScope, Ruleset, Sysctl as _,
};
use rustynet_proto::ipc::DnsInspectDoc;
use rustynet_proto::{DnsConfig, TunnelPublicKey};
use rustynet_tunnel::{FakeBackend, FakeHandle, InterfaceConfig, TunnelPrivateKey};

use super::*;
use crate::backend_manager::BackendManager;
use crate::dns_manager::DnsError;
use crate::plan::{Desired, DnsUpstream};
use crate::sysctl_manager::SysctlPlan;

#[derive(Clone, Default)]
struct FakeDns(Arc<Mutex<Option<DnsPlan>>>);

impl DnsOps for FakeDns {
    fn apply(&mut self, plan: &DnsPlan) -> Result<(), DnsError> {
        *self.0.lock().unwrap() = Some(plan.clone());
        Ok(())
    }
    fn stop(&mut self) -> Result<(), DnsError> {
        *self.0.lock().unwrap() = None;
        Ok(())
    }
    fn inspect(&self, _: Option<&str>) -> Option<DnsInspectDoc> {
        None
    }
    fn system_resolvers(&self) -> Vec<IpAddr> {
        vec![]
    }
    fn repair_stale(&mut self) -> Result<String, DnsError> {
        Ok("clean".into())
    }
}

struct World {
    fx: Effects,
    backend: FakeHandle,
    routing: FakeRouting,
    firewall: FakeFirewall,
    sysctl: FakeSysctl,
    dns: FakeDns,
}

fn world() -> World {
    let backend = FakeBackend::new();
    let handle = backend.handle();
    let mut manager =
        BackendManager::new(Box::new(backend), Box::new(|| Box::new(FakeBackend::new())));
    manager
        .ensure_started(&InterfaceConfig {
            ifname: "rn0".into(),
            private_key: TunnelPrivateKey::from_bytes([9; 32]),
            listen_port: 0,
            mtu: 1280,
            fwmark: None,
        })
        .unwrap();
    let routing = FakeRouting::new(RoutingScope::new("rn0").unwrap());
    routing.add_link(
        "rn0",
        LinkState {
            index: 7,
            up: true,
            lower_up: true,
            mtu: 1280,
        },
    );
    let firewall = FakeFirewall::new();
    let sysctl = FakeSysctl::with_values([
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv4.conf.all.src_valid_mark", "0"),
        ("net.ipv4.conf.all.arp_ignore", "0"),
        ("net.ipv4.conf.all.arp_filter", "0"),
    ]);
    let dns = FakeDns::default();
    World {
        fx: Effects {
            backend: manager,
            routing: Box::new(routing.clone()),
            firewall: Box::new(firewall.clone()),
            sysctl: SysctlPlan::new(Box::new(sysctl.clone()), vec![]),
            dns: Box::new(dns.clone()),
        },
        backend: handle,
        routing,
        firewall,
        sysctl,
        dns,
    }
}

fn generation(n: u8, exit: bool) -> Desired {
    let peer_ip: IpNet = format!("100.64.0.{n}/32").parse().unwrap();
    let mut allowed = vec![peer_ip];
    if exit {
        allowed.push("0.0.0.0/0".parse().unwrap());
    }
    allowed.sort();
    Desired {
        lan_routes: Vec::new(),
        generation: u64::from(n),
        peers: vec![PeerConfig {
            candidates: Vec::new(),
            home_relay: None,
            path_key: None,
            public_key: TunnelPublicKey([n; 32]),
            endpoint: Some(format!("192.0.2.{n}:41641").parse().unwrap()),
            allowed_ips: allowed,
            persistent_keepalive_secs: Some(25),
        }],
        routing: RoutingConfig {
            addresses: vec![format!("100.64.1.{n}/32").parse().unwrap()],
            routes: vec![Route::dev("100.64.0.0/10".parse().unwrap(), "rn0", 254)],
            rules: vec![],
        },
        firewall: Ruleset {
            table: "rustynet".into(),
            chains: vec![rustynet_netos::Chain {
                name: format!("gen{n}"),
                base: None,
                rules: vec![],
            }],
        },
        sysctls: crate::plan::sysctls(exit, exit),
        dns: DnsPlan {
            config: DnsConfig {
                suffix: "rustynet.internal".into(),
                records: vec![],
                split: vec![],
            },
            upstream: if exit {
                DnsUpstream::Exit {
                    ip: "100.64.0.2".parse().unwrap(),
                    name: "exit".into(),
                }
            } else {
                DnsUpstream::None
            },
            exit_service: None,
            protected: exit,
        },
        exit: None,
        protected: exit,
        dns_protected: exit,
    }
}

fn snapshot(
    w: &World,
) -> (
    Vec<PeerConfig>,
    BTreeSetRoutes,
    Option<Ruleset>,
    String,
    Option<DnsPlan>,
) {
    (
        w.backend.peers(),
        (
            w.routing.addresses().into_iter().collect(),
            w.routing.routes().into_iter().collect(),
        ),
        w.firewall.installed(),
        w.sysctl.clone().get("net.ipv4.ip_forward").unwrap(),
        w.dns.0.lock().unwrap().clone(),
    )
}

type BTreeSetRoutes = (Vec<IpNet>, Vec<Route>);

#[test]
fn applies_all_steps_then_nothing_when_unchanged() {
    let mut w = world();
    let mut applied = Applied::default();
    let steps = apply(
        &mut w.fx,
        &mut applied,
        &generation(2, true),
        Faults::default(),
    )
    .unwrap();
    assert_eq!(steps, Step::ALL.to_vec());
    assert_eq!(w.backend.peers(), generation(2, true).peers);
    assert_eq!(w.sysctl.clone().get("net.ipv4.ip_forward").unwrap(), "1");
    let steps = apply(
        &mut w.fx,
        &mut applied,
        &generation(2, true),
        Faults::default(),
    )
    .unwrap();
    assert!(
        steps.is_empty(),
        "an unchanged generation touches nothing: {steps:?}"
    );
}

#[test]
fn every_step_failure_rolls_back_to_the_previous_generation() {
    for failing in Step::ALL {
        let mut w = world();
        let mut applied = Applied::default();
        apply(
            &mut w.fx,
            &mut applied,
            &generation(2, false),
            Faults::default(),
        )
        .unwrap();
        let before = snapshot(&w);
        let applied_before = applied.clone();
        let faults = Faults {
            step: Some(failing),
            rollback: false,
        };
        let err = apply(&mut w.fx, &mut applied, &generation(3, true), faults).unwrap_err();
        assert_eq!(err.step, failing);
        assert!(err.rollback.is_ok(), "{failing}: {err}");
        assert_eq!(
            snapshot(&w),
            before,
            "{failing}: effects differ from the previous generation"
        );
        assert_eq!(applied, applied_before, "{failing}: bookkeeping changed");
    }
}

#[test]
fn real_effect_failures_roll_back_too() {
    let mut w = world();
    let mut applied = Applied::default();
    apply(
        &mut w.fx,
        &mut applied,
        &generation(2, false),
        Faults::default(),
    )
    .unwrap();
    let before = snapshot(&w);
    // The firewall refuses the new table: peers and routes go back.
    w.firewall.fail_next_call();
    let err = apply(
        &mut w.fx,
        &mut applied,
        &generation(3, true),
        Faults::default(),
    )
    .unwrap_err();
    assert_eq!(err.step, Step::Firewall);
    assert!(err.rollback.is_ok());
    assert_eq!(snapshot(&w), before);
    // The backend refuses: nothing after it runs.
    w.backend.fail_next();
    let calls = w.firewall.calls().len();
    let err = apply(
        &mut w.fx,
        &mut applied,
        &generation(3, true),
        Faults::default(),
    )
    .unwrap_err();
    assert_eq!(err.step, Step::Backend);
    assert_eq!(w.firewall.calls().len(), calls);
    assert_eq!(snapshot(&w), before);
}

#[test]
fn failed_rollback_is_reported() {
    let mut w = world();
    let mut applied = Applied::default();
    apply(
        &mut w.fx,
        &mut applied,
        &generation(2, false),
        Faults::default(),
    )
    .unwrap();
    let faults = Faults {
        step: Some(Step::Routes),
        rollback: true,
    };
    let before = applied.clone();
    let err = apply(&mut w.fx, &mut applied, &generation(3, true), faults).unwrap_err();
    assert!(err.to_string().contains("rollback failed"));
    let rb = err.rollback.unwrap_err();
    assert!(rb.0.iter().any(|(s, _)| *s == Step::Routes));
    // What the OS holds for routes is unknown now: the next apply redoes
    // that step; the steps that rolled back keep their bookkeeping.
    assert_eq!(applied.routing, None);
    assert_eq!(applied.peers, before.peers);
    assert_eq!(applied.firewall, before.firewall);
    let steps = apply(
        &mut w.fx,
        &mut applied,
        &generation(2, false),
        Faults::default(),
    )
    .unwrap();
    assert_eq!(steps, vec![Step::Routes]);
}

#[test]
fn step_names_roundtrip() {
    for s in Step::ALL {
        assert_eq!(Step::parse(s.as_str()), Some(s));
    }
    assert_eq!(Step::parse("nope"), None);
}
