//! Durable daemon state: keys, enrollment, preferences, and the
//! last-known-safe generation with the generation high-water mark.
//!
//! The state file is written atomically (temp file, fsync, rename, fsync the
//! directory) and sealed with an HMAC. The node's private keys travel in the
//! same file (sealed with the key-encryption secret when one is configured),
//! so keys and the enrollment they belong to are replaced in one atomic
//! write: a crash can never leave new keys beside the old enrollment.
//!
//! The HMAC key lives beside the state (owner-only). Without a
//! key-encryption secret the MAC detects corruption, not tampering by
//! someone who can write the directory (they can read the MAC key too).
//! With a secret, the MAC key is bound to it (derived from the file key and
//! the secret), so the state cannot be rewritten without the secret either.
//! A missing key, a bad MAC, a truncated or unparseable file is an
//! [`StateError::Integrity`] failure: the daemon then starts restricted and
//! fail-closed and says why, instead of guessing.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac as _};
use ipnet::IpNet;
use rand_core::RngCore as _;
use rustynet_proto::keyseal::{self, Kek};
use rustynet_proto::{NodeSigningKey, SignedEnvelope};
use rustynet_tunnel::TunnelPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

mod enrollment;

pub use enrollment::Enrollment;

const STATE_FILE: &str = "state.json";
const MAC_KEY_FILE: &str = "state.mac-key";
const KEYS_FILE: &str = "node.key";
const KEYS_HEADER: &str = "rustynet node keys v1";
const KEYS_LABEL: &str = "rustynet node keys";
/// Version of [`PersistedState`].
pub const STATE_VERSION: u16 = 1;
/// Largest state file read (a map plus change).
const MAX_STATE_BYTES: u64 = 32 * 1024 * 1024;

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        #[source]
        source: std::io::Error,
    },
    /// The state failed its integrity check; the daemon must not trust it.
    #[error("state integrity check failed ({path}): {reason}")]
    Integrity {
        /// File.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A secret file is readable by group or others.
    #[error("{path} has mode {mode:o}; must be owner-only (chmod 600)")]
    Permissions {
        /// File.
        path: PathBuf,
        /// Mode bits.
        mode: u32,
    },
}

/// What the user asked for; survives restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    /// `up` was requested (and not `down`).
    pub want_up: bool,
    /// Selected exit node (host label).
    pub exit_node: Option<String>,
    /// LAN access toggle.
    pub lan_access: bool,
    /// Offer to be an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes offered.
    pub advertise_routes: Vec<IpNet>,
    /// Protected DNS on demand (`rustynet dns protect on`); absent in state
    /// written before the toggle existed.
    #[serde(default)]
    pub protect_dns: bool,
    /// As a router, forward clients into approved routes with their own
    /// tunnel addresses (`up --snat-subnet-routes=false`); absent (SNAT on)
    /// in state written before the option existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_snat_subnet_routes: bool,
    /// `local-lan`: reach the node's own on-link LAN while an exit is in
    /// use; absent in older state (off).
    #[serde(default)]
    pub local_lan: bool,
    /// Lockdown mode (`rustynet set lockdown on`): nothing but the tunnel
    /// and the daemon's own sockets leaves the node, with or without an
    /// exit, connected or not, daemon running or not; absent in older
    /// state (off).
    #[serde(default)]
    pub lockdown: bool,
}

/// The sealed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// [`STATE_VERSION`].
    pub version: u16,
    /// Set once enrolled.
    pub enrollment: Option<Enrollment>,
    /// User preferences.
    pub prefs: Prefs,
    /// The last generation applied successfully, exactly as received.
    pub last_known_safe: Option<SignedEnvelope>,
    /// Its generation.
    pub last_known_safe_generation: u64,
    /// Highest generation ever accepted (replay protection).
    pub high_water: u64,
    /// Sysctl values to restore (key, original value) after a crash.
    pub saved_sysctls: Vec<(String, String)>,
}

impl Default for PersistedState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            enrollment: None,
            prefs: Prefs::default(),
            last_known_safe: None,
            last_known_safe_generation: 0,
            high_water: 0,
            saved_sysctls: vec![],
        }
    }
}

/// The node's private keys.
pub struct NodeKeys {
    /// Tunnel private key.
    pub tunnel: TunnelPrivateKey,
    /// Request-signing key.
    pub signing: NodeSigningKey,
}

