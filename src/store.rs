//! `UserStore`: users in Redis under `user:<id>` as JSON with a TTL. It
//! speaks Redis commands and returns typed `StoreError`s; it never builds a
//! `tonic::Status`, and it does not know whether Redis is one server or a cluster.

pub mod conn;
pub mod node;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use redis::{Cmd, RedisError, Value};
use serde::{Deserialize, Serialize};

use crate::domain::{NewUser, UserId};
pub use conn::RedisConn;

/// A user as read back from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// When Redis deletes it; `None` for a key written without a TTL.
    pub expires_at: Option<SystemTime>,
}

/// What a create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored; expires at the given time.
    Created {
        /// When Redis will delete the user.
        expires_at: SystemTime,
    },
    /// The id was taken; nothing was changed.
    AlreadyExists,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Start-up has not reached Redis yet.
    #[error("not connected to Redis yet")]
    NotConnected,
    /// Redis cannot be reached, timed out, or the cluster is mid-failover.
    #[error("Redis unavailable")]
    Unavailable(#[source] RedisError),
    /// The user was written on the primary, but fewer replicas than
    /// `REDIS_WRITE_REPLICAS` acknowledged it within the call's budget.
    #[error("not replicated: {acked} of {wanted} replicas acknowledged the write in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that acknowledged.
        acked: u32,
    },
    /// The ACL user lacks a permission the service needs: a deployment error.
    #[error("Redis refused the command for the service's ACL user (NOPERM)")]
    NoPermission(#[source] RedisError),
    /// Credentials were rejected after start-up (rotated password?).
    #[error("Redis rejected the service's credentials")]
    Authentication(#[source] RedisError),
    /// The value under the key is not a user.
    #[error("value under {key} is not a user")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Anything else Redis answered.
    #[error("unexpected Redis error")]
    Other(#[source] RedisError),
}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        if conn::is_auth_error(&err) {
            return Self::Authentication(err);
        }
        match err.kind() {
            ErrorKind::Server(ServerErrorKind::NoPerm) => Self::NoPermission(err),
            ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
                | ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly,
            ) => Self::Unavailable(err),
            _ if err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal() => {
                Self::Unavailable(err)
            }
            _ => Self::Other(err),
        }
    }
}

/// The JSON layout the old demo wrote and reads; field order kept for `redis-cli GET`.
#[derive(Serialize)]
struct UserJsonRef<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
}

/// The same layout, owned, for reading.
#[derive(Deserialize)]
struct UserJson {
    id: String,
    name: String,
    email: String,
}

/// The `WAIT` timeout for a call with `left` of its budget: a margin short
/// of it, so the reply (and "not replicated") arrives before the budget ends.
/// Redis notices a `WAIT` timeout only on its next cron tick (every 100 ms
/// at the default `hz 10`), hence a margin of up to 250 ms. Never 0, which
/// would make `WAIT` block the connection forever.
fn wait_timeout_ms(left: Duration) -> u64 {
    let margin = (left / 4).min(Duration::from_millis(250));
    let ms = u64::try_from(left.saturating_sub(margin).as_millis()).unwrap_or(u64::MAX);
    ms.max(1)
}

/// True for an unresolved cluster redirect (ASK or MOVED).
fn is_redirect(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::Moved)
    )
}

/// Redis key of a user.
fn key(id: &UserId) -> String {
    format!("user:{}", id.as_str())
}

/// Users in Redis, over a connection that start-up fills in once.
#[derive(Clone, Default)]
pub struct UserStore {
    conn: Arc<OnceLock<RedisConn>>,
    /// Creates go over a connection of their own. Redis blocks the whole
    /// connection a blocked write is sent on (`CLIENT PAUSE ... WRITE`
    /// during a failover or upgrade, a `WAIT` for a slow or lost replica);
    /// reads and health pings must not queue behind it.
    writer: Arc<OnceLock<RedisConn>>,
    /// Replicas that must acknowledge a create; 0 sends no `WAIT`.
    write_replicas: u32,
}

impl UserStore {
    /// A store with no connection yet: every call fails with `NotConnected`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose creates wait until `replicas` replicas hold the write
    /// (`REDIS_WRITE_REPLICAS`); 0 is the same as [`new`](Self::new).
    pub fn with_write_replicas(replicas: u32) -> Self {
        Self {
            write_replicas: replicas,
            ..Self::default()
        }
    }

    /// Hands the store its connection; later calls are ignored (it is set once).
    pub fn attach(&self, conn: RedisConn) {
        // A second attach cannot happen (start-up connects once); ignoring keeps the first.
        let _ = self.conn.set(conn);
    }

    /// Hands the store the connection for creates; set once, like [`attach`](Self::attach).
    pub fn attach_writer(&self, conn: RedisConn) {
        let _ = self.writer.set(conn);
    }

    /// True once the writer connection is attached.
    pub fn is_writer_attached(&self) -> bool {
        self.writer.get().is_some()
    }

    /// True once start-up has reached Redis.
    pub fn is_attached(&self) -> bool {
        self.conn.get().is_some()
    }

    fn conn(&self) -> Result<RedisConn, StoreError> {
        self.conn.get().cloned().ok_or(StoreError::NotConnected)
    }

    fn writer(&self) -> Result<RedisConn, StoreError> {
        self.writer.get().cloned().ok_or(StoreError::NotConnected)
    }

