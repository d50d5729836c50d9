//! WatchUsers benchmark (issue 15's `make bench` rows), run by bench/watch.sh
//! against a running service:
//!   1. delivery latency: CreateUser at a fixed rate with N watchers
//!      attached; for each event, the time from the create's answer to its
//!      PUT on each watcher (p50, p99 over every watcher);
//!   2. CreateUser rate (32 callers, closed loop) with N watchers vs none.
//!
//! Usage: watch_bench ADDR [WATCHERS=100] [RATE=1000] [SECONDS=5]
//! Prints `WATCH-BENCH` lines; it asserts nothing (speed is not a test).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use user_service::pb::user::v1::{
    CreateUserRequest, WatchUsersRequest, user_service_client::UserServiceClient,
    watch_users_response::Kind,
};

type Answered = Arc<Mutex<HashMap<String, Instant>>>;

fn request(id: String) -> CreateUserRequest {
    CreateUserRequest {
        id,
        name: "Bench".into(),
        email: "bench@example.com".into(),
        ttl_seconds: Some(60),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// Opens `n` watchers on 10 connections; each records, per PUT of an id in
/// `answered`, how long after the create's answer it arrived.
async fn watchers(
    addr: &str,
    n: usize,
    prefix: &str,
    answered: Answered,
    latencies: Arc<Mutex<Vec<Duration>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let channels: Vec<Channel> = {
        let mut v = Vec::new();
        for _ in 0..10 {
            v.push(
                Channel::from_shared(format!("http://{addr}"))
                    .expect("address")
                    .connect()
                    .await
                    .expect("connect"),
            );
        }
        v
    };
    for i in 0..n {
        let mut client = UserServiceClient::new(channels[i % channels.len()].clone());
        let mut stream = client
            .watch_users(WatchUsersRequest {
                id_prefix: prefix.to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("subscribed")
            .expect("message");
        assert_eq!(first.kind(), Kind::Subscribed);
        let answered = Arc::clone(&answered);
        let latencies = Arc::clone(&latencies);
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                if event.kind() != Kind::Put {
                    continue;
                }
                let now = Instant::now();
                // The event may beat the answer: then it counts as 0.
                let at = answered.lock().unwrap().get(&event.id).copied();
                let latency = at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                latencies.lock().unwrap().push(latency);
            }
        }));
    }
    tasks
}

/// CreateUser calls per second by 32 callers in a closed loop.
async fn create_rate(addr: &str, prefix: &str, seconds: u64) -> f64 {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut callers = Vec::new();
    for c in 0..32 {
        let mut client = UserServiceClient::new(channel.clone());
        let prefix = prefix.to_owned();
        callers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                client
                    .create_user(request(format!("{prefix}{c}-{done}")))
                    .await
                    .expect("create");
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("caller");
    }
    total as f64 / seconds as f64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .expect("usage: watch_bench ADDR [WATCHERS] [RATE] [SECONDS]");
    let n: usize = args.get(2).map_or(100, |a| a.parse().expect("WATCHERS"));
    let rate: u64 = args.get(3).map_or(1000, |a| a.parse().expect("RATE"));
    let seconds: u64 = args.get(4).map_or(5, |a| a.parse().expect("SECONDS"));

    // 1. Delivery latency at a fixed create rate.
    let answered: Answered = Arc::default();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks = watchers(addr, n, "", Arc::clone(&answered), Arc::clone(&latencies)).await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut sent = Vec::new();
    for i in 0..total {
        ticker.tick().await;
        let mut client = UserServiceClient::new(channel.clone());
        let answered = Arc::clone(&answered);
        sent.push(tokio::spawn(async move {
            let id = format!("lat-{i}");
            client
                .create_user(request(id.clone()))
                .await
                .expect("create");
            answered.lock().unwrap().insert(id, Instant::now());
        }));
    }
    for s in sent {
        s.await.expect("create task");
    }
    let want = (total as usize) * n;
    let wait_until = Instant::now() + Duration::from_secs(30);
    while latencies.lock().unwrap().len() < want && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    println!(
        "WATCH-BENCH delivery watchers={n} creates_per_s={rate} events={} of {want} p50={:?} p99={:?}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );

    // 2. CreateUser rate with the watchers attached, then without.
    let with = create_rate(addr, "rw-", seconds).await;
    for task in tasks {
        task.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let without = create_rate(addr, "rn-", seconds).await;
    println!(
        "WATCH-BENCH create_rate with_{n}_watchers={with:.0}/s without={without:.0}/s ratio={:.2}",
        with / without
    );
}
