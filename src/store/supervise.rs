//! The store's background task: connect with capped exponential backoff
//! (giving up at once on a fault retrying cannot mend), then check once a
//! second that Redis can serve, publishing readiness, and in cluster mode
//! watch the slot map for failovers and resharding. It logs what it sees;
//! it never answers calls.

use std::{sync::Arc, time::Duration};

use redis::RedisError;

use super::{
    FailureKind, Links, READINESS_PROBE_KEY, RedisConn, Shared,
    conn::{self, ConnectError, SlotMap},
    topology::{TopologyChange, TopologyWatch},
};
use crate::{config::RedisConfig, metrics};

/// How often readiness re-checks Redis.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// First wait after a failed connection attempt; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Connects, then keeps readiness and the topology watch going until aborted.
pub(super) async fn run(config: RedisConfig, shared: Arc<Shared>) {
    let links = match connect_until_ready(&config).await {
        Ok(links) => links,
        Err(fatal) => {
            shared.fatal.send_replace(Some(fatal));
            return;
        }
    };
    // Nothing else sets it: the start-up task runs once per store.
    let links = shared.links.get_or_init(|| links).clone();
    monitor(&config, &shared, links).await;
}

/// Connects with capped exponential backoff, logging each failure; returns
/// the first error that retrying cannot fix.
async fn connect_until_ready(config: &RedisConfig) -> Result<Links, ConnectError> {
    let target = conn::describe(&config.topology);
    let mut delay = FIRST_BACKOFF;
    let mut attempt: u32 = 1;
    // A retry keeps the writer an earlier attempt made.
    let mut writer: Option<RedisConn> = None;
    loop {
        let result: Result<Links, ConnectError> = async {
            let writer = match &writer {
                Some(made) => made.clone(),
                None => writer.insert(conn::connect(config).await?).clone(),
            };
            let reader = conn::connect(config).await?;
            Ok(Links { reader, writer })
        }
        .await;
        match result {
            Ok(links) => {
                tracing::info!(redis = %target, attempt, write_replicas = config.write_replicas, "connected to Redis");
                return Ok(links);
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(redis = %target, attempt, retry_in = ?delay, error = %err, "cannot reach Redis yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            Err(err) => {
                tracing::error!(redis = %target, error = %err, "cannot use Redis; giving up");
                return Err(err);
            }
        }
    }
}

/// Why the last readiness check failed, for the log line of a change.
enum NotReady {
    Refused(RedisError),
    TimedOut,
}

/// Keeps readiness in step with Redis, logging each change once; in
/// cluster mode also logs failovers and resharding seen in the slot map.
async fn monitor(config: &RedisConfig, shared: &Shared, links: Links) {
    let Links { reader, writer } = links;
    let mut serving = false;
    let mut topology = TopologyWatch::default();
    // The cluster's slot map as last read, for the readiness check when the
    // node asked for a fresh one does not answer.
    let mut known_map: Option<SlotMap> = None;
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let checked =
            match tokio::time::timeout(config.timeout, check(&writer, &mut known_map)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(NotReady::Refused(err)),
                Err(_) => Err(NotReady::TimedOut),
            };
        let ok = checked.is_ok();
        if ok != serving {
            match checked {
                Ok(()) => tracing::info!("Redis can serve: health SERVING"),
                Err(NotReady::Refused(err)) => {
                    let kind = FailureKind::of(&err);
                    tracing::warn!(kind = kind.label(), error = %err, "Redis lost (it fails or refuses writes): health NOT_SERVING");
                }
                Err(NotReady::TimedOut) => {
                    tracing::warn!(timeout = ?config.timeout, "Redis lost (check timed out): health NOT_SERVING");
                }
            }
            if !ok {
                metrics::METRICS.record_redis_lost();
            }
            shared.ready.send_replace(ok);
            serving = ok;
        }
        // After the check, so that a slow slot map read never delays readiness.
        watch_topology(shared, &reader, &mut topology, config.timeout).await;
    }
}

/// Whether Redis can serve. Standalone: a `SET ... XX` of a key that
/// never exists, which writes nothing but is refused like any write by a
/// full (`OOM` under `noeviction`), read-only (a demoted primary), loading
/// or busy server; PING would answer all of those. Cluster: see
/// [`check_cluster`].
///
/// Sent on the writer connection, so that a write the server holds back
/// (`CLIENT PAUSE WRITE`) stalls the check and not the reads.
async fn check(writer: &RedisConn, known_map: &mut Option<SlotMap>) -> Result<(), RedisError> {
    if writer.is_cluster() {
        return check_cluster(writer, known_map).await;
    }
    let mut writer = writer.clone();
    redis::cmd("SET")
        .arg(READINESS_PROBE_KEY)
        .arg("")
        .arg("XX")
        .arg("PX")
        .arg(1)
        .query_async::<()>(&mut writer)
        .await
}

/// Cluster readiness: every slot has a primary in the slot map, and some
/// primary answers. One dead primary must not take the whole service out
/// (calls for its slots fail on their own, `UNAVAILABLE`); a cluster whose
/// map leaves slots without an owner is down. `CLUSTER INFO`'s
/// `cluster_state` would say more, but the least-privilege ACL user
/// (deploy/secured/users.acl) may not send it.
async fn check_cluster(
    writer: &RedisConn,
    known_map: &mut Option<SlotMap>,
) -> Result<(), RedisError> {
    let mut reader = writer.clone();
    // A half-second bound, so that asking a dead node for the map leaves
    // time to ping the others with the map already known.
    if let Ok(Ok(Some(map))) =
        tokio::time::timeout(Duration::from_millis(500), reader.slot_map()).await
    {
        *known_map = Some(map);
    }
    let Some(map) = known_map.as_ref() else {
        return Err(cluster_down("the cluster's slot map could not be read"));
    };
    if !conn::covers_every_slot(map) {
        return Err(cluster_down("some slots have no primary"));
    }
    let mut primaries: Vec<String> = map.iter().map(|(_, _, addr)| addr.clone()).collect();
    primaries.sort();
    primaries.dedup();
    writer.ping_any(&primaries).await
}

/// The error a readiness check reports for a cluster that cannot serve.
fn cluster_down(why: &'static str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
        why,
    ))
}

/// Reads the cluster's slot map (nothing in standalone mode) and logs a
/// failover or resharding once the map has settled. A failed read is
/// skipped: the readiness check already reports an unreachable Redis.
async fn watch_topology(
    shared: &Shared,
    reader: &RedisConn,
    watch: &mut TopologyWatch,
    timeout: Duration,
) {
    let mut reader = reader.clone();
    let Ok(Ok(Some(map))) = tokio::time::timeout(timeout, reader.slot_map()).await else {
        return;
    };
    // The latest read, not the settled one: batches follow redirects anyway.
    *shared
        .slots
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(map.clone());
    match watch.observe(map) {
        Some(TopologyChange::Failover { lost, gained }) => {
            metrics::METRICS.record_topology_change(true);
            tracing::warn!(
                lost = ?lost,
                gained = ?gained,
                "cluster failover detected: the set of primaries changed"
            );
        }
        Some(TopologyChange::SlotsMoved) => {
            metrics::METRICS.record_topology_change(false);
            tracing::info!("cluster slot map changed: slots moved between primaries (resharding)");
        }
        None => {}
    }
}
