//! Turning selectors into node sets. Each node costs one lookup of its user
//! (and host label and tags where the policy names any) in the policy's
//! [`NameTable`], so resolution is linear in the node table.

use ipnet::IpNet;

use crate::bits::{Bits, Csr};
use crate::index::NodeFacts;
use crate::model::{NameTable, Policy, Selector};

/// Node indices by user, host label and effective tag, for one node table.
pub(crate) struct Resolver<'p> {
    names: &'p NameTable,
    len: usize,
    /// Tunnel addresses in ascending order, by node index.
    ips: &'p [u32],
    by_user: Csr,
    by_host: Csr,
    /// Effective tags only: the node's user owns the tag.
    by_tag: Csr,
}

impl<'p> Resolver<'p> {
    pub fn new(policy: &'p Policy, nodes: &[&NodeFacts], ips: &'p [u32]) -> Self {
        let names = &policy.names;
        let user_of: Vec<Option<usize>> = nodes
            .iter()
            .map(|n| names.users.get(n.user.as_str()).copied())
            .collect();
        let by_user = Csr::build(
            names.users.len(),
            user_of
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.map(|u| (u, i))),
        );
        let by_host = if names.hosts.is_empty() {
            Csr::default()
        } else {
            let host_of: Vec<Option<usize>> = nodes
                .iter()
                .map(|n| names.hosts.get(n.hostname.as_str()).copied())
                .collect();
            Csr::build(
                names.hosts.len(),
                host_of
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| h.map(|h| (h, i))),
            )
        };
        let mut tagged: Vec<(usize, usize)> = Vec::new();
        for (i, (n, user)) in nodes.iter().zip(&user_of).enumerate() {
            let Some(user) = user else { continue };
            let first = tagged.len();
            for tag in &n.tags {
                if let Some((t, owners)) = names.tags.get(tag.as_str()) {
                    // A tag listed twice on one node counts once.
                    if owners.binary_search(user).is_ok() && !tagged[first..].contains(&(*t, i)) {
                        tagged.push((*t, i));
                    }
                }
            }
        }
        let by_tag = Csr::build(names.tags.len(), tagged.iter().copied());
        Self {
            names,
            len: nodes.len(),
            ips,
            by_user,
            by_host,
            by_tag,
        }
    }

    /// Adds the nodes `sel` matches to `out`.
    pub fn add(&self, sel: &Selector, out: &mut Bits) {
        let set_all = |list: &[usize], out: &mut Bits| list.iter().for_each(|&i| out.set(i));
        match sel {
            Selector::All => out.set_range(0, self.len),
            Selector::User(u) => {
                if let Some(&u) = self.names.users.get(u.as_str()) {
                    set_all(self.by_user.get(u), out);
                }
            }
            Selector::Group(g) => {
                for &member in self.names.groups.get(g.as_str()).into_iter().flatten() {
                    set_all(self.by_user.get(member), out);
                }
            }
            Selector::Tag(t) => {
                if let Some((t, _)) = self.names.tags.get(t.as_str()) {
                    set_all(self.by_tag.get(*t), out);
                }
            }
            Selector::Node(h) => {
                if let Some(&h) = self.names.hosts.get(h.as_str()) {
                    set_all(self.by_host.get(h), out);
                }
            }
            Selector::Prefix(IpNet::V4(net)) => {
                let lo = self.ips.partition_point(|&ip| ip < net.network().to_bits());
                let hi = self
                    .ips
                    .partition_point(|&ip| ip <= net.broadcast().to_bits());
                out.set_range(lo, hi);
            }
            // Tunnel addresses are IPv4; an IPv6 prefix names no node.
            Selector::Prefix(IpNet::V6(_)) => {}
        }
    }
}
