//! TLS files read at start-up: each PEM file is read once and checked (a
//! certificate where one is expected, a key that matches its certificate),
//! and every problem is reported against the variable that named the file.

use std::{fmt, path::Path};

use super::{PemError, certificates, check_key_pair, private_key};
use crate::config::Problems;

/// The contents of a PEM file, read and checked at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem(Vec<u8>);

impl Pem {
    /// The PEM text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({} bytes)", self.0.len())
    }
}

/// A certificate chain and its private key; `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// Certificate chain, leaf first.
    pub cert: Pem,
    /// Private key of the leaf certificate.
    pub key: Pem,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert", &self.cert)
            .field("key", &"***")
            .finish()
    }
}

/// Reads the PEM file that `var` names and checks it with `check`.
pub(crate) fn read_pem(
    var: &str,
    path: &Path,
    check: fn(&[u8]) -> Result<(), PemError>,
    problems: &mut Problems,
) -> Option<Pem> {
    match std::fs::read(path) {
        Ok(bytes) => match check(&bytes) {
            Ok(()) => Some(Pem(bytes)),
            Err(e) => {
                problems.add(var, format!("{}: {e}", path.display()));
                None
            }
        },
        Err(e) => {
            problems.add(var, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Checks a file that should hold certificates.
pub(crate) fn has_certificates(pem: &[u8]) -> Result<(), PemError> {
    certificates(pem).map(drop)
}

/// Checks a file that should hold a private key.
pub(crate) fn has_private_key(pem: &[u8]) -> Result<(), PemError> {
    private_key(pem).map(drop)
}

/// Reads a certificate and its key, named by two variables that must be set
/// together; `None` when neither is set or something is wrong (reported).
pub(crate) fn identity_files(
    (cert_var, cert): (&str, Option<&Path>),
    (key_var, key): (&str, Option<&Path>),
    problems: &mut Problems,
) -> Option<TlsIdentity> {
    match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            problems.add(key_var, format!("required when {cert_var} is set"));
            None
        }
        (None, Some(_)) => {
            problems.add(cert_var, format!("required when {key_var} is set"));
            None
        }
        (Some(cert_path), Some(key_path)) => {
            let cert = read_pem(cert_var, cert_path, has_certificates, problems);
            let key = read_pem(key_var, key_path, has_private_key, problems);
            let (cert, key) = (cert?, key?);
            if let Err(e) = check_key_pair(cert.as_bytes(), key.as_bytes()) {
                problems.add(
                    key_var,
                    format!(
                        "{} is not the private key of the certificate in {cert_var} ({e})",
                        key_path.display()
                    ),
                );
                return None;
            }
            Some(TlsIdentity { cert, key })
        }
    }
}
