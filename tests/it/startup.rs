//! The process: configuration errors, signals, the `health` subcommand,
//! `--help` and log formats.

use std::time::Duration;

use nix::sys::signal::Signal;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    Output, RedisServer, Service, ServiceEnv, eventually, free_port, get_request,
    replication::{blocked_clients, start_replica_of},
    run_with_timeout, service_command, stored_value_of, user,
};

/// How long a process may take to refuse an invalid configuration or to
/// answer the `health` subcommand.
const QUICK: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sigterm_exits_zero() {
    assert_signal_exits_zero(Signal::SIGTERM).await;
}

#[tokio::test]
async fn sigint_exits_zero() {
    assert_signal_exits_zero(Signal::SIGINT).await;
}

async fn assert_signal_exits_zero(signal: Signal) {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    service.client().create_user(user("busy")).await.unwrap();

    // Act
    service.signal(signal);
    let status = service.wait_for_exit(QUICK).await;

    // Assert
    let status = status.unwrap_or_else(|| panic!("still running {QUICK:?} after {signal}"));
    assert_eq!(status.code(), Some(0), "exit after {signal}: {status}");
}

#[tokio::test]
async fn sigterm_exits_zero_while_redis_is_unreachable() {
    // Arrange: the service keeps retrying a Redis that is not there.
    let service = Service::spawn(ServiceEnv::standalone_at(free_port()));
    service.wait_for_health(ServingStatus::NotServing).await;

    // Act
    let status = service.terminate().await;

    // Assert
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish() {
    // Arrange: a create held in flight, visibly: it waits in `WAIT` on the
    // primary (blocked_clients) for a frozen replica, within a 5 s budget.
    let primary = RedisServer::start();
    let replica = start_replica_of(&primary);
    let env = ServiceEnv::standalone(&primary)
        .env("REDIS_WRITE_REPLICAS", "1")
        .env("REDIS_TIMEOUT_MS", "5000");
    let service = Service::start(env).await;
    let mut client = service.client();
    replica.stop();
    let call = tokio::spawn(async move { client.create_user(user("in-flight")).await });
    eventually(QUICK, "the create waits for the replica", || async {
        blocked_clients(&primary) >= 1
    })
    .await;

    // Act: SIGTERM; once the service stops reporting SERVING it has begun
    // shutting down, and the replica may acknowledge.
    service.signal(Signal::SIGTERM);
    eventually(QUICK, "health leaves SERVING after SIGTERM", || async {
        service.try_health_of("").await.ok() != Some(ServingStatus::Serving)
    })
    .await;
    replica.cont();
    let answer = tokio::time::timeout(QUICK, call).await;
    let status = service.wait_for_exit(QUICK).await;

    // Assert
    let answer = answer.expect("the in-flight call is answered").unwrap();
    assert!(answer.is_ok(), "the in-flight call was cut off: {answer:?}");
    assert_eq!(
        primary.get("user:in-flight"),
        Some(stored_value_of(&user("in-flight")))
    );
    let status = status.expect("exits once the in-flight call is done");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Environment variables of one case.
type Vars<'a> = &'a [(&'a str, &'a str)];

#[test]
fn invalid_configuration_exits_non_zero_naming_the_variable() {
    // Arrange: nothing listens on the Redis port, so a service that does not
    // check its configuration first would retry instead of exiting.
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("redis_password");
    std::fs::write(&password_file, "from-file\n").unwrap();
    let password_file = password_file.to_str().unwrap();
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let cases: [(Vars, &[&str]); 8] = [
        (&[("REDIS_MODE", "bogus")], &["REDIS_MODE"]),
        (
            &[
                ("REDIS_PASSWORD", "from-env-pw"),
                ("REDIS_PASSWORD_FILE", password_file),
            ],
            &["REDIS_PASSWORD"],
        ),
        (&[("REDIS_MODE", "cluster")], &["REDIS_CLUSTER_NODES"]),
        (&[("USER_TTL_SECONDS", "sixty")], &["USER_TTL_SECONDS"]),
        (
            &[("USER_TTL_SECONDS", "100"), ("USER_MAX_TTL_SECONDS", "50")],
            &["USER_TTL_SECONDS", "USER_MAX_TTL_SECONDS"],
        ),
        (&[("LOG_FORMAT", "xml")], &["LOG_FORMAT"]),
        (&[("LISTEN_ADDR", "not-an-address")], &["LISTEN_ADDR"]),
        (&[("REDIS_TIMEOUT_MS", "soon")], &["REDIS_TIMEOUT_MS"]),
    ];

    // Act
    let mut wrong = Vec::new();
    for (vars, any_of) in cases {
        let mut command = service_command();
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("REDIS_URL", &redis_url)
            .envs(vars.iter().copied());
        let output = run_with_timeout(&mut command, QUICK);
        let text = output.combined();
        if output.status.success() {
            wrong.push(format!("{vars:?}: exited 0\n{text}"));
        } else if !any_of.iter().any(|name| text.contains(name)) {
            wrong.push(format!(
                "{vars:?}: message names none of {any_of:?}\n{text}"
            ));
        } else if text.contains("from-env-pw") || text.contains("from-file") {
            wrong.push(format!("{vars:?}: message shows a password\n{text}"));
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}

#[tokio::test]
async fn health_subcommand_exits_zero_against_a_serving_instance() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;

    // Act
    let output = health_subcommand(&service.addr().to_string());

    // Assert
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn health_subcommand_fails_where_nothing_listens() {
    // Arrange
    let addr = format!("127.0.0.1:{}", free_port());

    // Act
    let output = health_subcommand(&addr);

    // Assert
    assert!(!output.status.success(), "{output:?}");
}

#[tokio::test]
async fn health_subcommand_fails_against_a_not_serving_instance() {
    // Arrange: Redis is absent, so the instance answers NOT_SERVING.
    let service = Service::spawn(ServiceEnv::standalone_at(free_port()));
    service.wait_for_health(ServingStatus::NotServing).await;

    // Act
    let output = health_subcommand(&service.addr().to_string());

    // Assert
    assert!(!output.status.success(), "{output:?}");
}

#[test]
fn help_does_not_show_password_values() {
    // Arrange
    let secret = "hunter2-do-not-print";
    let mut command = service_command();
    command
        .env("REDIS_PASSWORD", secret)
        .env("REDIS_USERNAME", "svc")
        .arg("--help");

    // Act
    let output = run_with_timeout(&mut command, QUICK);

    // Assert
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.contains("REDIS_PASSWORD"),
        "--help documents REDIS_PASSWORD"
    );
    assert!(
        !output.combined().contains(secret),
        "--help shows the password:\n{}",
        output.stdout
    );
}

#[tokio::test]
async fn json_log_format_writes_one_json_object_per_line() {
    // Arrange
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis).env("LOG_FORMAT", "json");
    let service = Service::start(env).await;
    let mut client = service.client();

    // Act
    client.create_user(user("logged")).await.unwrap();
    let _ = client.get_user(get_request("absent")).await;
    let status = service.terminate().await;
    let logs = format!("{}{}", service.stdout(), service.stderr());

    // Assert
    assert_eq!(status.code(), Some(0));
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "no log lines at all");
    let not_json: Vec<&&str> = lines
        .iter()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line).map_or(true, |value| !value.is_object())
        })
        .collect();
    assert!(
        not_json.is_empty(),
        "lines that are not JSON objects: {not_json:#?}"
    );
}

/// Runs `user-service health --addr <addr>`.
fn health_subcommand(addr: &str) -> Output {
    run_with_timeout(service_command().args(["health", "--addr", addr]), QUICK)
}
