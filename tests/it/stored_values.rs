//! Values under `user:<id>` that another program wrote: a 20 MB value is
//! DATA_LOSS without being read whole (the service's peak RSS stays put)
//! and does not stall other calls; each corrupt shape (id mismatch, NUL or
//! bidi control in the name, a JSON array, unparsable text, a hash) is
//! DATA_LOSS naming the key and never echoing the value, standalone and
//! in a cluster.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    RedisCluster, RedisServer, Service, ServiceEnv, get_request, slots::CLUSTER_LOCK, user,
};

/// Size of the oversized value.
const HUGE_BYTES: usize = 20 * 1024 * 1024;
/// A string that appears in every corrupt value and must never reach a caller.
const SECRET: &str = "secret-personal-data";

/// The process's peak resident set (`VmHWM` of /proc/<pid>/status), in kB.
fn peak_rss_kb(service: &Service) -> u64 {
    let path = format!("/proc/{}/status", service.pid());
    let status = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {path}:\n{status}"))
}

/// Stores `value` under `key` as the admin, with a TTL, as another program would.
fn plant(redis: &RedisServer, key: &str, value: &[u8]) {
    let mut connection = redis.client().get_connection().expect("admin connection");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(600)
        .query::<()>(&mut connection)
        .unwrap_or_else(|err| panic!("SET {key}: {err}"));
}

/// A 20 MB value shaped like the start of a user.
fn huge_value() -> Vec<u8> {
    let mut value = br#"{"id":"huge","name":""#.to_vec();
    value.resize(HUGE_BYTES, b'x');
    value.extend_from_slice(br#"","email":"a@b.co"}"#);
    value
}

/// Checks a DATA_LOSS answer for `key`: it names the key, carries the
/// CORRUPT_USER_VALUE ErrorInfo, and holds nothing of the value.
fn assert_data_loss(result: Result<impl std::fmt::Debug, tonic::Status>, key: &str) {
    let status = result.expect_err("a corrupt value is not answered as a user");
    assert_eq!(status.code(), Code::DataLoss, "{key}: {status:?}");
    assert!(status.message().contains(key), "{key}: {status:?}");
    let everything = format!("{status:?}");
    assert!(!everything.contains(SECRET), "{key}: {everything}");
    assert!(
        !everything.contains("xxxxxxxx"),
        "{key}: the huge value leaked"
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CORRUPT_USER_VALUE");
}

#[tokio::test]
async fn a_20_mb_value_is_data_loss_and_never_read_whole() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("small")).await.expect("create");
    client
        .get_user(get_request("small"))
        .await
        .expect("warm-up read");
    plant(&redis, "user:huge", &huge_value());
    let before_kb = peak_rss_kb(&service);

    // Act
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(client.get_user(get_request("huge")).await);
    }
    let after_kb = peak_rss_kb(&service);

    // Assert
    for answer in answers {
        assert_data_loss(answer, "user:huge");
    }
    let grew_kb = after_kb.saturating_sub(before_kb);
    println!("STORED-VALUES peak_rss_before_kb={before_kb} peak_rss_after_kb={after_kb}");
    assert!(
        grew_kb < 8 * 1024,
        "peak RSS grew by {grew_kb} kB reading a {HUGE_BYTES}-byte value: it was read whole"
    );
}

