//! Rustynet's WireGuard adapter: the only crate that names WireGuard.
//!
//! Two engines implement [`rustynet_tunnel::TunnelBackend`]:
//! - [`UserspaceBackend`]: boringtun's `noise::Tunn` per peer, a TUN device
//!   with virtio-net offload (TSO in, GRO out), one UDP socket with GSO/GRO
//!   and `recvmmsg`, and the path manager (probes, relays, NAT traversal).
//!   The default.
//! - [`KernelBackend`]: the in-kernel implementation, configured over generic
//!   netlink; direct paths only. Chosen only when configured and available.
//!
//! [`select_backend`] picks one and says why in `info().detail`.
//! Nothing WireGuard-specific leaks upward: callers see only the tunnel types.
#![warn(missing_docs)]

mod kernel;
mod keys;
mod path;
mod userspace;

use rustynet_tunnel::TunnelBackend;

pub use kernel::KernelBackend;
pub use keys::{generate_private_key, public_key, validate_public_key};
pub use userspace::UserspaceBackend;

/// The engine the operator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// The userspace engine: direct paths, relays and NAT traversal (the
    /// path manager, probes and relay clients live in it).
    #[default]
    Userspace,
    /// The in-kernel implementation when the module is there: direct paths
    /// only (it cannot carry probes or relayed packets), so nodes behind NAT
    /// or a firewall may not be reachable.
    Kernel,
}

/// Returns the engine for `choice`, saying which and why in `info().detail`.
///
/// [`EngineChoice::Kernel`] probes for the module by creating a uniquely
/// named link of kind `wireguard` and always deleting it again; when that
/// fails the userspace engine runs and the detail carries the reason, e.g.
/// `"userspace: kernel engine asked for but unavailable (Operation not
/// supported)"`.
pub fn select_backend(choice: EngineChoice) -> Box<dyn TunnelBackend> {
    match choice {
        EngineChoice::Userspace => Box::new(UserspaceBackend::new(
            "userspace: the default (direct paths, relays and NAT traversal)".into(),
        )),
        EngineChoice::Kernel => match kernel::probe() {
            Ok(()) => Box::new(KernelBackend::new(
                "kernel: chosen by configuration (engine = kernel): direct paths only, \
                 no relay or NAT traversal"
                    .into(),
            )),
            Err(reason) => Box::new(UserspaceBackend::new(format!(
                "userspace: kernel engine asked for but unavailable ({reason})"
            ))),
        },
    }
}
