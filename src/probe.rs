//! `user-service health`: asks a running server's grpc.health.v1 service for
//! the status of one health name (overall readiness by default), so
//! container healthchecks need no extra binary. It
//! speaks TLS (optionally with a client certificate) when the configuration
//! says so, and never falls back to plaintext.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
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
    /// No connection within the timeout.
    #[error("no connection to {addr} within {timeout:?}")]
    ConnectTimedOut {
        /// As given.
        addr: String,
        /// The limit.
        timeout: std::time::Duration,
    },
    /// Connected, but no answer within the timeout.
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

/// How `user-service health` exits, as grpc_health_probe does, so that a
/// script can tell "not serving" from "cannot connect".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeExit {
    /// The name is SERVING.
    Serving = 0,
    /// The arguments or configuration are unusable.
    BadArguments = 1,
    /// No connection could be made.
    ConnectionFailure = 2,
    /// Connected, but the health call failed (an unknown name: NOT_FOUND).
    RpcFailure = 3,
    /// The server answered with a status other than SERVING.
    NotServing = 4,
}

impl ProbeExit {
    /// The exit code for a probe's outcome.
    pub fn of(outcome: &Result<ServingStatus, ProbeError>) -> Self {
        match outcome {
            Ok(ServingStatus::Serving) => Self::Serving,
            Ok(_) => Self::NotServing,
            Err(ProbeError::Address { .. } | ProbeError::Tls { .. }) => Self::BadArguments,
            Err(ProbeError::Connect { .. } | ProbeError::ConnectTimedOut { .. }) => {
                Self::ConnectionFailure
            }
            Err(ProbeError::TimedOut { .. } | ProbeError::Call(_)) => Self::RpcFailure,
        }
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Asks the configured server for the status of the configured health name.
pub async fn check(config: &ProbeConfig) -> Result<ServingStatus, ProbeError> {
    // The endpoint's own timeouts cover connecting and the call; these also
    // bound anything around them (a TLS handshake), so a probe never hangs,
    // and tell a connection that never came from a call that never ended.
    let channel = tokio::time::timeout(config.timeout, connect(config))
        .await
        .map_err(|_| ProbeError::ConnectTimedOut {
            addr: config.addr.clone(),
            timeout: config.timeout,
        })??;
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: config.service.clone(),
    });
    let reply = tokio::time::timeout(config.timeout, call)
        .await
        .map_err(|_| ProbeError::TimedOut {
            addr: config.addr.clone(),
            timeout: config.timeout,
        })??;
    Ok(reply.into_inner().status())
}

async fn connect(config: &ProbeConfig) -> Result<Channel, ProbeError> {
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
    endpoint
        .connect()
        .await
        .map_err(|source| ProbeError::Connect {
            addr: addr.clone(),
            source,
        })
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
