//! The semantics table against one plain Redis server: create, read back,
//! expiry, duplicates, the old demo's data, the message size limit.

use std::time::Duration;

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use user_service::pb::user::v1::{CreateUserRequest, User};

use crate::support::{
    App, Monitor, RedisServer, ServiceEnv, Tweak, code_of, eventually, get_request, seconds_until,
    stored_value, stored_value_of, user,
};

#[tokio::test]
async fn created_user_is_stored_as_json_and_read_back() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let ada = CreateUserRequest {
        id: "ada".into(),
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        ttl_seconds: None,
    };

    // Act
    let created = client.create_user(ada).await.unwrap().into_inner();
    let got = client
        .get_user(get_request("ada"))
        .await
        .unwrap()
        .into_inner();

    // Assert
    let expected = User {
        id: "ada".into(),
        name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
    };
    assert_eq!(created.user.as_ref(), Some(&expected));
    assert_eq!(created.ttl_seconds, 60, "the default TTL applies");
    assert_close(seconds_until(created.expire_time), 60.0);
    assert_eq!(got.user.as_ref(), Some(&expected));
    assert_close(seconds_until(got.expire_time), 60.0);

    assert_eq!(
        redis.get("user:ada"),
        Some(stored_value("ada", "Ada Lovelace", "ada@example.com"))
    );
    assert!(
        (55..=60).contains(&redis.ttl("user:ada")),
        "TTL {}",
        redis.ttl("user:ada")
    );
    assert_eq!(
        redis.keys("*"),
        ["user:ada"],
        "the service writes no other keys"
    );
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_user_service() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;

    // Act
    let server = service.try_health_of("").await;
    let user_service = service.try_health_of("user.v1.UserService").await;

    // Assert
    assert_eq!(server.ok(), Some(ServingStatus::Serving));
    assert_eq!(user_service.ok(), Some(ServingStatus::Serving));
}

#[tokio::test]
async fn create_is_one_set_nx_ex_command() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let monitor = Monitor::start(&redis);

    // Act
    client.create_user(user("grace").ttl(90)).await.unwrap();

    // Assert
    let commands = monitor.user_key_commands();
    assert_eq!(
        commands.len(),
        1,
        "one command touches user:grace: {commands:?}"
    );
    let set = &commands[0];
    assert!(
        set.starts_with("\"SET\" \"user:grace\" ")
            && set.contains(" \"NX\"")
            && set.contains(" \"EX\" \"90\""),
        "expected SET user:grace <json> NX EX 90, got {set}"
    );
}

#[tokio::test]
async fn explicit_ttl_is_applied_and_reported() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act
    let created = client
        .create_user(user("hopper").ttl(3600))
        .await
        .unwrap()
        .into_inner();

    // Assert
    assert_eq!(created.ttl_seconds, 3600);
    assert_close(seconds_until(created.expire_time), 3600.0);
    assert!((3595..=3600).contains(&redis.ttl("user:hopper")));
}

#[tokio::test]
async fn configured_default_ttl_applies_when_none_is_asked_for() {
    // Arrange
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis).env("USER_TTL_SECONDS", "30");
    let service = App::start(env).await;
    let mut client = service.client();

    // Act
    let created = client
        .create_user(user("turing"))
        .await
        .unwrap()
        .into_inner();

    // Assert
    assert_eq!(created.ttl_seconds, 30);
    assert_close(seconds_until(created.expire_time), 30.0);
    assert!((25..=30).contains(&redis.ttl("user:turing")));
}

#[tokio::test]
async fn get_of_an_absent_user_is_not_found() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act
    let result = client.get_user(get_request("nobody")).await;

    // Assert
    assert_eq!(code_of(&result), Code::NotFound, "{result:?}");
}

#[tokio::test]
async fn user_with_a_one_second_ttl_expires() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let request = user("mayfly").ttl(1);

    // Act
    let created = client.create_user(request).await.unwrap().into_inner();

    // Assert
    assert_eq!(created.ttl_seconds, 1);
    eventually(
        Duration::from_secs(5),
        "GetUser(mayfly) is NOT_FOUND",
        || {
            let mut client = client.clone();
            async move { code_of(&client.get_user(get_request("mayfly")).await) == Code::NotFound }
        },
    )
    .await;
    assert_eq!(redis.get("user:mayfly"), None);
}

