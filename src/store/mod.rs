//! `UserStore`: everything about Redis. It connects (retrying with backoff,
//! telling fatal faults from passing ones), watches readiness and the
//! cluster's topology in the background, and stores users under `user:<id>`
//! as JSON with a TTL. Above it nobody names a redis-rs type or knows
//! whether Redis is one server or a cluster; it never builds a
//! `tonic::Status` (failures leave it classified, as a [`FailureKind`]).

mod conn;
mod failure;
mod lifecycle;
mod node;
mod scripts;
mod span;
mod subscriptions;
mod supervise;
mod topology;
mod value;

use std::{
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::{Duration, Instant, SystemTime},
};

use redis::{Cmd, RedisError, Value};
use tokio::{sync::watch, task::AbortHandle};
use tracing::Instrument;

use crate::{
    config::RedisConfig,
    domain::{NewUser, UserId},
};
pub use conn::ConnectError;
use conn::{RedisConn, SlotMap};
pub use failure::{FailureClass, FailureKind};
pub use lifecycle::Change;
use subscriptions::Subscriptions;
pub use subscriptions::{
    Change as UserChange, ChangeKind, NEEDED_CLASSES, WATCH_PROBE_KEY, Watch, WatchEnd, WatchError,
};
pub use value::{Corruption, MAX_VALUE_BYTES};

/// The key the readiness check writes to (`SET ... XX`, so it never
/// creates it): under `user:` so the service's ACL user may write it, with
/// a `#` that no valid id holds, so it cannot collide with a user.
pub const READINESS_PROBE_KEY: &str = "user:#readiness-probe";

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
    /// Opaque version: hex SHA-1 of the stored bytes.
    pub etag: String,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored; expires at the given time.
    Created {
        /// When Redis will delete the user.
        expires_at: SystemTime,
        /// Etag of the stored bytes.
        etag: String,
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
    /// Redis failed or refused the command; `kind` says how.
    #[error("Redis failed ({})", .kind.label())]
    Redis {
        /// The classification, computed once when the error arrived.
        kind: FailureKind,
        /// What redis-rs reported.
        #[source]
        source: RedisError,
    },
    /// The user was written on the primary, but fewer replicas than
    /// `REDIS_WRITE_REPLICAS` acknowledged it within the call's budget.
    #[error("not replicated: {acked} of {wanted} replicas acknowledged the write in time")]
    NotReplicated {
        /// Replicas asked for.
        wanted: u32,
        /// Replicas that acknowledged.
        acked: u32,
    },
    /// The value under the key is not a user.
    #[error("the value stored under {key} is not a valid user")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What is wrong with it (never the value itself).
        #[source]
        problem: Corruption,
    },
    /// A user could not be serialised (cannot happen with string fields).
    #[error("cannot encode the user as JSON")]
    Encode(#[source] serde_json::Error),
}

impl StoreError {
    /// The one classification of this failure, read by the status mapping
    /// and the metrics alike.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::NotConnected => FailureKind::NotConnected,
            Self::Redis { kind, .. } => *kind,
            Self::NotReplicated { .. } => FailureKind::NotReplicated,
            Self::Corrupt { .. } => FailureKind::Corrupt,
            Self::Encode(_) => FailureKind::Other,
        }
    }
}

impl From<RedisError> for StoreError {
    fn from(source: RedisError) -> Self {
        Self::Redis {
            kind: FailureKind::of(&source),
            source,
        }
    }
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

/// The store's connections, made once by its own start-up task.
#[derive(Clone)]
struct Links {
    /// Reads, and the topology watch's slot-map reads.
    reader: RedisConn,
    /// Creates and the readiness check (a write) go over a connection of
    /// their own. Redis blocks the whole connection a blocked write is sent
    /// on (`CLIENT PAUSE ... WRITE` during a failover or upgrade, a `WAIT`
    /// for a slow or lost replica); reads must not queue behind it.
    writer: RedisConn,
}

/// What the store's background tasks share with the operations.
struct Shared {
    /// Set once by the start-up task; a `OnceLock` because every call reads
    /// it and it never changes after (each connection reconnects by itself).
    links: OnceLock<Links>,
    /// Replicas that must acknowledge a create; 0 sends no `WAIT`.
    write_replicas: u32,
    /// Whether Redis can serve (reads and writes), as last checked.
    ready: watch::Sender<bool>,
    /// A start-up fault that retrying cannot mend, once one happened.
    fatal: watch::Sender<Option<ConnectError>>,
    /// The cluster's slot map as last read by the monitor (empty until then
    /// and in standalone mode), for grouping a batch's keys by node.
    slots: RwLock<Arc<SlotMap>>,
    /// The keyspace subscription behind WatchUsers, started by the first watch.
    subscriptions: Arc<Subscriptions>,
    /// How to reach Redis, for the subscription's own connection.
    config: RedisConfig,
}

/// Aborts the background tasks when the last handle to the store goes.
struct Tasks(AbortHandle, Arc<Subscriptions>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.abort();
        // The subscription task holds its own `Arc`, so it ends here, not by dropping.
        self.1.stop();
    }
}

