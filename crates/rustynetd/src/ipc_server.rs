//! Local IPC: newline-delimited JSON over a Unix socket.
//!
//! The socket is `0660` and group-owned by the IPC group. Every connection's
//! peer is identified with `SO_PEERCRED`; root and members of the admin group
//! may send mutating commands, members of the IPC group read-only ones. A
//! refused command is answered with `permission_denied` and never reaches the
//! engine. A malformed, oversized or wrong-version frame closes that
//! connection only.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use nix::unistd::{Gid, Group};
use rustynet_proto::ipc::{ErrorCode, IPC_VERSION, IpcRequest, IpcResponse, MAX_FRAME_BYTES};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

pub use crate::messages::{Caller, Role};
use crate::messages::{EngineHandle, EngineMsg, SendError};

/// Group ids the roles map to.
#[derive(Debug, Clone, Copy)]
pub struct Groups {
    /// Read-only group.
    pub ipc: Option<u32>,
    /// Admin group.
    pub admin: Option<u32>,
}

impl Groups {
    /// Looks the groups up by name (a missing group grants nothing).
    pub fn lookup(ipc: &str, admin: &str) -> Self {
        let gid = |name: &str| {
            Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
        };
        Self {
            ipc: gid(ipc),
            admin: gid(admin),
        }
    }
}

