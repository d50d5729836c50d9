//! The rest of a user's life (UpdateUser, DeleteUser, RefreshUser,
//! BatchGetUsers, etags) against real Redis: a standalone server with the
//! service logged in as its least-privilege ACL user (the fixture's
//! default), and a six-node cluster.

use std::{collections::BTreeMap, time::Duration};

use tonic::{Code, Request};
use user_service::pb::user::v1::{
    BatchGetUsersRequest, DeleteUserRequest, RefreshUserRequest, UpdateUserRequest, User,
    user_service_client::UserServiceClient,
};

use crate::support::{
    RedisCluster, RedisServer, Service, ServiceEnv, Tweak, bad_fields, code_of, eventually, fields,
    get_request, seconds_until,
    slots::{CLUSTER_LOCK, key_slot},
    stored_json, user,
};

type Client = UserServiceClient<tonic::transport::Channel>;

fn update(id: &str, name: &str, email: &str, paths: &[&str], etag: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        user: Some(User {
            id: id.into(),
            name: name.into(),
            email: email.into(),
        }),
        update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
        etag: etag.into(),
    }
}

fn delete(id: &str, etag: &str) -> DeleteUserRequest {
    DeleteUserRequest {
        id: id.into(),
        etag: etag.into(),
    }
}

fn refresh(id: &str, ttl_seconds: Option<u32>) -> RefreshUserRequest {
    RefreshUserRequest {
        id: id.into(),
        ttl_seconds,
    }
}

fn batch(ids: &[&str]) -> BatchGetUsersRequest {
    BatchGetUsersRequest {
        ids: ids.iter().map(|id| (*id).to_owned()).collect(),
    }
}

/// PTTL of `key` on `redis`, in milliseconds.
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis.query(&["PTTL", key])
}

