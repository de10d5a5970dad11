//! The engine's side of the control connection: starting the control task,
//! what it reports (connected where, lost, refused), and clients for the
//! one-off requests (relay tickets, `netcheck`) to the URL in use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustynet_control_client::ControlClient;
use rustynet_proto::ipc::ControlView;

use super::Engine;
use crate::control_client::{ControlTask, clients};
use crate::dataplane_state::Trigger;
use crate::messages::ControlEvent;

/// The control connection as the control task last reported it.
#[derive(Debug, Default)]
pub(super) struct ControlLink {
    /// The map stream is open.
    connected: bool,
    /// The URL it is open to.
    in_use: Option<String>,
    /// Switches between URLs since the daemon started.
    failovers: u64,
    /// The high-water mark the control task asks from when it
    /// (re)connects, kept current by the engine.
    since: Arc<AtomicU64>,
}

impl ControlLink {
    /// The engine accepted maps up to `generation`.
    pub(super) fn note_high_water(&self, generation: u64) {
        self.since.fetch_max(generation, Ordering::Relaxed);
    }
}

impl Engine {
    pub(super) fn on_control(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::Connected { url, switched } => {
                self.link.connected = true;
                if switched {
                    self.link.failovers += 1;
                    self.metrics.control_switched();
                    tracing::info!(%url, failovers = self.link.failovers, "control: stream moved to another URL");
                }
                self.link.in_use = Some(url);
                // Control serves this node again: a refusal is over.
                if let Some(e) = self.state.enrollment.as_mut().filter(|e| e.refused) {
                    e.refused = false;
                    self.save();
                }
            }
            ControlEvent::Disconnected(reason) => {
                self.link.connected = false;
                self.link.in_use = None;
                tracing::info!(%reason, "control connection lost; keeping the current generation while it is valid");
            }
            ControlEvent::Refused { code, message } => {
                self.link.connected = false;
                self.link.in_use = None;
                // Control answers a request from a node it no longer knows
                // (removed) as a bad signature: it reveals no node ids. Our
                // own key never signs badly, so both mean "not a node here".
                if code == "node_expired" || code == "bad_signature" {
                    let generation = self.current.as_ref().map_or(0, |m| m.generation());
                    let reason = format!("control refused this node: {message}");
                    self.last_error = Some(reason.clone());
                    // Remembered (and saved): `up --auth-key` then enrolls
                    // anew, even after `down` or a restart.
                    if let Some(e) = self.state.enrollment.as_mut() {
                        e.refused = true;
                    }
                    self.save();
                    self.transition(Trigger::TrustLost(reason), generation);
                    self.current = None;
                    self.enter_fail_closed();
                }
            }
        }
    }

    pub(super) fn start_control(&mut self) {
        let (Some(enrollment), Some(keys)) = (&self.state.enrollment, &self.keys) else {
            return;
        };
        if let Some(old) = self.control.take() {
            old.stop();
        }
        self.link.connected = false;
        self.link.in_use = None;
        // A new enrollment starts a new state: the mark follows it down too.
        self.link
            .since
            .store(self.state.high_water, Ordering::Relaxed);
        match ControlTask::start(
            &self.rt,
            enrollment,
            &keys.signing,
            self.cfg.fwmark,
            Arc::clone(&self.link.since),
            self.handle.clone(),
            self.update_request(),
        ) {
            Ok(task) => self.control = Some(task),
            Err(e) => self.last_error = Some(format!("control client: {e}")),
        }
    }

    /// A client for a one-off request: to the URL the map stream uses, or
    /// the preferred one while none is open.
    pub(super) fn control_client(&self) -> Option<ControlClient> {
        let enrollment = self.state.enrollment.as_ref()?;
        let mut all = clients(enrollment, self.cfg.fwmark).ok()?;
        let index = self
            .link
            .in_use
            .as_ref()
            .and_then(|u| all.iter().position(|c| c.url().to_string() == *u))
            .unwrap_or(0);
        (index < all.len()).then(|| all.swap_remove(index))
    }

    /// `status`'s view of the control connection.
    pub(super) fn control_view(&self) -> ControlView {
        ControlView {
            urls: self
                .state
                .enrollment
                .as_ref()
                .map(|e| e.control_urls.clone())
                .unwrap_or_default(),
            in_use: self.link.in_use.clone().filter(|_| self.link.connected),
            failovers: self.link.failovers,
        }
    }
}
