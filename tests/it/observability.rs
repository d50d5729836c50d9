//! `METRICS_ADDR`: Prometheus text on its own port, scraped with a real HTTP
//! client. Every gRPC call is counted once under go-grpc-prometheus's names
//! (including calls that fail before a handler: an unknown method, an
//! undecodable body), Redis failures are counted by kind, the health gauge
//! follows Redis, refusals are counted and their log lines summarised.

use std::{net::SocketAddr, time::Duration};

use tokio::time::Instant;
use tonic::{Code, codegen::Bytes};

use crate::support::{
    RedisServer, Service, ServiceEnv, code_of, eventually, free_port, get_request,
    metrics::{http_get, sample, scrape},
    raw, user,
};

const HEALTH_FOLLOWS: Duration = Duration::from_secs(15);
const SERVICE: &str = "user.v1.UserService";

fn labels(method: &str) -> String {
    let service = if method == "unknown" {
        "unknown"
    } else {
        SERVICE
    };
    let kind = if method == "unknown" {
        "unknown"
    } else {
        "unary"
    };
    format!("grpc_type=\"{kind}\",grpc_service=\"{service}\",grpc_method=\"{method}\"")
}

fn handled(method: &str, code: &str) -> String {
    format!(
        "grpc_server_handled_total{{{},grpc_code=\"{code}\"}}",
        labels(method)
    )
}

fn started(method: &str) -> String {
    format!("grpc_server_started_total{{{}}}", labels(method))
}

fn metrics_env(redis: &RedisServer) -> (ServiceEnv, SocketAddr) {
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(redis).env("METRICS_ADDR", &metrics_addr.to_string());
    (env, metrics_addr)
}