impl NodeKeys {
    /// A fresh pair: the tunnel key from `tunnel` (the engine's generator)
    /// and a new signing key.
    pub fn generate(tunnel: impl FnOnce() -> TunnelPrivateKey) -> Self {
        Self {
            tunnel: tunnel(),
            signing: NodeSigningKey::generate(&mut rand_core::OsRng),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    v: u16,
    mac: String,
    body: String,
    /// The node keys as stored (sealed when a secret is configured);
    /// covered by the MAC. Absent in files written before keys moved here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<String>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    kek: Option<std::sync::Arc<Kek>>,
    /// The node keys as the next [`StateStore::save`] writes them: read by
    /// [`StateStore::load`], replaced by [`StateStore::store_keys`].
    keys: std::sync::Arc<std::sync::Mutex<Option<Zeroizing<String>>>>,
}

/// Label of the integrity key derived from the key-encryption secret.
const MAC_BINDING_LABEL: &str = "rustynet state mac v1";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_owner_only(path: &Path) -> Result<(), StateError> {
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn write_secret(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    rustynet_netos::write_atomic(path, contents, 0o600).map_err(io_err(path))
}

impl StateStore {
    /// Opens (creating, owner-only) the state directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            kek: None,
            keys: Default::default(),
        })
    }

    /// Keeps the node keys encrypted under `kek` (an operator secret such as
    /// a systemd credential); without it they are owner-only plain files.
    pub fn with_key_encryption(mut self, kek: Kek) -> Self {
        self.kek = Some(std::sync::Arc::new(kek));
        self
    }

    /// Whether node keys are encrypted at rest.
    pub fn keys_encrypted(&self) -> bool {
        self.kek.is_some()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn mac_key(&self, create: bool) -> Result<Zeroizing<Vec<u8>>, StateError> {
        let path = self.path(MAC_KEY_FILE);
        if !path.exists() && create {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            rand_core::OsRng.fill_bytes(&mut key);
            write_secret(&path, &key)?;
        }
        check_owner_only(&path)?;
        let key = Zeroizing::new(fs::read(&path).map_err(io_err(&path))?);
        if key.len() != 32 {
            return Err(StateError::Integrity {
                path,
                reason: "MAC key has the wrong length".into(),
            });
        }
        Ok(key)
    }

    fn mac(
        &self,
        key: &[u8],
        bound: bool,
        body: &[u8],
        keys: Option<&str>,
    ) -> Result<Hmac<Sha256>, StateError> {
        let unusable = || StateError::Integrity {
            path: self.path(MAC_KEY_FILE),
            reason: "unusable MAC key".into(),
        };
        // Bound to the secret: the key is HMAC(secret-derived, file key).
        let bound_key = match (&self.kek, bound) {
            (Some(kek), true) => {
                let mut binder = <Hmac<Sha256> as hmac::Mac>::new_from_slice(
                    kek.derive(MAC_BINDING_LABEL).as_ref(),
                )
                .map_err(|_| unusable())?;
                binder.update(key);
                Some(Zeroizing::new(binder.finalize().into_bytes().to_vec()))
            }
            _ => None,
        };
        let key = bound_key.as_deref().map_or(key, |k| k.as_slice());
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).map_err(|_| unusable())?;
        mac.update(b"rustynet state v1\0");
        mac.update(body);
        if let Some(keys) = keys {
            mac.update(b"\0keys\0");
            mac.update(keys.as_bytes());
        }
        Ok(mac)
    }

