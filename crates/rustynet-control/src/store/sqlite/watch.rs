//! Wakes `serve` soon after another process (an admin command) commits to
//! the SQLite file, as LISTEN/NOTIFY does for PostgreSQL: inotify on the
//! database's directory, where every commit writes the write-ahead log.
//!
//! A wake-up only says "look now": the caller then reads `PRAGMA
//! data_version`, which alone decides whether another connection committed.
//! The server's own commits and other files of the directory wake it too,
//! each for one cheap local read, and the caller's poll stays as the
//! catch-up for a watch that could not be set up.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::Arc;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::Notify;

/// Starts watching the directory of the database at `path`; `None` (and a
/// warning) when inotify is unavailable, leaving the poll alone.
pub(super) fn start(path: &Path) -> Option<Arc<Notify>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file = path.file_name()?.to_owned();
    let watched = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|inotify| {
        let flags = AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CREATE;
        inotify.add_watch(dir, flags).map(|_| inotify)
    });
    let inotify = match watched {
        Ok(inotify) => inotify,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the database for other processes' commits; polling only");
            return None;
        }
    };
    let notify = Arc::new(Notify::new());
    let woken = Arc::downgrade(&notify);
    let spawned = std::thread::Builder::new()
        .name("sqlite-watch".into())
        .spawn(move || {
            // Ends when the watch goes (the directory was removed: IN_IGNORED)
            // or nobody holds the wake-up any more.
            while let Ok(events) = inotify.read_events() {
                let Some(notify) = woken.upgrade() else {
                    return;
                };
                let ignored = events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED));
                if events
                    .iter()
                    .any(|e| e.name.as_deref().is_some_and(|n| belongs_to(n, &file)))
                {
                    notify.notify_one();
                }
                if ignored {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some(notify),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the database watch; polling only");
            None
        }
    }
}

/// The database file itself or one of SQLite's companions (`-wal`, `-shm`,
/// `-journal`).
fn belongs_to(name: &OsStr, db: &OsStr) -> bool {
    name.as_bytes().starts_with(db.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_and_its_companions_belong_to_it() {
        let db = OsStr::new("control.db");
        assert!(belongs_to(OsStr::new("control.db"), db));
        assert!(belongs_to(OsStr::new("control.db-wal"), db));
        assert!(!belongs_to(OsStr::new("signing.key"), db));
    }
}