/// Create, get, update (with and without etag, keeping the TTL), stale
/// update, refresh, delete with a stale and the current etag, then NOT_FOUND.
async fn whole_life<'a>(client: &mut Client, node_of: impl Fn(&str) -> &'a RedisServer, id: &str) {
    let key = format!("user:{id}");
    let created = client
        .create_user(user(id).ttl(600))
        .await
        .unwrap()
        .into_inner();
    let got = client.get_user(get_request(id)).await.unwrap().into_inner();
    assert_eq!(got.etag, created.etag, "create and get agree on the etag");
    assert_eq!(created.etag.len(), 40, "{}", created.etag);

    // Let the TTL run down a little, so "kept" differs from "reset".
    let redis = node_of(&key);
    eventually(Duration::from_secs(5), "the TTL runs down", || async {
        pttl(redis, &key) < 599_000
    })
    .await;
    let before = pttl(redis, &key);
    let updated = client
        .update_user(update(id, "Ada Renamed", "", &["name"], &created.etag))
        .await
        .unwrap()
        .into_inner();
    let after = pttl(redis, &key);
    assert!(
        after <= before && after > 590_000,
        "the remaining TTL is kept: {before} ms before, {after} ms after"
    );
    assert_eq!(
        updated.user.as_ref().map(|u| u.name.as_str()),
        Some("Ada Renamed")
    );
    assert!(seconds_until(updated.expire_time) <= before as f64 / 1000.0 + 1.0);
    assert_ne!(updated.etag, created.etag, "a new value has a new etag");
    let stored: serde_json::Value = serde_json::from_str(&redis.get(&key).unwrap()).unwrap();
    assert_eq!(
        stored,
        stored_json(id, "Ada Renamed", "someone@example.com")
    );

    // A stale etag changes nothing.
    let stale = client
        .update_user(update(id, "Lost", "lost@example.com", &[], &created.etag))
        .await;
    assert_eq!(code_of(&stale), Code::Aborted, "{stale:?}");
    let got = client.get_user(get_request(id)).await.unwrap().into_inner();
    assert_eq!(got.etag, updated.etag);
    assert_eq!(got.user.map(|u| u.name).as_deref(), Some("Ada Renamed"));

    // Without an etag, an update applies to whatever is stored.
    let emailed = client
        .update_user(update(id, "", "new@example.com", &["email"], ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        emailed.user.map(|u| (u.name, u.email)),
        Some(("Ada Renamed".into(), "new@example.com".into()))
    );

    // Refresh moves the expiry, and Redis agrees.
    let refreshed = client
        .refresh_user(refresh(id, Some(3000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.ttl_seconds, 3000);
    assert_eq!(refreshed.etag, emailed.etag, "a refresh changes no bytes");
    let remaining = seconds_until(refreshed.expire_time);
    let pttl_now = pttl(redis, &key) as f64 / 1000.0;
    assert!(remaining > 2990.0 && remaining <= 3000.0, "{remaining}");
    assert!(
        (remaining - pttl_now).abs() < 5.0,
        "{remaining} vs PTTL {pttl_now}"
    );

    // Delete: a stale etag changes nothing; the current one deletes.
    let stale = client.delete_user(delete(id, &created.etag)).await;
    assert_eq!(code_of(&stale), Code::Aborted, "{stale:?}");
    assert!(redis.get(&key).is_some(), "a stale delete deletes nothing");
    client
        .delete_user(delete(id, &emailed.etag))
        .await
        .expect("delete with the current etag");
    assert_eq!(redis.get(&key), None);
    let gone = client.get_user(get_request(id)).await;
    assert_eq!(code_of(&gone), Code::NotFound, "{gone:?}");
    for (what, code) in [
        ("delete", code_of(&client.delete_user(delete(id, "")).await)),
        (
            "update",
            code_of(&client.update_user(update(id, "N", "", &["name"], "")).await),
        ),
        (
            "refresh",
            code_of(&client.refresh_user(refresh(id, None)).await),
        ),
    ] {
        assert_eq!(code, Code::NotFound, "{what} of a deleted user");
    }
}

#[tokio::test]
async fn standalone_a_users_whole_life() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act + Assert
    whole_life(&mut client, |_| &redis, "ada").await;
    assert_eq!(redis.acl_denials(), Vec::<String>::new());
}

#[tokio::test]
async fn a_users_old_demo_value_has_an_etag_and_can_be_updated() {
    // Arrange: the value as the old demo (Python json.dumps) wrote it.
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    let demo = r#"{"id": "user123", "name": "user123", "email": "user@user.com"}"#;
    let _: String = redis.query(&["SET", "user:user123", demo, "EX", "60"]);

    // Act
    let got = client
        .get_user(get_request("user123"))
        .await
        .unwrap()
        .into_inner();
    let updated = client
        .update_user(update("user123", "Demo User", "", &["name"], &got.etag))
        .await
        .unwrap()
        .into_inner();

    // Assert: the etag is the hex SHA-1 of the stored bytes.
    let sha1: String = redis.query(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", demo]);
    assert_eq!(got.etag, sha1);
    let stored: serde_json::Value =
        serde_json::from_str(&redis.get("user:user123").unwrap()).unwrap();
    assert_eq!(stored, stored_json("user123", "Demo User", "user@user.com"));
    assert_eq!(
        updated.user.map(|u| u.email).as_deref(),
        Some("user@user.com")
    );
}

#[tokio::test]
async fn fifty_concurrent_updates_with_one_etag_have_one_winner_and_retries_lose_nothing() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let clients: Vec<Client> = (0..5).map(|_| service.client()).collect();
    let etag = clients[0]
        .clone()
        .create_user(user("contested").name("start"))
        .await
        .unwrap()
        .into_inner()
        .etag;

    // Act 1: fifty updates, all holding the same etag.
    let racers: Vec<_> = (0..50)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let request = update("contested", &format!("Racer {i}"), "", &["name"], &etag);
            tokio::spawn(async move { (i, client.update_user(request).await) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for racer in racers {
        outcomes.push(racer.await.expect("racer task"));
    }

    // Assert 1
    let winners: Vec<usize> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    let codes: BTreeMap<String, usize> =
        outcomes
            .iter()
            .fold(BTreeMap::new(), |mut codes, (_, result)| {
                *codes.entry(format!("{:?}", code_of(result))).or_default() += 1;
                codes
            });
    assert_eq!(winners.len(), 1, "exactly one OK: {codes:?}");
    assert_eq!(codes.get("Aborted"), Some(&49), "{codes:?}");
    let stored: serde_json::Value =
        serde_json::from_str(&redis.get("user:contested").unwrap()).unwrap();
    assert_eq!(stored["name"], format!("Racer {}", winners[0]));

    // Act 2: fifty read-modify-write loops, each appending its token to the
    // name and retrying on ABORTED: with etags no append can be lost.
    let appenders: Vec<_> = (0..50)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                loop {
                    let got = client
                        .get_user(get_request("contested"))
                        .await
                        .expect("get")
                        .into_inner();
                    let name = format!("{} {i}", got.user.expect("user").name);
                    let request = update("contested", &name, "", &["name"], &got.etag);
                    match client.update_user(request).await {
                        Ok(_) => return,
                        Err(status) if status.code() == Code::Aborted => continue,
                        Err(status) => panic!("update {i}: {status:?}"),
                    }
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.await.expect("appender task");
    }

    // Assert 2
    let name = client_name(&mut clients[0].clone(), "contested").await;
    let mut tokens: Vec<usize> = name
        .split(' ')
        .skip(2)
        .map(|t| t.parse().expect("a token"))
        .collect();
    tokens.sort_unstable();
    assert_eq!(
        tokens,
        (0..50).collect::<Vec<_>>(),
        "every append kept: {name}"
    );
}

async fn client_name(client: &mut Client, id: &str) -> String {
    let got = client.get_user(get_request(id)).await.unwrap().into_inner();
    got.user.expect("user").name
}

#[tokio::test]
async fn refresh_of_an_expired_user_is_not_found() {
    // Arrange: a user whose key Redis has expired.
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("brief")).await.unwrap();
    let _: i64 = redis.query(&["PEXPIRE", "user:brief", "1"]);
    eventually(Duration::from_secs(5), "user:brief expires", || async {
        pttl(&redis, "user:brief") == -2
    })
    .await;

    // Act
    let refreshed = client.refresh_user(refresh("brief", Some(60))).await;

    // Assert
    assert_eq!(code_of(&refreshed), Code::NotFound, "{refreshed:?}");
    assert_eq!(
        redis.keys("*"),
        Vec::<String>::new(),
        "nothing was recreated"
    );
}

#[tokio::test]
async fn standalone_batch_answers_in_request_order_with_missing_and_duplicate_ids() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    for id in ["b1", "b2", "b3"] {
        client.create_user(user(id)).await.unwrap();
    }
    let etag_b2 = client
        .get_user(get_request("b2"))
        .await
        .unwrap()
        .into_inner()
        .etag;

    // Act
    let got = client
        .batch_get_users(batch(&["b3", "nope", "b1", "b3", "b2", "gone"]))
        .await
        .unwrap()
        .into_inner();

    // Assert
    let ids: Vec<String> = got
        .users
        .iter()
        .map(|u| u.user.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, ["b3", "b1", "b2"]);
    assert_eq!(got.missing_ids, ["nope", "gone"]);
    assert_eq!(got.users[2].etag, etag_b2);
    assert!(seconds_until(got.users[0].expire_time) > 50.0);

    // A value too large to be a user fails the batch as GetUser fails:
    // DATA_LOSS naming the key (its exact length read on its own).
    let huge = "x".repeat(20_000);
    let _: String = redis.query(&["SET", "user:huge", &huge]);
    let status = client
        .batch_get_users(batch(&["b1", "huge"]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(status.message().contains("user:huge"), "{status:?}");
    assert!(!status.message().contains("xxxx"), "{status:?}");
}

#[tokio::test]
async fn each_rpc_names_its_bad_fields() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("valid")).await.unwrap();
    let _: String = redis.query(&["CONFIG", "RESETSTAT"]);

    // Act + Assert
    let status = client
        .update_user(update("valid", "N", "", &["name", "id"], ""))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["update_mask"]));
    let status = client
        .update_user(update("bad id", "", "not-an-email", &[], ""))
        .await
        .unwrap_err();
    assert_eq!(
        bad_fields(&status),
        fields(&["user.id", "user.name", "user.email"])
    );
    let status = client
        .update_user(UpdateUserRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["user"]));
    let status = client.delete_user(delete("a:b", "")).await.unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["id"]));
    let status = client
        .refresh_user(refresh("valid", Some(0)))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["ttl_seconds"]));
    let status = client
        .batch_get_users(batch(&["a", "b", "c", "d e", "f"]))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["ids[3]"]));
    let status = client.batch_get_users(batch(&[])).await.unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["ids"]));
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let status = client.batch_get_users(batch(&many)).await.unwrap_err();
    assert_eq!(bad_fields(&status), fields(&["ids"]));

    // Nothing reached Redis (the readiness check's SET goes on).
    let stats: String = redis.query(&["INFO", "commandstats"]);
    let user_commands: Vec<&str> = stats
        .lines()
        .filter(|line| {
            ["eval", "del", "getrange", "strlen", "pttl", "get", "getex"]
                .iter()
                .any(|command| line.starts_with(&format!("cmdstat_{command}:")))
        })
        .collect();
    assert_eq!(user_commands, Vec::<&str>::new());
}

