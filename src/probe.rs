//! `user-service health`: asks a running server's grpc.health.v1 service for
//! its overall status, so container healthchecks need no extra binary. It
//! speaks TLS (optionally with a client certificate) when the configuration
//! says so, and never falls back to plaintext.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

mod config;

pub use config::{ProbeConfig, ProbeTls, default_health_addr};

/// Why the probe could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The address is not usable.
    #[error("invalid address {addr:?}")]
    Address {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings were refused.
    #[error("cannot set up TLS towards {addr}")]
    Tls {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No connection could be made (for TLS: the handshake failed too).
    #[error("cannot connect to {addr}")]
    Connect {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    TimedOut {
        /// As given.
        addr: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// The health call failed.
    #[error("health check failed: {0}")]
    Call(#[from] tonic::Status),
}

/// Asks the configured server for the status of service `""`.
pub async fn check(config: &ProbeConfig) -> Result<ServingStatus, ProbeError> {
    // The endpoint's own timeouts cover connecting and the call; this one
    // also bounds anything between them, so a probe never hangs.
    tokio::time::timeout(config.timeout, ask(config))
        .await
        .map_err(|_| ProbeError::TimedOut {
            addr: config.addr.clone(),
            timeout: config.timeout,
        })?
}

async fn ask(config: &ProbeConfig) -> Result<ServingStatus, ProbeError> {
    let addr = &config.addr;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|source| ProbeError::Address {
            addr: addr.clone(),
            source,
        })?
        .connect_timeout(config.timeout)
        .timeout(config.timeout);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(client_tls(tls, config.timeout))
            .map_err(|source| ProbeError::Tls {
                addr: addr.clone(),
                source,
            })?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ProbeError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(reply.into_inner().status())
}

/// tonic's form of the probe's TLS settings.
fn client_tls(tls: &ProbeTls, timeout: std::time::Duration) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(tls.ca.as_bytes()))
        .domain_name(tls.domain.clone())
        .timeout(timeout);
    match &tls.identity {
        Some(identity) => config.identity(Identity::from_pem(
            identity.cert.as_bytes(),
            identity.key.as_bytes(),
        )),
        None => config,
    }
}
