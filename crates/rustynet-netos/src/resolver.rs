//! System resolver configuration, for Magic DNS: one configurator per way
//! a Linux host manages DNS (like Tailscale's net/dns), chosen by
//! [`detect`] and described in words so `status`/`dns inspect` can say
//! which mode is in force and why.
//!
//! - [`ResolvConf`], file mode: `/etc/resolv.conf` is replaced atomically
//!   (temp file + rename) and put back byte for byte. Symlinked resolv.conf
//!   (another manager's file): we never write through the link, which would
//!   scribble on that manager's file; the backup is a symlink with the same
//!   target, our file replaces the link itself, and restoring renames the
//!   backup link back. A bind-mounted resolv.conf (`ip netns exec`, Docker,
//!   Kubernetes) cannot be renamed over (`EBUSY`): it is written in place
//!   and its original bytes are kept in a backup outside the mount.
//! - [`ResolvedLink`], systemd-resolved mode: the tunnel link gets the Magic
//!   DNS server and routing domains through resolved's D-Bus API (via
//!   `resolvectl`), so resolved keeps its cache and the other links' DNS;
//!   `~.` (all names) only while DNS is protected.
//! - Unavailable: read-only `/etc`, or not writable by the daemon's user;
//!   Magic DNS still answers on 100.100.100.100 and the mode says why.
//!
//! The original search domains and `options` lines are kept in our file.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fsutil::{rename_durable, symlink_atomic, write_atomic, write_in_place};
use crate::validate::{InvalidName, validate_search_domain};

pub(crate) mod mode;
mod resolved;

pub use mode::{DnsMode, Facts, detect, is_mount_point};
pub use resolved::ResolvedLink;

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
    /// A resolver manager's command failed (e.g. `resolvectl`).
    #[error("{command}: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output or exit status.
        message: String,
    },
}

impl ResolverError {
    /// Whether the failure means "this host's resolver configuration cannot
    /// be changed by us" (read-only file system, permission denied), as
    /// opposed to a transient or logic error.
    pub fn is_unwritable(&self) -> bool {
        match self {
            ResolverError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM)
            ),
            _ => false,
        }
    }
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
    /// `options` lines, verbatim (e.g. `options ndots:5` in Kubernetes).
    pub options: Vec<String>,
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
            Some("options") => out.options.push(line.trim().to_owned()),
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
/// holds its varlink socket or stub file).
pub fn systemd_resolved_running() -> bool {
    systemd_resolved_running_in(Path::new("/run/systemd/resolve"))
}

/// [`systemd_resolved_running`] with resolved's runtime directory given
/// (tests point it at a private one).
pub fn systemd_resolved_running_in(dir: &Path) -> bool {
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

    /// Whether Magic DNS must get every name (`~.` with systemd-resolved),
    /// not only the tailnet's: true while DNS is protected. File mode needs
    /// nothing here (resolv.conf names only Magic DNS anyway).
    fn set_exclusive(&mut self, exclusive: bool) -> Result<(), ResolverError> {
        let _ = exclusive;
        Ok(())
    }
}

/// File-mode resolver configuration.
#[derive(Debug, Clone)]
pub struct ResolvConf {
    path: PathBuf,
    backup: PathBuf,
    resolved_upstream: PathBuf,
    in_place: bool,
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
            in_place: false,
        }
    }

    /// Writes the file in place instead of replacing it (for a bind-mounted
    /// resolv.conf, which cannot be renamed over), keeping the original
    /// bytes in `backup` — a path outside the mount, e.g. in the state
    /// directory, since the directory holding the mount point may be
    /// read-only. A crash-restart must pass the same backup path so the
    /// stale takeover can be repaired.
    pub fn in_place(mut self, backup: impl Into<PathBuf>) -> Self {
        self.in_place = true;
        self.backup = backup.into();
        self
    }

    /// Whether the file is written in place.
    pub fn is_in_place(&self) -> bool {
        self.in_place
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

    /// Our file: Magic DNS first, then the search domains we were given
    /// followed by the original ones (so short names that resolved before
    /// still do), and the original `options` lines.
    fn render(
        nameservers: &[IpAddr],
        search: &[String],
        original: &ResolvConfContents,
        backup: &Path,
    ) -> String {
        let mut out = format!(
            "{MARKER} written by rustynetd for Magic DNS.\n\
             # The previous file is saved as {} and is put back when rustynetd stops.\n",
            backup.display()
        );
        for ns in nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        let mut domains: Vec<&str> = search.iter().map(String::as_str).collect();
        for domain in &original.search {
            // The original's domains were never checked by us: keep only
            // those that are plain names, never a way to inject a line.
            if !domains.contains(&domain.as_str()) && validate_search_domain(domain).is_ok() {
                domains.push(domain);
            }
        }
        if !domains.is_empty() {
            out.push_str(&format!("search {}\n", domains.join(" ")));
        }
        for line in &original.options {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The original file's settings (from the backup), for [`Self::render`].
    fn original_contents(&self) -> ResolvConfContents {
        match fs::read_to_string(&self.backup) {
            Ok(text) if text != ABSENT => parse_resolv_conf(&text),
            _ => ResolvConfContents::default(),
        }
    }

    fn write_live(&self, bytes: &[u8], mode: u32) -> Result<(), ResolverError> {
        if self.in_place {
            return write_in_place(&self.path, bytes).map_err(Self::io(&self.path));
        }
        write_atomic(&self.path, bytes, mode).map_err(Self::io(&self.path))
    }

    fn put_back(&self) -> Result<(), ResolverError> {
        let absent = fs::read(&self.backup).is_ok_and(|b| b == ABSENT.as_bytes());
        if self.in_place {
            let bytes = if absent {
                Vec::new()
            } else {
                fs::read(&self.backup).map_err(Self::io(&self.backup))?
            };
            write_in_place(&self.path, &bytes).map_err(Self::io(&self.path))?;
            return remove_if_present(&self.backup);
        }
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

impl ResolvConf {
    /// [`Self::put_back`], falling back to an in-place write when the live
    /// file turns out to be a mount point (rename gives EBUSY).
    fn put_back_or_in_place(&self) -> Result<(), ResolverError> {
        match self.put_back() {
            Err(ResolverError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY) && !self.in_place =>
            {
                self.clone().in_place(self.backup.clone()).put_back()
            }
            other => other,
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
        let text = Self::render(
            nameservers,
            search_domains,
            &self.original_contents(),
            &self.backup,
        );
        match self.write_live(text.as_bytes(), 0o644) {
            // A mount point that detection missed: rename(2) over it fails
            // with EBUSY. Write in place instead; the backup already holds
            // the original bytes (a mount point is never a symlink).
            Err(ResolverError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EBUSY) && !self.in_place =>
            {
                write_in_place(&self.path, text.as_bytes()).map_err(Self::io(&self.path))
            }
            other => other,
        }
    }

    fn restore(&mut self) -> Result<bool, ResolverError> {
        if !Self::exists(&self.backup)? {
            return Ok(false);
        }
        if self.is_taken_over()? {
            self.put_back_or_in_place()?;
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
                self.put_back_or_in_place()?;
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
