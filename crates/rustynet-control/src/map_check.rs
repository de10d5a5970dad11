//! Control's check of a map before it signs it: the limits the node's
//! verifier enforces, through the same code ([`MapShape::check`] and the
//! verifier's size limit).
//!
//! A signed map that breaks a limit would be refused by its node, and a
//! policy that made every map break one would leave every node failing
//! closed when its last map expired. So the map stream signs only maps that
//! pass, and `policy set` refuses a policy whose maps would not
//! ([`check_network`]).

use std::collections::HashSet;
use std::sync::Arc;

use rustynet_policy::{NodeView, Policy};
use rustynet_proto::netmap::{MapShape, RelayInfo, check_allowed_ips};
use rustynet_proto::{NodeId, NodeSigningKey, VerifyError, VerifyPolicy};

use crate::map_json::{PeerFragments, seal_netmap_json};
use crate::netmap_builder::{LiveNodes, NetworkView, node_facts};

/// Checks the lists `view` puts into its node's map, as the node's verifier
/// will.
pub fn check_view(net: NetworkView<'_>, view: &NodeView) -> Result<(), VerifyError> {
    let live = |id: &&NodeId| net.nodes.contains_key(id);
    let peers = view.visible_peers.iter().filter(live).count();
    MapShape {
        peers,
        packet_filter: &view.packet_filter,
        forward_filter: &view.forward_filter,
        exit_clients: &view.exit_clients,
        exit_grants: view.exit_grants.iter().filter(live).count(),
        lan_grants: &view.lan_grants,
        dns_records: peers + 1,
        dns_split: view.split_dns.len(),
    }
    .check()?;
    for (peer, routes) in &view.peer_routes {
        check_allowed_ips(*peer, routes)?;
        // The peer's own /32 comes first in its allowed prefixes.
        rustynet_proto::netmap::bounded(
            "peer allowed_ips",
            routes.len() + 1,
            rustynet_proto::netmap::MAX_ALLOWED_IPS,
        )?;
    }
    Ok(())
}

/// Checks the size of a whole map-stream line against the verifier's limit
/// (the line holds the envelope, which holds the signed body, so this bounds
/// both, and the client's line limit is the same number).
pub fn check_frame_len(len: usize) -> Result<(), VerifyError> {
    let max = VerifyPolicy::default().max_bytes;
    if len > max {
        return Err(VerifyError::TooLarge { size: len, max });
    }
    Ok(())
}

/// A node whose map would be refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the map of node {hostname:?} would be refused: {reason}")]
pub struct MapRefusal {
    /// The node's host label.
    pub hostname: String,
    /// The verifier's reason.
    pub reason: VerifyError,
}

/// Compiles `policy` over the live `nodes` and checks every map it yields,
/// announcing `relays` and sealed as the map stream would seal it (with a
/// throwaway key and the longest header), against the node's limits. The
/// first refusal is returned.
pub fn check_network(
    policy: &Policy,
    suffix: &str,
    nodes: LiveNodes,
    relays: &[RelayInfo],
) -> Result<(), MapRefusal> {
    let facts: Vec<_> = nodes.values().map(|n| node_facts(n)).collect();
    let views = rustynet_policy::compile(policy, &facts);
    // Offline peers are written with the longer flag: the worst case.
    let fragments = PeerFragments::new(suffix, Arc::new(nodes), Arc::new(HashSet::new()))
        .with_relays(relays.into());
    let key = NodeSigningKey::generate(&mut rand_core::OsRng);
    for (id, view) in &views {
        let refusal = |reason| MapRefusal {
            hostname: fragments
                .net()
                .nodes
                .get(id)
                .map(|n| n.hostname.clone())
                .unwrap_or_default(),
            reason,
        };
        check_view(fragments.net(), view).map_err(refusal)?;
        let Some(json) = fragments.netmap_json(*id, view) else {
            continue;
        };
        let sealed = seal_netmap_json(&key, json, *id, u64::MAX, i64::MAX / 2, 1);
        let len = rustynet_proto::control_api::map_frame_pieces(sealed.sealed, &[])
            .iter()
            .map(bytes::Bytes::len)
            .sum();
        check_frame_len(len).map_err(refusal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NodeRecord;
    use rustynet_proto::netmap::{MAX_SET_ELEMENTS, NetmapError};
    use rustynet_proto::{SigningPublicKey, TunnelPublicKey};

    fn nodes(n: u32) -> LiveNodes {
        (1..=n)
            .map(|i| {
                let id = NodeId(u64::from(i));
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&i.to_le_bytes());
                let record = NodeRecord {
                    id,
                    hostname: format!("n{i}"),
                    requested_hostname: format!("n{i}"),
                    user: "alice".into(),
                    tags: vec![],
                    // Every other address: sources never merge into a CIDR.
                    tunnel_ip: std::net::Ipv4Addr::from(0x6440_0000 + 2 * i),
                    node_key: TunnelPublicKey(key),
                    signing_key: SigningPublicKey(key),
                    endpoints: vec![],
                    advertise_exit_node: false,
                    advertised_routes: vec![],
                    lan_access: false,
                    created_at: 1,
                    expired_at: None,
                    last_seen: None,
                    path_key: None,
                    home_relay: None,
                    admin_routes: Default::default(),
                    key_expires_at: None,
                };
                (id, Arc::new(record))
            })
            .collect()
    }

    /// A rule per port, every node to every node: each node's filter has a
    /// rule per port naming every node as a source.
    fn wide_policy(ports: usize) -> Policy {
        let acls: Vec<_> = (0..ports)
            .map(|p| {
                serde_json::json!({"action": "accept", "src": ["*"],
                    "dst": [format!("*:{}", 1000 + p)], "proto": "tcp"})
            })
            .collect();
        Policy::parse(&serde_json::json!({ "acls": acls }).to_string()).unwrap()
    }

    #[test]
    fn a_policy_within_the_limits_passes() {
        assert_eq!(
            check_network(&wide_policy(2), "rustynet.internal", nodes(20), &[]),
            Ok(())
        );
    }

    #[test]
    fn a_policy_past_the_set_element_cap_is_refused_with_the_node_named() {
        // 300 nodes, 1,000 ports: each node's filter has 1,000 rules of 300
        // sources — 300,000 elements, past the cap, though every single rule
        // is far within its bound.
        let err =
            check_network(&wide_policy(1000), "rustynet.internal", nodes(300), &[]).unwrap_err();
        assert!(err.hostname.starts_with('n'), "{err}");
        assert!(
            matches!(
                err.reason,
                VerifyError::Invalid(NetmapError::TooMany {
                    what: "nftables set elements",
                    limit: MAX_SET_ELEMENTS,
                    ..
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn frames_over_the_verifier_size_are_refused() {
        let max = VerifyPolicy::default().max_bytes;
        assert!(check_frame_len(max).is_ok());
        assert_eq!(
            check_frame_len(max + 1),
            Err(VerifyError::TooLarge { size: max + 1, max })
        );
    }
}
