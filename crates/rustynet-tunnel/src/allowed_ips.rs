//! Longest-prefix-match table for cryptokey routing.
//!
//! Outbound, the destination address picks the peer whose allowed prefix is
//! the longest match; inbound, a decrypted packet is accepted only if its
//! source maps back to the peer it came from. A binary trie per address
//! family keeps both lookups at most 32 / 128 steps with no allocation.

use std::net::IpAddr;

use ipnet::IpNet;

const NONE: u32 = 0;

struct Node<T> {
    children: [u32; 2],
    value: Option<T>,
}

struct Trie<T> {
    /// Node 0 is the root (the zero-length prefix); child index 0 means "none".
    nodes: Vec<Node<T>>,
    bits: u8,
}

impl<T> Trie<T> {
    fn new(bits: u8) -> Self {
        Self {
            nodes: vec![Node {
                children: [NONE; 2],
                value: None,
            }],
            bits,
        }
    }

    fn bit(key: u128, depth: u8) -> usize {
        ((key >> (127 - u32::from(depth))) & 1) as usize
    }

    fn insert(&mut self, key: u128, len: u8, value: T) -> Option<T> {
        let mut node = 0usize;
        for depth in 0..len {
            let b = Self::bit(key, depth);
            let next = self.nodes[node].children[b];
            node = if next == NONE {
                let idx = self.nodes.len();
                self.nodes.push(Node {
                    children: [NONE; 2],
                    value: None,
                });
                // The trie never holds more than u32::MAX nodes: peers and
                // prefixes per peer are bounded far below that by PeerSet.
                self.nodes[node].children[b] = idx as u32;
                idx
            } else {
                next as usize
            };
        }
        self.nodes[node].value.replace(value)
    }

    fn find_node(&self, key: u128, len: u8) -> Option<usize> {
        let mut node = 0usize;
        for depth in 0..len {
            let next = self.nodes[node].children[Self::bit(key, depth)];
            if next == NONE {
                return None;
            }
            node = next as usize;
        }
        Some(node)
    }

    fn lookup(&self, key: u128) -> Option<&T> {
        let mut node = 0usize;
        let mut best = self.nodes[0].value.as_ref();
        for depth in 0..self.bits {
            let next = self.nodes[node].children[Self::bit(key, depth)];
            if next == NONE {
                break;
            }
            node = next as usize;
            if let Some(v) = self.nodes[node].value.as_ref() {
                best = Some(v);
            }
        }
        best
    }
}

/// A map from IP prefixes to values with longest-prefix-match lookup.
pub struct AllowedIps<T> {
    v4: Trie<T>,
    v6: Trie<T>,
    entries: Vec<IpNet>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn key_of(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: Trie::new(32),
            v6: Trie::new(128),
            entries: Vec::new(),
        }
    }

    /// Maps `net` (host bits ignored) to `value`; returns the value it replaced.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        let net = net.trunc();
        let key = key_of(net.network());
        let old = match net {
            IpNet::V4(n) => self.v4.insert(key, n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(key, n.prefix_len(), value),
        };
        if old.is_none() {
            self.entries.push(net);
        }
        old
    }

    /// The value of exactly this prefix, if present.
    pub fn get_exact(&self, net: &IpNet) -> Option<&T> {
        let net = net.trunc();
        let key = key_of(net.network());
        let (trie, len) = match net {
            IpNet::V4(n) => (&self.v4, n.prefix_len()),
            IpNet::V6(n) => (&self.v6, n.prefix_len()),
        };
        trie.find_node(key, len)
            .and_then(|i| trie.nodes[i].value.as_ref())
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(_) => self.v4.lookup(key_of(addr)),
            IpAddr::V6(_) => self.v6.lookup(key_of(addr)),
        }
    }

    /// Every stored prefix with its value, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> + '_ {
        self.entries
            .iter()
            .filter_map(move |net| self.get_exact(net).map(|v| (*net, v)))
    }

    /// Number of stored prefixes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no prefix is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|_| panic!("bad test prefix {s}"))
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), "exit");
        t.insert(net("100.64.0.0/10"), "mesh");
        t.insert(net("100.64.0.7/32"), "seven");
        t.insert(net("10.0.0.0/8"), "lan");
        assert_eq!(t.lookup(ip("100.64.0.7")), Some(&"seven"));
        assert_eq!(t.lookup(ip("100.64.0.8")), Some(&"mesh"));
        assert_eq!(t.lookup(ip("10.200.1.1")), Some(&"lan"));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"exit"));
        assert_eq!(t.lookup(ip("::1")), None, "families are separate");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn no_match_without_default() {
        let mut t = AllowedIps::new();
        t.insert(net("192.0.2.0/24"), 1);
        assert_eq!(t.lookup(ip("192.0.3.1")), None);
        assert_eq!(t.lookup(ip("192.0.2.255")), Some(&1));
    }

    #[test]
    fn ipv6_and_exact() {
        let mut t = AllowedIps::new();
        t.insert(net("fd7a:115c:a1e0::/48"), 1);
        t.insert(net("fd7a:115c:a1e0:ab12::1/128"), 2);
        t.insert(net("::/0"), 3);
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0:ab12::1")), Some(&2));
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0:ab12::2")), Some(&1));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&3));
        assert_eq!(t.get_exact(&net("fd7a:115c:a1e0::/48")), Some(&1));
        assert_eq!(t.get_exact(&net("fd7a:115c:a1e0::/47")), None);
        assert_eq!(t.lookup(ip("1.2.3.4")), None);
    }

    #[test]
    fn insert_replaces_and_truncates_host_bits() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.1.2.3/8"), 'a'), None);
        assert_eq!(t.insert(net("10.0.0.0/8"), 'b'), Some('a'));
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(&'b'));
        let all: Vec<_> = t.iter().collect();
        assert_eq!(all, vec![(net("10.0.0.0/8"), &'b')]);
    }

    #[test]
    fn host_routes_at_full_depth() {
        let mut t = AllowedIps::new();
        t.insert(net("255.255.255.255/32"), 1);
        t.insert(net("0.0.0.0/32"), 2);
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(&1));
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(&2));
        assert_eq!(t.lookup(ip("255.255.255.254")), None);
    }
}
