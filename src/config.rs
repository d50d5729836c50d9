//! The one place that reads the environment and the command line: clap
//! collects raw values (each flag has a matching variable), and
//! `Config::from_args` turns them into a typed `Config`, reporting every
//! problem at once. Nothing else in the crate reads `std::env`.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, builder::TypedValueParser};

pub mod listener;

use crate::{
    domain::TtlPolicy,
    listener::ListenerLimits,
    tls::{self, PemError},
};

/// Command line and environment of the `user-service` binary.
#[derive(Debug, Parser)]
#[command(
    name = "user-service",
    version,
    about = "gRPC service that stores users with an expiry in Redis"
)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings of the server (also read by `health` for its default address).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running server for its health; exit 0 when it is SERVING (for container healthchecks).
    Health(HealthArgs),
}

/// Arguments of `user-service health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Server to ask [default: loopback at the port of LISTEN_ADDR].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3, value_name = "SECONDS")]
    pub timeout: u64,
    /// CA (PEM) that verifies the server's certificate; turns on TLS (for a server with TLS_CERT_FILE).
    #[arg(long, env = "HEALTH_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry [default: the host of --addr, or localhost without --addr].
    #[arg(long, env = "HEALTH_TLS_DOMAIN", value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// Client certificate (PEM), for a server with TLS_CLIENT_CA_FILE; needs --tls-key and --tls-ca.
    #[arg(long, env = "HEALTH_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "HEALTH_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
}

