//! TLS between callers and the service, with the real `grpcurl` and the
//! `health` subcommand: calls, reflection and health over TLS; plaintext or
//! an untrusted CA refused; mutual TLS with and without a client certificate.

use std::time::Duration;

use crate::support::{
    App, Certs, Output, RedisServer, ServiceEnv, run_with_timeout, service_command, tools,
};

/// Limit of one grpcurl or `health` run; they answer in well under a second.
const QUICK: Duration = Duration::from_secs(20);

/// Runs `grpcurl <args...>` (the test picks -plaintext, -cacert, -cert...).
fn grpcurl(args: &[&str]) -> Output {
    tools::require_grpcurl();
    let mut command = std::process::Command::new("grpcurl");
    command.args(["-max-time", "10"]).args(args);
    run_with_timeout(&mut command, QUICK)
}

/// Runs `user-service health <args...>` with `env` set.
fn health(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = service_command();
    command.envs(env.iter().copied()).arg("health").args(args);
    run_with_timeout(&mut command, QUICK)
}

#[tokio::test]
async fn grpcurl_over_tls_creates_gets_lists_and_checks_health() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_tls(&certs)).await;
    let addr = service.addr().to_string();
    let body = r#"{"id":"tls-user","name":"TLS User","email":"tls@user.com"}"#;
    let trust = ["-cacert", certs.ca()];

    // Act
    let created = grpcurl(
        &[
            &trust[..],
            &["-d", body, &addr, "user.v1.UserService/CreateUser"],
        ]
        .concat(),
    );
    let got = grpcurl(
        &[
            &trust[..],
            &[
                "-d",
                r#"{"id":"tls-user"}"#,
                &addr,
                "user.v1.UserService/GetUser",
            ],
        ]
        .concat(),
    );
    let list = grpcurl(&[&trust[..], &[addr.as_str(), "list"]].concat());
    let checked = grpcurl(
        &[
            &trust[..],
            &[
                "-d",
                r#"{"service":"user.v1.UserService"}"#,
                &addr,
                "grpc.health.v1.Health/Check",
            ],
        ]
        .concat(),
    );

    // Assert
    let user: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(created.grpcurl_json()["user"], user);
    assert_eq!(got.grpcurl_json()["user"], user);
    assert_eq!(redis.get("user:tls-user").as_deref(), Some(body));
    assert!(list.status.success(), "{list:?}");
    let services: Vec<&str> = list.stdout.lines().collect();
    assert!(services.contains(&"user.v1.UserService"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
    assert_eq!(checked.grpcurl_json()["status"], "SERVING");
}

#[tokio::test]
async fn plaintext_grpcurl_against_a_tls_listener_fails() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_tls(&certs)).await;
    let addr = service.addr().to_string();

    // Act: grpcurl redials a connection the server closes until its
    // connect timeout, so a short one keeps the test quick.
    let output = grpcurl(&["-plaintext", "-connect-timeout", "3", &addr, "list"]);

    // Assert
    assert!(!output.status.success(), "{output:?}");
}

#[tokio::test]
async fn grpcurl_trusting_another_ca_fails() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_tls(&certs)).await;
    let addr = service.addr().to_string();

    // Act
    let output = grpcurl(&["-cacert", certs.other_ca(), &addr, "list"]);

    // Assert
    assert!(!output.status.success(), "{output:?}");
    assert!(
        output.combined().contains("certificate"),
        "{}",
        output.combined()
    );
}

