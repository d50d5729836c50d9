//! TLS between the service and Redis: `rediss://` URLs with a CA file,
//! mutual TLS, certificates that do not verify (fatal), plaintext that never
//! reaches a TLS port, TLS with an ACL user, and a TLS-only cluster.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    App, Certs, RedisCluster, RedisServer, ServerTls, Service, ServiceEnv, code_of, eventually,
    get_request, run_with_timeout, service_command, slots::CLUSTER_LOCK, stored_value_of, user,
};

/// How long a service may take to give up on a certificate, or to refuse
/// its configuration.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The least-privilege ACL user of the service (as in auth.rs).
const SVC_USER: &str = "user svc on >tls-Pa55word resetkeys ~user:* resetchannels -@all +getrange +strlen +set +pttl +ping +exists";

/// Creates `id` through the service, reads it back, and checks that `redis`
/// holds it as the demo's JSON.
async fn assert_round_trip(service: &App, redis: &RedisServer, id: &str) {
    let mut client = service.client();
    let created = client.create_user(user(id)).await;
    assert_eq!(code_of(&created), Code::Ok, "{created:?}");
    let got = client.get_user(get_request(id)).await;
    assert_eq!(code_of(&got), Code::Ok, "{got:?}");
    assert_eq!(
        redis.get(&format!("user:{id}")),
        Some(stored_value_of(&user(id))),
        "user:{id} in the TLS Redis"
    );
}

/// Waits for the service to exit; checks it failed and said `message` on stderr.
async fn assert_exits_saying(service: &Service, message: &str) {
    let status = service
        .wait_for_exit(EXIT_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("still running {EXIT_TIMEOUT:?} after the TLS failure"));
    assert!(!status.success(), "exited with {status}");
    assert!(
        service.stderr().contains(message),
        "stderr does not say {message:?}:\n{}",
        service.logs()
    );
}

#[tokio::test]
async fn rediss_url_with_a_ca_file_stores_users_in_that_redis() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "no"))
        .start();
    let env = ServiceEnv::standalone(&redis).env("REDIS_CA_FILE", certs.ca());

    // Act
    let service = App::start(env).await;

    // Assert
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());
    assert_round_trip(&service, &redis, "over-tls").await;
}

#[tokio::test]
async fn redis_requiring_client_certificates_refuses_a_service_without_one() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "yes"))
        .start();
    let env = ServiceEnv::standalone(&redis).env("REDIS_CA_FILE", certs.ca());

    // Act
    let service = Service::spawn(env);

    // Assert
    assert_exits_saying(
        &service,
        "Redis refused the service's TLS client certificate",
    )
    .await;
}

#[tokio::test]
async fn redis_requiring_client_certificates_accepts_the_service_with_one() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "yes"))
        .start();
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_CA_FILE", certs.ca())
        .env("REDIS_CLIENT_CERT_FILE", certs.client.cert())
        .env("REDIS_CLIENT_KEY_FILE", certs.client.key());

    // Act
    let service = App::start(env).await;

    // Assert
    assert_round_trip(&service, &redis, "mutual-tls").await;
}

#[tokio::test]
async fn redis_certificate_from_another_ca_makes_the_service_exit() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "no"))
        .start();
    let env = ServiceEnv::standalone(&redis).env("REDIS_CA_FILE", certs.other_ca());

    // Act
    let service = Service::spawn(env);

    // Assert
    assert_exits_saying(&service, "Redis TLS certificate did not verify").await;
    assert!(
        service.stderr().contains("UnknownIssuer"),
        "{}",
        service.logs()
    );
}

#[tokio::test]
async fn redis_certificate_for_another_host_makes_the_service_exit() {
    // Arrange: the certificate names 127.0.0.1 only; the service dials localhost.
    let certs = Certs::generate();
    let tls = ServerTls {
        server: certs.ip_only.clone(),
        ..ServerTls::new(&certs, "no")
    };
    let redis = RedisServer::builder().tls(tls).start();
    let env = ServiceEnv::default()
        .env("REDIS_URL", &format!("rediss://localhost:{}", redis.port()))
        .env("REDIS_CA_FILE", certs.ca());

    // Act
    let service = Service::spawn(env);

    // Assert
    assert_exits_saying(&service, "Redis TLS certificate did not verify").await;
    assert!(
        service.stderr().contains("not valid for name"),
        "{}",
        service.logs()
    );
}

#[tokio::test]
async fn plain_redis_url_at_a_tls_port_never_becomes_serving() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "no"))
        .start();

    // Act
    let service = Service::spawn(ServiceEnv::standalone_at(redis.port()));
    let retried = "attempt=3";
    eventually(
        Duration::from_secs(20),
        "the service retries the TLS port",
        || async { service.stdout().contains(retried) || service.stderr().contains(retried) },
    )
    .await;

    // Assert: still retrying, never serving, nothing written.
    assert_eq!(service.exit_status(), None, "{}", service.logs());
    assert_eq!(service.health().await, ServingStatus::NotServing);
    assert_eq!(redis.dbsize(), 0);
}

#[test]
fn tls_settings_with_a_plain_redis_url_are_refused_at_start_up() {
    // Arrange
    let certs = Certs::generate();
    let mut command = service_command();
    command
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("REDIS_CA_FILE", certs.ca());

    // Act
    let output = run_with_timeout(&mut command, EXIT_TIMEOUT);

    // Assert
    assert!(!output.status.success(), "{output:?}");
    let text = output.combined();
    assert!(
        text.contains("invalid configuration") && text.contains("REDIS_CA_FILE"),
        "{text}"
    );
    assert!(text.contains("rediss://"), "{text}");
}

#[tokio::test]
async fn tls_with_an_acl_user_and_password_works() {
    // Arrange
    let certs = Certs::generate();
    let redis = RedisServer::builder()
        .tls(ServerTls::new(&certs, "no"))
        .acl_user(SVC_USER)
        .start();
    let env = ServiceEnv::standalone(&redis)
        .env("REDIS_CA_FILE", certs.ca())
        .env("REDIS_USERNAME", "svc")
        .env("REDIS_PASSWORD", "tls-Pa55word");

    // Act
    let service = App::start(env).await;

    // Assert
    assert_round_trip(&service, &redis, "acl-over-tls").await;
    assert_eq!(
        redis.acl_denials(),
        Vec::<String>::new(),
        "the service sent commands its ACL user may not run"
    );
    assert!(!service.logs().contains("tls-Pa55word"), "password in logs");
}

#[tokio::test]
async fn cluster_over_tls_spreads_users_over_all_three_primaries() {
    // Arrange: one six-node cluster at a time keeps a 2-core machine responsive.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let certs = Certs::generate();
    let cluster = RedisCluster::start_tls(ServerTls::new(&certs, "no"));
    let env = ServiceEnv::cluster(&cluster).env("REDIS_CA_FILE", certs.ca());
    let service = App::start(env).await;
    let mut client = service.client();
    let ids: Vec<String> = (0..30).map(|i| format!("tls-cluster-user-{i}")).collect();

    // Act
    for id in &ids {
        client.create_user(user(id)).await.unwrap();
    }

    // Assert
    assert!(cluster.seed_nodes().starts_with("rediss://"));
    for id in &ids {
        let got = client.get_user(get_request(id)).await.unwrap().into_inner();
        assert_eq!(got.user.map(|user| user.id).as_deref(), Some(id.as_str()));
        let key = format!("user:{id}");
        assert_eq!(
            cluster.primary_for(&key).get(&key),
            Some(stored_value_of(&user(id))),
            "{key} on its primary"
        );
    }
    cluster.assert_users_on_every_primary();
}
