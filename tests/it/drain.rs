//! The drain after SIGTERM, against the real binary: readiness turns
//! NOT_SERVING at once while the listener keeps accepting and answering for
//! SHUTDOWN_DRAIN_SECONDS; then the listener closes, a call still in flight
//! finishes, and the process exits 0. Prints the timeline (ms since SIGTERM)
//! as one `DRAIN-TIMELINE` line (run with `--nocapture` to see it).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use user_service::pb::user::v1::user_service_client::UserServiceClient;

use crate::support::{
    RedisServer, Service, ServiceEnv, eventually, get_request, replication::blocked_clients, user,
};

/// Bound for what takes a second or two on an idle machine.
const SOON: Duration = Duration::from_secs(20);
/// SHUTDOWN_DRAIN_SECONDS of the test.
const DRAIN_SECONDS: u64 = 2;
/// How long Redis holds writes: past the drain, so that a create is still
/// in flight when the listener closes.
const PAUSE_MS: u64 = 4_000;

/// What one probe during the shutdown saw.
#[derive(Debug)]
enum Probe {
    /// A new connection was made and GetUser answered OK.
    Answered,
    /// A new connection was made but the call failed.
    CallFailed(tonic::Status),
    /// No connection could be made: the listener is closed.
    Refused,
}

/// A new connection (never a pooled one, so that it proves the listener
/// still accepts) and one GetUser of `id` on it.
async fn probe(addr: std::net::SocketAddr, id: &str) -> Probe {
    let endpoint = Channel::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let Ok(channel) = endpoint.connect().await else {
        return Probe::Refused;
    };
    match UserServiceClient::new(channel)
        .get_user(get_request(id))
        .await
    {
        Ok(_) => Probe::Answered,
        Err(status) => Probe::CallFailed(status),
    }
}

fn ms(since: Instant, at: Instant) -> u128 {
    at.saturating_duration_since(since).as_millis()
}

#[tokio::test]
async fn sigterm_turns_not_serving_then_keeps_answering_for_the_drain_then_finishes_in_flight_calls()
 {
    // Arrange: a stored user to read, a health watch, a pooled client, and
    // a create held in flight by a write pause that outlasts the drain.
    let redis = RedisServer::start();
    let env = ServiceEnv::standalone(&redis)
        .env("SHUTDOWN_DRAIN_SECONDS", &DRAIN_SECONDS.to_string())
        .env("SHUTDOWN_GRACE_SECONDS", "10")
        .env("REDIS_TIMEOUT_MS", "8000");
    let service = Service::start(env).await;
    let addr = service.addr();
    let mut pooled = service.client();
    pooled
        .create_user(user("drain-read"))
        .await
        .expect("create");
    let mut watch = HealthClient::new(service.channel())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Watch")
        .into_inner();
    let first = watch.next().await.expect("a first status").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);
    redis.cli(&["CLIENT", "PAUSE", &PAUSE_MS.to_string(), "WRITE"]);
    let mut writer = service.client();
    let in_flight = tokio::spawn(async move {
        let answer = writer.create_user(user("drain-in-flight")).await;
        (answer, Instant::now())
    });
    eventually(SOON, "the create is held by the write pause", || async {
        blocked_clients(&redis) >= 1
    })
    .await;

    // Act: SIGTERM; watch health, and probe with new connections until
    // the listener refuses one.
    service.signal(Signal::SIGTERM);
    let sigterm = Instant::now();
    let not_serving = tokio::spawn(async move {
        loop {
            match watch.next().await {
                Some(Ok(update)) if update.status() == ServingStatus::NotServing => {
                    return Instant::now();
                }
                Some(Ok(_)) => {}
                other => panic!("the health watch ended without NOT_SERVING: {other:?}"),
            }
        }
        // Dropping the watch here lets the connection close after the drain.
    });
    let pooled_during_drain = pooled.get_user(get_request("drain-read")).await;
    let pooled_at = Instant::now();
    let mut probes: Vec<(Instant, Probe)> = Vec::new();
    let listener_closed = loop {
        let outcome = probe(addr, "drain-read").await;
        let at = Instant::now();
        let refused = matches!(outcome, Probe::Refused);
        probes.push((at, outcome));
        if refused {
            break at;
        }
        assert!(
            sigterm.elapsed() < Duration::from_secs(DRAIN_SECONDS + 10),
            "the listener still accepts {:?} after SIGTERM",
            sigterm.elapsed()
        );
        // Paces the probes (not a synchronisation: the loop ends on a refusal).
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let not_serving_at = tokio::time::timeout(SOON, not_serving)
        .await
        .expect("NOT_SERVING on the health watch")
        .expect("the watch task");
    let (in_flight, in_flight_at) = tokio::time::timeout(SOON, in_flight)
        .await
        .expect("the in-flight create is answered")
        .expect("the create task");
    let exit = service
        .wait_for_exit(SOON)
        .await
        .expect("the service exits after SIGTERM");
    let exited_at = Instant::now();

    // Assert
    let answered: Vec<u128> = probes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Probe::Answered))
        .map(|(at, _)| ms(sigterm, *at))
        .collect();
    let failed: Vec<(u128, &tonic::Status)> = probes
        .iter()
        .filter_map(|(at, outcome)| match outcome {
            Probe::CallFailed(status) => Some((ms(sigterm, *at), status)),
            _ => None,
        })
        .collect();
    let timeline = format!(
        "DRAIN-TIMELINE drain_s={DRAIN_SECONDS} health_not_serving_ms={} pooled_call_ok_ms={} \
         new_connection_calls_ok={} (first {:?} ms, last {:?} ms) listener_closed_ms={} \
         in_flight_create_answered_ms={} exited_ms={}",
        ms(sigterm, not_serving_at),
        ms(sigterm, pooled_at),
        answered.len(),
        answered.first(),
        answered.last(),
        ms(sigterm, listener_closed),
        ms(sigterm, in_flight_at),
        ms(sigterm, exited_at),
    );
    println!("{timeline}");
    assert!(exit.success(), "exit status {exit}\n{}", service.logs());
    assert!(
        failed.is_empty(),
        "calls on new connections during the drain failed: {failed:?}\n{timeline}"
    );
    assert!(
        answered.len() >= 2,
        "too few calls answered during the drain\n{timeline}"
    );
    assert!(
        pooled_during_drain.is_ok(),
        "a call on an open connection during the drain: {pooled_during_drain:?}"
    );
    assert!(
        not_serving_at < listener_closed,
        "NOT_SERVING must be visible before the listener closes\n{timeline}"
    );
    assert!(
        listener_closed.duration_since(sigterm) >= Duration::from_secs(DRAIN_SECONDS),
        "the listener closed before the drain was over\n{timeline}"
    );
    let created = in_flight.expect("the create in flight at close finishes OK");
    let stored_id = created.into_inner().user.map(|stored| stored.id);
    assert_eq!(stored_id.as_deref(), Some("drain-in-flight"));
    assert!(
        in_flight_at > listener_closed,
        "the create was not in flight when the listener closed\n{timeline}"
    );
    assert!(
        !redis.keys("user:drain-in-flight").is_empty(),
        "the in-flight create is stored"
    );
}
