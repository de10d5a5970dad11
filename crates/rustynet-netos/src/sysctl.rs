//! Kernel parameters under `/proc/sys`, with the previous values remembered
//! so the daemon can put the host back the way it found it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Errors from [`Sysctl`].
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key is not a plain dotted sysctl name (would escape `/proc/sys`
    /// or is otherwise malformed).
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey {
        /// The refused key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The value contains characters that cannot be a sysctl value.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// No such sysctl on this kernel (or in this namespace).
    #[error("sysctl {0} does not exist")]
    NotFound(String),
    /// Reading or writing failed (permission, kernel refused the value).
    #[error("sysctl {key}: {source}")]
    Io {
        /// The key.
        key: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Reads and sets sysctls, remembering each key's value from before its
/// first change.
pub trait Sysctl {
    /// Current value, trailing newline removed.
    fn get(&mut self, key: &str) -> Result<String, SysctlError>;

    /// Sets `key` to `value`, remembering the previous value the first time
    /// a key is changed. Returns whether the value changed (values compare
    /// by whitespace-separated tokens, so `"1 2"` equals `"1\t2"`).
    fn set(&mut self, key: &str, value: &str) -> Result<bool, SysctlError>;

    /// Puts every changed key back, newest first. Keys that fail stay
    /// remembered for a later attempt; the first failure is returned.
    fn restore(&mut self) -> Result<Vec<String>, SysctlError>;

    /// The remembered previous values, oldest first, for the daemon to
    /// persist so a restart can still restore them.
    fn saved(&self) -> Vec<(String, String)>;
}

/// Checks a dotted key like `net.ipv4.conf.all.src_valid_mark`: segments of
/// `[A-Za-z0-9_-]`, no empty segment, nothing that could form a path
/// component such as `..` or `/`. (Interfaces whose names contain a dot
/// cannot be addressed this way; Rustynet's never do.)
pub(crate) fn validate_key(key: &str) -> Result<(), SysctlError> {
    let bad = |reason| {
        Err(SysctlError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() || key.len() > 256 {
        return bad("empty or longer than 256 bytes");
    }
    if key.split('.').any(str::is_empty) {
        return bad("empty segment");
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("only letters, digits, '_', '-' and '.' separators are allowed");
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<(), SysctlError> {
    let bad = |reason| {
        Err(SysctlError::InvalidValue {
            key: key.to_owned(),
            reason,
        })
    };
    if value.is_empty() || value.len() > 4096 {
        return bad("empty or longer than 4096 bytes");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_graphic() || c == ' ' || c == '\t')
    {
        return bad("only printable ASCII, spaces and tabs are allowed");
    }
    Ok(())
}

fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The real implementation, writing files under a root (`/proc/sys`, or a
/// directory of plain files in tests).
///
/// `/proc/sys/net` shows the network namespace of the calling thread.
#[derive(Debug, Clone)]
pub struct ProcSysctl {
    root: PathBuf,
    saved: Vec<(String, String)>,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcSysctl {
    /// Operates on `/proc/sys`.
    pub fn new() -> Self {
        Self::with_root("/proc/sys")
    }

    /// Operates on another root (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            saved: Vec::new(),
        }
    }

    /// Resumes with previous values persisted by an earlier run (from
    /// [`Sysctl::saved`]), so a restarted daemon can still restore them.
    /// Entries with invalid keys are refused.
    pub fn with_saved(mut self, saved: Vec<(String, String)>) -> Result<Self, SysctlError> {
        for (key, value) in &saved {
            validate_key(key)?;
            validate_value(key, value)?;
        }
        self.saved = saved;
        Ok(self)
    }

    fn path(&self, key: &str) -> Result<PathBuf, SysctlError> {
        validate_key(key)?;
        let mut path = self.root.clone();
        path.extend(key.split('.'));
        Ok(path)
    }

    fn read(&self, key: &str) -> Result<String, SysctlError> {
        let path = self.path(key)?;
        read_value(&path, key)
    }

    fn write(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.path(key)?;
        if !path.exists() {
            return Err(SysctlError::NotFound(key.to_owned()));
        }
        // Plain write without create/truncate: /proc/sys files reject both.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| SysctlError::Io {
                key: key.to_owned(),
                source,
            })?;
        io::Write::write_all(&mut file, format!("{value}\n").as_bytes()).map_err(|source| {
            SysctlError::Io {
                key: key.to_owned(),
                source,
            }
        })
    }
}

fn read_value(path: &Path, key: &str) -> Result<String, SysctlError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s.trim_end_matches('\n').to_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SysctlError::NotFound(key.to_owned())),
        Err(source) => Err(SysctlError::Io {
            key: key.to_owned(),
            source,
        }),
    }
}

impl Sysctl for ProcSysctl {
    fn get(&mut self, key: &str) -> Result<String, SysctlError> {
        self.read(key)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<bool, SysctlError> {
        validate_key(key)?;
        validate_value(key, value)?;
        let current = self.read(key)?;
        if same_value(&current, value) {
            return Ok(false);
        }
        self.write(key, value)?;
        if !self.saved.iter().any(|(k, _)| k == key) {
            self.saved.push((key.to_owned(), current));
        }
        Ok(true)
    }

    fn restore(&mut self) -> Result<Vec<String>, SysctlError> {
        let mut restored = Vec::new();
        let mut first_err = None;
        let mut kept = Vec::new();
        for (key, value) in std::mem::take(&mut self.saved).into_iter().rev() {
            let result = self.read(&key).and_then(|cur| {
                if same_value(&cur, &value) {
                    Ok(())
                } else {
                    self.write(&key, &value)
                }
            });
            match result {
                Ok(()) => restored.push(key),
                Err(e) => {
                    first_err.get_or_insert(e);
                    kept.push((key, value));
                }
            }
        }
        kept.reverse();
        self.saved = kept;
        match first_err {
            Some(e) => Err(e),
            None => Ok(restored),
        }
    }

    fn saved(&self) -> Vec<(String, String)> {
        self.saved.clone()
    }
}

#[derive(Debug, Default)]
struct FakeInner {
    values: BTreeMap<String, String>,
    saved: Vec<(String, String)>,
    calls: Vec<(String, Option<String>)>,
}

/// In-memory sysctls that record every call (`(key, None)` for a get,
/// `(key, Some(value))` for a set). Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeSysctl {
    inner: Arc<Mutex<FakeInner>>,
}

impl FakeSysctl {
    /// A fake kernel with these keys present.
    pub fn with_values<K: Into<String>, V: Into<String>>(
        values: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let values = values
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self {
            inner: Arc::new(Mutex::new(FakeInner {
                values,
                ..FakeInner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current value of a key.
    pub fn value(&self, key: &str) -> Option<String> {
        self.lock().values.get(key).cloned()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<(String, Option<String>)> {
        self.lock().calls.clone()
    }
}

impl Sysctl for FakeSysctl {
    fn get(&mut self, key: &str) -> Result<String, SysctlError> {
        validate_key(key)?;
        let mut inner = self.lock();
        inner.calls.push((key.to_owned(), None));
        inner
            .values
            .get(key)
            .cloned()
            .ok_or_else(|| SysctlError::NotFound(key.to_owned()))
    }

    fn set(&mut self, key: &str, value: &str) -> Result<bool, SysctlError> {
        validate_key(key)?;
        validate_value(key, value)?;
        let mut inner = self.lock();
        inner.calls.push((key.to_owned(), Some(value.to_owned())));
        let current = inner
            .values
            .get(key)
            .cloned()
            .ok_or_else(|| SysctlError::NotFound(key.to_owned()))?;
        if same_value(&current, value) {
            return Ok(false);
        }
        if !inner.saved.iter().any(|(k, _)| k == key) {
            inner.saved.push((key.to_owned(), current));
        }
        inner.values.insert(key.to_owned(), value.to_owned());
        Ok(true)
    }

    fn restore(&mut self) -> Result<Vec<String>, SysctlError> {
        let mut inner = self.lock();
        let saved = std::mem::take(&mut inner.saved);
        let mut restored = Vec::new();
        for (key, value) in saved.into_iter().rev() {
            inner.values.insert(key.clone(), value);
            restored.push(key);
        }
        Ok(restored)
    }

    fn saved(&self) -> Vec<(String, String)> {
        self.lock().saved.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for ok in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.rn-0.rp_filter",
            "net.ipv6.conf.all.disable_ipv6",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "net..ipv4",
            "net/ipv4/ip_forward",
            "../../etc/passwd",
            "net.ipv4.ip_forward ",
            ".net",
            "net.",
        ] {
            assert!(
                matches!(validate_key(bad), Err(SysctlError::InvalidKey { .. })),
                "{bad:?}"
            );
        }
    }

    fn tree(values: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (key, value) in values {
            let path = key
                .split('.')
                .fold(dir.path().to_path_buf(), |p, s| p.join(s));
            fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            fs::write(&path, format!("{value}\n")).expect("write");
        }
        dir
    }

    #[test]
    fn set_remembers_first_previous_value_and_restores() {
        let dir = tree(&[
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.src_valid_mark", "0"),
        ]);
        let mut s = ProcSysctl::with_root(dir.path());
        assert!(s.set("net.ipv4.ip_forward", "1").expect("set"));
        assert!(
            !s.set("net.ipv4.ip_forward", "1")
                .expect("same value is a no-op")
        );
        assert!(s.set("net.ipv4.ip_forward", "2").expect("set again"));
        assert!(s.set("net.ipv4.conf.all.src_valid_mark", "1").expect("set"));
        assert_eq!(s.get("net.ipv4.ip_forward").expect("get"), "2");
        assert_eq!(
            s.saved(),
            vec![
                ("net.ipv4.ip_forward".to_owned(), "0".to_owned()),
                (
                    "net.ipv4.conf.all.src_valid_mark".to_owned(),
                    "0".to_owned()
                )
            ]
        );
        let restored = s.restore().expect("restore");
        assert_eq!(
            restored,
            ["net.ipv4.conf.all.src_valid_mark", "net.ipv4.ip_forward"]
        );
        assert_eq!(s.get("net.ipv4.ip_forward").expect("get"), "0");
        assert_eq!(s.get("net.ipv4.conf.all.src_valid_mark").expect("get"), "0");
        assert!(s.saved().is_empty());
    }

    #[test]
    fn saved_values_survive_a_restart() {
        let dir = tree(&[("net.ipv4.ip_forward", "0")]);
        let mut first = ProcSysctl::with_root(dir.path());
        first.set("net.ipv4.ip_forward", "1").expect("set");
        let persisted = first.saved();
        let mut second = ProcSysctl::with_root(dir.path())
            .with_saved(persisted)
            .expect("valid saved state");
        second.restore().expect("restore");
        assert_eq!(second.get("net.ipv4.ip_forward").expect("get"), "0");
        let bad = vec![("../etc".to_owned(), "0".to_owned())];
        assert!(ProcSysctl::with_root(dir.path()).with_saved(bad).is_err());
    }

    #[test]
    fn missing_keys_and_bad_values_change_nothing() {
        let dir = tree(&[("net.ipv4.ip_forward", "0")]);
        let mut s = ProcSysctl::with_root(dir.path());
        assert!(matches!(
            s.set("net.ipv4.nope", "1"),
            Err(SysctlError::NotFound(_))
        ));
        assert!(matches!(
            s.set("net.ipv4.ip_forward", "1\n0"),
            Err(SysctlError::InvalidValue { .. })
        ));
        assert_eq!(s.get("net.ipv4.ip_forward").expect("get"), "0");
        assert!(s.saved().is_empty());
    }

    #[test]
    fn whitespace_insensitive_compare() {
        let dir = tree(&[("net.ipv4.ip_local_port_range", "32768\t60999")]);
        let mut s = ProcSysctl::with_root(dir.path());
        assert!(
            !s.set("net.ipv4.ip_local_port_range", "32768 60999")
                .expect("set")
        );
    }

    #[test]
    fn fake_records_and_restores() {
        let mut f = FakeSysctl::with_values([("net.ipv4.ip_forward", "0")]);
        assert!(f.set("net.ipv4.ip_forward", "1").expect("set"));
        assert_eq!(f.value("net.ipv4.ip_forward").as_deref(), Some("1"));
        f.restore().expect("restore");
        assert_eq!(f.value("net.ipv4.ip_forward").as_deref(), Some("0"));
        assert_eq!(
            f.calls(),
            vec![("net.ipv4.ip_forward".to_owned(), Some("1".to_owned()))]
        );
        assert!(matches!(
            f.set("../x", "1"),
            Err(SysctlError::InvalidKey { .. })
        ));
    }
}
