//! One simulated node: enrolls with real keys over real TLS 1.3, then holds
//! its map stream; every map is verified as the daemon does (signature with
//! the pinned control key, addressee, strictly increasing generation,
//! validity, [`crate::verify_pool`]) and what it received is recorded in its
//! [`NodeState`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand_core::{OsRng, RngCore as _};
use rustynet_control_client::ControlClient;
use rustynet_proto::control_api::{API_VERSION, RegisterRequest, SecretString};
use rustynet_proto::{
    NetmapVerifier, NodeId, NodeSigningKey, SigningPublicKey, TunnelPublicKey, VerifyPolicy,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::LoadError;
use crate::verify_pool::{Received, Submitter};

/// Enrollment attempts refused with `rate_limited` before giving up.
const MAX_RATE_LIMITED: u32 = 2_000;
/// Other failed enrollment attempts before giving up.
const MAX_ENROLL_FAILURES: u32 = 5;

/// An enrolled node: what it needs to stream.
pub struct Identity {
    /// Its id.
    pub id: NodeId,
    /// Its request-signing key.
    pub key: NodeSigningKey,
    /// The control key it pinned at enrollment.
    pub control_key: SigningPublicKey,
}

/// What enrolling one node took.
pub struct Enrolled {
    /// The node.
    pub identity: Identity,
    /// Attempts refused by the per-source enrollment rate limit.
    pub rate_limited: u32,
    /// Earlier attempts that timed out but enrolled a node all the same.
    pub orphaned: u32,
}

/// A fresh enrollment request for `hostname` and the key it registers.
fn request(auth_key: &str, hostname: &str) -> (NodeSigningKey, RegisterRequest) {
    let key = NodeSigningKey::generate(&mut OsRng);
    let mut tunnel = [0u8; 32];
    OsRng.fill_bytes(&mut tunnel);
    tunnel[0] |= 1;
    let req = RegisterRequest {
        version: API_VERSION,
        auth_key: SecretString::new(auth_key.to_owned()),
        hostname: hostname.to_owned(),
        node_key: TunnelPublicKey(tunnel),
        signing_key: key.public(),
        endpoints: vec![],
        advertise_exit_node: false,
        advertise_routes: vec![],
        path_key: None,
        renew: None,
    };
    (key, req)
}

/// Enrolls a node named `hostname` with `auth_key`, retrying when the
/// per-source rate limit refuses (that is the limit working, as for a fleet
/// behind one NAT) and a few times on other failures. An attempt that timed
/// out may have enrolled the node all the same (control then refuses the
/// retry as `duplicate_key`): the node enrolls again with fresh keys and
/// the first enrollment is counted as orphaned.
pub async fn enroll(
    client: &ControlClient,
    auth_key: &str,
    hostname: &str,
) -> Result<Enrolled, LoadError> {
    let (mut key, mut req) = request(auth_key, hostname);
    let (mut rate_limited, mut failures, mut orphaned) = (0u32, 0u32, 0u32);
    let mut maybe_enrolled = false;
    loop {
        match client.register(&key, &req).await {
            Ok(resp) => {
                return Ok(Enrolled {
                    identity: Identity {
                        id: resp.node_id,
                        key,
                        control_key: resp.control_signing_key,
                    },
                    rate_limited,
                    orphaned,
                });
            }
            Err(e) if e.code() == Some("rate_limited") && rate_limited < MAX_RATE_LIMITED => {
                rate_limited += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) if e.code() == Some("duplicate_key") && maybe_enrolled => {
                orphaned += 1;
                maybe_enrolled = false;
                (key, req) = request(auth_key, hostname);
            }
            Err(e) if failures < MAX_ENROLL_FAILURES && e.code().is_none() => {
                failures += 1;
                maybe_enrolled = true;
                tracing::warn!(error = %e, hostname, "enrollment failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
            }
            Err(e) => {
                return Err(LoadError::Enroll {
                    hostname: hostname.to_owned(),
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// What one node has received, and since the last [`NodeState::mark`].
#[derive(Debug, Default, Clone)]
pub struct NodeState {
    /// Generation of the last verified map (the high-water mark).
    pub generation: u64,
    /// Verified maps received.
    pub maps: u32,
    /// Lines read from the stream, verified yet or not.
    pub lines: u32,
    /// Maps whose content equals the previous map on the same stream: sent
    /// although nothing in the node's map changed.
    pub unchanged: u32,
    /// Maps refused because their generation was not above the last one.
    pub backwards: u32,
    /// Maps refused for any other reason (signature, addressee, ...).
    pub verify_failures: u32,
    /// Streams opened after the first (the previous one ended or failed).
    pub reconnects: u32,
    /// Whether a stream is open now.
    pub streaming: bool,
    /// When the last map arrived.
    pub last_at: Option<Instant>,
    /// Hash of the last map's content (the netmap, not the envelope).
    pub content: u64,
    /// Whether the last map lists the probe node as a peer.
    pub sees_probe: bool,
    /// Content hash when the mark was set.
    pub mark_content: u64,
    /// Maps received since the mark.
    pub since_mark: u32,
    /// When the first map with content other than at the mark arrived.
    pub changed_at: Option<Instant>,
}

impl NodeState {
    /// Starts observing a change: maps from now on are counted, and the
    /// first one with new content is timed.
    pub fn mark(&mut self) {
        self.mark_content = self.content;
        self.since_mark = 0;
        self.changed_at = None;
    }
}

/// The states of every node of a fleet, one lock each.
pub type States = Arc<[Mutex<NodeState>]>;

/// Why streams ended or failed to open, with how often: when streams drop,
/// the run says whether control closed them or the connection failed, and
/// how.
pub type StreamEnds = Arc<Mutex<BTreeMap<String, u64>>>;

fn count_end(ends: &StreamEnds, reason: String) {
    *ends
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reason)
        .or_default() += 1;
}

/// Locks a node state (a panicked holder leaves consistent counters).
pub fn lock(state: &Mutex<NodeState>) -> MutexGuard<'_, NodeState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a held stream reports to.
pub struct Reporting {
    /// Every node's state; this node's is `states[slot]`.
    pub states: States,
    /// This node's index.
    pub slot: usize,
    /// Why streams ended.
    pub ends: StreamEnds,
    /// Where the lines it reads are verified and recorded.
    pub verify: Submitter,
}

/// Holds `identity`'s map stream until `stop`, reopening it after a second
/// when it ends; every line is stamped when it arrived and handed to the
/// verifying threads ([`crate::verify_pool`]), which record it in
/// `states[slot]`.
pub async fn hold_stream(
    client: ControlClient,
    identity: Identity,
    report: Reporting,
    mut stop: watch::Receiver<bool>,
) {
    let Reporting {
        states,
        slot,
        ends,
        verify,
    } = report;
    let verifier = Arc::new(NetmapVerifier::new(
        identity.control_key,
        identity.id,
        VerifyPolicy::default(),
    ));
    let mut opened = 0u32;
    loop {
        let since = lock(&states[slot]).generation;
        let stream = tokio::select! {
            s = client.map_stream(&identity.key, identity.id, since) => s,
            _ = stop.changed() => return,
        };
        match stream {
            Ok(mut stream) => {
                {
                    let mut s = lock(&states[slot]);
                    s.streaming = true;
                    if opened > 0 {
                        s.reconnects += 1;
                    }
                }
                opened += 1;
                let mut first_on_stream = true;
                loop {
                    let line = tokio::select! {
                        l = stream.next_line() => l,
                        _ = stop.changed() => return,
                    };
                    match line {
                        Ok(Some(line)) => {
                            lock(&states[slot]).lines += 1;
                            verify.submit(Received {
                                slot,
                                verifier: verifier.clone(),
                                line,
                                at: Instant::now(),
                                first_on_stream,
                            });
                            first_on_stream = false;
                        }
                        Ok(None) => {
                            count_end(&ends, "control ended the stream".into());
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(node = %identity.id, error = %e, "map stream failed");
                            count_end(&ends, format!("stream failed: {e}"));
                            break;
                        }
                    }
                }
                lock(&states[slot]).streaming = false;
            }
            Err(e) => {
                tracing::debug!(node = %identity.id, error = %e, "cannot open map stream");
                count_end(&ends, format!("cannot open: {e}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}
