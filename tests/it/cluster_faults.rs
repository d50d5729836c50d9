//! Cluster faults under `loadgen` load, one test at a time
//! ([`CLUSTER_LOCK`]): a primary killed (SIGKILL) and brought back, and
//! live resharding followed by a manual `CLUSTER FAILOVER`. Each reconciles
//! the acknowledged creates against what the primaries hold afterwards and
//! prints a `FAULT-REPORT` line (see `faults.rs`).

use std::{collections::BTreeSet, net::SocketAddr, process::Command, time::Duration};

use tonic::Code;

use crate::support::{
    App, RedisCluster, RedisServer, Service, ServiceEnv, code_of, eventually, free_port,
    get_request,
    load::{CallRecord, Load, LoadSpec, between, now_us},
    metrics::{sample, scrape},
    replication::online_replica,
    run_with_timeout,
    slots::{CLUSTER_LOCK, in_ranges, key_slot, slots_served_by},
    stored_value_of, user,
};

/// `--cluster-node-timeout` of the fixture's nodes.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
const SOON: Duration = Duration::from_secs(30);

fn ms(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

fn fault_report(scenario: &str, fields: &[(&str, String)]) {
    let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FAULT-REPORT {scenario} {}", fields.join(" "));
}

/// Ids stored under `user:<prefix>-*` on the cluster's current primaries.
fn stored_ids(cluster: &RedisCluster, prefix: &str) -> BTreeSet<String> {
    cluster
        .primaries()
        .into_iter()
        .flat_map(|primary| primary.keys(&format!("user:{prefix}-*")))
        .map(|key| key.trim_start_matches("user:").to_owned())
        .collect()
}

fn info(node: &RedisServer, section: &str) -> String {
    node.query(&["INFO", section])
}

/// A replication offset field of `INFO replication` (0 when absent).
fn repl_offset(replication: &str, field: &str) -> u64 {
    replication
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn cluster_primary_sigkill_under_load() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange
    let mut cluster = RedisCluster::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let env = ServiceEnv::cluster(&cluster).env("METRICS_ADDR", &metrics_addr.to_string());
    let service = Service::start(env).await;
    let victim = cluster.primaries()[0].port();
    let heir = online_replica(cluster.node(victim));
    let victim_slots = slots_served_by(cluster.node(heir), victim);
    assert!(!victim_slots.is_empty());
    let spec = LoadSpec::mix(Duration::from_secs(20), 200);
    let load = Load::start(service.addr(), "ckill", &spec);
    eventually(SOON, "load reaches the victim's shard", || async {
        cluster.node(victim).dbsize() >= 100
    })
    .await;
    let heir_info = info(cluster.node(heir), "replication");
    assert!(heir_info.contains("master_link_status:up"), "{heir_info}");
    // The heir holds what the victim had written so far (the preloaded
    // users above all): only writes in flight at the kill may be lost.
    let written = repl_offset(
        &info(cluster.node(victim), "replication"),
        "master_repl_offset",
    );
    eventually(SOON, "the heir has caught up with the victim", || async {
        repl_offset(
            &info(cluster.node(heir), "replication"),
            "slave_repl_offset",
        ) >= written
    })
    .await;

    // Act
    let identity = cluster.kill_keeping_identity(victim);
    let killed = now_us();
    eventually(SOON, "the replica is promoted", || async {
        info(cluster.node(heir), "replication").contains("role:master")
    })
    .await;
    let promoted = now_us();
    cluster.restart(victim, &identity);
    eventually(
        SOON,
        "the old primary rejoins as a replica of its heir",
        || async {
            let replication = info(cluster.node(victim), "replication");
            replication.contains("role:slave")
                && replication.contains(&format!("master_port:{heir}"))
                && replication.contains("master_link_status:up")
        },
    )
    .await;
    let rejoined = now_us();
    cluster.wait_until_healthy();
    eventually(SOON, "the service reports the failover", || async {
        sample(
            &scrape(metrics_addr).await,
            "user_service_cluster_failovers_total",
        ) >= 1.0
    })
    .await;
    let report = load.finish();

    // Assert
    assert!(report.status.success(), "{}", report.output);
    let affected =
        |call: &CallRecord| in_ranges(key_slot(&format!("user:{}", call.id)), &victim_slots);
    let failed: Vec<&CallRecord> = report.calls.iter().filter(|call| !call.ok()).collect();
    let failed_elsewhere: Vec<&&CallRecord> =
        failed.iter().filter(|call| !affected(call)).collect();
    // Other shards fail only while the cluster is down (from the victim's
    // FAIL flag until its replica takes over), plus one call's deadline.
    let late_elsewhere: Vec<_> = failed_elsewhere
        .iter()
        .filter(|call| call.end_us > promoted + 1_000_000)
        .collect();
    assert!(
        late_elsewhere.is_empty(),
        "calls on healthy shards failed after the takeover: {late_elsewhere:?}"
    );
    let first_ok_affected = report
        .first_end_after(killed, |call| {
            call.ok() && affected(call) && call.started_after(killed)
        })
        .map(|at| between(killed, at))
        .expect("an OK call on the victim's slots after the kill");
    let bound = NODE_TIMEOUT * 2 + Duration::from_secs(1);
    assert!(
        first_ok_affected <= bound,
        "first OK on the victim's slots {first_ok_affected:?} after the kill (bound {bound:?})"
    );
    let last_failure = failed
        .iter()
        .map(|call| call.end_us)
        .max()
        .unwrap_or(killed);
    let stored = stored_ids(&cluster, "ckill");
    let acknowledged = report.acknowledged_creates();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    // Replication is asynchronous: only a write acknowledged just before the
    // kill may not have reached the replica.
    let lost_early: Vec<_> = report
        .calls
        .iter()
        .filter(|call| call.create && call.ok() && lost.contains(&&call.id))
        .filter(|call| call.end_us + 1_000_000 < killed || call.end_us > killed)
        .collect();
    assert!(
        lost_early.is_empty(),
        "acknowledged creates lost that had time to replicate: {lost_early:?}"
    );
    assert!(
        service.stdout().contains("cluster failover detected"),
        "{}",
        service.stdout()
    );

    fault_report(
        "cluster-primary-sigkill",
        &[
            ("promoted_after_kill", ms(between(killed, promoted))),
            ("first_ok_on_victim_slots", ms(first_ok_affected)),
            (
                "errors_victim_shard",
                (failed.len() - failed_elsewhere.len()).to_string(),
            ),
            ("errors_other_shards", failed_elsewhere.len().to_string()),
            ("last_error_after_kill", ms(between(killed, last_failure))),
            (
                "rejoined_as_replica_after_kill",
                ms(between(killed, rejoined)),
            ),
            ("calls", report.calls.len().to_string()),
            ("codes", format!("{:?}", report.codes()).replace(' ', "")),
            ("acknowledged", acknowledged.len().to_string()),
            ("lost", lost.len().to_string()),
        ],
    );
}

#[tokio::test]
async fn cluster_resharding_and_manual_failover_under_load_fail_no_call() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange
    let cluster = RedisCluster::start();
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port()).collect();
    let (from, to, failing_over) = (primaries[0], primaries[1], primaries[2]);
    let id_of = |port: u16| -> String { cluster.node(port).query(&["CLUSTER", "MYID"]) };
    let slots_of = |port: u16| -> u32 {
        slots_served_by(cluster.node(port), port)
            .iter()
            .map(|(first, last)| u32::from(last - first) + 1)
            .sum()
    };
    let to_before = slots_of(to);
    // Nothing may fail: AlreadyExists cannot happen with unique ids, so
    // allowing it allows nothing.
    // 15 s: the reshard and the failover take about 3 s on an idle machine
    // (FAULT-REPORT), and the load must outlast both.
    let spec = LoadSpec::mix(Duration::from_secs(15), 300).allow("AlreadyExists");
    let load = Load::start(service.addr(), "reshard", &spec);
    eventually(SOON, "load reaches every primary", || async {
        primaries
            .iter()
            .all(|port| cluster.node(*port).dbsize() >= 150)
    })
    .await;

    // Act: move 1000 slots (and their keys) while the load runs.
    let resharding = now_us();
    let mut reshard = cluster.node(from).redis_cli();
    reshard
        .args(["--cluster", "reshard", &cluster.node(from).addr()])
        .args(["--cluster-from", &id_of(from)])
        .args(["--cluster-to", &id_of(to)])
        .args(["--cluster-slots", "1000", "--cluster-yes"]);
    let output = run_with_timeout(&mut reshard, Duration::from_secs(180));
    assert!(
        output.status.success(),
        "reshard failed:\n{}",
        output.combined()
    );
    let resharded = now_us();
    cluster.wait_until_healthy();
    // Then a manual failover of the third shard, coordinated by its replica.
    let replica = online_replica(cluster.node(failing_over));
    let failover_started = now_us();
    let _: String = cluster.node(replica).query(&["CLUSTER", "FAILOVER"]);
    eventually(SOON, "the replica takes over", || async {
        info(cluster.node(replica), "replication").contains("role:master")
    })
    .await;
    let failed_over = now_us();
    cluster.wait_until_healthy();
    let report = load.finish();

    // Assert
    assert!(report.status.success(), "{}", report.output);
    let failed: Vec<&CallRecord> = report.calls.iter().filter(|call| !call.ok()).collect();
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    assert!(
        report.calls.iter().any(|call| call.start_us > failed_over),
        "the load ran past the failover"
    );
    let to_after = slots_of(to);
    assert!(
        to_after >= to_before + 1000,
        "slots of the target: {to_before} -> {to_after}"
    );
    let stored = stored_ids(&cluster, "reshard");
    let acknowledged = report.acknowledged_creates();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");

    fault_report(
        "cluster-reshard-and-manual-failover",
        &[
            (
                "reshard_1000_slots_took",
                ms(between(resharding, resharded)),
            ),
            (
                "manual_failover_took",
                ms(between(failover_started, failed_over)),
            ),
            ("calls", report.calls.len().to_string()),
            ("failed", failed.len().to_string()),
            ("acknowledged", acknowledged.len().to_string()),
            ("lost", lost.len().to_string()),
        ],
    );
}

