//! Replication helpers: a replica (`REPLICAOF`) of a [`RedisServer`],
//! waiting for its link to be up, and reading a primary's replicas from
//! `INFO replication`. Used by the durable-write and failover tests.

use std::time::Duration;

use super::{RedisServer, eventually_ok_blocking};

/// How long a fresh replica may take to finish its first sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a plain server and makes it a replica of `primary`; returns once
/// the replica reports `master_link_status:up` and the primary lists it online.
pub fn start_replica_of(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::start();
    let _: String = replica.query(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()]);
    wait_for_link(primary, &replica);
    replica
}

/// Waits until `replica` reports a live link to `primary` and `primary`
/// lists it as an online replica.
pub fn wait_for_link(primary: &RedisServer, replica: &RedisServer) {
    let what = format!(
        "replica {} has a live link to {}",
        replica.addr(),
        primary.addr()
    );
    eventually_ok_blocking(SYNC_TIMEOUT, &what, || {
        let on_replica: String = replica.query(&["INFO", "replication"]);
        let linked = on_replica.contains("master_link_status:up")
            && replica_ports(primary).contains(&replica.port());
        if linked { Ok(()) } else { Err(on_replica) }
    });
    // Listed online is not yet acknowledging: wait until a write is
    // acknowledged by WAIT, as the service's REDIS_WRITE_REPLICAS creates need.
    eventually_ok_blocking(SYNC_TIMEOUT, "the replica acknowledges writes", || {
        let mut connection = primary.connection().map_err(|err| err.to_string())?;
        let (acked,): (u64,) = redis::pipe()
            .cmd("SET")
            .arg("fixture:replication-ack")
            .arg("1")
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(200)
            .query(&mut connection)
            .map_err(|err| err.to_string())?;
        if acked >= 1 {
            Ok(())
        } else {
            Err(format!("WAIT acknowledged by {acked}"))
        }
    });
    let _: u64 = primary.query(&["DEL", "fixture:replication-ack"]);
}

/// Ports of the replicas `primary` lists as online (`slaveN:...,state=online`).
pub fn replica_ports(primary: &RedisServer) -> Vec<u16> {
    let info: String = primary.query(&["INFO", "replication"]);
    info.lines()
        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
        .filter_map(|line| {
            line.split(',')
                .find_map(|field| field.strip_prefix("port="))
                .and_then(|port| port.trim().parse().ok())
        })
        .collect()
}

/// The port of a replica that `primary` lists as online, waiting for one:
/// a replica's link can be up before its primary lists it as online.
pub fn online_replica(primary: &RedisServer) -> u16 {
    super::eventually_ok_blocking(
        std::time::Duration::from_secs(30),
        "the primary lists an online replica",
        || {
            replica_ports(primary)
                .first()
                .copied()
                .ok_or("no online replica yet")
        },
    )
}

/// `blocked_clients` of `INFO clients`: clients waiting in `WAIT` (or a
/// blocking command) right now.
pub fn blocked_clients(server: &RedisServer) -> u64 {
    info_field(server, "clients", "blocked_clients")
}

/// `connected_clients` of `INFO clients`.
pub fn connected_clients(server: &RedisServer) -> u64 {
    info_field(server, "clients", "connected_clients")
}

/// One numeric field of an `INFO <section>` answer; panics if it is missing.
pub fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    let info: String = server.query(&["INFO", section]);
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "INFO {section} of {} has no {field}:\n{info}",
                server.addr()
            )
        })
}
