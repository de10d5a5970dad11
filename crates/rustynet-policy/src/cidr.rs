//! Prefix arithmetic the compiler needs: parsing policy CIDRs strictly,
//! refusing routes that could hijack the tunnel or the host, intersecting
//! prefixes, and turning address sets into exact, minimal CIDR lists.
//!
//! "Exact" matters: an aggregated list covers precisely the addresses that
//! went in, never a neighbour, so merging can not widen a rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Prefixes no advertised route may overlap, with why. The default routes
/// (`/0`) are refused separately: every route overlaps them.
const FORBIDDEN: [(IpNet, &str); 11] = [
    (v4(0, 0, 0, 0, 8), "the unspecified network 0.0.0.0/8"),
    (v4(100, 64, 0, 0, 10), "the tunnel range 100.64.0.0/10"),
    (v4(127, 0, 0, 0, 8), "loopback 127.0.0.0/8"),
    (v4(169, 254, 0, 0, 16), "link-local 169.254.0.0/16"),
    (v4(224, 0, 0, 0, 4), "multicast 224.0.0.0/4"),
    (v4(255, 255, 255, 255, 32), "broadcast 255.255.255.255/32"),
    (v6(0, 128), "the unspecified address ::/128"),
    (v6(1, 128), "loopback ::1/128"),
    (v6(0xffff_0000_0000, 96), "IPv4-mapped ::ffff:0:0/96"),
    (v6(0xfe80 << 112, 10), "link-local fe80::/10"),
    (v6(0xff00 << 112, 8), "multicast ff00::/8"),
];

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(bits: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from_bits(bits), len))
}

/// Parses an IP address (as a host prefix) or a CIDR. Host bits must be zero:
/// `10.0.0.5/8` is refused rather than guessed at.
pub(crate) fn parse_prefix(text: &str) -> Result<IpNet, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Why `route` may never be approved, or `None` if it is an acceptable LAN route.
pub(crate) fn forbidden_route(route: IpNet) -> Option<String> {
    if route.prefix_len() == 0 {
        return Some(format!("{route} is a default route"));
    }
    FORBIDDEN
        .iter()
        .find(|(bad, _)| overlaps(route, *bad))
        .map(|(_, why)| format!("{route} overlaps {why}"))
}

/// Whether `route` lies entirely inside a forbidden range, so no sub-prefix of
/// it could ever be approved.
pub(crate) fn never_approvable(route: IpNet) -> Option<&'static str> {
    FORBIDDEN
        .iter()
        .find(|(bad, _)| bad.contains(&route))
        .map(|(_, why)| *why)
}

/// Whether two prefixes share an address. For prefixes that means one
/// contains the other; different families never overlap.
pub(crate) fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b) || b.contains(&a)
}

/// The addresses in both prefixes, which is again a prefix (the longer one) or nothing.
pub(crate) fn intersect(a: IpNet, b: IpNet) -> Option<IpNet> {
    if a.contains(&b) {
        Some(b)
    } else if b.contains(&a) {
        Some(a)
    } else {
        None
    }
}

/// The host prefix of a tunnel address.
pub(crate) fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(ip))
}

/// Builds an exact CIDR list from IPv4 addresses given in ascending order
/// (duplicates allowed) plus arbitrary extra prefixes. The result is sorted,
/// non-overlapping and minimal.
pub(crate) fn aggregate(sorted_v4: impl IntoIterator<Item = u32>, extra: &[IpNet]) -> Vec<IpNet> {
    let mut v4: Vec<(u128, u128)> = Vec::new();
    let mut unsorted_v4 = false;
    for ip in sorted_v4 {
        let ip = u128::from(ip);
        match v4.last_mut() {
            Some((lo, hi)) if *lo <= ip && ip <= *hi + 1 => *hi = (*hi).max(ip),
            last => {
                // Out-of-order input is still handled exactly, just more slowly.
                unsorted_v4 |= last.is_some_and(|(lo, _)| ip < *lo);
                v4.push((ip, ip));
            }
        }
    }
    let mut v6: Vec<(u128, u128)> = Vec::new();
    for net in extra {
        match net {
            IpNet::V4(n) => {
                unsorted_v4 = true;
                v4.push((
                    u128::from(n.network().to_bits()),
                    u128::from(n.broadcast().to_bits()),
                ));
            }
            IpNet::V6(n) => v6.push((n.network().to_bits(), n.broadcast().to_bits())),
        }
    }
    if unsorted_v4 {
        merge_ranges(&mut v4);
    }
    merge_ranges(&mut v6);
    let mut out = Vec::with_capacity(v4.len() + v6.len());
    for &(lo, hi) in &v4 {
        push_cidrs(lo, hi, 32, &mut out);
    }
    for &(lo, hi) in &v6 {
        push_cidrs(lo, hi, 128, &mut out);
    }
    out
}