#[tokio::test]
async fn user_written_by_the_old_demo_is_readable() {
    // Arrange
    let redis = RedisServer::start();
    redis.cli(&[
        "SET",
        "user:legacy",
        r#"{"id":"legacy","name":"Legacy","email":"l@x.io"}"#,
        "EX",
        "60",
    ]);
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act
    let got = client
        .get_user(get_request("legacy"))
        .await
        .unwrap()
        .into_inner();

    // Assert
    let expected = User {
        id: "legacy".into(),
        name: "Legacy".into(),
        email: "l@x.io".into(),
    };
    assert_eq!(got.user, Some(expected));
    assert_close(seconds_until(got.expire_time), 60.0);
}

#[tokio::test]
async fn user_stored_without_expiry_has_no_expire_time() {
    // Arrange
    let redis = RedisServer::start();
    redis.cli(&[
        "SET",
        "user:forever",
        r#"{"id":"forever","name":"Forever","email":"f@x.io"}"#,
    ]);
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act
    let got = client
        .get_user(get_request("forever"))
        .await
        .unwrap()
        .into_inner();

    // Assert
    assert_eq!(got.user.map(|user| user.name).as_deref(), Some("Forever"));
    assert_eq!(got.expire_time, None);
}

#[tokio::test]
async fn duplicate_create_is_already_exists_and_leaves_the_user_untouched() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let original = user("dup").name("Original").ttl(3600);
    client.create_user(original.clone()).await.unwrap();

    // Act
    let duplicate = user("dup")
        .name("Impostor")
        .email("impostor@example.com")
        .ttl(5);
    let result = client.create_user(duplicate).await;

    // Assert
    assert_eq!(code_of(&result), Code::AlreadyExists, "{result:?}");
    assert_eq!(
        redis.get("user:dup"),
        Some(stored_value_of(&original)),
        "stored value untouched"
    );
    assert!(
        redis.ttl("user:dup") > 3500,
        "TTL untouched: {}",
        redis.ttl("user:dup")
    );
    let got = client
        .get_user(get_request("dup"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.user.map(|user| user.name).as_deref(), Some("Original"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_id_have_exactly_one_winner() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let client = service.client();

    // Act
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut client = client.clone();
            let request = user("contested").name(&format!("contender {i}"));
            tokio::spawn(async move { (i, code_of(&client.create_user(request).await)) })
        })
        .collect();
    let mut winners = Vec::new();
    let mut other_codes = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (i, Code::Ok) => winners.push(i),
            (_, Code::AlreadyExists) => {}
            (i, code) => other_codes.push((i, code)),
        }
    }

    // Assert
    assert_eq!(other_codes, [], "every loser gets ALREADY_EXISTS");
    assert_eq!(winners.len(), 1, "exactly one create wins: {winners:?}");
    let winner = user("contested").name(&format!("contender {}", winners[0]));
    assert_eq!(redis.get("user:contested"), Some(stored_value_of(&winner)));
}

#[tokio::test]
async fn oversized_request_is_refused_and_the_service_stays_healthy() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let three_mib_name = "n".repeat(3 * 1024 * 1024);

    // Act
    let huge = user("huge").name(&three_mib_name);
    let result = tokio::time::timeout(Duration::from_secs(10), client.create_user(huge))
        .await
        .expect("an oversized request is answered, not left hanging");

    // Assert
    let refused = [Code::OutOfRange, Code::ResourceExhausted];
    assert!(refused.contains(&code_of(&result)), "{result:?}");
    assert_eq!(redis.dbsize(), 0);
    assert_eq!(service.health().await, ServingStatus::Serving);
    let mut fresh = service.client();
    fresh
        .create_user(user("small"))
        .await
        .expect("a normal request still works");
}

/// Expire times are compared with seconds of slack: they only need to show
/// that the right TTL was applied.
fn assert_close(actual_seconds: f64, expected_seconds: f64) {
    assert!(
        (actual_seconds - expected_seconds).abs() <= 5.0,
        "expire_time is {actual_seconds:.1} s away, expected about {expected_seconds} s"
    );
}
