//! The one place that turns the environment and the command line into a
//! typed [`Config`]: clap collects raw values (`cli`), and
//! `Config::from_args` checks them, reporting every problem at once. Nothing
//! else in the crate reads `std::env`. TLS files are read by `tls::files`
//! and the health probe's settings built in `probe::config`, beside the code
//! that uses them; their types are re-exported here so `config::` names
//! every setting.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    domain::TtlPolicy,
    listener::ListenerLimits,
    tls::{has_certificates, identity_files, read_pem},
};

mod cli;
pub mod listener;
#[cfg(test)]
mod tests;

pub use crate::{
    probe::{ProbeConfig, ProbeTls, default_health_addr},
    tls::{Pem, TlsIdentity},
};
pub use cli::{Cli, Command, HealthArgs, ServeArgs};

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// TLS to Redis, used exactly when the URLs are `rediss://`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// CA bundle that verifies the servers; `None`: the system roots.
    pub ca: Option<Pem>,
    /// Client certificate for servers that require one (mutual TLS).
    pub client: Option<TlsIdentity>,
}

/// TLS on the gRPC listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The server's certificate and key.
    pub identity: TlsIdentity,
    /// When set, callers must present a certificate signed by this CA.
    pub client_ca: Option<Pem>,
}

/// How to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which Redis deployment to talk to; decided here, invisible above the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a primary with replicas behind one address).
    Standalone {
        /// Server URL, without credentials spliced in.
        url: String,
    },
    /// A Redis Cluster reached through seed nodes.
    Cluster {
        /// Seed node URLs.
        nodes: Vec<String>,
    },
}

/// Credentials for Redis; present means "authenticated".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// ACL user; `None` is the `default` user.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Secret>,
}

/// Everything the store needs to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Standalone or cluster, and where.
    pub topology: Topology,
    /// Username and password, when set.
    pub credentials: Option<Credentials>,
    /// TLS settings when the URLs are `rediss://`; `None`: plaintext.
    pub tls: Option<RedisTls>,
    /// Budget of one call's Redis work (retries included).
    pub timeout: Duration,
    /// Limit of one connection attempt.
    pub connect_timeout: Duration,
    /// Replicas that must acknowledge a create (`WAIT`); 0 means no waiting.
    pub write_replicas: u32,
}

/// The service's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// gRPC listen address.
    pub listen_addr: SocketAddr,
    /// TLS on the gRPC listener; `None`: plaintext.
    pub tls: Option<ListenerTls>,
    /// Redis connection settings.
    pub redis: RedisConfig,
    /// Default and maximum expiry.
    pub ttl: TtlPolicy,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (RUST_LOG syntax).
    pub log_filter: String,
    /// UserService calls served at once.
    pub max_concurrent_calls: usize,
    /// WatchUsers streams open at once.
    pub watch_max_streams: usize,
    /// Threads of the runtime that serves calls (1: a single event loop).
    pub worker_threads: usize,
    /// Time after a stop request during which health says NOT_SERVING but
    /// the listener still accepts and answers.
    pub shutdown_drain: Duration,
    /// Time in-flight calls get to finish once the drain is over.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics; `None`: not at all.
    pub metrics_addr: Option<SocketAddr>,
    /// Trace export.
    pub trace: TraceConfig,
    /// Limits of the gRPC listener (connections, streams, timeouts).
    pub listener: ListenerLimits,
}

/// Where traces go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// OTLP/gRPC collector; `None`: spans are not exported.
    pub endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

/// Every configuration problem found, each naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    /// One line per problem, starting with the variable's name.
    pub problems: Vec<String>,
}

/// Gathers problems so one start-up reports all of them.
#[derive(Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    /// Records a problem with the variable (or flag) `var`.
    pub(crate) fn add(&mut self, var: &str, message: impl fmt::Display) {
        self.0.push(format!("{var}: {message}"));
    }

    /// Parses a whole number of at least `min`, recording a problem otherwise.
    pub(crate) fn number<T>(&mut self, var: &str, raw: &str, min: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        match raw.trim().parse::<T>() {
            Ok(value) if value >= min => Some(value),
            Ok(_) => {
                self.add(var, format!("must be at least {min} (got {raw:?})"));
                None
            }
            Err(_) => {
                self.add(var, format!("must be a whole number (got {raw:?})"));
                None
            }
        }
    }

    /// `value` when nothing was wrong, otherwise every problem recorded.
    /// `value` is `None` only when a problem was recorded for it.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(ConfigError { problems: self.0 }),
        }
    }
}

impl Config {
    /// Validates raw arguments into a `Config`; reads the password file if one is named.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();

        let listen_addr = args
            .listen_addr
            .parse::<SocketAddr>()
            .map_err(|e| {
                problems.add(
                    "LISTEN_ADDR",
                    format!("{e} (want HOST:PORT, got {:?})", args.listen_addr),
                )
            })
            .ok();

