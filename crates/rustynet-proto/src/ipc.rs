//! The daemon's local IPC: one JSON object per line over a Unix socket.
//!
//! Every frame carries a version and an id; the daemon answers each request
//! with exactly one response carrying the same id. Requests over
//! [`MAX_FRAME_BYTES`] or that fail to parse close that connection only.
//! Responses may be larger (a `status` of thousands of peers), up to
//! [`MAX_REPLY_BYTES`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::control_api::SecretString;
use crate::netmap::NodeId;

/// IPC protocol version.
pub const IPC_VERSION: u16 = 1;

/// Largest request frame (one line) the daemon accepts.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest response frame a client accepts: a `status --json` of 5,000
/// peers is about 1.6 MB, so this leaves room for far larger networks
/// while still bounding what a client buffers.
pub const MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// A request frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpcRequest {
    /// [`IPC_VERSION`].
    pub v: u16,
    /// Echoed in the response.
    pub id: u64,
    /// What to do.
    pub cmd: Command,
}

/// Arguments of `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpArgs {
    /// Control URL, `https://HOST[:PORT]` (normalised by the daemon), or
    /// several comma-separated (replicas of one control server sharing its
    /// CA, the preferred first); empty for the ones the node is enrolled
    /// with (a bare `rustynet up`).
    #[serde(default)]
    pub control_url: String,
    /// PEM of the control CA to pin; empty for the saved one.
    #[serde(default)]
    pub ca_cert_pem: String,
    /// Pre-auth key; needed only when not yet enrolled.
    pub auth_key: Option<SecretString>,
    /// Requested host label.
    pub hostname: Option<String>,
    /// Offer to be an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes to offer.
    pub advertise_routes: Vec<IpNet>,
    /// Renew the node's keys with `auth_key` even though it is enrolled
    /// (after they expired, or to replace them): same node, name and
    /// address, new keys. Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_reauth: bool,
    /// As a subnet router, forward clients with their own tunnel addresses
    /// instead of masquerading them (`--snat-subnet-routes=false`). Omitted
    /// when false (SNAT, the default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_snat_subnet_routes: bool,
}

/// A command. `is_mutating` decides which callers may send it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Current state.
    Status,
    /// Enroll (if needed) and connect.
    Up(UpArgs),
    /// Disconnect and restore the host's network configuration.
    Down,
    /// `down`, then forget the enrollment and the node's keys: the next
    /// `up` needs a pre-auth key.
    Logout,
    /// Exit nodes this node may use.
    ExitNodeList,
    /// Route all internet traffic through `name`.
    ExitNodeSelect {
        /// Host label or Magic DNS name.
        name: String,
    },
    /// Stop using an exit node.
    ExitNodeOff,
    /// `exit-lan` (alias `lan-access`): toggle reaching LANs behind peers
    /// (the exit's, a subnet router's) that the policy grants.
    LanAccess {
        /// On or off.
        on: bool,
    },
    /// `local-lan`: while an exit node is in use, still reach this node's
    /// own on-link private LAN outside the tunnel.
    LocalLan {
        /// On or off.
        on: bool,
    },
    /// Lockdown mode (`rustynet set lockdown on|off`): block everything
    /// but the tunnel, with or without an exit, while disconnected and
    /// while the daemon is stopped, until an admin turns it off.
    Lockdown {
        /// On or off.
        on: bool,
    },
    /// Offer LAN prefixes.
    RouteAdvertise {
        /// Prefixes.
        cidrs: Vec<IpNet>,
    },
    /// Withdraw LAN prefixes.
    RouteWithdraw {
        /// Prefixes.
        cidrs: Vec<IpNet>,
    },
    /// Protected DNS on demand (it is always on while an exit node is
    /// selected): only Magic DNS may send DNS queries off the node.
    DnsProtect {
        /// On or off.
        on: bool,
    },
    /// Explain Magic DNS, optionally for one name.
    DnsInspect {
        /// A name to explain.
        name: Option<String>,
    },
    /// Reachability report.
    Netcheck,
    /// Probe a peer through the tunnel.
    Ping {
        /// Host label, Magic DNS name or tunnel IP.
        name: String,
        /// Ping every path the peer might have (its direct addresses too),
        /// not only the one its packets take now.
        #[serde(default)]
        all_paths: bool,
    },
    /// Which rule, route, peer and path a packet to `addr` takes now, and
    /// what the firewall does with it.
    RouteExplain {
        /// The destination.
        addr: std::net::IpAddr,
    },
    /// What this node's current map lets in from and out to a peer.
    AclExplain {
        /// Host label, Magic DNS name or tunnel IP.
        peer: String,
        /// A port to ask about.
        port: Option<u16>,
    },
}

