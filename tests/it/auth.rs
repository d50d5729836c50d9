//! Authenticated connections: `requirepass`, the service's ACL user reading
//! its password from a file, rejected or missing credentials, and an ACL
//! user lacking a command the service needs. (Every other test logs in as
//! the service's ACL user too: see `support::acl`.)

use std::{fs, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    App, RedisCluster, RedisServer, Service, ServiceEnv,
    acl::{SERVICE_PASSWORD, SERVICE_USER, deployed_rule},
    code_of, get_request,
    redis_server::ADMIN_PASSWORD,
    stored_value_of, user,
};

const PASSWORD: &str = "s3rvice-Pa55word";
/// How long a service may take to give up on rejected credentials.
const AUTH_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn service_logs_in_with_the_requirepass_password() {
    // Arrange
    let redis = RedisServer::builder().requirepass(PASSWORD).start();
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_PASSWORD", PASSWORD)
        .env("RUST_LOG", "debug");
    let service = App::start(env).await;
    let mut client = service.client();

    // Act
    client.create_user(user("secured")).await.unwrap();
    let got = client.get_user(get_request("secured")).await;

    // Assert
    assert_eq!(code_of(&got), Code::Ok, "{got:?}");
    assert_eq!(
        redis.get("user:secured"),
        Some(stored_value_of(&user("secured")))
    );
    assert!(
        !service.logs().contains(PASSWORD),
        "the password appears in the logs"
    );
}

#[tokio::test]
async fn acl_user_with_a_password_file_has_all_it_needs() {
    // Arrange: the deployed service user, its password in a file as in deploy/secured.
    let redis = RedisServer::start();
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("redis_password");
    fs::write(&password_file, format!("{SERVICE_PASSWORD}\n")).unwrap();
    let env = ServiceEnv::standalone(&redis)
        .unset("REDIS_PASSWORD")
        .env("REDIS_USERNAME", SERVICE_USER)
        .env("REDIS_PASSWORD_FILE", password_file.to_str().unwrap());
    let service = App::start(env).await;
    let mut client = service.client();

    // Act
    let created = client.create_user(user("least-privilege")).await;
    let duplicate = client.create_user(user("least-privilege")).await;
    let got = client.get_user(get_request("least-privilege")).await;
    let missing = client.get_user(get_request("nobody")).await;

    // Assert
    assert_eq!(code_of(&created), Code::Ok, "{created:?}");
    assert_eq!(code_of(&duplicate), Code::AlreadyExists, "{duplicate:?}");
    assert_eq!(code_of(&got), Code::Ok, "{got:?}");
    assert_eq!(code_of(&missing), Code::NotFound, "{missing:?}");
    assert_eq!(
        redis.get("user:least-privilege"),
        Some(stored_value_of(&user("least-privilege")))
    );
    assert_eq!(
        redis.acl_denials(),
        Vec::<String>::new(),
        "the service sent commands its ACL user may not run"
    );
}

#[tokio::test]
async fn acl_user_lacking_get_makes_get_user_internal() {
    // Arrange: a user `svc` with the deployed rules less `+getrange`.
    let without_get = deployed_rule()
        .replacen(&format!("user {SERVICE_USER} "), "user svc ", 1)
        .replace(" +getrange ", " ");
    assert!(!without_get.contains("+getrange"), "{without_get}");
    let redis = RedisServer::builder()
        .acl_user(&format!("{without_get} >{PASSWORD}"))
        .start();
    redis.cli(&[
        "SET",
        "user:blocked",
        r#"{"id":"blocked","name":"Blocked","email":"b@x.io"}"#,
        "EX",
        "60",
    ]);
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_USERNAME", "svc")
        .env("REDIS_PASSWORD", PASSWORD);
    let service = App::start(env).await;
    let mut client = service.client();

    // Act
    let result = client.get_user(get_request("blocked")).await;

    // Assert
    assert_eq!(code_of(&result), Code::Internal, "{result:?}");
    assert_eq!(
        redis.take_acl_denials(),
        vec!["svc: command getrange".to_owned()],
        "Redis refused GETRANGE, and nothing else"
    );
    assert_eq!(service.health().await, ServingStatus::Serving);
}

