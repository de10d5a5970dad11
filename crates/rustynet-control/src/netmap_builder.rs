//! The parts of a node's [`Netmap`] built from the node table and its
//! compiled policy view, shared by [`crate::map_json`] (which writes maps as
//! JSON) and its tests (which build the same map as a value). Pure: no I/O,
//! no clock (time is an argument).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use rustynet_policy::{NodeFacts, NodeView};
use rustynet_proto::endpoint::check_endpoint;
use rustynet_proto::netmap::RelayInfo;
use rustynet_proto::{
    DnsRecord, ExitGrant, Netmap, NodeId, NodeSigningKey, PeerInfo, SelfInfo, SignedEnvelope,
};

use crate::store::NodeRecord;

/// Live nodes by id. Each record is shared: a reload copies the map but
/// not the records it did not read again (cloning 10,000 records took
/// 30 ms inside a loaded server, for a change to one), and a record that
/// is the same allocation as before is the same node.
pub type LiveNodes = BTreeMap<NodeId, Arc<NodeRecord>>;

/// Everything shared by the maps of one network state.
#[derive(Debug, Clone, Copy)]
pub struct NetworkView<'a> {
    /// Magic DNS suffix.
    pub suffix: &'a str,
    /// Live (not expired) nodes.
    pub nodes: &'a LiveNodes,
    /// Nodes holding an open map stream.
    pub online: &'a HashSet<NodeId>,
    /// The relays every map announces.
    pub relays: &'a [RelayInfo],
}

/// The policy compiler's input for one stored node.
pub fn node_facts(record: &NodeRecord) -> NodeFacts {
    NodeFacts {
        id: record.id,
        hostname: record.hostname.clone(),
        user: record.user.clone(),
        tags: record.tags.clone(),
        tunnel_ip: record.tunnel_ip,
        advertise_exit_node: record.advertise_exit_node,
        advertised_routes: record.advertised_routes.clone(),
        lan_access: record.lan_access,
        admin_routes: record.admin_routes.clone(),
    }
}

fn host32(record: &NodeRecord) -> IpNet {
    IpNet::V4(Ipv4Net::from(record.tunnel_ip))
}

fn dns_name(record: &NodeRecord, suffix: &str) -> String {
    format!("{}.{suffix}", record.hostname)
}

pub(crate) fn dns_record(record: &NodeRecord, suffix: &str) -> DnsRecord {
    DnsRecord {
        name: dns_name(record, suffix),
        ip: record.tunnel_ip.into(),
        node_id: record.id,
        requested_hostname: record.requested_hostname.clone(),
        assigned_at: record.created_at,
    }
}

/// `peer` as it appears in a viewer's map: its own address plus the routes
/// approved for that viewer, and whether the viewer may use it as exit.
pub(crate) fn peer_info(
    net: NetworkView<'_>,
    peer: &NodeRecord,
    routes: Option<&Vec<IpNet>>,
    exit_node: bool,
) -> PeerInfo {
    let mut allowed_ips = vec![host32(peer)];
    if let Some(routes) = routes {
        allowed_ips.extend(routes.iter().copied());
    }
    PeerInfo {
        path_key: peer.path_key,
        node_id: peer.id,
        hostname: peer.hostname.clone(),
        dns_name: dns_name(peer, net.suffix),
        node_key: peer.node_key,
        tunnel_ip: peer.tunnel_ip,
        // Reports are checked when they arrive; this drops any stored
        // before a rule was added, so no map carries one a node refuses.
        endpoints: peer
            .endpoints
            .iter()
            .filter(|ep| check_endpoint(ep).is_ok())
            .copied()
            .collect(),
        // Only a relay the map announces: a node refuses a map whose peer
        // names another (it may have been removed since the peer chose it).
        home_relay: peer
            .home_relay
            .as_ref()
            .filter(|home| net.relays.iter().any(|r| r.name == **home))
            .cloned(),
        allowed_ips,
        online: net.online.contains(&peer.id),
        exit_node,
    }
}

pub(crate) fn self_info(me: &NodeRecord, net: NetworkView<'_>, view: &NodeView) -> SelfInfo {
    SelfInfo {
        node_id: me.id,
        hostname: me.hostname.clone(),
        dns_name: dns_name(me, net.suffix),
        tunnel_ip: me.tunnel_ip,
        node_key: me.node_key,
        user: me.user.clone(),
        tags: me.tags.clone(),
        advertise_exit_node: me.advertise_exit_node,
        advertised_routes: me.advertised_routes.clone(),
        approved_routes: view.approved_routes.clone(),
    }
}

pub(crate) fn exit_grants(net: NetworkView<'_>, view: &NodeView) -> Vec<ExitGrant> {
    view.exit_grants
        .iter()
        .filter_map(|g| net.nodes.get(g))
        .map(|n| ExitGrant {
            node_id: n.id,
            hostname: n.hostname.clone(),
        })
        .collect()
}

/// Signs a map value (tools and tests; the map stream uses
/// [`crate::map_json::seal_netmap_json`]).
pub fn seal_netmap(
    key: &NodeSigningKey,
    netmap: &Netmap,
    node: NodeId,
    generation: u64,
    now: i64,
    ttl_secs: i64,
) -> Result<SignedEnvelope, serde_json::Error> {
    let json = crate::map_json::MapJson::from_payload(&serde_json::to_vec(netmap)?);
    crate::map_json::seal_netmap_json(key, json, node, generation, now, ttl_secs)
        .sealed
        .to_envelope()
}
