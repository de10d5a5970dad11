//! Least privilege: once start-up is done the daemon keeps only the
//! capabilities its work needs and drops the rest from every set, including
//! the bounding set, so neither it nor the `nft` it runs can regain them.
//!
//! Kept: CAP_NET_ADMIN (netlink routes and rules, nftables, the TUN device,
//! SO_MARK), CAP_NET_RAW (`rustynet ping`), CAP_NET_BIND_SERVICE (Magic DNS
//! binds port 53 when the first generation is applied).

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

/// Drops every capability not in [`KEEP`]. Returns what remains effective.
pub fn drop_to_network_admin() -> Result<Vec<String>, PrivilegeError> {
    let keep: CapsHashSet = KEEP.into_iter().collect();
    let err = |e: caps::errors::CapsError| PrivilegeError(e.to_string());
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).map_err(err)? {
            caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
        }
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err)?;
    caps::set(None, CapSet::Effective, &kept).map_err(err)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err)?;
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)
        .map_err(err)?
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    names.sort();
    Ok(names)
}
