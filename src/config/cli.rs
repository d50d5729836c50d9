//! The command line and its environment variables, as clap collects them:
//! raw strings and paths, each flag with a matching variable. Nothing here
//! checks a value; `Config::from_args` and `ProbeConfig::from_args` do.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, builder::TypedValueParser};

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
    /// Ask a running server for its health (for container healthchecks); exit
    /// codes as grpc_health_probe's: 0 SERVING, 1 bad arguments, 2 cannot
    /// connect, 3 the health call failed (an unknown --service too), 4 not serving.
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
    /// Health name to ask: "" or user.v1.UserService (readiness: Redis can serve), or liveness (the process serves).
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,
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
    /// UserService calls served at once; a call beyond it waits up to 100 ms for a slot, then gets RESOURCE_EXHAUSTED.
    // 64: the knee measured by bench/knee.py on the 2-core machine (tables in
    // docs/metrics.md): throughput peaks at 32-64 calls in flight (two busy
    // runs peaked at 32, the quiet run at 64 with 32 within 5%), and beyond it
    // p99 only grows (x2 per doubling) while OK/s falls. The upper end of the
    // knee, because a burst of 50 callers must not meet refusals when a slow
    // moment stretches the 100 ms admission wait.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value = "64")]
    pub max_concurrent_calls: String,
    /// WatchUsers streams open at once; one more gets RESOURCE_EXHAUSTED.
    #[arg(long, env = "WATCH_MAX_STREAMS", default_value = "1000")]
    pub watch_max_streams: String,
    /// Threads serving calls. 1: one event loop, fastest per call on a small
    /// machine (measured in bench/RESULTS.md); more: a work-stealing pool.
    #[arg(long, env = "WORKER_THREADS", default_value = "1")]
    pub worker_threads: String,
    /// Seconds after SIGTERM/SIGINT during which health says NOT_SERVING but calls are still answered, so balancers stop sending first.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECONDS", default_value = "5")]
    pub shutdown_drain_seconds: String,
    /// Seconds in-flight calls get to finish after the drain, once the listener stops accepting.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value = "10")]
    pub shutdown_grace_seconds: String,
    /// Replicas that must hold a created user before CreateUser answers OK (Redis `WAIT`); 0: do not wait.
    #[arg(long, env = "REDIS_WRITE_REPLICAS", default_value = "0")]
    pub redis_write_replicas: String,
    /// Export traces over OTLP/gRPC to this collector, e.g. http://collector:4317 (off when unset; W3C traceparent is honoured either way).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// service.name of exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "user-service")]
    pub otel_service_name: String,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off when unset).
    #[arg(long, env = "METRICS_ADDR", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Limits of the gRPC listener.
    #[command(flatten)]
    pub listener: super::listener::ListenerArgs,
}
