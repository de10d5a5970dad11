//! The control server's data directory: CA, TLS certificate, signing key and
//! database, with owner-only permissions that are checked on every open.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustynet_proto::handover::KeyHandover;
use rustynet_proto::keyseal::Kek;
use rustynet_proto::{NodeSigningKey, SigningPublicKey};
use zeroize::Zeroizing;

use crate::pki::{self, PkiError};
use crate::store::{CopyReport, DatabaseUrl, PostgresStore, SqliteStore, Store, StoreError};

const SIGNING_KEY_HEADER: &str = "rustynet control signing key v1";
const SIGNING_KEY_LABEL: &str = "rustynet control signing key";
const CA_KEY_LABEL: &str = "rustynet control CA key";
const TLS_KEY_LABEL: &str = "rustynet control TLS key";

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

/// A secret file's contents.
enum Secret {
    /// Was sealed; this is what it sealed.
    Sealed(Zeroizing<Vec<u8>>),
    /// Was stored in the clear.
    Plain(Zeroizing<Vec<u8>>),
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    kek: Option<std::sync::Arc<Kek>>,
    database: Option<DatabaseUrl>,
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

/// Replaces `path` with `contents` (0600) so that a crash leaves either
/// the old file or the new one: a temporary file beside it, synced, renamed
/// over it, and the directory synced.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), DataDirError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp-rewrite");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, contents, 0o600)?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Refuses a secret file readable or writable by group or others.
pub fn check_owner_only(path: &Path) -> Result<(), DataDirError> {
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
            database: None,
        }
    }

    /// Keeps the store in the PostgreSQL database at `url` instead of the
    /// directory's SQLite file (replicas share one database; the directory
    /// still holds the CA, TLS and signing keys, copied to every replica).
    pub fn with_database(mut self, url: Option<DatabaseUrl>) -> Self {
        self.database = url;
        self
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
    /// The map-signing key file (its modification time tells `serve` a
    /// rotation happened).
    pub fn signing_key_path(&self) -> PathBuf {
        self.root.join("signing.key")
    }
    fn next_signing_key_path(&self) -> PathBuf {
        self.root.join("signing.key.next")
    }
    fn handovers_path(&self) -> PathBuf {
        self.root.join("signing.handovers")
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
        // A database another control server initialized is refused before
        // any key is written.
        if let Some(url) = &self.database
            && crate::store::open_postgres(url)?.suffix().is_ok()
        {
            return Err(StoreError::AlreadyInitialized.into());
        }
        fs::create_dir_all(&self.root).map_err(io_err(&self.root))?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&self.root))?;
        let pki = pki::generate(sans)?;
        write_new(&self.ca_cert(), pki.ca_cert_pem.as_bytes(), 0o644)?;
        let ca_key = self.sealed_if_configured(CA_KEY_LABEL, pki.ca_key_pem.as_bytes());
        write_new(&self.ca_key(), ca_key.as_bytes(), 0o600)?;
        write_new(&self.server_cert(), pki.server_cert_pem.as_bytes(), 0o644)?;
        let tls_key = self.sealed_if_configured(TLS_KEY_LABEL, pki.server_key_pem.as_bytes());
        write_new(&self.server_key(), tls_key.as_bytes(), 0o600)?;
        let key = NodeSigningKey::generate(&mut rand_core::OsRng);
        write_new(
            &self.signing_key_path(),
            self.signing_key_text(&key).as_bytes(),
            0o600,
        )?;
        match &self.database {
            Some(url) => drop(PostgresStore::create(url.config()?, suffix)?),
            None => {
                SqliteStore::create(&self.db_path(), suffix)?;
                fs::set_permissions(self.db_path(), fs::Permissions::from_mode(0o600))
                    .map_err(io_err(&self.db_path()))?;
            }
        }
        Ok(InitReport {
            ca_cert: self.ca_cert(),
            signing_public_key: key.public(),
        })
    }

    /// Opens the store: the PostgreSQL database when one was given, else
    /// the directory's SQLite file (checking it is owner-only).
    pub fn open_store(&self) -> Result<Box<dyn Store>, DataDirError> {
        if let Some(url) = &self.database {
            return Ok(Box::new(crate::store::open_postgres(url)?));
        }
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
        Ok(Box::new(SqliteStore::open(&db)?))
    }

    /// Copies this directory's SQLite store into the empty PostgreSQL
    /// database at `url` (`rustynet-control migrate-store`); the SQLite
    /// file is left as it was.
    pub fn migrate_store_to(&self, url: &DatabaseUrl) -> Result<CopyReport, DataDirError> {
        let db = self.db_path();
        check_owner_only(&db)?;
        Ok(crate::store::copy_sqlite_to_postgres(&db, url)?)
    }

    /// `plaintext` as it is written to a key file: sealed under the
    /// key-encryption secret when one is configured.
    fn sealed_if_configured(&self, label: &str, plaintext: &[u8]) -> Zeroizing<String> {
        Zeroizing::new(match &self.kek {
            Some(kek) => format!("{}\n", kek.seal(label, plaintext)),
            None => String::from_utf8_lossy(plaintext).into_owned(),
        })
    }

    /// Reads a secret file: owner-only or refused; sealed ones are opened
    /// with the key-encryption secret (refused without one).
    fn read_secret(&self, path: &Path, label: &str) -> Result<Secret, DataDirError> {
        check_owner_only(path)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
        if !rustynet_proto::keyseal::is_sealed(&text) {
            return Ok(Secret::Plain(Zeroizing::new(text.as_bytes().to_vec())));
        }
        let kek = self
            .kek
            .as_ref()
            .ok_or_else(|| DataDirError::KeyEncrypted(path.to_owned()))?;
        kek.open(label, &text)
            .map(Secret::Sealed)
            .map_err(|e| DataDirError::Seal(path.to_owned(), e))
    }

    /// A plain key file found while a key-encryption secret is configured is
    /// not accepted as it is: it is replaced, atomically, by `plaintext`
    /// sealed, and the log says so. Without a secret, nothing happens.
    fn seal_in_place(
        &self,
        path: &Path,
        label: &str,
        plaintext: &[u8],
    ) -> Result<(), DataDirError> {
        if let Some(kek) = &self.kek {
            let sealed = Zeroizing::new(format!("{}\n", kek.seal(label, plaintext)));
            write_atomic(path, sealed.as_bytes())?;
            tracing::warn!(file = %path.display(), "plaintext key file found while a key-encryption secret is configured: encrypted it in place");
        }
        Ok(())
    }

    /// A PEM key file's contents, encrypting it in place if it was plain
    /// and a secret is configured.
    fn pem_key(&self, path: &Path, label: &str) -> Result<Zeroizing<Vec<u8>>, DataDirError> {
        match self.read_secret(path, label)? {
            Secret::Sealed(pem) => Ok(pem),
            Secret::Plain(pem) => {
                self.seal_in_place(path, label, &pem)?;
                Ok(pem)
            }
        }
    }

    /// Loads the map-signing key (checking it is owner-only, and encrypting
    /// it in place if it was plain and a secret is configured).
    pub fn signing_key(&self) -> Result<NodeSigningKey, DataDirError> {
        self.read_signing_key(&self.signing_key_path())
    }

    fn read_signing_key(&self, path: &Path) -> Result<NodeSigningKey, DataDirError> {
        let path = path.to_owned();
        let bad = || DataDirError::BadKeyFile(path.clone());
        let (seed, plain) = match self.read_secret(&path, SIGNING_KEY_LABEL)? {
            Secret::Sealed(seed) => (seed, false),
            Secret::Plain(text) => {
                let text = std::str::from_utf8(&text).map_err(|_| bad())?;
                let mut lines = text.lines();
                if lines.next() != Some(SIGNING_KEY_HEADER) {
                    return Err(bad());
                }
                let seed = lines
                    .next()
                    .and_then(|l| B64.decode(l.trim()).ok())
                    .map(Zeroizing::new)
                    .ok_or_else(bad)?;
                (seed, true)
            }
        };
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| bad())?;
        if plain {
            self.seal_in_place(&path, SIGNING_KEY_LABEL, seed)?;
        }
        Ok(NodeSigningKey::from_seed(seed))
    }

    /// The handovers of every rotation so far, oldest first (empty before
    /// the first).
    pub fn signing_handovers(&self) -> Result<Vec<KeyHandover>, DataDirError> {
        let path = self.handovers_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| DataDirError::BadKeyFile(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Rotates the map-signing key: a new key, and a handover from the
    /// current key naming it, which `serve` sends with every map so nodes
    /// move their pin to the new key. The old private key is gone after
    /// this. Crash-safe: the new key is written beside the old one first,
    /// then the handover, then it replaces the old key
    /// ([`DataDir::finish_rotation`] completes an interrupted rotation).
    pub fn rotate_signing_key(&self, now: i64) -> Result<KeyHandover, DataDirError> {
        self.finish_rotation()?;
        let current = self.signing_key()?;
        let next = NodeSigningKey::generate(&mut rand_core::OsRng);
        let next_path = self.next_signing_key_path();
        write_atomic(&next_path, self.signing_key_text(&next).as_bytes())?;
        let handover = KeyHandover::sign(&current, next.public(), now);
        let mut chain = self.signing_handovers()?;
        chain.push(handover.clone());
        let json = serde_json::to_vec_pretty(&chain).unwrap_or_default();
        write_atomic(&self.handovers_path(), &json)?;
        self.finish_rotation()?;
        Ok(handover)
    }

    /// Completes a rotation interrupted after its handover was written (the
    /// new key then waits beside the old one), or drops a new key that no
    /// handover names (interrupted before).
    pub fn finish_rotation(&self) -> Result<(), DataDirError> {
        let next_path = self.next_signing_key_path();
        if !next_path.exists() {
            return Ok(());
        }
        let next = self.read_signing_key(&next_path)?;
        let named = self
            .signing_handovers()?
            .last()
            .is_some_and(|h| h.to == next.public());
        if named {
            let path = self.signing_key_path();
            fs::rename(&next_path, &path).map_err(io_err(&path))?;
            fs::File::open(&self.root)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.root))?;
            tracing::info!(key = %next.public(), "control signing key rotated");
        } else {
            fs::remove_file(&next_path).map_err(io_err(&next_path))?;
        }
        Ok(())
    }

    /// A signing key's file contents (sealed when a secret is configured).
    fn signing_key_text(&self, key: &NodeSigningKey) -> Zeroizing<String> {
        Zeroizing::new(match &self.kek {
            Some(kek) => format!("{}\n", kek.seal(SIGNING_KEY_LABEL, key.seed().as_ref())),
            None => format!("{SIGNING_KEY_HEADER}\n{}\n", B64.encode(*key.seed())),
        })
    }

    /// The TLS private key's PEM, from `server.key` (owner-only; opened
    /// or, when a secret is configured and it is plain, encrypted in place).
    pub fn server_key_pem(&self) -> Result<Zeroizing<Vec<u8>>, DataDirError> {
        self.pem_key(&self.server_key(), TLS_KEY_LABEL)
    }

    /// `cert reissue`: a new TLS server key and certificate for `sans`,
    /// signed by the same CA, so enrolled nodes (which pin the CA) keep
    /// connecting. Nothing is written unless every name is valid. The key
    /// is replaced first, then the certificate, each atomically; `serve`
    /// reads them at start.
    pub fn reissue_server_cert(&self, sans: &[String]) -> Result<(), DataDirError> {
        let ca_key = self.pem_key(&self.ca_key(), CA_KEY_LABEL)?;
        let ca_key =
            std::str::from_utf8(&ca_key).map_err(|_| DataDirError::BadKeyFile(self.ca_key()))?;
        let (cert, key) = pki::reissue(sans, ca_key)?;
        let key = Zeroizing::new(key);
        let sealed = self.sealed_if_configured(TLS_KEY_LABEL, key.as_bytes());
        write_atomic(&self.server_key(), sealed.as_bytes())?;
        write_atomic(&self.server_cert(), cert.as_bytes())?;
        fs::set_permissions(self.server_cert(), fs::Permissions::from_mode(0o644))
            .map_err(io_err(&self.server_cert()))
    }

    /// Checks every secret file at start: owner-only, and encrypted when a
    /// key-encryption secret is configured (plain ones are encrypted in
    /// place). `serve` does not use the CA key, but it is held to the same
    /// rules.
    pub fn check_secrets(&self) -> Result<(), DataDirError> {
        self.pem_key(&self.ca_key(), CA_KEY_LABEL)?;
        self.server_key_pem()?;
        self.signing_key()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn tls_and_ca_keys_are_sealed_under_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctl");
        let kek = || Kek::from_secret(&[3u8; 32]).unwrap();
        let dd = DataDir::new(&root).with_key_encryption(kek());
        dd.init("rustynet.internal", &[]).unwrap();
        for name in ["ca.key", "server.key", "signing.key"] {
            let text = fs::read_to_string(root.join(name)).unwrap();
            assert!(rustynet_proto::keyseal::is_sealed(&text), "{name}");
            assert!(!text.contains("PRIVATE KEY"), "{name}");
        }
        let pem = dd.server_key_pem().unwrap();
        assert!(String::from_utf8_lossy(&pem).contains("PRIVATE KEY"));
        dd.check_secrets().unwrap();
        assert!(matches!(
            DataDir::new(&root).server_key_pem(),
            Err(DataDirError::KeyEncrypted(_))
        ));
    }

    #[test]
    fn plain_key_files_are_encrypted_in_place_once_a_secret_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctl");
        let plain = DataDir::new(&root);
        let report = plain.init("rustynet.internal", &[]).unwrap();
        let pem = plain.server_key_pem().unwrap();
        let ca_pem = fs::read(root.join("ca.key")).unwrap();
        let kek = || Kek::from_secret(&[5u8; 32]).unwrap();
        let sealed = DataDir::new(&root).with_key_encryption(kek());
        sealed.check_secrets().unwrap();
        for name in ["ca.key", "server.key", "signing.key"] {
            let path = root.join(name);
            let text = fs::read_to_string(&path).unwrap();
            assert!(
                rustynet_proto::keyseal::is_sealed(&text),
                "{name} left plain"
            );
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        // Same keys, now readable only with the secret.
        assert_eq!(
            sealed.signing_key().unwrap().public(),
            report.signing_public_key
        );
        assert_eq!(*sealed.server_key_pem().unwrap(), *pem);
        let ca = kek()
            .open(
                CA_KEY_LABEL,
                &fs::read_to_string(root.join("ca.key")).unwrap(),
            )
            .unwrap();
        assert_eq!(*ca, ca_pem);
        assert!(matches!(
            DataDir::new(&root).signing_key(),
            Err(DataDirError::KeyEncrypted(_))
        ));
        assert!(!root.join("server.tmp-rewrite").exists());
    }

    #[test]
    fn every_secret_file_is_permission_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ctl");
        let dd = DataDir::new(&root);
        dd.init("rustynet.internal", &[]).unwrap();
        dd.check_secrets().unwrap();
        for name in ["ca.key", "server.key", "signing.key"] {
            let path = root.join(name);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
            let err = dd.check_secrets().unwrap_err();
            assert!(
                matches!(&err, DataDirError::Permissions { path: p, .. } if p == &path),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
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
