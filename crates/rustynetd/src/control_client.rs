//! The connection to control: a task that holds the map stream open, hands
//! every received envelope to the engine (which verifies it before use),
//! reports endpoints and advertisements, and reconnects with backoff.
//!
//! With several control URLs (replicas of one control server) the task
//! fails over between them: which URL it tries next, and when, is decided
//! by [`crate::control_failover::Failover`]; this shell only does the I/O.
//! A map from any replica goes through the same verification in the
//! engine (pinned signing key, generation strictly above the high-water
//! mark), so a switch can never make the node apply an older map.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rand_core::RngCore as _;
use rustynet_control_client::{ClientError, ControlClient, MapStream, is_auth_failure};
use rustynet_proto::control_api::{StreamFrame, UpdateRequest};
use rustynet_proto::{NodeId, NodeSigningKey};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::control_failover::{Failover, MAX_BACKOFF};
use crate::messages::{ControlEvent, EngineHandle, EngineMsg};
use crate::state_store::Enrollment;

/// The silence the client declares to control (which then keeps idle
/// streams alive at a third of it); three missed keepalives mean dead.
const STREAM_SILENCE: Duration = rustynet_proto::control_api::MAP_STREAM_SILENCE;
/// Control lets a node report 10 times at once, then once each 6 s.
const UPDATE_RETRY: Duration = Duration::from_secs(10);

/// One client per control URL of `enrollment`, preferred first. The
/// addresses resolved at enrollment are tried first for the preferred URL
/// only (they are its host's).
pub fn clients(enrollment: &Enrollment, fwmark: u32) -> Result<Vec<ControlClient>, ClientError> {
    enrollment
        .control_urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let client = ControlClient::new(url, &enrollment.ca_pem)?.with_fwmark(fwmark);
            Ok(if i == 0 {
                client.with_known_addrs(enrollment.control_addrs.clone())
            } else {
                client
            })
        })
        .collect()
}

/// The request failed on the way (connect, TLS, I/O, timeout, a garbled
/// answer), not by control's decision: another replica may serve it.
pub fn is_transport_failure(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_)
            | ClientError::Tls(_)
            | ClientError::Http(_)
            | ClientError::Timeout(_)
            | ClientError::Protocol(_)
    )
}

/// The running control task.
pub struct ControlTask {
    stop: watch::Sender<bool>,
    updates: mpsc::UnboundedSender<UpdateRequest>,
    reported: Mutex<Vec<SocketAddr>>,
    template: Mutex<UpdateRequest>,
}

impl ControlTask {
    /// Starts the task on `rt`. `since_generation` is the engine's
    /// high-water mark, shared so every (re)connection asks from the
    /// newest generation the engine accepted.
    pub fn start(
        rt: &Handle,
        enrollment: &Enrollment,
        signing: &NodeSigningKey,
        fwmark: u32,
        since_generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
        engine: EngineHandle,
        first_update: UpdateRequest,
    ) -> Result<Self, ClientError> {
        let clients = clients(enrollment, fwmark)?;
        let key = NodeSigningKey::from_seed(&signing.seed());
        let (stop, stop_rx) = watch::channel(false);
        let (updates, updates_rx) = mpsc::unbounded_channel();
        let reported = first_update.endpoints.clone().unwrap_or_default();
        let _ = updates.send(first_update.clone());
        let session = Session {
            clients,
            key,
            node: enrollment.node_id,
            since: since_generation,
            engine,
        };
        rt.spawn(session.run(stop_rx, updates_rx));
        Ok(Self {
            stop,
            updates,
            reported: Mutex::new(reported),
            template: Mutex::new(first_update),
        })
    }

    /// Stops the task.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }

    /// Sends an update (advertisements, toggles).
    pub fn send_update(&self, update: UpdateRequest) {
        if let Ok(mut t) = self.template.lock() {
            *t = update.clone();
        }
        let _ = self.updates.send(update);
    }

