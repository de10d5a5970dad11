//! IPC commands. Each validates its input completely before changing
//! anything, and a change that cannot be applied is undone before replying.

use ipnet::IpNet;
use rustynet_control_client::{ControlClient, ControlUrl};
use rustynet_proto::NodeSigningKey;
use rustynet_proto::control_api::{API_VERSION, RegisterRequest};
use rustynet_proto::ipc::{Command, ErrorCode, ExitNodeEntry, Reply, UpArgs};
use rustynet_proto::netmap::TUNNEL_NET;

use super::tasks::{self, PingTarget, Registration, Reply1};
use super::up_plan;
use super::{Engine, now_unix};
use crate::messages::{Caller, Enrolled, IpcFailure};
use crate::plan;
use crate::state_store::{Enrollment, NodeKeys, Prefs};

type CmdResult = Result<Reply, IpcFailure>;

/// What `up` registers with: a client per control URL (the preferred
/// first), the request, the fresh keys, and for a renewal the node's
/// current signing key and id.
type Enrollment1 = (
    Vec<ControlClient>,
    RegisterRequest,
    NodeKeys,
    Option<(NodeSigningKey, rustynet_proto::NodeId)>,
);

fn done(message: impl Into<String>) -> CmdResult {
    Ok(Reply::Done {
        message: message.into(),
    })
}