impl Command {
    /// Whether the command changes anything (needs the admin role).
    pub fn is_mutating(&self) -> bool {
        !matches!(
            self,
            Command::Status
                | Command::ExitNodeList
                | Command::DnsInspect { .. }
                | Command::Netcheck
                | Command::Ping { .. }
                | Command::RouteExplain { .. }
                | Command::AclExplain { .. }
        )
    }

    /// Short name for logs (never includes arguments, which may be secret).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Up(_) => "up",
            Command::Down => "down",
            Command::Logout => "logout",
            Command::ExitNodeList => "exit_node_list",
            Command::ExitNodeSelect { .. } => "exit_node_select",
            Command::ExitNodeOff => "exit_node_off",
            Command::LanAccess { .. } => "lan_access",
            Command::LocalLan { .. } => "local_lan",
            Command::Lockdown { .. } => "lockdown",
            Command::RouteAdvertise { .. } => "route_advertise",
            Command::RouteWithdraw { .. } => "route_withdraw",
            Command::DnsProtect { .. } => "dns_protect",
            Command::DnsInspect { .. } => "dns_inspect",
            Command::Netcheck => "netcheck",
            Command::Ping { .. } => "ping",
            Command::RouteExplain { .. } => "route_explain",
            Command::AclExplain { .. } => "acl_explain",
        }
    }
}

/// A response frame: exactly one of `ok` and `error` is present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpcResponse {
    /// [`IPC_VERSION`].
    pub v: u16,
    /// The request's id (0 when the request could not be parsed).
    pub id: u64,
    /// Success payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    /// Failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<IpcError>,
}

impl IpcResponse {
    /// A success.
    pub fn ok(id: u64, reply: Reply) -> Self {
        Self {
            v: IPC_VERSION,
            id,
            ok: Some(reply),
            error: None,
        }
    }
    /// A failure.
    pub fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: IPC_VERSION,
            id,
            ok: None,
            error: Some(IpcError {
                code,
                message: message.into(),
            }),
        }
    }
}

/// Stable error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller's uid/gid lacks the role.
    PermissionDenied,
    /// Frame malformed, oversized or of another version.
    BadRequest,
    /// Arguments invalid (unknown name, bad CIDR, ...).
    InvalidArgument,
    /// Not allowed by the signed policy (e.g. no exit grant).
    NotAuthorized,
    /// Not possible in the current state (e.g. not enrolled).
    WrongState,
    /// Control refused or was unreachable.
    Control,
    /// Applying to the OS failed (state was rolled back).
    Apply,
    /// The daemon is busy (too many commands in flight); try again.
    Busy,
    /// Anything else.
    Internal,
}

/// Failure payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    /// Category.
    pub code: ErrorCode,
    /// One line for the operator.
    pub message: String,
}

/// Success payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Reply {
    /// `status`.
    Status(StatusDoc),
    /// `exit-node list`.
    ExitNodes(Vec<ExitNodeEntry>),
    /// `dns inspect`.
    Dns(DnsInspectDoc),
    /// `netcheck`.
    Netcheck(NetcheckDoc),
    /// `ping`.
    Ping(PingDoc),
    /// `route explain`.
    RouteExplain(crate::explain::RouteExplainDoc),
    /// `acl explain`.
    AclExplain(crate::explain::AclExplainDoc),
    /// A mutating command succeeded.
    Done {
        /// What happened.
        message: String,
    },
}