#[tokio::test]
async fn metrics_count_every_call_once_by_code_including_those_failing_before_the_handler() {
    // Arrange
    let redis = RedisServer::start();
    let (env, metrics_addr) = metrics_env(&redis);
    let service = Service::start(env).await;
    let mut client = service.client();
    let before = scrape(metrics_addr).await;

    // Act: 3 created, 1 duplicate, 2 found, 1 missing, 1 invalid, and two
    // that never reach a handler: an unknown method and a body that is not
    // protobuf (a field header announcing 127 bytes that never come).
    for id in ["m1", "m2", "m3"] {
        client.create_user(user(id)).await.unwrap();
    }
    let duplicate = client.create_user(user("m1")).await;
    for id in ["m1", "m2"] {
        client.get_user(get_request(id)).await.unwrap();
    }
    let missing = client.get_user(get_request("nobody")).await;
    let invalid = client.get_user(get_request("not valid")).await;
    let unknown = raw::call(
        service.channel(),
        "/user.v1.UserService/PurgeAllUsers",
        Bytes::new(),
    )
    .await;
    let undecodable = raw::call(
        service.channel(),
        "/user.v1.UserService/CreateUser",
        Bytes::from_static(&[0x0a, 0x7f, b'x']),
    )
    .await;
    let after = scrape(metrics_addr).await;

    // Assert
    assert_eq!(code_of(&duplicate), Code::AlreadyExists);
    assert_eq!(code_of(&missing), Code::NotFound);
    assert_eq!(code_of(&invalid), Code::InvalidArgument);
    let unknown = unknown.expect_err("an unknown method fails");
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    let undecodable = undecodable.expect_err("a truncated message fails");
    assert_eq!(undecodable.code(), Code::InvalidArgument, "{undecodable:?}");
    assert_eq!(sample(&before, &handled("CreateUser", "OK")), 0.0);
    assert_eq!(sample(&before, "user_service_serving"), 1.0);
    for (method, code, n) in [
        ("CreateUser", "OK", 3.0),
        ("CreateUser", "AlreadyExists", 1.0),
        ("CreateUser", "InvalidArgument", 1.0),
        ("GetUser", "OK", 2.0),
        ("GetUser", "NotFound", 1.0),
        ("GetUser", "InvalidArgument", 1.0),
        ("GetUser", "Unavailable", 0.0),
        ("unknown", "Unimplemented", 1.0),
    ] {
        assert_eq!(
            sample(&after, &handled(method, code)),
            n,
            "{method} {code}: {after:#?}"
        );
    }
    for (method, n) in [("CreateUser", 5.0), ("GetUser", 4.0), ("unknown", 1.0)] {
        assert_eq!(sample(&after, &started(method)), n, "{method} started");
        let bucket = |le: &str| {
            sample(
                &after,
                &format!(
                    "grpc_server_handling_seconds_bucket{{{},le=\"{le}\"}}",
                    labels(method)
                ),
            )
        };
        let count = sample(
            &after,
            &format!("grpc_server_handling_seconds_count{{{}}}", labels(method)),
        );
        let sum = sample(
            &after,
            &format!("grpc_server_handling_seconds_sum{{{}}}", labels(method)),
        );
        assert_eq!(count, n, "{method} handling count");
        assert_eq!(bucket("+Inf"), count, "{method}: +Inf holds every call");
        assert_eq!(bucket("5"), count, "{method}: every call took under 5 s");
        assert!(sum > 0.0 && sum < 5.0 * n, "{method} handling sum {sum}");
    }
    assert!(
        sample(
            &after,
            "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"grpc.health.v1.Health\",grpc_method=\"Check\",grpc_code=\"OK\"}"
        ) >= 1.0,
        "health checks are counted too: {after:#?}"
    );
    let redis_errors: f64 = after
        .iter()
        .filter(|(series, _)| series.starts_with("user_service_redis_errors_total{"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(redis_errors, 0.0, "no Redis error yet: {after:#?}");
    assert_eq!(
        sample(&after, "user_service_redis_errors_total{kind=\"timeout\"}"),
        0.0
    );
    assert!(
        after.contains_key("user_service_redis_errors_total{kind=\"timeout\"}"),
        "every kind is exported from the start: {after:#?}"
    );
}

#[tokio::test]
async fn metrics_follow_a_frozen_redis() {
    // Arrange
    let redis = RedisServer::start();
    let (env, metrics_addr) = metrics_env(&redis);
    let service = Service::start(env.env("REDIS_TIMEOUT_MS", "300")).await;
    let mut client = service.client();

    // Act
    redis.stop();
    let during = client.get_user(get_request("anyone")).await;
    eventually(HEALTH_FOLLOWS, "the serving gauge drops to 0", || async {
        sample(&scrape(metrics_addr).await, "user_service_serving") == 0.0
    })
    .await;
    let frozen = scrape(metrics_addr).await;
    redis.cont();
    eventually(HEALTH_FOLLOWS, "the serving gauge returns to 1", || async {
        sample(&scrape(metrics_addr).await, "user_service_serving") == 1.0
    })
    .await;

    // Assert
    assert_eq!(code_of(&during), Code::Unavailable, "{during:?}");
    assert_eq!(sample(&frozen, &handled("GetUser", "Unavailable")), 1.0);
    assert_eq!(
        sample(&frozen, "user_service_redis_errors_total{kind=\"timeout\"}"),
        1.0,
        "{frozen:#?}"
    );
    assert_eq!(sample(&frozen, "user_service_redis_lost_total"), 1.0);
    let logs = service.stdout();
    assert!(
        logs.contains("health NOT_SERVING"),
        "a log line for the change:\n{logs}"
    );
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("call failed") && l.contains("reason=\"REDIS_TIMEOUT\""))
            .count(),
        1,
        "the timed-out call is logged once:\n{logs}"
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_and_process_series_only_at_metrics() {
    // Arrange
    let redis = RedisServer::start();
    let (env, metrics_addr) = metrics_env(&redis);
    let service = Service::start(env).await;

    // Act
    let metrics = http_get(metrics_addr, "/metrics").await;
    let other = http_get(metrics_addr, "/").await;

    // Assert
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{metrics:?}"
    );
    for expected in [
        "# TYPE grpc_server_started_total counter",
        "# TYPE grpc_server_handled_total counter",
        "# TYPE grpc_server_handling_seconds histogram",
        "# TYPE user_service_redis_errors_total counter",
        "# TYPE user_service_serving gauge",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "user_service_build_info{version=\"",
    ] {
        assert!(metrics.body.contains(expected), "{expected}: {metrics:?}");
    }
    let samples = crate::support::metrics::parse(&metrics.body);
    let rss = sample(&samples, "process_resident_memory_bytes");
    assert!(
        (1e6..1e9).contains(&rss),
        "process_resident_memory_bytes {rss} is a plausible RSS"
    );
    assert!(sample(&samples, "process_threads") >= 1.0, "{samples:#?}");
    assert_eq!(other.status, 404, "{other:?}");
    assert!(
        service.stdout().contains("serving metrics"),
        "{}",
        service.stdout()
    );
}

#[tokio::test]
async fn refusals_wait_for_a_slot_then_are_counted_and_summarised_in_the_log() {
    // Arrange: one slot, held by a call that waits on a frozen Redis.
    let redis = RedisServer::start();
    let (env, metrics_addr) = metrics_env(&redis);
    let service = Service::start(
        env.env("MAX_CONCURRENT_CALLS", "1")
            .env("REDIS_TIMEOUT_MS", "20000"),
    )
    .await;
    let mut holder = service.client();
    redis.stop();
    let held = tokio::spawn(async move { holder.get_user(get_request("held")).await });
    eventually(HEALTH_FOLLOWS, "the slot is taken", || async {
        let samples = scrape(metrics_addr).await;
        sample(&samples, &started("GetUser")) == 1.0
    })
    .await;

    // Act: 40 calls while the slot is held.
    let began = Instant::now();
    let mut client = service.client();
    let mut refused = Vec::new();
    for i in 0..40 {
        refused.push(client.get_user(get_request(&format!("r{i}"))).await);
    }
    let elapsed = began.elapsed();
    let after = scrape(metrics_addr).await;
    redis.cont();
    let held = held.await.expect("the holding call's task");

    // Assert
    assert_eq!(
        code_of(&held),
        Code::NotFound,
        "the holding call completes: {held:?}"
    );
    for result in &refused {
        assert_eq!(code_of(result), Code::ResourceExhausted, "{result:?}");
    }
    assert_eq!(sample(&after, "user_service_calls_refused_total"), 40.0);
    assert_eq!(
        sample(&after, &handled("GetUser", "ResourceExhausted")),
        40.0
    );
    let logs = service.stdout();
    let lines = logs
        .lines()
        .filter(|l| l.contains("concurrency limit reached"))
        .count();
    // One line per second at most, however many calls were refused.
    let seconds = elapsed.as_secs() as usize + 1;
    assert!(
        (1..=seconds).contains(&lines),
        "{lines} refusal lines for 40 refusals in {elapsed:?}:\n{logs}"
    );
}
