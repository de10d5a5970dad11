//! The simulated fleet: enrolls N nodes spread over several loopback source
//! addresses, holds their map streams on one runtime (a task per node, no
//! thread per node) and answers questions about what they received.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustynet_control_client::ControlClient;
use rustynet_proto::control_api::UpdateRequest;
use rustynet_proto::{NodeId, NodeSigningKey};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::LoadError;
use crate::sim_node::{
    Identity, NodeState, Reporting, States, StreamEnds, enroll, hold_stream, lock,
};
use crate::verify_pool::VerifyPool;

/// Enrollments in flight at once.
const ENROLL_CONCURRENCY: usize = 16;
/// Map streams being opened at once (each a TLS handshake and a first map).
const OPEN_CONCURRENCY: usize = 128;

/// The `k`th loopback source address: 127.1.X.Y, never 127.0.0.1 (where
/// the server listens, so the two never share a port range).
pub fn source_ip(k: usize) -> IpAddr {
    let k = u32::try_from(k).unwrap_or(u32::MAX) % (250 * 250);
    let [hi, lo] = [(k / 250) as u8, (k % 250 + 1) as u8];
    IpAddr::V4(Ipv4Addr::new(127, 1, hi, lo))
}

/// A node to enroll: its number, host label, pre-auth key and control URL.
pub struct Planned {
    /// Host label.
    pub hostname: String,
    /// The pre-auth key enrolling it.
    pub auth_key: Arc<str>,
    /// Which control URL (replica) it enrolls and streams through.
    pub target: usize,
}

/// Enrollment figures.
#[derive(Debug, Clone, Copy)]
pub struct EnrollReport {
    /// Wall time for all of them.
    pub elapsed: Duration,
    /// Attempts refused by the per-source rate limit (retried).
    pub rate_limited: u64,
    /// Enrollments whose answer timed out (the node enrolled again).
    pub orphaned: u64,
}

/// The fleet.
pub struct Fleet {
    /// Each node's received maps.
    pub states: States,
    /// Each node's id (same order as `states`).
    pub ids: Vec<NodeId>,
    /// Why streams ended (or could not open), and how often.
    pub ends: StreamEnds,
    identities: Vec<Option<Identity>>,
    clients: Vec<ControlClient>,
    /// The probe node's key and client, for changes it makes itself.
    probe: Option<(NodeId, NodeSigningKey, ControlClient)>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Verifies what the nodes receive (started with the streams).
    verify: Option<VerifyPool>,
}