/// The five dataplane states (Phase 10 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataplaneState {
    /// Starting; nothing trusted yet.
    Init,
    /// A verified map is held.
    ControlTrusted,
    /// The map is applied to the OS.
    DataplaneApplied,
    /// Applied with an exit node selected.
    ExitActive,
    /// Traffic blocked because trust, state or health is missing.
    FailClosed,
}

impl DataplaneState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataplaneState::Init => "init",
            DataplaneState::ControlTrusted => "control_trusted",
            DataplaneState::DataplaneApplied => "dataplane_applied",
            DataplaneState::ExitActive => "exit_active",
            DataplaneState::FailClosed => "fail_closed",
        }
    }
}

fn snat_default() -> bool {
    true
}

/// `status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Dataplane state.
    pub state: DataplaneState,
    /// This node, once enrolled.
    #[serde(rename = "self")]
    pub self_node: Option<SelfStatus>,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Selected exit node's host label.
    pub exit_node: Option<String>,
    /// `exit-lan` toggle (LANs behind peers).
    pub lan_access: bool,
    /// `local-lan` toggle (this node's own LAN beside an exit).
    #[serde(default)]
    pub local_lan: bool,
    /// Lockdown mode.
    #[serde(default)]
    pub lockdown: bool,
    /// Applied generation (0 before the first).
    pub generation: u64,
    /// Tunnel engine in use and why it was chosen.
    pub backend: String,
    /// Kill switch asserted.
    pub kill_switch: bool,
    /// Protected DNS asserted.
    pub dns_protected: bool,
    /// How the host's DNS is pointed at Magic DNS, and why (`resolved`,
    /// `file`, `in-place` or `unavailable`, then the reason).
    #[serde(default)]
    pub dns_mode: String,
    /// The daemon's version (`rustynet version` shows it beside the
    /// client's).
    #[serde(default)]
    pub daemon_version: String,
    /// Why the node is failing closed or what last went wrong.
    pub error: Option<String>,
    /// Prefixes this node advertises.
    pub advertised_routes: Vec<IpNet>,
    /// Whether this node offers itself as an exit.
    pub advertise_exit_node: bool,
    /// Whether clients forwarded into this node's routes are masqueraded
    /// (`up --snat-subnet-routes`, default true).
    #[serde(default = "snat_default")]
    pub snat_subnet_routes: bool,
    /// Dataplane counters since the tunnel started.
    #[serde(default)]
    pub counters: DataplaneCounters,
    /// Relay connections.
    #[serde(default)]
    pub relays: Vec<RelayView>,
    /// The control connection: the URLs known and the one in use.
    #[serde(default)]
    pub control: ControlView,
}

/// `status`: the control connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlView {
    /// Every control URL the node is enrolled with (replicas of one
    /// control server), preferred first.
    pub urls: Vec<String>,
    /// The URL whose map stream is open; `None` while none is.
    pub in_use: Option<String>,
    /// Times the map stream moved from one URL to another since the
    /// daemon started (failing over, or back to the preferred URL).
    pub failovers: u64,
}

/// Dataplane counters shown by `status` (and exported as metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneCounters {
    /// Authenticated packets dropped because their inner source address
    /// belongs to a different peer than the one that sent them.
    pub rx_source_mismatch: u64,
    /// Path probes accepted (authentic and fresh).
    #[serde(default)]
    pub probes_accepted: u64,
    /// Path probes refused: sender is not a peer.
    #[serde(default)]
    pub probes_unknown_sender: u64,
    /// Path probes refused: failed authentication (forged or wrong key).
    #[serde(default)]
    pub probes_bad_auth: u64,
    /// Path probes refused: replayed or stale.
    #[serde(default)]
    pub probes_replayed: u64,
    /// Path probes refused: malformed.
    #[serde(default)]
    pub probes_malformed: u64,
    /// Path changes of all peers since the tunnel started.
    #[serde(default)]
    pub path_changes: u64,
}

/// `status` self section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfStatus {
    /// Host label.
    pub name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// Magic DNS name.
    pub dns_name: String,
    /// Node id.
    pub node_id: NodeId,
}

