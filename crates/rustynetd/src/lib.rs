//! `rustynetd`: turns the verified, signed netmap into a working encrypted
//! mesh and keeps it fail-closed.
//!
//! Shape (see docs/architecture.md): pure decisions ([`plan`],
//! [`dataplane_state`]) feed a transaction ([`apply`]) that drives effects
//! behind traits ([`route_manager`], [`sysctl_manager`], [`dns_manager`], the
//! tunnel backend, the firewall), all owned by one actor ([`engine`]).
//! [`control_client`] and [`ipc_server`] are async tasks that talk to it
//! through [`messages`], a leaf module none of them owns.
#![warn(missing_docs)]

pub mod apply;
pub mod audit_log;
pub mod backend_manager;
pub mod config;
pub mod control_client;
pub mod control_failover;
pub mod dataplane_state;
pub mod dns_manager;
pub mod dns_os;
pub mod early_boot;
pub mod endpoints;
pub mod engine;
pub mod explain;
pub mod health_monitor;
pub mod ipc_server;
pub mod messages;
pub mod metrics;
pub mod ping;
pub mod plan;
pub mod privileges;
pub mod route_manager;
pub mod state_store;
pub mod sysctl_manager;

// A map the verifier accepts must fit the tunnel engine: control checks maps
// against the verifier's limits before signing, so these bounds must not be
// looser than the engine's (or a signed map would fail to apply everywhere).
const _: () = assert!(rustynet_proto::netmap::MAX_PEERS <= rustynet_tunnel::MAX_PEERS);
const _: () =
    assert!(rustynet_proto::netmap::MAX_ALLOWED_IPS <= rustynet_tunnel::MAX_ALLOWED_IPS_PER_PEER);
