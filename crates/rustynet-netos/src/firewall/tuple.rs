//! Tuple set lookups (nftables concatenations): one rule that matches
//! `(saddr, daddr, dport)` against a set of elements instead of one rule per
//! element.
//!
//! Why: a per-node ACL compiles to one allow per peer. As rules, the kernel
//! walks them linearly for every new packet and `nft` loads them one by one
//! (a 1,000-peer table took ~250 ms to replace); as one set lookup it is a
//! single step per packet and loads in a fraction of the time.
//!
//! The kernel refuses a concatenated set whose elements overlap (`File
//! exists`), so [`disjoint_groups`] splits elements into groups without
//! overlaps; each group becomes one rule.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{FirewallError, PortProto, PortRange};
use crate::IpFamily;

/// One field of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleField {
    /// Source address (`ip saddr` / `ip6 saddr`).
    Saddr(IpFamily),
    /// Destination address.
    Daddr(IpFamily),
    /// Destination port of TCP or UDP (implies the protocol).
    Dport(PortProto),
}

/// One value of an element, for the field at the same position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleValue {
    /// An address prefix (for an address field of its family).
    Net(IpNet),
    /// A port range (for a port field).
    Ports(PortRange),
}

impl TupleValue {
    /// The value as an inclusive numeric interval (addresses as integers).
    fn span(&self) -> (u128, u128) {
        match self {
            TupleValue::Net(IpNet::V4(n)) => (
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            ),
            TupleValue::Net(IpNet::V6(n)) => (u128::from(n.network()), u128::from(n.broadcast())),
            TupleValue::Ports(r) => (u128::from(r.first), u128::from(r.last)),
        }
    }
}

/// Whether two elements share a packet: every field's intervals intersect.
fn overlaps(a: &[TupleValue], b: &[TupleValue]) -> bool {
    a.iter().zip(b).all(|(x, y)| {
        let ((x0, x1), (y0, y1)) = (x.span(), y.span());
        x0 <= y1 && y0 <= x1
    })
}