/// Path a peer's packets take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Straight UDP to the peer's endpoint.
    Direct,
    /// Through a relay.
    Relay,
    /// No working path.
    None,
}

/// `status` peer entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Host label.
    pub name: String,
    /// Magic DNS name.
    pub dns_name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// Current path.
    pub path: PathKind,
    /// Endpoint in use.
    pub endpoint: Option<SocketAddr>,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<u64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Control's view of liveness.
    pub online: bool,
    /// Usable as this node's exit.
    pub exit_node: bool,
    /// Where the path goes: the direct address, or the relay's name.
    #[serde(default)]
    pub via: Option<String>,
    /// Seconds on the current path.
    #[serde(default)]
    pub path_secs: Option<u64>,
    /// Why the path last changed (`pong`, `trust_expired`, ...).
    #[serde(default)]
    pub path_reason: Option<String>,
    /// Round trip of the last answered direct probe, in microseconds.
    #[serde(default)]
    pub rtt_us: Option<u64>,
    /// How many times the path changed (direct, relay, none).
    #[serde(default)]
    pub path_changes: u64,
    /// Encrypted bytes sent plus received directly.
    #[serde(default)]
    pub direct_bytes: u64,
    /// Encrypted bytes sent plus received through relays.
    #[serde(default)]
    pub relay_bytes: u64,
}

/// A relay connection in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayView {
    /// The relay's name.
    pub name: String,
    /// Logged in and usable.
    pub connected: bool,
    /// Keepalive round trip, microseconds.
    pub rtt_us: Option<u64>,
    /// This node's home relay.
    pub home: bool,
    /// Relayed packets travel over UDP (UDP relay mode works); else TLS.
    #[serde(default)]
    pub udp: bool,
    /// Why it is down.
    pub error: Option<String>,
}

/// `exit-node list` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitNodeEntry {
    /// Host label.
    pub name: String,
    /// Magic DNS name.
    pub dns_name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// Online per control.
    pub online: bool,
    /// Currently selected.
    pub selected: bool,
}

/// `dns inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInspectDoc {
    /// Resolver address (100.100.100.100).
    pub resolver: IpAddr,
    /// Tailnet suffix.
    pub suffix: String,
    /// Where non-tailnet names go (`exit node NAME`, `system resolvers [..]`).
    pub upstream: String,
    /// Protected DNS asserted.
    pub protected: bool,
    /// How the OS was pointed at the resolver (`resolv.conf PATH`, ...).
    pub os_config: String,
    /// Records (all, or the one asked about).
    pub records: Vec<DnsRecordView>,
    /// Split-DNS routes.
    pub split: Vec<String>,
    /// For a single name: why it resolves the way it does.
    pub explanation: Option<String>,
}

/// A record as shown by `dns inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecordView {
    /// Name.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
    /// Why it is named so.
    pub why: String,
}

/// `netcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetcheckDoc {
    /// UDP socket bound and usable.
    pub udp: bool,
    /// Local endpoints reported to control.
    pub local_endpoints: Vec<SocketAddr>,
    /// Control reachable over TLS 1.3.
    pub control_reachable: bool,
    /// Round trip to the preferred relay, if a relay is configured.
    pub relay_latency_ms: Option<u64>,
    /// Peers on a direct path.
    pub direct_peers: usize,
    /// Peers via relay.
    pub relay_peers: usize,
    /// Per binding address asked: how this node was seen.
    #[serde(default)]
    pub mapped: Vec<MappedView>,
    /// Whether the NAT mapping changes with the destination (`None`: not
    /// enough answers to tell).
    #[serde(default)]
    pub mapping_varies_by_destination: Option<bool>,
    /// `no_nat`, `endpoint_independent`, `destination_dependent`,
    /// `udp_blocked` or `unknown`.
    #[serde(default)]
    pub nat: String,
    /// Round trip to every relay.
    #[serde(default)]
    pub relays: Vec<RelayLatency>,
    /// The relay with the lowest round trip.
    #[serde(default)]
    pub preferred_relay: Option<String>,
    /// How long the check took, milliseconds.
    #[serde(default)]
    pub took_ms: u64,
}

