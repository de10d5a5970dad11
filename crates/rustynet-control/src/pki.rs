//! The control server's certificate authority and TLS server certificate.
//!
//! `init` creates a private CA (nodes pin its certificate with `--ca-cert`) and
//! a server certificate for the names given with `--san`. Nothing here is
//! trusted from the system's root store: the CA is the only anchor.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why certificate generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters (e.g. an invalid DNS name in `--san`).
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid --san {0:?}: expected a DNS name or an IP address")]
    BadSan(String),
}

/// PEM-encoded material produced by [`generate`].
pub struct GeneratedPki {
    /// CA certificate (public; nodes pin it).
    pub ca_cert_pem: String,
    /// CA private key (kept only to issue a new server certificate later).
    pub ca_key_pem: String,
    /// Server certificate.
    pub server_cert_pem: String,
    /// Server private key.
    pub server_key_pem: String,
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(PkiError::BadSan(name.to_owned()));
    }
    Ok(SanType::DnsName(name.try_into()?))
}

/// The CA's parameters. Deterministic, so the issuer rebuilt from them and
/// the stored CA key signs certificates that chain to the stored CA
/// certificate (same subject, same key).
fn ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Rustynet control CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    ca_params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    ca_params
}

/// A new server key and certificate for `sans`, signed by the CA.
fn server_cert(sans: &[String], ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Rustynet control server");
    params.distinguished_name = dn;
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let issuer = Issuer::new(ca_params(), ca_key);
    let server_cert = params.signed_by(&server_key, &issuer)?;
    Ok((server_cert.pem(), server_key.serialize_pem()))
}

/// Creates a CA and a server certificate valid for `sans`.
pub fn generate(sans: &[String]) -> Result<GeneratedPki, PkiError> {
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params().self_signed(&ca_key)?;
    let (server_cert_pem, server_key_pem) = server_cert(sans, &ca_key)?;
    Ok(GeneratedPki {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        server_cert_pem,
        server_key_pem,
    })
}

/// A new server certificate (and key) for `sans` from the existing CA key
/// (`cert reissue`): nodes that pinned the CA accept it unchanged. Returns
/// the certificate's and the key's PEM.
pub fn reissue(sans: &[String], ca_key_pem: &str) -> Result<(String, String), PkiError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    server_cert(sans, &ca_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_and_rejects_bad_san() {
        let pki = generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(pki.ca_cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(pki.server_key_pem.contains("PRIVATE KEY"));
        assert!(matches!(
            generate(&["bad name!".into()]),
            Err(PkiError::BadSan(_))
        ));
    }
}
