//! End to end with the real `grpcurl` binary, as the README shows it: server
//! reflection, the old demo's request body, health, and error output.

use std::time::Duration;

use crate::support::{App, Output, RedisServer, ServiceEnv, run_with_timeout, tools};

/// Runs `grpcurl -plaintext <args...>` where `args` include the address.
fn grpcurl(args: &[&str]) -> Output {
    tools::require_grpcurl();
    let mut command = std::process::Command::new("grpcurl");
    command.args(["-plaintext", "-max-time", "10"]).args(args);
    run_with_timeout(&mut command, Duration::from_secs(30))
}

#[tokio::test]
async fn grpcurl_lists_and_describes_the_services() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let addr = service.addr().to_string();

    // Act
    let list = grpcurl(&[&addr, "list"]);
    let describe = grpcurl(&[&addr, "describe", "user.v1.UserService"]);
    let describe_health = grpcurl(&[&addr, "describe", "grpc.health.v1.Health"]);

    // Assert
    assert!(list.status.success(), "{list:?}");
    let services: Vec<&str> = list.stdout.lines().collect();
    assert!(services.contains(&"user.v1.UserService"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
    assert!(describe.status.success(), "{describe:?}");
    assert!(
        describe.stdout.contains("rpc CreateUser"),
        "{}",
        describe.stdout
    );
    assert!(
        describe.stdout.contains("rpc GetUser"),
        "{}",
        describe.stdout
    );
    assert!(describe_health.status.success(), "{describe_health:?}");
    assert!(
        describe_health.stdout.contains("rpc Check"),
        "{}",
        describe_health.stdout
    );
}

#[tokio::test]
async fn grpcurl_creates_and_reads_the_demo_user_with_the_old_body() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let addr = service.addr().to_string();
    let demo_body = r#"{"id":"user123","name":"user123","email":"user@user.com"}"#;

    // Act
    let created = grpcurl(&["-d", demo_body, &addr, "user.v1.UserService/CreateUser"]);
    let got = grpcurl(&[
        "-d",
        r#"{"id":"user123"}"#,
        &addr,
        "user.v1.UserService/GetUser",
    ]);

    // Assert
    let demo_user: serde_json::Value = serde_json::from_str(demo_body).unwrap();
    let created = created.grpcurl_json();
    assert_eq!(created["user"], demo_user);
    assert_eq!(created["ttlSeconds"], 60);
    assert!(created["expireTime"].is_string(), "{created}");
    let got = got.grpcurl_json();
    assert_eq!(got["user"], demo_user);
    assert!(got["expireTime"].is_string(), "{got}");
    assert_eq!(
        redis.cli(&["GET", "user:user123"]).trim(),
        demo_body,
        "redis-cli GET user:user123 shows the demo's JSON, byte for byte"
    );
}

#[tokio::test]
async fn grpcurl_health_check_prints_serving() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let addr = service.addr().to_string();

    // Act
    let output = grpcurl(&[
        "-d",
        r#"{"service":"user.v1.UserService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);

    // Assert
    assert_eq!(output.grpcurl_json()["status"], "SERVING");
}

#[tokio::test]
async fn grpcurl_get_of_a_missing_user_exits_non_zero_with_not_found() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let addr = service.addr().to_string();

    // Act
    let output = grpcurl(&[
        "-d",
        r#"{"id":"ghost"}"#,
        &addr,
        "user.v1.UserService/GetUser",
    ]);

    // Assert
    assert!(!output.status.success(), "{output:?}");
    assert!(
        output.combined().contains("NotFound"),
        "{}",
        output.combined()
    );
}
