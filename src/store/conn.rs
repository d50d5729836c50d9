//! The Redis connection: standalone or cluster, chosen once from
//! `config::Topology`, and one `ConnectionLike` above which nobody can tell
//! which. Also the start-up probe that separates "retry later" from "fatal".

use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use rustls::AlertDescription;
use std::{error::Error as _, sync::Arc, time::Duration};
use tokio::task::JoinSet;

use super::{failure::is_auth_error, node::NodeConnection};
use crate::config::{Credentials, RedisConfig, RedisTls, Topology};

/// A multiplexed connection to a standalone server or a cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One server, reconnected in the background by the connection manager.
    Standalone(ConnectionManager),
    /// A cluster, slot-routed, following MOVED/ASK and refreshing topology.
    Cluster(ClusterConnection<NodeConnection>),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Which primary serves which slots: `(first slot, last slot, "host:port")`,
/// sorted; what the store's monitor (`supervise`) compares to notice failovers and resharding.
pub type SlotMap = Vec<(u16, u16, String)>;

impl RedisConn {
    /// True for a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Sends the `count` commands of `pipeline` in one round trip: to the
    /// cluster node at `node` ("host:port"), or, with `None`, as a
    /// standalone server or the cluster's routing sends it. Answers every
    /// reply, errors included (as `Value::ServerError`), so that one bad
    /// key does not hide the others.
    pub async fn pipeline_on(
        &mut self,
        node: Option<&str>,
        pipeline: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let target = node.and_then(|node| {
            let (host, port) = node.rsplit_once(':')?;
            Some((host.to_owned(), port.parse::<u16>().ok()?))
        });
        match (self, target) {
            (Self::Cluster(cluster), Some((host, port))) => {
                cluster
                    .route_pipeline(
                        pipeline.clone(),
                        0,
                        count,
                        SingleNodeRoutingInfo::ByAddress { host, port },
                    )
                    .await
            }
            (conn, _) => conn.req_packed_commands(pipeline, 0, count).await,
        }
    }

    /// The cluster's slot map as one node sees it (`CLUSTER SLOTS`, sent to a
    /// random node); `None` for a standalone server, which has none.
    pub async fn slot_map(&mut self) -> Result<Option<SlotMap>, RedisError> {
        if matches!(self, Self::Standalone(_)) {
            return Ok(None);
        }
        let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(self).await?;
        let mut map: SlotMap = ranges.into_iter().filter_map(slot_range).collect();
        map.sort();
        Ok(Some(map))
    }
}

impl RedisConn {
    /// Whether some node of `primaries` (each "host:port") answers PING,
    /// asked all at once so that a dead node's connection attempts cannot
    /// delay the answer of a live one. Standalone: PING to the server.
    pub async fn ping_any(&self, primaries: &[String]) -> Result<(), RedisError> {
        let Self::Cluster(cluster) = self else {
            let mut conn = self.clone();
            return redis::cmd("PING").query_async::<()>(&mut conn).await;
        };
        let mut pings = JoinSet::new();
        for addr in primaries {
            let Some((host, port)) = addr
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            else {
                continue;
            };
            let mut cluster = cluster.clone();
            pings.spawn(async move {
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                cluster.route_command(redis::cmd("PING"), route).await
            });
        }
        let mut last = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
            "no primary to ask",
        ));
        while let Some(joined) = pings.join_next().await {
            match joined {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(err)) => last = err,
                Err(_) => {}
            }
        }
        Err(last)
    }
}

/// True when the ranges of `map` give every one of the 16384 slots a primary.
pub fn covers_every_slot(map: &SlotMap) -> bool {
    let mut next: u32 = 0;
    for (start, end, _) in map {
        if u32::from(*start) > next {
            return false;
        }
        next = next.max(u32::from(*end) + 1);
    }
    next >= 16_384
}

/// One `CLUSTER SLOTS` entry, `[start, end, [host, port, id, ...], replicas...]`.
fn slot_range(range: Value) -> Option<(u16, u16, String)> {
    let Value::Array(fields) = range else {
        return None;
    };
    let mut fields = fields.into_iter();
    let start = redis::from_redis_value::<u16>(fields.next()?).ok()?;
    let end = redis::from_redis_value::<u16>(fields.next()?).ok()?;
    let Value::Array(primary) = fields.next()? else {
        return None;
    };
    let mut primary = primary.into_iter();
    let host = redis::from_redis_value::<String>(primary.next()?).ok()?;
    let port = redis::from_redis_value::<u16>(primary.next()?).ok()?;
    Some((start, end, format!("{host}:{port}")))
}