    /// Reports endpoints if they changed since the last report.
    pub fn maybe_report_endpoints(&self, endpoints: Vec<SocketAddr>) {
        let Ok(mut reported) = self.reported.lock() else {
            return;
        };
        if *reported == endpoints {
            return;
        }
        *reported = endpoints.clone();
        let mut update = self.template.lock().map(|t| t.clone()).unwrap_or_default();
        update.endpoints = Some(endpoints);
        let _ = self.updates.send(update);
    }
}

fn refused(e: &ClientError) -> Option<ControlEvent> {
    match e {
        ClientError::Refused { code, message, .. } if is_auth_failure(e) => {
            Some(ControlEvent::Refused {
                code: code.clone(),
                message: message.clone(),
            })
        }
        _ => None,
    }
}

fn jitter() -> u32 {
    rand_core::OsRng.next_u32()
}

/// How a stream ended.
enum End {
    /// The task was stopped, or the engine is gone.
    Stop,
    /// The stream broke, or a report failed on the way: try elsewhere.
    Broke(String),
    /// Control ended the stream cleanly (a newer stream of this node took
    /// over, or the replica shut down in order): try the same URL again.
    Closed(String),
    /// Control refused this node.
    Refused(ControlEvent),
}

/// What the task holds.
struct Session {
    clients: Vec<ControlClient>,
    key: NodeSigningKey,
    node: NodeId,
    since: std::sync::Arc<std::sync::atomic::AtomicU64>,
    engine: EngineHandle,
}