/// Sorts inclusive ranges and merges overlapping or adjacent ones.
fn merge_ranges(ranges: &mut Vec<(u128, u128)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match merged.last_mut() {
            Some((_, last_hi)) if lo <= last_hi.saturating_add(1) => *last_hi = (*last_hi).max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    *ranges = merged;
}

/// Appends the minimal prefixes covering exactly `lo..=hi` in a `bits`-bit
/// address family (32 or 128).
fn push_cidrs(mut lo: u128, hi: u128, bits: u32, out: &mut Vec<IpNet>) {
    loop {
        let align = if lo == 0 {
            bits
        } else {
            lo.trailing_zeros().min(bits)
        };
        let span = hi - lo;
        // floor(log2(span + 1)): the largest block that still ends at or before `hi`.
        let fit = match span.checked_add(1) {
            Some(count) => 127 - count.leading_zeros(),
            None => 128,
        };
        let k = align.min(fit);
        let prefix_len = u8::try_from(bits - k).unwrap_or(0);
        let net = if bits == 32 {
            u32::try_from(lo)
                .ok()
                .and_then(|a| Ipv4Net::new(Ipv4Addr::from(a), prefix_len).ok())
                .map(IpNet::V4)
        } else {
            Ipv6Net::new(Ipv6Addr::from_bits(lo), prefix_len)
                .ok()
                .map(IpNet::V6)
        };
        // Unreachable by construction; dropping a block narrows, never widens.
        out.extend(net);
        let last = lo
            + if k == 128 {
                u128::MAX
            } else {
                (1u128 << k) - 1
            };
        if last >= hi {
            return;
        }
        lo = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> u32 {
        s.parse::<Ipv4Addr>().unwrap().to_bits()
    }

    #[test]
    fn aggregates_runs_exactly() {
        let ips = [
            "100.64.0.0",
            "100.64.0.1",
            "100.64.0.2",
            "100.64.0.3",
            "100.64.0.5",
        ];
        let got = aggregate(ips.iter().map(|s| ip(s)), &[]);
        assert_eq!(got, nets(&["100.64.0.0/30", "100.64.0.5/32"]));
        // An unaligned run of three is two prefixes, not a /30 that would widen.
        let got = aggregate(
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|s| ip(s)),
            &[],
        );
        assert_eq!(got, nets(&["10.0.0.1/32", "10.0.0.2/31"]));
    }

    #[test]
    fn aggregates_with_extras_and_v6() {
        let got = aggregate(
            [ip("10.0.0.4"), ip("10.0.0.4")],
            &nets(&["fd00::/64", "10.0.0.0/30", "fd00::/65", "0.0.0.0/0"]),
        );
        assert_eq!(got, nets(&["0.0.0.0/0", "fd00::/64"]));
        let got = aggregate([], &nets(&["::/0", "10.0.0.0/31", "10.0.0.2/31"]));
        assert_eq!(got, nets(&["10.0.0.0/30", "::/0"]));
        let got = aggregate([u32::MAX], &[]);
        assert_eq!(got, nets(&["255.255.255.255/32"]));
    }

    #[test]
    fn strict_prefix_parsing() {
        assert_eq!(parse_prefix("10.0.0.1"), Ok("10.0.0.1/32".parse().unwrap()));
        assert_eq!(parse_prefix("fd00::1"), Ok("fd00::1/128".parse().unwrap()));
        assert_eq!(
            parse_prefix("10.0.0.0/8"),
            Ok("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("10.0.0.5/8"),
            Err("\"10.0.0.5/8\" has host bits set; did you mean \"10.0.0.0/8\"?".to_owned())
        );
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("nas").is_err());
    }

    #[test]
    fn forbidden_routes() {
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "100.64.0.0/10",
            "100.100.100.100/32",
            "64.0.0.0/2",
            "127.0.0.1/32",
            "169.254.1.0/24",
            "224.0.0.0/8",
            "fe80::/64",
            "ff02::/16",
            "::1/128",
            "0.0.0.0/1",
            "::ffff:10.0.0.0/104",
        ] {
            assert!(forbidden_route(bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in [
            "10.0.0.0/8",
            "192.168.1.0/24",
            "fd00::/8",
            "2001:db8::/32",
            "100.0.0.0/10",
        ] {
            assert_eq!(forbidden_route(good.parse().unwrap()), None, "{good}");
        }
        assert_eq!(
            forbidden_route("100.64.0.0/16".parse().unwrap()),
            Some("100.64.0.0/16 overlaps the tunnel range 100.64.0.0/10".to_owned())
        );
    }

    #[test]
    fn intersection() {
        let a: IpNet = "10.0.0.0/8".parse().unwrap();
        let b: IpNet = "10.1.0.0/16".parse().unwrap();
        let c: IpNet = "192.168.0.0/16".parse().unwrap();
        assert_eq!(intersect(a, b), Some(b));
        assert_eq!(intersect(b, a), Some(b));
        assert_eq!(intersect(a, c), None);
        assert_eq!(intersect(a, "fd00::/8".parse().unwrap()), None);
    }
}
