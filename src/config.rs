//! The one place that reads the environment and the command line: clap
//! collects raw values (each flag has a matching variable), and
//! `Config::from_args` turns them into a typed `Config`, reporting every
//! problem at once. Nothing else in the crate reads `std::env`.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, builder::TypedValueParser};

use crate::domain::TtlPolicy;

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
}

/// Raw server settings as given; validated by [`Config::from_args`].
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50051")]
    pub listen_addr: String,
    /// `standalone` or `cluster`.
    #[arg(long, env = "REDIS_MODE", default_value = "standalone")]
    pub redis_mode: String,
    /// Standalone Redis server URL (redis://host:port[/db]).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Cluster mode: comma-separated seed nodes (host:port or redis:// URLs).
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
            ) if problems.0.is_empty() => Ok(Config {
                listen_addr,
                redis: RedisConfig {
                    topology,
                    credentials,
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

/// Checks that `raw` is a Redis URL the client understands.
fn check_url(var: &str, raw: &str, problems: &mut Problems) -> Option<String> {
    let url = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("redis://{raw}")
    };
    if url.starts_with("rediss://") {
        problems.add(var, "rediss:// (TLS) is not supported by this build yet");
        return None;
    }
    match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
        Ok(_) => Some(url),
        Err(e) => {
            // The error may quote the URL, which may hold a password: say only what kind of problem it is.
            problems.add(var, format!("not a valid redis:// URL ({})", e.category()));
            None
        }
    }
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
    (!nodes.is_empty()).then_some(nodes)
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

    #[test]
    fn health_addr_dials_loopback_for_unspecified_listen_addr() {
        assert_eq!(default_health_addr("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(default_health_addr("127.0.0.2:9"), "127.0.0.2:9");
    }
}