/// Splits `elements` (deduplicated) into groups in which no two elements
/// overlap, as the kernel requires of one concatenated set. Deterministic;
/// disjoint input (the usual case: one host per peer) stays one group.
///
/// Elements are taken in order of their first field; an element can only
/// overlap earlier ones whose first-field interval reaches its start, so each
/// group keeps just those "active" elements to compare with.
pub fn disjoint_groups(mut elements: Vec<Vec<TupleValue>>) -> Vec<Vec<Vec<TupleValue>>> {
    elements.sort();
    elements.dedup();
    elements.sort_by_key(|e| e.first().map(TupleValue::span));
    struct Group {
        elements: Vec<Vec<TupleValue>>,
        active: Vec<usize>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for element in elements {
        let start = element.first().map_or(0, |v| v.span().0);
        let mut placed = false;
        for g in &mut groups {
            let members = &g.elements;
            g.active
                .retain(|&i| members[i].first().is_some_and(|v| v.span().1 >= start));
            if g.active
                .iter()
                .all(|&i| !overlaps(&g.elements[i], &element))
            {
                g.active.push(g.elements.len());
                g.elements.push(element.clone());
                placed = true;
                break;
            }
        }
        if !placed {
            groups.push(Group {
                elements: vec![element],
                active: vec![0],
            });
        }
    }
    groups.into_iter().map(|g| g.elements).collect()
}

/// The address family a tuple's fields imply, if any.
pub(crate) fn tuple_family(fields: &[TupleField]) -> Option<IpFamily> {
    fields.iter().find_map(|f| match f {
        TupleField::Saddr(fam) | TupleField::Daddr(fam) => Some(*fam),
        TupleField::Dport(_) => None,
    })
}

/// The port protocol a tuple's fields imply, if any.
pub(crate) fn tuple_port_proto(fields: &[TupleField]) -> Option<PortProto> {
    fields.iter().find_map(|f| match f {
        TupleField::Dport(p) => Some(*p),
        _ => None,
    })
}

/// Structural checks: 1–4 fields of one family and one port protocol, at
/// least one element, every element one well-typed value per field.
pub(crate) fn validate_tuple(
    fields: &[TupleField],
    elements: &[Vec<TupleValue>],
    at: &str,
) -> Result<(), FirewallError> {
    let invalid = |msg: &str| Err(FirewallError::InvalidRuleset(format!("{at}: {msg}")));
    if fields.is_empty() || fields.len() > 4 {
        return invalid("a tuple has 1 to 4 fields");
    }
    let families: Vec<IpFamily> = fields
        .iter()
        .filter_map(|f| match f {
            TupleField::Saddr(fam) | TupleField::Daddr(fam) => Some(*fam),
            TupleField::Dport(_) => None,
        })
        .collect();
    if families.windows(2).any(|w| w[0] != w[1]) {
        return invalid("a tuple mixes IPv4 and IPv6 fields");
    }
    if fields
        .iter()
        .filter(|f| matches!(f, TupleField::Dport(_)))
        .count()
        > 1
    {
        return invalid("a tuple has at most one port field");
    }
    if elements.is_empty() {
        return invalid("empty tuple set");
    }
    for element in elements {
        if element.len() != fields.len() {
            return invalid("a tuple element does not have one value per field");
        }
        for (field, value) in fields.iter().zip(element) {
            let ok = match (field, value) {
                (TupleField::Saddr(fam) | TupleField::Daddr(fam), TupleValue::Net(n)) => {
                    IpFamily::of_net(n) == *fam
                }
                (TupleField::Dport(_), TupleValue::Ports(r)) => r.first <= r.last,
                _ => false,
            };
            if !ok {
                return invalid("a tuple value does not fit its field (type, family or range)");
            }
        }
    }
    // What the kernel would refuse mid-transaction, refused here with a
    // reason instead.
    let groups = disjoint_groups(elements.to_vec());
    if groups.len() != 1 || groups.iter().map(Vec::len).sum::<usize>() != elements.len() {
        return invalid("tuple elements overlap or repeat (split them with disjoint_groups)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> TupleValue {
        TupleValue::Net(s.parse().unwrap())
    }

    fn ports(a: u16, b: u16) -> TupleValue {
        TupleValue::Ports(PortRange { first: a, last: b })
    }

    fn all_disjoint(group: &[Vec<TupleValue>]) -> bool {
        group
            .iter()
            .enumerate()
            .all(|(i, a)| group[i + 1..].iter().all(|b| !overlaps(a, b)))
    }

    #[test]
    fn hosts_with_distinct_sources_stay_one_group() {
        let elements: Vec<Vec<TupleValue>> = (2..200u8)
            .map(|i| vec![net(&format!("100.64.0.{i}/32")), ports(22, 22)])
            .collect();
        let groups = disjoint_groups(elements.clone());
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].len(), elements.len());
    }

    #[test]
    fn overlaps_are_split_and_nothing_is_lost() {
        let elements = vec![
            vec![net("100.64.0.2/32"), net("10.0.0.0/8"), ports(22, 22)],
            vec![net("100.64.0.2/32"), net("10.1.0.0/16"), ports(22, 22)],
            vec![net("100.64.0.0/10"), net("10.1.2.0/24"), ports(20, 30)],
            vec![net("100.64.0.3/32"), net("10.1.2.0/24"), ports(25, 35)],
            vec![net("100.64.0.3/32"), net("10.1.2.0/24"), ports(25, 35)],
            vec![net("100.64.0.9/32"), net("192.168.0.0/16"), ports(1, 65535)],
        ];
        let groups = disjoint_groups(elements.clone());
        assert!(groups.len() >= 3, "{groups:?}");
        assert!(groups.iter().all(|g| all_disjoint(g)), "{groups:?}");
        let mut flat: Vec<_> = groups.concat();
        flat.sort();
        let mut want = elements;
        want.sort();
        want.dedup();
        assert_eq!(flat, want);
    }

    #[test]
    fn grouping_is_deterministic() {
        let a = vec![
            vec![net("100.64.0.3/32"), ports(1, 10)],
            vec![net("100.64.0.0/10"), ports(5, 6)],
            vec![net("100.64.0.2/32"), ports(1, 10)],
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(disjoint_groups(a), disjoint_groups(b));
    }

    #[test]
    fn validation_names_the_problem() {
        let v4 = [
            TupleField::Saddr(IpFamily::V4),
            TupleField::Dport(PortProto::Tcp),
        ];
        assert!(validate_tuple(&v4, &[vec![net("10.0.0.1/32"), ports(1, 2)]], "r").is_ok());
        for (fields, elements) in [
            (&v4[..], vec![]),
            (&v4[..], vec![vec![net("10.0.0.1/32")]]),
            (&v4[..], vec![vec![net("fd00::1/128"), ports(1, 2)]]),
            (&v4[..], vec![vec![ports(1, 2), net("10.0.0.1/32")]]),
            (&v4[..], vec![vec![net("10.0.0.1/32"), ports(9, 2)]]),
            (
                &[
                    TupleField::Saddr(IpFamily::V4),
                    TupleField::Daddr(IpFamily::V6),
                ][..],
                vec![vec![net("10.0.0.1/32"), net("fd00::1/128")]],
            ),
            (&[][..], vec![vec![]]),
            (
                &v4[..],
                vec![
                    vec![net("10.0.0.0/8"), ports(1, 20)],
                    vec![net("10.1.0.0/16"), ports(10, 30)],
                ],
            ),
            (
                &v4[..],
                vec![
                    vec![net("10.0.0.1/32"), ports(1, 2)],
                    vec![net("10.0.0.1/32"), ports(1, 2)],
                ],
            ),
        ] {
            let err = validate_tuple(fields, &elements, "chain \"input\" rule 3");
            assert!(
                matches!(&err, Err(FirewallError::InvalidRuleset(m)) if m.starts_with("chain \"input\" rule 3: ")),
                "{fields:?} {elements:?}: {err:?}"
            );
        }
    }
}