/// Why a connection attempt failed, as start-up needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Redis rejected or demanded credentials (WRONGPASS, NOAUTH): retrying cannot help.
    #[error(
        "Redis authentication failed ({0}); check REDIS_USERNAME and REDIS_PASSWORD / REDIS_PASSWORD_FILE"
    )]
    Authentication(#[source] RedisError),
    /// The server's certificate did not verify (unknown CA, wrong host name,
    /// expired): retrying cannot help.
    #[error(
        "the Redis TLS certificate did not verify ({0}); check REDIS_CA_FILE and that the certificate names the host in REDIS_URL / REDIS_CLUSTER_NODES"
    )]
    ServerCertificate(rustls::Error),
    /// The server refused the service's client certificate, or its absence
    /// (mutual TLS): retrying cannot help.
    #[error(
        "Redis refused the service's TLS client certificate ({0}); check REDIS_CLIENT_CERT_FILE and REDIS_CLIENT_KEY_FILE"
    )]
    ClientCertificate(rustls::Error),
    /// The configuration cannot work (bad URL, mixed seed credentials): retrying cannot help.
    #[error("Redis client configuration is invalid: {0}")]
    Config(#[source] RedisError),
    /// Redis is not reachable or not ready yet: retry with backoff.
    #[error("Redis is unreachable: {0}")]
    Unreachable(#[source] RedisError),
}

impl ConnectError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// Sorts a connection-time error into fatal or transient.
fn classify(err: RedisError) -> ConnectError {
    if is_auth_error(&err) {
        ConnectError::Authentication(err)
    } else if let Some(fatal) = tls_error(&err).and_then(certificate_error) {
        fatal
    } else if err.kind() == redis::ErrorKind::InvalidClientConfig {
        ConnectError::Config(err)
    } else {
        ConnectError::Unreachable(err)
    }
}

/// The certificate problems among TLS errors: ours with the server's
/// certificate, or the server's with ours (an alert). Other TLS errors (a
/// reset mid-handshake) may be transient and are left to the retry loop.
fn certificate_error(err: &rustls::Error) -> Option<ConnectError> {
    match err {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Some(ConnectError::ServerCertificate(err.clone()))
        }
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied,
        ) => Some(ConnectError::ClientCertificate(err.clone())),
        _ => None,
    }
}

/// The rustls error beneath a Redis error, if TLS failed. The chain has to
/// be opened by hand: redis keeps its cause in an `Arc`, and `io::Error`
/// (which tokio-rustls wraps rustls errors in) does not report the error it
/// wraps as its `source()`.
fn tls_error(err: &RedisError) -> Option<&rustls::Error> {
    fn search<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let wrapped: Option<&(dyn std::error::Error + 'static)> =
            match err.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as _),
                None => err
                    .downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>()
                    .map(|shared| &**shared as _),
            };
        wrapped
            .and_then(search)
            .or_else(|| err.source().and_then(search))
    }
    err.source().and_then(search)
}

/// Connects once (no retries) and checks the server answers PING as our user.
///
/// The caller owns the retry loop, so that it can log each failure and give
/// up at once on credentials.
pub async fn connect(config: &RedisConfig) -> Result<RedisConn, ConnectError> {
    let mut conn = match &config.topology {
        Topology::Standalone { url } => connect_standalone(url, config).await?,
        Topology::Cluster { nodes } => connect_cluster(nodes, config).await?,
    };
    // Cluster connections are lazy per node and NOAUTH only shows on the first command.
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(classify)?;
    Ok(conn)
}

/// The redis crate's form of our TLS settings; without a CA it uses the system roots.
fn certificates(tls: &RedisTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: tls.client.as_ref().map(|identity| ClientTlsConfig {
            client_cert: identity.cert.as_bytes().to_vec(),
            client_key: identity.key.as_bytes().to_vec(),
        }),
        root_cert: tls.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}

/// A client for one server at `url`, with our credentials and TLS settings.
pub(super) fn client(url: &str, config: &RedisConfig) -> Result<Client, ConnectError> {
    let info = url.into_connection_info().map_err(ConnectError::Config)?;
    // The library name would be sent with CLIENT SETINFO, a 7.2+ command that
    // a least-privilege ACL user loadable on 7.0 cannot be granted.
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
    if let Some(Credentials { username, password }) = &config.credentials {
        if let Some(username) = username {
            settings = settings.set_username(username);
        }
        if let Some(password) = password {
            settings = settings.set_password(password.expose());
        }
    }
    let info = info.set_redis_settings(settings);
    match &config.tls {
        Some(tls) => Client::build_with_tls(info, certificates(tls)),
        None => Client::open(info),
    }
    .map_err(ConnectError::Config)
}

/// One direct connection and PING, so that rejected credentials or
/// certificates show as what they are: the connection manager's retries
/// would hide them behind seconds of backoff, and the cluster client
/// flattens the cause of a failed first connection into a string.
async fn probe(client: &Client, config: &RedisConfig) -> Result<(), ConnectError> {
    let probe_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .map_err(classify)?;
    // Under TLS 1.3 a server that refuses our certificate (or its absence)
    // says so only after the handshake, in answer to the first command.
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(classify)
}

