//! `Endpoint`: how a test reaches a running server's gRPC listener, the same
//! whether the server is the spawned binary ([`Service`](super::Service)) or
//! `app::run` in this process ([`App`](super::App)): channels, clients and
//! the health check.

use std::{fs, net::SocketAddr, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use user_service::pb::user::v1::user_service_client::UserServiceClient;

use super::certs::KeyPair;

/// How the fixture's own channels reach a TLS listener.
#[derive(Clone, Debug)]
pub struct ChannelTls {
    /// CA that verifies the server's certificate.
    pub ca: String,
    /// Client certificate to present, for a mutual-TLS listener.
    pub identity: Option<KeyPair>,
}

/// A server's gRPC address, and whether to speak TLS to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    tls: Option<ChannelTls>,
}

impl Endpoint {
    /// The listener at `addr`, over TLS when `tls` is given.
    pub fn new(addr: SocketAddr, tls: Option<ChannelTls>) -> Self {
        Self { addr, tls }
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel to the server (connects lazily).
    pub fn channel(&self) -> Channel {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{}", self.addr))
            .expect("valid URI")
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            let read = |path: &str| fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)));
            if let Some(identity) = &tls.identity {
                config = config.identity(Identity::from_pem(
                    read(identity.cert()),
                    read(identity.key()),
                ));
            }
            endpoint = endpoint.tls_config(config).expect("valid TLS settings");
        }
        endpoint.connect_lazy()
    }

    /// A `user.v1.UserService` client.
    pub fn client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel())
    }

    /// What `grpc.health.v1.Health/Check` answers for `service`, or the
    /// error if the call fails (not listening yet, for instance).
    pub async fn try_health_of(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(5));
        let mut client = HealthClient::new(self.channel());
        match tokio::time::timeout(Duration::from_secs(10), client.check(request)).await {
            Ok(response) => Ok(response?.into_inner().status()),
            Err(_) => Err(tonic::Status::deadline_exceeded("health check hung")),
        }
    }

    /// The health status of the whole server (`""`); panics if it cannot be
    /// asked.
    pub async fn health(&self) -> ServingStatus {
        self.try_health_of("")
            .await
            .unwrap_or_else(|status| panic!("health check failed: {status:?}"))
    }

    /// The health of both `""` and `user.v1.UserService` if both answer the
    /// same, else what each answered.
    pub async fn health_of_both(&self) -> Result<ServingStatus, String> {
        let server = self.try_health_of("").await;
        let user_service = self.try_health_of("user.v1.UserService").await;
        match (&server, &user_service) {
            (Ok(a), Ok(b)) if a == b => Ok(*a),
            _ => Err(format!(
                "\"\": {server:?}, user.v1.UserService: {user_service:?}"
            )),
        }
    }
}
