//! WatchUsers against a real Redis server: every kind of change, whoever
//! makes it, prefix filtering, the limits (too many streams, a stalled
//! reader), honesty about gaps (subscription dropped, shutdown) and a Redis
//! without keyspace notifications; in cluster mode, events from every
//! primary and a killed primary's gap.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::timeout;
use tonic::{Code, Streaming, transport::Endpoint as TonicEndpoint};
use user_service::pb::user::v1::{
    WatchUsersRequest, WatchUsersResponse, user_service_client::UserServiceClient,
    watch_users_response::Kind,
};

use crate::support::{
    App, RedisCluster, RedisServer, Service, ServiceEnv, Tweak, eventually, eventually_ok,
    slots::CLUSTER_LOCK, user,
};

/// Longest any expected event may take (a 1 s expiry included).
const EVENT_WAIT: Duration = Duration::from_secs(15);

fn watch_request(prefix: &str) -> WatchUsersRequest {
    WatchUsersRequest {
        id_prefix: prefix.to_owned(),
    }
}

/// Opens a watch and checks its first message is SUBSCRIBED.
async fn open_watch(
    client: &mut UserServiceClient<tonic::transport::Channel>,
    prefix: &str,
) -> Streaming<WatchUsersResponse> {
    let mut stream = client
        .watch_users(watch_request(prefix))
        .await
        .expect("WatchUsers starts")
        .into_inner();
    let first = next_event(&mut stream).await;
    assert_eq!(first, (Kind::Subscribed, String::new()));
    stream
}

/// The next event as (kind, id); panics if the stream ends or stays silent.
async fn next_event(stream: &mut Streaming<WatchUsersResponse>) -> (Kind, String) {
    let message = timeout(EVENT_WAIT, stream.message())
        .await
        .expect("an event within the wait")
        .expect("the stream goes on")
        .expect("the stream is not over");
    assert!(message.event_time.is_some(), "every event has a time");
    (message.kind(), message.id)
}

/// How the stream ends: the status of its first error, skipping events.
async fn end_of(stream: &mut Streaming<WatchUsersResponse>) -> tonic::Status {
    loop {
        match timeout(EVENT_WAIT, stream.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended with OK"),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the stream did not end within {EVENT_WAIT:?}"),
        }
    }
}

#[tokio::test]
async fn every_kind_of_change_arrives_with_its_id_whoever_makes_it() {
    // Arrange
    let redis = RedisServer::start();
    let app = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = app.client();
    let mut watch = open_watch(&mut client, "w-").await;
    let json = r#"{"id":"w-bob","name":"Bob","email":"bob@example.com"}"#;

    // Act: each change through the service or by another program.
    client.create_user(user("other-ada")).await.unwrap();
    client.create_user(user("w-ada")).await.unwrap();
    redis.cli(&["SET", "user:w-bob", json]);
    redis.cli(&["EXPIRE", "user:w-bob", "100"]);
    redis.cli(&["PERSIST", "user:w-bob"]);
    redis.cli(&["DEL", "user:w-bob"]);
    client.create_user(user("w-eve").ttl(1)).await.unwrap();

    // Assert: in order, the other prefix filtered out, the expiry last.
    let expected = [
        (Kind::Put, "w-ada"),
        (Kind::ExpiryChanged, "w-ada"),
        (Kind::Put, "w-bob"),
        (Kind::ExpiryChanged, "w-bob"),
        (Kind::ExpiryChanged, "w-bob"),
        (Kind::Deleted, "w-bob"),
        (Kind::Put, "w-eve"),
        (Kind::ExpiryChanged, "w-eve"),
        (Kind::Expired, "w-eve"),
    ];
    for (kind, id) in expected {
        assert_eq!(next_event(&mut watch).await, (kind, id.to_owned()));
    }
}