    fn cached_keys(&self) -> std::sync::MutexGuard<'_, Option<Zeroizing<String>>> {
        // Replacing an Option cannot panic halfway: a poisoned lock is fine.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the state. `Ok(None)` when the node never saved any (fresh).
    pub fn load(&self) -> Result<Option<PersistedState>, StateError> {
        let path = self.path(STATE_FILE);
        let integrity = |reason: &str| StateError::Integrity {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if meta.len() > MAX_STATE_BYTES {
            return Err(integrity("state file is implausibly large"));
        }
        let key = match self.mac_key(false) {
            Ok(key) => key,
            Err(StateError::Io { .. }) => return Err(integrity("MAC key is missing")),
            Err(e) => return Err(e),
        };
        check_owner_only(&path)?;
        let text = fs::read(&path).map_err(io_err(&path))?;
        let sealed: SealedFile = serde_json::from_slice(&text)
            .map_err(|_| integrity("state file is truncated or not JSON"))?;
        if sealed.v != STATE_VERSION {
            return Err(integrity("unknown state format version"));
        }
        let body = B64
            .decode(sealed.body.as_bytes())
            .map_err(|_| integrity("state body is not base64"))?;
        let tag = B64
            .decode(sealed.mac.as_bytes())
            .map_err(|_| integrity("state MAC is not base64"))?;
        let keys = sealed.keys.as_deref();
        if self
            .mac(&key, true, &body, keys)?
            .verify_slice(&tag)
            .is_err()
        {
            let unbound = self.kek.is_some()
                && self
                    .mac(&key, false, &body, keys)?
                    .verify_slice(&tag)
                    .is_ok();
            return Err(integrity(if unbound {
                "state was sealed without the key-encryption secret (written before it was \
                 configured, or by an older version); it is not trusted"
            } else {
                "MAC does not match (corrupted or modified)"
            }));
        }
        let state: PersistedState =
            serde_json::from_slice(&body).map_err(|_| integrity("sealed state does not parse"))?;
        if state.version != STATE_VERSION {
            return Err(integrity("unknown state version"));
        }
        *self.cached_keys() = sealed.keys.map(Zeroizing::new);
        Ok(Some(state))
    }

    /// Saves the state, with the node keys, atomically and durably.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let key = self.mac_key(true)?;
        let body = serde_json::to_vec(state).map_err(|e| StateError::Integrity {
            path: self.path(STATE_FILE),
            reason: format!("cannot serialize state: {e}"),
        })?;
        let keys = self.cached_keys().clone();
        let tag = self
            .mac(&key, true, &body, keys.as_deref().map(String::as_str))?
            .finalize()
            .into_bytes();
        let sealed = SealedFile {
            v: STATE_VERSION,
            mac: B64.encode(tag),
            body: B64.encode(&body),
            keys: keys.as_deref().cloned(),
        };
        let bytes = Zeroizing::new(serde_json::to_vec(&sealed).unwrap_or_default());
        drop(sealed);
        let path = self.path(STATE_FILE);
        rustynet_netos::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))?;
        // Keys written by versions that kept them in their own file now
        // live in the state: the old file goes once the state holds them.
        let legacy = self.path(KEYS_FILE);
        if keys.is_some() && legacy.exists() {
            fs::remove_file(&legacy).map_err(io_err(&legacy))?;
            tracing::info!(file = %legacy.display(), "node keys moved into the sealed state file");
        }
        Ok(())
    }

    /// Deletes the state file, and with it the enrollment and the keys that
    /// belong to it: used by `down` after a failure the operator chose to
    /// clear (the next `up` enrolls with fresh keys).
    pub fn clear(&self) -> Result<(), StateError> {
        *self.cached_keys() = None;
        let path = self.path(STATE_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Makes `keys` the node's keys, replacing any before. They are written
    /// by the next [`StateStore::save`], in the same atomic write as the
    /// enrollment they belong to (sealed when a key-encryption secret is
    /// configured): there is no moment on disk with new keys and the old
    /// enrollment. A new enrollment brings new keys: control refuses keys it
    /// already knows.
    pub fn store_keys(&self, keys: &NodeKeys) -> Result<(), StateError> {
        let text = Zeroizing::new(format!(
            "{KEYS_HEADER}\ntunnel {}\nsigning {}\n",
            keys.tunnel.to_base64().as_str(),
            B64.encode(*keys.signing.seed())
        ));
        *self.cached_keys() = Some(self.sealed_if_configured(text));
        Ok(())
    }

    fn sealed_if_configured(&self, text: Zeroizing<String>) -> Zeroizing<String> {
        match &self.kek {
            Some(kek) => Zeroizing::new(kek.seal(KEYS_LABEL, text.as_bytes())),
            None => text,
        }
    }

    /// The node keys: those of the loaded state; else those of a key file an
    /// older version wrote (encrypted in place first if it is plain while a
    /// secret is configured); else new ones made with `generate`. Whatever
    /// was found is written into the state by the next save.
    pub fn keys_or_create(
        &self,
        generate: impl FnOnce() -> TunnelPrivateKey,
    ) -> Result<NodeKeys, StateError> {
        let cached = self.cached_keys().clone();
        let (path, raw) = match cached {
            Some(raw) => (self.path(STATE_FILE), raw),
            None => {
                let path = self.path(KEYS_FILE);
                if !path.exists() {
                    let keys = NodeKeys::generate(generate);
                    self.store_keys(&keys)?;
                    return Ok(keys);
                }
                check_owner_only(&path)?;
                let raw = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
                let raw = self.migrate_legacy(&path, raw)?;
                *self.cached_keys() = Some(raw.clone());
                (path, raw)
            }
        };
        self.parse_keys(&path, &raw)
    }

    /// A plain legacy key file found while a secret is configured is sealed
    /// in place (atomically, with a log line), never used as it is.
    fn migrate_legacy(
        &self,
        path: &Path,
        raw: Zeroizing<String>,
    ) -> Result<Zeroizing<String>, StateError> {
        if self.kek.is_none() || keyseal::is_sealed(&raw) {
            return Ok(raw);
        }
        let sealed = self.sealed_if_configured(raw);
        write_secret(path, format!("{}\n", sealed.as_str()).as_bytes())?;
        tracing::warn!(file = %path.display(), "plaintext node key file found while a key-encryption secret is configured: encrypted it in place");
        Ok(sealed)
    }

    fn parse_keys(&self, path: &Path, raw: &str) -> Result<NodeKeys, StateError> {
        let path = path.to_owned();
        let bad = || StateError::Integrity {
            path: path.clone(),
            reason: "node keys are malformed".into(),
        };
        let text = if keyseal::is_sealed(raw) {
            let kek = self.kek.as_ref().ok_or_else(|| StateError::Integrity {
                path: path.clone(),
                reason: "key file is encrypted; pass --key-encryption-file".into(),
            })?;
            let plain = kek
                .open(KEYS_LABEL, raw)
                .map_err(|e| StateError::Integrity {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| bad())?)
        } else if self.kek.is_some() {
            // Only a state written without the secret could hold plain keys,
            // and such a state fails its MAC; refuse rather than use them.
            return Err(StateError::Integrity {
                path: path.clone(),
                reason: "node keys are not encrypted though a key-encryption secret is configured"
                    .into(),
            });
        } else {
            Zeroizing::new(raw.to_owned())
        };
        let mut lines = text.lines();
        if lines.next() != Some(KEYS_HEADER) {
            return Err(bad());
        }
        let tunnel = lines
            .next()
            .and_then(|l| l.strip_prefix("tunnel "))
            .and_then(|b| TunnelPrivateKey::from_base64(b).ok())
            .ok_or_else(bad)?;
        let seed = lines
            .next()
            .and_then(|l| l.strip_prefix("signing "))
            .and_then(|b| B64.decode(b).ok())
            .map(Zeroizing::new)
            .ok_or_else(bad)?;
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| bad())?;
        Ok(NodeKeys {
            tunnel,
            signing: NodeSigningKey::from_seed(seed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_proto::NodeId;

    #[test]
    fn prefs_from_before_the_dns_toggle_load() {
        let old = r#"{"want_up":true,"exit_node":null,"lan_access":false,"advertise_exit_node":false,"advertise_routes":[]}"#;
        let prefs: Prefs = serde_json::from_str(old).unwrap();
        assert!(prefs.want_up && !prefs.protect_dns);
    }

    /// State from before the key fingerprint and the refusal were kept
    /// loads (neither known); a refused node's state keeps the refusal,
    /// and a plain one writes neither field.
    #[test]
    fn enrollments_without_fingerprint_or_refusal_load_and_refusal_persists() {
        let mut e = enrollment(7);
        let mut plain = serde_json::to_value(&e).unwrap();
        assert!(plain.get("refused").is_none() && plain.get("auth_key_fingerprint").is_none());
        plain.as_object_mut().unwrap().remove("control_addrs");
        let old: Enrollment = serde_json::from_value(plain).unwrap();
        assert_eq!(old, e);
        e.refused = true;
        e.auth_key_fingerprint = Some("00ff".into());
        let back: Enrollment = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(back.refused);
        assert_eq!(back.auth_key_fingerprint.as_deref(), Some("00ff"));
    }

    fn sample() -> PersistedState {
        PersistedState {
            version: STATE_VERSION,
            high_water: 42,
            last_known_safe_generation: 41,
            prefs: Prefs {
                want_up: true,
                exit_node: Some("exit".into()),
                ..Prefs::default()
            },
            ..PersistedState::default()
        }
    }

    #[test]
    fn stored_envelopes_keep_their_bytes_in_both_versions() {
        use rustynet_proto::SignedBody;
        use rustynet_proto::envelope::BodyKind;
        let key = NodeSigningKey::from_seed(&[3; 32]);
        let body = SignedBody {
            kind: BodyKind::Netmap,
            node_id: NodeId(1),
            generation: 41,
            issued_at: 1,
            expires_at: 2,
            payload: serde_json::json!({"b": [1, "x\u{e9}"], "a": 0}),
        };
        let v2 = SignedEnvelope::seal(&key, &body).unwrap();
        // A state written before envelope v2 (base64 body) still loads; the
        // engine then refuses that map by its version and waits for control.
        let sig = "A".repeat(86) + "==";
        let v1: SignedEnvelope =
            serde_json::from_str(&format!(r#"{{"v":1,"body":"eyJr","sig":"{sig}"}}"#)).unwrap();
        for env in [v2, v1] {
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(dir.path().join("s")).unwrap();
            let state = PersistedState {
                last_known_safe: Some(env.clone()),
                ..sample()
            };
            store.save(&state).unwrap();
            let loaded = store.load().unwrap().unwrap().last_known_safe.unwrap();
            assert_eq!(loaded.body_bytes(), env.body_bytes());
            assert_eq!(loaded, env);
        }
    }

    #[test]
    fn a_default_state_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        store.save(&PersistedState::default()).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), PersistedState::default());
    }

    #[test]
    fn roundtrip_and_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), sample());
        let mode = fs::metadata(dir.path().join("s/state.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corruption_truncation_and_missing_key_fail_integrity() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        store.save(&sample()).unwrap();
        let path = dir.path().join("s/state.json");
        let good = fs::read(&path).unwrap();
        // Truncated.
        fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert!(matches!(store.load(), Err(StateError::Integrity { .. })));
        // A flipped byte inside the body.
        let mut bad = good.clone();
        let i = bad.len() / 2;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        fs::write(&path, &bad).unwrap();
        assert!(matches!(store.load(), Err(StateError::Integrity { .. })));
        // A body re-sealed without the key (forged).
        let mut sealed: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let mut forged = sample();
        forged.high_water = 0;
        sealed["body"] = B64.encode(serde_json::to_vec(&forged).unwrap()).into();
        fs::write(&path, serde_json::to_vec(&sealed).unwrap()).unwrap();
        assert!(matches!(store.load(), Err(StateError::Integrity { .. })));
        // Good file, key gone.
        fs::write(&path, &good).unwrap();
        fs::remove_file(dir.path().join("s/state.mac-key")).unwrap();
        assert!(matches!(store.load(), Err(StateError::Integrity { .. })));
    }

    fn enrollment(node: u64) -> Enrollment {
        Enrollment {
            control_addrs: Vec::new(),
            control_urls: vec!["https://127.0.0.1:8443".into()],
            ca_pem: "ca".into(),
            node_id: NodeId(node),
            control_signing_key: NodeSigningKey::from_seed(&[9; 32]).public(),
            hostname: "a".into(),
            auth_key_fingerprint: None,
            refused: false,
        }
    }

    fn tunnel(b: u8) -> impl FnOnce() -> TunnelPrivateKey {
        move || TunnelPrivateKey::from_bytes([b; 32])
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_and_enrollment_change_in_one_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        let old = store.keys_or_create(tunnel(5)).unwrap();
        let mut state = PersistedState {
            enrollment: Some(enrollment(1)),
            ..sample()
        };
        store.save(&state).unwrap();
        // Re-enrollment: new keys, then the new enrollment. A crash after the
        // keys were handed over but before the state was saved...
        let fresh = NodeKeys::generate(tunnel(7));
        store.store_keys(&fresh).unwrap();
        drop(store);
        let reopened = StateStore::open(dir.path().join("s")).unwrap();
        let loaded = reopened.load().unwrap().unwrap();
        let keys = reopened.keys_or_create(tunnel(9)).unwrap();
        // ...leaves the old keys with the old enrollment, never a mix.
        assert_eq!(loaded.enrollment, Some(enrollment(1)));
        assert_eq!(keys.signing.public(), old.signing.public());
        // Saved together, both change together.
        reopened.store_keys(&fresh).unwrap();
        state.enrollment = Some(enrollment(2));
        reopened.save(&state).unwrap();
        let again = StateStore::open(dir.path().join("s")).unwrap();
        assert_eq!(
            again.load().unwrap().unwrap().enrollment,
            Some(enrollment(2))
        );
        let keys = again.keys_or_create(tunnel(9)).unwrap();
        assert_eq!(keys.signing.public(), fresh.signing.public());
        assert_eq!(keys.tunnel.as_bytes(), &[7; 32]);
        assert!(!dir.path().join("s/node.key").exists());
        assert_eq!(mode(&dir.path().join("s/state.json")), 0o600);
    }

    #[test]
    fn a_key_file_of_an_older_version_moves_into_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("s/node.key");
        let store = StateStore::open(dir.path().join("s")).unwrap();
        let keys = NodeKeys::generate(tunnel(5));
        let text = format!(
            "{KEYS_HEADER}\ntunnel {}\nsigning {}\n",
            keys.tunnel.to_base64().as_str(),
            B64.encode(*keys.signing.seed())
        );
        write_secret(&legacy, text.as_bytes()).unwrap();
        let loaded = store.keys_or_create(tunnel(6)).unwrap();
        assert_eq!(loaded.signing.public(), keys.signing.public());
        store.save(&sample()).unwrap();
        assert!(!legacy.exists(), "the old key file stays beside the state");
        let again = StateStore::open(dir.path().join("s")).unwrap();
        again.load().unwrap();
        assert_eq!(
            again.keys_or_create(tunnel(6)).unwrap().signing.public(),
            keys.signing.public()
        );
    }

    #[test]
    fn a_plain_key_file_is_encrypted_in_place_when_a_secret_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("s/node.key");
        let keys = NodeKeys::generate(tunnel(5));
        let text = format!(
            "{KEYS_HEADER}\ntunnel {}\nsigning {}\n",
            keys.tunnel.to_base64().as_str(),
            B64.encode(*keys.signing.seed())
        );
        let store = StateStore::open(dir.path().join("s"))
            .unwrap()
            .with_key_encryption(Kek::from_secret(&[1u8; 40]).unwrap());
        write_secret(&legacy, text.as_bytes()).unwrap();
        let loaded = store.keys_or_create(tunnel(6)).unwrap();
        assert_eq!(loaded.signing.public(), keys.signing.public());
        let on_disk = fs::read_to_string(&legacy).unwrap();
        assert!(keyseal::is_sealed(&on_disk), "left in the clear");
        assert!(!on_disk.contains(keys.tunnel.to_base64().as_str()));
        assert_eq!(mode(&legacy), 0o600);
    }

    #[test]
    fn keys_are_sealed_under_a_secret_and_the_mac_is_bound_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let kek = || Kek::from_secret(&[1u8; 40]).unwrap();
        let open = |kek: Option<Kek>| {
            let s = StateStore::open(dir.path().join("s")).unwrap();
            match kek {
                Some(k) => s.with_key_encryption(k),
                None => s,
            }
        };
        let store = open(Some(kek()));
        let a = store.keys_or_create(tunnel(5)).unwrap();
        store.save(&sample()).unwrap();
        let path = dir.path().join("s/state.json");
        let raw = fs::read_to_string(&path).unwrap();
        assert!(!raw.contains(a.tunnel.to_base64().as_str()));
        let again = open(Some(kek()));
        assert_eq!(again.load().unwrap().unwrap(), sample());
        assert_eq!(
            again.keys_or_create(tunnel(6)).unwrap().signing.public(),
            a.signing.public()
        );
        // Without the secret, or with another, the state is not trusted.
        assert!(matches!(
            open(None).load(),
            Err(StateError::Integrity { .. })
        ));
        let other = open(Some(Kek::from_secret(&[2u8; 40]).unwrap()));
        assert!(matches!(other.load(), Err(StateError::Integrity { .. })));
        // Someone who can write the directory but lacks the secret re-seals
        // a changed state with the MAC key beside it: refused.
        let mut sealed: serde_json::Value = serde_json::from_str(&raw).unwrap();
        let mut forged = sample();
        forged.high_water = 0;
        let body = serde_json::to_vec(&forged).unwrap();
        let file_key = fs::read(dir.path().join("s/state.mac-key")).unwrap();
        let keys_field = sealed["keys"].as_str().map(str::to_owned);
        let tag = open(None)
            .mac(&file_key, false, &body, keys_field.as_deref())
            .unwrap()
            .finalize()
            .into_bytes();
        sealed["body"] = B64.encode(&body).into();
        sealed["mac"] = B64.encode(tag).into();
        fs::write(&path, serde_json::to_vec(&sealed).unwrap()).unwrap();
        let err = open(Some(kek())).load().unwrap_err();
        assert!(
            err.to_string()
                .contains("without the key-encryption secret"),
            "{err}"
        );
    }

    #[test]
    fn a_state_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        store.keys_or_create(tunnel(5)).unwrap();
        store.save(&sample()).unwrap();
        let path = dir.path().join("s/state.json");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(store.load(), Err(StateError::Permissions { .. })));
    }
}