/// An id other than `taken` whose key hashes to the same slot as `user:<taken>`.
fn id_in_slot_of(taken: &str, prefix: &str) -> String {
    let slot = key_slot(&format!("user:{taken}"));
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|id| key_slot(&format!("user:{id}")) == slot)
        .expect("some id shares the slot")
}

#[tokio::test]
async fn reads_and_creates_follow_ask_while_a_slot_migrates() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    // Arrange: the slot of user:moved is half-way through a migration, as
    // `redis-cli --cluster reshard` leaves it between MIGRATE and SETSLOT
    // NODE: the key is on the target, the source answers ASK.
    let cluster = RedisCluster::start();
    let service = App::start(ServiceEnv::cluster(&cluster)).await;
    let mut client = service.client();
    client.create_user(user("moved")).await.unwrap();
    let key = "user:moved";
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
    let absent = id_in_slot_of("moved", "absent-");
    let fresh = id_in_slot_of("moved", "fresh-");

    // Act
    let moved = client.get_user(get_request("moved")).await;
    let missing = client.get_user(get_request(&absent)).await;
    let created = client.create_user(user(&fresh)).await;

    // Assert
    let moved = moved.expect("GetUser of a migrated key follows ASK");
    assert_eq!(
        moved.into_inner().user.map(|u| u.id).as_deref(),
        Some("moved")
    );
    assert_eq!(code_of(&missing), Code::NotFound, "{missing:?}");
    assert_eq!(code_of(&created), Code::Ok, "{created:?}");
    // The target serves an importing slot only after ASKING.
    let mut connection = target
        .client()
        .get_connection()
        .expect("connect to the target");
    let (_, on_target): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(format!("user:{fresh}"))
        .query(&mut connection)
        .expect("ASKING GET on the target");
    assert_eq!(
        on_target,
        Some(stored_value_of(&user(&fresh))),
        "a create in a migrating slot lands on the target"
    );
}

