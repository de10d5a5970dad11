//! The text table of `nodes list`: one row per node, columns as wide as
//! their longest cell so long names never push the rest out of line.

use crate::presence::{ago, is_online};
use crate::store::NodeRecord;

/// What `route_state` says of an advertised route (e.g. `approved`).
pub type RouteWord<'a> = &'a dyn Fn(&NodeRecord, &ipnet::IpNet) -> Option<&'static str>;

/// The table, header first, each line ending in a newline; each advertised
/// route shows its state from `route_state` (`unknown` when it has none).
pub fn render(nodes: &[NodeRecord], now: i64, route_state: RouteWord<'_>) -> String {
    let header = [
        "ID",
        "NAME",
        "TUNNEL IP",
        "USER",
        "STATE",
        "ONLINE",
        "LAST SEEN",
        "TAGS/ADVERTISED",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for n in nodes {
        let state = if n.expired_by_admin(now) {
            "expired"
        } else if n.key_expired(now) {
            "key-expired"
        } else {
            "active"
        };
        let online = !n.is_expired(now) && is_online(n.last_seen, now);
        let mut extra = n.tags.join(",");
        if n.advertise_exit_node {
            extra.push_str(" exit-node");
        }
        for r in &n.advertised_routes {
            let word = route_state(n, r).unwrap_or("unknown");
            extra.push_str(&format!(" route:{r}({word})"));
        }
        rows.push(vec![
            n.id.0.to_string(),
            n.hostname.clone(),
            n.tunnel_ip.to_string(),
            n.user.clone(),
            state.to_owned(),
            if online { "yes" } else { "no" }.to_owned(),
            ago(n.last_seen, now),
            extra.trim().to_owned(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustynet_proto::{NodeId, SigningPublicKey, TunnelPublicKey};

    fn node(id: u64, name: &str, last_seen: Option<i64>) -> NodeRecord {
        NodeRecord {
            admin_routes: Default::default(),
            id: NodeId(id),
            hostname: name.into(),
            requested_hostname: name.into(),
            user: "alice".into(),
            tags: vec!["tag:web".into()],
            tunnel_ip: std::net::Ipv4Addr::new(100, 64, 0, id as u8),
            node_key: TunnelPublicKey([id as u8; 32]),
            signing_key: SigningPublicKey([id as u8; 32]),
            endpoints: vec![],
            advertise_exit_node: id == 2,
            advertised_routes: vec![],
            lan_access: false,
            created_at: 0,
            expired_at: None,
            last_seen,
            path_key: None,
            home_relay: None,
            key_expires_at: None,
        }
    }

    #[test]
    fn online_last_seen_and_aligned_columns() {
        let long = "a-very-long-host-name-that-is-longer-than-the-old-column";
        let mut expired = node(3, "gone", Some(999));
        expired.expired_at = Some(500);
        let table = render(
            &[node(1, "web", Some(990)), node(2, long, Some(100)), expired],
            1000,
            &|_, _| None,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("ONLINE") && lines[0].contains("LAST SEEN"));
        let web: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&web[4..8], ["active", "yes", "10s", "ago"], "{table}");
        let old: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&old[5..9], ["no", "15m", "ago", "tag:web"], "{table}");
        assert!(lines[2].ends_with("exit-node"));
        // An expired node is never online, however recently it was seen.
        let gone: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(&gone[4..6], ["expired", "no"], "{table}");
        // Columns line up: every row's tunnel IP starts where the header's does.
        let col = lines[0].find("TUNNEL IP").unwrap();
        for l in &lines[1..] {
            assert!(l[col..].starts_with("100.64.0."), "{table}");
        }
    }
}
