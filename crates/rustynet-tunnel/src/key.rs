//! The node's private tunnel key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::TunnelError;

/// A 32-byte private tunnel key.
///
/// Wiped from memory when dropped; `Debug` prints `[redacted]`; there is no
/// `Display` and no `Serialize`, so the key cannot reach a log line, a status
/// document or a panic message by accident. Only the adapter crate knows the
/// curve: it derives the public half and generates fresh keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TunnelPrivateKey([u8; 32]);

impl TunnelPrivateKey {
    /// Wraps raw key bytes. The caller's copy is its own to wipe.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for the engine that needs them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Decodes the standard base64 form (as stored in the key file).
    /// The error never echoes the input.
    pub fn from_base64(text: &str) -> Result<Self, TunnelError> {
        let decoded = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| TunnelError::InvalidPrivateKey)?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| TunnelError::InvalidPrivateKey)?;
        Ok(Self(bytes))
    }

    /// The standard base64 form, wiped when dropped. Only for writing the key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0))
    }
}

impl PartialEq for TunnelPrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for TunnelPrivateKey {}

impl fmt::Debug for TunnelPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelPrivateKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let key = TunnelPrivateKey::from_bytes([0x41; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&B64.encode([0x41; 32])));
        assert!(!shown.contains("41"));
    }

    #[test]
    fn base64_roundtrip_and_errors_do_not_echo() {
        let key = TunnelPrivateKey::from_bytes([7; 32]);
        let text = key.to_base64();
        assert_eq!(TunnelPrivateKey::from_base64(&text).ok(), Some(key));
        let short = B64.encode([7u8; 31]);
        let err = TunnelPrivateKey::from_base64(&short).err();
        assert!(matches!(err, Some(TunnelError::InvalidPrivateKey)));
        let shown = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!shown.contains(&short));
        assert!(TunnelPrivateKey::from_base64("not base64!").is_err());
    }
}
