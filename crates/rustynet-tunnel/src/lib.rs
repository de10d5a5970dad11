//! The tunnel backend contract of Rustynet, with no protocol named.
//!
//! The daemon drives its encrypted dataplane only through [`TunnelBackend`]:
//! create an interface, reconcile the peer set declaratively, read stats, stop.
//! Engines (a userspace one, a kernel one) live in an adapter crate; keeping the
//! contract here means the rest of Rustynet can be tested against
//! [`FakeBackend`] and the protocol can be swapped without touching the daemon.
//!
//! What belongs here besides the types is the validation every engine must
//! apply identically ([`PeerSet`]): unambiguous cryptokey routing (no prefix
//! owned by two peers), bounded peer counts, canonical prefixes. Engines call it
//! before they touch the OS, so a refused change leaves no trace.
#![warn(missing_docs)]

mod allowed_ips;
mod backend;
mod config;
mod error;
mod fake;
mod key;
mod paths;
mod peerset;
mod stats;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use allowed_ips::AllowedIps;
pub use backend::TunnelBackend;
pub use config::{InterfaceConfig, MAX_IFNAME_LEN, MAX_MTU, MIN_MTU, PeerConfig, validate_ifname};
pub use error::TunnelError;
pub use fake::{FakeBackend, FakeCall, FakeHandle};
pub use key::TunnelPrivateKey;
pub use paths::{
    MappedAddr, NetcheckDone, NetcheckReport, PathConfig, PathKind, PathSecret, PeerPath, PingDone,
    PingReport, ProbeCounters, RelayLogin, RelayStatus,
};
pub use peerset::{MAX_ALLOWED_IPS_PER_PEER, MAX_CANDIDATES, MAX_PEERS, PeerDiff, PeerSet};
pub use rustynet_proto::TunnelPublicKey;
pub use stats::{BackendInfo, PeerStats, TunnelStats};
