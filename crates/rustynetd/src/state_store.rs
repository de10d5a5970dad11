//! Durable daemon state: keys, enrollment, preferences, and the
//! last-known-safe generation with the generation high-water mark.
//!
//! The state file is written atomically (temp file, fsync, rename, fsync the
//! directory) and sealed with an HMAC whose key lives beside it (owner-only).
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
use rustynet_proto::{NodeId, NodeSigningKey, SignedEnvelope, SigningPublicKey};
use rustynet_tunnel::TunnelPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

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

/// What the node learned when it enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// `https://HOST:PORT`.
    pub control_url: String,
    /// The pinned CA.
    pub ca_pem: String,
    /// This node's id.
    pub node_id: NodeId,
    /// The pinned map-signing key.
    pub control_signing_key: SigningPublicKey,
    /// Assigned host label.
    pub hostname: String,
    /// What the control host resolved to when the node connected (used
    /// first, so a hostile network's DNS later cannot steer the control
    /// connection; TLS with the pinned CA guards it either way).
    #[serde(default)]
    pub control_addrs: Vec<std::net::SocketAddr>,
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
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    kek: Option<std::sync::Arc<Kek>>,
}

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
        Ok(Self { dir, kek: None })
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

    fn mac(&self, key: &[u8], body: &[u8]) -> Result<Hmac<Sha256>, StateError> {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(key).map_err(|_| {
            StateError::Integrity {
                path: self.path(MAC_KEY_FILE),
                reason: "unusable MAC key".into(),
            }
        })?;
        mac.update(b"rustynet state v1\0");
        mac.update(body);
        Ok(mac)
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
        self.mac(&key, &body)?
            .verify_slice(&tag)
            .map_err(|_| integrity("MAC does not match (corrupted or modified)"))?;
        let state: PersistedState =
            serde_json::from_slice(&body).map_err(|_| integrity("sealed state does not parse"))?;
        if state.version != STATE_VERSION {
            return Err(integrity("unknown state version"));
        }
        Ok(Some(state))
    }

    /// Saves the state atomically and durably.
    pub fn save(&self, state: &PersistedState) -> Result<(), StateError> {
        let key = self.mac_key(true)?;
        let body = serde_json::to_vec(state).map_err(|e| StateError::Integrity {
            path: self.path(STATE_FILE),
            reason: format!("cannot serialize state: {e}"),
        })?;
        let tag = self.mac(&key, &body)?.finalize().into_bytes();
        let sealed = SealedFile {
            v: STATE_VERSION,
            mac: B64.encode(tag),
            body: B64.encode(&body),
        };
        let bytes = serde_json::to_vec(&sealed).unwrap_or_default();
        let path = self.path(STATE_FILE);
        rustynet_netos::write_atomic(&path, &bytes, 0o600).map_err(io_err(&path))
    }

    /// Deletes the state file (keeps keys): used by `down` after a failure
    /// the operator chose to clear.
    pub fn clear(&self) -> Result<(), StateError> {
        let path = self.path(STATE_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Stores `keys` as the node's keys, replacing any before (atomically,
    /// owner-only, sealed when a key-encryption secret is configured). A new
    /// enrollment brings new keys: control refuses keys it already knows.
    pub fn store_keys(&self, keys: &NodeKeys) -> Result<(), StateError> {
        let text = Zeroizing::new(format!(
            "{KEYS_HEADER}\ntunnel {}\nsigning {}\n",
            keys.tunnel.to_base64().as_str(),
            B64.encode(*keys.signing.seed())
        ));
        let stored = match &self.kek {
            Some(kek) => Zeroizing::new(format!("{}\n", kek.seal(KEYS_LABEL, text.as_bytes()))),
            None => text,
        };
        write_secret(&self.path(KEYS_FILE), stored.as_bytes())
    }

    /// Loads the node keys, creating them on first use with `generate`.
    pub fn keys_or_create(
        &self,
        generate: impl FnOnce() -> TunnelPrivateKey,
    ) -> Result<NodeKeys, StateError> {
        let path = self.path(KEYS_FILE);
        if !path.exists() {
            self.store_keys(&NodeKeys::generate(generate))?;
        }
        check_owner_only(&path)?;
        let raw = Zeroizing::new(fs::read_to_string(&path).map_err(io_err(&path))?);
        let bad = || StateError::Integrity {
            path: path.clone(),
            reason: "key file is malformed".into(),
        };
        let text = if keyseal::is_sealed(&raw) {
            let kek = self.kek.as_ref().ok_or_else(|| StateError::Integrity {
                path: path.clone(),
                reason: "key file is encrypted; pass --key-encryption-file".into(),
            })?;
            let plain = kek
                .open(KEYS_LABEL, &raw)
                .map_err(|e| StateError::Integrity {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| bad())?)
        } else {
            raw
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

    #[test]
    fn prefs_from_before_the_dns_toggle_load() {
        let old = r#"{"want_up":true,"exit_node":null,"lan_access":false,"advertise_exit_node":false,"advertise_routes":[]}"#;
        let prefs: Prefs = serde_json::from_str(old).unwrap();
        assert!(prefs.want_up && !prefs.protect_dns);
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

    #[test]
    fn stored_keys_replace_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        let old = store
            .keys_or_create(|| TunnelPrivateKey::from_bytes([5; 32]))
            .unwrap();
        let fresh = NodeKeys::generate(|| TunnelPrivateKey::from_bytes([7; 32]));
        assert_ne!(fresh.signing.public(), old.signing.public());
        store.store_keys(&fresh).unwrap();
        let loaded = store
            .keys_or_create(|| TunnelPrivateKey::from_bytes([9; 32]))
            .unwrap();
        assert_eq!(loaded.tunnel.as_bytes(), &[7; 32]);
        assert_eq!(loaded.signing.public(), fresh.signing.public());
        let mode = fs::metadata(dir.path().join("s/node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn keys_encrypted_under_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let kek = || Kek::from_secret(&[1u8; 40]).unwrap();
        let store = StateStore::open(dir.path().join("s"))
            .unwrap()
            .with_key_encryption(kek());
        let a = store
            .keys_or_create(|| TunnelPrivateKey::from_bytes([5; 32]))
            .unwrap();
        let raw = fs::read_to_string(dir.path().join("s/node.key")).unwrap();
        assert!(keyseal::is_sealed(&raw) && !raw.contains(a.tunnel.to_base64().as_str()));
        let again = StateStore::open(dir.path().join("s"))
            .unwrap()
            .with_key_encryption(kek());
        let b = again
            .keys_or_create(|| TunnelPrivateKey::from_bytes([6; 32]))
            .unwrap();
        assert_eq!(a.signing.public(), b.signing.public());
        let plain = StateStore::open(dir.path().join("s")).unwrap();
        assert!(matches!(
            plain.keys_or_create(|| TunnelPrivateKey::from_bytes([6; 32])),
            Err(StateError::Integrity { .. })
        ));
    }

    #[test]
    fn keys_created_once_owner_only_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path().join("s")).unwrap();
        let a = store
            .keys_or_create(|| TunnelPrivateKey::from_bytes([5; 32]))
            .unwrap();
        let b = store
            .keys_or_create(|| TunnelPrivateKey::from_bytes([6; 32]))
            .unwrap();
        assert_eq!(a.tunnel.as_bytes(), b.tunnel.as_bytes());
        assert_eq!(a.signing.public(), b.signing.public());
        let path = dir.path().join("s/node.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            store.keys_or_create(|| TunnelPrivateKey::from_bytes([5; 32])),
            Err(StateError::Permissions { .. })
        ));
    }
}
