//! Cluster mode against six real nodes (three primaries, three replicas):
//! users are spread over every primary, the semantics are those of a single
//! server, and a primary's failover is UNAVAILABLE until the replica takes over.

use std::{sync::Mutex, time::Duration};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{
    App, RedisCluster, ServiceEnv, code_of, get_request, poll_until, slots::CLUSTER_LOCK,
    stored_value_of, user,
};

#[tokio::test]
async fn cluster_spreads_users_over_all_three_primaries() {
    // Arrange: one six-node cluster at a time keeps a 2-core machine responsive.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RedisCluster::start();
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    let ids: Vec<String> = (0..30).map(|i| format!("cluster-user-{i}")).collect();

    // Act
    for id in &ids {
        client.create_user(user(id)).await.unwrap();
    }

    // Assert: each user is readable through the service and sits, as JSON,
    // on the primary that owns its slot.
    for id in &ids {
        let got = client.get_user(get_request(id)).await.unwrap().into_inner();
        assert_eq!(got.user.map(|user| user.id).as_deref(), Some(id.as_str()));
        let key = format!("user:{id}");
        assert_eq!(
            cluster.primary_for(&key).get(&key),
            Some(stored_value_of(&user(id))),
            "{key} on its primary"
        );
    }
    cluster.assert_users_on_every_primary();
    let duplicate = client.create_user(user(&ids[0])).await;
    assert_eq!(code_of(&duplicate), Code::AlreadyExists, "{duplicate:?}");
    let missing = client.get_user(get_request("not-in-cluster")).await;
    assert_eq!(code_of(&missing), Code::NotFound, "{missing:?}");
    let invalid = client.get_user(get_request("not valid")).await;
    assert_eq!(code_of(&invalid), Code::InvalidArgument, "{invalid:?}");
}

#[tokio::test]
async fn cluster_failover_is_unavailable_until_the_replica_takes_over() {
    // Arrange: a user whose write has reached its primary's replica.
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let mut cluster = RedisCluster::start();
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    client.create_user(user("survivor")).await.unwrap();
    let primary = cluster.primary_for("user:survivor");
    let replicas_with_write: i64 = primary.query(&["WAIT", "1", "5000"]);
    assert_eq!(replicas_with_write, 1, "the replica holds user:survivor");
    let primary_port = primary.port();

    // Act
    cluster.kill(primary_port);
    let failures = Mutex::new(Vec::new());
    let recovered = poll_until(Duration::from_secs(30), || {
        let mut client = client.clone();
        let failures = &failures;
        async move {
            let call = client.get_user(get_request("survivor"));
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => {
                    failures.lock().unwrap().push(status);
                    Err(())
                }
                Err(_) => panic!("GetUser hung for 10 s during the failover"),
            }
        }
    })
    .await;

    // Assert
    let failures = failures.into_inner().unwrap();
    let recovered = recovered.unwrap_or_else(|()| {
        panic!(
            "GetUser did not recover within 30 s; last errors: {:?}",
            failures.last()
        )
    });
    assert_eq!(
        recovered.user.map(|user| user.id).as_deref(),
        Some("survivor")
    );
    let not_unavailable: Vec<_> = failures
        .iter()
        .filter(|status| status.code() != Code::Unavailable)
        .collect();
    assert!(
        not_unavailable.is_empty(),
        "mid-failover answers must be UNAVAILABLE: {not_unavailable:?}"
    );
    client.create_user(user("after-failover")).await.unwrap();
    service.wait_for_health(ServingStatus::Serving).await;
}
