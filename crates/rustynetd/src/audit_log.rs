//! The transition audit log (issue 11): every dataplane state transition
//! appended as one JSON line to `audit.log` in the state directory, fsync'd
//! before the engine moves on.
//!
//! Each entry carries a sequence number, the SHA-256 of its own contents
//! (`hash`) and the hash of the entry before it (`prev`); the very first
//! entry chains to [`GENESIS`]. Editing an entry breaks its own hash;
//! removing, inserting or reordering one breaks the next entry's `prev`.
//! `rustynetd audit verify` walks the chain and names the first broken line.
//!
//! Size is bounded: once the file would pass [`MAX_BYTES`] it becomes
//! `audit.log.1` (older ones shift up to `audit.log.{KEEP}`, the oldest is
//! dropped) and the new file's first entry chains to the old file's last
//! hash, so the chain runs unbroken across files.
//!
//! What the chain cannot show: the newest entries cut off the end, or the
//! oldest retained entries cut off the start (that looks like rotation).
//! An operator who needs those compares the `last hash` that `verify`
//! prints with one kept elsewhere. Entries hold states, reasons and
//! generations, never keys.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::dataplane_state::Transition;

/// The `prev` of the first entry ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The log's file name in the state directory.
pub const FILE_NAME: &str = "audit.log";
/// A file rotates before it would grow past this many bytes.
pub const MAX_BYTES: u64 = 1024 * 1024;
/// Rotated files kept (`audit.log.1` … `audit.log.KEEP`).
pub const KEEP: usize = 4;
/// Mixed into every hash so no other SHA-256 can pass for an entry's.
const DOMAIN: &[u8] = b"rustynet-audit-v1\n";
/// Longest line `verify` reads (an entry is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// Why the log could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// There is no log where one was expected.
    #[error("no audit log at {0}")]
    Missing(PathBuf),
    /// The chain is broken.
    #[error("{file} line {line}: {why}")]
    Broken {
        /// The file holding the first broken entry.
        file: PathBuf,
        /// Its line number (1-based).
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain (0 for the first entry ever).
    pub seq: u64,
    /// Unix seconds when the transition happened.
    pub time: i64,
    /// State left.
    pub from_state: String,
    /// State entered.
    pub to_state: String,
    /// Why.
    pub reason: String,
    /// The generation involved (0 if none).
    pub generation: u64,
    /// `hash` of the entry before (or [`GENESIS`]).
    pub prev: String,
    /// SHA-256 (hex) of every field above.
    pub hash: String,
}

/// The hashed part of an entry: everything but `hash`, in a fixed order.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    time: i64,
    from_state: &'a str,
    to_state: &'a str,
    reason: &'a str,
    generation: u64,
    prev: &'a str,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Entry {
    /// The hash its contents must carry.
    pub fn expected_hash(&self) -> String {
        let body = Body {
            seq: self.seq,
            time: self.time,
            from_state: &self.from_state,
            to_state: &self.to_state,
            reason: &self.reason,
            generation: self.generation,
            prev: &self.prev,
        };
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update(&json);
        hex(&h.finalize())
    }
}

/// `path`'s rotated siblings and itself, oldest first (existing ones only).
pub fn chain_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=KEEP)
        .rev()
        .map(|i| rotated(path, i))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

fn rotated(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, AuditError> {
    let mut raw = Vec::new();
    File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut raw))
        .map_err(io_err(path))?;
    Ok(raw)
}

/// Where the writer continues the chain.
#[derive(Debug, Clone)]
struct Tail {
    next_seq: u64,
    prev: String,
    size: u64,
}

/// The appending side, owned by the engine.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    tail: Option<Tail>,
}

