//! Logs: journald's native protocol under systemd, JSON lines otherwise.
//!
//! The native protocol is one datagram per entry to
//! `/run/systemd/journal/socket`, each field `NAME=value\n`, or for values
//! holding a newline `NAME\n` + 64-bit little-endian length + value + `\n`.
//! Field names are the event's field names upper-cased (`from_state` ->
//! `FROM_STATE`), the same names the JSON lines use, so one query language
//! finds both (`journalctl FROM_STATE=fail_closed`).

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Installs the global subscriber: journald when the process's stderr is
/// connected to the journal (systemd sets `$JOURNAL_STREAM`) and its socket
/// answers, JSON lines on stderr otherwise. The filter comes from
/// `$RUSTYNET_LOG` (default `info`). `identifier` is the
/// `SYSLOG_IDENTIFIER` (the binary's name).
pub fn init_logging(identifier: &str) {
    let filter = || EnvFilter::try_from_env("RUSTYNET_LOG").unwrap_or_else(|_| "info".into());
    let journald = std::env::var_os("JOURNAL_STREAM")
        .and_then(|_| Journald::connect(Path::new(JOURNAL_SOCKET), identifier).ok());
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(layer.with_filter(filter()))
            .init(),
        None => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .init(),
    }
}

/// A layer that writes each event to journald.
pub struct Journald {
    socket: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl Journald {
    /// Connects to the journal socket at `path`.
    pub fn connect(path: &Path, identifier: &str) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Self {
            socket,
            path: path.to_path_buf(),
            identifier: identifier.to_owned(),
        })
    }

    /// The socket written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// syslog priority of a level (`journalctl -p`).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A journal field name from a tracing field name: upper-case ASCII
/// letters, digits and `_`, never starting with `_` or a digit (those are
/// journald's trusted or invalid names).
pub fn field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c == '_' || c.is_ascii_digit()) {
        out.insert(0, 'F');
    }
    out.truncate(64);
    out
}

/// Appends one field in the native protocol's encoding.
pub fn put_field(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.push(b'=');
        buf.extend_from_slice(value.as_bytes());
    }
    buf.push(b'\n');
}

#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text);
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.push((field_name(field.name()), value));
        }
    }
}

/// The datagram for one event (pure: tested).
pub fn entry(
    identifier: &str,
    level: &Level,
    target: &str,
    message: &str,
    fields: &[(String, String)],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    put_field(&mut buf, "PRIORITY", &priority(level).to_string());
    put_field(&mut buf, "SYSLOG_IDENTIFIER", identifier);
    put_field(&mut buf, "MESSAGE", message);
    put_field(&mut buf, "LEVEL", level.as_str());
    put_field(&mut buf, "TARGET", target);
    for (name, value) in fields {
        put_field(&mut buf, name, value);
    }
    buf
}

impl<S: Subscriber> Layer<S> for Journald {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let buf = entry(
            &self.identifier,
            meta.level(),
            meta.target(),
            &fields.message,
            &fields.others,
        );
        // A full or absent journal must never stop the daemon.
        let _ = self.socket.send(&buf);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Decodes a native-protocol datagram (the journal's side), for tests.
    fn decode(mut buf: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let nl = buf.iter().position(|b| *b == b'\n').unwrap();
            let line = &buf[..nl];
            if let Some(eq) = line.iter().position(|b| *b == b'=') {
                out.push((
                    String::from_utf8_lossy(&line[..eq]).into_owned(),
                    String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
                ));
                buf = &buf[nl + 1..];
            } else {
                let name = String::from_utf8_lossy(line).into_owned();
                let len_bytes: [u8; 8] = buf[nl + 1..nl + 9].try_into().unwrap();
                let len = u64::from_le_bytes(len_bytes) as usize;
                let value = &buf[nl + 9..nl + 9 + len];
                out.push((name, String::from_utf8_lossy(value).into_owned()));
                assert_eq!(buf[nl + 9 + len], b'\n');
                buf = &buf[nl + 10 + len..];
            }
        }
        out
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }

    #[test]
    fn field_names_are_journal_safe() {
        assert_eq!(field_name("from_state"), "FROM_STATE");
        assert_eq!(field_name("rustynet.peer"), "RUSTYNET_PEER");
        assert_eq!(field_name("_trusted"), "F_TRUSTED");
        assert_eq!(field_name("9lives"), "F9LIVES");
        assert_eq!(field_name(""), "F");
    }

    #[test]
    fn events_reach_the_socket_as_native_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = Journald::connect(&path, "rustynetd").unwrap();
        assert_eq!(layer.path(), path);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                target: "rustynet::transition",
                from_state = "dataplane_applied",
                to_state = "fail_closed",
                reason = "map expired\nwaiting for control",
                "state transition"
            );
        });
        let mut buf = vec![0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        let fields = decode(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "rustynetd");
        assert_eq!(get("MESSAGE"), "state transition");
        assert_eq!(get("LEVEL"), "WARN");
        assert_eq!(get("TARGET"), "rustynet::transition");
        assert_eq!(get("FROM_STATE"), "dataplane_applied");
        assert_eq!(get("TO_STATE"), "fail_closed");
        assert_eq!(get("REASON"), "map expired\nwaiting for control");
    }
}
