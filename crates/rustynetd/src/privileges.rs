//! Least privilege. The daemon is meant to run as its own user
//! (`rustynet`, see deploy/systemd/rustynetd.service) with the capabilities
//! below given as ambient capabilities; started by hand as root it keeps
//! uid 0 but still drops every other capability. Either way, once start-up
//! is done the daemon keeps only [`KEEP`], sets `no_new_privs` (nothing it
//! executes can gain privileges through setuid bits or file capabilities),
//! and keeps [`KEEP`] ambient so the `nft` and `resolvectl` it runs get
//! exactly these capabilities too — as a non-root user, ambient is the only
//! way a child gets any.
//!
//! Kept: CAP_NET_ADMIN (netlink routes and rules, nftables, the TUN device,
//! SO_MARK, systemd-resolved's per-link DNS), CAP_NET_RAW (`rustynet ping`),
//! CAP_NET_BIND_SERVICE (Magic DNS binds port 53 when the first generation
//! is applied).

use caps::{CapSet, Capability, CapsHashSet};

/// Capabilities the daemon keeps.
pub const KEEP: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
];

/// Why capabilities could not be dropped.
#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities: {0}")]
pub struct PrivilegeError(String);

/// What the process holds after [`drop_to_network_admin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Real uid (0 when started by hand as root).
    pub uid: u32,
    /// Effective capabilities, sorted.
    pub effective: Vec<String>,
    /// Ambient capabilities, sorted.
    pub ambient: Vec<String>,
    /// `no_new_privs` is set.
    pub no_new_privs: bool,
}

fn names(set: CapsHashSet) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// Drops every capability not in [`KEEP`] (from the bounding set too when
/// allowed: root, or a service manager that already did it), raises [`KEEP`]
/// into the ambient set for children, and sets `no_new_privs`. Call it
/// before any thread exists: capabilities are per thread and every thread
/// started later inherits the reduced sets.
pub fn drop_to_network_admin() -> Result<Kept, PrivilegeError> {
    let keep: CapsHashSet = KEEP.into_iter().collect();
    let err = |e: caps::errors::CapsError| PrivilegeError(e.to_string());
    let can_setpcap =
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).map_err(err)?;
    if can_setpcap {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).map_err(err)? {
                caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
            }
        }
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).map_err(err)?;
    // Inheritable must hold a capability before it can be ambient.
    caps::set(None, CapSet::Inheritable, &kept).map_err(err)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err)?;
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    for cap in &kept {
        caps::raise(None, CapSet::Ambient, *cap).map_err(err)?;
    }
    set_no_new_privs()?;
    Ok(Kept {
        // SAFETY: getuid has no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        effective: names(caps::read(None, CapSet::Effective).map_err(err)?),
        ambient: names(caps::read(None, CapSet::Ambient).map_err(err)?),
        no_new_privs: no_new_privs(),
    })
}

fn set_no_new_privs() -> Result<(), PrivilegeError> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(PrivilegeError(format!(
            "no_new_privs: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Whether `no_new_privs` is set on this thread.
pub fn no_new_privs() -> bool {
    // SAFETY: prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}