/// Routes a node may advertise: canonical, not default, not the tunnel range,
/// not loopback/link-local/multicast.
pub fn validate_route(net: &IpNet) -> Result<(), String> {
    if net.trunc() != *net {
        return Err(format!(
            "{net} has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    if net.prefix_len() == 0 {
        return Err(format!(
            "{net} is a default route; use --advertise-exit-node"
        ));
    }
    let bad = match net {
        IpNet::V4(n) => {
            TUNNEL_NET.contains(&n.network())
                || n.contains(&TUNNEL_NET.network())
                || n.network().is_loopback()
                || n.network().is_link_local()
                || n.network().is_multicast()
        }
        IpNet::V6(n) => {
            n.network().is_loopback()
                || n.network().is_multicast()
                || (n.network().segments()[0] & 0xffc0) == 0xfe80
        }
    };
    if bad {
        return Err(format!("{net} is not a routable LAN prefix"));
    }
    Ok(())
}

impl Engine {
    /// One IPC command. Most are handled here and answered at once; those
    /// that wait on the network (`up` registering, `ping`, `netcheck`) hand
    /// `reply` to a task and return, so the engine keeps serving.
    pub(super) fn on_ipc(&mut self, cmd: Command, caller: &Caller, reply: Reply1) {
        tracing::info!(command = cmd.name(), uid = caller.uid, "ipc command");
        if self.integrity_failed
            && !matches!(
                cmd,
                Command::Status | Command::Down | Command::Logout | Command::Up(_)
            )
        {
            let _ = reply.send(Err(Self::fail(
                ErrorCode::WrongState,
                format!(
                    "daemon is fail-closed: {}; run `rustynet down` to reset or `rustynet up` to enroll again",
                    self.last_error.clone().unwrap_or_default()
                ),
            )));
            return;
        }
        let result = match cmd {
            Command::Up(args) => return self.cmd_up(args, reply),
            Command::Ping { name, all_paths } => return self.cmd_ping(&name, all_paths, reply),
            Command::Netcheck => return self.cmd_netcheck(reply),
            Command::Status => Ok(Reply::Status(self.status())),
            Command::Down => self.cmd_down(),
            Command::Logout => self.cmd_logout(),
            Command::ExitNodeList => self.cmd_exit_list(),
            Command::ExitNodeSelect { name } => self.cmd_exit_select(&name),
            Command::ExitNodeOff => self.cmd_exit_off(),
            Command::LanAccess { on } => self.cmd_lan_access(on),
            Command::LocalLan { on } => self.cmd_local_lan(on),
            Command::Lockdown { on } => self.cmd_lockdown(on),
            Command::RouteAdvertise { cidrs } => self.cmd_routes(cidrs, true),
            Command::RouteWithdraw { cidrs } => self.cmd_routes(cidrs, false),
            Command::DnsProtect { on } => self.cmd_dns_protect(on),
            Command::RouteExplain { addr } => self.cmd_route_explain(addr),
            Command::AclExplain { peer, port } => self.cmd_acl_explain(&peer, port),
            Command::DnsInspect { name } => self
                .fx
                .dns
                .inspect(name.as_deref())
                .map(Reply::Dns)
                .ok_or_else(|| {
                    Self::fail(
                        ErrorCode::WrongState,
                        "Magic DNS is not running (not connected)",
                    )
                }),
        };
        let _ = reply.send(result);
    }

    /// `up`: validates everything, then either finishes at once (already
    /// enrolled with this control server) or registers in a task whose
    /// result [`Engine::on_enrolled`] completes.
    fn cmd_up(&mut self, mut args: UpArgs, reply: Reply1) {
        match self.prepare_up(&mut args) {
            Err(f) => {
                let _ = reply.send(Err(f));
            }
            Ok(None) => {
                let _ = reply.send(self.finish_up(args));
            }
            Ok(Some((clients, request, keys, current))) => {
                self.enrolling = true;
                let registration = Registration {
                    clients,
                    request,
                    keys,
                    current,
                    args,
                    reply,
                    epoch: self.enroll_epoch,
                };
                tasks::register(&self.rt, &self.handle, registration);
            }
        }
    }

    /// Checks `up`'s arguments and decides ([`up_plan::decide`]) whether to
    /// reconnect, renew or enroll; returns what to register with when
    /// control must be asked. Fills in the saved control URL and CA when
    /// `up` named none, and normalises the URL.
    fn prepare_up(&mut self, args: &mut UpArgs) -> Result<Option<Enrollment1>, IpcFailure> {
        if self.enrolling {
            return Err(Self::fail(
                ErrorCode::Busy,
                "an enrollment is already in progress",
            ));
        }
        let hostname =
            match &args.hostname {
                Some(h) => Some(rustynet_proto::names::normalize_hostname(h).map_err(|e| {
                    Self::fail(ErrorCode::InvalidArgument, format!("--hostname: {e}"))
                })?),
                None => None,
            };
        for route in &args.advertise_routes {
            validate_route(route).map_err(|e| {
                Self::fail(
                    ErrorCode::InvalidArgument,
                    format!("--advertise-routes: {e}"),
                )
            })?;
        }
        let fingerprint = args
            .auth_key
            .as_ref()
            .map(|k| up_plan::auth_key_fingerprint(k.expose()));
        let saved = self.state.enrollment.as_ref().map(|e| up_plan::Saved {
            control_urls: &e.control_urls,
            ca_pem: &e.ca_pem,
            auth_key_fingerprint: e.auth_key_fingerprint.as_deref(),
            refused: e.refused,
        });
        let now = up_plan::Condition {
            integrity_failed: self.integrity_failed,
            fail_closed: self.sm.state() == rustynet_proto::ipc::DataplaneState::FailClosed,
        };
        let ask = up_plan::Ask {
            control_url: &args.control_url,
            ca_pem: &args.ca_cert_pem,
            auth_key_fingerprint: fingerprint.as_deref(),
            force_reauth: args.force_reauth,
        };
        let plan = up_plan::decide(saved, now, ask, normalize_url).map_err(|r| {
            let code = match r {
                up_plan::Refusal::Refused => ErrorCode::WrongState,
                _ => ErrorCode::InvalidArgument,
            };
            Self::fail(code, r.to_string())
        })?;
        args.control_url = plan.control_urls.join(",");
        args.ca_cert_pem = plan.ca_pem;
        // Enrolls through the preferred URL (the next when it cannot be
        // reached); every URL must make a client.
        let clients = plan
            .control_urls
            .iter()
            .map(|url| {
                ControlClient::new(url, &args.ca_cert_pem).map(|c| c.with_fwmark(self.cfg.fwmark))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Self::fail(ErrorCode::InvalidArgument, e.to_string()))?;
        if clients.is_empty() {
            return Err(Self::fail(
                ErrorCode::InvalidArgument,
                "--control names no URL",
            ));
        }
        let renew = match plan.action {
            up_plan::Action::Reconnect => {
                self.load_keys()
                    .map_err(|e| Self::fail(ErrorCode::Internal, e))?;
                self.keep_control_urls(plan.control_urls);
                return Ok(None);
            }
            up_plan::Action::Renew => true,
            up_plan::Action::Enroll => false,
        };
        tracing::info!(renew, "up: registering with control");
        let auth_key = args
            .auth_key
            .clone()
            .ok_or_else(|| Self::fail(ErrorCode::InvalidArgument, "--auth-key is required"))?;
        if renew {
            self.load_keys()
                .map_err(|e| Self::fail(ErrorCode::Internal, e))?;
        }
        if self.integrity_failed {
            // The operator chose to start over: fresh state.
            self.state = Default::default();
            self.integrity_failed = false;
        }
        // A new enrollment is a new identity. Control refuses keys it
        // already knows — those of a node that lost its state (the
        // recovery after an integrity failure) or that is enrolled
        // elsewhere — so enroll with fresh keys, kept only once control
        // accepted them. A renewal also gets fresh keys, for the same node.
        let keys = NodeKeys::generate(rustynet_backend_wireguard::generate_private_key);
        let request = RegisterRequest {
            path_key: Some(super::paths::path_key(&keys)),
            version: API_VERSION,
            auth_key,
            hostname: hostname.unwrap_or_else(default_hostname),
            node_key: rustynet_backend_wireguard::public_key(&keys.tunnel),
            signing_key: keys.signing.public(),
            endpoints: self.local_endpoints(),
            advertise_exit_node: args.advertise_exit_node,
            advertise_routes: args.advertise_routes.clone(),
            renew: None,
        };
        // A renewal is also signed by the node's current key, as that node:
        // proof that this is the node it renews.
        let current = match (renew, &self.keys, &self.state.enrollment) {
            (true, Some(old), Some(e)) => {
                Some((NodeSigningKey::from_seed(&old.signing.seed()), e.node_id))
            }
            _ => None,
        };
        Ok(Some((clients, request, keys, current)))
    }

    /// Control answered a registration started by `up`.
    pub(super) fn on_enrolled(&mut self, done: Enrolled) {
        let Enrolled {
            args,
            keys,
            result,
            reply,
            epoch,
            renew,
        } = done;
        self.enrolling = false;
        if epoch != self.enroll_epoch {
            let _ = reply.send(Err(Self::fail(
                ErrorCode::WrongState,
                "enrollment cancelled by `down`",
            )));
            return;
        }
        let response = match result {
            Ok(r) => r,
            Err(f) => {
                let _ = reply.send(Err(f));
                return;
            }
        };
        if let Err(e) = self.store.store_keys(&keys) {
            let _ = reply.send(Err(Self::fail(
                ErrorCode::Internal,
                format!("enrolled, but cannot store the node keys: {e}"),
            )));
            return;
        }
        self.use_keys(keys);
        self.forget_ticket();
        tracing::info!(node = %response.node_id, hostname = %response.hostname, ip = %response.tunnel_ip, renewed = renew, "enrolled");
        // A renewal is the same node: its replay mark, preferences and the
        // control addresses stay. A new enrollment starts from a clean
        // state. Either way the keys and the enrollment are saved together.
        let control_urls: Vec<String> = args.control_url.split(',').map(str::to_owned).collect();
        let control_addrs = match (renew, &self.state.enrollment) {
            (true, Some(e))
                if control_urls.first().map(String::as_str) == Some(e.control_url()) =>
            {
                e.control_addrs.clone()
            }
            _ => Vec::new(),
        };
        if !renew {
            self.state = Default::default();
            self.control_endpoints.clear();
        }
        self.state.enrollment = Some(Enrollment {
            control_urls,
            ca_pem: args.ca_cert_pem.clone(),
            node_id: response.node_id,
            control_signing_key: response.control_signing_key,
            hostname: response.hostname,
            control_addrs,
            auth_key_fingerprint: args
                .auth_key
                .as_ref()
                .map(|k| up_plan::auth_key_fingerprint(k.expose())),
            refused: false,
        });
        self.current = None;
        let _ = reply.send(self.finish_up(args));
    }

    /// A reconnecting `up` may list other replicas of the same control
    /// server: they replace the saved URLs (saved by [`Engine::finish_up`]).
    /// Addresses resolved for another preferred URL are dropped.
    fn keep_control_urls(&mut self, urls: Vec<String>) {
        let Some(e) = self.state.enrollment.as_mut() else {
            return;
        };
        if e.control_urls == urls {
            return;
        }
        tracing::info!(from = ?e.control_urls, to = ?urls, "up: control URLs changed");
        if e.control_urls.first() != urls.first() {
            e.control_addrs.clear();
            self.control_endpoints.clear();
        }
        e.control_urls = urls;
    }

    /// The part of `up` after enrollment: preferences, tunnel, control.
    fn finish_up(&mut self, args: UpArgs) -> CmdResult {
        // A fresh attempt: what went wrong before is no longer the news
        // (`up --wait` fails on the next error, not on an old one).
        self.last_error = None;
        self.state.prefs = Prefs {
            want_up: true,
            advertise_exit_node: args.advertise_exit_node,
            advertise_routes: args.advertise_routes.clone(),
            no_snat_subnet_routes: args.no_snat_subnet_routes,
            ..self.state.prefs.clone()
        };
        self.save();
        self.resolve_control_endpoints();
        if self.sm.state() == rustynet_proto::ipc::DataplaneState::Init {
            self.enter_fail_closed_quietly();
        }
        self.ensure_backend();
        self.start_control();
        let name = self
            .state
            .enrollment
            .as_ref()
            .map(|e| e.hostname.clone())
            .unwrap_or_default();
        done(format!("up: {name} (connecting to {})", args.control_url))
    }

    /// Switches to freshly enrolled `keys`; a tunnel still running with the
    /// old key is stopped and comes back with the new one.
    fn use_keys(&mut self, keys: NodeKeys) {
        if self.fx.backend.expected() {
            let _ = self.fx.backend.stop();
            self.applied.peers = None;
            self.applied.routing = None;
        }
        self.keys = Some(keys);
    }

    fn cmd_down(&mut self) -> CmdResult {
        self.enroll_epoch += 1;
        self.forget_ticket();
        if let Some(control) = self.control.take() {
            control.stop();
        }
        let mut problems = Vec::new();
        if let Err(e) = self.fx.dns.stop() {
            problems.push(format!("dns: {e}"));
        }
        if let Err(e) = self.firewall_while_down() {
            problems.push(format!("firewall: {e}"));
        }
        if let Err(e) = self.fx.routing.clear() {
            problems.push(format!("routes: {e}"));
        }
        if let Err(e) = self.fx.sysctl.apply(&[]) {
            problems.push(format!("sysctl: {e}"));
        }
        if let Err(e) = self.fx.backend.stop() {
            problems.push(format!("tunnel: {e}"));
        }
        self.applied = Default::default();
        self.desired = None;
        self.current = None;
        if self.integrity_failed {
            let _ = self.store.clear();
            self.state = Default::default();
            self.integrity_failed = false;
        }
        self.state.prefs.want_up = false;
        self.save();
        self.last_error = None;
        let generation = self.state.last_known_safe_generation;
        self.transition(crate::dataplane_state::Trigger::Down, generation);
        if problems.is_empty() {
            done("down: tunnel removed, routes, firewall and DNS restored")
        } else {
            Err(Self::fail(
                ErrorCode::Apply,
                format!("down finished with errors: {}", problems.join("; ")),
            ))
        }
    }

    /// `logout`: `down`, then forget the enrollment, the node's keys and
    /// the preferences; the next `up` needs a pre-auth key. Control is not
    /// told: the node stays listed there (offline) until an administrator
    /// removes or expires it, and its keys exist nowhere any more.
    fn cmd_logout(&mut self) -> CmdResult {
        let down = self.cmd_down();
        if let Err(e) = self.store.clear() {
            return Err(Self::fail(
                ErrorCode::Internal,
                format!("down done, but the saved enrollment cannot be removed: {e}"),
            ));
        }
        self.state = Default::default();
        self.keys = None;
        self.control_endpoints.clear();
        self.save();
        tracing::info!("logged out: enrollment and node keys forgotten");
        down?;
        done(
            "logged out: tunnel removed and this node's enrollment and keys forgotten; `rustynet up --auth-key KEY` enrolls it again",
        )
    }

    fn cmd_exit_list(&self) -> CmdResult {
        let map = self
            .current
            .as_ref()
            .ok_or_else(|| Self::fail(ErrorCode::WrongState, "no network map yet"))?;
        let selected = self
            .desired
            .as_ref()
            .and_then(|d| d.exit.as_ref())
            .map(|e| e.node_id);
        let entries = map
            .netmap()
            .peers
            .iter()
            .filter(|p| p.exit_node)
            .map(|p| ExitNodeEntry {
                name: p.hostname.clone(),
                dns_name: p.dns_name.clone(),
                tunnel_ip: p.tunnel_ip,
                online: p.online,
                selected: selected == Some(p.node_id),
            })
            .collect();
        Ok(Reply::ExitNodes(entries))
    }

    /// Changes preferences, re-applies, and restores the old preferences if
    /// the new generation cannot be applied.
    fn with_prefs(
        &mut self,
        change: impl FnOnce(&mut Prefs),
        what: &str,
    ) -> Result<(), IpcFailure> {
        let before = self.state.prefs.clone();
        change(&mut self.state.prefs);
        if self.current.is_none() {
            self.state.prefs = before;
            return Err(Self::fail(
                ErrorCode::WrongState,
                "not connected (no network map yet)",
            ));
        }
        if let Some(err) = self.reapply() {
            self.state.prefs = before;
            self.reapply();
            self.save();
            return Err(Self::fail(
                ErrorCode::Apply,
                format!("{what} not applied: {err}"),
            ));
        }
        self.save();
        Ok(())
    }

    fn cmd_exit_select(&mut self, name: &str) -> CmdResult {
        let map = self.current.as_ref().ok_or_else(|| {
            Self::fail(ErrorCode::WrongState, "not connected (no network map yet)")
        })?;
        let choice = plan::resolve_exit(map.netmap(), name).map_err(|e| {
            self.metrics.exit_failure("not_granted");
            let code = match e {
                plan::PlanError::ExitNotGranted(_) => ErrorCode::NotAuthorized,
                plan::PlanError::UnknownExit(_) => ErrorCode::InvalidArgument,
            };
            Self::fail(code, e.to_string())
        })?;
        let hostname = choice.hostname.clone();
        self.with_prefs(|p| p.exit_node = Some(hostname.clone()), "exit node")?;
        done(format!(
            "exit node: {hostname} (all internet traffic now leaves through it; kill switch on)"
        ))
    }

    fn cmd_exit_off(&mut self) -> CmdResult {
        if self.state.prefs.exit_node.is_none() {
            return done("exit node: off (was not set)");
        }
        if self.current.is_none() {
            self.state.prefs.exit_node = None;
            self.save();
            return done("exit node: off");
        }
        self.with_prefs(|p| p.exit_node = None, "exit node off")?;
        done("exit node: off (direct internet access restored)")
    }

    fn cmd_lan_access(&mut self, on: bool) -> CmdResult {
        self.with_prefs(|p| p.lan_access = on, "LAN access")?;
        if let Some(control) = &self.control {
            control.send_update(self.update_request());
        }
        done(format!("LAN access: {}", if on { "on" } else { "off" }))
    }

    fn cmd_local_lan(&mut self, on: bool) -> CmdResult {
        if self.current.is_none() {
            // Takes effect with the first generation.
            self.state.prefs.local_lan = on;
            self.save();
        } else {
            self.with_prefs(|p| p.local_lan = on, "local LAN")?;
        }
        let when = if self.state.prefs.exit_node.is_some() {
            ""
        } else {
            " (takes effect while an exit node is in use)"
        };
        done(format!(
            "local LAN: {}{when}",
            if on { "on" } else { "off" }
        ))
    }

    fn cmd_lockdown(&mut self, on: bool) -> CmdResult {
        if !on && self.cfg.lockdown {
            return Err(Self::fail(
                ErrorCode::WrongState,
                "lockdown is set in the daemon's config file (lockdown = true); change it there",
            ));
        }
        if self.current.is_some() {
            self.with_prefs(|p| p.lockdown = on, "lockdown")?;
        } else {
            self.state.prefs.lockdown = on;
            let held = if self.state.prefs.want_up {
                self.enter_fail_closed_quietly();
                Ok(())
            } else {
                self.firewall_while_down()
            };
            if let Err(e) = held {
                self.state.prefs.lockdown = !on;
                return Err(Self::fail(
                    ErrorCode::Apply,
                    format!("lockdown not applied: {e}"),
                ));
            }
            self.save();
        }
        done(if on {
            "lockdown: on (only the tunnel carries traffic off this node, also while disconnected or the daemon is stopped)"
        } else {
            "lockdown: off"
        })
    }

    fn cmd_dns_protect(&mut self, on: bool) -> CmdResult {
        let state = if on { "on" } else { "off" };
        if self.current.is_none() {
            // Nothing applied to change yet: the preference takes effect
            // with the first generation.
            self.state.prefs.protect_dns = on;
            self.save();
            if self.sm.state() == rustynet_proto::ipc::DataplaneState::FailClosed {
                // The restricted ruleset carries the change at once.
                self.enter_fail_closed_quietly();
            }
            return done(format!("protected DNS: {state} (applies once connected)"));
        }
        self.with_prefs(|p| p.protect_dns = on, "protected DNS")?;
        let exit = self.state.prefs.exit_node.is_some();
        done(match (on, exit) {
            (true, _) => "protected DNS: on (DNS to anything but Magic DNS is dropped)".to_owned(),
            (false, true) => {
                "protected DNS: off on demand; it stays on while an exit node is selected"
                    .to_owned()
            }
            (false, false) => "protected DNS: off".to_owned(),
        })
    }

    fn cmd_routes(&mut self, cidrs: Vec<IpNet>, add: bool) -> CmdResult {
        if cidrs.is_empty() {
            return Err(Self::fail(ErrorCode::InvalidArgument, "no prefixes given"));
        }
        for net in &cidrs {
            validate_route(net).map_err(|e| Self::fail(ErrorCode::InvalidArgument, e))?;
        }
        let routes = &mut self.state.prefs.advertise_routes;
        for net in cidrs {
            if add {
                if !routes.contains(&net) {
                    routes.push(net);
                }
            } else {
                routes.retain(|r| *r != net);
            }
        }
        routes.sort();
        self.save();
        if let Some(control) = &self.control {
            control.send_update(self.update_request());
        }
        let list: Vec<String> = self
            .state
            .prefs
            .advertise_routes
            .iter()
            .map(ToString::to_string)
            .collect();
        done(format!(
            "advertised routes: [{}] (granted only through the policy)",
            list.join(", ")
        ))
    }

    fn cmd_ping(&mut self, name: &str, all_paths: bool, reply: Reply1) {
        let found = self
            .ping_target(name)
            .and_then(|t| Ok((t, tasks::permit(&self.task_permits)?)));
        let ((target, key), permit) = match found {
            Ok(found) => found,
            Err(f) => {
                let _ = reply.send(Err(f));
                return;
            }
        };
        if self.fx.backend.info().path_discovery {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.fx.backend.ping(
                &key,
                all_paths,
                Box::new(move |report| {
                    let _ = tx.send(report);
                }),
            );
            tasks::path_ping(&self.rt, target, rx, reply, permit);
        } else {
            tasks::icmp_ping(&self.rt, target, reply, permit);
        }
    }

    fn ping_target(
        &self,
        name: &str,
    ) -> Result<(PingTarget, rustynet_proto::TunnelPublicKey), IpcFailure> {
        let map = self
            .current
            .as_ref()
            .ok_or_else(|| Self::fail(ErrorCode::WrongState, "not connected"))?;
        let peer = plan::find_peer(map.netmap(), name).ok_or_else(|| {
            Self::fail(
                ErrorCode::InvalidArgument,
                format!("no visible peer named {name:?}"),
            )
        })?;
        let target = PingTarget {
            name: peer.hostname.clone(),
            tunnel_ip: peer.tunnel_ip,
        };
        Ok((target, peer.node_key))
    }

    fn cmd_netcheck(&mut self, reply: Reply1) {
        match tasks::permit(&self.task_permits) {
            Ok(permit) => {
                let doc = self.netcheck_local();
                let client = self.control_client();
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.fx.backend.netcheck(Box::new(move |report| {
                    let _ = tx.send(report);
                }));
                tasks::netcheck(&self.rt, client, doc, rx, reply, permit);
            }
            Err(f) => {
                let _ = reply.send(Err(f));
            }
        }
    }
}

/// `ControlUrl::normalize` with its refusal as one line for `up`.
fn normalize_url(text: &str) -> Result<String, String> {
    ControlUrl::normalize(text).map_err(|e| match e {
        rustynet_control_client::ClientError::Url { reason, .. } => reason.to_owned(),
        other => other.to_string(),
    })
}

fn default_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| {
            rustynet_proto::names::normalize_hostname(h.split('.').next().unwrap_or("")).ok()
        })
        .unwrap_or_else(|| format!("node-{}", now_unix() % 100_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_validation() {
        assert!(validate_route(&"192.168.77.0/24".parse().unwrap()).is_ok());
        assert!(validate_route(&"192.168.77.1/24".parse().unwrap()).is_err());
        assert!(validate_route(&"0.0.0.0/0".parse().unwrap()).is_err());
        assert!(validate_route(&"100.64.1.0/24".parse().unwrap()).is_err());
        assert!(validate_route(&"100.0.0.0/8".parse().unwrap()).is_err());
        assert!(validate_route(&"127.0.0.0/8".parse().unwrap()).is_err());
        assert!(validate_route(&"fe80::/64".parse().unwrap()).is_err());
        assert!(validate_route(&"fd00:1::/64".parse().unwrap()).is_ok());
    }
}
