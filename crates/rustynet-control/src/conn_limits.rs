//! Open connections, bounded globally and per source.
//!
//! Every TCP connection takes a slot before its TLS handshake. A source (an
//! IPv4 address or an IPv6 /64) past its share is refused at once. When the
//! whole table is full, the oldest connection that is not carrying a map
//! stream is evicted to make room: a connection earns its place by
//! authenticating as a node and streaming, so idle or slowloris sockets from
//! any number of sources can delay a real node by at most the deadlines
//! that close them anyway, never lock it out. Only when every slot holds a
//! map stream (one per node) is a newcomer refused.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::ratelimit::source_key;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its source holds its share of connections already.
    #[error("too many connections from this source")]
    SourceFull,
    /// Every slot carries a map stream.
    #[error("connection table full of map streams")]
    Full,
}

#[derive(Debug)]
struct Entry {
    source: IpAddr,
    evict: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Ids of connections not (yet) streaming, oldest first: eviction order.
    evictable: BTreeSet<u64>,
    per_source: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.conns.remove(&id)?;
        self.evictable.remove(&id);
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

/// The table of open connections.
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    max_per_source: usize,
    inner: Mutex<Inner>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // Every change is a few map updates that cannot panic halfway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConnTable {
    /// A table of `max_total` connections, `max_per_source` from one source.
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Takes a slot for a connection from `ip`, evicting the oldest
    /// connection without a map stream if the table is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refused> {
        let source = source_key(ip);
        let mut inner = lock(&self.inner);
        if inner.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            return Err(Refused::SourceFull);
        }
        if inner.conns.len() >= self.max_total {
            let oldest = inner.evictable.first().copied().ok_or(Refused::Full)?;
            if let Some(evicted) = inner.remove(oldest) {
                evicted.evict.notify_one();
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let evict = Arc::new(Notify::new());
        inner.conns.insert(
            id,
            Entry {
                source,
                evict: evict.clone(),
            },
        );
        inner.evictable.insert(id);
        *inner.per_source.entry(source).or_insert(0) += 1;
        Ok(ConnSlot {
            table: self.clone(),
            id,
            evict,
        })
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        lock(&self.inner).conns.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's slot; freed when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    table: Arc<ConnTable>,
    id: u64,
    evict: Arc<Notify>,
}

impl ConnSlot {
    /// The connection now carries an authenticated map stream: it is never
    /// evicted to make room.
    pub fn mark_streaming(&self) {
        lock(&self.table.inner).evictable.remove(&self.id);
    }

    /// Completes when the connection was evicted and must close.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        lock(&self.table.inner).remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn is_evicted(slot: &ConnSlot) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        matches!(pin!(slot.evicted()).poll(&mut cx), Poll::Ready(()))
    }

    #[test]
    fn a_source_gets_its_share_and_no_more() {
        let t = ConnTable::new(100, 2);
        let a = t.admit(ip("192.0.2.1")).unwrap();
        let _b = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(t.admit(ip("192.0.2.1")).unwrap_err(), Refused::SourceFull);
        assert!(t.admit(ip("192.0.2.2")).is_ok());
        drop(a);
        assert!(t.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn a_full_table_evicts_the_oldest_connection_without_a_stream() {
        let t = ConnTable::new(3, 10);
        let first = t.admit(ip("192.0.2.1")).unwrap();
        first.mark_streaming();
        let idle1 = t.admit(ip("198.51.100.1")).unwrap();
        let idle2 = t.admit(ip("198.51.100.2")).unwrap();
        // Full: the newcomer takes the oldest idle slot, never the stream.
        let newcomer = t.admit(ip("203.0.113.9")).unwrap();
        assert!(is_evicted(&idle1));
        assert!(!is_evicted(&idle2) && !is_evicted(&first));
        assert_eq!(t.len(), 3);
        // Dropping the evicted slot later frees nothing twice.
        drop(idle1);
        assert_eq!(t.len(), 3);
        newcomer.mark_streaming();
        idle2.mark_streaming();
        assert_eq!(t.admit(ip("203.0.113.10")).unwrap_err(), Refused::Full);
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let t = ConnTable::new(10, 1);
        let _a = t.admit(ip("2001:db8::1")).unwrap();
        assert_eq!(t.admit(ip("2001:db8::2")).unwrap_err(), Refused::SourceFull);
        assert!(t.admit(ip("2001:db8:0:1::2")).is_ok());
    }
}
