//! The control server's data directory: CA, TLS certificate, signing key and
//! database, with owner-only permissions that are checked on every open.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustynet_proto::keyseal::Kek;
use rustynet_proto::{NodeSigningKey, SigningPublicKey};
use zeroize::Zeroizing;

use crate::pki::{self, PkiError};
use crate::store::{SqliteStore, StoreError};

const SIGNING_KEY_HEADER: &str = "rustynet control signing key v1";
const SIGNING_KEY_LABEL: &str = "rustynet control signing key";

/// Why the data directory could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Filesystem error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `init` on a directory that already holds a control server.
    #[error("{0} is already initialized (refusing to overwrite keys)")]
    AlreadyInitialized(PathBuf),
    /// A secret file is readable by group or others.
    #[error("{path} has mode {mode:o}; secrets must be owner-only (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The signing key file is malformed.
    #[error("{0}: not a valid control signing key file")]
    BadKeyFile(PathBuf),
    /// The signing key is encrypted and no key-encryption secret was given.
    #[error("{0} is encrypted: pass --key-encryption-file")]
    KeyEncrypted(PathBuf),
    /// The signing key could not be decrypted.
    #[error("{0}: {1}")]
    Seal(PathBuf, rustynet_proto::keyseal::SealError),
    /// The Magic DNS suffix is not a valid DNS name.
    #[error("invalid --suffix {0:?}: {1}")]
    BadSuffix(String, rustynet_proto::names::NameError),
    /// Certificate generation failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    kek: Option<std::sync::Arc<Kek>>,
}

/// What `init` reports.
#[derive(Debug)]
pub struct InitReport {
    /// The CA certificate nodes pin.
    pub ca_cert: PathBuf,
    /// Public half of the map-signing key.
    pub signing_public_key: SigningPublicKey,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DataDirError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(contents).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn check_owner_only(path: &Path) -> Result<(), DataDirError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(DataDirError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

impl DataDir {
    /// A data directory rooted at `root` (nothing is touched yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            kek: None,
        }
    }

    /// Keeps the signing key encrypted under `kek` (written so by `init`,
    /// required to load it).
    pub fn with_key_encryption(mut self, kek: Kek) -> Self {
        self.kek = Some(std::sync::Arc::new(kek));
        self
    }

    /// The CA certificate nodes pin.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    /// The TLS server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    /// The TLS server private key.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    /// The embedded relay's TLS certificate (made by `serve
    /// --relay-listen` on first use).
    pub fn relay_cert(&self) -> PathBuf {
        self.root.join("relay.pem")
    }
    /// The embedded relay's TLS private key (owner-only).
    pub fn relay_key(&self) -> PathBuf {
        self.root.join("relay.key")
    }
    fn signing_key_path(&self) -> PathBuf {
        self.root.join("signing.key")
    }
    fn db_path(&self) -> PathBuf {
        self.root.join("control.db")
    }

