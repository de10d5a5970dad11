//! Metrics about this node's view of the mesh (issue 11): per-peer
//! handshake age and bytes, the Magic DNS servers' counters, the age of the
//! applied map and the build. Kept apart from the state and path gauges so
//! each part stays small.
//!
//! Peer series are labelled with the peer's host name from the signed map:
//! cardinality is bounded by the map (a peer's series are removed when it
//! leaves), and names are what an operator looks for on a dashboard. Keys
//! and addresses never become labels.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustynet_dns::DnsMetrics;

use crate::dns_manager::DnsCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    commit: &'static str,
}

/// One peer's figures, as the engine reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSample {
    /// The peer's host name in the map.
    pub name: String,
    /// Time since its last completed handshake (`None`: never).
    pub handshake_age: Option<Duration>,
    /// Plaintext bytes received from it since the tunnel started.
    pub rx_bytes: u64,
    /// Plaintext bytes sent to it since the tunnel started.
    pub tx_bytes: u64,
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Per-peer gauges (the engine's counters restart with the tunnel, so
/// bytes are gauges like the path bytes).
#[derive(Default)]
struct PeerMetrics {
    handshake_age: Family<PeerLabel, Gauge>,
    rx: Family<PeerLabel, Gauge>,
    tx: Family<PeerLabel, Gauge>,
    /// The names exported at the last update, to remove departed peers.
    exported: Mutex<BTreeSet<String>>,
}

/// The DNS counter families, fed from monotonic totals.
#[derive(Default)]
struct DnsExport {
    families: [Family<ServerLabel, Counter>; 9],
    last: Mutex<DnsCounters>,
}

const DNS_FIELDS: [(&str, &str); 9] = [
    (
        "dns_queries",
        "Magic DNS packets (UDP) and messages (TCP) received",
    ),
    (
        "dns_answered_local",
        "Answered from the Magic DNS or reverse zone",
    ),
    ("dns_forwarded", "Queries sent to an upstream resolver"),
    (
        "dns_servfail",
        "SERVFAIL answers (fail closed, upstream failure, overload)",
    ),
    ("dns_refused", "Queries refused by the source-address check"),
    (
        "dns_malformed",
        "FORMERR/NOTIMP/BADVERS answers and packets dropped as garbage",
    ),
    (
        "dns_upstream_failures",
        "Forwarded queries no upstream answered in time",
    ),
    (
        "dns_busy",
        "Forwarded queries turned away at the in-flight cap",
    ),
    (
        "dns_tcp_rejected",
        "TCP connections closed at accept at the connection cap",
    ),
];

fn fields(m: &DnsMetrics) -> [u64; 9] {
    [
        m.queries,
        m.answered_local,
        m.forwarded,
        m.servfail,
        m.refused,
        m.malformed,
        m.upstream_failures,
        m.busy,
        m.tcp_rejected,
    ]
}

/// Peer, DNS, map-age and build metrics.
pub(super) struct NodeMetrics {
    peers: PeerMetrics,
    dns: DnsExport,
    netmap_age: Gauge,
}

impl NodeMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let peers = PeerMetrics::default();
        registry.register(
            "peer_handshake_age_seconds",
            "Seconds since the last handshake with each peer of the map (absent: none yet)",
            peers.handshake_age.clone(),
        );
        registry.register(
            "peer_rx_bytes",
            "Bytes received from each peer of the map since the tunnel started",
            peers.rx.clone(),
        );
        registry.register(
            "peer_tx_bytes",
            "Bytes sent to each peer of the map since the tunnel started",
            peers.tx.clone(),
        );
        let dns = DnsExport::default();
        for ((name, help), family) in DNS_FIELDS.iter().zip(&dns.families) {
            registry.register(*name, *help, family.clone());
        }
        let netmap_age = Gauge::default();
        netmap_age.set(-1);
        registry.register(
            "netmap_age_seconds",
            "Seconds since control signed the map in force (-1 while none is held)",
            netmap_age.clone(),
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("RUSTYNET_COMMIT").unwrap_or("unknown"),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the daemon's version and commit",
            build,
        );
        Self {
            peers,
            dns,
            netmap_age,
        }
    }

    /// Replaces the per-peer series with `peers` (departed peers' series go).
    pub(super) fn set_peers(&self, peers: &[PeerSample]) {
        let p = &self.peers;
        let Ok(mut exported) = p.exported.lock() else {
            return;
        };
        let now: BTreeSet<String> = peers.iter().map(|s| s.name.clone()).collect();
        for gone in exported.difference(&now) {
            let label = PeerLabel { peer: gone.clone() };
            p.handshake_age.remove(&label);
            p.rx.remove(&label);
            p.tx.remove(&label);
        }
        for s in peers {
            let label = PeerLabel {
                peer: s.name.clone(),
            };
            match s.handshake_age {
                Some(age) => {
                    p.handshake_age
                        .get_or_create(&label)
                        .set(gauge(age.as_secs()));
                }
                None => {
                    p.handshake_age.remove(&label);
                }
            }
            p.rx.get_or_create(&label).set(gauge(s.rx_bytes));
            p.tx.get_or_create(&label).set(gauge(s.tx_bytes));
        }
        *exported = now;
    }

    /// Adds what the DNS servers counted since the last call. `totals` must
    /// be monotonic (the manager keeps stopped servers' counts).
    pub(super) fn set_dns(&self, totals: &DnsCounters) {
        let Ok(mut last) = self.dns.last.lock() else {
            return;
        };
        for (server, new, old) in [
            ("magic", &totals.magic, &last.magic),
            ("exit", &totals.exit, &last.exit),
        ] {
            for ((family, n), o) in self.dns.families.iter().zip(fields(new)).zip(fields(old)) {
                family
                    .get_or_create(&ServerLabel { server })
                    .inc_by(n.saturating_sub(o));
            }
        }
        *last = *totals;
    }

    /// The applied map was signed at `issued_at` (None: no map held).
    pub(super) fn set_netmap(&self, issued_at: Option<i64>, now: i64) {
        self.netmap_age
            .set(issued_at.map_or(-1, |t| now.saturating_sub(t).max(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    fn sample(name: &str, age: Option<u64>, rx: u64, tx: u64) -> PeerSample {
        PeerSample {
            name: name.into(),
            handshake_age: age.map(Duration::from_secs),
            rx_bytes: rx,
            tx_bytes: tx,
        }
    }

    #[test]
    fn peer_series_follow_the_map_and_go_when_a_peer_leaves() {
        let m = Metrics::default();
        m.set_peers(&[
            sample("laptop", Some(12), 100, 200),
            sample("nas", None, 0, 0),
        ]);
        let text = m.encode();
        for line in [
            "rustynet_peer_handshake_age_seconds{peer=\"laptop\"} 12",
            "rustynet_peer_rx_bytes{peer=\"laptop\"} 100",
            "rustynet_peer_tx_bytes{peer=\"laptop\"} 200",
            "rustynet_peer_rx_bytes{peer=\"nas\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("rustynet_peer_handshake_age_seconds{peer=\"nas\"}"),
            "a peer without a handshake has no age: {text}"
        );
        // The values change with the engine's, and a departed peer's go.
        m.set_peers(&[sample("nas", Some(3), 7, 9)]);
        let text = m.encode();
        assert!(text.contains("rustynet_peer_handshake_age_seconds{peer=\"nas\"} 3"));
        assert!(text.contains("rustynet_peer_tx_bytes{peer=\"nas\"} 9"));
        assert!(
            !text.contains("laptop"),
            "departed peer still exported:\n{text}"
        );
    }

    #[test]
    fn dns_counters_are_exported_per_server_and_only_grow_by_the_difference() {
        let m = Metrics::default();
        let mut totals = DnsCounters::default();
        totals.magic.queries = 5;
        totals.magic.answered_local = 3;
        totals.exit.refused = 2;
        m.set_dns(&totals);
        totals.magic.queries = 8;
        totals.magic.servfail = 1;
        m.set_dns(&totals);
        let text = m.encode();
        for line in [
            "rustynet_dns_queries_total{server=\"magic\"} 8",
            "rustynet_dns_answered_local_total{server=\"magic\"} 3",
            "rustynet_dns_servfail_total{server=\"magic\"} 1",
            "rustynet_dns_refused_total{server=\"exit\"} 2",
            "rustynet_dns_forwarded_total{server=\"magic\"} 0",
            "rustynet_dns_upstream_failures_total{server=\"exit\"} 0",
            "rustynet_dns_busy_total{server=\"magic\"} 0",
            "rustynet_dns_tcp_rejected_total{server=\"magic\"} 0",
            "rustynet_dns_malformed_total{server=\"magic\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn netmap_age_and_build_info() {
        let m = Metrics::default();
        let text = m.encode();
        assert!(text.contains("rustynet_netmap_age_seconds -1"), "{text}");
        let build = format!(
            "rustynet_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{text}");
        m.set_netmap(Some(1_000), 1_042);
        assert!(m.encode().contains("rustynet_netmap_age_seconds 42"));
        m.set_netmap(None, 1_042);
        assert!(m.encode().contains("rustynet_netmap_age_seconds -1"));
    }
}
