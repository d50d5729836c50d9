//! `REDIS_WRITE_REPLICAS`: CreateUser follows its `SET` with `WAIT N <ms>`
//! on the key's own primary, within the call's budget, and answers
//! UNAVAILABLE ("not replicated") when fewer replicas acknowledged the write.
//! Run against a real primary + replica pair and a real cluster, with a
//! replica frozen by SIGSTOP.

use std::time::Duration;

use tonic::Code;

use crate::support::{
    App, Monitor, RedisCluster, RedisServer, ServiceEnv, code_of, eventually, get_request,
    replication::{blocked_clients, online_replica, start_replica_of},
    slots::CLUSTER_LOCK,
    stored_value_of, user,
};

/// Bound for things that happen within a second or two when the machine is idle.
const SOON: Duration = Duration::from_secs(20);

#[tokio::test]
async fn create_waits_until_the_replica_holds_the_user() {
    // Arrange
    let primary = RedisServer::start();
    let replica = start_replica_of(&primary);
    let env = ServiceEnv::standalone(&primary).env("REDIS_WRITE_REPLICAS", "1");
    let service = App::start(env).await;
    let mut client = service.client();
    let monitor = Monitor::start(&primary);

    // Act
    let created = client.create_user(user("durable")).await;
    let on_replica = replica.get("user:durable");
    let duplicate = client.create_user(user("durable")).await;

    // Assert
    assert_eq!(code_of(&created), Code::Ok, "{created:?}");
    assert_eq!(
        on_replica,
        Some(stored_value_of(&user("durable"))),
        "WAIT 1 acknowledged, so the replica holds user:durable"
    );
    assert_eq!(code_of(&duplicate), Code::AlreadyExists, "{duplicate:?}");
    let sent: Vec<String> = monitor
        .commands()
        .into_iter()
        .filter(|cmd| cmd.starts_with("\"SET\"") || cmd.starts_with("\"WAIT\""))
        .collect();
    assert_eq!(sent.len(), 4, "SET, WAIT per create: {sent:?}");
    for pair in sent.chunks(2) {
        assert!(pair[0].starts_with("\"SET\" \"user:durable\""), "{sent:?}");
        let timeout_ms: u64 = pair[1]
            .strip_prefix("\"WAIT\" \"1\" \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("not WAIT 1 <ms>: {}", pair[1]));
        assert!(
            (1..1000).contains(&timeout_ms),
            "WAIT timeout {timeout_ms} ms is not inside the 1000 ms budget"
        );
    }
}

#[tokio::test]
async fn frozen_replica_makes_creates_unavailable_but_not_reads() {
    // Arrange: a 3 s budget, so a read stuck behind WAIT would show.
    let primary = RedisServer::start();
    let replica = start_replica_of(&primary);
    let env = ServiceEnv::standalone(&primary)
        .env("REDIS_WRITE_REPLICAS", "1")
        .env("REDIS_TIMEOUT_MS", "3000");
    let service = App::start(env).await;
    let mut client = service.client();
    client.create_user(user("before-freeze")).await.unwrap();

    // Act
    replica.stop();
    let create = tokio::spawn({
        let mut client = client.clone();
        async move { client.create_user(user("unreplicated")).await }
    });
    eventually(SOON, "the create blocks in WAIT on the primary", || async {
        blocked_clients(&primary) >= 1
    })
    .await;
    let read = client.get_user(get_request("before-freeze")).await;
    // An ordering, not a latency bound: the read is answered while the
    // create still waits in WAIT, so it did not queue behind it.
    let create_still_waiting = !create.is_finished() && blocked_clients(&primary) >= 1;
    let created = create.await.expect("the create task");
    replica.cont();

    // Assert
    assert_eq!(code_of(&read), Code::Ok, "{read:?}");
    assert!(
        create_still_waiting,
        "GetUser was answered only after the create's WAIT ended: it queued behind it"
    );
    let status = created.expect_err("a create no replica acknowledged must not be OK");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not replicated"), "{status:?}");
    assert_eq!(
        primary.get("user:unreplicated"),
        Some(stored_value_of(&user("unreplicated"))),
        "an unreplicated create stays on the primary (documented)"
    );
    let mut attempt = 0;
    eventually(SOON, "creates succeed again after SIGCONT", || {
        attempt += 1;
        let mut client = client.clone();
        let id = format!("after-thaw-{attempt}");
        async move { client.create_user(user(&id)).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn cluster_waits_on_the_keys_own_primary() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange: one shard's replica frozen; ids on that shard and on another.
    let cluster = RedisCluster::start();
    let env = ServiceEnv::cluster(&cluster).env("REDIS_WRITE_REPLICAS", "1");
    let service = App::start(env).await;
    let mut client = service.client();
    let frozen_primary = cluster.primary_for("user:on-frozen-shard").port();
    let healthy_id = (0..)
        .map(|i| format!("on-healthy-shard-{i}"))
        .find(|id| cluster.primary_for(&format!("user:{id}")).port() != frozen_primary)
        .expect("an id on another shard");
    // Warm-up: every shard acknowledges replicated creates. A fresh
    // replica can miss the first WAITs while its link settles (seen when
    // another test loads the machine), so this waits for ten in a row.
    let mut attempt = 0;
    eventually(SOON, "ten replicated creates in a row", || {
        attempt += 1;
        let mut client = client.clone();
        async move {
            for i in 0..10 {
                let id = format!("warm-up-{attempt}-{i}");
                if client.create_user(user(&id)).await.is_err() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let replica_port = online_replica(cluster.node(frozen_primary));
    let replica = cluster.node(replica_port);

    // Act
    replica.stop();
    let on_frozen = client.create_user(user("on-frozen-shard")).await;
    let on_healthy = client.create_user(user(&healthy_id)).await;
    replica.cont();

    // Assert
    let status = on_frozen.expect_err("no replica of that shard could acknowledge");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not replicated"), "{status:?}");
    assert_eq!(
        code_of(&on_healthy),
        Code::Ok,
        "WAIT must go to the key's primary only: {on_healthy:?}"
    );
}
