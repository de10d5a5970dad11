//! Map generations handed out in blocks, without ever going backwards for a
//! node that moved between replicas.
//!
//! Reserving a generation is a write to the shared database; a policy edit
//! touching 10,000 nodes would make 10,000 of them, one after another. So a
//! replica reserves a block and hands numbers out of it. The catch: a block
//! reserved *before* a node's stream opened here may hold numbers below the
//! generation another replica gave that node just before it moved. The rule
//! that makes blocks safe: a stream only takes numbers from a block whose
//! reservation began after the stream opened. Everything the node saw was
//! reserved before it opened this stream, and the database hands out ranges
//! that only grow, so such a block lies above all of it. Streams opened
//! during a burst of connections share the next block, so even a connect
//! storm costs one reservation per wave, not one per node.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreError};

/// Generations reserved at a time.
pub const BLOCK: u64 = 4096;

/// When a stream opened, in reservation epochs ([`Generations::opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Opened(u64);

/// The replica's generation source.
pub struct Generations {
    store: Arc<dyn Store>,
    /// Bumped when a reservation begins.
    epoch: AtomicU64,
    pool: Mutex<Pool>,
}

struct Pool {
    left: Range<u64>,
    /// The epoch the block's reservation began in.
    epoch: u64,
}

impl Generations {
    /// An empty pool over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            epoch: AtomicU64::new(0),
            pool: Mutex::new(Pool {
                left: 0..0,
                epoch: 0,
            }),
        }
    }

    /// Marks a stream opening now.
    pub fn opened(&self) -> Opened {
        Opened(self.epoch.load(Ordering::SeqCst))
    }

    /// A fresh generation for a stream opened at `opened`: above every
    /// generation the store issued before that stream opened.
    pub fn next(&self, opened: Opened) -> Result<u64, StoreError> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.epoch <= opened.0 || pool.left.is_empty() {
            // Bumped before the database is asked, so a stream opening
            // while this reservation is in flight cannot count on it.
            let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            pool.left = self.store.reserve_generations(BLOCK)?;
            pool.epoch = epoch;
        }
        let generation = pool.left.start;
        pool.left.start += 1;
        Ok(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn store(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
        Arc::new(SqliteStore::create(&dir.path().join(name), "x.internal").unwrap())
    }

    #[test]
    fn numbers_come_from_one_block_for_streams_opened_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let gens = Generations::new(store(&dir, "a.db"));
        let opened: Vec<Opened> = (0..100).map(|_| gens.opened()).collect();
        let got: Vec<u64> = opened.iter().map(|o| gens.next(*o).unwrap()).collect();
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "one block, in order"
        );
    }

    /// The database is shared by replicas; here one SQLite store stands in
    /// for it and `reserve_generations` on it directly is "the other
    /// replica" giving a node a generation before the node moves here.
    #[test]
    fn a_node_that_moved_here_never_gets_an_older_generation() {
        let dir = tempfile::tempdir().unwrap();
        let shared = store(&dir, "shared.db");
        let here = Generations::new(shared.clone());
        // This replica reserved a block early (another node's map).
        let early = here.next(here.opened()).unwrap();
        // The other replica then gives our node a generation.
        let theirs = shared.reserve_generations(1).unwrap().start;
        assert!(theirs > early);
        // The node moves here: its stream opens now.
        let opened = here.opened();
        let ours = here.next(opened).unwrap();
        assert!(ours > theirs, "{ours} is not above {theirs}");
        // Later maps on the same stream keep increasing.
        let again = here.next(opened).unwrap();
        assert!(again > ours);
    }

    #[test]
    fn an_exhausted_block_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let gens = Generations::new(store(&dir, "a.db"));
        let opened = gens.opened();
        let mut last = 0;
        for _ in 0..(BLOCK + 10) {
            let g = gens.next(opened).unwrap();
            assert!(g > last);
            last = g;
        }
    }
}