impl AuditLog {
    /// A log at `path` with the default bounds. Nothing is read until the
    /// first append.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_limits(path, MAX_BYTES, KEEP)
    }

    /// A log rotating at `max_bytes`, keeping `keep` rotated files (tests).
    pub fn with_limits(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> Self {
        Self {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            keep: keep.clamp(1, KEEP),
            tail: None,
        }
    }

    /// Appends one entry per transition, each fsync'd.
    pub fn record(&mut self, transitions: &[Transition], now: i64) -> Result<(), AuditError> {
        for t in transitions {
            self.append(
                t.from_state.as_str(),
                t.to_state.as_str(),
                &t.reason,
                t.generation,
                now,
            )?;
        }
        Ok(())
    }

    /// Appends one entry and fsyncs it.
    pub fn append(
        &mut self,
        from_state: &str,
        to_state: &str,
        reason: &str,
        generation: u64,
        now: i64,
    ) -> Result<Entry, AuditError> {
        let mut tail = match self.tail.take() {
            Some(t) => t,
            None => self.load_tail()?,
        };
        let mut entry = Entry {
            seq: tail.next_seq,
            time: now,
            from_state: from_state.to_owned(),
            to_state: to_state.to_owned(),
            reason: reason.to_owned(),
            generation,
            prev: tail.prev.clone(),
            hash: String::new(),
        };
        entry.hash = entry.expected_hash();
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        if tail.size > 0 && tail.size.saturating_add(line.len() as u64) > self.max_bytes {
            self.rotate()?;
            tail.size = 0;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io_err(&self.path))?;
        if tail.size == 0 {
            // A new file: its directory entry must survive a crash too.
            sync_dir(&self.path)?;
        }
        tail.size = tail.size.saturating_add(line.len() as u64);
        tail.next_seq = entry.seq.saturating_add(1);
        tail.prev = entry.hash.clone();
        self.tail = Some(tail);
        Ok(entry)
    }

    /// `audit.log` → `.1` → … → `.keep` (the oldest is replaced).
    fn rotate(&self) -> Result<(), AuditError> {
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                let to = rotated(&self.path, i + 1);
                std::fs::rename(&from, &to).map_err(io_err(&from))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(io_err(&self.path))?;
        sync_dir(&self.path)
    }

    /// Finds where the chain ends: the current file's last entry, or the
    /// newest rotated file's when the current one is empty or missing. A
    /// torn last line (a write the crash interrupted, no newline) was never
    /// an entry and is cut off.
    fn load_tail(&self) -> Result<Tail, AuditError> {
        let mut size = 0;
        for path in [self.path.clone(), rotated(&self.path, 1)] {
            if !path.exists() {
                continue;
            }
            let mut raw = read_bounded(&path, self.max_bytes.saturating_mul(2))?;
            if path == self.path {
                if let Some(cut) = raw.iter().rposition(|b| *b == b'\n').map(|i| i + 1) {
                    if cut < raw.len() {
                        tracing::warn!(file = %path.display(), "audit log ended in a torn line; cutting it off");
                        raw.truncate(cut);
                        truncate(&path, cut as u64)?;
                    }
                } else if !raw.is_empty() {
                    tracing::warn!(file = %path.display(), "audit log held only a torn line; cutting it off");
                    raw.clear();
                    truncate(&path, 0)?;
                }
                size = raw.len() as u64;
            }
            let last = raw
                .split(|b| *b == b'\n')
                .rfind(|l| !l.is_empty())
                .map(<[u8]>::to_vec);
            if let Some(last) = last {
                return match serde_json::from_slice::<Entry>(&last) {
                    Ok(e) => Ok(Tail {
                        next_seq: e.seq.saturating_add(1),
                        prev: e.hash,
                        size,
                    }),
                    Err(e) => {
                        // `verify` names that line; the chain carries on
                        // from the hash of its bytes so nothing later hides it.
                        tracing::error!(file = %path.display(), error = %e, "last audit entry unreadable");
                        Ok(Tail {
                            next_seq: 0,
                            prev: hex(&Sha256::digest(&last)),
                            size,
                        })
                    }
                };
            }
        }
        Ok(Tail {
            next_seq: 0,
            prev: GENESIS.to_owned(),
            size,
        })
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), AuditError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(io_err(path))
}

/// What a successful `verify` saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Files walked, oldest first.
    pub files: Vec<PathBuf>,
    /// Entries checked.
    pub entries: u64,
    /// The first entry's sequence number (0 unless older files rotated away).
    pub first_seq: u64,
    /// The last entry's sequence number.
    pub last_seq: u64,
    /// The last entry's hash (to compare with a copy kept elsewhere).
    pub last_hash: String,
}

/// Verifies the chain through `files` (oldest first) and names the first
/// broken entry. The first entry must chain to [`GENESIS`] when its
/// sequence number is 0; a later one starts where rotation dropped older
/// files.
pub fn verify(files: &[PathBuf]) -> Result<Verified, AuditError> {
    let Some(first) = files.first() else {
        return Err(AuditError::Missing(PathBuf::from(FILE_NAME)));
    };
    let mut last: Option<Entry> = None;
    let mut first_seq = 0;
    let mut entries = 0u64;
    for file in files {
        if !file.exists() {
            return Err(AuditError::Missing(file.clone()));
        }
        let raw = read_bounded(file, u64::MAX)?;
        let broken = |line: usize, why: String| AuditError::Broken {
            file: file.clone(),
            line,
            why,
        };
        let mut lines: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
        let complete = raw.last().is_none_or(|b| *b == b'\n');
        if complete {
            // The split after the final newline.
            lines.pop();
        }
        let count = lines.len();
        for (i, bytes) in lines.into_iter().enumerate() {
            let n = i + 1;
            if n == count && !complete {
                return Err(broken(n, "incomplete (a write was interrupted)".into()));
            }
            if bytes.len() > MAX_LINE {
                return Err(broken(n, "longer than any entry".into()));
            }
            let entry: Entry = serde_json::from_slice(bytes)
                .map_err(|e| broken(n, format!("not an audit entry ({e})")))?;
            if entry.hash != entry.expected_hash() {
                return Err(broken(
                    n,
                    format!("altered: seq {} does not match its own hash", entry.seq),
                ));
            }
            match &last {
                None => {
                    if entry.seq == 0 && entry.prev != GENESIS {
                        return Err(broken(
                            n,
                            "the first entry does not chain to the genesis value".into(),
                        ));
                    }
                    first_seq = entry.seq;
                }
                Some(before) => {
                    if entry.prev != before.hash || entry.seq != before.seq.saturating_add(1) {
                        return Err(broken(
                            n,
                            format!(
                                "seq {} does not follow seq {} before it: an entry was removed, inserted or reordered",
                                entry.seq, before.seq
                            ),
                        ));
                    }
                }
            }
            entries += 1;
            last = Some(entry);
        }
    }
    let Some(last) = last else {
        return Err(AuditError::Missing(first.clone()));
    };
    Ok(Verified {
        files: files.to_vec(),
        entries,
        first_seq,
        last_seq: last.seq,
        last_hash: last.hash,
    })
}

#[cfg(test)]
mod tests;