    /// Creates the directory (0700), the CA and server certificate, the
    /// signing key (0600) and the database. Refuses to overwrite.
    pub fn init(&self, suffix: &str, sans: &[String]) -> Result<InitReport, DataDirError> {
        rustynet_proto::names::validate_dns_name(suffix)
            .map_err(|e| DataDirError::BadSuffix(suffix.to_owned(), e))?;
        if self.signing_key_path().exists() || self.db_path().exists() {
            return Err(DataDirError::AlreadyInitialized(self.root.clone()));
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.root))?;
        let pki = pki::generate(sans)?;
        write_new(&self.ca_cert(), pki.ca_cert_pem.as_bytes(), 0o644)?;
        write_new(&self.ca_key(), pki.ca_key_pem.as_bytes(), 0o600)?;
        write_new(&self.server_cert(), pki.server_cert_pem.as_bytes(), 0o644)?;
        write_new(&self.server_key(), pki.server_key_pem.as_bytes(), 0o600)?;
        let key = NodeSigningKey::generate(&mut rand_core::OsRng);
        let text = Zeroizing::new(match &self.kek {
            Some(kek) => format!("{}\n", kek.seal(SIGNING_KEY_LABEL, key.seed().as_ref())),
            None => format!("{SIGNING_KEY_HEADER}\n{}\n", B64.encode(*key.seed())),
        });
        write_new(&self.signing_key_path(), text.as_bytes(), 0o600)?;
        SqliteStore::create(&self.db_path(), suffix)?;
        fs::set_permissions(self.db_path(), fs::Permissions::from_mode(0o600))
            .map_err(io_err(&self.db_path()))?;
        Ok(InitReport {
            ca_cert: self.ca_cert(),
            signing_public_key: key.public(),
        })
    }

    /// Opens the database (checking it is owner-only).
    pub fn open_store(&self) -> Result<SqliteStore, DataDirError> {
        let db = self.db_path();
        if !db.exists() {
            return Err(DataDirError::Io {
                path: db,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no database (run `rustynet-control init` first)",
                ),
            });
        }
        check_owner_only(&db)?;
        Ok(SqliteStore::open(&db)?)
    }

    /// Loads the map-signing key (checking it is owner-only).
    pub fn signing_key(&self) -> Result<NodeSigningKey, DataDirError> {
        let path = self.signing_key_path();
        check_owner_only(&path)?;
        let text = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
        let seed = if rustynet_proto::keyseal::is_sealed(&text) {
            let kek = self
                .kek
                .as_ref()
                .ok_or_else(|| DataDirError::KeyEncrypted(path.clone()))?;
            kek.open(SIGNING_KEY_LABEL, &text)
                .map_err(|e| DataDirError::Seal(path.clone(), e))?
        } else {
            let mut lines = text.lines();
            if lines.next() != Some(SIGNING_KEY_HEADER) {
                return Err(DataDirError::BadKeyFile(path));
            }
            lines
                .next()
                .and_then(|l| B64.decode(l.trim()).ok())
                .map(Zeroizing::new)
                .ok_or_else(|| DataDirError::BadKeyFile(path.clone()))?
        };
        let seed: &[u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| DataDirError::BadKeyFile(path.clone()))?;
        Ok(NodeSigningKey::from_seed(seed))
    }

    /// Checks the TLS private key is owner-only.
    pub fn check_server_key(&self) -> Result<(), DataDirError> {
        check_owner_only(&self.server_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store as _;

    #[test]
    fn init_then_open_and_permission_checks() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path().join("ctl"));
        let report = dd.init("rustynet.internal", &["localhost".into()]).unwrap();
        assert_eq!(
            dd.signing_key().unwrap().public(),
            report.signing_public_key
        );
        assert_eq!(
            dd.open_store().unwrap().suffix().unwrap(),
            "rustynet.internal"
        );
        assert!(matches!(
            dd.init("rustynet.internal", &[]),
            Err(DataDirError::AlreadyInitialized(_))
        ));
        fs::set_permissions(dd.signing_key_path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            dd.signing_key(),
            Err(DataDirError::Permissions { .. })
        ));
    }

    #[test]
    fn signing_key_encrypted_under_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctl");
        let kek = || Kek::from_secret(&[3u8; 32]).unwrap();
        let dd = DataDir::new(&root).with_key_encryption(kek());
        let report = dd.init("rustynet.internal", &[]).unwrap();
        let text = fs::read_to_string(root.join("signing.key")).unwrap();
        assert!(rustynet_proto::keyseal::is_sealed(&text));
        assert_eq!(
            dd.signing_key().unwrap().public(),
            report.signing_public_key
        );
        assert!(matches!(
            DataDir::new(&root).signing_key(),
            Err(DataDirError::KeyEncrypted(_))
        ));
        let wrong = DataDir::new(&root).with_key_encryption(Kek::from_secret(&[4u8; 32]).unwrap());
        assert!(matches!(wrong.signing_key(), Err(DataDirError::Seal(..))));
    }

    #[test]
    fn bad_suffix_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let dd = DataDir::new(dir.path().join("ctl"));
        assert!(matches!(
            dd.init("Bad_Suffix", &[]),
            Err(DataDirError::BadSuffix(..))
        ));
        assert!(!dir.path().join("ctl").exists());
    }
}