        let topology = match args.redis_mode.as_str() {
            "standalone" => check_url("REDIS_URL", &args.redis_url, &mut problems)
                .map(|url| Topology::Standalone { url }),
            "cluster" => cluster_nodes(args.redis_cluster_nodes.as_deref(), &mut problems)
                .map(|nodes| Topology::Cluster { nodes }),
            other => {
                problems.add(
                    "REDIS_MODE",
                    format!("must be standalone or cluster (got {other:?})"),
                );
                None
            }
        };

        let redis_tls = redis_tls(args, topology.as_ref(), &mut problems);
        let listener_tls = listener_tls(args, &mut problems);
        let password = password(args, &mut problems);
        let username = args.redis_username.clone().filter(|u| !u.is_empty());
        let credentials = (username.is_some() || password.is_some())
            .then_some(Credentials { username, password });

        let default_ttl = problems.number("USER_TTL_SECONDS", &args.user_ttl_seconds, 1u32);
        let max_ttl = problems.number("USER_MAX_TTL_SECONDS", &args.user_max_ttl_seconds, 1u32);
        if let (Some(default), Some(max)) = (default_ttl, max_ttl)
            && default > max
        {
            problems.add(
                "USER_TTL_SECONDS",
                format!("{default} is above USER_MAX_TTL_SECONDS ({max})"),
            );
        }

        let log_format = match args.log_format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                problems.add(
                    "LOG_FORMAT",
                    format!("must be text or json (got {other:?})"),
                );
                None
            }
        };
        let timeout = problems.number("REDIS_TIMEOUT_MS", &args.redis_timeout_ms, 1u64);
        let connect_timeout = problems.number(
            "REDIS_CONNECT_TIMEOUT_MS",
            &args.redis_connect_timeout_ms,
            1u64,
        );
        let max_concurrent_calls =
            problems.number("MAX_CONCURRENT_CALLS", &args.max_concurrent_calls, 1usize);
        let watch_max_streams =
            problems.number("WATCH_MAX_STREAMS", &args.watch_max_streams, 1usize);
        let worker_threads = problems.number("WORKER_THREADS", &args.worker_threads, 1usize);
        let drain = problems.number("SHUTDOWN_DRAIN_SECONDS", &args.shutdown_drain_seconds, 0u64);
        let grace = problems.number("SHUTDOWN_GRACE_SECONDS", &args.shutdown_grace_seconds, 0u64);
        let write_replicas =
            problems.number("REDIS_WRITE_REPLICAS", &args.redis_write_replicas, 0u32);
        let metrics_addr = match args.metrics_addr.as_deref().map(str::trim) {
            None | Some("") => Some(None),
            Some(raw) => raw
                .parse::<SocketAddr>()
                .map_err(|e| {
                    problems.add("METRICS_ADDR", format!("{e} (want HOST:PORT, got {raw:?})"))
                })
                .ok()
                .map(Some),
        };

        let listener_limits = args
            .listener
            .limits()
            .map_err(|lines| problems.0.extend(lines))
            .ok();

        // Each value above is `None` exactly when its problem was recorded,
        // so `?` here never hides a problem: `finish` reports them all.
        let config = (|| {
            Some(Config {
                listen_addr: listen_addr?,
                tls: listener_tls,
                redis: RedisConfig {
                    topology: topology?,
                    credentials,
                    tls: redis_tls,
                    timeout: Duration::from_millis(timeout?),
                    connect_timeout: Duration::from_millis(connect_timeout?),
                    write_replicas: write_replicas?,
                },
                ttl: TtlPolicy {
                    default_seconds: default_ttl?,
                    max_seconds: max_ttl?,
                },
                log_format: log_format?,
                log_filter: args.log_filter.clone(),
                max_concurrent_calls: max_concurrent_calls?,
                watch_max_streams: watch_max_streams?,
                worker_threads: worker_threads?,
                shutdown_drain: Duration::from_secs(drain?),
                shutdown_grace: Duration::from_secs(grace?),
                metrics_addr: metrics_addr?,
                trace: TraceConfig {
                    endpoint: args
                        .otel_exporter_otlp_endpoint
                        .clone()
                        .filter(|endpoint| !endpoint.trim().is_empty()),
                    service_name: args.otel_service_name.clone(),
                },
                listener: listener_limits?,
            })
        })();
        problems.finish(config)
    }
}