#[tokio::test]
async fn wrong_password_exits_non_zero_naming_authentication() {
    // Arrange
    let redis = RedisServer::builder().requirepass(PASSWORD).start();
    let wrong = "not-the-Pa55word";
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_PASSWORD", wrong)
        .env("RUST_LOG", "debug");

    // Act
    let service = Service::spawn(env);
    let status = service.wait_for_exit(AUTH_EXIT_TIMEOUT).await;

    // Assert
    assert_exited_for_authentication(&service, status);
    assert!(
        !service.logs().contains(wrong),
        "the password appears in the logs"
    );
    assert_only_failed_logins(&redis, "default");
}

#[tokio::test]
async fn missing_password_exits_non_zero_naming_authentication() {
    // Arrange
    let redis = RedisServer::builder().requirepass(PASSWORD).start();

    // Act
    let service = Service::spawn(ServiceEnv::standalone(&redis));
    let status = service.wait_for_exit(AUTH_EXIT_TIMEOUT).await;

    // Assert
    assert_exited_for_authentication(&service, status);
}

#[tokio::test]
async fn wrong_acl_user_password_exits_non_zero_naming_authentication() {
    // Arrange
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis).env("REDIS_PASSWORD", ADMIN_PASSWORD);

    // Act
    let service = Service::spawn(env);
    let status = service.wait_for_exit(AUTH_EXIT_TIMEOUT).await;

    // Assert
    assert_exited_for_authentication(&service, status);
    assert!(
        !service.logs().contains(ADMIN_PASSWORD),
        "the password appears in the logs"
    );
    assert_only_failed_logins(&redis, SERVICE_USER);
}

#[tokio::test]
async fn cluster_with_a_wrong_password_exits_non_zero_naming_authentication() {
    // Arrange
    let cluster = RedisCluster::start();
    let wrong = "not-the-cluster-Pa55word";
    let env = ServiceEnv::cluster(&cluster).env("REDIS_PASSWORD", wrong);

    // Act
    let service = Service::spawn(env);
    let status = service.wait_for_exit(AUTH_EXIT_TIMEOUT).await;

    // Assert
    assert_exited_for_authentication(&service, status);
    assert!(
        !service.logs().contains(wrong),
        "the password appears in the logs"
    );
    // Every seed is probed at once: some nodes saw the failed login (one the
    // service stopped before reaching may have none), and nothing else.
    let failed_logins: usize = cluster
        .nodes()
        .iter()
        .map(|node| take_only_failed_logins(node, SERVICE_USER))
        .sum();
    assert!(failed_logins > 0, "no node saw the failed login");
}

/// The server's ACL LOG holds failed logins of `user` and nothing else;
/// clears it, as these denials are the point of the test.
fn assert_only_failed_logins(redis: &RedisServer, user: &str) {
    assert!(
        take_only_failed_logins(redis, user) > 0,
        "ACL LOG holds no failed login of `{user}`"
    );
}

/// Clears the server's ACL LOG, asserting it held only failed logins of
/// `user`; returns how many entries it held.
fn take_only_failed_logins(redis: &RedisServer, user: &str) -> usize {
    let denials = redis.take_acl_denials();
    let expected = format!("{user}: auth AUTH");
    assert!(
        denials.iter().all(|denial| *denial == expected),
        "ACL LOG should hold only `{expected}`: {denials:?}"
    );
    denials.len()
}

fn assert_exited_for_authentication(service: &Service, status: Option<std::process::ExitStatus>) {
    let status = status.unwrap_or_else(|| {
        panic!("still running {AUTH_EXIT_TIMEOUT:?} after Redis rejected its credentials")
    });
    assert!(!status.success(), "exited with {status}");
    assert!(
        service.stderr().to_lowercase().contains("authentication"),
        "stderr does not mention authentication"
    );
}
