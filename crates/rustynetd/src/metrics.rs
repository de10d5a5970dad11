//! Prometheus metrics (Phase 10 section 11): state, peers, apply outcomes
//! and durations, kill-switch and protected-DNS state, rejected maps by
//! reason, fail-closed entries and exit activation failures; and the paths
//! (issue 9): peers per path, bytes per path, path switches, probe
//! outcomes, connected relays; and per-peer handshake age and bytes, Magic
//! DNS counters, the map's age and the build (issue 11, in `node`). Served
//! on `--metrics ADDR:PORT`; never carries keys or addresses (peers are
//! labelled by their host name in the map, nothing else names anyone).

mod node;

pub use node::PeerSample;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustynet_proto::VerifyError;
use rustynet_proto::ipc::DataplaneState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabel {
    path: &'static str,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwitchLabel {
    reason: &'static str,
}

/// The path gauges (snapshots of the engine's own counters, which restart
/// with the tunnel: gauges, not counters).
#[derive(Default)]
struct PathMetrics {
    peers: Family<PathLabel, Gauge>,
    bytes: Family<BytesLabel, Gauge>,
    switches: Gauge,
    switches_by_reason: Family<SwitchLabel, Gauge>,
    probes: Family<ResultLabel, Gauge>,
    relays: Gauge,
    relays_connected: Gauge,
}

impl PathMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "peers_by_path",
            "Peers whose traffic goes direct, through a relay, or nowhere",
            self.peers.clone(),
        );
        registry.register(
            "path_bytes",
            "Tunnel bytes of the current peers by path and direction",
            self.bytes.clone(),
        );
        registry.register(
            "path_switches",
            "Path changes (direct, relay, none) since the tunnel started",
            self.switches.clone(),
        );
        registry.register(
            "path_switches_by_reason",
            "Path changes of the current peers by the reason of the change",
            self.switches_by_reason.clone(),
        );
        registry.register(
            "path_probes",
            "Path probes received since the tunnel started, by outcome",
            self.probes.clone(),
        );
        registry.register("relays", "Relays in the map", self.relays.clone());
        registry.register(
            "relays_connected",
            "Relays with a live connection",
            self.relays_connected.clone(),
        );
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

struct Inner {
    registry: Registry,
    state: Family<StateLabel, Gauge>,
    peers: Gauge,
    kill_switch: Gauge,
    dns_protected: Gauge,
    apply_ok: Counter,
    apply_failed: Family<ReasonLabel, Counter>,
    apply_seconds: Histogram,
    map_rejects: Family<ReasonLabel, Counter>,
    fail_closed: Counter,
    control_switches: Counter,
    exit_failures: Family<ReasonLabel, Counter>,
    paths: PathMetrics,
    node: node::NodeMetrics,
}

/// The daemon's metrics (cheap to clone).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

const STATES: [DataplaneState; 5] = [
    DataplaneState::Init,
    DataplaneState::ControlTrusted,
    DataplaneState::DataplaneApplied,
    DataplaneState::ExitActive,
    DataplaneState::FailClosed,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rustynet");
        let state = Family::<StateLabel, Gauge>::default();
        let peers = Gauge::default();
        let kill_switch = Gauge::default();
        let dns_protected = Gauge::default();
        let apply_ok = Counter::default();
        let apply_failed = Family::<ReasonLabel, Counter>::default();
        // Every step's series exists from the start (at 0), so the first
        // failure is an increase an alert can see.
        for step in crate::apply::Step::ALL {
            apply_failed
                .get_or_create(&ReasonLabel {
                    reason: step.as_str(),
                })
                .inc_by(0);
        }
        let apply_seconds = Histogram::new([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 2.0]);
        let map_rejects = Family::<ReasonLabel, Counter>::default();
        let fail_closed = Counter::default();
        let control_switches = Counter::default();
        let exit_failures = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dataplane_state",
            "1 for the current dataplane state",
            state.clone(),
        );
        registry.register("peers", "Peers in the applied map", peers.clone());
        registry.register(
            "kill_switch_asserted",
            "1 while the kill switch is in force",
            kill_switch.clone(),
        );
        registry.register(
            "dns_protected",
            "1 while protected DNS is in force",
            dns_protected.clone(),
        );
        registry.register("apply_success", "Generations applied", apply_ok.clone());
        registry.register(
            "apply_failure",
            "Generations that failed to apply, by step",
            apply_failed.clone(),
        );
        registry.register(
            "apply_duration_seconds",
            "Time to apply a generation",
            apply_seconds.clone(),
        );
        registry.register(
            "map_rejected",
            "Signed maps rejected, by reason",
            map_rejects.clone(),
        );
        registry.register(
            "fail_closed_entered",
            "Times the dataplane failed closed",
            fail_closed.clone(),
        );
        registry.register(
            "control_switches",
            "Times the control map stream moved to another control URL (replica)",
            control_switches.clone(),
        );
        registry.register(
            "exit_activation_failure",
            "Exit node activations refused or failed",
            exit_failures.clone(),
        );
        let paths = PathMetrics::default();
        paths.register(&mut registry);
        let node = node::NodeMetrics::register(&mut registry);
        Self(Arc::new(Inner {
            registry,
            state,
            peers,
            kill_switch,
            dns_protected,
            apply_ok,
            apply_failed,
            apply_seconds,
            map_rejects,
            fail_closed,
            control_switches,
            exit_failures,
            paths,
            node,
        }))
    }
}

