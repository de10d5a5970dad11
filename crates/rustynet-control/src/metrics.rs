//! Prometheus metrics of `serve` (issue 11): map streams held, maps sent,
//! map build time, enrollments, refused requests by reason, and the
//! embedded relay's metrics in the same registry. Served as plain HTTP on
//! `--metrics-listen ADDR:PORT` (off unless given; bind it to loopback or
//! a private address). Labels are fixed words: no node, key or address
//! ever becomes one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Every refusal reason counted by name; anything else is `other`, so the
/// label set stays bounded whatever a handler returns.
pub const REJECT_REASONS: &[&str] = &[
    "bad_request",
    "bad_signature",
    "busy",
    "duplicate_key",
    "exhausted",
    "internal",
    "malformed_auth",
    "missing_auth",
    "node_expired",
    "not_found",
    "not_ready",
    "rate_limited",
    "renew_user_mismatch",
    "replayed_request",
    "request_timeout",
    "stale_request",
    "tag_not_owned",
    "too_large",
    "auth_key_invalid",
    "auth_key_expired",
    "auth_key_used",
    "auth_key_revoked",
    "unknown_preauth",
    "unknown_node",
    // Refused before HTTP: the connection table, the TLS handshake.
    "connection_limit",
    "tls_handshake",
];

/// The bounded label for an error code.
pub fn reject_reason(code: &str) -> &'static str {
    REJECT_REASONS
        .iter()
        .find(|r| **r == code)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    commit: &'static str,
}

struct Inner {
    registry: Registry,
    streams: Gauge,
    maps_sent: Counter,
    map_build: Histogram,
    enrollments: Family<KindLabel, Counter>,
    rejected: Family<ReasonLabel, Counter>,
}

/// The server's metrics (cheap to clone).
#[derive(Clone)]
pub struct ControlMetrics(Arc<Inner>);

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ControlMetrics {
    /// A registry with the control metrics, plus the embedded relay's when
    /// it runs (as `rustynet_relay_*`, the names the standalone relay uses).
    pub fn new(relay: Option<&rustynet_relay::Metrics>) -> Self {
        let mut registry = Registry::with_prefix("rustynet");
        if let Some(relay) = relay {
            relay.register(&mut registry);
        }
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("RUSTYNET_COMMIT").unwrap_or("unknown"),
            })
            .set(1);
        let r = registry.sub_registry_with_prefix("control");
        r.register(
            "build_info",
            "1, labelled with the control server's version and commit",
            build,
        );
        let streams = Gauge::default();
        r.register(
            "map_streams",
            "Map streams of authenticated nodes held open",
            streams.clone(),
        );
        let maps_sent = Counter::default();
        r.register(
            "maps_sent",
            "Signed maps sent on map streams",
            maps_sent.clone(),
        );
        let map_build = Histogram::new([
            0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        r.register(
            "map_build_seconds",
            "Time to build and sign one node's map",
            map_build.clone(),
        );
        let enrollments = Family::<KindLabel, Counter>::default();
        for kind in ["new", "renew"] {
            enrollments.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        r.register(
            "enrollments",
            "Nodes enrolled (new) or renewed (renew)",
            enrollments.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        r.register(
            "rejected_requests",
            "Requests and connections refused, by reason (the API error code)",
            rejected.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            streams,
            maps_sent,
            map_build,
            enrollments,
            rejected,
        }))
    }

    /// A map stream opened; the guard closes it when dropped.
    pub fn stream_opened(&self) -> StreamGuard {
        self.0.streams.inc();
        StreamGuard(self.clone())
    }

    /// A map was sent after `build` to build and sign it.
    pub fn map_sent(&self, build: Duration) {
        self.0.maps_sent.inc();
        self.0.map_build.observe(build.as_secs_f64());
    }

    /// A node enrolled (`renew`: renewed its keys).
    pub fn enrolled(&self, renew: bool) {
        let kind = if renew { "renew" } else { "new" };
        self.0.enrollments.get_or_create(&KindLabel { kind }).inc();
    }

    /// A request or connection was refused with `code`.
    pub fn rejected(&self, code: &str) {
        let reason = reject_reason(code);
        self.0.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// Counts one open map stream until dropped.
pub struct StreamGuard(ControlMetrics);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.0.streams.dec();
    }
}

/// Binds the `/metrics` listener (at start, so a bad address fails `serve`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until the task is dropped
/// ([`rustynet_service::metrics_http`]).
pub async fn serve(listener: TcpListener, metrics: ControlMetrics) {
    rustynet_service::metrics_http::serve_on(
        listener,
        move || metrics.encode(),
        rustynet_service::metrics_http::MAX_CONNECTIONS,
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn series_change_and_reasons_stay_bounded() {
        let m = ControlMetrics::default();
        let guard = m.stream_opened();
        m.map_sent(Duration::from_millis(2));
        m.enrolled(false);
        m.enrolled(true);
        m.rejected("rate_limited");
        m.rejected("something a handler made up");
        let text = m.encode();
        for line in [
            "rustynet_control_map_streams 1",
            "rustynet_control_maps_sent_total 1",
            "rustynet_control_map_build_seconds_count 1",
            "rustynet_control_enrollments_total{kind=\"new\"} 1",
            "rustynet_control_enrollments_total{kind=\"renew\"} 1",
            "rustynet_control_rejected_requests_total{reason=\"rate_limited\"} 1",
            "rustynet_control_rejected_requests_total{reason=\"other\"} 1",
            "rustynet_control_build_info{version=",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("made up"));
        drop(guard);
        assert!(m.encode().contains("rustynet_control_map_streams 0"));
    }

    #[test]
    fn the_embedded_relay_shares_the_registry() {
        let relay = rustynet_relay::Metrics::default();
        let text = ControlMetrics::new(Some(&relay)).encode();
        assert!(
            text.contains("# TYPE rustynet_relay_logins counter"),
            "{text}"
        );
        assert!(text.contains("rustynet_relay_logins_total 0"), "{text}");
        let without = ControlMetrics::default().encode();
        assert!(!without.contains("rustynet_relay_"), "{without}");
    }
}
