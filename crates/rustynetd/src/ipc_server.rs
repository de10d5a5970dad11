//! Local IPC: newline-delimited JSON over a Unix socket.
//!
//! The socket is `0660` and group-owned by the IPC group; both are set on
//! the socket before it is bound (the mode on the socket's inode, the group
//! as the thread's filesystem gid), never by path afterwards, so there is no
//! window in which another file could be changed instead. Every
//! connection's peer is identified by the kernel: uid and gid with
//! `SO_PEERCRED`, supplementary groups with `SO_PEERGROUPS` (both captured
//! at connect time: no pid-reuse race as with reading `/proc/PID`). Root and
//! members of the admin group may send mutating commands, members of the IPC
//! group read-only ones. A refused command is answered with
//! `permission_denied` and never reaches the engine. A malformed, oversized
//! or wrong-version frame closes that connection only.

use std::os::fd::{AsRawFd as _, RawFd};
use std::path::Path;

use nix::unistd::Group;
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

/// A configured IPC group that does not exist.
#[derive(Debug, thiserror::Error)]
#[error(
    "group {name:?} ({key}) does not exist: create it (systemd-sysusers, or groupadd --system {name}) or set {key} to an existing group"
)]
pub struct MissingGroup {
    /// The group name.
    pub name: String,
    /// The config key naming it.
    pub key: &'static str,
}

impl Groups {
    /// Looks the groups up by name. A missing group is an error: starting
    /// anyway would silently lock its members out (or, worse, let a group
    /// created later by someone else inherit the role).
    pub fn lookup(ipc: &str, admin: &str) -> Result<Self, MissingGroup> {
        let gid = |name: &str, key: &'static str| {
            Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw())
                .ok_or_else(|| MissingGroup {
                    name: name.to_owned(),
                    key,
                })
        };
        Ok(Self {
            ipc: Some(gid(ipc, "ipc_group")?),
            admin: Some(gid(admin, "admin_group")?),
        })
    }
}

/// Supplementary groups of the peer of a connected Unix socket, as the
/// kernel recorded them at connect time (`SO_PEERGROUPS`).
pub fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` is a writable buffer of `len` bytes that outlives
        // the call; the kernel writes at most `len` bytes and stores the
        // length it needs (or used) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        // ERANGE: the buffer was too small; `len` says how much is needed.
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() && count <= 65_536 {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
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

/// Mode of the socket file.
pub const SOCKET_MODE: u32 = 0o660;

/// Creates the socket: parent directory, stale socket removed, then a
/// socket whose inode gets mode 0660 (`fchmod` on the unbound socket: the
/// kernel creates the file with that mode less the umask, so the umask is
/// cleared for the moment of the bind) and which is bound while the
/// thread's filesystem gid is the IPC group (`setfsgid`), so the file is
/// born with its final owner and mode. A std listener (set non-blocking) so
/// it can be made before the runtime and its threads exist; call it while
/// the process has one thread (the umask is per process).
pub fn bind(path: &Path, groups: Groups) -> std::io::Result<std::os::unix::net::UnixListener> {
    use socket2::{Domain, SockAddr, Socket, Type};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    // SAFETY: fchmod on a socket fd we own; no memory is involved.
    if unsafe { libc::fchmod(socket.as_raw_fd(), SOCKET_MODE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let addr = SockAddr::unix(path)?;
    let bound = with_file_creation(groups.ipc, || socket.bind(&addr));
    bound?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(std::os::unix::net::UnixListener::from(
        std::os::fd::OwnedFd::from(socket),
    ))
}

/// Runs `f` with umask 0 and, when given, the filesystem gid `gid`,
/// restoring both afterwards.
fn with_file_creation<T>(gid: Option<u32>, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask and setfsgid only change this process's/thread's
    // credentials and always succeed (setfsgid returns the previous value
    // and leaves it unchanged when the new one is not allowed).
    let old_mask = unsafe { libc::umask(0o117) };
    let old_gid = gid.map(|g| unsafe { libc::setfsgid(g) });
    let out = f();
    if let Some(old) = old_gid {
        // SAFETY: as above; restores the previous filesystem gid.
        unsafe { libc::setfsgid(old as libc::gid_t) };
    }
    // SAFETY: as above.
    unsafe { libc::umask(old_mask) };
    out
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
    let supplementary = peer_groups(stream.as_raw_fd()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the peer's groups; only its primary group counts");
        Vec::new()
    });
    let role = role_for(cred.uid(), cred.gid(), &supplementary, groups);
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
    fn peer_groups_come_from_the_kernel() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut ours = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect::<Vec<_>>();
        let mut got = peer_groups(a.as_raw_fd()).unwrap();
        ours.sort_unstable();
        got.sort_unstable();
        ours.dedup();
        got.dedup();
        assert_eq!(got, ours);
    }

    #[test]
    fn socket_is_born_with_its_mode_and_group() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rustynetd.sock");
        // A group this process may use as its filesystem gid: any as root
        // (nogroup, to see it applied), else its own.
        let gid = if nix::unistd::geteuid().is_root() {
            65534
        } else {
            nix::unistd::getegid().as_raw()
        };
        let groups = Groups {
            ipc: Some(gid),
            admin: None,
        };
        // SAFETY: reads and restores the umask (tests in this binary do not
        // create files concurrently with this check).
        let before = unsafe { libc::umask(0o022) };
        let _listener = bind(&path, groups).unwrap();
        let after = unsafe { libc::umask(before) };
        assert_eq!(after, 0o022, "the umask is put back");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, SOCKET_MODE);
        assert_eq!(meta.gid(), gid);
        // A second bind replaces a stale socket.
        drop(_listener);
        let _again = bind(&path, groups).unwrap();
    }

    #[test]
    fn a_missing_group_is_an_error() {
        let err = Groups::lookup("root", "rustynet-no-such-group-xyz").unwrap_err();
        assert_eq!(err.key, "admin_group");
        assert!(err.to_string().contains("groupadd"), "{err}");
        let ok = Groups::lookup("root", "root").unwrap();
        assert_eq!(ok.admin, Some(0));
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
