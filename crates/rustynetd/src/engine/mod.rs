//! The daemon's core: one actor that owns the effects and the state machine.
//!
//! Every input — a map from control, an IPC command, a health tick — arrives
//! as an [`EngineMsg`] and is handled to completion before the next, so a
//! transaction never interleaves with another. The actor runs on its own
//! thread because every OS effect behind it is synchronous; async work
//! (talking to control) runs on the tokio runtime through a [`Handle`].

mod commands;
mod control;
mod explain;
mod paths;
mod status;
mod tasks;
mod up_plan;

use std::net::SocketAddr;

use std::sync::Arc;

use rustynet_proto::handover::KeyHandover;
use rustynet_proto::ipc::{DataplaneState, ErrorCode};
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{NetmapVerifier, SignedEnvelope, VerifiedNetmap, VerifyPolicy};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};

use crate::apply::{self, Applied, Effects, Faults};
use crate::backend_manager::Started;
use crate::config::DaemonConfig;
use crate::control_client::ControlTask;
use crate::dataplane_state::{StateMachine, Transition, Trigger};
use crate::health_monitor::{self, Observations, Verdict};
use crate::messages::{EngineHandle, EngineMsg, IpcFailure, TaskDone};
use crate::metrics::Metrics;
use crate::plan::{self, Choices, Desired, LocalContext};
use crate::state_store::{NodeKeys, PersistedState, StateStore};

/// The engine's state.
pub struct Engine {
    cfg: DaemonConfig,
    rt: Handle,
    handle: EngineHandle,
    store: StateStore,
    state: PersistedState,
    keys: Option<NodeKeys>,
    sm: StateMachine,
    fx: Effects,
    applied: Applied,
    current: Option<VerifiedNetmap>,
    desired: Option<Desired>,
    control: Option<ControlTask>,
    control_endpoints: Vec<SocketAddr>,
    /// The control connection as the control task reports it.
    link: control::ControlLink,
    last_error: Option<String>,
    faults: Faults,
    integrity_failed: bool,
    metrics: Metrics,
    /// Permits for commands that run as tasks (ping, netcheck): a read-only
    /// caller cannot pile up unbounded work.
    task_permits: Arc<Semaphore>,
    /// Bumped by `down`: a registration still in flight then finds it
    /// changed and is discarded.
    enroll_epoch: u64,
    /// A registration with control is in flight.
    enrolling: bool,
    /// The relay ticket and home relay bookkeeping.
    ticket: paths::TicketState,
    /// Every state transition, hash-chained (`rustynetd audit verify`).
    audit: crate::audit_log::AuditLog,
    /// On-link private prefixes, read before each plan while `local-lan`
    /// is on and an exit is selected.
    on_link: Vec<plan::local_lan::OnLink>,
}

/// Unix time in seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn log_transitions(transitions: &[Transition]) {
    for t in transitions {
        tracing::info!(
            target: "rustynet::transition",
            from_state = t.from_state.as_str(),
            to_state = t.to_state.as_str(),
            reason = %t.reason,
            generation = t.generation,
            "state transition"
        );
    }
}

