//! `UserStore`: users in Redis under `user:<id>` as JSON with a TTL. It
//! speaks Redis commands and returns typed `StoreError`s; it never builds a
//! `tonic::Status`, and it does not know whether Redis is one server or a cluster.

pub mod conn;

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use redis::{RedisError, Value};
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

/// Redis key of a user.
fn key(id: &UserId) -> String {
    format!("user:{}", id.as_str())
}

/// Users in Redis, over a connection that start-up fills in once.
#[derive(Clone, Default)]
pub struct UserStore {
    conn: Arc<OnceLock<RedisConn>>,
}

impl UserStore {
    /// A store with no connection yet: every call fails with `NotConnected`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands the store its connection; later calls are ignored (it is set once).
    pub fn attach(&self, conn: RedisConn) {
        // A second attach cannot happen (start-up connects once); ignoring keeps the first.
        let _ = self.conn.set(conn);
    }

    /// True once start-up has reached Redis.
    pub fn is_attached(&self) -> bool {
        self.conn.get().is_some()
    }

    fn conn(&self) -> Result<RedisConn, StoreError> {
        self.conn.get().cloned().ok_or(StoreError::NotConnected)
    }

    /// Stores `user` unless its id is taken, in one atomic `SET NX EX`.
    ///
    /// NX makes "check and write" one step in Redis, so two concurrent
    /// creates of one id cannot both win and a taken id keeps its value and TTL.
    pub async fn create(&self, user: &NewUser) -> Result<CreateOutcome, StoreError> {
        let mut conn = self.conn()?;
        let json = serde_json::to_vec(&UserJsonRef {
            id: user.id.as_str(),
            name: &user.name,
            email: &user.email,
        })
        .map_err(|source| StoreError::Corrupt {
            key: key(&user.id),
            source,
        })?;
        let reply: Value = redis::cmd("SET")
            .arg(key(&user.id))
            .arg(json)
            .arg("NX")
            .arg("EX")
            .arg(user.ttl_seconds)
            .query_async(&mut conn)
            .await?;
        match reply {
            Value::Nil => Ok(CreateOutcome::AlreadyExists),
            _ => Ok(CreateOutcome::Created {
                expires_at: SystemTime::now() + Duration::from_secs(user.ttl_seconds.into()),
            }),
        }
    }

    /// Reads a user and its remaining TTL in one round trip; `None` if absent or expired.
    pub async fn get(&self, id: &UserId) -> Result<Option<StoredUser>, StoreError> {
        let mut conn = self.conn()?;
        let key = key(id);
        // GET and PTTL are pipelined, not atomic: if the key expires between
        // them PTTL says -2 and the user is treated as gone, which it is.
        let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
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
}