/// Users in Redis; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct UserStore {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
}

impl UserStore {
    /// Starts connecting to Redis in the background and returns at once;
    /// calls fail with [`StoreError::NotConnected`] until connected. Follow
    /// [`readiness`](Self::readiness) and [`fatal`](Self::fatal) to learn
    /// how that goes. Must be called inside a tokio runtime.
    pub fn start(config: RedisConfig) -> Self {
        let shared = Arc::new(Shared {
            links: OnceLock::new(),
            write_replicas: config.write_replicas,
            ready: watch::Sender::new(false),
            fatal: watch::Sender::new(None),
            slots: RwLock::default(),
            subscriptions: Arc::new(Subscriptions::new()),
            config: config.clone(),
        });
        // The task holds `Shared`, not a `UserStore`, so that dropping the
        // last store handle ends it.
        let task = tokio::spawn(supervise::run(config, Arc::clone(&shared)));
        let subscriptions = Arc::clone(&shared.subscriptions);
        Self {
            shared,
            tasks: Arc::new(Tasks(task.abort_handle(), subscriptions)),
        }
    }

    /// Whether Redis can serve: `true` while the last check could write (a
    /// full, read-only, loading or busy Redis is not ready); changes are
    /// pushed as they are seen (about once a second at most).
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.shared.ready.subscribe()
    }

    /// Resolves when start-up meets a fault that retrying cannot mend
    /// (credentials, certificates, configuration); never resolves otherwise.
    pub async fn fatal(&self) -> ConnectError {
        let mut fatal = self.shared.fatal.subscribe();
        loop {
            if let Some(err) = fatal.borrow_and_update().clone() {
                return err;
            }
            if fatal.changed().await.is_err() {
                // The sender lives in `Shared`, which `self` holds: unreachable.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops the background tasks (connecting, readiness, topology watch,
    /// the keyspace subscription: open watches end). Calls keep working on
    /// connections already made.
    pub fn stop_background(&self) {
        self.tasks.0.abort();
        self.shared.subscriptions.stop();
    }

    /// Starts a watch of every user change, waiting up to `wait` for the
    /// keyspace subscription to be active (the first watch starts it).
    pub async fn watch(&self, wait: Duration) -> Result<Watch, WatchError> {
        let links = self.links().map_err(|_| WatchError::NotSubscribed)?;
        self.shared
            .subscriptions
            .watch(&self.shared.config, &links.writer, wait)
            .await
    }

    /// Ends every open watch ([`WatchEnd::Shutdown`]) and refuses new ones.
    pub fn stop_watches(&self) {
        self.shared.subscriptions.stop();
    }

    fn links(&self) -> Result<&Links, StoreError> {
        self.shared.links.get().ok_or(StoreError::NotConnected)
    }

    /// The slot map as last read (a lock held only to clone an `Arc`).
    fn slot_map(&self) -> Arc<SlotMap> {
        Arc::clone(
            &self
                .shared
                .slots
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
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
        let json = value::encode(user).map_err(StoreError::Encode)?;
        let etag = lifecycle::etag_of(&json);
        let mut set = redis::cmd("SET");
        set.arg(key(&user.id))
            .arg(json)
            .arg("NX")
            .arg("EX")
            .arg(user.ttl_seconds);
        let mut writer = self.links()?.writer.clone();
        let reply: Value = if self.shared.write_replicas == 0 {
            set.query_async(&mut writer)
                .instrument(span::redis("SET"))
                .await?
        } else {
            self.set_and_wait(&mut writer, set, deadline).await?
        };
        match reply {
            Value::Nil => Ok(CreateOutcome::AlreadyExists),
            _ => Ok(CreateOutcome::Created {
                expires_at: SystemTime::now() + Duration::from_secs(user.ttl_seconds.into()),
                etag,
            }),
        }
    }

    /// Sends `set` and `WAIT write_replicas <ms>` in one pipeline.
    ///
    /// One pipeline keeps both on one node: in cluster mode redis-rs routes a
    /// pipeline by its first keyed command (the `SET`), so the `WAIT` reaches
    /// the key's primary, the only node whose replicas matter; alone, `WAIT`
    /// would be fanned out to every primary.
    async fn set_and_wait(
        &self,
        writer: &mut RedisConn,
        set: Cmd,
        deadline: Instant,
    ) -> Result<Value, StoreError> {
        let wanted = self.shared.write_replicas;
        let wait_ms = wait_timeout_ms(deadline.saturating_duration_since(Instant::now()));
        let (reply, acked): (Value, u32) = redis::pipe()
            .add_command(set)
            .cmd("WAIT")
            .arg(wanted)
            .arg(wait_ms)
            .query_async(writer)
            .instrument(span::redis("SET WAIT"))
            .await?;
        // A create that found the id taken wrote nothing: its answer does not
        // depend on replicas.
        if reply != Value::Nil && acked < wanted {
            return Err(StoreError::NotReplicated { wanted, acked });
        }
        Ok(reply)
    }

    /// Reads a user and its remaining TTL in one round trip; `None` if
    /// absent or expired; [`StoreError::Corrupt`] if the value is not a user.
    ///
    /// At most [`MAX_VALUE_BYTES`] + 1 bytes of the value are read
    /// (`GETRANGE`), with its full length (`STRLEN`) and TTL (`PTTL`) in the
    /// same pipeline: a huge value written by another program costs this
    /// call a few KB, and other calls on the shared connection nothing.
    pub async fn get(&self, id: &UserId) -> Result<Option<StoredUser>, StoreError> {
        let mut conn = self.links()?.reader.clone();
        let key = key(id);
        let last = isize::try_from(MAX_VALUE_BYTES).unwrap_or(isize::MAX);
        // Pipelined, not atomic: if the key expires in between, PTTL says -2
        // and the user is treated as gone, which it is; if it is replaced,
        // the length and prefix are each checked against the bound.
        let pipelined: Result<(Vec<u8>, u64, i64), RedisError> = redis::pipe()
            .getrange(&key, 0, last)
            .strlen(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .instrument(span::redis("GETRANGE STRLEN PTTL"))
            .await;
        let (prefix, len, pttl) = match pipelined {
            // A slot being migrated: the client sends ASKING once before the
            // pipeline, so the second command is refused with MOVED and the
            // redirect never settles. One command at a time, each follows
            // ASK on its own; this path runs only during resharding.
            Err(err) if is_redirect(&err) => (
                redis::cmd("GETRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(last)
                    .query_async(&mut conn)
                    .await?,
                redis::cmd("STRLEN")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?,
                redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?,
            ),
            other => other.map_err(|err| corrupt_if_wrong_type(&key, err))?,
        };
        let expires_at = match pttl {
            // Absent or expired (GETRANGE answers "" for a missing key).
            -2 => return Ok(None),
            ms if ms >= 0 => Some(SystemTime::now() + Duration::from_millis(ms.unsigned_abs())),
            _ => None,
        };
        let user = value::decode(id, len, &prefix)
            .map_err(|problem| StoreError::Corrupt { key, problem })?;
        Ok(Some(StoredUser {
            id: user.id,
            name: user.name,
            email: user.email,
            expires_at,
            // decode() accepted it, so the prefix is the whole value.
            etag: lifecycle::etag_of(&prefix),
        }))
    }
}

#[cfg(test)]
impl StoreError {
    /// A failure as Redis answers `code` (`OOM`, `BUSY`...), for tests of
    /// the layers above, which name no redis-rs type.
    pub(crate) fn server_reply(code: &str) -> Self {
        redis::make_extension_error(code.to_owned(), Some("from a test".to_owned())).into()
    }

    /// A refused connection, for tests of the layers above.
    pub(crate) fn connection_refused() -> Self {
        RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).into()
    }
}

/// A key holding a list, hash or set under `user:<id>` is a corrupt user,
/// not a Redis failure.
fn corrupt_if_wrong_type(key: &str, err: RedisError) -> StoreError {
    match StoreError::from(err) {
        StoreError::Redis {
            kind: FailureKind::Corrupt,
            ..
        } => StoreError::Corrupt {
            key: key.to_owned(),
            problem: Corruption::NotAString,
        },
        other => other,
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
