//! Rustynet's WireGuard adapter: the only crate that names WireGuard.
//!
//! Two engines implement [`rustynet_tunnel::TunnelBackend`]:
//! - [`UserspaceBackend`]: boringtun's `noise::Tunn` per peer, a TUN device
//!   with virtio-net offload (TSO in, GRO out), and one UDP socket with
//!   GSO/GRO and `recvmmsg`. The default on hosts without the kernel module.
//! - [`KernelBackend`]: the in-kernel implementation, configured over generic
//!   netlink, chosen when a link of kind `wireguard` can be created.
//!
//! [`select_backend`] probes and picks one, and says why in `info().detail`.
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

/// Probes for the kernel module and returns the engine to use.
///
/// The probe creates a uniquely named link of kind `wireguard` and always
/// deletes it again. If that fails for any reason, the userspace engine is
/// chosen and its `info().detail` carries the reason, e.g.
/// `"userspace: kernel module unavailable (Operation not supported)"`.
pub fn select_backend() -> Box<dyn TunnelBackend> {
    match kernel::probe() {
        Ok(()) => Box::new(KernelBackend::new(
            "kernel: module available (probe link created and deleted)".into(),
        )),
        Err(reason) => Box::new(UserspaceBackend::new(format!(
            "userspace: kernel module unavailable ({reason})"
        ))),
    }
}
