//! Redis frozen (SIGSTOP), killed, or not there yet: calls answer UNAVAILABLE
//! or DEADLINE_EXCEEDED promptly, health follows Redis, and the service
//! recovers without a restart.

use std::time::{Duration, Instant};

use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    App, Endpoint, RedisServer, ServiceEnv, code_of, eventually, eventually_ok, free_port,
    get_request, stored_value_of, user,
};

/// Upper bound for an answer while Redis is frozen, with the default 1 s
/// Redis budget; generous so a loaded machine does not fail the test.
const PROMPT: Duration = Duration::from_secs(5);
/// Upper bound for health to notice Redis going away or coming back (the
/// background check runs about every second).
const HEALTH_FOLLOWS: Duration = Duration::from_secs(15);

#[tokio::test]
async fn frozen_redis_makes_calls_unavailable_until_it_thaws() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("before-freeze")).await.unwrap();

    // Act
    redis.stop();
    let during_get =
        tokio::time::timeout(PROMPT, client.get_user(get_request("before-freeze"))).await;
    let during_create =
        tokio::time::timeout(PROMPT, client.create_user(user("during-freeze"))).await;
    redis.cont();

    // Assert
    let during_get = during_get.expect("GetUser answered while Redis is frozen");
    let during_create = during_create.expect("CreateUser answered while Redis is frozen");
    assert_eq!(code_of(&during_get), Code::Unavailable, "{during_get:?}");
    assert_eq!(
        code_of(&during_create),
        Code::Unavailable,
        "{during_create:?}"
    );
    eventually(HEALTH_FOLLOWS, "GetUser works again after SIGCONT", || {
        let mut client = client.clone();
        async move { client.get_user(get_request("before-freeze")).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn short_client_deadline_is_answered_with_deadline_exceeded() {
    // Arrange: the Redis budget (3 s) is longer than the caller's deadline.
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis).env("REDIS_TIMEOUT_MS", "3000");
    let service = App::start(env).await;
    let mut client = service.client();
    redis.stop();

    // Act
    let mut request = Request::new(get_request("anyone"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let result = tokio::time::timeout(PROMPT, client.get_user(request)).await;
    let took = started.elapsed();
    redis.cont();

    // Assert
    let result = result.expect("a call with a 300 ms deadline is answered");
    assert_eq!(code_of(&result), Code::DeadlineExceeded, "{result:?}");
    assert!(
        took < Duration::from_secs(2),
        "answered after {took:?}, not near the 300 ms deadline"
    );
}

#[tokio::test]
async fn health_is_not_serving_while_redis_is_frozen() {
    // Arrange
    let redis = RedisServer::start();
    let service = App::start(ServiceEnv::standalone(&redis)).await;

    // Act + Assert (a failure while frozen still thaws: dropping the
    // fixture kills the server)
    redis.stop();
    wait_for_health_of_both(service.endpoint(), ServingStatus::NotServing).await;
    redis.cont();
    wait_for_health_of_both(service.endpoint(), ServingStatus::Serving).await;
}

#[tokio::test]
async fn health_is_not_serving_while_redis_is_down_and_recovers_when_it_returns() {
    // Arrange
    let redis = RedisServer::start();
    let port = redis.port();
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act
    drop(redis);
    wait_for_health_of_both(service.endpoint(), ServingStatus::NotServing).await;
    let while_down = tokio::time::timeout(PROMPT, client.create_user(user("while-down"))).await;
    let redis = RedisServer::builder().port(port).start();
    wait_for_health_of_both(service.endpoint(), ServingStatus::Serving).await;

    // Assert
    let while_down = while_down.expect("CreateUser answered while Redis is down");
    assert_eq!(code_of(&while_down), Code::Unavailable, "{while_down:?}");
    client.create_user(user("after-restart")).await.unwrap();
    assert_eq!(
        redis.get("user:after-restart"),
        Some(stored_value_of(&user("after-restart")))
    );
    assert_eq!(redis.keys("*"), ["user:after-restart"]);
}

#[tokio::test]
async fn service_started_before_redis_waits_for_it() {
    // Arrange: nothing listens on the Redis port yet.
    let port = free_port();
    let service = App::spawn(ServiceEnv::standalone_at(port));
    let mut client = service.client();

    // Act
    let first_answer = first_health_answer(&service).await;
    let call_while_absent =
        tokio::time::timeout(PROMPT, client.get_user(get_request("early"))).await;
    let redis = RedisServer::builder().port(port).start();
    service.wait_for_health(ServingStatus::Serving).await;

    // Assert
    assert_eq!(first_answer, ServingStatus::NotServing);
    let call_while_absent = call_while_absent.expect("GetUser answered while Redis is absent");
    assert_eq!(
        code_of(&call_while_absent),
        Code::Unavailable,
        "{call_while_absent:?}"
    );
    client.create_user(user("late")).await.unwrap();
    client.get_user(get_request("late")).await.unwrap();
    assert_eq!(redis.get("user:late"), Some(stored_value_of(&user("late"))));
}

/// Waits until the health of both `""` and `user.v1.UserService` is `want`.
async fn wait_for_health_of_both(endpoint: &Endpoint, want: ServingStatus) {
    let what = format!("health of the server and of UserService turns {want:?}");
    eventually_ok(HEALTH_FOLLOWS, &what, || async {
        match endpoint.health_of_both().await {
            Ok(status) if status == want => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

/// The first answer of the health check (of `""`): the listener is bound
/// before the server starts, so this is what a caller sees at once.
async fn first_health_answer(service: &App) -> ServingStatus {
    eventually_ok(HEALTH_FOLLOWS, "the health check answers", || {
        assert_eq!(service.ending(), None, "app::run returned");
        service.try_health_of("")
    })
    .await
}