    /// Stores `user` unless its id is taken, in one atomic `SET NX EX`.
    ///
    /// NX makes "check and write" one step in Redis, so two concurrent
    /// creates of one id cannot both win and a taken id keeps its value and TTL.
    ///
    /// With `write_replicas` > 0 the `SET` is followed by `WAIT`, which ends
    /// by `deadline` (the caller's budget); a created user that too few
    /// replicas acknowledged is [`StoreError::NotReplicated`], and stays on the primary.
    pub async fn create(
        &self,
        user: &NewUser,
        deadline: Instant,
    ) -> Result<CreateOutcome, StoreError> {
        let json = serde_json::to_vec(&UserJsonRef {
            id: user.id.as_str(),
            name: &user.name,
            email: &user.email,
        })
        .map_err(|source| StoreError::Corrupt {
            key: key(&user.id),
            source,
        })?;
        let mut set = redis::cmd("SET");
        set.arg(key(&user.id))
            .arg(json)
            .arg("NX")
            .arg("EX")
            .arg(user.ttl_seconds);
        let reply: Value = if self.write_replicas == 0 {
            set.query_async(&mut self.writer()?).await?
        } else {
            self.set_and_wait(set, deadline).await?
        };
        match reply {
            Value::Nil => Ok(CreateOutcome::AlreadyExists),
            _ => Ok(CreateOutcome::Created {
                expires_at: SystemTime::now() + Duration::from_secs(user.ttl_seconds.into()),
            }),
        }
    }

    /// Sends `set` and `WAIT write_replicas <ms>` in one pipeline.
    ///
    /// One pipeline keeps both on one node: in cluster mode redis-rs routes a
    /// pipeline by its first keyed command (the `SET`), so the `WAIT` reaches
    /// the key's primary, the only node whose replicas matter; alone, `WAIT`
    /// would be fanned out to every primary.
    async fn set_and_wait(&self, set: Cmd, deadline: Instant) -> Result<Value, StoreError> {
        let mut writer = self.writer()?;
        let wait_ms = wait_timeout_ms(deadline.saturating_duration_since(Instant::now()));
        let (reply, acked): (Value, u32) = redis::pipe()
            .add_command(set)
            .cmd("WAIT")
            .arg(self.write_replicas)
            .arg(wait_ms)
            .query_async(&mut writer)
            .await?;
        // A create that found the id taken wrote nothing: its answer does not
        // depend on replicas.
        if reply != Value::Nil && acked < self.write_replicas {
            return Err(StoreError::NotReplicated {
                wanted: self.write_replicas,
                acked,
            });
        }
        Ok(reply)
    }

    /// Reads a user and its remaining TTL in one round trip; `None` if absent or expired.
    pub async fn get(&self, id: &UserId) -> Result<Option<StoredUser>, StoreError> {
        let mut conn = self.conn()?;
        let key = key(id);
        // GET and PTTL are pipelined, not atomic: if the key expires between
        // them PTTL says -2 and the user is treated as gone, which it is.
        let pipelined: Result<(Option<Vec<u8>>, i64), RedisError> = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await;
        let (value, pttl) = match pipelined {
            // A slot being migrated: the client sends ASKING once before the
            // pipeline, so PTTL (the second command) is refused with MOVED
            // and the redirect never settles. One command at a time, each
            // follows ASK on its own; this path runs only during resharding.
            Err(err) if is_redirect(&err) => (
                redis::cmd("GET").arg(&key).query_async(&mut conn).await?,
                redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?,
            ),
            other => other?,
        };
        let Some(value) = value else {
            return Ok(None);
        };
        let expires_at = match pttl {
            -2 => return Ok(None),
            ms if ms >= 0 => Some(SystemTime::now() + Duration::from_millis(ms.unsigned_abs())),
            _ => None,
        };
        let user: UserJson =
            serde_json::from_slice(&value).map_err(|source| StoreError::Corrupt { key, source })?;
        Ok(Some(StoredUser {
            id: user.id,
            name: user.name,
            email: user.email,
            expires_at,
        }))
    }

    /// Checks that Redis answers (health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The cluster's slot map (health monitor: failover and resharding
    /// detection); `None` for a standalone server.
    pub async fn slot_map(&self) -> Result<Option<conn::SlotMap>, StoreError> {
        Ok(self.conn()?.slot_map().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_timeout_stays_inside_the_budget_and_is_never_zero() {
        assert_eq!(wait_timeout_ms(Duration::from_millis(1000)), 750);
        assert_eq!(wait_timeout_ms(Duration::from_millis(3000)), 2750);
        assert_eq!(wait_timeout_ms(Duration::from_millis(100)), 75);
        assert_eq!(wait_timeout_ms(Duration::from_micros(500)), 1);
        assert_eq!(wait_timeout_ms(Duration::ZERO), 1, "WAIT 0 blocks forever");
    }

    proptest::proptest! {
        /// Whatever the caller sends, a user's key is `user:<id>` with
        /// nothing that changes its meaning: one `:`, no hash tag (which
        /// would pin the cluster slot), no glob or whitespace characters.
        #[test]
        fn every_accepted_id_maps_to_one_plain_key(raw in "\\PC{0,40}|[A-Za-z0-9_.@+{}*: \r\n-]{0,40}") {
            if let Ok(id) = UserId::parse(&raw) {
                let key = key(&id);
                proptest::prop_assert_eq!(&key, &format!("user:{raw}"));
                proptest::prop_assert_eq!(key.matches(':').count(), 1);
                proptest::prop_assert!(
                    !key.contains(['{', '}', '*', '?', '[', ']', ' ', '\r', '\n', '\0']),
                    "{key:?}"
                );
            }
        }
    }
}