impl Engine {
    /// Builds the engine; call [`Engine::run`] on a dedicated thread.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: DaemonConfig,
        rt: Handle,
        store: StateStore,
        fx: Effects,
        metrics: Metrics,
    ) -> (Self, EngineHandle, mpsc::Receiver<EngineMsg>) {
        let (handle, rx) = EngineHandle::new();
        let audit =
            crate::audit_log::AuditLog::new(cfg.state_dir.join(crate::audit_log::FILE_NAME));
        let engine = Self {
            cfg,
            rt,
            handle: handle.clone(),
            store,
            state: PersistedState::default(),
            keys: None,
            sm: StateMachine::default(),
            fx,
            applied: Applied::default(),
            current: None,
            desired: None,
            control: None,
            control_endpoints: vec![],
            link: control::ControlLink::default(),
            last_error: None,
            faults: Faults::from_env(),
            integrity_failed: false,
            metrics,
            task_permits: Arc::new(Semaphore::new(tasks::MAX_CONCURRENT)),
            enroll_epoch: 0,
            enrolling: false,
            ticket: Default::default(),
            audit,
            on_link: vec![],
        };
        (engine, handle, rx)
    }

    /// Runs until [`EngineMsg::Shutdown`] or all handles are dropped.
    pub fn run(mut self, mut rx: mpsc::Receiver<EngineMsg>) {
        self.startup();
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                EngineMsg::Ipc { cmd, caller, reply } => self.on_ipc(cmd, &caller, reply),
                EngineMsg::Map(envelope, handovers) => self.on_map(envelope, handovers),
                EngineMsg::Control(event) => self.on_control(event),
                EngineMsg::Tick => {
                    self.on_tick();
                    self.publish_path_metrics();
                }
                EngineMsg::Done(done) => self.on_done(done),
                EngineMsg::Shutdown => break,
            }
            self.publish_metrics();
        }
        if let Some(control) = self.control.take() {
            control.stop();
        }
        self.release_dns_on_stop();
        tracing::info!("engine stopped; the dataplane and firewall stay as they are");
    }

    /// A clean stop hands the host its own DNS configuration back, unless
    /// protected DNS is in force: then the host stays pointed at Magic DNS
    /// (which no longer answers) and the firewall keeps blocking every
    /// other resolver, so nothing leaks until the daemon is back or `down`.
    fn release_dns_on_stop(&mut self) {
        let protected = self.desired.as_ref().is_some_and(|d| d.dns_protected);
        if protected || self.applied.dns.is_none() {
            return;
        }
        match self.fx.dns.stop() {
            Ok(()) => tracing::info!("host DNS configuration restored"),
            Err(e) => tracing::error!(error = %e, "cannot restore the host DNS configuration"),
        }
    }

    fn transition(&mut self, trigger: Trigger, generation: u64) {
        match self.sm.handle(trigger, generation) {
            Ok(ts) => {
                log_transitions(&ts);
                // A failed write is logged, never fatal: the audit trail
                // must not stop the node from failing closed.
                if let Err(e) = self.audit.record(&ts, now_unix()) {
                    tracing::error!(error = %e, "cannot append to the audit log");
                }
                if ts.iter().any(|t| t.to_state == DataplaneState::FailClosed) {
                    self.metrics.fail_closed_entered();
                }
            }
            Err(e) => tracing::error!(error = %e, "refused state transition"),
        }
    }

    fn save(&mut self) {
        self.state.saved_sysctls = self.fx.sysctl.originals();
        if let Err(e) = self.store.save(&self.state) {
            tracing::error!(error = %e, "cannot persist state");
            self.last_error = Some(format!("cannot persist state: {e}"));
        }
        // The early-boot ruleset follows the wanted mode (issue 10 item 4);
        // lockdown wants it even after `down`.
        let protected = (self.state.prefs.want_up && self.protected_expected()) || self.lockdown();
        let armed = crate::early_boot::sync(&self.cfg.state_dir, protected, || {
            plan::fail_closed(
                &self.local_context(),
                true,
                self.state.prefs.protect_dns,
                &self.suffix(),
            )
            .firewall
        });
        if let Err(e) = armed {
            tracing::error!(error = %e, "cannot persist the early-boot ruleset");
        }
    }

    fn local_context(&self) -> LocalContext {
        LocalContext {
            tun: self.cfg.tun.clone(),
            fwmark: self.cfg.fwmark,
            dns_mark: self.cfg.dns_mark,
            table: rustynet_netos::DEFAULT_TABLE,
            rule_priority: *rustynet_netos::DEFAULT_RULE_PRIORITIES.start(),
            system_resolvers: self.system_resolvers(),
            on_link: self.on_link.clone(),
        }
    }

    /// Reads the node's on-link private prefixes from the main table when
    /// `local-lan` needs them (a failure leaves none: fail closed).
    fn refresh_on_link(&mut self) {
        self.on_link = if self.state.prefs.local_lan && self.state.prefs.exit_node.is_some() {
            match self.fx.routing.main_routes() {
                Ok(routes) => plan::local_lan::on_link_private(&routes, &self.cfg.tun),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the routing table: local-lan allows nothing");
                    vec![]
                }
            }
        } else {
            vec![]
        };
    }

    fn system_resolvers(&self) -> Vec<std::net::IpAddr> {
        self.fx.dns.system_resolvers()
    }

    fn choices(&self) -> Choices {
        Choices {
            exit_node: self.state.prefs.exit_node.clone(),
            lan_access: self.state.prefs.lan_access,
            local_lan: self.state.prefs.local_lan,
            protect_dns: self.state.prefs.protect_dns,
            no_snat_subnet_routes: self.state.prefs.no_snat_subnet_routes,
            lan_routers: self
                .desired
                .as_ref()
                .map(Desired::lan_routers)
                .unwrap_or_default(),
            lockdown: self.lockdown(),
        }
    }

    fn protected_expected(&self) -> bool {
        self.integrity_failed || self.state.prefs.exit_node.is_some() || self.lockdown()
    }

    /// Lockdown mode: set in the config file or by `rustynet set lockdown`.
    fn lockdown(&self) -> bool {
        self.cfg.lockdown || self.state.prefs.lockdown
    }

    /// While down: lockdown keeps the protected fail-closed ruleset (nothing
    /// but the daemon's own sockets leaves); otherwise no table at all.
    fn firewall_while_down(&mut self) -> Result<(), String> {
        if self.lockdown() {
            let ruleset = plan::fail_closed(
                &self.local_context(),
                true,
                self.state.prefs.protect_dns,
                &self.suffix(),
            )
            .firewall;
            self.fx
                .firewall
                .apply(&ruleset)
                .map_err(|e| e.to_string())?;
            self.applied.firewall = Some(ruleset);
            Ok(())
        } else {
            self.applied.firewall = None;
            self.fx.firewall.remove().map_err(|e| e.to_string())
        }
    }

    fn suffix(&self) -> String {
        self.current
            .as_ref()
            .map(|m| m.netmap().dns.suffix.clone())
            .unwrap_or_else(|| "rustynet.internal".into())
    }

    /// Start-up: repair a stale resolver takeover first, then load state and
    /// restore the last-known-safe generation before anything else happens.
    fn startup(&mut self) {
        match self.fx.dns.repair_stale() {
            Ok(outcome) => tracing::info!(?outcome, "resolver configuration checked"),
            Err(e) => tracing::warn!(error = %e, "cannot check resolver configuration"),
        }
        match self.store.load() {
            Ok(Some(state)) => self.state = state,
            Ok(None) => {}
            Err(e) => {
                self.integrity_failed = true;
                self.last_error = Some(format!(
                    "{e}; run `rustynet down` to reset, or `rustynet up --auth-key KEY` to enroll again"
                ));
                tracing::error!(error = %e, "state failed its integrity check; starting restricted and fail-closed");
                self.transition(Trigger::IntegrityFailure(e.to_string()), 0);
                self.enter_fail_closed();
                return;
            }
        }
        self.fx
            .sysctl
            .set_originals(self.state.saved_sysctls.clone());
        if !self.state.prefs.want_up {
            self.cleanup_stale();
            return;
        }
        if let Err(e) = self.load_keys() {
            self.integrity_failed = true;
            self.last_error = Some(e.clone());
            self.transition(Trigger::IntegrityFailure(e), 0);
            self.enter_fail_closed();
            return;
        }
        self.resolve_control_endpoints();
        // Never open while restoring: the restricted ruleset goes in first.
        self.enter_fail_closed_quietly();
        self.ensure_backend();
        self.restore_last_known_safe();
        self.start_control();
    }

    fn cleanup_stale(&mut self) {
        if let Err(e) = self.firewall_while_down() {
            tracing::error!(error = %e, "cannot set the firewall while down");
        }
        let _ = self.fx.routing.clear();
        let _ = self.fx.sysctl.apply(&[]);
        self.save();
    }

    fn load_keys(&mut self) -> Result<(), String> {
        if self.keys.is_some() {
            return Ok(());
        }
        let keys = self
            .store
            .keys_or_create(rustynet_backend_wireguard::generate_private_key)
            .map_err(|e| e.to_string())?;
        self.keys = Some(keys);
        Ok(())
    }

    /// Looks the control host up off the engine thread; the answer comes
    /// back as [`TaskDone::ControlResolved`]. Until then (and if the lookup
    /// fails) the addresses resolved when the node enrolled are used.
    fn resolve_control_endpoints(&mut self) {
        let Some(enrollment) = &self.state.enrollment else {
            return;
        };
        if self.control_endpoints.is_empty() {
            self.control_endpoints = enrollment.control_addrs.clone();
        }
        tasks::resolve_control(&self.rt, &self.handle, enrollment.control_url().to_owned());
    }

    fn on_done(&mut self, done: TaskDone) {
        match done {
            TaskDone::ControlResolved { control_url, addrs } => {
                let Some(enrollment) = self.state.enrollment.as_mut() else {
                    return;
                };
                if enrollment.control_url() != control_url || addrs.is_empty() {
                    return;
                }
                self.control_endpoints = addrs.clone();
                // The first answer after `up` is the one kept: later the
                // control connection tries these before asking DNS again.
                if enrollment.control_addrs.is_empty() {
                    enrollment.control_addrs = addrs;
                    self.save();
                    self.start_control();
                }
            }
            TaskDone::Enrolled(enrolled) => self.on_enrolled(*enrolled),
            TaskDone::RelayTicket(result) => self.on_ticket(result),
        }
    }

    fn restore_last_known_safe(&mut self) {
        let (Some(env), Some(enrollment)) = (
            self.state.last_known_safe.clone(),
            self.state.enrollment.clone(),
        ) else {
            return;
        };
        let verifier = NetmapVerifier::new(
            enrollment.control_signing_key,
            enrollment.node_id,
            VerifyPolicy::default(),
        );
        match verifier.verify(
            env,
            GenerationRule::Exactly(self.state.last_known_safe_generation),
            now_unix(),
        ) {
            Ok(map) => {
                tracing::info!(
                    generation = map.generation(),
                    "restoring last-known-safe generation"
                );
                self.accept_map(map);
            }
            Err(e) => {
                let reason =
                    format!("last-known-safe generation unusable ({e}); waiting for control");
                tracing::warn!(%reason);
                self.last_error = Some(reason);
            }
        }
    }

    fn verifier(&self) -> Option<NetmapVerifier> {
        let e = self.state.enrollment.as_ref()?;
        Some(NetmapVerifier::new(
            e.control_signing_key,
            e.node_id,
            VerifyPolicy::default(),
        ))
    }

    fn on_map(&mut self, envelope: SignedEnvelope, handovers: Vec<KeyHandover>) {
        let Some(verifier) = self.verifier() else {
            return;
        };
        if !self.state.prefs.want_up {
            return;
        }
        match verifier.verify_following(
            envelope,
            &handovers,
            GenerationRule::After(self.state.high_water),
            now_unix(),
        ) {
            Ok((map, rotated)) => {
                if let (Some(key), Some(enrollment)) = (rotated, self.state.enrollment.as_mut()) {
                    // Control's key was rotated and the pinned key handed
                    // over to this one: pin it. Maps signed by the old key
                    // are refused from now on. The new pin is saved with the
                    // map it verified (the last-known-safe one), in the same
                    // atomic write, once that map is applied.
                    tracing::info!(target: "rustynet::trust", from = %enrollment.control_signing_key, to = %key, "control signing key rotated; pinning its successor");
                    enrollment.control_signing_key = key;
                }
                self.accept_map(map);
            }
            Err(e) => {
                // Nothing changes: a refused map is only logged and counted.
                tracing::warn!(target: "rustynet::trust", reason = %e, "signed map rejected");
                self.metrics.map_rejected(&e);
            }
        }
    }

    /// A verified map: trust, plan, apply, commit.
    fn accept_map(&mut self, map: VerifiedNetmap) {
        let generation = map.generation();
        self.transition(Trigger::TrustEstablished, generation);
        self.state.high_water = self.state.high_water.max(generation);
        self.link.note_high_water(self.state.high_water);
        self.current = Some(map);
        self.reapply();
    }

    /// Plans and applies the current map with the current preferences.
    fn reapply(&mut self) -> Option<String> {
        let map = self.current.clone()?;
        if self.sm.state() == DataplaneState::FailClosed || self.sm.state() == DataplaneState::Init
        {
            self.transition(Trigger::TrustEstablished, map.generation());
        }
        self.ensure_backend();
        self.refresh_on_link();
        let desired = match plan::plan(
            map.netmap(),
            map.generation(),
            &self.choices(),
            &self.local_context(),
        ) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("selected exit node unavailable: {e}");
                self.metrics.exit_failure("plan");
                self.last_error = Some(reason.clone());
                self.transition(Trigger::TrustLost(reason.clone()), map.generation());
                self.enter_fail_closed();
                return Some(reason);
            }
        };
        let started = std::time::Instant::now();
        match apply::apply(
            &mut self.fx,
            &mut self.applied,
            &desired,
            self.faults.for_next_apply(),
        ) {
            Ok(steps) => {
                self.metrics.apply_ok(started.elapsed());
                tracing::info!(
                    generation = desired.generation,
                    steps = ?steps.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                    "generation applied"
                );
                let exit = desired.exit.is_some();
                self.state.last_known_safe = Some(map.envelope.clone());
                self.state.last_known_safe_generation = map.generation();
                self.desired = Some(desired);
                self.last_error = None;
                self.save();
                self.transition(Trigger::Applied { exit }, map.generation());
                self.sync_paths();
                None
            }
            Err(e) => {
                self.metrics.apply_failed(e.step.as_str());
                let reason = e.to_string();
                tracing::error!(generation = desired.generation, rollback_id = desired.generation, failure = e.step.as_str(), error = %reason, "apply failed");
                self.last_error = Some(reason.clone());
                if e.rollback.is_err() {
                    self.transition(Trigger::RollbackFailed(reason.clone()), desired.generation);
                    self.enter_fail_closed();
                }
                Some(reason)
            }
        }
    }

    fn ensure_backend(&mut self) {
        let Some(keys) = &self.keys else {
            return;
        };
        let config = rustynet_tunnel::InterfaceConfig {
            ifname: self.cfg.tun.clone(),
            private_key: rustynet_tunnel::TunnelPrivateKey::from_bytes(*keys.tunnel.as_bytes()),
            listen_port: self.cfg.listen_port,
            mtu: self.cfg.mtu,
            fwmark: Some(self.cfg.fwmark),
        };
        match self.fx.backend.ensure_started(&config) {
            Ok(Started::Running) => {}
            Ok(started) => {
                if started == Started::Recreated {
                    // A new interface has no peers, addresses or routes.
                    self.applied.peers = None;
                    self.applied.routing = None;
                }
                tracing::info!(engine = %self.fx.backend.info().detail, tun = %self.cfg.tun, ?started, "tunnel interface up");
            }
            Err(e) => {
                self.last_error = Some(format!("cannot start the tunnel: {e}"));
                tracing::error!(error = %e, "cannot start the tunnel");
            }
        }
    }

    /// Applies the restricted plan and records why.
    fn enter_fail_closed(&mut self) {
        self.enter_fail_closed_quietly();
        tracing::warn!(protected = self.protected_expected(), "failing closed");
    }

    fn enter_fail_closed_quietly(&mut self) {
        let desired = plan::fail_closed(
            &self.local_context(),
            self.protected_expected(),
            self.state.prefs.protect_dns,
            &self.suffix(),
        );
        // Best effort, firewall first: whatever else fails, the table must hold.
        if let Err(e) = self.fx.firewall.apply(&desired.firewall) {
            tracing::error!(error = %e, "cannot install the fail-closed ruleset; previous table stays");
        } else {
            self.applied.firewall = Some(desired.firewall.clone());
        }
        if self.fx.backend.expected() {
            let _ = self.fx.backend.set_peers(&[]);
            self.applied.peers = Some(vec![]);
        }
        if self.fx.routing.apply(&desired.routing).is_ok() {
            self.applied.routing = Some(desired.routing.clone());
        }
        if self.fx.sysctl.apply(&desired.sysctls).is_ok() {
            self.applied.sysctls = Some(desired.sysctls.clone());
        }
        // Magic DNS stops answering tailnet names (only once it was running:
        // start-up does not take resolv.conf over before the first map).
        if self.applied.dns.is_some() && self.fx.dns.apply(&desired.dns).is_ok() {
            self.applied.dns = Some(desired.dns.clone());
        }
        self.desired = Some(desired);
    }

    fn on_tick(&mut self) {
        if !self.state.prefs.want_up || self.integrity_failed {
            return;
        }
        if self.applied.dns.is_some() {
            self.fx.dns.maintain();
        }
        let observed = Observations {
            now: now_unix(),
            map_expires_at: self.current.as_ref().map(|m| m.body.expires_at),
            fail_closed: self.sm.state() == DataplaneState::FailClosed,
            tunnel_expected: self.fx.backend.expected(),
            interface_exists: self.fx.routing.link_exists(&self.cfg.tun).ok(),
            engine_running: self.fx.backend.is_running(),
        };
        let generation = self.current.as_ref().map_or(0, |m| m.generation());
        match health_monitor::assess(&observed) {
            Verdict::Healthy => {}
            verdict @ Verdict::MapExpired => {
                self.transition(Trigger::TrustLost(verdict.reason().into()), generation);
                self.last_error = Some("signed map expired; waiting for control".into());
                self.current = None;
                self.enter_fail_closed();
                return;
            }
            verdict @ Verdict::TunnelGone => {
                self.transition(Trigger::HealthLost(verdict.reason().into()), generation);
                self.last_error = Some("tunnel interface disappeared; recovering".into());
                self.enter_fail_closed();
                // Recreate the interface and re-apply the current (still
                // verified, unexpired) map: fail_closed -> trusted -> applied.
                self.ensure_backend();
                self.reapply();
                return;
            }
        }
        if let Some(control) = &self.control {
            control.maybe_report_endpoints(self.local_endpoints());
        }
        self.sync_paths();
        self.report_home_relay();
    }

    /// This node's own interfaces' addresses with the tunnel's port, the
    /// one that routes to control first.
    fn interface_endpoints(&self) -> Vec<SocketAddr> {
        let port = self
            .fx
            .backend
            .stats()
            .map_or(self.cfg.listen_port, |s| s.listen_port);
        crate::endpoints::local_endpoints(
            &self.cfg.tun,
            port,
            self.control_endpoints.first().copied(),
            self.cfg.fwmark,
        )
    }

    /// The endpoints this node reports: its interfaces' addresses (the one
    /// that routes to control first), then the public addresses the engine
    /// discovered through relays' binding service.
    fn local_endpoints(&self) -> Vec<SocketAddr> {
        let stats = self.fx.backend.stats().ok();
        let mut endpoints = self.interface_endpoints();
        for mapped in stats.into_iter().flat_map(|s| s.mapped) {
            if !endpoints.contains(&mapped)
                && endpoints.len() < rustynet_proto::endpoint::MAX_ENDPOINTS
                && rustynet_proto::endpoint::check_endpoint(&mapped).is_ok()
            {
                endpoints.push(mapped);
            }
        }
        endpoints
    }

    fn update_request(&self) -> rustynet_proto::control_api::UpdateRequest {
        rustynet_proto::control_api::UpdateRequest {
            home_relay: None,
            path_key: self.keys.as_ref().map(paths::path_key),
            version: rustynet_proto::control_api::API_VERSION,
            endpoints: Some(self.local_endpoints()),
            advertise_exit_node: Some(self.state.prefs.advertise_exit_node),
            advertise_routes: Some(self.state.prefs.advertise_routes.clone()),
            lan_access: Some(self.state.prefs.lan_access),
        }
    }

    /// Path, peer, DNS and map-age gauges: once per tick (they walk every
    /// peer). Peers are the map's: one that left loses its series.
    fn publish_path_metrics(&self) {
        let stats = self.fx.backend.stats().ok();
        if let Some(stats) = &stats {
            self.metrics.set_paths(stats);
        }
        let peers: Vec<crate::metrics::PeerSample> = self
            .current
            .iter()
            .flat_map(|m| &m.netmap().peers)
            .map(|p| {
                let s = stats.as_ref().and_then(|s| s.peer(&p.node_key));
                crate::metrics::PeerSample {
                    name: p.hostname.clone(),
                    handshake_age: s.and_then(|s| s.last_handshake),
                    rx_bytes: s.map_or(0, |s| s.rx_bytes),
                    tx_bytes: s.map_or(0, |s| s.tx_bytes),
                }
            })
            .collect();
        self.metrics.set_peers(&peers);
        self.metrics.set_dns(&self.fx.dns.counters());
        self.metrics
            .set_netmap(self.current.as_ref().map(|m| m.body.issued_at), now_unix());
    }

    fn publish_metrics(&self) {
        let peers = self.current.as_ref().map_or(0, |m| m.netmap().peers.len());
        let desired = self.desired.as_ref();
        self.metrics.set_state(
            self.sm.state(),
            peers,
            desired.is_some_and(|d| d.protected),
            desired.is_some_and(|d| d.dns_protected),
        );
    }

    fn fail(code: ErrorCode, message: impl Into<String>) -> IpcFailure {
        IpcFailure::new(code, message)
    }
}
