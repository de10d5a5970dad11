//! The pure reconcile step: desired vs current, as "add these, remove those".

use std::collections::BTreeSet;

use ipnet::IpNet;

/// Splits `current` (our objects as read back, each with its comparable key
/// if it has one) against `desired`.
///
/// Returns the desired keys that are missing, and the current objects to
/// remove: those whose key is not desired, those with no key at all (stale
/// objects of ours that no longer fit the model), and duplicates of a key
/// that is already present once.
pub(crate) fn diff_sets<K: Ord + Clone, T>(
    desired: &BTreeSet<K>,
    current: Vec<(Option<K>, T)>,
) -> (Vec<K>, Vec<T>) {
    let mut present = BTreeSet::new();
    let mut remove = Vec::new();
    for (key, obj) in current {
        match key {
            Some(k) if desired.contains(&k) && !present.contains(&k) => {
                present.insert(k);
            }
            _ => remove.push(obj),
        }
    }
    let add = desired
        .iter()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect();
    (add, remove)
}

/// Whether an address on our interface is ours to manage: everything except
/// IPv6 link-local addresses, which the kernel assigns to any interface with
/// IPv6 enabled and re-creates on its own.
pub(crate) fn is_managed_address(net: &IpNet) -> bool {
    match net {
        IpNet::V4(_) => true,
        IpNet::V6(v6) => (v6.addr().segments()[0] & 0xffc0) != 0xfe80,
    }
}
