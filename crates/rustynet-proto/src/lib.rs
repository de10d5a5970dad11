//! Wire types shared by every Rustynet component.
//!
//! Nothing here does I/O. The crate owns four contracts:
//! - the control API (enrollment, node-authenticated requests, streamed maps),
//! - the signed envelope that carries a netmap from control to a node, and the
//!   verifier a node runs before it touches its dataplane,
//! - the daemon's local IPC frames,
//! - the relay ticket control signs and a relay verifies at login.
//!
//! Every type is versioned; a peer that speaks another major version is refused
//! with a typed error instead of being half-understood.
#![warn(missing_docs)]

pub mod control_api;
pub mod endpoint;
pub mod envelope;
pub mod explain;
pub mod handover;
pub mod ipc;
mod ipfmt;
pub mod keys;
pub mod keyseal;
pub mod limits;
pub mod names;
pub mod netmap;
pub mod relay;
pub mod verify;

pub use envelope::{SealedBody, SignedBody, SignedEnvelope};
pub use keys::{
    CertPin, KeyError, NodeSigningKey, PathPublicKey, Signature, SigningPublicKey, TunnelPublicKey,
};
pub use netmap::{
    DnsConfig, DnsRecord, ExitGrant, FilterRule, LanGrant, Netmap, NodeId, PeerInfo, PortRange,
    Proto, SelfInfo, SplitDnsRoute,
};
pub use verify::{NetmapVerifier, VerifiedNetmap, VerifyError, VerifyPolicy};
