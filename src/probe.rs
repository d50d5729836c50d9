//! `user-service health`: asks a running server's grpc.health.v1 service for
//! its overall status, so container healthchecks need no extra binary.

use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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
    /// No connection could be made.
    #[error("cannot connect to {addr}")]
    Connect {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The health call failed.
    #[error("health check failed: {0}")]
    Call(#[from] tonic::Status),
}

/// Asks `addr` (HOST:PORT) for the status of service `""`.
pub async fn check(addr: &str, timeout: Duration) -> Result<ServingStatus, ProbeError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ProbeError::Address {
            addr: addr.to_owned(),
            source,
        })?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ProbeError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(reply.into_inner().status())
}
