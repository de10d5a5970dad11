//! One request, one response over the daemon's Unix socket.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use rustynet_proto::ipc::{Command, IPC_VERSION, IpcRequest, IpcResponse, MAX_FRAME_BYTES, Reply};

/// Sends `cmd` and returns the daemon's reply (an error carries its message).
pub fn call(socket: &Path, cmd: Command) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach rustynetd at {} (is it running? are you in the rustynet group?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let request = IpcRequest {
        v: IPC_VERSION,
        id: 1,
        cmd,
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream).take(MAX_FRAME_BYTES as u64 + 1);
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(anyhow!("rustynetd closed the connection without answering"));
    }
    let response: IpcResponse =
        serde_json::from_slice(&buf).context("rustynetd sent an unreadable response")?;
    match (response.ok, response.error) {
        (Some(reply), None) => Ok(reply),
        (_, Some(e)) => Err(anyhow!("{} ({:?})", e.message, e.code)),
        (None, None) => Err(anyhow!("rustynetd sent an empty response")),
    }
}