/// What [`lagging_replica_then_primary_loss`] measured.
struct LossOutcome {
    acknowledged: usize,
    /// Acknowledged creates missing afterwards.
    lost: Vec<String>,
    /// Of those, the ones on the lost primary's slots, acknowledged while its replica was cut off.
    lost_while_cut: usize,
    /// Creates on the lost primary's slots started while its replica was cut off and not answered OK.
    refused_while_cut: usize,
    promoted_after_kill: Duration,
}

/// A partition between a primary and its replica: the primary keeps
/// acknowledging writes the replica never gets (an iptables rule drops the
/// primary's packets on the replication connection, loopback only), then
/// the primary dies and the stale replica takes over. Writes acknowledged
/// in between exist nowhere any more, unless the service waited for the
/// replica (`REDIS_WRITE_REPLICAS`).
///
/// SIGSTOP on the replica would not do: the kernel buffers the replication
/// stream for a stopped process, which reads it all once continued.
async fn lagging_replica_then_primary_loss(write_replicas: u32) -> LossOutcome {
    // Arrange
    let mut cluster = RedisCluster::start();
    let env =
        ServiceEnv::cluster(&cluster).env("REDIS_WRITE_REPLICAS", &write_replicas.to_string());
    let service = App::start(env).await;
    let primary = cluster.primaries()[0].port();
    let replica = online_replica(cluster.node(primary));
    let primary_slots = slots_served_by(cluster.node(replica), primary);
    let prefix = format!("lag{write_replicas}");
    let load = Load::start(
        service.addr(),
        &prefix,
        &LoadSpec::creates(Duration::from_secs(15)),
    );
    eventually(SOON, "load reaches the primary", || async {
        cluster.node(primary).dbsize() >= 100
    })
    .await;
    assert!(info(cluster.node(replica), "replication").contains("master_link_status:up"));

    // Act
    let link = replication_link_port(cluster.node(primary), replica);
    // Taken before iptables runs: a busy machine can take a while to run it,
    // and writes acknowledged meanwhile may already miss the link.
    let cut = now_us();
    let cut_off = DropRule::insert(primary, link);
    // The partition itself lasts 2 s while the primary keeps acknowledging
    // creates. Its length is part of the scenario, not a wait for a
    // condition: by then TCP's retransmission backoff on the dropped link
    // exceeds the time from the kill to the promotion, so the stale writes
    // never reach the replica (with only a few ms of partition they do,
    // and nothing is lost).
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.kill(primary);
    let killed = now_us();
    drop(cut_off);
    eventually(SOON, "the stale replica takes over", || async {
        info(cluster.node(replica), "replication").contains("role:master")
    })
    .await;
    let promoted = now_us();
    cluster.wait_until_healthy();
    let report = load.finish();

    // Assert (the caller asserts on the outcome)
    assert!(report.status.success(), "{}", report.output);
    let stored = stored_ids(&cluster, &prefix);
    let acknowledged = report.acknowledged_creates();
    let lost: Vec<String> = acknowledged.difference(&stored).cloned().collect();
    let on_primary = |call: &&CallRecord| {
        call.create && in_ranges(key_slot(&format!("user:{}", call.id)), &primary_slots)
    };
    // A write acknowledged a moment before `cut` may still have been in the
    // replication stream's buffers when the rule landed (250 ms margin).
    let lost_while_cut = report
        .calls
        .iter()
        .filter(on_primary)
        .filter(|call| call.end_us + 250_000 >= cut && call.end_us <= killed)
        .filter(|call| call.ok() && lost.contains(&call.id))
        .count();
    let refused_while_cut = report
        .calls
        .iter()
        .filter(on_primary)
        .filter(|call| call.start_us >= cut && call.start_us <= killed && !call.ok())
        .count();
    let outcome = LossOutcome {
        acknowledged: acknowledged.len(),
        lost,
        lost_while_cut,
        refused_while_cut,
        promoted_after_kill: between(killed, promoted),
    };
    fault_report(
        &format!("cluster-partitioned-replica-takeover-write-replicas-{write_replicas}"),
        &[
            ("acknowledged", outcome.acknowledged.to_string()),
            ("lost", outcome.lost.len().to_string()),
            (
                "lost_acknowledged_while_cut_off",
                lost_while_cut.to_string(),
            ),
            ("refused_while_cut_off", refused_while_cut.to_string()),
            ("promoted_after_kill", ms(outcome.promoted_after_kill)),
            ("codes", format!("{:?}", report.codes()).replace(' ', "")),
        ],
    );
    outcome
}