fn reject_reason(e: &VerifyError) -> &'static str {
    match e {
        VerifyError::TooLarge { .. } => "too_large",
        VerifyError::Malformed(_) => "malformed",
        VerifyError::Version(_) => "version",
        VerifyError::BadSignature => "bad_signature",
        VerifyError::WrongNode { .. } => "wrong_node",
        VerifyError::WrongKind => "wrong_kind",
        VerifyError::Replayed { .. } => "replayed",
        VerifyError::GenerationMismatch { .. } => "generation_mismatch",
        VerifyError::Expired { .. } => "expired",
        VerifyError::FutureDated { .. } => "future_dated",
        VerifyError::Validity(_) => "validity",
        VerifyError::Invalid(_) => "invalid",
    }
}

impl Metrics {
    /// Updates the state gauges.
    pub fn set_state(&self, current: DataplaneState, peers: usize, kill_switch: bool, dns: bool) {
        for s in STATES {
            self.0
                .state
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(i64::from(s == current));
        }
        self.0.peers.set(i64::try_from(peers).unwrap_or(i64::MAX));
        self.0.kill_switch.set(i64::from(kill_switch));
        self.0.dns_protected.set(i64::from(dns));
    }

    /// A generation applied.
    pub fn apply_ok(&self, took: Duration) {
        self.0.apply_ok.inc();
        self.0.apply_seconds.observe(took.as_secs_f64());
    }

    /// A generation failed at `step`.
    pub fn apply_failed(&self, step: &'static str) {
        self.0
            .apply_failed
            .get_or_create(&ReasonLabel { reason: step })
            .inc();
    }

    /// A map was rejected.
    pub fn map_rejected(&self, e: &VerifyError) {
        self.0
            .map_rejects
            .get_or_create(&ReasonLabel {
                reason: reject_reason(e),
            })
            .inc();
    }

    /// The dataplane failed closed.
    pub fn fail_closed_entered(&self) {
        self.0.fail_closed.inc();
    }

    /// The control map stream moved to another control URL.
    pub fn control_switched(&self) {
        self.0.control_switches.inc();
    }

