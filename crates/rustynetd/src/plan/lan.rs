//! Which router carries each LAN prefix this node may reach.
//!
//! Several routers may offer the same prefix (high availability). A packet
//! can go to one peer only — the tunnel routes by the peer's allowed
//! addresses, and two peers claiming one prefix would be ambiguous — so the
//! plan picks one router per prefix and gives only that router the prefix.
//!
//! **Going away** means offline per control: the router's map stream
//! closed (its daemon stopped, crashed or was killed, it ran `down`, control
//! removed or expired it, or its control connection died). That signal is
//! signed, arrives with the next map (within about a second of control
//! noticing), and is the same for every client, so clients agree on a
//! router without probing it. A router that stays connected to control but
//! loses its LAN is not noticed; see docs/policy.md.
//!
//! The choice: keep the router chosen before while it is online and still
//! offers the prefix (no failback churn: a router that comes back does not
//! take the traffic away again, so connections through the standby are not
//! cut a second time); otherwise the online router with the lowest node id
//! (the first enrolled); otherwise, none online, the lowest id — traffic
//! then stops at a router that does not answer instead of spreading.
//!
//! Prefixes that differ are not alternatives: a more specific prefix keeps
//! its own router (longest match wins in the kernel and in the tunnel),
//! except that one whose router is offline is dropped while an online
//! router offers a prefix covering it.

use std::collections::BTreeMap;

use ipnet::IpNet;
use rustynet_proto::{LanGrant, Netmap, NodeId};

/// The router chosen for one LAN prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanRoute {
    /// The prefix.
    pub prefix: IpNet,
    /// The router carrying it.
    pub via: NodeId,
    /// Other routers offering it, in the order they would take over.
    pub standby: Vec<NodeId>,
}

