//! Crash-safe file replacement: temp file in the same directory, fsync,
//! rename, fsync the directory. A reader (or a crash) sees the old file or
//! the new one, never a torn mix.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent_dir(path).join(format!(".{name}.rustynet-tmp-{}-{n}", std::process::id()))
}

/// Makes a completed rename durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Atomically renames `from` over `to` and makes it durable.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    fsync_dir(parent_dir(to))
}

/// Atomically replaces `path` (a file or a symlink — the link itself, not
/// its target) with a regular file holding `contents`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Atomically creates (or replaces) `path` as a symlink to `target`.
pub(crate) fn symlink_atomic(target: &Path, path: &Path) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = symlink(target, &tmp).and_then(|()| rename_durable(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Overwrites `path` in place (truncate, write, fsync), for a file that
/// cannot be replaced by rename: a bind mount such as the resolv.conf
/// `ip netns exec` and containers put over `/etc/resolv.conf`. Not atomic
/// for readers (they may see a short file for a moment), which is why
/// [`write_atomic`] is preferred wherever rename works. The file's owner
/// and mode are kept.
pub(crate) fn write_in_place(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