#[tokio::test]
async fn a_redis_without_keyspace_events_is_a_failed_precondition_naming_the_setting() {
    // Arrange
    let redis = RedisServer::builder().keyspace_events("").start();
    let app = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = app.client();

    // Act
    let status = client.watch_users(watch_request("")).await.unwrap_err();

    // Assert
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("notify-keyspace-events Kg$xe"),
        "{status:?}"
    );

    // And once an operator sets it, the next probe lets watches start.
    redis.query::<()>(&["CONFIG", "SET", "notify-keyspace-events", "Kg$xe"]);
    eventually(Duration::from_secs(30), "a watch starts", || {
        let mut client = client.clone();
        async move { client.watch_users(watch_request("")).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn an_invalid_prefix_is_invalid_argument() {
    let redis = RedisServer::start();
    let app = App::start(ServiceEnv::standalone(&redis)).await;

    let status = app
        .client()
        .watch_users(watch_request("user:*"))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn streams_beyond_watch_max_streams_are_resource_exhausted() {
    // Arrange
    let redis = RedisServer::start();
    let app = App::start(ServiceEnv::standalone(&redis).env("WATCH_MAX_STREAMS", "2")).await;
    let mut client = app.client();
    let first = open_watch(&mut client, "").await;
    let _second = open_watch(&mut client, "").await;

    // Act
    let third = client.watch_users(watch_request("")).await.unwrap_err();

    // Assert
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    drop(first);
    eventually(Duration::from_secs(10), "a freed slot is reused", || {
        let mut client = client.clone();
        async move { client.watch_users(watch_request("")).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn a_dropped_subscription_ends_the_stream_with_unavailable_and_a_new_watch_works() {
    // Arrange
    let redis = RedisServer::start();
    let app = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = app.client();
    let mut watch = open_watch(&mut client, "").await;

    // Act: Redis drops the subscription connection (events in between are lost).
    redis.query::<i64>(&["CLIENT", "KILL", "TYPE", "pubsub"]);

    // Assert
    let status = end_of(&mut watch).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut again = eventually_watch(&mut client, "").await;
    client.create_user(user("after-gap")).await.unwrap();
    assert_eq!(
        next_event(&mut again).await,
        (Kind::Put, "after-gap".to_owned())
    );
}

/// Opens a watch, retrying while the service re-subscribes.
async fn eventually_watch(
    client: &mut UserServiceClient<tonic::transport::Channel>,
    prefix: &str,
) -> Streaming<WatchUsersResponse> {
    let mut stream = eventually_ok(Duration::from_secs(30), "a new watch starts", || {
        let mut client = client.clone();
        async move {
            client
                .watch_users(watch_request(prefix))
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await;
    assert_eq!(
        next_event(&mut stream).await,
        (Kind::Subscribed, String::new())
    );
    stream
}

#[tokio::test]
async fn a_stalled_reader_gets_resource_exhausted_and_does_not_slow_the_others() {
    // Arrange: one watcher whose connection takes only a few events before
    // flow control stops the server, one that reads everything.
    let redis = RedisServer::start();
    let app = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = app.client();
    let tiny_window = TonicEndpoint::from_shared(format!("http://{}", app.addr()))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut stalled = open_watch(&mut UserServiceClient::new(tiny_window), "").await;
    let mut reader = open_watch(&mut client, "").await;
    let writes = 6000; // more than the 4096 events buffered per watch

    // Act
    let mut pipe = redis::pipe();
    for i in 0..writes {
        pipe.cmd("SET")
            .arg(format!("user:s-{i}"))
            .arg("{}")
            .ignore();
    }
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    // Assert: the reader sees every event, in order; the stalled one ends.
    for i in 0..writes {
        assert_eq!(next_event(&mut reader).await, (Kind::Put, format!("s-{i}")));
    }
    let status = end_of(&mut stalled).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test]
async fn two_hundred_watchers_each_see_a_two_thousand_write_burst_in_order() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    // 20 connections of 10 streams each, as many clients would hold them.
    let mut watchers = Vec::new();
    for _ in 0..20 {
        let channel = service.channel();
        for _ in 0..10 {
            watchers.push(open_watch(&mut UserServiceClient::new(channel.clone()), "b-").await);
        }
    }
    let rss_before = rss_kib(service.pid().as_raw());
    // Per key: written, given an expiry, deleted (3 writes each).
    let keys = 2000 / 3 + 1;
    let mut expected = Vec::new();
    let mut pipe = redis::pipe();
    for i in 0..keys {
        let key = format!("user:b-{i}");
        pipe.cmd("SET").arg(&key).arg("{}").ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(100).ignore();
        pipe.cmd("DEL").arg(&key).ignore();
        for kind in [Kind::Put, Kind::ExpiryChanged, Kind::Deleted] {
            expected.push((kind, format!("b-{i}")));
        }
    }

    // Act
    let mut conn = redis
        .client()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    // Assert: every watcher, every event, in the order Redis made them.
    let readers = watchers.into_iter().map(|mut watch| {
        let expected = expected.clone();
        tokio::spawn(async move {
            for (n, want) in expected.into_iter().enumerate() {
                let got = timeout(EVENT_WAIT, watch.message()).await;
                let got = match got {
                    Ok(Ok(Some(m))) => (m.kind(), m.id),
                    other => panic!("event {n}: {other:?}"),
                };
                assert_eq!(got, want, "event {n}");
            }
        })
    });
    for reader in readers {
        reader.await.unwrap();
    }
    let rss_after = rss_kib(service.pid().as_raw());
    println!(
        "WATCH-RSS before_kib={rss_before} after_kib={rss_after} watchers=200 events={}",
        expected.len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test]
async fn sigterm_ends_open_streams_with_unavailable_and_exits_zero() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let mut watch = open_watch(&mut client, "").await;

    // Act
    service.signal(Signal::SIGTERM);

    // Assert
    let status = end_of(&mut watch).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let exit = service
        .wait_for_exit(Duration::from_secs(20))
        .await
        .expect("the service exits");
    assert!(exit.success(), "{exit:?}\n{}", service.logs());
}

#[tokio::test]
async fn cluster_changes_on_every_primary_arrive() {
    // Arrange
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RedisCluster::start();
    let app = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = app.client();
    let mut watch = open_watch(&mut client, "c-").await;
    let ids: Vec<String> = (0..30).map(|i| format!("c-{i}")).collect();

    // Act
    for id in &ids {
        client.create_user(user(id)).await.unwrap();
    }

    // Assert: every create, whichever primary holds it (each key's events
    // come from one node in order; keys on different nodes may interleave).
    cluster.assert_users_on_every_primary();
    let mut seen = Vec::new();
    while seen.len() < ids.len() * 2 {
        seen.push(next_event(&mut watch).await);
    }
    for id in &ids {
        let of_id: Vec<Kind> = seen
            .iter()
            .filter(|(_, got)| got == id)
            .map(|(kind, _)| *kind)
            .collect();
        assert_eq!(of_id, [Kind::Put, Kind::ExpiryChanged], "{id}");
    }
}

#[tokio::test]
async fn cluster_primary_killed_ends_streams_with_unavailable_and_a_new_watch_works() {
    // Arrange
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = RedisCluster::start();
    let app = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = app.client();
    let mut watch = open_watch(&mut client, "").await;
    let victim = cluster.primary_for("user:k-after").port();

    // Act
    let killed_at = std::time::Instant::now();
    cluster.kill(victim);

    // Assert: the stream ends (the node's subscription dropped), then after
    // the replica takes over a new watch sees writes to the moved slots.
    let status = end_of(&mut watch).await;
    let ended_after = killed_at.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let mut again = eventually_watch(&mut client, "k-").await;
    let resubscribed_after = killed_at.elapsed();
    eventually(
        Duration::from_secs(30),
        "a create after the failover",
        || {
            let mut client = client.clone();
            async move { client.create_user(user("k-after")).await.is_ok() }
        },
    )
    .await;
    assert_eq!(
        next_event(&mut again).await,
        (Kind::Put, "k-after".to_owned())
    );
    println!(
        "WATCH-FAILOVER stream_ended_after={ended_after:?} new_watch_after={resubscribed_after:?} status={:?} message={:?}",
        status.code(),
        status.message()
    );
}