/// The grants in force and the router of each prefix. `previous` is the
/// choice the last generation made (prefix -> router).
pub(super) fn choose(
    netmap: &Netmap,
    lan_access: bool,
    previous: &BTreeMap<IpNet, NodeId>,
) -> (Vec<LanGrant>, Vec<LanRoute>) {
    if !lan_access {
        return (vec![], vec![]);
    }
    let online = |id: NodeId| netmap.peer(id).is_some_and(|p| p.online);
    let mut offers: BTreeMap<IpNet, Vec<NodeId>> = BTreeMap::new();
    for g in netmap
        .lan_grants
        .iter()
        .filter(|g| netmap.peer(g.via).is_some())
    {
        let routers = offers.entry(g.dst).or_default();
        if !routers.contains(&g.via) {
            routers.push(g.via);
        }
    }
    let mut routes: Vec<LanRoute> = offers
        .into_iter()
        .map(|(prefix, mut routers)| {
            // Takeover order: online first, then lowest id.
            routers.sort_by_key(|id| (!online(*id), *id));
            let sticky = previous
                .get(&prefix)
                .copied()
                .filter(|id| routers.contains(id) && online(*id));
            let via = sticky.unwrap_or(routers[0]);
            routers.retain(|id| *id != via);
            LanRoute {
                prefix,
                via,
                standby: routers,
            }
        })
        .collect();
    let covered_online = |r: &LanRoute, all: &[LanRoute]| {
        all.iter()
            .any(|o| o.prefix != r.prefix && o.prefix.contains(&r.prefix) && online(o.via))
    };
    let keep: Vec<bool> = routes
        .iter()
        .map(|r| online(r.via) || !covered_online(r, &routes))
        .collect();
    let mut k = keep.into_iter();
    routes.retain(|_| k.next().unwrap_or(false));
    let grants = netmap
        .lan_grants
        .iter()
        .filter(|g| routes.iter().any(|r| r.prefix == g.dst && r.via == g.via))
        .cloned()
        .collect();
    (grants, routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_proto::netmap::NETMAP_VERSION;
    use rustynet_proto::{DnsConfig, PeerInfo, PortRange, Proto, SelfInfo, TunnelPublicKey};

    fn router_peer(id: u64, online: bool) -> PeerInfo {
        let tunnel_ip = std::net::Ipv4Addr::new(100, 64, 0, id as u8);
        PeerInfo {
            path_key: None,
            node_id: NodeId(id),
            hostname: format!("r{id}"),
            dns_name: format!("r{id}.rustynet.internal"),
            node_key: TunnelPublicKey([id as u8; 32]),
            tunnel_ip,
            endpoints: vec![],
            home_relay: None,
            allowed_ips: vec![IpNet::from(std::net::IpAddr::V4(tunnel_ip))],
            online,
            exit_node: false,
        }
    }

    /// A client map with these routers (id, online), each granting tcp/22
    /// on each prefix.
    fn lan_map(routers: &[(u64, bool)], prefixes: &[&str]) -> Netmap {
        let mut lan_grants = Vec::new();
        for (id, _) in routers {
            for p in prefixes {
                lan_grants.push(LanGrant {
                    via: NodeId(*id),
                    dst: p.parse().unwrap(),
                    proto: Proto::Tcp,
                    ports: vec![PortRange::single(22)],
                });
            }
        }
        Netmap {
            relays: vec![],
            version: NETMAP_VERSION,
            self_node: SelfInfo {
                node_id: NodeId(1),
                hostname: "client".into(),
                dns_name: "client.rustynet.internal".into(),
                tunnel_ip: "100.64.0.1".parse().unwrap(),
                node_key: TunnelPublicKey([1; 32]),
                user: "bob".into(),
                tags: vec![],
                advertise_exit_node: false,
                advertised_routes: vec![],
                approved_routes: vec![],
            },
            peers: routers
                .iter()
                .map(|(id, on)| router_peer(*id, *on))
                .collect(),
            packet_filter: vec![],
            exit_clients: vec![],
            forward_filter: vec![],
            exit_grants: vec![],
            lan_grants,
            dns: DnsConfig {
                suffix: "rustynet.internal".into(),
                records: vec![],
                split: vec![],
            },
        }
    }

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|i| NodeId(*i)).collect()
    }

    #[test]
    fn one_router_per_prefix_online_and_lowest_id_first() {
        let map = lan_map(&[(2, true), (3, true)], &["192.168.77.0/24"]);
        let (grants, routes) = choose(&map, true, &BTreeMap::new());
        assert_eq!(routes.len(), 1);
        assert_eq!(
            (routes[0].via, routes[0].standby.clone()),
            (NodeId(2), ids(&[3]))
        );
        assert!(grants.iter().all(|g| g.via == NodeId(2)));
        let map = lan_map(&[(2, false), (3, true)], &["192.168.77.0/24"]);
        let (grants, routes) = choose(&map, true, &BTreeMap::new());
        assert_eq!(routes[0].via, NodeId(3), "the offline router is skipped");
        assert!(grants.iter().all(|g| g.via == NodeId(3)));
        let map = lan_map(&[(2, false), (3, false)], &["192.168.77.0/24"]);
        assert_eq!(choose(&map, true, &BTreeMap::new()).1[0].via, NodeId(2));
    }

    #[test]
    fn the_chosen_router_stays_while_online() {
        let prefix: IpNet = "192.168.77.0/24".parse().unwrap();
        let previous: BTreeMap<IpNet, NodeId> = [(prefix, NodeId(3))].into();
        let map = lan_map(&[(2, true), (3, true)], &["192.168.77.0/24"]);
        let (_, routes) = choose(&map, true, &previous);
        assert_eq!(routes[0].via, NodeId(3), "no failback while 3 is online");
        let map = lan_map(&[(2, true), (3, false)], &["192.168.77.0/24"]);
        assert_eq!(choose(&map, true, &previous).1[0].via, NodeId(2));
    }

    #[test]
    fn toggle_off_or_invisible_router_gives_nothing() {
        let map = lan_map(&[(2, true)], &["192.168.77.0/24"]);
        assert_eq!(choose(&map, false, &BTreeMap::new()), (vec![], vec![]));
        let mut map = lan_map(&[(2, true)], &["192.168.77.0/24"]);
        map.peers.clear();
        assert_eq!(choose(&map, true, &BTreeMap::new()), (vec![], vec![]));
    }

    #[test]
    fn a_more_specific_prefix_keeps_its_router_unless_it_is_offline() {
        let mut map = lan_map(&[(2, true)], &["192.168.77.0/24"]);
        map.peers.push(router_peer(3, true));
        let mut narrow = map.lan_grants[0].clone();
        narrow.via = NodeId(3);
        narrow.dst = "192.168.77.0/25".parse().unwrap();
        map.lan_grants.push(narrow);
        let (_, routes) = choose(&map, true, &BTreeMap::new());
        assert_eq!(routes.len(), 2);
        map.peers[1].online = false;
        let (grants, routes) = choose(&map, true, &BTreeMap::new());
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].via, NodeId(2));
        assert!(grants.iter().all(|g| g.via == NodeId(2)));
    }
}
