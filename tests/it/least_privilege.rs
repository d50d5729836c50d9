//! Least privilege, proven against the deployed rules: the service's ACL
//! user (the `user user-service` line of deploy/secured/users.acl) loads on
//! the server, may GETRANGE and SET `user:*` keys, and is refused (NOPERM)
//! FLUSHALL, CONFIG, KEYS, DEBUG and keys outside `user:*`, on a standalone
//! server and on every node of a cluster. Every other functional test runs
//! the service as this user and ends with an empty `ACL LOG`.

use std::collections::BTreeSet;

use user_service::pb::user::v1::WatchUsersRequest;
use user_service::pb::user::v1::{
    BatchGetUsersRequest, DeleteUserRequest, RefreshUserRequest, UpdateUserRequest, User,
    user_service_client::UserServiceClient,
};

use crate::support::{
    App, RedisCluster, RedisServer, ServiceEnv,
    acl::{SERVICE_PASSWORD, SERVICE_USER, deployed_rule, users_acl_path},
    get_request,
    slots::CLUSTER_LOCK,
    user,
};

/// Commands the service user must be refused, and the ACL LOG entry each
/// leaves ("reason object").
const REFUSED: &[(&[&str], &str)] = &[
    (&["FLUSHALL"], "command flushall"),
    (&["CONFIG", "GET", "maxmemory"], "command config|get"),
    (
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
        "command config|set",
    ),
    (&["KEYS", "*"], "command keys"),
    (&["DEBUG", "SLEEP", "0"], "command debug"),
    (&["GETRANGE", "session:1", "0", "10"], "key session:1"),
    (&["SET", "session:1", "x"], "key session:1"),
    (&["DEL", "session:1"], "key session:1"),
    (&["GETEX", "session:1", "EX", "9"], "key session:1"),
    // A script's declared key is checked like any command's.
    (&["EVAL", "return 1", "1", "session:1"], "key session:1"),
    (
        &["EVALSHA", "0000000000000000000000000000000000000000", "0"],
        "command evalsha",
    ),
    (&["SCRIPT", "FLUSH"], "command script|flush"),
];

/// A connection to `node` logged in as the service user.
fn service_connection(node: &RedisServer) -> redis::Connection {
    node.client_as(SERVICE_USER, SERVICE_PASSWORD)
        .get_connection()
        .unwrap_or_else(|err| panic!("log in to {} as {SERVICE_USER}: {err}", node.addr()))
}

fn command(args: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
}

/// Checks that the service user is refused every command of [`REFUSED`]
/// on `node`, with NOPERM and an ACL LOG entry each, then clears the log.
fn assert_refused_everything_else(node: &RedisServer) {
    let mut connection = service_connection(node);
    for (args, _) in REFUSED {
        match command(args).query::<redis::Value>(&mut connection) {
            Err(err) => assert_eq!(
                err.code(),
                Some("NOPERM"),
                "{args:?} as {SERVICE_USER} on {}: {err}",
                node.addr()
            ),
            Ok(value) => panic!(
                "{args:?} as {SERVICE_USER} on {} was allowed: {value:?}",
                node.addr()
            ),
        }
    }
    let logged: BTreeSet<String> = node.take_acl_denials().into_iter().collect();
    let expected: BTreeSet<String> = REFUSED
        .iter()
        .map(|(_, entry)| format!("{SERVICE_USER}: {entry}"))
        .collect();
    assert_eq!(logged, expected, "ACL LOG of {}", node.addr());
}

/// What [`assert_user_keys_work`] stores.
const VALUE: &str = r#"{"id":"lp","name":"LP","email":"lp@example.com"}"#;

/// Checks that the service user may SET (NX EX) and GETRANGE `key` on `node`.
fn assert_user_keys_work(node: &RedisServer, key: &str) {
    let mut connection = service_connection(node);
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(VALUE)
        .arg("NX")
        .arg("EX")
        .arg(60)
        .query(&mut connection)
        .unwrap_or_else(|err| panic!("SET {key} as {SERVICE_USER} on {}: {err}", node.addr()));
    assert_eq!(set.as_deref(), Some("OK"));
    let got: String = redis::cmd("GETRANGE")
        .arg(key)
        .arg(0)
        .arg(8191)
        .query(&mut connection)
        .unwrap_or_else(|err| panic!("GETRANGE {key} as {SERVICE_USER} on {}: {err}", node.addr()));
    assert_eq!(got, VALUE, "GETRANGE {key} on {}", node.addr());
}

