//! TLS material shared by both hops (service -> Redis, callers -> service):
//! the rustls crypto provider, and PEM checks that turn a bad file into a
//! message saying what is wrong with it. `files` reads the PEM files that
//! the configuration names, once, at start-up; nothing here opens a
//! connection.

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

mod files;

pub use files::{Pem, TlsIdentity};
pub(crate) use files::{has_certificates, identity_files, read_pem};

/// Why PEM material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The bytes are not PEM, or a PEM section is damaged.
    #[error("not valid PEM ({0})")]
    Malformed(#[source] rustls::pki_types::pem::Error),
    /// Valid PEM, but without a certificate.
    #[error("holds no certificate (want a -----BEGIN CERTIFICATE----- section)")]
    NoCertificate,
    /// Valid PEM, but without a private key.
    #[error("holds no private key (want a -----BEGIN PRIVATE KEY----- section)")]
    NoPrivateKey,
    /// The key cannot be used for signing, or it is not the certificate's key.
    #[error("{0}")]
    KeyMismatch(#[source] rustls::Error),
}

/// The crypto provider of every TLS connection in the process: ring, which
/// builds with a C compiler alone (aws-lc-rs also needs cmake and nasm).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Makes ring the process-wide rustls provider. rustls picks one from its
/// crate features on first use and panics when it finds two, so a dependency
/// that one day turns on aws-lc-rs would otherwise break TLS at run time.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = provider().install_default();
}

/// The certificates of a PEM bundle (a CA file, or a chain leaf first).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PemError::Malformed)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::NoPrivateKey,
        other => PemError::Malformed(other),
    })
}

/// Checks that `key_pem` is the private key of the first certificate in
/// `cert_pem`, so that a swapped file is a start-up error rather than a
/// handshake that fails for every caller.
pub fn check_key_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), PemError> {
    let chain = certificates(cert_pem)?;
    let key = private_key(key_pem)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(PemError::KeyMismatch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_the_expected_section_say_what_is_missing() {
        let not_pem = b"just some text\n";
        assert!(matches!(
            certificates(not_pem),
            Err(PemError::NoCertificate)
        ));
        assert!(matches!(private_key(not_pem), Err(PemError::NoPrivateKey)));
    }

    #[test]
    fn a_damaged_pem_section_is_malformed() {
        let damaged =
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
        assert!(matches!(certificates(damaged), Err(PemError::Malformed(_))));
    }
}