/// Reads the password from REDIS_PASSWORD_FILE or REDIS_PASSWORD (never both).
///
/// An empty variable counts as unset, as it already did for REDIS_PASSWORD
/// alone: compose files pass `REDIS_PASSWORD: ${REDIS_PASSWORD:-}`, and that
/// must not turn a deployment using the file into "both set".
fn password(args: &ServeArgs, problems: &mut Problems) -> Option<Secret> {
    let from_env = args.redis_password.as_deref().filter(|p| !p.is_empty());
    let file = args
        .redis_password_file
        .as_deref()
        .filter(|path| !path.as_os_str().is_empty());
    match (from_env, file) {
        (Some(_), Some(_)) => {
            problems.add(
                "REDIS_PASSWORD_FILE",
                "set together with REDIS_PASSWORD; set only one of them",
            );
            None
        }
        (Some(password), None) => Some(Secret::new(password)),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(content) => {
                // Files written by `echo` or editors end with a newline that is not part of the password.
                let trimmed = content
                    .strip_suffix("\r\n")
                    .or_else(|| content.strip_suffix('\n'))
                    .unwrap_or(&content);
                if trimmed.is_empty() {
                    problems.add(
                        "REDIS_PASSWORD_FILE",
                        format!("{} is empty", path.display()),
                    );
                    None
                } else {
                    Some(Secret::new(trimmed))
                }
            }
            // The error names the path and the cause (missing, a directory,
            // no permission, not UTF-8), never the content.
            Err(e) => {
                problems.add(
                    "REDIS_PASSWORD_FILE",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, None) => None,
    }
}

/// True for a `rediss://` (TLS) URL.
fn is_tls_url(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// Checks that `raw` is a Redis URL the client understands.
fn check_url(var: &str, raw: &str, problems: &mut Problems) -> Option<String> {
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("redis://{raw}")
    };
    match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        Ok(info)
            if matches!(
                info.addr(),
                redis::ConnectionAddr::TcpTls { insecure: true, .. }
            ) =>
        {
            problems.add(
                var,
                "rediss://...#insecure (no certificate check) is not supported; give the server's CA in REDIS_CA_FILE",
            );
            None
        }
        Ok(_) => Some(url),
        Err(e) => {
            // The error may quote the URL, which may hold a password: say only what kind of problem it is.
            problems.add(
                var,
                format!("not a valid redis:// or rediss:// URL ({})", e.category()),
            );
            None
        }
    }
}

/// A path variable, treating an empty value (`REDIS_CA_FILE=`) as unset.
pub(crate) fn given(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// TLS settings for Redis, used exactly when the URLs say `rediss://`. A
/// TLS-only variable next to plain URLs is an error: the operator asked for
/// TLS, and a quiet plaintext connection would betray that.
fn redis_tls(
    args: &ServeArgs,
    topology: Option<&Topology>,
    problems: &mut Problems,
) -> Option<RedisTls> {
    let ca = given(&args.redis_ca_file)
        .and_then(|path| read_pem("REDIS_CA_FILE", path, has_certificates, problems));
    let client = identity_files(
        (
            "REDIS_CLIENT_CERT_FILE",
            given(&args.redis_client_cert_file),
        ),
        ("REDIS_CLIENT_KEY_FILE", given(&args.redis_client_key_file)),
        problems,
    );
    let (url_var, uses_tls) = match topology? {
        Topology::Standalone { url } => ("REDIS_URL", is_tls_url(url)),
        // Mixed seeds were refused already, so the first one speaks for all.
        Topology::Cluster { nodes } => (
            "REDIS_CLUSTER_NODES",
            nodes.first().is_some_and(|n| is_tls_url(n)),
        ),
    };
    if uses_tls {
        return Some(RedisTls { ca, client });
    }
    for (var, set) in [
        ("REDIS_CA_FILE", given(&args.redis_ca_file)),
        (
            "REDIS_CLIENT_CERT_FILE",
            given(&args.redis_client_cert_file),
        ),
        ("REDIS_CLIENT_KEY_FILE", given(&args.redis_client_key_file)),
    ] {
        if set.is_some() {
            problems.add(
                var,
                format!("only applies to TLS, but {url_var} is plain redis://; write rediss:// URLs to use TLS"),
            );
        }
    }
    None
}

/// TLS on the gRPC listener: TLS_CERT_FILE and TLS_KEY_FILE together, and
/// TLS_CLIENT_CA_FILE for mutual TLS.
fn listener_tls(args: &ServeArgs, problems: &mut Problems) -> Option<ListenerTls> {
    let cert = given(&args.tls_cert_file);
    let key = given(&args.tls_key_file);
    let identity = identity_files(("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key), problems);
    let client_ca = given(&args.tls_client_ca_file)
        .and_then(|path| read_pem("TLS_CLIENT_CA_FILE", path, has_certificates, problems));
    if given(&args.tls_client_ca_file).is_some() && cert.is_none() && key.is_none() {
        problems.add(
            "TLS_CLIENT_CA_FILE",
            "needs TLS_CERT_FILE and TLS_KEY_FILE: client certificates exist only on a TLS listener",
        );
    }
    identity.map(|identity| ListenerTls {
        identity,
        client_ca,
    })
}

/// Parses REDIS_CLUSTER_NODES into seed URLs.
fn cluster_nodes(raw: Option<&str>, problems: &mut Problems) -> Option<Vec<String>> {
    let var = "REDIS_CLUSTER_NODES";
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        problems.add(
            var,
            "required when REDIS_MODE=cluster (comma-separated host:port list)",
        );
        return None;
    };
    let nodes: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .filter_map(|n| check_url(var, n, problems))
        .collect();
    let tls_seeds = nodes.iter().filter(|n| is_tls_url(n)).count();
    if tls_seeds != 0 && tls_seeds != nodes.len() {
        problems.add(
            var,
            "mixes rediss:// (TLS) and plain seeds; write every seed as rediss://host:port, or none",
        );
        return None;
    }
    (!nodes.is_empty()).then_some(nodes)
}
