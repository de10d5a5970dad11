//! TLS 1.3 for the relay: the server configuration, a self-signed
//! certificate for `init`, and the client's SPKI-pinned verifier.
//!
//! Nodes do not trust a CA for relays: the signed netmap carries the SHA-256
//! of the relay certificate's SubjectPublicKeyInfo, and the client accepts
//! exactly that key. The handshake signature is still checked (by rustls'
//! `verify_tls13_signature` against the presented certificate), so a peer
//! that merely replays the certificate without the key fails. Names and
//! validity dates are not checked: the pin is the whole trust decision, and
//! a certificate can be re-issued for the same key without touching nodes.

use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};

use crate::error::RelayError;

/// ALPN the client offers and the server accepts (the upgrade is HTTP/1.1).
const ALPN: &[u8] = b"http/1.1";

/// The crypto provider every relay endpoint uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate's SubjectPublicKeyInfo: the relay pin.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Result<[u8; 32], RelayError> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)
        .map_err(|e| RelayError::Tls(format!("certificate does not parse: {e}")))?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// The pin of the first certificate in a PEM file.
pub fn spki_sha256_of_pem_file(path: &Path) -> Result<[u8; 32], RelayError> {
    let cert = CertificateDer::from_pem_file(path)
        .map_err(|e| RelayError::Config(format!("{}: {e}", path.display())))?;
    spki_sha256(&cert)
}

/// A TLS 1.3-only server configuration from PEM certificate chain and key
/// files. Refuses a key file readable by group or others.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, RelayError> {
    check_owner_only(key)?;
    let pem_err = |path: &Path, e: &dyn std::fmt::Display| {
        RelayError::Config(format!("{}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, &e))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, &e))?;
    server_config_from_der(certs, key_der)
}

/// A TLS 1.3-only server configuration from DER certificates and key (for
/// an embedding server that holds them already).
pub fn server_config_from_der(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, RelayError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

fn check_owner_only(path: &Path) -> Result<(), RelayError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| RelayError::Config(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(RelayError::Config(format!(
            "{} has mode {:o}; the TLS key must be owner-only (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

/// A freshly generated self-signed certificate (PEM) and its pin.
pub struct SelfSigned {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (write it owner-only).
    pub key_pem: String,
    /// SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub pin: [u8; 32],
}

/// A self-signed ECDSA P-256 certificate for `names` (DNS names or IPs;
/// informational only, since clients trust the pin).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, RelayError> {
    let err = |e: rcgen::Error| RelayError::Config(format!("certificate generation: {e}"));
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rustynet relay");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let cert = params.self_signed(&key).map_err(err)?;
    let pin = spki_sha256(cert.der())?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        pin,
    })
}

/// The client configuration: TLS 1.3 only, trusting exactly the key `pin`
/// (also for tools that talk to a relay directly, e.g. a health probe).
pub fn client_config(pin: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, RelayError> {
    let provider = provider();
    let verifier = Arc::new(PinnedKey {
        pin,
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RelayError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts the server whose end-entity certificate carries the pinned key.
#[derive(Debug)]
struct PinnedKey {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = spki_sha256(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration only enables TLS 1.3; a 1.2 signature is a bug.
        Err(rustls::Error::General("TLS 1.2 is not enabled".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_comes_from_the_key_not_the_certificate() {
        let a = self_signed(&["localhost".into()]).unwrap();
        let b = self_signed(&["localhost".into()]).unwrap();
        assert_ne!(a.pin, b.pin);
        let der = CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap();
        assert_eq!(spki_sha256(&der).unwrap(), a.pin);
        assert!(spki_sha256(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn the_verifier_accepts_only_the_pinned_key() {
        let a = self_signed(&["localhost".into()]).unwrap();
        let b = self_signed(&["localhost".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(a.cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let v = |pin| PinnedKey {
            pin,
            algorithms: provider().signature_verification_algorithms,
        };
        assert!(
            v(a.pin)
                .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert!(
            v(b.pin)
                .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
                .is_err()
        );
    }

    #[test]
    fn a_group_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let s = self_signed(&["localhost".into()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, &s.cert_pem).unwrap();
        std::fs::write(&key, &s.key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            server_config(&cert, &key),
            Err(RelayError::Config(_))
        ));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(server_config(&cert, &key).is_ok());
        assert_eq!(spki_sha256_of_pem_file(&cert).unwrap(), s.pin);
    }
}
