//! `status` and `netcheck` documents.

use std::time::Duration;

use rustynet_proto::ipc::{
    DataplaneCounters, MappedView, NetcheckDoc, PathKind, PeerStatus, RelayLatency, RelayView,
    SelfStatus, StatusDoc,
};
use rustynet_tunnel::{NetcheckReport, PeerStats, TunnelStats};

use super::Engine;

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The IPC form of the engine's path kind.
pub(super) fn path_kind(kind: rustynet_tunnel::PathKind) -> PathKind {
    match kind {
        rustynet_tunnel::PathKind::Direct => PathKind::Direct,
        rustynet_tunnel::PathKind::Relay => PathKind::Relay,
        rustynet_tunnel::PathKind::None => PathKind::None,
    }
}

pub(super) fn peer_path(s: Option<&PeerStats>) -> (PathKind, Option<String>) {
    let Some(s) = s else {
        return (PathKind::None, None);
    };
    let kind = path_kind(s.path.kind);
    let via = match kind {
        PathKind::Direct => s.path.addr.map(|a| a.to_string()),
        PathKind::Relay => s.path.relay.clone(),
        PathKind::None => None,
    };
    (kind, via)
}

fn counters(stats: Option<&TunnelStats>) -> DataplaneCounters {
    let Some(s) = stats else {
        return DataplaneCounters::default();
    };
    DataplaneCounters {
        rx_source_mismatch: s.rx_source_mismatch,
        probes_accepted: s.probes.accepted,
        probes_unknown_sender: s.probes.unknown_sender,
        probes_bad_auth: s.probes.bad_auth,
        probes_replayed: s.probes.replayed,
        probes_malformed: s.probes.malformed,
        path_changes: s.probes.path_changes,
    }
}

