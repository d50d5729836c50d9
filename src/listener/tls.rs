//! TLS on the gRPC listener, done here rather than by tonic so that the
//! connection's deadlines (`conn`) sit above TLS: the handshake timeout then
//! covers the TLS handshake and the HTTP/2 preface inside it together,
//! which tonic's own TLS (below our socket wrapper) cannot.

use std::sync::Arc;

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

use crate::{
    config::ListenerTls,
    tls::{self, PemError},
};

/// The only protocol offered in ALPN: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Why the listener's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CA file holds no usable PEM.
    #[error("{0}")]
    Pem(#[from] PemError),
    /// rustls refused the certificate and key.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify client certificates.
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// An acceptor with the server's identity, requiring client certificates
/// signed by the client CA when one is configured, offering only `h2`.
pub fn acceptor(settings: &ListenerTls) -> Result<TlsAcceptor, TlsSetupError> {
    let builder = ServerConfig::builder();
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(tls::certificates(ca.as_bytes())?);
            builder.with_client_cert_verifier(WebPkiClientVerifier::builder(roots.into()).build()?)
        }
    };
    let chain = tls::certificates(settings.identity.cert.as_bytes())?;
    let key = tls::private_key(settings.identity.key.as_bytes())?;
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
