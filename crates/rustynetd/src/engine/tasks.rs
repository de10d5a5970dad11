//! Work the engine hands to the runtime instead of waiting for it: talking
//! to control (registration, health), resolving its host, and `ping`.
//!
//! The engine thread applies generations; a command that waits on the
//! network must never hold it. Each task either answers its IPC caller
//! itself or posts an [`EngineMsg::Done`] back for the engine to finish.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rustynet_control_client::ControlClient;
use rustynet_proto::control_api::RegisterRequest;
use rustynet_proto::ipc::{ErrorCode, NetcheckDoc, PathKind, PingDoc, Reply, UpArgs};
use rustynet_proto::{NodeId, NodeSigningKey};
use rustynet_tunnel::{NetcheckReport, PingReport};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::control_client::is_transport_failure;
use crate::messages::{EngineHandle, EngineMsg, Enrolled, IpcFailure, TaskDone};
use crate::state_store::NodeKeys;

/// Ping and netcheck tasks allowed at once; more are refused as `busy`.
pub(super) const MAX_CONCURRENT: usize = 4;
/// How long registration may take before `up` gives up.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `netcheck` waits for control's health endpoint.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `netcheck` waits for the engine's probes (it promises 2 s).
const NETCHECK_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long `ping` waits for the echo reply.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) type Reply1 = oneshot::Sender<Result<Reply, IpcFailure>>;

/// A permit for one more task, or the `busy` refusal to send instead.
pub(super) fn permit(permits: &Arc<Semaphore>) -> Result<OwnedSemaphorePermit, IpcFailure> {
    Arc::clone(permits).try_acquire_owned().map_err(|_| {
        IpcFailure::new(
            ErrorCode::Busy,
            format!("{MAX_CONCURRENT} ping/netcheck commands already running; try again"),
        )
    })
}