impl Engine {
    pub(super) fn status(&self) -> StatusDoc {
        let stats = self.fx.backend.stats().ok();
        let map = self.current.as_ref().map(|m| m.netmap());
        let peers = map
            .map(|m| {
                m.peers
                    .iter()
                    .map(|p| {
                        let s = stats.as_ref().and_then(|s| s.peer(&p.node_key));
                        let (path, via) = peer_path(s);
                        let on_path = s.filter(|_| path != PathKind::None).map(|s| &s.path);
                        PeerStatus {
                            name: p.hostname.clone(),
                            dns_name: p.dns_name.clone(),
                            tunnel_ip: p.tunnel_ip,
                            path,
                            endpoint: s.and_then(|s| s.endpoint),
                            last_handshake_secs: s
                                .and_then(|s| s.last_handshake)
                                .map(|d| d.as_secs()),
                            rx_bytes: s.map_or(0, |s| s.rx_bytes),
                            tx_bytes: s.map_or(0, |s| s.tx_bytes),
                            online: p.online,
                            exit_node: p.exit_node,
                            via,
                            path_secs: on_path.map(|p| p.since.as_secs()),
                            path_reason: on_path
                                .map(|p| p.reason.clone())
                                .filter(|r| !r.is_empty()),
                            rtt_us: s.and_then(|s| s.path.rtt).map(micros),
                            path_changes: s.map_or(0, |s| s.path.changes),
                            direct_bytes: s.map_or(0, |s| s.path.direct_tx + s.path.direct_rx),
                            relay_bytes: s.map_or(0, |s| s.path.relay_tx + s.path.relay_rx),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let self_node = match (map, &self.state.enrollment) {
            (Some(m), _) => Some(SelfStatus {
                name: m.self_node.hostname.clone(),
                tunnel_ip: m.self_node.tunnel_ip,
                dns_name: m.self_node.dns_name.clone(),
                node_id: m.self_node.node_id,
            }),
            (None, Some(e)) => Some(SelfStatus {
                name: e.hostname.clone(),
                tunnel_ip: std::net::Ipv4Addr::UNSPECIFIED,
                dns_name: String::new(),
                node_id: e.node_id,
            }),
            (None, None) => None,
        };
        let relays = stats
            .as_ref()
            .map(|s| {
                s.relays
                    .iter()
                    .map(|r| RelayView {
                        name: r.name.clone(),
                        connected: r.connected,
                        rtt_us: r.rtt.map(micros),
                        home: r.home,
                        udp: r.udp,
                        error: r.error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let desired = self.desired.as_ref();
        StatusDoc {
            state: self.sm.state(),
            self_node,
            peers,
            exit_node: desired
                .and_then(|d| d.exit.as_ref())
                .map(|e| e.hostname.clone()),
            lan_access: self.state.prefs.lan_access,
            local_lan: self.state.prefs.local_lan,
            lockdown: self.cfg.lockdown || self.state.prefs.lockdown,
            // The last generation applied successfully (the last-known-safe one).
            generation: self.state.last_known_safe_generation,
            backend: self.fx.backend.info().detail,
            kill_switch: desired.is_some_and(|d| d.protected),
            dns_protected: desired.is_some_and(|d| d.dns_protected),
            dns_mode: self.fx.dns.os_mode(),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            error: self.last_error.clone(),
            advertised_routes: self.state.prefs.advertise_routes.clone(),
            snat_subnet_routes: !self.state.prefs.no_snat_subnet_routes,
            advertise_exit_node: self.state.prefs.advertise_exit_node,
            counters: counters(stats.as_ref()),
            relays,
            control: self.control_view(),
        }
    }

    /// `netcheck`'s local part: endpoints and peers by path. The engine's
    /// probe results are added by [`netcheck_doc`].
    pub(super) fn netcheck_local(&self) -> NetcheckDoc {
        let stats = self.fx.backend.stats().ok();
        let on = |kind| {
            stats.as_ref().map_or(0, |s| {
                s.peers
                    .iter()
                    .filter(|p| path_kind(p.path.kind) == kind)
                    .count()
            })
        };
        NetcheckDoc {
            udp: false,
            local_endpoints: self.interface_endpoints(),
            control_reachable: false,
            relay_latency_ms: None,
            direct_peers: on(PathKind::Direct),
            relay_peers: on(PathKind::Relay),
            mapped: Vec::new(),
            mapping_varies_by_destination: None,
            nat: String::new(),
            relays: Vec::new(),
            preferred_relay: None,
            took_ms: 0,
        }
    }
}

/// Completes `doc` with what the engine measured.
pub(super) fn netcheck_doc(mut doc: NetcheckDoc, report: &NetcheckReport) -> NetcheckDoc {
    doc.udp = report.udp;
    doc.mapped = report
        .mapped
        .iter()
        .map(|m| MappedView {
            server: m.server,
            mapped: m.mapped,
            rtt_us: micros(m.rtt),
        })
        .collect();
    doc.mapping_varies_by_destination = report.mapping_varies;
    let behind_nat = report
        .mapped
        .iter()
        .any(|m| !doc.local_endpoints.contains(&m.mapped));
    doc.nat = match (report.supported, report.udp, report.mapping_varies) {
        (false, _, _) => "unknown",
        (true, false, _) => "udp_blocked",
        (true, true, Some(true)) => "destination_dependent",
        (true, true, _) if !behind_nat => "no_nat",
        (true, true, Some(false)) => "endpoint_independent",
        (true, true, None) => "unknown",
    }
    .into();
    doc.relays = report
        .relays
        .iter()
        .map(|(name, rtt)| RelayLatency {
            name: name.clone(),
            rtt_us: rtt.map(micros),
        })
        .collect();
    doc.preferred_relay = report.preferred_relay.clone();
    doc.relay_latency_ms = report
        .preferred_relay
        .as_ref()
        .and_then(|p| report.relays.iter().find(|(n, _)| n == p))
        .and_then(|(_, rtt)| rtt.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    doc.took_ms = u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_tunnel::MappedAddr;

    fn doc(local: &str) -> NetcheckDoc {
        NetcheckDoc {
            udp: false,
            local_endpoints: vec![local.parse().unwrap_or_else(|_| unreachable!())],
            control_reachable: false,
            relay_latency_ms: None,
            direct_peers: 0,
            relay_peers: 0,
            mapped: vec![],
            mapping_varies_by_destination: None,
            nat: String::new(),
            relays: vec![],
            preferred_relay: None,
            took_ms: 0,
        }
    }

    fn report(mapped: &[(&str, &str)], varies: Option<bool>) -> NetcheckReport {
        NetcheckReport {
            supported: true,
            udp: !mapped.is_empty(),
            mapped: mapped
                .iter()
                .map(|(s, m)| MappedAddr {
                    server: s.parse().unwrap_or_else(|_| unreachable!()),
                    mapped: m.parse().unwrap_or_else(|_| unreachable!()),
                    rtt: Duration::from_millis(3),
                })
                .collect(),
            mapping_varies: varies,
            relays: vec![("r1".into(), Some(Duration::from_millis(12)))],
            preferred_relay: Some("r1".into()),
            took: Duration::from_millis(420),
        }
    }

    #[test]
    fn nat_classification() {
        let servers = [("198.51.100.2:3478", ""), ("198.51.100.3:3478", "")];
        fn same(m: &'static str) -> [(&'static str, &'static str); 2] {
            [("198.51.100.2:3478", m), ("198.51.100.3:3478", m)]
        }
        let d = netcheck_doc(
            doc("10.0.0.2:41641"),
            &report(&same("203.0.113.7:41641"), Some(false)),
        );
        assert_eq!(d.nat, "endpoint_independent");
        assert_eq!(d.relay_latency_ms, Some(12));
        assert_eq!(d.took_ms, 420);
        let d = netcheck_doc(
            doc("10.0.0.2:41641"),
            &report(
                &[
                    (servers[0].0, "203.0.113.7:1024"),
                    (servers[1].0, "203.0.113.7:1025"),
                ],
                Some(true),
            ),
        );
        assert_eq!(d.nat, "destination_dependent");
        let d = netcheck_doc(
            doc("203.0.113.9:41641"),
            &report(&same("203.0.113.9:41641"), Some(false)),
        );
        assert_eq!(d.nat, "no_nat");
        let d = netcheck_doc(doc("10.0.0.2:41641"), &report(&[], None));
        assert_eq!(d.nat, "udp_blocked");
        assert!(!d.udp);
        let unsupported = NetcheckReport::default();
        assert_eq!(netcheck_doc(doc("10.0.0.2:1"), &unsupported).nat, "unknown");
    }
}