#[tokio::test]
async fn mutual_tls_listener_serves_only_callers_with_a_trusted_certificate() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_mutual_tls(&certs)).await;
    let addr = service.addr().to_string();
    let get = [
        "-d",
        r#"{"id":"nobody"}"#,
        &addr,
        "user.v1.UserService/GetUser",
    ];
    let untrusted = &certs.untrusted_client;

    // Act: grpcurl redials a refused handshake until its connect timeout
    // (10 s by default); 3 s keeps the two refusals quick.
    let refused = ["-connect-timeout", "3"];
    let without = grpcurl(&[&refused[..], &["-cacert", certs.ca()], &get].concat());
    let with_untrusted = grpcurl(
        &[
            &refused[..],
            &[
                "-cacert",
                certs.ca(),
                "-cert",
                untrusted.cert(),
                "-key",
                untrusted.key(),
            ][..],
            &get,
        ]
        .concat(),
    );
    let with = grpcurl(
        &[
            &[
                "-cacert",
                certs.ca(),
                "-cert",
                certs.client.cert(),
                "-key",
                certs.client.key(),
            ][..],
            &get,
        ]
        .concat(),
    );

    // Assert: only the trusted certificate reaches the service (NOT_FOUND).
    assert!(!without.status.success(), "{without:?}");
    assert!(!without.combined().contains("NotFound"), "{without:?}");
    assert!(!with_untrusted.status.success(), "{with_untrusted:?}");
    assert!(
        !with_untrusted.combined().contains("NotFound"),
        "{with_untrusted:?}"
    );
    assert!(with.combined().contains("NotFound"), "{with:?}");
}

#[tokio::test]
async fn health_subcommand_checks_a_tls_listener() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_tls(&certs)).await;
    let addr = service.addr().to_string();

    // Act
    let trusted = health(&[], &["--addr", &addr, "--tls-ca", certs.ca()]);
    let from_listen_addr = health(
        &[("LISTEN_ADDR", &addr), ("HEALTH_TLS_CA_FILE", certs.ca())],
        &[],
    );
    let wrong_ca = health(&[], &["--addr", &addr, "--tls-ca", certs.other_ca()]);
    let plaintext = health(&[], &["--addr", &addr]);

    // Assert
    assert!(trusted.status.success(), "{trusted:?}");
    assert_eq!(trusted.stdout.trim(), "SERVING");
    assert!(
        from_listen_addr.status.success(),
        "without --addr the probe expects localhost on the certificate: {from_listen_addr:?}"
    );
    assert!(!wrong_ca.status.success(), "{wrong_ca:?}");
    assert!(wrong_ca.stderr.contains("UnknownIssuer"), "{wrong_ca:?}");
    assert!(!plaintext.status.success(), "{plaintext:?}");
}

#[tokio::test]
async fn health_subcommand_presents_a_client_certificate_to_a_mutual_tls_listener() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis).grpc_mutual_tls(&certs)).await;
    let addr = service.addr().to_string();
    let tls = ["--addr", &addr, "--tls-ca", certs.ca()];

    // Act
    let with = health(
        &[],
        &[
            &tls[..],
            &[
                "--tls-cert",
                certs.client.cert(),
                "--tls-key",
                certs.client.key(),
            ],
        ]
        .concat(),
    );
    let without = health(&[], &tls);

    // Assert
    assert!(with.status.success(), "{with:?}");
    assert!(!without.status.success(), "{without:?}");
}

#[test]
fn listener_tls_files_are_checked_at_start_up() {
    // Arrange
    let certs = Certs::generate();
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Vars, &str); 3] = [
        (
            &[("TLS_CERT_FILE", certs.server.cert())],
            "TLS_KEY_FILE: required",
        ),
        (
            &[
                ("TLS_CERT_FILE", certs.server.cert()),
                ("TLS_KEY_FILE", certs.client.key()),
            ],
            "TLS_KEY_FILE",
        ),
        (
            &[
                ("TLS_CERT_FILE", certs.server.key()),
                ("TLS_KEY_FILE", certs.server.key()),
            ],
            "TLS_CERT_FILE",
        ),
    ];

    // Act
    let mut wrong = Vec::new();
    for (vars, expected) in cases {
        let mut command = service_command();
        command
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(vars.iter().copied());
        let output = run_with_timeout(&mut command, QUICK);
        let text = output.combined();
        if output.status.success()
            || !text.contains("invalid configuration")
            || !text.contains(expected)
        {
            wrong.push(format!(
                "{vars:?}: want a config error naming {expected:?}, got {}\n{text}",
                output.status
            ));
        }
    }

    // Assert
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n\n"));
}