#[tokio::test]
async fn each_corrupt_shape_is_data_loss_naming_the_key_without_the_value() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let shapes: [(&str, String); 7] = [
        (
            "mismatch",
            format!(r#"{{"id":"someone-else","name":"{SECRET}","email":"a@b.co"}}"#),
        ),
        (
            "nul",
            format!(r#"{{"id":"nul","name":"{SECRET}\u0000","email":"a@b.co"}}"#),
        ),
        (
            "bidi",
            format!("{{\"id\":\"bidi\",\"name\":\"{SECRET}\u{202e}\",\"email\":\"a@b.co\"}}"),
        ),
        ("array", format!(r#"["array","{SECRET}","a@b.co"]"#)),
        ("unparsable", format!("{{not json {SECRET}")),
        (
            "bademail",
            format!(r#"{{"id":"bademail","name":"N","email":"{SECRET}"}}"#),
        ),
        ("empty", String::new()),
    ];
    for (id, value) in &shapes {
        plant(&redis, &format!("user:{id}"), value.as_bytes());
    }
    let _: i64 = redis.query(&["HSET", "user:hash", "name", SECRET]);

    // Act
    let mut answers = Vec::new();
    for id in shapes.iter().map(|(id, _)| *id).chain(["hash"]) {
        answers.push((id, client.get_user(get_request(id)).await));
    }

    // Assert
    for (id, answer) in answers {
        assert_data_loss(answer, &format!("user:{id}"));
    }
    assert!(
        !service.logs().contains(SECRET),
        "a corrupt value reached the log:\n{}",
        service.logs()
    );
}

#[tokio::test]
async fn ordinary_reads_keep_succeeding_while_ten_tasks_hammer_a_huge_value() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("ordinary")).await.expect("create");
    plant(&redis, "user:huge", &huge_value());
    let stop = Arc::new(AtomicBool::new(false));
    let hammered = Arc::new(AtomicU64::new(0));
    let mut hammers = Vec::new();
    for _ in 0..10 {
        let mut client = service.client();
        let (stop, hammered) = (Arc::clone(&stop), Arc::clone(&hammered));
        hammers.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(Relaxed) {
                let answer = client.get_user(get_request("huge")).await;
                codes.push(answer.map(|_| Code::Ok).unwrap_or_else(|s| s.code()));
                hammered.fetch_add(1, Relaxed);
            }
            codes
        }));
    }

    // Act: ordinary reads once the hammering is under way.
    crate::support::eventually(Duration::from_secs(20), "the hammers run", || async {
        hammered.load(Relaxed) >= 10
    })
    .await;
    let mut ordinary = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        ordinary.push(client.get_user(get_request("ordinary")).await);
        latencies.push(started.elapsed());
    }
    stop.store(true, Relaxed);
    let mut hammer_codes = Vec::new();
    for hammer in hammers {
        hammer_codes.extend(hammer.await.expect("hammer task"));
    }

    // Assert (latency is reported, not asserted: speed is for benchmarks)
    latencies.sort();
    println!(
        "STORED-VALUES ordinary_reads=100 p50={:?} p99={:?} hammer_reads={}",
        latencies[49],
        latencies[98],
        hammer_codes.len()
    );
    let failed: Vec<_> = ordinary.iter().filter(|answer| answer.is_err()).collect();
    assert!(failed.is_empty(), "ordinary reads failed: {failed:?}");
    assert!(hammer_codes.len() >= 10);
    assert!(
        hammer_codes.iter().all(|code| *code == Code::DataLoss),
        "{hammer_codes:?}"
    );
}

#[tokio::test]
async fn cluster_corrupt_and_oversized_values_are_data_loss_too() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange: values planted on each key's own primary.
    let cluster = RedisCluster::start();
    let service = Service::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    let array = format!(r#"["array","{SECRET}","a@b.co"]"#);
    plant(cluster.primary_for("user:huge"), "user:huge", &huge_value());
    plant(
        cluster.primary_for("user:array"),
        "user:array",
        array.as_bytes(),
    );
    let _: i64 = cluster
        .primary_for("user:hash")
        .query(&["HSET", "user:hash", "name", SECRET]);
    client.create_user(user("fine")).await.expect("create");

    // Act
    let huge = client.get_user(get_request("huge")).await;
    let array = client.get_user(get_request("array")).await;
    let hash = client.get_user(get_request("hash")).await;
    let fine = client.get_user(get_request("fine")).await;

    // Assert
    assert_data_loss(huge, "user:huge");
    assert_data_loss(array, "user:array");
    assert_data_loss(hash, "user:hash");
    assert!(fine.is_ok(), "{fine:?}");
}