impl Fleet {
    /// Enrolls `plan`'s nodes; node i connects from source address
    /// `i / per_source`, to `urls[plan[i].target]`.
    pub async fn enroll(
        plan: Vec<Planned>,
        urls: &[String],
        ca_pem: &str,
        per_source: usize,
    ) -> Result<(Self, EnrollReport), LoadError> {
        let per_source = per_source.max(1);
        let sources = plan.len().div_ceil(per_source).max(1);
        // One client per (source, replica): clients are cheap to clone and
        // share one TLS configuration.
        let mut clients = Vec::with_capacity(sources * urls.len());
        for k in 0..sources {
            for url in urls {
                let client = ControlClient::new(url, ca_pem)
                    .map_err(|e| LoadError::Setup(e.to_string()))?
                    .with_local_ip(source_ip(k));
                clients.push(client);
            }
        }
        let client_of = |i: usize, target: usize| (i / per_source) * urls.len() + target;
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
        let mut set = JoinSet::new();
        for (i, p) in plan.iter().enumerate() {
            let client = clients[client_of(i, p.target)].clone();
            let (key, host) = (p.auth_key.clone(), p.hostname.clone());
            let gate = gate.clone();
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                (i, enroll(&client, &key, &host).await)
            });
        }
        let mut identities: Vec<Option<Identity>> = (0..plan.len()).map(|_| None).collect();
        let (mut rate_limited, mut orphaned) = (0u64, 0u64);
        let mut done = 0usize;
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined.map_err(|e| LoadError::Setup(e.to_string()))?;
            let enrolled = result?;
            rate_limited += u64::from(enrolled.rate_limited);
            orphaned += u64::from(enrolled.orphaned);
            identities[i] = Some(enrolled.identity);
            done += 1;
            if done.is_multiple_of(1000) {
                tracing::info!(enrolled = done, elapsed = ?started.elapsed(), "enrolling");
            }
        }
        let ids = identities
            .iter()
            .map(|id| id.as_ref().map_or(NodeId(0), |i| i.id))
            .collect();
        let states: States = (0..plan.len())
            .map(|_| Mutex::new(NodeState::default()))
            .collect();
        let (stop, _) = watch::channel(false);
        let report = EnrollReport {
            elapsed: started.elapsed(),
            rate_limited,
            orphaned,
        };
        // Client index per node, kept in `clients` order for `open`.
        let per_node: Vec<ControlClient> = plan
            .iter()
            .enumerate()
            .map(|(i, p)| clients[client_of(i, p.target)].clone())
            .collect();
        Ok((
            Self {
                states,
                ids,
                ends: StreamEnds::default(),
                identities,
                clients: per_node,
                probe: None,
                stop,
                tasks: JoinSet::new(),
                verify: None,
            },
            report,
        ))
    }

    /// Opens every node's map stream, a bounded number at a time (each
    /// waits for its first map before the next opens), and returns once
    /// all have a map or `deadline` passed.
    pub async fn open_streams(&mut self, probe_slot: usize, deadline: Duration) {
        let probe = self.ids.get(probe_slot).copied().unwrap_or(NodeId(0));
        if let Some(Some(identity)) = self.identities.get(probe_slot) {
            let key = NodeSigningKey::from_seed(&identity.key.seed());
            self.probe = Some((identity.id, key, self.clients[probe_slot].clone()));
        }
        let pool = VerifyPool::start(self.states.clone(), probe);
        let submitter = pool.submitter();
        self.verify = Some(pool);
        let gate = Arc::new(Semaphore::new(OPEN_CONCURRENCY));
        let until = Instant::now() + deadline;
        for slot in 0..self.identities.len() {
            let Some(identity) = self.identities[slot].take() else {
                continue;
            };
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let states = self.states.clone();
            let client = self.clients[slot].clone();
            let stop = self.stop.subscribe();
            let report = Reporting {
                states: states.clone(),
                slot,
                ends: self.ends.clone(),
                verify: submitter.clone(),
            };
            self.tasks
                .spawn(hold_stream(client, identity, report, stop));
            // The permit is released when the node has read its first map
            // (verified later, off this runtime), or after a while, so one
            // stuck node does not stall the rest.
            tokio::spawn(async move {
                let _permit = permit;
                let give_up = Instant::now() + Duration::from_secs(20);
                while lock(&states[slot]).lines == 0 && Instant::now() < give_up {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            if Instant::now() > until {
                break;
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        self.wait_until(left, |s| s.maps > 0).await;
    }

    /// The probe node reports new endpoints (`/v1/update`) through its
    /// own replica, as a node whose address changed does.
    pub async fn probe_update(&self, req: &UpdateRequest) -> Result<(), LoadError> {
        let Some((id, key, client)) = &self.probe else {
            return Err(LoadError::Setup("no probe node".into()));
        };
        client
            .update(key, *id, req)
            .await
            .map_err(|e| LoadError::Admin(format!("probe update: {e}")))
    }

    /// Waits until every node satisfies `done` or `deadline` passes;
    /// returns how many do.
    pub async fn wait_until(&self, deadline: Duration, done: impl Fn(&NodeState) -> bool) -> usize {
        let until = Instant::now() + deadline;
        loop {
            let count = self.count(&done);
            if count == self.states.len() || Instant::now() >= until {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no node has received a map for `quiet` and every map
    /// received is verified (or `deadline` passed): the server has sent
    /// everything it was going to.
    pub async fn wait_quiet(&self, quiet: Duration, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        loop {
            let last = self.states.iter().filter_map(|s| lock(s).last_at).max();
            let now = Instant::now();
            if self.unverified() == 0 && last.is_none_or(|at| now.duration_since(at) >= quiet) {
                return true;
            }
            if now >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lines received but not verified yet.
    pub fn unverified(&self) -> usize {
        self.verify.as_ref().map_or(0, VerifyPool::pending)
    }

    /// Nodes satisfying `f`.
    pub fn count(&self, f: impl Fn(&NodeState) -> bool) -> usize {
        self.states.iter().filter(|s| f(&lock(s))).count()
    }

    /// Sum of `f` over every node.
    pub fn sum(&self, f: impl Fn(&NodeState) -> u64) -> u64 {
        self.states.iter().map(|s| f(&lock(s))).sum()
    }

    /// Marks every node (see [`NodeState::mark`]).
    pub fn mark(&self) {
        for s in self.states.iter() {
            lock(s).mark();
        }
    }

    /// A copy of every node's state.
    pub fn snapshot(&self) -> Vec<NodeState> {
        self.states.iter().map(|s| lock(s).clone()).collect()
    }

    /// Closes every stream and waits for the tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some(pool) = self.verify.take() {
            // Joins threads: off the runtime.
            let _ = tokio::task::spawn_blocking(move || pool.finish()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_distinct_loopback_addresses() {
        let a: Vec<IpAddr> = (0..1000).map(source_ip).collect();
        let unique: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(unique.len(), 1000);
        assert!(a.iter().all(|ip| ip.is_loopback()));
        assert!(!a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
