//! Unit tests of `Config::from_args` and `ProbeConfig::from_args`, driven
//! through the real clap definitions.

use clap::Parser;

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
fn every_bad_number_is_reported_at_once() {
    let flags = [
        ("--user-ttl-seconds", "USER_TTL_SECONDS"),
        ("--user-max-ttl-seconds", "USER_MAX_TTL_SECONDS"),
        ("--redis-timeout-ms", "REDIS_TIMEOUT_MS"),
        ("--redis-connect-timeout-ms", "REDIS_CONNECT_TIMEOUT_MS"),
        ("--max-concurrent-calls", "MAX_CONCURRENT_CALLS"),
        ("--worker-threads", "WORKER_THREADS"),
        ("--shutdown-grace-seconds", "SHUTDOWN_GRACE_SECONDS"),
        ("--redis-write-replicas", "REDIS_WRITE_REPLICAS"),
    ];
    let args: Vec<&str> = flags.iter().flat_map(|(flag, _)| [*flag, "x"]).collect();
    let err = parse(&args).unwrap_err();
    assert_eq!(err.problems.len(), flags.len(), "{err}");
    for (_, var) in flags {
        assert!(
            err.to_string()
                .contains(&format!("{var}: must be a whole number (got \"x\")")),
            "{var} missing from {err}"
        );
    }
    let err = parse(&["--worker-threads", "0"]).unwrap_err();
    assert_eq!(
        err.problems,
        ["WORKER_THREADS: must be at least 1 (got \"0\")"]
    );
}
