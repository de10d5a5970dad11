//! `ip` and `whois`: answered from `status`, so they show exactly what the
//! daemon's verified map says. The signed map names nodes (host label,
//! Magic DNS name, tunnel address); it does not carry users or tags, so
//! `whois` does not show them.

use std::net::{IpAddr, Ipv4Addr};

use rustynet_proto::ipc::StatusDoc;
use serde::Serialize;

use crate::error::CliError;

/// A node as `ip` and `whois` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Host label.
    pub name: String,
    /// Magic DNS name.
    pub dns_name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// This node itself.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Online per control (always true for this node).
    pub online: bool,
    /// Usable as this node's exit node.
    pub exit_node: bool,
}

fn nodes(status: &StatusDoc) -> impl Iterator<Item = NodeView> + '_ {
    let me = status
        .self_node
        .as_ref()
        .filter(|s| !s.tunnel_ip.is_unspecified())
        .map(|s| NodeView {
            name: s.name.clone(),
            dns_name: s.dns_name.clone(),
            tunnel_ip: s.tunnel_ip,
            is_self: true,
            online: true,
            exit_node: false,
        });
    me.into_iter().chain(status.peers.iter().map(|p| NodeView {
        name: p.name.clone(),
        dns_name: p.dns_name.clone(),
        tunnel_ip: p.tunnel_ip,
        is_self: false,
        online: p.online,
        exit_node: p.exit_node,
    }))
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// `ip [NAME]`: this node (no name), or the node named by host label,
/// Magic DNS name or tunnel address.
pub fn ip(status: &StatusDoc, name: Option<&str>) -> Result<NodeView, CliError> {
    let Some(name) = name else {
        return nodes(status).find(|n| n.is_self).ok_or_else(|| {
            CliError::new(
                "wrong_state",
                "this node has no tunnel address yet (not enrolled, or no network map)",
            )
        });
    };
    let as_ip: Option<IpAddr> = name.parse().ok();
    nodes(status)
        .find(|n| {
            same_name(&n.name, name)
                || same_name(&n.dns_name, name)
                || as_ip == Some(IpAddr::V4(n.tunnel_ip))
        })
        .ok_or_else(|| {
            CliError::new(
                "not_found",
                format!("no node named {name:?} in the network map"),
            )
        })
}

/// `whois ADDR`: the node whose tunnel address is `addr`.
pub fn whois(status: &StatusDoc, addr: IpAddr) -> Result<NodeView, CliError> {
    nodes(status)
        .find(|n| IpAddr::V4(n.tunnel_ip) == addr)
        .ok_or_else(|| {
            CliError::new(
                "not_found",
                format!("{addr} is not the tunnel address of any node in the network map"),
            )
        })
}

/// `whois` as text.
pub fn whois_text(n: &NodeView) -> String {
    let mut flags = Vec::new();
    if n.is_self {
        flags.push("this node");
    }
    flags.push(if n.online { "online" } else { "offline" });
    if n.exit_node {
        flags.push("exit node");
    }
    format!(
        "name:      {}\ndns name:  {}\ntunnel ip: {}\n           {}\n",
        n.name,
        n.dns_name,
        n.tunnel_ip,
        flags.join(", ")
    )
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustynet_proto::ipc::{DataplaneState, PathKind, PeerStatus, SelfStatus};
    use rustynet_proto::netmap::NodeId;

    pub(crate) fn peer(name: &str, ip: [u8; 4]) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            dns_name: format!("{name}.rustynet.internal"),
            tunnel_ip: Ipv4Addr::from(ip),
            path: PathKind::None,
            endpoint: None,
            last_handshake_secs: None,
            rx_bytes: 0,
            tx_bytes: 0,
            online: true,
            exit_node: false,
            via: None,
            path_secs: None,
            path_reason: None,
            rtt_us: None,
            path_changes: 0,
            direct_bytes: 0,
            relay_bytes: 0,
        }
    }

    pub(crate) fn status(me: Option<[u8; 4]>, peers: Vec<PeerStatus>) -> StatusDoc {
        StatusDoc {
            state: DataplaneState::DataplaneApplied,
            self_node: me.map(|ip| SelfStatus {
                name: "laptop".into(),
                tunnel_ip: Ipv4Addr::from(ip),
                dns_name: "laptop.rustynet.internal".into(),
                node_id: NodeId(1),
            }),
            peers,
            exit_node: None,
            lan_access: false,
            local_lan: false,
            lockdown: false,
            generation: 1,
            backend: String::new(),
            kill_switch: false,
            dns_protected: false,
            dns_mode: String::new(),
            daemon_version: String::new(),
            error: None,
            advertised_routes: vec![],
            advertise_exit_node: false,
            snat_subnet_routes: true,
            counters: Default::default(),
            relays: vec![],
            control: Default::default(),
        }
    }

    #[test]
    fn ip_of_self_and_of_peers_by_any_name() {
        let mut exit = peer("exit", [100, 64, 0, 3]);
        exit.exit_node = true;
        let s = status(
            Some([100, 64, 0, 1]),
            vec![peer("server", [100, 64, 0, 2]), exit],
        );
        assert_eq!(
            ip(&s, None).unwrap().tunnel_ip,
            Ipv4Addr::new(100, 64, 0, 1)
        );
        for name in [
            "server",
            "SERVER",
            "server.rustynet.internal",
            "server.rustynet.internal.",
            "100.64.0.2",
        ] {
            assert_eq!(ip(&s, Some(name)).unwrap().name, "server", "{name}");
        }
        assert!(ip(&s, Some("laptop")).unwrap().is_self);
        assert_eq!(ip(&s, Some("nope")).unwrap_err().code, "not_found");
        // Enrolled but no map yet: the daemon reports 0.0.0.0, which is no address.
        let early = status(Some([0, 0, 0, 0]), vec![]);
        assert_eq!(ip(&early, None).unwrap_err().code, "wrong_state");
    }

    #[test]
    fn whois_finds_the_owner_of_a_tunnel_address() {
        let s = status(Some([100, 64, 0, 1]), vec![peer("server", [100, 64, 0, 2])]);
        let n = whois(&s, "100.64.0.2".parse().unwrap()).unwrap();
        assert_eq!((n.name.as_str(), n.is_self), ("server", false));
        assert!(whois(&s, "100.64.0.1".parse().unwrap()).unwrap().is_self);
        assert_eq!(
            whois(&s, "100.64.0.9".parse().unwrap()).unwrap_err().code,
            "not_found"
        );
        assert_eq!(
            whois(&s, "fd7a::1".parse().unwrap()).unwrap_err().code,
            "not_found"
        );
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["dns_name"], "server.rustynet.internal");
        assert_eq!(json["self"], false);
        let text = whois_text(&n);
        assert!(
            text.contains("tunnel ip: 100.64.0.2") && text.contains("online"),
            "{text}"
        );
    }
}
