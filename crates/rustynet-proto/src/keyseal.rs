//! Encryption of key material at rest under an operator-provided
//! key-encryption secret (for example a systemd credential), with
//! ChaCha20-Poly1305. Without a secret, key files are plain but owner-only;
//! with one, a stolen file is useless without the secret.
//!
//! Format (one line): `rustynet-sealed-v1:<base64(nonce || ciphertext)>`; the
//! label is authenticated as associated data, so a blob sealed for one purpose
//! cannot be opened as another.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand_core::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const PREFIX: &str = "rustynet-sealed-v1:";

/// Why a sealed blob could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key-encryption secret is too short to be one.
    #[error("key-encryption secret is shorter than 32 bytes")]
    WeakSecret,
    /// Not a sealed blob.
    #[error("not a sealed key file")]
    Format,
    /// Wrong secret, wrong label, or the blob was modified.
    #[error("cannot decrypt: wrong key-encryption secret or modified file")]
    Decrypt,
}

/// A key-encryption key derived from an operator secret.
pub struct Kek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

/// Reads a key-encryption secret from a file the operator controls (for
/// example `$CREDENTIALS_DIRECTORY/rustynet-kek`): at most 64 KiB, not
/// readable by group or others.
pub fn kek_from_file(path: &std::path::Path) -> Result<Kek, KekFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |e: std::io::Error| KekFileError::Io(path.display().to_string(), e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekFileError::Permissions(path.display().to_string(), mode));
    }
    if meta.len() > 64 * 1024 {
        return Err(KekFileError::Io(
            path.display().to_string(),
            "larger than 64 KiB".into(),
        ));
    }
    let secret = Zeroizing::new(std::fs::read(path).map_err(io)?);
    Kek::from_secret(secret.trim_ascii())
        .map_err(|e| KekFileError::Io(path.display().to_string(), e.to_string()))
}

/// Why a key-encryption secret file is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KekFileError {
    /// Unreadable or unusable.
    #[error("key-encryption secret {0}: {1}")]
    Io(String, String),
    /// Readable by group or others.
    #[error("key-encryption secret {0} has mode {1:o}; must be owner-only")]
    Permissions(String, u32),
}

impl Kek {
    /// Derives the key from `secret` (at least 32 bytes, e.g. random bytes
    /// from a credential file).
    pub fn from_secret(secret: &[u8]) -> Result<Self, SealError> {
        if secret.len() < 32 {
            return Err(SealError::WeakSecret);
        }
        let mut hasher = Sha256::new();
        hasher.update(b"rustynet key-encryption v1\0");
        hasher.update(secret);
        Ok(Self(Zeroizing::new(hasher.finalize().into())))
    }

    /// Encrypts `plaintext` for `label`.
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> String {
        let cipher = ChaCha20Poly1305::new(self.0.as_ref().into());
        let mut nonce = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut nonce);
        // Encryption with a fresh nonce cannot fail for inputs this small.
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: label.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{PREFIX}{}", B64.encode(blob))
    }

    /// Decrypts a blob made by [`Kek::seal`] with the same `label`.
    pub fn open(&self, label: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let b64 = text.trim().strip_prefix(PREFIX).ok_or(SealError::Format)?;
        let blob = B64.decode(b64).map_err(|_| SealError::Format)?;
        if blob.len() < 12 + 16 {
            return Err(SealError::Format);
        }
        let (nonce, ct) = blob.split_at(12);
        let cipher = ChaCha20Poly1305::new(self.0.as_ref().into());
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: label.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}

impl Kek {
    /// A 32-byte key for `label` derived from this one, for binding other
    /// secrets (such as an integrity key) to the operator's secret: without
    /// the secret, the derived key cannot be computed.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let mut hasher = Sha256::new();
        hasher.update(b"rustynet kek derive v1\0");
        hasher.update(label.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.0.as_ref());
        Zeroizing::new(hasher.finalize().into())
    }
}

/// Whether `text` is a sealed blob (so a loader can tell it needs a secret).
pub fn is_sealed(text: &str) -> bool {
    text.trim_start().starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_failures() {
        let kek = Kek::from_secret(&[7u8; 32]).unwrap();
        let sealed = kek.seal("node keys", b"secret material");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("secret material"));
        assert_eq!(
            kek.open("node keys", &sealed).unwrap().as_slice(),
            b"secret material"
        );
        assert_eq!(kek.open("signing key", &sealed), Err(SealError::Decrypt));
        let other = Kek::from_secret(&[8u8; 32]).unwrap();
        assert_eq!(other.open("node keys", &sealed), Err(SealError::Decrypt));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(kek.open("node keys", &tampered).is_err());
        assert_eq!(kek.open("node keys", "plain"), Err(SealError::Format));
        assert!(matches!(
            Kek::from_secret(b"short"),
            Err(SealError::WeakSecret)
        ));
    }

    #[test]
    fn derived_keys_depend_on_secret_and_label() {
        let a = Kek::from_secret(&[7u8; 32]).unwrap();
        let b = Kek::from_secret(&[8u8; 32]).unwrap();
        assert_eq!(*a.derive("x"), *a.derive("x"));
        assert_ne!(*a.derive("x"), *a.derive("y"));
        assert_ne!(*a.derive("x"), *b.derive("x"));
    }
}