impl Session {
    fn since(&self) -> u64 {
        self.since.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn url(&self, index: usize) -> String {
        self.clients
            .get(index)
            .map(|c| c.url().to_string())
            .unwrap_or_default()
    }

    async fn connected(&self, index: usize, switched: bool, stop: &watch::Receiver<bool>) -> bool {
        if *stop.borrow() {
            return false;
        }
        let url = self.url(index);
        if switched {
            tracing::info!(%url, "control: now streaming from another URL");
        }
        self.engine
            .send(EngineMsg::Control(ControlEvent::Connected {
                url,
                switched,
            }))
            .await
    }

    /// Sends `update` through `client`; what is left pending (refused for
    /// now) or why the URL failed. A refusal of the node ends the attempt
    /// before a stream is opened; on an open stream (which control would
    /// end itself) the report is kept and sent again later, as before.
    async fn report(
        &self,
        client: &ControlClient,
        update: UpdateRequest,
        streaming: bool,
    ) -> Result<Option<UpdateRequest>, End> {
        match client.update(&self.key, self.node, &update).await {
            Ok(()) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %e, url = %client.url(), "cannot report to control");
                if let Some(event) = refused(&e).filter(|_| !streaming) {
                    return Err(End::Refused(event));
                }
                if is_transport_failure(&e) {
                    return Err(End::Broke(format!("{}: {e}", client.url())));
                }
                Ok(Some(update))
            }
        }
    }

    async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        mut updates: mpsc::UnboundedReceiver<UpdateRequest>,
    ) {
        let mut failover = Failover::new(self.clients.len());
        let mut pending: Option<UpdateRequest> = None;
        loop {
            let attempt = failover.next_attempt(Instant::now().into_std());
            // A stopped task must not act: the engine may already run its
            // successor, whose stream to the same control replaced this
            // one's (control closes the older), which is no failure.
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(attempt.at.into()) => {}
            }
            if *stop.borrow() {
                return;
            }
            let index = attempt.url;
            let Some(client) = self.clients.get(index) else {
                return;
            };
            while let Ok(u) = updates.try_recv() {
                pending = Some(u);
            }
            let mut end = None;
            if let Some(update) = pending.take() {
                let reported = tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    r = self.report(client, update, false) => r,
                };
                match reported {
                    Ok(left) => pending = left,
                    Err(e) => end = Some(e),
                }
            }
            let end = match end {
                Some(end) => end,
                // Given up at once when stopped: a stream this task opened
                // after its successor opened one would replace that one.
                None => match tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    r = client.map_stream(&self.key, self.node, self.since()) => r,
                } {
                    Ok(stream) => {
                        let now = Instant::now().into_std();
                        let switched = failover.opened(index, now);
                        if !self.connected(index, switched, &stop).await {
                            return;
                        }
                        self.stream(stream, &mut failover, &mut stop, &mut updates, &mut pending)
                            .await
                    }
                    Err(e) => match refused(&e) {
                        Some(event) => End::Refused(event),
                        None => End::Broke(format!("{}: {e}", client.url())),
                    },
                },
            };
            if *stop.borrow() {
                return;
            }
            let now = Instant::now().into_std();
            // The stream may have moved to the preferred URL meanwhile.
            let index = failover.open_url().unwrap_or(index);
            let event = match end {
                End::Stop => return,
                End::Broke(reason) => {
                    failover.failed(index, now, jitter());
                    ControlEvent::Disconnected(reason)
                }
                End::Closed(reason) => {
                    failover.ended(index, now, jitter());
                    ControlEvent::Disconnected(reason)
                }
                End::Refused(event) => {
                    failover.failed(index, now, jitter());
                    event
                }
            };
            let was_refused = matches!(event, ControlEvent::Refused { .. });
            if !self.engine.send(EngineMsg::Control(event)).await {
                return;
            }
            if was_refused {
                // Replicas share one database: a refusal is every
                // replica's answer. Ask again only after the longest hold.
                tokio::select! {
                    biased;
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(MAX_BACKOFF) => {}
                }
            }
        }
    }

    /// Reads the open stream until it ends; reports updates through the
    /// same URL; while on a fallback URL, tries the preferred one when
    /// [`Failover::return_due`] says so and moves the stream there.
    async fn stream(
        &self,
        mut stream: MapStream,
        failover: &mut Failover,
        stop: &mut watch::Receiver<bool>,
        updates: &mut mpsc::UnboundedReceiver<UpdateRequest>,
        pending: &mut Option<UpdateRequest>,
    ) -> End {
        loop {
            let Some(index) = failover.open_url() else {
                return End::Broke("stream lost".into());
            };
            let Some(client) = self.clients.get(index) else {
                return End::Stop;
            };
            let return_due = failover.return_due();
            tokio::select! {
                biased;
                _ = stop.changed() => return End::Stop,
                frame = tokio::time::timeout(STREAM_SILENCE, stream.next_frame()) => match frame {
                    Ok(Ok(Some(StreamFrame::Map { envelope, handovers }))) => {
                        if !self.engine.send(EngineMsg::Map(envelope, handovers)).await {
                            return End::Stop;
                        }
                    }
                    Ok(Ok(Some(StreamFrame::Keepalive))) => {}
                    Ok(Ok(None)) => return End::Closed(format!("{}: control closed the stream", client.url())),
                    Ok(Err(e)) => return End::Broke(format!("{}: {e}", client.url())),
                    Err(_) => return End::Broke(format!("{}: no data from control for {} s", client.url(), STREAM_SILENCE.as_secs())),
                },
                Some(update) = updates.recv() => {
                    // Every report carries the whole state: the newest
                    // replaces any still pending.
                    *pending = None;
                    match self.report(client, update, true).await {
                        Ok(left) => *pending = left,
                        Err(end) => return end,
                    }
                }
                // A report control refused for now (rate limited, busy) is
                // sent again later, unless a newer one replaced it.
                _ = tokio::time::sleep(UPDATE_RETRY), if pending.is_some() => {
                    if let Some(update) = pending.take() {
                        match self.report(client, update, true).await {
                            Ok(left) => *pending = left,
                            Err(end) => return end,
                        }
                    }
                }
                _ = sleep_until_some(return_due) => {
                    let Some(preferred) = self.clients.first() else {
                        continue;
                    };
                    match preferred.map_stream(&self.key, self.node, self.since()).await {
                        Ok(new) => {
                            // The old stream is dropped, not failed.
                            stream = new;
                            let switched = failover.opened(0, Instant::now().into_std());
                            if !self.connected(0, switched, stop).await {
                                return End::Stop;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "preferred control URL still unavailable");
                            failover.return_failed(Instant::now().into_std(), jitter());
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
