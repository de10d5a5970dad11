//! Relay counters, exported as Prometheus text. Labels are fixed reason
//! names; no key, address or ticket content ever becomes a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// Every counter the relay keeps. Cheap to clone (shared atomics).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    connections: Family<PhaseLabel, Gauge>,
    refused: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
    dropped: Family<ReasonLabel, Counter>,
    logins: Counter,
    forwarded_packets: Counter,
    forwarded_bytes: Counter,
    binding_answered: Counter,
    binding_dropped: Family<ReasonLabel, Counter>,
    udp_forwarded_packets: Counter,
    udp_forwarded_bytes: Counter,
    udp_hellos: Counter,
}

impl Metrics {
    /// Adds every metric to `registry` (e.g. an embedding server's own).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("relay");
        r.register(
            "connections",
            "Open connections by phase",
            self.connections.clone(),
        );
        r.register(
            "refused",
            "Connections or logins refused, by reason",
            self.refused.clone(),
        );
        r.register(
            "closed",
            "Connections closed by the relay, by reason",
            self.closed.clone(),
        );
        r.register(
            "dropped_packets",
            "Packets not forwarded, by reason",
            self.dropped.clone(),
        );
        r.register("logins", "Successful logins", self.logins.clone());
        r.register(
            "forwarded_packets",
            "Packets queued for delivery",
            self.forwarded_packets.clone(),
        );
        r.register(
            "forwarded_bytes",
            "Payload bytes queued for delivery",
            self.forwarded_bytes.clone(),
        );
        r.register(
            "binding_answered",
            "Binding requests answered",
            self.binding_answered.clone(),
        );
        r.register(
            "binding_dropped",
            "Binding datagrams not answered, by reason",
            self.binding_dropped.clone(),
        );
        r.register(
            "udp_forwarded_packets",
            "Packets forwarded in UDP relay mode",
            self.udp_forwarded_packets.clone(),
        );
        r.register(
            "udp_forwarded_bytes",
            "Bytes forwarded in UDP relay mode",
            self.udp_forwarded_bytes.clone(),
        );
        r.register(
            "udp_hellos",
            "UDP relay hellos answered (address registrations and refreshes)",
            self.udp_hellos.clone(),
        );
    }

    pub(crate) fn conn_gauge(&self, phase: &'static str, delta: i64) {
        self.connections
            .get_or_create(&PhaseLabel { phase })
            .inc_by(delta);
    }
    pub(crate) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub(crate) fn close(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub(crate) fn drop_packet(&self, reason: &'static str) {
        tracing::debug!(reason, "relay dropped a packet");
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }
    pub(crate) fn login(&self) {
        self.logins.inc();
    }
    pub(crate) fn forwarded(&self, bytes: usize) {
        self.forwarded_packets.inc();
        self.forwarded_bytes.inc_by(bytes as u64);
    }
    pub(crate) fn udp_forwarded(&self, bytes: usize) {
        self.udp_forwarded_packets.inc();
        self.udp_forwarded_bytes.inc_by(bytes as u64);
    }
    pub(crate) fn udp_hello(&self) {
        self.udp_hellos.inc();
    }
    pub(crate) fn binding_answered(&self) {
        self.binding_answered.inc();
    }
    pub(crate) fn binding_dropped(&self, reason: &'static str) {
        self.binding_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Open connections in `phase` (`handshake` or `authenticated`).
    pub fn connections(&self, phase: &'static str) -> i64 {
        self.connections.get_or_create(&PhaseLabel { phase }).get()
    }
    /// Refusals with this reason so far.
    pub fn refused(&self, reason: &'static str) -> u64 {
        self.refused.get_or_create(&ReasonLabel { reason }).get()
    }
    /// Closes with this reason so far.
    pub fn closed(&self, reason: &'static str) -> u64 {
        self.closed.get_or_create(&ReasonLabel { reason }).get()
    }
    /// Packets dropped with this reason so far.
    pub fn dropped(&self, reason: &'static str) -> u64 {
        self.dropped.get_or_create(&ReasonLabel { reason }).get()
    }
    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.get()
    }
    /// Packets forwarded in UDP relay mode so far.
    pub fn udp_forwarded_packets(&self) -> u64 {
        self.udp_forwarded_packets.get()
    }
    /// UDP relay hellos answered so far.
    pub fn udp_hellos(&self) -> u64 {
        self.udp_hellos.get()
    }
    /// Packets forwarded so far.
    pub fn forwarded_packets(&self) -> u64 {
        self.forwarded_packets.get()
    }
    /// Binding requests answered so far.
    pub fn binding_answered_total(&self) -> u64 {
        self.binding_answered.get()
    }
    /// Binding datagrams dropped with this reason so far.
    pub fn binding_dropped_total(&self, reason: &'static str) -> u64 {
        self.binding_dropped
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// The metrics as Prometheus text (for a standalone `/metrics`).
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("rustynet");
        self.register(&mut registry);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_relay_metric_in_the_rules_and_dashboard_exists() {
        // A value in every family (an empty family is not encoded).
        let m = Metrics::default();
        m.conn_gauge("authenticated", 1);
        m.refuse("ticket_bad_signature");
        m.close("idle");
        m.drop_packet("queue_full");
        m.login();
        m.forwarded(10);
        m.binding_answered();
        m.binding_dropped("rate_limited");
        let exposed = rustynet_service::metric_names::exposed(&m.render());
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
        let mut checked = 0;
        for file in [
            "prometheus/rules.yml",
            "prometheus/rules_test.yml",
            "grafana/rustynet.json",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            for name in rustynet_service::metric_names::used(&text, "rustynet_relay_") {
                assert!(
                    exposed.contains(&name),
                    "{file}: {name} is not a metric the relay exports"
                );
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} relay metric uses found");
    }
}
