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

/// The addresses to delete, then to add (in that order), so the interface
/// ends up with exactly `desired`, each family in the order given.
///
/// Order matters: for a route without a gateway the kernel takes the
/// interface's first IPv4 address as the source. When an address has to
/// go in before ones already present (a fail-closed period kept only the
/// Magic DNS address, and the node's tunnel address comes back), those are
/// deleted and re-added after it, or the node would send from the wrong
/// address and its peers would drop every packet.
pub(crate) fn address_plan(desired: &[IpNet], current: &[IpNet]) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut remove = Vec::new();
    let mut add = Vec::new();
    for v4 in [true, false] {
        let family = |n: &&IpNet| matches!(n, IpNet::V4(_)) == v4;
        let mut want: Vec<IpNet> = Vec::new();
        for net in desired.iter().filter(family) {
            if !want.contains(net) {
                want.push(*net);
            }
        }
        let mut kept: Vec<IpNet> = Vec::new();
        for net in current.iter().filter(family) {
            if want.contains(net) && !kept.contains(net) {
                kept.push(*net);
            } else {
                remove.push(*net);
            }
        }
        let in_place = kept
            .iter()
            .zip(&want)
            .take_while(|(have, wanted)| have == wanted)
            .count();
        remove.extend(&kept[in_place..]);
        add.extend(&want[in_place..]);
    }
    (remove, add)
}

#[cfg(test)]
mod address_order {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("prefix")).collect()
    }

    #[test]
    fn keeps_the_given_order() {
        let desired = nets(&["100.64.0.1/32", "100.100.100.100/32"]);
        // Already right: nothing to do.
        assert_eq!(address_plan(&desired, &desired), (vec![], vec![]));
        // Appending keeps what is there.
        assert_eq!(
            address_plan(&desired, &nets(&["100.64.0.1/32"])),
            (vec![], nets(&["100.100.100.100/32"]))
        );
        // Inserting in front re-adds what would otherwise come first.
        assert_eq!(
            address_plan(&desired, &nets(&["100.100.100.100/32"])),
            (nets(&["100.100.100.100/32"]), desired.clone())
        );
        // Stale addresses go; a wrong order is repaired.
        assert_eq!(
            address_plan(
                &desired,
                &nets(&["100.64.0.9/32", "100.100.100.100/32", "100.64.0.1/32"])
            ),
            (
                nets(&["100.64.0.9/32", "100.100.100.100/32", "100.64.0.1/32"]),
                desired.clone()
            )
        );
    }

    #[test]
    fn families_are_ordered_independently() {
        let desired = nets(&["fd00::1/128", "100.64.0.1/32", "100.100.100.100/32"]);
        let current = nets(&["100.64.0.1/32", "100.100.100.100/32", "fd00::1/128"]);
        assert_eq!(address_plan(&desired, &current), (vec![], vec![]));
        let (remove, add) = address_plan(&desired, &nets(&["fd00::2/128", "100.64.0.1/32"]));
        assert_eq!(remove, nets(&["fd00::2/128"]));
        assert_eq!(add, nets(&["100.100.100.100/32", "fd00::1/128"]));
    }
}