#[tokio::test]
async fn without_write_replicas_a_stale_replica_takeover_loses_acknowledged_writes() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let outcome = lagging_replica_then_primary_loss(0).await;
    // The scenario is real: writes the client was told are stored are gone,
    // and only those acknowledged while the replica lagged.
    assert!(
        outcome.lost_while_cut > 0,
        "expected lost acknowledged writes with REDIS_WRITE_REPLICAS=0"
    );
    assert_eq!(
        outcome.lost.len(),
        outcome.lost_while_cut,
        "only writes acknowledged while the replica was cut off may be lost: {:?}",
        outcome.lost
    );
}

#[tokio::test]
async fn with_write_replicas_a_stale_replica_takeover_loses_nothing_acknowledged() {
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let outcome = lagging_replica_then_primary_loss(1).await;
    assert!(
        outcome.lost.is_empty(),
        "acknowledged creates lost with REDIS_WRITE_REPLICAS=1: {:?}",
        outcome.lost
    );
    assert!(
        outcome.refused_while_cut > 0,
        "creates on the cut-off primary must have been refused"
    );
}

/// The client port the replica on `replica` uses for its replication link
/// to `primary` (`CLIENT LIST TYPE replica` on the primary).
fn replication_link_port(primary: &RedisServer, replica: u16) -> u16 {
    let clients: String = primary.query(&["CLIENT", "LIST", "TYPE", "replica"]);
    let ports: Vec<u16> = clients
        .lines()
        .filter_map(|line| {
            let addr = line
                .split(' ')
                .find_map(|field| field.strip_prefix("addr="))?;
            addr.rsplit_once(':')?.1.parse().ok()
        })
        .collect();
    assert_eq!(
        ports.len(),
        1,
        "one replication link from {replica} expected on {}:\n{clients}",
        primary.addr()
    );
    ports[0]
}

