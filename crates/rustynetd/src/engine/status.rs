//! `status` and `netcheck` documents.

use std::time::Duration;

use rustynet_proto::ipc::{
    DataplaneCounters, NetcheckDoc, PathKind, PeerStatus, SelfStatus, StatusDoc,
};

use super::Engine;

/// A handshake older than this means the peer path is not working.
const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

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
                        let handshake = s.and_then(|s| s.last_handshake);
                        let path = match handshake {
                            Some(age) if age < HANDSHAKE_FRESH => PathKind::Direct,
                            _ => PathKind::None,
                        };
                        PeerStatus {
                            name: p.hostname.clone(),
                            dns_name: p.dns_name.clone(),
                            tunnel_ip: p.tunnel_ip,
                            path,
                            endpoint: s.and_then(|s| s.endpoint),
                            last_handshake_secs: handshake.map(|d| d.as_secs()),
                            rx_bytes: s.map_or(0, |s| s.rx_bytes),
                            tx_bytes: s.map_or(0, |s| s.tx_bytes),
                            online: p.online,
                            exit_node: p.exit_node,
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
        let desired = self.desired.as_ref();
        StatusDoc {
            state: self.sm.state(),
            self_node,
            peers,
            exit_node: desired
                .and_then(|d| d.exit.as_ref())
                .map(|e| e.hostname.clone()),
            lan_access: self.state.prefs.lan_access,
            // The last generation applied successfully (the last-known-safe one).
            generation: self.state.last_known_safe_generation,
            backend: self.fx.backend.info().detail,
            kill_switch: desired.is_some_and(|d| d.protected),
            dns_protected: desired.is_some_and(|d| d.dns_protected),
            dns_mode: self.fx.dns.os_mode(),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            error: self.last_error.clone(),
            advertised_routes: self.state.prefs.advertise_routes.clone(),
            advertise_exit_node: self.state.prefs.advertise_exit_node,
            counters: DataplaneCounters {
                rx_source_mismatch: stats.as_ref().map_or(0, |s| s.rx_source_mismatch),
            },
        }
    }

    /// `netcheck`'s local part; control reachability is added by a task.
    pub(super) fn netcheck_local(&self) -> NetcheckDoc {
        let stats = self.fx.backend.stats().ok();
        let direct = stats.as_ref().map_or(0, |s| {
            s.peers
                .iter()
                .filter(|p| p.last_handshake.is_some_and(|d| d < HANDSHAKE_FRESH))
                .count()
        });
        NetcheckDoc {
            udp: stats.is_some(),
            local_endpoints: self.local_endpoints(),
            control_reachable: false,
            relay_latency_ms: None,
            direct_peers: direct,
            relay_peers: 0,
        }
    }
}