/// `request` with a 500 ms deadline.
fn within<T>(request: T) -> Request<T> {
    let mut request = Request::new(request);
    request.set_timeout(Duration::from_millis(500));
    request
}

#[tokio::test]
async fn every_rpc_during_a_redis_freeze_is_unavailable_or_deadline_exceeded() {
    // Arrange
    let redis = RedisServer::start();
    let service = Service::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();
    client.create_user(user("frozen")).await.unwrap();

    // Act
    redis.stop();
    let mut codes = BTreeMap::new();
    let calls = async {
        codes.insert(
            "UpdateUser",
            code_of(
                &client
                    .update_user(within(update("frozen", "N", "", &["name"], "")))
                    .await,
            ),
        );
        codes.insert(
            "DeleteUser",
            code_of(&client.delete_user(within(delete("frozen", ""))).await),
        );
        codes.insert(
            "RefreshUser",
            code_of(&client.refresh_user(within(refresh("frozen", None))).await),
        );
        codes.insert(
            "BatchGetUsers",
            code_of(
                &client
                    .batch_get_users(within(batch(&["frozen", "x"])))
                    .await,
            ),
        );
    };
    // A bound far above the deadline, only so a hang fails instead of blocking.
    let answered = tokio::time::timeout(Duration::from_secs(20), calls).await;
    redis.cont();

    // Assert
    assert!(answered.is_ok(), "a call hung during the freeze: {codes:?}");
    for (rpc, code) in &codes {
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "{rpc} answered {code:?}"
        );
    }
    assert_eq!(codes.len(), 4);
    // (The delete sent during the freeze may still run once Redis thaws,
    // as any write that timed out may: its outcome is unknown, not undone.)
    client
        .batch_get_users(batch(&["frozen"]))
        .await
        .expect("served again after the freeze");
}

