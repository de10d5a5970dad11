//! The Rustynet lab: real processes in real network namespaces.
//!
//! [`Lab`] builds a topology (a router, "the internet" on TEST-NET ranges,
//! nodes, an exit node's LAN), [`Cluster`] runs the real control server and
//! one real `rustynetd` per node in it, [`Capture`] records a node's physical
//! link with tcpdump. Everything a lab creates is uniquely named and removed
//! when it is dropped, even when a test fails. Used by the end-to-end tests
//! and by the demo (`rustynet-lab demo`).
#![warn(missing_docs)]

pub mod bins;
pub mod capture;
pub mod cluster;
pub mod dnsflood;
pub mod fake_control;
pub mod netns;
pub mod paths;
pub mod paths_bench;
pub mod report;
pub mod resolved;
pub mod services;
pub mod topology;

pub use capture::Capture;
pub use cluster::{Cluster, Node};
pub use netns::Netns;
pub use topology::{Lab, NodeSpec};

/// Fails (never skips) when the lab cannot run here, saying why.
pub fn require_lab() {
    let missing: Vec<&str> = ["ip", "nft", "tcpdump", "ping"]
        .into_iter()
        .filter(|tool| !netns::have(tool))
        .collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root && missing.is_empty() && std::path::Path::new("/dev/net/tun").exists(),
        "the network-namespace lab needs root, /dev/net/tun and {missing:?} (run ./scripts/test.sh as root, which installs them)"
    );
}
