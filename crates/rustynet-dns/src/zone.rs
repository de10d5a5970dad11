//! Which path a name takes: one of our two authoritative zones (the Magic DNS
//! suffix and the reverse zone of 100.64.0.0/10), a split-DNS route, or the
//! upstream. Shared by [`ResolverConfig::decide`] and
//! [`ResolverConfig::explain`] so the explanation can never disagree with
//! the answer.
//!
//! [`ResolverConfig::decide`]: crate::ResolverConfig::decide
//! [`ResolverConfig::explain`]: crate::ResolverConfig::explain

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::rr::Name;
use rustynet_proto::names;

use crate::config::ResolverConfig;

/// First octet of the tunnel range and the range of its second octet
/// (100.64.0.0/10 = 100.64.x.x ..= 100.127.x.x).
const TUNNEL_FIRST_OCTET: u8 = 100;
const TUNNEL_SECOND_OCTETS: std::ops::RangeInclusive<u8> = 64..=127;

/// An authoritative zone this resolver answers without forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zone {
    /// The tailnet suffix.
    Magic,
    /// `<octet>.100.in-addr.arpa`, one of the /16 reverse zones of 100.64.0.0/10.
    Reverse(u8),
}

/// What a name is inside one of our zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node<'c> {
    /// The zone apex (SOA lives here).
    Apex,
    /// A Magic DNS name with records (indexes into `dns.records`).
    Names(&'c [usize]),
    /// A tunnel address with records (PTR targets, indexes into `dns.records`).
    Ptr(&'c [usize]),
    /// A name that exists only because names below it exist (NODATA).
    Empty,
    /// A name that does not exist (NXDOMAIN).
    Missing,
}

/// The path a name takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'c> {
    /// Answered locally.
    Local(Zone, Node<'c>),
    /// Forwarded to a split-DNS route's resolvers.
    Split {
        /// The route's domain labels.
        domain: &'c [String],
        /// Its resolvers (possibly none: fail closed).
        resolvers: &'c [SocketAddr],
    },
    /// Forwarded per [`crate::Upstream`].
    Upstream,
}

/// The lowercase labels of a name, leftmost first (the root is implicit).
pub(crate) fn lower_labels(name: &Name) -> Vec<Vec<u8>> {
    name.iter()
        .map(|label| label.to_ascii_lowercase())
        .collect()
}

impl ResolverConfig {
    /// Classifies a name given as lowercase labels.
    pub(crate) fn route(&self, labels: &[Vec<u8>]) -> Route<'_> {
        if let Some(relative) = strip_tail(labels, &self.suffix) {
            return Route::Local(Zone::Magic, self.magic_node(relative));
        }
        if let Some((octet, relative)) = reverse_zone(labels) {
            return Route::Local(Zone::Reverse(octet), self.reverse_node(octet, relative));
        }
        for (domain, resolvers) in &self.split {
            if strip_tail(labels, domain).is_some() {
                return Route::Split { domain, resolvers };
            }
        }
        Route::Upstream
    }

    fn magic_node(&self, relative: &[Vec<u8>]) -> Node<'_> {
        if relative.is_empty() {
            return Node::Apex;
        }
        // A label with bytes outside a-z0-9- cannot belong to any record, and
        // refusing it here keeps the dotted key below unambiguous.
        let mut key = String::new();
        for label in relative {
            let Ok(text) = std::str::from_utf8(label) else {
                return Node::Missing;
            };
            if names::validate_label(text, names::MAX_LABEL).is_err() {
                return Node::Missing;
            }
            key.push_str(text);
            key.push('.');
        }
        key.push_str(&self.dns.suffix);
        if let Some(indexes) = self.by_name.get(&key) {
            Node::Names(indexes)
        } else if self.interior.contains(&key) {
            Node::Empty
        } else {
            Node::Missing
        }
    }

    fn reverse_node(&self, second: u8, relative: &[Vec<u8>]) -> Node<'_> {
        match relative {
            [] => Node::Apex,
            [third] => match octet(third) {
                Some(third) if self.reverse_interior.contains(&[second, third]) => Node::Empty,
                _ => Node::Missing,
            },
            [fourth, third] => match (octet(third), octet(fourth)) {
                (Some(third), Some(fourth)) => {
                    let ip = Ipv4Addr::new(TUNNEL_FIRST_OCTET, second, third, fourth);
                    self.by_tunnel_ip
                        .get(&ip)
                        .map_or(Node::Missing, |indexes| Node::Ptr(indexes))
                }
                _ => Node::Missing,
            },
            _ => Node::Missing,
        }
    }
}

/// The labels before `tail`, if `labels` ends with `tail` and is longer or equal.
fn strip_tail<'l>(labels: &'l [Vec<u8>], tail: &[String]) -> Option<&'l [Vec<u8>]> {
    let split = labels.len().checked_sub(tail.len())?;
    let (head, rest) = labels.split_at(split);
    labels_eq(rest, tail).then_some(head)
}

fn labels_eq(labels: &[Vec<u8>], expected: &[String]) -> bool {
    labels.len() == expected.len()
        && labels
            .iter()
            .zip(expected)
            .all(|(a, b)| a.as_slice() == b.as_bytes())
}

/// `(second octet, labels before the zone)` when the name is in one of the
/// reverse zones of 100.64.0.0/10.
fn reverse_zone(labels: &[Vec<u8>]) -> Option<(u8, &[Vec<u8>])> {
    let [head @ .., second, first, in_addr, arpa] = labels else {
        return None;
    };
    if arpa.as_slice() != b"arpa"
        || in_addr.as_slice() != b"in-addr"
        || octet(first) != Some(TUNNEL_FIRST_OCTET)
    {
        return None;
    }
    let second = octet(second).filter(|o| TUNNEL_SECOND_OCTETS.contains(o))?;
    Some((second, head))
}

/// A decimal octet label in canonical form ("7", not "07").
fn octet(label: &[u8]) -> Option<u8> {
    if label.is_empty()
        || label.len() > 3
        || !label.iter().all(u8::is_ascii_digit)
        || (label.len() > 1 && label[0] == b'0')
    {
        return None;
    }
    std::str::from_utf8(label).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octets_are_canonical_decimal() {
        assert_eq!(octet(b"0"), Some(0));
        assert_eq!(octet(b"7"), Some(7));
        assert_eq!(octet(b"255"), Some(255));
        assert_eq!(octet(b"256"), None);
        assert_eq!(octet(b"07"), None);
        assert_eq!(octet(b""), None);
        assert_eq!(octet(b"1a"), None);
        assert_eq!(octet(b"1000"), None);
    }

    #[test]
    fn reverse_zone_bounds() {
        let l = |s: &str| -> Vec<Vec<u8>> { s.split('.').map(|x| x.as_bytes().to_vec()).collect() };
        assert_eq!(
            reverse_zone(&l("64.100.in-addr.arpa")).map(|z| z.0),
            Some(64)
        );
        assert_eq!(
            reverse_zone(&l("127.100.in-addr.arpa")).map(|z| z.0),
            Some(127)
        );
        assert!(reverse_zone(&l("63.100.in-addr.arpa")).is_none());
        assert!(reverse_zone(&l("128.100.in-addr.arpa")).is_none());
        assert!(reverse_zone(&l("100.in-addr.arpa")).is_none());
        assert!(reverse_zone(&l("64.10.in-addr.arpa")).is_none());
        let full = l("7.0.64.100.in-addr.arpa");
        let (zone, head) = reverse_zone(&full).unwrap();
        assert_eq!(zone, 64);
        assert_eq!(head.len(), 2);
    }
}