    /// An exit activation was refused or failed.
    pub fn exit_failure(&self, reason: &'static str) {
        self.0
            .exit_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Updates the path gauges from the engine's statistics.
    pub fn set_paths(&self, stats: &rustynet_tunnel::TunnelStats) {
        use rustynet_tunnel::PathKind;
        let p = &self.0.paths;
        let mut per_path = [0u64; 3];
        let (mut dtx, mut drx, mut rtx, mut rrx) = (0u64, 0u64, 0u64, 0u64);
        for peer in &stats.peers {
            let i = match peer.path.kind {
                PathKind::Direct => 0,
                PathKind::Relay => 1,
                PathKind::None => 2,
            };
            per_path[i] += 1;
            dtx = dtx.saturating_add(peer.path.direct_tx);
            drx = drx.saturating_add(peer.path.direct_rx);
            rtx = rtx.saturating_add(peer.path.relay_tx);
            rrx = rrx.saturating_add(peer.path.relay_rx);
        }
        for (path, n) in ["direct", "relay", "none"].into_iter().zip(per_path) {
            p.peers.get_or_create(&PathLabel { path }).set(gauge(n));
        }
        for (path, direction, n) in [
            ("direct", "tx", dtx),
            ("direct", "rx", drx),
            ("relay", "tx", rtx),
            ("relay", "rx", rrx),
        ] {
            p.bytes
                .get_or_create(&BytesLabel { path, direction })
                .set(gauge(n));
        }
        p.switches.set(gauge(stats.probes.path_changes));
        for (reason, n) in &stats.path_switches {
            p.switches_by_reason
                .get_or_create(&SwitchLabel { reason })
                .set(gauge(*n));
        }
        for (result, n) in [
            ("accepted", stats.probes.accepted),
            ("unknown_sender", stats.probes.unknown_sender),
            ("bad_auth", stats.probes.bad_auth),
            ("replayed", stats.probes.replayed),
            ("malformed", stats.probes.malformed),
        ] {
            p.probes
                .get_or_create(&ResultLabel { result })
                .set(gauge(n));
        }
        p.relays.set(gauge(stats.relays.len() as u64));
        let up = stats.relays.iter().filter(|r| r.connected).count();
        p.relays_connected.set(gauge(up as u64));
    }

    /// Replaces the per-peer series (peers not listed lose theirs).
    pub fn set_peers(&self, peers: &[PeerSample]) {
        self.0.node.set_peers(peers);
    }

    /// Exports the DNS servers' counters (monotonic totals).
    pub fn set_dns(&self, totals: &crate::dns_manager::DnsCounters) {
        self.0.node.set_dns(totals);
    }

    /// The map in force was signed at `issued_at` (None: no map).
    pub fn set_netmap(&self, issued_at: Option<i64>, now: i64) {
        self.0.node.set_netmap(issued_at, now);
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` until the process ends
/// ([`rustynet_service::metrics_http`]).
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    rustynet_service::metrics_http::serve_on(
        listener,
        move || metrics.encode(),
        rustynet_service::metrics_http::MAX_CONNECTIONS,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn path_gauges_count_peers_bytes_and_relays_without_naming_anyone() {
        use rustynet_tunnel::{PathKind, PeerPath, PeerStats, RelayStatus, TunnelStats};
        let peer = |kind, direct_tx, relay_tx| PeerStats {
            public_key: rustynet_tunnel::TunnelPublicKey([7; 32]),
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            path: PeerPath {
                kind,
                direct_tx,
                relay_tx,
                ..Default::default()
            },
        };
        let mut stats = TunnelStats {
            peers: vec![
                peer(PathKind::Direct, 100, 0),
                peer(PathKind::Relay, 5, 40),
                peer(PathKind::Relay, 0, 2),
            ],
            relays: vec![
                RelayStatus {
                    name: "r1".into(),
                    connected: true,
                    ..Default::default()
                },
                RelayStatus {
                    name: "r2".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        stats.probes.bad_auth = 3;
        stats.probes.path_changes = 4;
        stats.path_switches = vec![("pong", 3), ("trust_expired", 1)];
        let m = Metrics::default();
        m.set_paths(&stats);
        let text = m.encode();
        for line in [
            "rustynet_peers_by_path{path=\"direct\"} 1",
            "rustynet_peers_by_path{path=\"relay\"} 2",
            "rustynet_peers_by_path{path=\"none\"} 0",
            "rustynet_path_bytes{path=\"direct\",direction=\"tx\"} 105",
            "rustynet_path_bytes{path=\"relay\",direction=\"tx\"} 42",
            "rustynet_path_switches 4",
            "rustynet_path_switches_by_reason{reason=\"trust_expired\"} 1",
            "rustynet_path_probes{result=\"bad_auth\"} 3",
            "rustynet_relays 2",
            "rustynet_relays_connected 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("r1"), "relay names stay out of metrics");
    }
}
