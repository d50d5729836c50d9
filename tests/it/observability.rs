//! `METRICS_ADDR`: Prometheus text on its own port. Calls are counted by
//! method and code, latency lands in a per-method histogram, Redis failures
//! are counted by kind, and the health gauge follows Redis.

use std::{net::SocketAddr, time::Duration};

use tonic::Code;

use crate::support::{
    RedisServer, Service, ServiceEnv, code_of, eventually, free_port, get_request,
    metrics::{http_get, sample, scrape},
    user,
};

const HEALTH_FOLLOWS: Duration = Duration::from_secs(15);

fn calls(method: &str, code: &str) -> String {
    format!("user_service_calls_total{{method=\"{method}\",code=\"{code}\"}}")
}

#[tokio::test]
async fn metrics_count_calls_by_code_latency_and_redis_errors() {
    // Arrange
    let redis = RedisServer::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(&redis).env("METRICS_ADDR", &metrics_addr.to_string());
    let service = Service::start(env).await;
    let mut client = service.client();
    let before = scrape(metrics_addr);

    // Act: 3 created, 1 duplicate, 2 found, 1 missing, 1 invalid.
    for id in ["m1", "m2", "m3"] {
        client.create_user(user(id)).await.unwrap();
    }
    let duplicate = client.create_user(user("m1")).await;
    for id in ["m1", "m2"] {
        client.get_user(get_request(id)).await.unwrap();
    }
    let missing = client.get_user(get_request("nobody")).await;
    let invalid = client.get_user(get_request("not valid")).await;
    let after = scrape(metrics_addr);

    // Assert
    assert_eq!(code_of(&duplicate), Code::AlreadyExists);
    assert_eq!(code_of(&missing), Code::NotFound);
    assert_eq!(code_of(&invalid), Code::InvalidArgument);
    assert_eq!(sample(&before, &calls("CreateUser", "OK")), 0.0);
    assert_eq!(sample(&before, "user_service_serving"), 1.0);
    for (method, code, n) in [
        ("CreateUser", "OK", 3.0),
        ("CreateUser", "AlreadyExists", 1.0),
        ("GetUser", "OK", 2.0),
        ("GetUser", "NotFound", 1.0),
        ("GetUser", "InvalidArgument", 1.0),
        ("GetUser", "Unavailable", 0.0),
    ] {
        assert_eq!(
            sample(&after, &calls(method, code)),
            n,
            "{method} {code}: {after:#?}"
        );
    }
    for method in ["CreateUser", "GetUser"] {
        let count = sample(
            &after,
            &format!("user_service_call_duration_seconds_count{{method=\"{method}\"}}"),
        );
        let inf = sample(
            &after,
            &format!(
                "user_service_call_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}}"
            ),
        );
        let within_5s = sample(
            &after,
            &format!("user_service_call_duration_seconds_bucket{{method=\"{method}\",le=\"5\"}}"),
        );
        let sum = sample(
            &after,
            &format!("user_service_call_duration_seconds_sum{{method=\"{method}\"}}"),
        );
        assert_eq!(count, 4.0, "{method} latency count");
        assert_eq!(inf, count, "{method}: the +Inf bucket holds every call");
        assert_eq!(within_5s, count, "{method}: every call took under 5 s");
        assert!(sum > 0.0 && sum < 20.0, "{method} latency sum {sum}");
    }
    let redis_errors: f64 = after
        .iter()
        .filter(|(series, _)| series.starts_with("user_service_redis_errors_total{"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(redis_errors, 0.0, "no Redis error yet: {after:#?}");
}

#[tokio::test]
async fn metrics_follow_a_frozen_redis() {
    // Arrange
    let redis = RedisServer::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(&redis)
        .env("METRICS_ADDR", &metrics_addr.to_string())
        .env("REDIS_TIMEOUT_MS", "300");
    let service = Service::start(env).await;
    let mut client = service.client();

    // Act
    redis.stop();
    let during = client.get_user(get_request("anyone")).await;
    eventually(HEALTH_FOLLOWS, "the serving gauge drops to 0", || async {
        sample(&scrape(metrics_addr), "user_service_serving") == 0.0
    })
    .await;
    let frozen = scrape(metrics_addr);
    redis.cont();
    eventually(HEALTH_FOLLOWS, "the serving gauge returns to 1", || async {
        sample(&scrape(metrics_addr), "user_service_serving") == 1.0
    })
    .await;

    // Assert
    assert_eq!(code_of(&during), Code::Unavailable, "{during:?}");
    assert_eq!(sample(&frozen, &calls("GetUser", "Unavailable")), 1.0);
    assert_eq!(
        sample(&frozen, "user_service_redis_errors_total{kind=\"timeout\"}"),
        1.0,
        "{frozen:#?}"
    );
    assert_eq!(sample(&frozen, "user_service_redis_lost_total"), 1.0);
    assert!(
        service.stdout().contains("Redis lost"),
        "a log line for the change:\n{}",
        service.stdout()
    );
}

#[tokio::test]
async fn metrics_endpoint_speaks_http_and_only_serves_metrics() {
    // Arrange
    let redis = RedisServer::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::standalone(&redis).env("METRICS_ADDR", &metrics_addr.to_string());
    let service = Service::start(env).await;

    // Act
    let metrics = http_get(metrics_addr, "/metrics");
    let other = http_get(metrics_addr, "/");

    // Assert
    assert_eq!(metrics.status_line, "HTTP/1.1 200 OK");
    assert!(
        metrics
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{metrics:?}"
    );
    assert!(
        metrics
            .body
            .contains("# TYPE user_service_calls_total counter")
    );
    assert!(
        metrics
            .body
            .contains("# TYPE user_service_call_duration_seconds histogram")
    );
    assert_eq!(other.status_line, "HTTP/1.1 404 Not Found");
    assert!(
        service.stdout().contains("serving metrics"),
        "{}",
        service.stdout()
    );
}