/// One binding answer in `netcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedView {
    /// The binding address asked.
    pub server: SocketAddr,
    /// This node's address as seen from there.
    pub mapped: SocketAddr,
    /// Round trip, microseconds.
    pub rtt_us: u64,
}

/// A relay's round trip in `netcheck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLatency {
    /// The relay's name.
    pub name: String,
    /// Round trip, microseconds (`None`: not connected).
    pub rtt_us: Option<u64>,
}

/// `ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingDoc {
    /// Peer label.
    pub name: String,
    /// Peer tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// The path the answer came back on (`none` when none came).
    pub path: PathKind,
    /// The direct address or relay name the answer came through.
    #[serde(default)]
    pub via: Option<String>,
    /// Round trip in microseconds, if answered.
    pub rtt_us: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_stable() {
        let req = IpcRequest {
            v: IPC_VERSION,
            id: 7,
            cmd: Command::ExitNodeSelect {
                name: "exit".into(),
            },
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"v":1,"id":7,"cmd":{"op":"exit_node_select","name":"exit"}}"#
        );
        assert_eq!(serde_json::from_str::<IpcRequest>(&json).unwrap(), req);
    }

    #[test]
    fn force_reauth_is_omitted_when_false_and_defaults_to_false() {
        let old = r#"{"v":1,"id":2,"cmd":{"op":"up","control_url":"https://c:1","ca_cert_pem":"x","auth_key":null,"hostname":null,"advertise_exit_node":false,"advertise_routes":[]}}"#;
        let req: IpcRequest = serde_json::from_str(old).unwrap();
        let Command::Up(args) = &req.cmd else {
            panic!("not up: {req:?}");
        };
        assert!(!args.force_reauth);
        assert_eq!(serde_json::to_string(&req).unwrap(), old);
        let mut renew = args.clone();
        renew.force_reauth = true;
        let json = serde_json::to_string(&Command::Up(renew)).unwrap();
        assert!(json.contains(r#""force_reauth":true"#), "{json}");
    }

    /// A bare `up` leaves the control URL and CA empty (the saved ones);
    /// `logout` is a plain op. Both are additions: old frames still parse.
    #[test]
    fn bare_up_and_logout_wire_forms() {
        let bare = r#"{"v":1,"id":3,"cmd":{"op":"up","auth_key":null,"hostname":null,"advertise_exit_node":false,"advertise_routes":[]}}"#;
        let req: IpcRequest = serde_json::from_str(bare).unwrap();
        let Command::Up(args) = &req.cmd else {
            panic!("not up: {req:?}");
        };
        assert!(args.control_url.is_empty() && args.ca_cert_pem.is_empty());
        let logout: IpcRequest =
            serde_json::from_str(r#"{"v":1,"id":4,"cmd":{"op":"logout"}}"#).unwrap();
        assert_eq!(logout.cmd, Command::Logout);
        assert_eq!(logout.cmd.name(), "logout");
    }

    #[test]
    fn unknown_fields_and_ops_are_refused() {
        assert!(
            serde_json::from_str::<IpcRequest>(r#"{"v":1,"id":1,"cmd":{"op":"rm_rf"}}"#).is_err()
        );
        assert!(
            serde_json::from_str::<IpcRequest>(r#"{"v":1,"id":1,"cmd":{"op":"status"},"x":1}"#)
                .is_err()
        );
    }

    #[test]
    fn mutating_classification() {
        assert!(!Command::Status.is_mutating());
        assert!(Command::Down.is_mutating());
        assert!(Command::Logout.is_mutating());
        assert!(Command::LanAccess { on: true }.is_mutating());
        // Admin only: a read-only caller can neither open nor lift lockdown.
        assert!(Command::Lockdown { on: false }.is_mutating());
        assert!(Command::LocalLan { on: true }.is_mutating());
        assert!(Command::DnsProtect { on: false }.is_mutating());
        assert!(
            !Command::Ping {
                name: "a".into(),
                all_paths: false
            }
            .is_mutating()
        );
    }
}