/// Raw server settings as given; validated by [`Config::from_args`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: String,
    /// Certificate chain (PEM) of the gRPC listener; with TLS_KEY_FILE, callers must use TLS [default: plaintext].
    #[arg(long, env = "TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) that must have signed callers' client certificates (mutual TLS); needs TLS_CERT_FILE.
    #[arg(long, env = "TLS_CLIENT_CA_FILE", value_name = "PATH")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// `standalone` or `cluster`.
    #[arg(long, env = "REDIS_MODE", default_value = "standalone")]
    pub redis_mode: String,
    /// Standalone Redis server URL: redis://host:port[/db], or rediss://host:port[/db] for TLS.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Cluster mode: comma-separated seed nodes (host:port or redis:// URLs; for TLS, rediss://host:port, all of them).
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_name = "NODES")]
    pub redis_cluster_nodes: Option<String>,
    /// ACL user name (absent: the `default` user).
    #[arg(long, env = "REDIS_USERNAME")]
    pub redis_username: Option<String>,
    /// Redis password; prefer REDIS_PASSWORD_FILE (a flag shows in the process list).
    #[arg(
        long,
        env = "REDIS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub redis_password: Option<String>,
    /// File holding the Redis password (one trailing newline is ignored).
    // Parsed as an OsString so that an empty variable reaches `password()`,
    // which treats it as unset, instead of clap's "a value is required".
    #[arg(
        long,
        env = "REDIS_PASSWORD_FILE",
        value_name = "PATH",
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub redis_password_file: Option<PathBuf>,
    /// CA bundle (PEM) that verifies rediss:// servers [default: the system roots]; only with rediss:// URLs.
    #[arg(long, env = "REDIS_CA_FILE", value_name = "PATH")]
    pub redis_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with Redis; needs REDIS_CLIENT_KEY_FILE and rediss:// URLs.
    #[arg(long, env = "REDIS_CLIENT_CERT_FILE", value_name = "PATH")]
    pub redis_client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of REDIS_CLIENT_CERT_FILE.
    #[arg(long, env = "REDIS_CLIENT_KEY_FILE", value_name = "PATH")]
    pub redis_client_key_file: Option<PathBuf>,
    /// Default expiry of a created user, in seconds.
    #[arg(long, env = "USER_TTL_SECONDS", default_value = "60")]
    pub user_ttl_seconds: String,
    /// Largest expiry a caller may ask for, in seconds.
    #[arg(long, env = "USER_MAX_TTL_SECONDS", default_value = "86400")]
    pub user_max_ttl_seconds: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log filter in tracing's EnvFilter syntax (e.g. `info`, `user_service=debug`).
    #[arg(
        long = "log-level",
        env = "RUST_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_filter: String,
    /// Budget of one call's Redis work, in milliseconds (also capped by the caller's deadline).
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value = "1000")]
    pub redis_timeout_ms: String,
    /// Limit of one connection attempt to Redis, in milliseconds.
    #[arg(long, env = "REDIS_CONNECT_TIMEOUT_MS", default_value = "1000")]
    pub redis_connect_timeout_ms: String,
    /// UserService calls served at once; calls beyond it get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value = "1024")]
    pub max_concurrent_calls: String,
    /// Threads serving calls. 1: one event loop, fastest per call on a small
    /// machine (measured in bench/RESULTS.md); more: a work-stealing pool.
    #[arg(long, env = "WORKER_THREADS", default_value = "1")]
    pub worker_threads: String,
    /// Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value = "10")]
    pub shutdown_grace_seconds: String,
    /// Replicas that must hold a created user before CreateUser answers OK (Redis `WAIT`); 0: do not wait.
    #[arg(long, env = "REDIS_WRITE_REPLICAS", default_value = "0")]
    pub redis_write_replicas: String,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off when unset).
    #[arg(long, env = "METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Limits of the gRPC listener.
    #[command(flatten)]
    pub listener: listener::ListenerArgs,
}

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
    /// Threads of the runtime that serves calls (1: a single event loop).
    pub worker_threads: usize,
    /// Time in-flight calls get to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics; `None`: not at all.
    pub metrics_addr: Option<SocketAddr>,
    /// Limits of the gRPC listener (connections, streams, timeouts).
    pub listener: ListenerLimits,
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
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, var: &str, message: impl fmt::Display) {
        self.0.push(format!("{var}: {message}"));
    }

    fn number<T>(&mut self, var: &str, raw: &str, min: T) -> Option<T>
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
        let worker_threads = problems.number("WORKER_THREADS", &args.worker_threads, 1usize);
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

        match (
            listen_addr,
            topology,
            default_ttl,
            max_ttl,
            log_format,
            timeout,
            connect_timeout,
            max_concurrent_calls,
            worker_threads,
            grace,
            write_replicas,
            metrics_addr,
            listener_limits,
        ) {
            (
                Some(listen_addr),
                Some(topology),
                Some(default_seconds),
                Some(max_seconds),
                Some(log_format),
                Some(timeout),
                Some(connect_timeout),
                Some(max_concurrent_calls),
                Some(worker_threads),
                Some(grace),
                Some(write_replicas),
                Some(metrics_addr),
                Some(listener_limits),
            ) if problems.0.is_empty() => Ok(Config {
                listen_addr,
                tls: listener_tls,
                redis: RedisConfig {
                    topology,
                    credentials,
                    tls: redis_tls,
                    timeout: Duration::from_millis(timeout),
                    connect_timeout: Duration::from_millis(connect_timeout),
                    write_replicas,
                },
                ttl: TtlPolicy {
                    default_seconds,
                    max_seconds,
                },
                log_format,
                log_filter: args.log_filter.clone(),
                max_concurrent_calls,
                worker_threads,
                shutdown_grace: Duration::from_secs(grace),
                metrics_addr,
                listener: listener_limits,
            }),
            _ => Err(ConfigError {
                problems: problems.0,
            }),
        }
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
fn given(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// Reads the PEM file that `var` names and checks it with `check`.
fn read_pem(
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
fn has_certificates(pem: &[u8]) -> Result<(), PemError> {
    tls::certificates(pem).map(drop)
}

/// Checks a file that should hold a private key.
fn has_private_key(pem: &[u8]) -> Result<(), PemError> {
    tls::private_key(pem).map(drop)
}

/// Reads a certificate and its key, named by two variables that must be set
/// together; `None` when neither is set or something is wrong (reported).
fn identity_files(
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
            if let Err(e) = tls::check_key_pair(cert.as_bytes(), key.as_bytes()) {
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

/// What `user-service health` asks, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Server to ask, as HOST:PORT.
    pub addr: String,
    /// Limit of the whole check.
    pub timeout: Duration,
    /// TLS towards the server; `None`: plaintext.
    pub tls: Option<ProbeTls>,
}

/// TLS settings of the health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTls {
    /// CA that verifies the server's certificate.
    pub ca: Pem,
    /// Name the server's certificate must carry.
    pub domain: String,
    /// Client certificate, for a listener that requires one.
    pub identity: Option<TlsIdentity>,
}

impl ProbeConfig {
    /// Validates the `health` arguments; `listen_addr` (LISTEN_ADDR) gives
    /// the address when `--addr` is absent.
    pub fn from_args(args: &HealthArgs, listen_addr: &str) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let addr = args
            .addr
            .clone()
            .unwrap_or_else(|| default_health_addr(listen_addr));
        let ca = given(&args.tls_ca).and_then(|path| {
            read_pem(
                "--tls-ca (HEALTH_TLS_CA_FILE)",
                path,
                has_certificates,
                &mut problems,
            )
        });
        let identity = identity_files(
            ("--tls-cert (HEALTH_TLS_CERT_FILE)", given(&args.tls_cert)),
            ("--tls-key (HEALTH_TLS_KEY_FILE)", given(&args.tls_key)),
            &mut problems,
        );
        let domain = args.tls_domain.clone().filter(|d| !d.is_empty());
        let tls = if given(&args.tls_ca).is_some() {
            ca.map(|ca| ProbeTls {
                ca,
                domain: domain.unwrap_or_else(|| default_tls_domain(args.addr.as_deref())),
                identity,
            })
        } else {
            // Without a CA there is no TLS; asking for its other parts
            // must not quietly probe in plaintext.
            for (flag, set) in [
                ("--tls-domain (HEALTH_TLS_DOMAIN)", domain.is_some()),
                (
                    "--tls-cert (HEALTH_TLS_CERT_FILE)",
                    given(&args.tls_cert).is_some(),
                ),
                (
                    "--tls-key (HEALTH_TLS_KEY_FILE)",
                    given(&args.tls_key).is_some(),
                ),
            ] {
                if set {
                    problems.add(flag, "needs --tls-ca, which turns TLS on");
                }
            }
            None
        };
        if problems.0.is_empty() {
            Ok(ProbeConfig {
                addr,
                timeout: Duration::from_secs(args.timeout),
                tls,
            })
        } else {
            Err(ConfigError {
                problems: problems.0,
            })
        }
    }
}

/// The name the health probe expects on the server's certificate: the host
/// of `--addr`, or `localhost` when the probe dials its own container.
fn default_tls_domain(addr: Option<&str>) -> String {
    let host = addr
        .map(|addr| addr.rsplit_once(':').map_or(addr, |(host, _port)| host))
        .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
        .filter(|host| !host.is_empty());
    host.unwrap_or("localhost").to_owned()
}

/// The address `user-service health` asks when none is given: LISTEN_ADDR's
/// port on loopback, since the unspecified address cannot be dialled.
pub fn default_health_addr(listen_addr: &str) -> String {
    match listen_addr.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => format!("127.0.0.1:{}", addr.port()),
        Ok(addr) => addr.to_string(),
        Err(_) => "127.0.0.1:50051".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("user-service").chain(args.iter().copied()))
            .expect("arguments parse");
        Config::from_args(&cli.serve)
    }

    #[test]
    fn defaults_match_the_design() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(
            config.redis.topology,
            Topology::Standalone {
                url: "redis://127.0.0.1:6379".into()
            }
        );
        assert_eq!(config.redis.credentials, None);
        assert_eq!(config.ttl.default_seconds, 60);
        assert_eq!(config.ttl.max_seconds, 86_400);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.redis.write_replicas, 0);
        assert_eq!(config.metrics_addr, None, "metrics are off by default");
    }

    #[test]
    fn metrics_addr_is_host_port() {
        let config = parse(&["--metrics-addr", "0.0.0.0:9090"]).unwrap();
        assert_eq!(config.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        let err = parse(&["--metrics-addr", "9090"]).unwrap_err();
        assert!(err.to_string().contains("METRICS_ADDR"), "{err}");
    }

    #[test]
    fn write_replicas_is_a_count() {
        let config = parse(&["--redis-write-replicas", "2"]).unwrap();
        assert_eq!(config.redis.write_replicas, 2);
        let err = parse(&["--redis-write-replicas", "two"]).unwrap_err();
        assert!(err.to_string().contains("REDIS_WRITE_REPLICAS"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_by_variable() {
        let err = parse(&[
            "--listen-addr",
            "nope",
            "--redis-mode",
            "sentinel",
            "--user-ttl-seconds",
            "0",
            "--log-format",
            "xml",
        ])
        .unwrap_err();
        let text = err.to_string();
        for var in [
            "LISTEN_ADDR",
            "REDIS_MODE",
            "USER_TTL_SECONDS",
            "LOG_FORMAT",
        ] {
            assert!(text.contains(var), "{var} missing from {text}");
        }
    }

    #[test]
    fn cluster_mode_needs_nodes_and_accepts_host_port() {
        assert!(parse(&["--redis-mode", "cluster"]).is_err());
        let config = parse(&[
            "--redis-mode",
            "cluster",
            "--redis-cluster-nodes",
            "10.0.0.1:7000, redis://10.0.0.2:7001",
        ])
        .unwrap();
        assert_eq!(
            config.redis.topology,
            Topology::Cluster {
                nodes: vec![
                    "redis://10.0.0.1:7000".into(),
                    "redis://10.0.0.2:7001".into()
                ]
            }
        );
    }

    #[test]
    fn password_file_drops_one_newline_and_conflicts_with_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let path = path.to_str().unwrap();
        let config = parse(&["--redis-password-file", path]).unwrap();
        let creds = config.redis.credentials.unwrap();
        assert_eq!(creds.password.unwrap().expose(), "s3cret");

        let err = parse(&["--redis-password-file", path, "--redis-password", "x"]).unwrap_err();
        assert!(err.to_string().contains("REDIS_PASSWORD"));
        let err = parse(&["--redis-password-file", "/nonexistent/pw"]).unwrap_err();
        assert!(err.to_string().contains("cannot read"));
    }

    #[test]
    fn password_file_drops_exactly_one_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let path_arg = path.to_str().unwrap();
        for (content, password) in [
            ("pw", "pw"),
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw\n\n", "pw\n"),
            (" pw \n", " pw "),
        ] {
            std::fs::write(&path, content).unwrap();
            let config = parse(&["--redis-password-file", path_arg]).unwrap();
            let creds = config.redis.credentials.unwrap();
            assert_eq!(creds.password.unwrap().expose(), password, "{content:?}");
        }
    }

    #[test]
    fn unreadable_password_files_are_named_by_variable_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, b'\n']).unwrap();
        let missing = dir.path().join("missing");
        for (path, cause) in [
            (&missing, "No such file"),
            (&dir.path().to_path_buf(), "directory"),
            (&empty, "is empty"),
            (&binary, "UTF-8"),
        ] {
            let err = parse(&["--redis-password-file", path.to_str().unwrap()]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("REDIS_PASSWORD_FILE"), "{text}");
            assert!(text.contains(path.to_str().unwrap()), "{text}");
            assert!(text.contains(cause), "{cause:?} missing from {text}");
        }
    }

    #[test]
    fn an_empty_password_variable_counts_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let path = path.to_str().unwrap();

        let config = parse(&["--redis-password", "", "--redis-password-file", path]).unwrap();
        let creds = config.redis.credentials.unwrap();
        assert_eq!(creds.password.unwrap().expose(), "from-file");

        let config = parse(&["--redis-password", "env", "--redis-password-file", ""]).unwrap();
        let creds = config.redis.credentials.unwrap();
        assert_eq!(creds.password.unwrap().expose(), "env");

        let config = parse(&["--redis-password", "", "--redis-password-file", ""]).unwrap();
        assert_eq!(config.redis.credentials, None);
    }

    #[test]
    fn secrets_never_print() {
        let config = parse(&["--redis-password", "hunter2", "--redis-username", "svc"]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    /// A file with `content` in a fresh temp dir (kept alive by the returned guard).
    fn file(content: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.pem");
        std::fs::write(&path, content).unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    #[test]
    fn rediss_urls_turn_tls_on_with_the_system_roots() {
        let config = parse(&["--redis-url", "rediss://redis.example:6380"]).unwrap();
        assert_eq!(config.redis.tls, Some(RedisTls::default()));
        let config = parse(&[
            "--redis-mode",
            "cluster",
            "--redis-cluster-nodes",
            "rediss://10.0.0.1:7000,rediss://10.0.0.2:7000",
        ])
        .unwrap();
        assert_eq!(config.redis.tls, Some(RedisTls::default()));
        assert_eq!(parse(&[]).unwrap().redis.tls, None, "plaintext by default");
    }

    #[test]
    fn tls_settings_with_plain_redis_urls_are_refused() {
        let (_dir, path) = file("not used");
        for flag in [
            "--redis-ca-file",
            "--redis-client-cert-file",
            "--redis-client-key-file",
        ] {
            let err = parse(&[flag, &path]).unwrap_err().to_string();
            assert!(err.contains("REDIS_URL is plain redis://"), "{flag}: {err}");
        }
        let err = parse(&[
            "--redis-mode",
            "cluster",
            "--redis-cluster-nodes",
            "10.0.0.1:7000",
            "--redis-ca-file",
            &path,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("REDIS_CLUSTER_NODES is plain"), "{err}");
    }

    #[test]
    fn mixed_tls_and_plain_seeds_are_refused() {
        let err = parse(&[
            "--redis-mode",
            "cluster",
            "--redis-cluster-nodes",
            "rediss://10.0.0.1:7000,10.0.0.2:7000",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("REDIS_CLUSTER_NODES: mixes rediss://"),
            "{err}"
        );
    }

    #[test]
    fn skipping_certificate_checks_is_refused() {
        let err = parse(&["--redis-url", "rediss://127.0.0.1:6380/#insecure"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("REDIS_URL") && err.contains("#insecure"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_or_invalid_pem_files_name_their_variable() {
        let (_dir, garbage) = file("hello, I am not PEM\n");
        let err = parse(&[
            "--redis-url",
            "rediss://127.0.0.1:6380",
            "--redis-ca-file",
            &garbage,
            "--tls-client-ca-file",
            "/nonexistent/ca.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("REDIS_CA_FILE") && err.contains("no certificate"),
            "{err}"
        );
        assert!(
            err.contains("TLS_CLIENT_CA_FILE: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn certificate_and_key_come_together() {
        let (_dir, path) = file("unused");
        let err = parse(&["--tls-cert-file", &path]).unwrap_err().to_string();
        assert!(
            err.contains("TLS_KEY_FILE: required when TLS_CERT_FILE is set"),
            "{err}"
        );
        let err = parse(&["--tls-key-file", &path]).unwrap_err().to_string();
        assert!(
            err.contains("TLS_CERT_FILE: required when TLS_KEY_FILE is set"),
            "{err}"
        );
        let err = parse(&[
            "--redis-url",
            "rediss://127.0.0.1:6380",
            "--redis-client-key-file",
            &path,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("REDIS_CLIENT_CERT_FILE: required"), "{err}");
    }

    #[test]
    fn client_ca_needs_a_tls_listener() {
        let (_dir, path) = file("unused");
        let err = parse(&["--tls-client-ca-file", &path])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE"),
            "{err}"
        );
    }

    fn probe(args: &[&str]) -> Result<ProbeConfig, ConfigError> {
        let cli = Cli::try_parse_from(
            ["user-service", "health"]
                .into_iter()
                .chain(args.iter().copied()),
        )
        .expect("arguments parse");
        match cli.command {
            Some(Command::Health(health)) => ProbeConfig::from_args(&health, "0.0.0.0:50051"),
            None => panic!("not the health subcommand"),
        }
    }

    #[test]
    fn health_probe_is_plaintext_unless_given_a_ca() {
        let config = probe(&[]).unwrap();
        assert_eq!(config.addr, "127.0.0.1:50051");
        assert_eq!(config.tls, None);
        let (_dir, path) = file("unused");
        let err = probe(&[
            "--tls-cert",
            &path,
            "--tls-key",
            &path,
            "--tls-domain",
            "svc",
        ])
        .unwrap_err()
        .to_string();
        for flag in ["--tls-cert", "--tls-key", "--tls-domain"] {
            assert!(
                err.contains(&format!("{flag} (")),
                "{flag} missing from {err}"
            );
        }
    }

    #[test]
    fn health_probe_expects_the_host_of_its_address_on_the_certificate() {
        assert_eq!(
            default_tls_domain(Some("user-service:50051")),
            "user-service"
        );
        assert_eq!(default_tls_domain(Some("127.0.0.1:50051")), "127.0.0.1");
        assert_eq!(default_tls_domain(Some("[::1]:50051")), "::1");
        assert_eq!(default_tls_domain(None), "localhost");
    }

    #[test]
    fn health_addr_dials_loopback_for_unspecified_listen_addr() {
        assert_eq!(default_health_addr("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(default_health_addr("127.0.0.2:9"), "127.0.0.2:9");
    }
}
