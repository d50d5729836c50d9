//! Cluster readiness: one dead primary must not turn the whole service
//! NOT_SERVING. While a primary is down (until its replica takes over),
//! calls for its slots answer UNAVAILABLE and health stays SERVING, because
//! the other primaries answer and every slot still has an owner.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::support::{
    App, RedisCluster, ServiceEnv, get_request, poll_until, slots::CLUSTER_LOCK, user,
};

#[tokio::test]
async fn one_dead_primary_keeps_readiness_serving_while_its_slots_are_unavailable() {
    // Arrange: a user whose write reached its primary's replica, and a
    // health watch recording every status from before the kill.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = RedisCluster::start();
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    client.create_user(user("one-shard")).await.unwrap();
    let primary = cluster.primary_for("user:one-shard");
    let replicas_with_write: i64 = primary.query(&["WAIT", "1", "5000"]);
    assert_eq!(replicas_with_write, 1, "the replica holds user:one-shard");
    let primary_port = primary.port();
    let mut watch = HealthClient::new(service.channel())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Watch")
        .into_inner();
    let first = watch.next().await.expect("a first status").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(Ok(update)) = watch.next().await {
                seen.lock().unwrap().push(update.status());
            }
        })
    };

    // Act: kill the primary; read its user until the replica has taken over.
    cluster.kill(primary_port);
    let failures = Mutex::new(Vec::new());
    let recovered = poll_until(Duration::from_secs(30), || {
        let mut client = client.clone();
        let failures = &failures;
        async move {
            match client.get_user(get_request("one-shard")).await {
                Ok(_) => Ok(()),
                Err(status) => {
                    failures.lock().unwrap().push(status.code());
                    Err(())
                }
            }
        }
    })
    .await;
    recorder.abort();

    // Assert
    let failures = failures.into_inner().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(recovered.is_ok(), "GetUser did not recover: {failures:?}");
    assert!(
        failures.contains(&Code::Unavailable),
        "no call saw the dead primary's slots UNAVAILABLE: {failures:?}"
    );
    assert!(
        !seen.contains(&ServingStatus::NotServing),
        "readiness went NOT_SERVING for one dead primary: {seen:?} (calls: {failures:?})"
    );
}
