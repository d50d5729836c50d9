//! A Redis that answers but refuses: out of memory under `noeviction`, a
//! primary demoted to a replica (READONLY), a script running past
//! `busy-reply-threshold` (BUSY), a replica without its primary
//! (MASTERDOWN). Each gets its contract status (with
//! ErrorInfo, and RetryInfo where retrying may help), health turns
//! NOT_SERVING while it lasts and SERVING again once Redis recovers,
//! without a restart of the service.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use crate::support::{
    RedisServer, Service, ServiceEnv, eventually, get_request,
    replication::{info_field, start_replica_of},
    stored_json, user,
};

/// Upper bound for health to notice a change (the store checks about once a second).
const HEALTH_FOLLOWS: Duration = Duration::from_secs(15);

/// Checks the details every refusal of Redis carries: an ErrorInfo with
/// `reason` in domain `user.v1`, and a RetryInfo.
fn assert_retryable(status: &Status, reason: &str) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo: {status:?}"));
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        (reason, "user.v1"),
        "{status:?}"
    );
    let retry = status
        .get_details_retry_info()
        .unwrap_or_else(|| panic!("no RetryInfo: {status:?}"));
    assert!(retry.retry_delay.is_some(), "{status:?}");
}

/// Waits until the service's health answers `want`.
async fn health_becomes(service: &Service, want: ServingStatus, why: &str) {
    eventually(HEALTH_FOLLOWS, why, || async {
        service.try_health_of("").await.ok() == Some(want)
    })
    .await;
}

/// Writes `bytes` of filler values (outside `user:*`) as the admin.
fn fill(redis: &RedisServer, bytes: usize) {
    let mut connection = redis.client().get_connection().expect("admin connection");
    let chunk = vec![b'f'; 64 * 1024];
    for n in 0..bytes / chunk.len() {
        redis::cmd("SET")
            .arg(format!("filler:{n}"))
            .arg(&chunk)
            .query::<()>(&mut connection)
            .unwrap_or_else(|err| panic!("SET filler:{n}: {err}"));
    }
}

#[tokio::test]
async fn out_of_memory_is_resource_exhausted_with_retry_info_and_not_serving() {
    // Arrange: a user stored while there is room; then 4 MB of data and
    // `maxmemory 1mb` under `noeviction`: Redis holds more than it may, so
    // it refuses every write, however small (a Redis just at its limit
    // refuses only writes that push it over).
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("early")).await.expect("create");
    fill(&redis, 4 * 1024 * 1024);
    let _: String = redis.query(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let _: String = redis.query(&["CONFIG", "SET", "maxmemory", "1mb"]);
    let used = info_field(&redis, "memory", "used_memory");

    // Act
    let refused = client.create_user(user("late")).await;
    health_becomes(
        &service,
        ServingStatus::NotServing,
        "health NOT_SERVING while Redis refuses writes (OOM)",
    )
    .await;
    let read = client.get_user(get_request("early")).await;
    let _: String = redis.query(&["CONFIG", "SET", "maxmemory", "0"]);
    health_becomes(
        &service,
        ServingStatus::Serving,
        "health SERVING once Redis has room again",
    )
    .await;
    let after = client.create_user(user("late")).await;

    // Assert
    assert!(used > 1024 * 1024, "Redis holds {used} bytes, not over 1mb");
    let status = refused.expect_err("CreateUser while Redis is out of memory");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("Redis is out of memory"),
        "{status:?}"
    );
    assert_retryable(&status, "REDIS_OUT_OF_MEMORY");
    let read = read.expect("reads still work on a full Redis").into_inner();
    assert_eq!(read.user.map(|u| u.id).as_deref(), Some("early"));
    assert!(after.is_ok(), "{after:?}");
    let stored: serde_json::Value =
        serde_json::from_str(&redis.get("user:late").expect("user:late stored")).unwrap();
    assert_eq!(
        stored,
        stored_json("late", "Name of late", "someone@example.com")
    );
}