#[tokio::test]
async fn cluster_life_and_batches_span_every_primary_one_pipeline_each() {
    // Arrange
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let cluster = RedisCluster::start();
    let service = Service::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    let ids: Vec<String> = (0..30).map(|i| format!("batch-{i}")).collect();
    for id in &ids {
        client.create_user(user(id)).await.unwrap();
    }
    cluster.assert_users_on_every_primary();
    let ports: BTreeMap<String, u16> = ids
        .iter()
        .map(|id| {
            let key = format!("user:{id}");
            (key.clone(), cluster.primary_for(&key).port())
        })
        .collect();
    // The single-key RPCs, each on its key's primary.
    whole_life(&mut client, |key| cluster.primary_for(key), "cluster-ada").await;
    // The monitor reads the slot map about once a second; wait until a
    // batch is grouped by it (no redirect replies on any node).
    for node in cluster.nodes() {
        let _: String = node.query(&["CONFIG", "RESETSTAT"]);
    }

    // Act: all 30 ids, some twice, and two missing ones.
    let mut asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    asked.extend(["batch-0", "missing-1", "batch-7", "missing-2"]);
    let got = client
        .batch_get_users(batch(&asked))
        .await
        .unwrap()
        .into_inner();

    // Assert: the answer.
    let found: Vec<&str> = got
        .users
        .iter()
        .map(|u| u.user.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(found, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(got.missing_ids, ["missing-1", "missing-2"]);
    // Assert: each primary read exactly its own keys (GETRANGE and PTTL per
    // key, no redirect, nothing sent twice); replicas read nothing.
    for node in cluster.nodes() {
        let mine = ports.values().filter(|port| **port == node.port()).count()
            + ["user:missing-1", "user:missing-2"]
                .iter()
                .filter(|key| cluster.primary_for(key).port() == node.port())
                .count();
        let stats: String = node.query(&["INFO", "commandstats"]);
        let calls = |command: &str| -> usize {
            stats
                .lines()
                .find(|line| line.starts_with(&format!("cmdstat_{command}:calls=")))
                .and_then(|line| line.split(['=', ',']).nth(1))
                .map_or(0, |n| n.parse().expect("a count"))
        };
        assert_eq!(
            (calls("getrange"), calls("pttl")),
            (mine, mine),
            "node {}",
            node.addr()
        );
        let errors: String = node.query(&["INFO", "errorstats"]);
        assert!(!errors.contains("errorstat_"), "{}: {errors}", node.addr());
        assert_eq!(node.acl_denials(), Vec::<String>::new(), "{}", node.addr());
    }
}

/// An id whose key shares the slot of `taken`'s key.
fn id_in_slot_of(taken: &str, prefix: &str) -> String {
    let slot = key_slot(&format!("user:{taken}"));
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| key_slot(&format!("user:{id}")) == slot)
        .expect("some id shares the slot")
}

#[tokio::test]
async fn cluster_rpcs_follow_ask_and_moved_while_a_slot_migrates() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange: the slot of user:moving is half-way through a migration (the
    // key on the target, the source answering ASK), as `redis-cli --cluster
    // reshard` leaves it between MIGRATE and SETSLOT NODE.
    let cluster = RedisCluster::start();
    let service = Service::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    let others: Vec<String> = (0..10).map(|i| format!("still-{i}")).collect();
    for id in others.iter().map(String::as_str).chain(["moving"]) {
        client.create_user(user(id)).await.unwrap();
    }
    let sibling = id_in_slot_of("moving", "sibling-");
    client.create_user(user(&sibling)).await.unwrap();
    let key = "user:moving";
    let slot = key_slot(key).to_string();
    let source = cluster.primary_for(key);
    let target = cluster
        .primaries()
        .into_iter()
        .find(|primary| primary.port() != source.port())
        .expect("another primary");
    let source_id: String = source.query(&["CLUSTER", "MYID"]);
    let target_id: String = target.query(&["CLUSTER", "MYID"]);
    let _: String = target.query(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]);
    let _: String = source.query(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]);
    let target_port = target.port().to_string();
    let _: String = source.query(&[
        "MIGRATE",
        "127.0.0.1",
        &target_port,
        key,
        "0",
        "5000",
        "AUTH",
        target.default_password(),
    ]);
    let mut asked: Vec<&str> = vec!["moving", &sibling];
    asked.extend(others.iter().map(String::as_str));

    // Act + Assert 1: mid-migration (ASK for user:moving only).
    let got = client
        .batch_get_users(batch(&asked))
        .await
        .expect("a batch follows ASK")
        .into_inner();
    let found: Vec<&str> = got
        .users
        .iter()
        .map(|u| u.user.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(found, asked);
    let updated = client
        .update_user(update("moving", "Moved", "", &["name"], ""))
        .await
        .expect("an update follows ASK")
        .into_inner();
    client
        .refresh_user(refresh("moving", Some(120)))
        .await
        .expect("a refresh follows ASK");

    // Act + Assert 2: the slot handed over; the service's slot map is stale
    // until its monitor reads it again, so the source answers MOVED.
    let _: String = source.query(&[
        "MIGRATE",
        "127.0.0.1",
        &target_port,
        &format!("user:{sibling}"),
        "0",
        "5000",
        "AUTH",
        target.default_password(),
    ]);
    let _: String = target.query(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    let _: String = source.query(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    let got = client
        .batch_get_users(batch(&asked))
        .await
        .expect("a batch follows MOVED")
        .into_inner();
    assert_eq!(got.users.len(), asked.len(), "{:?}", got.missing_ids);
    assert_eq!(got.users[0].etag, updated.etag);
    client
        .delete_user(delete("moving", &updated.etag))
        .await
        .expect("a delete follows MOVED");
    assert_eq!(target.get(key), None);
}
