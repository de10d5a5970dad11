//! Prometheus metrics (Phase 10 section 11): state, peers, apply outcomes
//! and durations, kill-switch and protected-DNS state, rejected maps by
//! reason, fail-closed entries and exit activation failures. Served on
//! `--metrics ADDR:PORT`; never carries keys or names of secrets.

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
    exit_failures: Family<ReasonLabel, Counter>,
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
        let apply_seconds = Histogram::new([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 2.0]);
        let map_rejects = Family::<ReasonLabel, Counter>::default();
        let fail_closed = Counter::default();
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
            "exit_activation_failure",
            "Exit node activations refused or failed",
            exit_failures.clone(),
        );
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
            exit_failures,
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

    /// An exit activation was refused or failed.
    pub fn exit_failure(&self, reason: &'static str) {
        self.0
            .exit_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr`.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    loop {
        let (tcp, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, metrics.encode())
                        } else {
                            (404, "not found\n".to_owned())
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