/// Every RPC's Redis commands on `id`: create, get, update (without and
/// with an etag), refresh, batch get, delete (with an etag, then without).
async fn every_rpc(client: &mut UserServiceClient<tonic::transport::Channel>, id: &str) {
    client.create_user(user(id)).await.expect("create");
    let etag = client
        .get_user(get_request(id))
        .await
        .expect("get")
        .into_inner()
        .etag;
    let update = |etag: &str| UpdateUserRequest {
        user: Some(User {
            id: id.into(),
            name: "Least".into(),
            email: "least@example.com".into(),
        }),
        update_mask: None,
        etag: etag.into(),
    };
    client.update_user(update(&etag)).await.expect("update");
    let etag = client
        .update_user(update(""))
        .await
        .expect("update")
        .into_inner()
        .etag;
    let refresh = RefreshUserRequest {
        id: id.into(),
        ttl_seconds: Some(120),
    };
    client.refresh_user(refresh).await.expect("refresh");
    let batch = BatchGetUsersRequest {
        ids: vec![id.into(), format!("{id}-missing")],
    };
    client.batch_get_users(batch).await.expect("batch");
    let delete = |etag: &str| DeleteUserRequest {
        id: id.into(),
        etag: etag.into(),
    };
    client
        .delete_user(delete(&etag))
        .await
        .expect("delete with etag");
    client.create_user(user(id)).await.expect("create again");
    client.delete_user(delete("")).await.expect("delete");
}

/// Error replies a server sent since its last `CONFIG RESETSTAT`
/// (`INFO errorstats`); empty when it refused nothing.
fn error_replies(node: &RedisServer) -> Vec<String> {
    let info: String = node.query(&["INFO", "errorstats"]);
    info.lines()
        .filter(|line| line.starts_with("errorstat_"))
        .map(|line| format!("{}: {line}", node.addr()))
        .collect()
}

#[test]
fn the_deployed_users_acl_loads() {
    // Arrange: the fixture's ACL file holds the deployed service user; add
    // the file's other users (all but `default`, which the fixture keeps)
    // with a password each, as deploy/secured/redis-start.sh does.
    let text = std::fs::read_to_string(users_acl_path()).expect("read users.acl");
    let others: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("user ") && !line.starts_with("user default "))
        .filter(|line| !line.starts_with(&format!("user {SERVICE_USER} ")))
        .map(|line| format!("{line} >fixture-other-pw"))
        .collect();
    let mut builder = RedisServer::builder();
    for line in &others {
        builder = builder.acl_user(line);
    }
    let redis = builder.start();

    // Act
    let reloaded: String = redis.query(&["ACL", "LOAD"]);
    let list: Vec<String> = redis.query(&["ACL", "LIST"]);

    // Assert
    assert_eq!(reloaded, "OK");
    assert_eq!(list.len(), 2 + others.len(), "{list:#?}");
    let loaded = list
        .iter()
        .find(|line| line.starts_with(&format!("user {SERVICE_USER} ")))
        .unwrap_or_else(|| panic!("no {SERVICE_USER} in {list:#?}"));
    // ACL LIST writes the rules back normalised: compare the grants only.
    let grants = deployed_rule()
        .split_whitespace()
        .filter(|word| word.starts_with(['+', '-', '~', '&', '%']))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(grants.contains(&"+getrange".to_owned()), "{grants:?}");
    for word in &grants {
        assert!(
            loaded.split_whitespace().any(|got| got == word.as_str()),
            "{word} of the deployed rule is missing from the loaded user: {loaded}"
        );
    }
}

#[tokio::test]
async fn standalone_service_user_may_use_user_keys_and_nothing_else() {
    // Arrange
    let redis = RedisServer::start();
    let _: String = redis.query(&["CONFIG", "RESETSTAT"]);
    let service = App::start(ServiceEnv::standalone(&redis)).await;
    let mut client = service.client();

    // Act: what the service does, then what it must not.
    every_rpc(&mut client, "least").await;
    client.create_user(user("least")).await.expect("create");
    client.get_user(get_request("least")).await.expect("get");
    // A watch: PSUBSCRIBE on the one granted channel pattern, the event
    // probe (SET/PTTL of user:#watch-probe), PING on the subscription.
    let mut watch = client
        .watch_users(WatchUsersRequest {
            id_prefix: "least".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("SUBSCRIBED")
        .expect("a message");

    // Assert: the service ran into no refusal and no error reply (a 7.0
    // server answers a command it does not know, CLIENT SETINFO say, with
    // an error and no ACL LOG entry).
    assert_eq!(redis.acl_denials(), Vec::<String>::new());
    assert_eq!(error_replies(&redis), Vec::<String>::new());
    assert_user_keys_work(&redis, "user:lp-standalone");
    assert_refused_everything_else(&redis);
}

#[tokio::test]
async fn cluster_service_user_may_use_user_keys_and_nothing_else() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange
    let cluster = RedisCluster::start();
    for node in cluster.nodes() {
        let _: String = node.query(&["CONFIG", "RESETSTAT"]);
    }
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();

    // Act
    for i in 0..10 {
        every_rpc(&mut client, &format!("least-{i}")).await;
    }
    // A watch: PSUBSCRIBE on every primary, the probe on each (by hash tag).
    let mut watch = client
        .watch_users(WatchUsersRequest {
            id_prefix: "least".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("SUBSCRIBED")
        .expect("a message");
    drop(watch);
    drop(service);

    // Assert: on every node, primary or replica.
    for node in cluster.nodes() {
        assert_eq!(node.acl_denials(), Vec::<String>::new(), "{}", node.addr());
        assert_eq!(error_replies(node), Vec::<String>::new());
    }
    let key = "user:lp-cluster";
    assert_user_keys_work(cluster.primary_for(key), key);
    for node in cluster.nodes() {
        assert_refused_everything_else(node);
    }
}