/// Resolves `control_url`'s host and posts the addresses back.
pub(super) fn resolve_control(rt: &Handle, engine: &EngineHandle, control_url: String) {
    let engine = engine.clone();
    rt.spawn(async move {
        let addrs = match rustynet_control_client::ControlUrl::parse(&control_url) {
            Ok(url) => match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
                Ok(it) => it.collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resolve the control host");
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        let done = TaskDone::ControlResolved { control_url, addrs };
        engine.send(EngineMsg::Done(done)).await;
    });
}

/// What the registration task needs.
pub(super) struct Registration {
    /// One per control URL, the preferred first.
    pub clients: Vec<ControlClient>,
    pub request: RegisterRequest,
    pub keys: NodeKeys,
    /// For a renewal (`up --force-reauth`): the node's current key and id.
    pub current: Option<(NodeSigningKey, NodeId)>,
    pub args: UpArgs,
    pub reply: Reply1,
    pub epoch: u64,
}

/// Registers with control and posts the outcome back to the engine.
pub(super) fn register(rt: &Handle, engine: &EngineHandle, r: Registration) {
    let engine = engine.clone();
    rt.spawn(async move {
        // Through the preferred URL; the next replica when one cannot be
        // reached (control's own refusal is every replica's answer).
        let work = async {
            let mut last = None;
            for client in &r.clients {
                match client.register(&r.keys.signing, &r.request).await {
                    Ok(response) => return Ok(response),
                    Err(e) if is_transport_failure(&e) => {
                        tracing::warn!(url = %client.url(), error = %e, "cannot enroll through this control URL; trying the next");
                        last = Some(e);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(last.map_or_else(|| "no control URL".to_owned(), |e| e.to_string()))
        };
        let result = match tokio::time::timeout(REGISTER_TIMEOUT, work).await {
            Err(_) => Err(IpcFailure::new(
                ErrorCode::Control,
                "control did not answer in time",
            )),
            Ok(Err(e)) => Err(IpcFailure::new(ErrorCode::Control, e)),
            Ok(Ok(response)) => Ok(response),
        };
        let done = TaskDone::Enrolled(Box::new(Enrolled {
            args: r.args,
            keys: r.keys,
            result,
            reply: r.reply,
            epoch: r.epoch,
            renew: r.current.is_some(),
        }));
        engine.send(EngineMsg::Done(done)).await;
    });
}

/// Asks control for a fresh relay ticket and posts it back.
pub(super) fn relay_ticket(
    rt: &Handle,
    engine: &EngineHandle,
    client: ControlClient,
    key: &NodeSigningKey,
    node: NodeId,
) {
    let engine = engine.clone();
    let key = NodeSigningKey::from_seed(&key.seed());
    rt.spawn(async move {
        let result = client
            .relay_ticket(&key, node)
            .await
            .map_err(|e| e.to_string());
        engine
            .send(EngineMsg::Done(TaskDone::RelayTicket(result)))
            .await;
    });
}

/// Finishes `netcheck`: the engine's probes report into `engine_report`;
/// this adds whether control answers, then replies. Both run at once, so
/// the whole check takes as long as the slower (about two seconds at most).
pub(super) fn netcheck(
    rt: &Handle,
    client: Option<ControlClient>,
    doc: NetcheckDoc,
    engine_report: oneshot::Receiver<NetcheckReport>,
    reply: Reply1,
    permit: OwnedSemaphorePermit,
) {
    rt.spawn(async move {
        let health = async {
            match client {
                Some(c) => tokio::time::timeout(HEALTH_TIMEOUT, c.health())
                    .await
                    .is_ok_and(|r| r.is_ok()),
                None => false,
            }
        };
        let report = async {
            tokio::time::timeout(NETCHECK_TIMEOUT, engine_report)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let (reachable, report) = tokio::join!(health, report);
        let mut doc = super::status::netcheck_doc(doc, &report);
        doc.control_reachable = reachable;
        let _ = reply.send(Ok(Reply::Netcheck(doc)));
        drop(permit);
    });
}

/// What `ping` is about.
pub(super) struct PingTarget {
    pub name: String,
    pub tunnel_ip: Ipv4Addr,
}

fn ping_doc(target: PingTarget, report: PingReport) -> Reply {
    Reply::Ping(PingDoc {
        name: target.name,
        tunnel_ip: target.tunnel_ip,
        path: match report.rtt {
            Some(_) => super::status::path_kind(report.path),
            None => PathKind::None,
        },
        via: report.via.filter(|_| report.rtt.is_some()),
        rtt_us: report
            .rtt
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    })
}

/// Waits for the engine's path ping to `target` and replies with the path
/// the answer came back on.
pub(super) fn path_ping(
    rt: &Handle,
    target: PingTarget,
    answer: oneshot::Receiver<PingReport>,
    reply: Reply1,
    permit: OwnedSemaphorePermit,
) {
    rt.spawn(async move {
        let report = tokio::time::timeout(PING_TIMEOUT, answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(PingReport {
                path: rustynet_tunnel::PathKind::None,
                via: None,
                rtt: None,
            });
        let _ = reply.send(Ok(ping_doc(target, report)));
        drop(permit);
    });
}

/// An engine without path discovery (the kernel engine): one ICMP echo
/// through the tunnel on a blocking thread. Only a direct path exists there.
pub(super) fn icmp_ping(
    rt: &Handle,
    target: PingTarget,
    reply: Reply1,
    permit: OwnedSemaphorePermit,
) {
    rt.spawn_blocking(move || {
        let rtt = crate::ping::icmp_echo(target.tunnel_ip, PING_TIMEOUT);
        let report = PingReport {
            path: rustynet_tunnel::PathKind::Direct,
            via: None,
            rtt,
        };
        let _ = reply.send(Ok(ping_doc(target, report)));
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_concurrent_tasks_then_busy() {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let held: Vec<_> = (0..MAX_CONCURRENT)
            .map(|_| permit(&permits).map_err(|f| f.message))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        assert_eq!(held.len(), MAX_CONCURRENT);
        let refused = permit(&permits).err().map(|f| f.code);
        assert_eq!(refused, Some(ErrorCode::Busy));
        drop(held);
        assert!(permit(&permits).is_ok(), "a finished task frees its permit");
    }
}