#[tokio::test]
async fn a_primary_demoted_to_replica_is_unavailable_and_not_serving() {
    // Arrange: the service's server, and the one it will be made a replica of.
    let redis = RedisServer::start();
    let new_primary = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("before")).await.expect("create");

    // Act: what a failover does to the old primary.
    let port = new_primary.port().to_string();
    let _: String = redis.query(&["REPLICAOF", "127.0.0.1", &port]);
    eventually(HEALTH_FOLLOWS, "the demoted server syncs", || async {
        let info: String = redis.query(&["INFO", "replication"]);
        info.contains("master_link_status:up")
    })
    .await;
    let refused = client.create_user(user("during")).await;
    health_becomes(
        &service,
        ServingStatus::NotServing,
        "health NOT_SERVING on a read-only Redis",
    )
    .await;
    let _: String = redis.query(&["REPLICAOF", "NO", "ONE"]);
    health_becomes(
        &service,
        ServingStatus::Serving,
        "health SERVING once the server is a primary again",
    )
    .await;
    let after = client.create_user(user("after")).await;

    // Assert
    let status = refused.expect_err("CreateUser on a replica");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_retryable(&status, "REDIS_READONLY");
    assert!(after.is_ok(), "{after:?}");
    assert_eq!(new_primary.get("user:during"), None);
}

#[tokio::test]
async fn a_script_running_past_the_busy_threshold_is_unavailable_and_not_serving() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("busy")).await.expect("create");
    let _: String = redis.query(&["CONFIG", "SET", "busy-reply-threshold", "100"]);

    // Act: an endless script from another client; Redis answers BUSY to
    // everyone else once it has run 100 ms.
    let mut script_connection = redis.client().get_connection().expect("admin connection");
    let script = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<()>(&mut script_connection)
    });
    health_becomes(
        &service,
        ServingStatus::NotServing,
        "health NOT_SERVING while Redis is busy",
    )
    .await;
    let refused = client.get_user(get_request("busy")).await;
    let _: String = redis.query(&["SCRIPT", "KILL"]);
    let killed = script.join().expect("script thread");
    health_becomes(
        &service,
        ServingStatus::Serving,
        "health SERVING once the script is killed",
    )
    .await;
    let after = client.get_user(get_request("busy")).await;

    // Assert
    let status = refused.expect_err("GetUser while Redis is busy");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_retryable(&status, "REDIS_BUSY");
    assert!(killed.is_err(), "SCRIPT KILL ends the script with an error");
    assert!(after.is_ok(), "{after:?}");
}

#[tokio::test]
async fn a_replica_that_lost_its_primary_is_unavailable_with_master_down() {
    // Arrange: the service pointed at a replica that serves no stale data
    // (`replica-serve-stale-data no`); it reads while the link is up (and
    // is never ready: a replica takes no writes).
    let primary = RedisServer::start();
    let replica = start_replica_of(&primary);
    let _: String = replica.query(&["CONFIG", "SET", "replica-serve-stale-data", "no"]);
    let _: String = primary.query(&[
        "SET",
        "user:stale",
        "{\"id\":\"stale\",\"name\":\"S\",\"email\":\"s@x.io\"}",
    ]);
    eventually(HEALTH_FOLLOWS, "the replica holds user:stale", || async {
        replica.get("user:stale").is_some()
    })
    .await;
    let service = Service::spawn(ServiceEnv::standalone(&replica));
    let mut client = service.client();
    eventually(HEALTH_FOLLOWS, "GetUser reads from the replica", || {
        let mut client = client.clone();
        async move { client.get_user(get_request("stale")).await.is_ok() }
    })
    .await;
    let health_on_replica = service.health().await;

    // Act
    drop(primary);
    eventually(
        HEALTH_FOLLOWS,
        "the replica notices its primary is gone",
        || async {
            let info: String = replica.query(&["INFO", "replication"]);
            info.contains("master_link_status:down")
        },
    )
    .await;
    let refused = client.get_user(get_request("stale")).await;

    // Assert
    assert_eq!(health_on_replica, ServingStatus::NotServing);
    let status = refused.expect_err("GetUser on a replica without its primary");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_retryable(&status, "REDIS_MASTER_DOWN");
}
