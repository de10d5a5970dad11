//! System resolver configuration (resolv.conf), for Magic DNS.
//!
//! Only the file mode exists. With systemd-resolved the right integration is
//! its D-Bus API (per-link DNS servers and routing domains); that is out of
//! scope for now: [`systemd_resolved_running`] reports it so the daemon can
//! log it, and the file mode keeps working because resolv.conf is what libc
//! reads — at the cost of bypassing resolved while Rustynet is active.
//!
//! Symlinked resolv.conf (resolved's `stub-resolv.conf`, resolvconf's
//! `/run/resolvconf/resolv.conf`): we never write through the link, which
//! would scribble on another manager's file. The backup is a symlink with
//! the same target, our file replaces the link itself, and restoring renames
//! the backup link back, so the original link returns exactly as it was.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fsutil::{rename_durable, symlink_atomic, write_atomic};
use crate::validate::{InvalidName, validate_search_domain};

/// First line of every file we write; its presence means "ours".
const MARKER: &str = "# rustynet-managed:";
/// Content of the backup when there was no resolv.conf before us.
const ABSENT: &str = "# rustynet-backup: there was no file here\n";
/// Suffix of the backup next to the managed file.
const BACKUP_SUFFIX: &str = ".rustynet-backup";
/// systemd-resolved's list of real upstream servers.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// The address of systemd-resolved's local stub listener.
const RESOLVED_STUB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 53));

/// Errors from [`ResolverConfigurator`].
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// A search domain failed validation; nothing was written.
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    /// Taking over with no nameserver would break all resolution.
    #[error("no nameservers given")]
    NoNameservers,
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The path exists but is neither a file nor a symlink.
    #[error("{0} is not a regular file or symlink")]
    NotAFile(PathBuf),
    /// The file carries our marker but the backup is gone, so the original
    /// cannot be recovered automatically; an operator must fix it.
    #[error(
        "{0} is Rustynet's but its backup is missing; restore the original resolv.conf by hand"
    )]
    BackupMissing(PathBuf),
}

/// What [`ResolverConfigurator::repair_stale`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairOutcome {
    /// Nothing of ours was left behind.
    Clean,
    /// A previous run's file was replaced by the original from the backup.
    Restored,
    /// A backup existed but the live file is someone else's (a DHCP client
    /// rewrote it since); the live file wins and the stale backup was
    /// deleted.
    DiscardedStaleBackup,
    /// Our file is live but the backup is gone; left untouched.
    MarkerWithoutBackup,
}

/// Parsed resolver settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConfContents {
    /// `nameserver` entries, in order (scoped IPv6 entries like
    /// `fe80::1%eth0` are skipped: a bare address would be wrong).
    pub nameservers: Vec<IpAddr>,
    /// `search` domains (last `search`/`domain` line wins, as in libc).
    pub search: Vec<String>,
}

/// Parses resolv.conf text leniently (unknown lines are ignored, as libc
/// does).
pub fn parse_resolv_conf(text: &str) -> ResolvConfContents {
    let mut out = ResolvConfContents::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    out.nameservers.push(ip);
                }
            }
            Some("search" | "domain") => {
                out.search = words
                    .take_while(|w| !w.starts_with(['#', ';']))
                    .map(str::to_owned)
                    .collect();
            }
            _ => {}
        }
    }
    out
}

/// Whether systemd-resolved appears to be running (its runtime directory
/// holds its socket or stub file).
pub fn systemd_resolved_running() -> bool {
    let dir = Path::new("/run/systemd/resolve");
    dir.join("io.systemd.Resolve").exists() || dir.join("stub-resolv.conf").exists()
}

/// Points the system at Rustynet's resolver and back.
pub trait ResolverConfigurator {
    /// Backs up the original configuration (once) and installs ours.
    /// Calling it again while taken over only rewrites our file.
    fn take_over(
        &mut self,
        nameservers: &[IpAddr],
        search_domains: &[String],
    ) -> Result<(), ResolverError>;

    /// Puts the original back byte-for-byte. Returns whether anything was
    /// restored. If someone replaced our file meanwhile, their file is kept
    /// and the stale backup dropped.
    fn restore(&mut self) -> Result<bool, ResolverError>;

    /// Run first at daemon start: undoes a take-over left behind by a crash.
    fn repair_stale(&mut self) -> Result<RepairOutcome, ResolverError>;

    /// The system's own nameservers (from the backup while taken over, else
    /// from the live file), so forwarding can use them.
    fn original_nameservers(&self) -> Result<Vec<IpAddr>, ResolverError>;

