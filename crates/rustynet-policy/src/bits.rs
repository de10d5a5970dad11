//! A fixed-size bitset over node indices. Selectors resolve to these once per
//! [`crate::PolicyIndex`], so a view is a handful of word-wise ORs instead of
//! a scan of every node against every rule.

/// A set of node indices `0..len`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Bits {
    words: Vec<u64>,
}

impl Bits {
    /// The empty set over `len` nodes.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Adds `i`.
    pub fn set(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Removes `i`.
    pub fn unset(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// Whether `i` is in the set.
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Adds every index in `lo..hi`.
    pub fn set_range(&mut self, lo: usize, hi: usize) {
        let mut i = lo;
        while i < hi {
            if i.is_multiple_of(64) && i + 64 <= hi {
                if let Some(w) = self.words.get_mut(i / 64) {
                    *w = u64::MAX;
                }
                i += 64;
            } else {
                self.set(i);
                i += 1;
            }
        }
    }

    /// Adds every member of `other` (same length).
    pub fn or_assign(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// Keeps only the members also in `other` (same length).
    pub fn and_assign(&mut self, other: &Bits) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= *b;
        }
    }

    /// Whether the set has a member other than `except`.
    pub fn any_except(&self, except: usize) -> bool {
        self.words.iter().enumerate().any(|(wi, &w)| {
            let w = if wi == except / 64 {
                w & !(1 << (except % 64))
            } else {
                w
            };
            w != 0
        })
    }

    /// Number of members.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + bit)
            })
        })
    }
}

/// Lists of node indices keyed by a small integer (a user, host or tag
/// number), stored in two flat vectors instead of one allocation per key.
#[derive(Debug, Default)]
pub(crate) struct Csr {
    start: Vec<usize>,
    items: Vec<usize>,
}

impl Csr {
    /// Groups `(key, item)` pairs (keys `< keys`) by key, keeping the pairs'
    /// order within each key. `pairs` is walked twice.
    pub fn build<I>(keys: usize, pairs: I) -> Self
    where
        I: Iterator<Item = (usize, usize)> + Clone,
    {
        let mut start = vec![0usize; keys + 1];
        for (key, _) in pairs.clone() {
            if let Some(count) = start.get_mut(key + 1) {
                *count += 1;
            }
        }
        for k in 0..keys {
            start[k + 1] += start[k];
        }
        let mut fill = start.clone();
        let mut items = vec![0usize; start[keys]];
        for (key, item) in pairs {
            if let Some(pos) = fill.get_mut(key).filter(|_| key < keys) {
                items[*pos] = item;
                *pos += 1;
            }
        }
        Self { start, items }
    }

    /// The items under `key` (empty for an unknown key).
    pub fn get(&self, key: usize) -> &[usize] {
        match (self.start.get(key), self.start.get(key + 1)) {
            (Some(&lo), Some(&hi)) => &self.items[lo..hi],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a = Bits::new(200);
        assert_eq!(a.iter().next(), None);
        a.set(3);
        a.set(130);
        a.set(500); // out of range: ignored
        assert!(a.get(3) && a.get(130) && !a.get(4) && !a.get(500));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![3, 130]);
        assert!(a.any_except(3));
        a.unset(130);
        assert!(!a.any_except(3));
        let mut b = Bits::new(200);
        b.set_range(60, 140);
        assert_eq!(b.iter().count(), 80);
        assert!(b.get(60) && b.get(139) && !b.get(140) && !b.get(59));
        a.or_assign(&b);
        assert_eq!(a.iter().next(), Some(3));
        assert_eq!(a.iter().count(), 81);
        assert_eq!(a.count(), 81);
        let mut c = Bits::new(200);
        c.set(3);
        c.set(139);
        c.set(150);
        a.and_assign(&c);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![3, 139]);
    }

    #[test]
    fn csr_groups_by_key() {
        let pairs = [(2, 10), (0, 11), (2, 12), (9, 13), (1, 14)];
        let csr = Csr::build(3, pairs.iter().copied());
        assert_eq!(csr.get(0), &[11]);
        assert_eq!(csr.get(1), &[14]);
        assert_eq!(csr.get(2), &[10, 12]);
        assert_eq!(csr.get(3), &[] as &[usize], "out-of-range keys are dropped");
        assert_eq!(Csr::default().get(0), &[] as &[usize]);
    }
}