/// Supplementary groups of `pid` (from /proc; empty if unreadable).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// Decides a peer's role from its credentials.
pub fn role_for(uid: u32, gid: u32, supplementary: &[u32], groups: Groups) -> Option<Role> {
    let member = |g: Option<u32>| g.is_some_and(|g| gid == g || supplementary.contains(&g));
    if uid == 0 || member(groups.admin) {
        Some(Role::Admin)
    } else if member(groups.ipc) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// Creates the socket: parent directory, stale socket removed, mode 0660,
/// group set to the IPC group (when it exists). A std listener (set
/// non-blocking) so it can be made before the runtime and its threads exist.
pub fn bind(path: &Path, groups: Groups) -> std::io::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = groups.ipc {
        nix::unistd::chown(path, None, Some(Gid::from_raw(gid)))?;
    }
    Ok(listener)
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: UnixListener, groups: Groups, engine: EngineHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, groups, engine).await {
                        tracing::debug!(error = %e, "ipc connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "ipc accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn write(stream: &mut BufReader<UnixStream>, response: &IpcResponse) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    stream.get_mut().write_all(&line).await
}

async fn connection(
    stream: UnixStream,
    groups: Groups,
    engine: EngineHandle,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let pid = cred.pid().unwrap_or(0);
    let role = role_for(cred.uid(), cred.gid(), &supplementary_groups(pid), groups);
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let n = (&mut stream)
            .take(MAX_FRAME_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_FRAME_BYTES {
            let resp = IpcResponse::err(
                0,
                ErrorCode::BadRequest,
                format!("frame exceeds {MAX_FRAME_BYTES} bytes"),
            );
            write(&mut stream, &resp).await?;
            return Ok(());
        }
        let request: IpcRequest = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let resp =
                    IpcResponse::err(0, ErrorCode::BadRequest, format!("malformed frame: {e}"));
                write(&mut stream, &resp).await?;
                return Ok(());
            }
        };
        if request.v != IPC_VERSION {
            let resp = IpcResponse::err(
                request.id,
                ErrorCode::BadRequest,
                format!(
                    "IPC version {} not supported (daemon speaks {IPC_VERSION})",
                    request.v
                ),
            );
            write(&mut stream, &resp).await?;
            return Ok(());
        }
        let allowed = match role {
            Some(Role::Admin) => true,
            Some(Role::ReadOnly) => !request.cmd.is_mutating(),
            None => false,
        };
        if !allowed {
            tracing::warn!(
                uid = cred.uid(),
                pid,
                command = request.cmd.name(),
                "ipc command denied"
            );
            let resp = IpcResponse::err(
                request.id,
                ErrorCode::PermissionDenied,
                format!("{} needs root or the admin group", request.cmd.name()),
            );
            write(&mut stream, &resp).await?;
            continue;
        }
        let caller = Caller {
            uid: cred.uid(),
            pid,
            role: role.unwrap_or(Role::ReadOnly),
        };
        let (tx, rx) = oneshot::channel();
        let queued = engine.try_send(EngineMsg::Ipc {
            cmd: request.cmd,
            caller,
            reply: tx,
        });
        match queued {
            Ok(()) => {}
            Err(SendError::Busy) => {
                let resp = IpcResponse::err(
                    request.id,
                    ErrorCode::Busy,
                    "daemon is busy (its queue is full); try again",
                );
                write(&mut stream, &resp).await?;
                continue;
            }
            Err(SendError::Gone) => {
                let resp =
                    IpcResponse::err(request.id, ErrorCode::Internal, "daemon is shutting down");
                write(&mut stream, &resp).await?;
                return Ok(());
            }
        }
        let resp = match rx.await {
            Ok(Ok(reply)) => IpcResponse::ok(request.id, reply),
            Ok(Err(f)) => IpcResponse::err(request.id, f.code, f.message),
            Err(_) => IpcResponse::err(
                request.id,
                ErrorCode::Internal,
                "daemon dropped the request",
            ),
        };
        write(&mut stream, &resp).await?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustynet_proto::ipc::{Command, Reply};

    const NO_GROUPS: Groups = Groups {
        ipc: None,
        admin: None,
    };

    /// Sends `bytes` on a fresh connection (as root, so every command is
    /// allowed) and returns every response line until the daemon closes it.
    async fn exchange(
        bytes: Vec<u8>,
        engine: EngineHandle,
    ) -> (
        Vec<IpcResponse>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let (client, server) = UnixStream::pair().unwrap();
        let served = tokio::spawn(connection(server, NO_GROUPS, engine));
        let (mut rd, mut wr) = client.into_split();
        // The daemon may close before reading everything: a write error is
        // expected then, and must not hide its answer.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&bytes).await;
            wr
        });
        let mut out = Vec::new();
        rd.read_to_end(&mut out).await.unwrap();
        drop(writer.await.unwrap());
        let responses = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        (responses, served)
    }

    fn frame(value: serde_json::Value) -> Vec<u8> {
        let mut v = serde_json::to_vec(&value).unwrap();
        v.push(b'\n');
        v
    }

    #[tokio::test]
    async fn bad_frames_are_refused_and_never_reach_the_engine() {
        let oversized = vec![b'{'; MAX_FRAME_BYTES + 100];
        let malformed = b"{\"v\":1,\"id\":3,\"cmd\":{\"op\":\"status\"}\n".to_vec();
        let unknown_op =
            frame(serde_json::json!({"v": IPC_VERSION, "id": 4, "cmd": {"op": "reboot"}}));
        let extra_field =
            frame(serde_json::json!({"v": IPC_VERSION, "id": 5, "cmd": {"op": "status"}, "x": 1}));
        let wrong_version =
            frame(serde_json::json!({"v": IPC_VERSION + 1, "id": 6, "cmd": {"op": "status"}}));
        let cases = [
            (oversized, 0, "exceeds"),
            (malformed, 0, "malformed"),
            (unknown_op, 0, "malformed"),
            (extra_field, 0, "malformed"),
            (wrong_version, 6, "not supported"),
        ];
        for (bytes, id, needle) in cases {
            let (engine, mut rx) = EngineHandle::channel();
            let (responses, served) = exchange(bytes, engine).await;
            assert_eq!(responses.len(), 1, "{needle}: one answer, then close");
            let r = &responses[0];
            assert_eq!(r.id, id);
            let err = r.error.as_ref().unwrap();
            assert_eq!(err.code, ErrorCode::BadRequest);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
            served.await.unwrap().unwrap();
            assert!(rx.try_recv().is_err(), "{needle}: reached the engine");
        }
    }

    #[tokio::test]
    async fn a_good_frame_reaches_the_engine_and_is_answered() {
        let (engine, mut rx) = EngineHandle::channel();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let EngineMsg::Ipc { cmd, caller, reply } = msg {
                    assert_eq!(cmd, Command::Down);
                    assert_eq!(caller.role, Role::Admin);
                    let _ = reply.send(Ok(Reply::Done {
                        message: "down".into(),
                    }));
                }
            }
        });
        let mut bytes =
            frame(serde_json::json!({"v": IPC_VERSION, "id": 7, "cmd": {"op": "down"}}));
        // A second request on the same connection, then garbage: the first
        // two are answered in order, the garbage closes the connection.
        bytes.extend(frame(
            serde_json::json!({"v": IPC_VERSION, "id": 8, "cmd": {"op": "down"}}),
        ));
        bytes.extend(b"not json\n");
        let (responses, served) = exchange(bytes, engine).await;
        served.await.unwrap().unwrap();
        let ids: Vec<u64> = responses.iter().map(|r| r.id).collect();
        assert_eq!(ids, [7, 8, 0]);
        assert_eq!(
            responses[0].ok,
            Some(Reply::Done {
                message: "down".into()
            })
        );
        assert_eq!(
            responses[2].error.as_ref().unwrap().code,
            ErrorCode::BadRequest
        );
    }

    /// The audit's item 11: the engine's queue is bounded, and a caller
    /// that finds it full is told so at once instead of queueing more.
    #[tokio::test]
    async fn a_full_engine_queue_answers_busy() {
        let (engine, rx) = EngineHandle::channel();
        let mut filled = 0;
        while engine.try_send(EngineMsg::Tick).is_ok() {
            filled += 1;
        }
        assert_eq!(filled, crate::messages::ENGINE_QUEUE);
        let mut bytes =
            frame(serde_json::json!({"v": IPC_VERSION, "id": 9, "cmd": {"op": "status"}}));
        // Garbage after it closes the connection, so the exchange ends.
        bytes.extend(b"not json\n");
        let (responses, served) = exchange(bytes, engine).await;
        served.await.unwrap().unwrap();
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].id, 9);
        assert_eq!(responses[0].error.as_ref().unwrap().code, ErrorCode::Busy);
        drop(rx);
    }

    #[test]
    fn roles() {
        let g = Groups {
            ipc: Some(100),
            admin: Some(200),
        };
        assert_eq!(role_for(0, 0, &[], g), Some(Role::Admin));
        assert_eq!(role_for(1000, 200, &[], g), Some(Role::Admin));
        assert_eq!(role_for(1000, 5, &[200], g), Some(Role::Admin));
        assert_eq!(role_for(1000, 100, &[], g), Some(Role::ReadOnly));
        assert_eq!(role_for(1000, 5, &[100], g), Some(Role::ReadOnly));
        assert_eq!(role_for(1000, 5, &[6], g), None);
        assert_eq!(
            role_for(
                1000,
                5,
                &[],
                Groups {
                    ipc: None,
                    admin: None
                }
            ),
            None
        );
    }
}