    /// Whether our file is the live one.
    fn is_taken_over(&self) -> Result<bool, ResolverError>;
}

/// File-mode resolver configuration.
#[derive(Debug, Clone)]
pub struct ResolvConf {
    path: PathBuf,
    backup: PathBuf,
    resolved_upstream: PathBuf,
}

impl ResolvConf {
    /// Manages `/etc/resolv.conf`.
    pub fn system() -> Self {
        Self::new("/etc/resolv.conf")
    }

    /// Manages the file at `path` (labs give each node its own); the backup
    /// is `<path>.rustynet-backup`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut backup = path.clone().into_os_string();
        backup.push(BACKUP_SUFFIX);
        Self {
            path,
            backup: backup.into(),
            resolved_upstream: RESOLVED_UPSTREAM.into(),
        }
    }

    /// Where systemd-resolved's upstream list is read from when the original
    /// file only names its stub (tests point this elsewhere).
    pub fn with_resolved_upstream(mut self, path: impl Into<PathBuf>) -> Self {
        self.resolved_upstream = path.into();
        self
    }

    /// The managed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backup path.
    pub fn backup_path(&self) -> &Path {
        &self.backup
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> ResolverError + '_ {
        move |source| ResolverError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn exists(path: &Path) -> Result<bool, ResolverError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::io(path)(e)),
        }
    }

    /// Copies the live file (or link, or its absence) to the backup.
    fn back_up(&self) -> Result<(), ResolverError> {
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return write_atomic(&self.backup, ABSENT.as_bytes(), 0o644)
                    .map_err(Self::io(&self.backup));
            }
            Err(e) => return Err(Self::io(&self.path)(e)),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&self.path).map_err(Self::io(&self.path))?;
            symlink_atomic(&target, &self.backup).map_err(Self::io(&self.backup))
        } else if meta.is_file() {
            let bytes = fs::read(&self.path).map_err(Self::io(&self.path))?;
            let mode = meta.permissions().mode() & 0o7777;
            write_atomic(&self.backup, &bytes, mode).map_err(Self::io(&self.backup))
        } else {
            Err(ResolverError::NotAFile(self.path.clone()))
        }
    }

    fn render(nameservers: &[IpAddr], search: &[String], backup: &Path) -> String {
        let mut out = format!(
            "{MARKER} written by rustynetd for Magic DNS.\n\
             # The previous file is saved as {} and is put back when rustynetd stops.\n",
            backup.display()
        );
        for ns in nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        out
    }

    fn put_back(&self) -> Result<(), ResolverError> {
        let absent = fs::read(&self.backup).is_ok_and(|b| b == ABSENT.as_bytes());
        if absent {
            remove_if_present(&self.path)?;
            remove_if_present(&self.backup)
        } else {
            rename_durable(&self.backup, &self.path).map_err(Self::io(&self.path))
        }
    }

    fn read_nameservers(path: &Path) -> Result<Vec<IpAddr>, ResolverError> {
        match fs::read_to_string(path) {
            Ok(text) if text == ABSENT => Ok(Vec::new()),
            Ok(text) => Ok(parse_resolv_conf(&text).nameservers),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Self::io(path)(e)),
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), ResolverError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ResolverError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ResolverConfigurator for ResolvConf {
    fn take_over(
        &mut self,
        nameservers: &[IpAddr],
        search_domains: &[String],
    ) -> Result<(), ResolverError> {
        if nameservers.is_empty() {
            return Err(ResolverError::NoNameservers);
        }
        for domain in search_domains {
            validate_search_domain(domain)?;
        }
        if self.is_taken_over()? {
            if !Self::exists(&self.backup)? {
                return Err(ResolverError::BackupMissing(self.path.clone()));
            }
        } else {
            // Also refreshes a stale backup: the live file is the truth.
            self.back_up()?;
        }
        let text = Self::render(nameservers, search_domains, &self.backup);
        write_atomic(&self.path, text.as_bytes(), 0o644).map_err(Self::io(&self.path))
    }

    fn restore(&mut self) -> Result<bool, ResolverError> {
        if !Self::exists(&self.backup)? {
            return Ok(false);
        }
        if self.is_taken_over()? {
            self.put_back()?;
            Ok(true)
        } else {
            remove_if_present(&self.backup)?;
            Ok(false)
        }
    }

    fn repair_stale(&mut self) -> Result<RepairOutcome, ResolverError> {
        let ours = self.is_taken_over()?;
        let backup = Self::exists(&self.backup)?;
        Ok(match (ours, backup) {
            (true, true) => {
                self.put_back()?;
                RepairOutcome::Restored
            }
            (true, false) => RepairOutcome::MarkerWithoutBackup,
            (false, true) => {
                remove_if_present(&self.backup)?;
                RepairOutcome::DiscardedStaleBackup
            }
            (false, false) => RepairOutcome::Clean,
        })
    }

    fn original_nameservers(&self) -> Result<Vec<IpAddr>, ResolverError> {
        let source = if self.is_taken_over()? {
            &self.backup
        } else {
            &self.path
        };
        let servers = Self::read_nameservers(source)?;
        if servers == [RESOLVED_STUB] {
            // Only resolved's stub: its real upstreams are listed elsewhere.
            let upstream = Self::read_nameservers(&self.resolved_upstream)?;
            if !upstream.is_empty() {
                return Ok(upstream);
            }
        }
        Ok(servers)
    }

    fn is_taken_over(&self) -> Result<bool, ResolverError> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_file() => {
                let text = fs::read(&self.path).map_err(Self::io(&self.path))?;
                Ok(text.starts_with(MARKER.as_bytes()))
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Self::io(&self.path)(e)),
        }
    }
}

