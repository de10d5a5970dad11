//! The connection to control: a task that holds the map stream open, hands
//! every received envelope to the engine (which verifies it before use),
//! reports endpoints and advertisements, and reconnects with backoff.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rustynet_control_client::{ClientError, ControlClient, is_auth_failure};
use rustynet_proto::control_api::{StreamFrame, UpdateRequest};
use rustynet_proto::{NodeId, NodeSigningKey};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::messages::{ControlEvent, EngineHandle, EngineMsg};
use crate::state_store::Enrollment;

/// Control keeps idle streams alive every 15 s; three missed means dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Control lets a node report 10 times at once, then once each 6 s.
const UPDATE_RETRY: Duration = Duration::from_secs(10);

/// The running control task.
pub struct ControlTask {
    stop: watch::Sender<bool>,
    updates: mpsc::UnboundedSender<UpdateRequest>,
    reported: Mutex<Vec<SocketAddr>>,
    template: Mutex<UpdateRequest>,
}

impl ControlTask {
    /// Starts the task on `rt`.
    pub fn start(
        rt: &Handle,
        enrollment: &Enrollment,
        signing: &NodeSigningKey,
        fwmark: u32,
        since_generation: u64,
        engine: EngineHandle,
        first_update: UpdateRequest,
    ) -> Result<Self, ClientError> {
        let client = ControlClient::new(&enrollment.control_url, &enrollment.ca_pem)?
            .with_fwmark(fwmark)
            .with_known_addrs(enrollment.control_addrs.clone());
        let key = NodeSigningKey::from_seed(&signing.seed());
        let (stop, stop_rx) = watch::channel(false);
        let (updates, updates_rx) = mpsc::unbounded_channel();
        let reported = first_update.endpoints.clone().unwrap_or_default();
        let _ = updates.send(first_update.clone());
        rt.spawn(run(
            client,
            key,
            enrollment.node_id,
            since_generation,
            engine,
            stop_rx,
            updates_rx,
        ));
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

#[allow(clippy::too_many_arguments)]
async fn run(
    client: ControlClient,
    key: NodeSigningKey,
    node: NodeId,
    since: u64,
    engine: EngineHandle,
    mut stop: watch::Receiver<bool>,
    mut updates: mpsc::UnboundedReceiver<UpdateRequest>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut pending: Option<UpdateRequest> = None;
    loop {
        while let Ok(u) = updates.try_recv() {
            pending = Some(u);
        }
        if let Some(update) = pending.take()
            && let Err(e) = client.update(&key, node, &update).await
        {
            tracing::warn!(error = %e, "cannot report to control");
            if let Some(event) = refused(&e) {
                engine.send(EngineMsg::Control(event)).await;
            } else {
                pending = Some(update);
            }
        }
        let event = match client.map_stream(&key, node, since).await {
            Ok(mut stream) => {
                engine
                    .send(EngineMsg::Control(ControlEvent::Connected))
                    .await;
                backoff = Duration::from_secs(1);
                loop {
                    tokio::select! {
                        frame = tokio::time::timeout(STREAM_SILENCE, stream.next_frame()) => match frame {
                            Ok(Ok(Some(StreamFrame::Map { envelope, handovers }))) => {
                                if !engine.send(EngineMsg::Map(envelope, handovers)).await { return; }
                            }
                            Ok(Ok(Some(StreamFrame::Keepalive))) => {}
                            Ok(Ok(None)) => break ControlEvent::Disconnected("control closed the stream".into()),
                            Ok(Err(e)) => break ControlEvent::Disconnected(e.to_string()),
                            Err(_) => break ControlEvent::Disconnected("no data from control for 45 s".into()),
                        },
                        Some(update) = updates.recv() => {
                            // Every report carries the whole state: the
                            // newest replaces any still pending.
                            pending = None;
                            if let Err(e) = client.update(&key, node, &update).await {
                                tracing::warn!(error = %e, "cannot report to control");
                                pending = Some(update);
                            }
                        }
                        // A report control refused for now (rate limited,
                        // busy) is sent again later, unless a newer one
                        // replaced it.
                        _ = tokio::time::sleep(UPDATE_RETRY), if pending.is_some() => {
                            if let Some(update) = pending.take()
                                && let Err(e) = client.update(&key, node, &update).await
                            {
                                tracing::warn!(error = %e, "cannot report to control");
                                pending = Some(update);
                            }
                        }
                        _ = stop.changed() => return,
                    }
                }
            }
            Err(e) => refused(&e).unwrap_or_else(|| ControlEvent::Disconnected(e.to_string())),
        };
        if matches!(event, ControlEvent::Refused { .. }) {
            backoff = MAX_BACKOFF;
        }
        if !engine.send(EngineMsg::Control(event)).await {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
