//! Verifies what the simulated nodes receive, on low-priority threads of
//! their own.
//!
//! A real node verifies its map on its own CPU: parsing and checking a
//! 10,000-node map costs it a few hundred microseconds, once. The generator
//! does that for every simulated node on the CPUs the server under test
//! runs on, so a change that sends 10,000 maps had the generator take about
//! four times the server's CPU time, in the middle of the burst being
//! measured. So a node's stream task only reads a line and stamps when it
//! arrived (the node then holds its signed map); the line is verified here,
//! in arrival order per node, at a lower scheduling priority (nice +10), and recorded
//! with its arrival time. Every map is still verified before it counts, and
//! the scenario waits for this backlog to drain before it judges a change.

use std::hash::{DefaultHasher, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use rustynet_control_client::parse_frame;
use rustynet_proto::control_api::StreamFrame;
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{NetmapVerifier, NodeId, VerifyError};
use tokio::time::Instant;

use crate::sim_node::{NodeState, States, lock};

/// How much lower the verifying threads run than the rest of the generator
/// (and the server it started): the server gets the CPUs first while a
/// burst is in flight.
const NICENESS: libc::c_int = 10;

/// One line a node read from its stream.
pub struct Received {
    /// The node's index.
    pub slot: usize,
    /// Its verifier (pinned control key, its id).
    pub verifier: Arc<NetmapVerifier>,
    /// The line, unparsed.
    pub line: Bytes,
    /// When the node had read it whole.
    pub at: Instant,
    /// Whether it is the first line of its stream.
    pub first_on_stream: bool,
}

/// The verifying threads.
pub struct VerifyPool {
    shards: Vec<mpsc::Sender<Received>>,
    pending: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl VerifyPool {
    /// One thread per CPU, each owning the nodes whose index falls to it
    /// (so one node's maps are verified in the order they arrived).
    /// `probe`: the node whose presence in each map is recorded.
    pub fn start(states: States, probe: NodeId) -> Self {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        let pending = Arc::new(AtomicUsize::new(0));
        let (mut shards, mut threads) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (tx, rx) = mpsc::channel::<Received>();
            let (states, pending) = (states.clone(), pending.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("verify-{i}"))
                .spawn(move || {
                    lower_priority();
                    for received in rx {
                        record(received, &states, probe);
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a verifying thread");
                    continue;
                }
            }
            shards.push(tx);
        }
        Self {
            shards,
            pending,
            threads,
        }
    }

    /// A handle for a node's stream task.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            shards: self.shards.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Lines read but not verified yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Verifies what is left and stops the threads (once every submitter is
    /// gone too).
    pub fn finish(self) {
        drop(self.shards);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Hands lines to the pool.
#[derive(Clone)]
pub struct Submitter {
    shards: Vec<mpsc::Sender<Received>>,
    pending: Arc<AtomicUsize>,
}

impl Submitter {
    /// Queues `received` for verification.
    pub fn submit(&self, received: Received) {
        let Some(shard) = self.shards.get(received.slot % self.shards.len().max(1)) else {
            return;
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        if shard.send(received).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Lowers this thread's priority by [`NICENESS`] from the generator's own
/// (on Linux, `nice` changes the calling thread only).
fn lower_priority() {
    // SAFETY: nice has no memory-safety preconditions; a refusal leaves the
    // thread's priority as it was, which only makes the run less fair.
    let _ = unsafe { libc::nice(NICENESS) };
}

/// Verifies one received line as the daemon does and records it (or the
/// refusal) in the node's state, with the time it arrived.
fn record(received: Received, states: &States, probe: NodeId) {
    let Some(state) = states.get(received.slot) else {
        return;
    };
    let envelope = match parse_frame(&received.line) {
        Ok(StreamFrame::Map { envelope, .. }) => envelope,
        Ok(StreamFrame::Keepalive) => return,
        Err(e) => {
            tracing::warn!(error = %e, "unparsable stream line");
            lock(state).verify_failures += 1;
            return;
        }
    };
    let high_water = lock(state).generation;
    let verified = received.verifier.verify(
        envelope,
        GenerationRule::After(high_water),
        rustynet_control::now_unix(),
    );
    let mut s = lock(state);
    match verified {
        Ok(map) => {
            let mut hasher = DefaultHasher::new();
            hasher.write(&serde_json::to_vec(map.netmap()).unwrap_or_default());
            let content = hasher.finish();
            note_map(&mut s, &received, content, map.generation());
            s.sees_probe = map.netmap().peers.iter().any(|p| p.node_id == probe);
        }
        Err(VerifyError::Replayed { .. }) => s.backwards += 1,
        Err(e) => {
            tracing::warn!(error = %e, "map refused by the verifier");
            s.verify_failures += 1;
        }
    }
}

fn note_map(s: &mut NodeState, received: &Received, content: u64, generation: u64) {
    if !received.first_on_stream && s.maps > 0 && content == s.content {
        s.unchanged += 1;
    }
    s.generation = generation;
    s.maps += 1;
    s.last_at = Some(received.at);
    s.content = content;
    s.since_mark += 1;
    if s.changed_at.is_none() && content != s.mark_content {
        s.changed_at = Some(received.at);
    }
}