/// One call made on a [`FakeResolver`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverCall {
    /// [`ResolverConfigurator::take_over`].
    TakeOver(Vec<IpAddr>, Vec<String>),
    /// [`ResolverConfigurator::restore`].
    Restore,
    /// [`ResolverConfigurator::repair_stale`].
    RepairStale,
}

#[derive(Debug, Default)]
struct FakeInner {
    original: Vec<IpAddr>,
    ours: Option<(Vec<IpAddr>, Vec<String>)>,
    calls: Vec<ResolverCall>,
    fail_next: bool,
}

/// In-memory resolver configuration that records calls. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeResolver {
    inner: Arc<Mutex<FakeInner>>,
}

impl FakeResolver {
    /// A system whose own resolvers are `original`.
    pub fn new(original: Vec<IpAddr>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FakeInner {
                original,
                ..FakeInner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Our installed configuration, if taken over.
    pub fn installed(&self) -> Option<(Vec<IpAddr>, Vec<String>)> {
        self.lock().ours.clone()
    }

    /// Every mutating call so far.
    pub fn calls(&self) -> Vec<ResolverCall> {
        self.lock().calls.clone()
    }

    /// Makes the next take_over/restore fail with an I/O error.
    pub fn fail_next_call(&self) {
        self.lock().fail_next = true;
    }

    fn take_failure(inner: &mut FakeInner) -> Result<(), ResolverError> {
        if std::mem::take(&mut inner.fail_next) {
            return Err(ResolverError::Io {
                path: "fake".into(),
                source: io::Error::other("injected failure"),
            });
        }
        Ok(())
    }
}

impl ResolverConfigurator for FakeResolver {
    fn take_over(
        &mut self,
        nameservers: &[IpAddr],
        search_domains: &[String],
    ) -> Result<(), ResolverError> {
        let mut inner = self.lock();
        inner.calls.push(ResolverCall::TakeOver(
            nameservers.to_vec(),
            search_domains.to_vec(),
        ));
        Self::take_failure(&mut inner)?;
        if nameservers.is_empty() {
            return Err(ResolverError::NoNameservers);
        }
        for domain in search_domains {
            validate_search_domain(domain)?;
        }
        inner.ours = Some((nameservers.to_vec(), search_domains.to_vec()));
        Ok(())
    }

    fn restore(&mut self) -> Result<bool, ResolverError> {
        let mut inner = self.lock();
        inner.calls.push(ResolverCall::Restore);
        Self::take_failure(&mut inner)?;
        Ok(inner.ours.take().is_some())
    }

    fn repair_stale(&mut self) -> Result<RepairOutcome, ResolverError> {
        let mut inner = self.lock();
        inner.calls.push(ResolverCall::RepairStale);
        Ok(if inner.ours.take().is_some() {
            RepairOutcome::Restored
        } else {
            RepairOutcome::Clean
        })
    }

    fn original_nameservers(&self) -> Result<Vec<IpAddr>, ResolverError> {
        Ok(self.lock().original.clone())
    }

    fn is_taken_over(&self) -> Result<bool, ResolverError> {
        Ok(self.lock().ours.is_some())
    }
}

#[cfg(test)]
mod tests;