/// An iptables rule dropping loopback TCP packets from `sport` to `dport`
/// (one connection), removed when dropped, also when the test panics.
/// Needs root (CAP_NET_ADMIN) and iptables.
struct DropRule {
    spec: Vec<String>,
}

impl DropRule {
    fn insert(sport: u16, dport: u16) -> Self {
        let spec: Vec<String> = [
            "OUTPUT",
            "-o",
            "lo",
            "-s",
            "127.0.0.1",
            "-d",
            "127.0.0.1",
            "-p",
            "tcp",
            "--sport",
        ]
        .iter()
        .map(ToString::to_string)
        .chain([sport.to_string(), "--dport".into(), dport.to_string()])
        .chain(
            [
                "-m",
                "comment",
                "--comment",
                "user-service-it",
                "-j",
                "DROP",
            ]
            .iter()
            .map(ToString::to_string),
        )
        .collect();
        let mut insert = Command::new("iptables");
        insert.arg("-I").args(&spec);
        let output = run_with_timeout(&mut insert, Duration::from_secs(10));
        assert!(
            output.status.success(),
            "this test cuts a replication link with iptables, which needs root \
             (CAP_NET_ADMIN) and `apt-get install iptables`:\n{}",
            output.combined()
        );
        Self { spec }
    }
}

impl Drop for DropRule {
    fn drop(&mut self) {
        let mut delete = Command::new("iptables");
        delete.arg("-D").args(&self.spec);
        let output = run_with_timeout(&mut delete, Duration::from_secs(10));
        if !output.status.success() {
            eprintln!(
                "could not remove the iptables rule {:?}: {}; remove it by hand",
                self.spec,
                output.combined()
            );
        }
    }
}