async fn connect_standalone(url: &str, config: &RedisConfig) -> Result<RedisConn, ConnectError> {
    let client = client(url, config)?;
    probe(&client, config).await?;

    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.timeout))
        // A reconnection is one attempt and one retry 50-100 ms later; the
        // calls waiting on it then fail (UNAVAILABLE) and the next call
        // starts a new one. A longer chain of retries made every call during
        // an outage wait for the whole chain and end at its budget
        // (DEADLINE_EXCEEDED) instead of failing fast. Only one reconnection
        // runs at a time, so attempts stay at a few dozen per second while
        // Redis is down, and the first one after it returns succeeds.
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
        .set_number_of_retries(1);
    let manager = ConnectionManager::new_with_config(client, manager_config)
        .await
        .map_err(classify)?;
    Ok(RedisConn::Standalone(manager))
}

async fn connect_cluster(
    nodes: &[String],
    config: &RedisConfig,
) -> Result<RedisConn, ConnectError> {
    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.timeout)
        // Retries (MOVED/ASK, TRYAGAIN, CLUSTERDOWN during failover) all fit
        // inside one call's budget, which also caps them from above.
        .overall_response_timeout(Some(config.timeout))
        .retries(8)
        .min_retry_wait(20)
        .max_retry_wait(250);
    if let Some(Credentials { username, password }) = &config.credentials {
        if let Some(username) = username {
            builder = builder.username(username);
        }
        if let Some(password) = password {
            builder = builder.password(password.expose());
        }
    }
    // The cluster client reports a rejected login or certificate only as
    // text, as if the cluster were unreachable: the seeds are probed first
    // so that those faults stop start-up, as they do in standalone mode.
    probe_seeds(nodes, config).await?;
    if let Some(tls) = &config.tls {
        builder = builder.certs(certificates(tls));
    }
    let client = builder.build().map_err(ConnectError::Config)?;
    // The generic entry point is the only way to choose how node connections
    // are opened (see `NodeConnection`: no CLIENT SETINFO); redis-rs marks it
    // hidden, so a redis upgrade must keep the least_privilege tests green.
    let conn = client
        .get_async_generic_connection::<NodeConnection>()
        .await
        .map_err(classify)?;
    Ok(RedisConn::Cluster(conn))
}

/// Probes every seed at once and fails on the first fault retrying cannot
/// mend (credentials, certificates); an unreachable seed is left to the
/// cluster client (another seed may answer).
async fn probe_seeds(nodes: &[String], config: &RedisConfig) -> Result<(), ConnectError> {
    let mut probes = JoinSet::new();
    for node in nodes {
        let client = client(node, config)?;
        let config = config.clone();
        probes.spawn(async move { probe(&client, &config).await });
    }
    while let Some(done) = probes.join_next().await {
        if let Ok(Err(err)) = done
            && !err.is_transient()
        {
            return Err(err);
        }
    }
    Ok(())
}

/// Where the service connects, without credentials, for log lines.
pub fn describe(topology: &Topology) -> String {
    fn addr(url: &str) -> String {
        url.into_connection_info()
            .map(|info| info.addr().to_string())
            .unwrap_or_else(|_| "<invalid url>".to_owned())
    }
    match topology {
        Topology::Standalone { url } => format!("standalone {}", addr(url)),
        Topology::Cluster { nodes } => format!(
            "cluster seeds {}",
            nodes.iter().map(|n| addr(n)).collect::<Vec<_>>().join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    /// A Redis error as a failed TLS handshake produces it: tokio-rustls
    /// wraps the rustls error in an io::Error, redis wraps that.
    fn handshake_error(tls: rustls::Error) -> RedisError {
        RedisError::from(std::io::Error::new(std::io::ErrorKind::InvalidData, tls))
    }

    #[test]
    fn a_slot_map_covers_every_slot_only_without_gaps() {
        let node = |n: u16| format!("10.0.0.{n}:6379");
        let full = vec![
            (0, 5460, node(1)),
            (5461, 10922, node(2)),
            (10923, 16383, node(3)),
        ];
        assert!(covers_every_slot(&full));
        let gap = vec![(0, 5460, node(1)), (10923, 16383, node(3))];
        assert!(!covers_every_slot(&gap));
        let short = vec![(0, 16382, node(1))];
        assert!(!covers_every_slot(&short));
        assert!(!covers_every_slot(&Vec::new()));
    }

    #[test]
    fn a_server_certificate_that_does_not_verify_is_fatal() {
        let err = classify(handshake_error(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert!(matches!(err, ConnectError::ServerCertificate(_)), "{err}");
        assert!(!err.is_transient());
        assert!(
            err.to_string().contains("TLS certificate did not verify"),
            "{err}"
        );
    }

    #[test]
    fn redis_refusing_our_client_certificate_is_fatal() {
        let err = classify(handshake_error(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        )));
        assert!(matches!(err, ConnectError::ClientCertificate(_)), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn other_tls_and_io_failures_are_retried() {
        let tls = classify(handshake_error(rustls::Error::AlertReceived(
            AlertDescription::InternalError,
        )));
        assert!(tls.is_transient(), "{tls}");
        let refused = classify(RedisError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(refused.is_transient(), "{refused}");
    }
}
