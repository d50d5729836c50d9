//! Keyspace-notification subscriptions behind WatchUsers: one `PSUBSCRIBE
//! __keyspace@0__:user:*` connection, shared by every watch through one
//! broadcast channel, started by the first watch. It probes that Redis
//! actually emits the needed event classes, and it reports every moment it
//! may have missed an event (connection lost, probe failed) as a gap, so
//! no watch goes on past one. It knows nothing of gRPC or of id prefixes.
//!
//! Cluster mode: notifications are node-local, so there is one connection
//! per primary; a lost node connection or any change of the slot map
//! (failover, resharding) ends the subscription as a gap and starts anew.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use std::pin::Pin;

use redis::Msg;
use tokio::{
    sync::{broadcast, watch},
    task::AbortHandle,
};
use tokio_stream::{Stream, StreamExt, StreamMap};

use super::conn::{self, RedisConn, SlotMap};
use crate::config::{RedisConfig, Topology};

/// The pattern every subscription listens on: keyspace events of user keys in db 0.
pub const KEYSPACE_PATTERN: &str = "__keyspace@0__:user:*";
/// Prefix of the channel of one key's keyspace events.
const CHANNEL_PREFIX: &str = "__keyspace@0__:user:";
/// The key the event probe writes: under `user:` so the service's ACL user
/// may write it, with a `#` that no valid id holds, so no watch reports it.
pub const WATCH_PROBE_KEY: &str = "user:#watch-probe";
/// The `notify-keyspace-events` value the service needs (any superset works).
pub const NEEDED_CLASSES: &str = "Kg$xe";

/// Events kept for each watch that has not taken them yet; a watch further
/// behind ends with [`WatchEnd::Lagged`]. Shared by all watches (one ring),
/// so memory does not grow with the number of watches.
const BUFFERED_EVENTS: usize = 4096;
/// How long the probe's events may take to come back.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an active subscription re-probes (a `CONFIG SET` by an
/// operator can switch notifications off at any time) and pings.
const REPROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How often cluster mode re-reads the slot map for moved slots and new primaries.
const TOPOLOGY_INTERVAL: Duration = Duration::from_secs(1);
/// First wait before re-subscribing after a loss; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between subscription attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What happened to a user's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Written (SET and other string writes, the target of a RENAME).
    Put,
    /// Deleted (DEL, GETDEL, the source of a RENAME, eviction).
    Deleted,
    /// Expired.
    Expired,
    /// Its expiry was set, changed or removed (EXPIRE, PERSIST, SET ... EX).
    ExpiryChanged,
}

impl ChangeKind {
    /// The kind of a keyspace event name; `None` for events that are not a
    /// change of a user (other data types' commands).
    pub fn of_event(event: &[u8]) -> Option<Self> {
        Some(match event {
            b"set" | b"setrange" | b"append" | b"incrby" | b"incrbyfloat" | b"rename_to"
            | b"restore" | b"copy_to" => Self::Put,
            b"del" | b"rename_from" | b"evicted" => Self::Deleted,
            b"expired" => Self::Expired,
            b"expire" | b"persist" => Self::ExpiryChanged,
            _ => return None,
        })
    }
}

/// One change of one `user:<id>` key, as Redis announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The id part of the key (never a probe key; not otherwise validated).
    pub id: String,
    /// When the service received the event.
    pub at: SystemTime,
}

/// What the subscription task tells the watches.
#[derive(Debug, Clone)]
enum Notice {
    Change(Arc<Change>),
    /// Subscription `epoch` ended: events after it may be lost.
    Gap {
        epoch: u64,
    },
    /// The service is shutting down.
    Shutdown,
}

/// Where the subscription stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not subscribed yet, or re-subscribing after a loss.
    Connecting,
    /// Subscribed and probed; `epoch` counts successful subscriptions.
    Active { epoch: u64 },
    /// Redis does not emit the events; `missing` names the classes.
    NotConfigured { missing: String },
    /// Shut down: no new watches.
    Stopped,
}

/// Why a watch could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Redis does not emit the keyspace events a watch needs.
    #[error(
        "Redis does not publish the keyspace events WatchUsers needs (classes {missing} not seen): set notify-keyspace-events {NEEDED_CLASSES} (or a superset such as KEA)"
    )]
    NotConfigured {
        /// The classes whose probe events did not arrive.
        missing: String,
    },
    /// The subscription is not active (Redis unreachable) within the wait.
    #[error("cannot subscribe to Redis keyspace events yet")]
    NotSubscribed,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Stopped,
}

/// Why a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchEnd {
    /// The subscription was lost or could not be confirmed: events may be missing.
    #[error("the Redis subscription was interrupted; events may have been missed")]
    Gap,
    /// The watch fell more than the buffer behind.
    #[error("the watcher fell too far behind the events")]
    Lagged,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    Shutdown,
}

/// One watch: every change announced after it became active, until it ends.
pub struct Watch {
    events: broadcast::Receiver<Notice>,
    epoch: u64,
}

impl Watch {
    /// The next change, or why the watch ended (then it stays ended).
    pub async fn next(&mut self) -> Result<Arc<Change>, WatchEnd> {
        loop {
            match self.events.recv().await {
                Ok(Notice::Change(change)) => return Ok(change),
                // A gap of an older subscription, already over when this
                // watch started, is no gap for it.
                Ok(Notice::Gap { epoch }) if epoch < self.epoch => {}
                Ok(Notice::Gap { .. }) => return Err(WatchEnd::Gap),
                Ok(Notice::Shutdown) => return Err(WatchEnd::Shutdown),
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(WatchEnd::Lagged),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchEnd::Gap),
            }
        }
    }
}

/// Aborts the subscription task when the store goes.
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The subscription shared by all watches; lives in the store's `Shared`.
pub(super) struct Subscriptions {
    events: broadcast::Sender<Notice>,
    state: watch::Sender<State>,
    task: Mutex<Option<TaskGuard>>,
}

impl Subscriptions {
    pub(super) fn new() -> Self {
        Self {
            events: broadcast::Sender::new(BUFFERED_EVENTS),
            state: watch::Sender::new(State::Connecting),
            task: Mutex::new(None),
        }
    }

    /// Starts a watch, starting the subscription first if none runs, and
    /// waits up to `wait` for it to be active.
    pub(super) async fn watch(
        self: &Arc<Self>,
        config: &RedisConfig,
        writer: &RedisConn,
        wait: Duration,
    ) -> Result<Watch, WatchError> {
        self.ensure_started(config, writer);
        // Receiver first, state second: a gap announced after the state
        // was read is then in the receiver (the task changes the state
        // before announcing the gap).
        let events = self.events.subscribe();
        let mut state = self.state.subscribe();
        let settled =
            tokio::time::timeout(wait, state.wait_for(|s| !matches!(s, State::Connecting))).await;
        let current = match settled {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) | Err(_) => return Err(WatchError::NotSubscribed),
        };
        match current {
            State::Active { epoch } => Ok(Watch { events, epoch }),
            State::NotConfigured { missing } => Err(WatchError::NotConfigured { missing }),
            State::Stopped => Err(WatchError::Stopped),
            State::Connecting => Err(WatchError::NotSubscribed),
        }
    }

    fn ensure_started(self: &Arc<Self>, config: &RedisConfig, writer: &RedisConn) {
        let mut task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if task.is_some() || *self.state.borrow() == State::Stopped {
            return;
        }
        let handle = tokio::spawn(run(Arc::clone(self), config.clone(), writer.clone()));
        *task = Some(TaskGuard(handle.abort_handle()));
    }

    /// Ends every watch (UNAVAILABLE) and refuses new ones: shutdown.
    pub(super) fn stop(&self) {
        self.state.send_replace(State::Stopped);
        // No receivers is fine: nobody to tell.
        let _ = self.events.send(Notice::Shutdown);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        drop(task);
    }

    /// Publishes a state unless shutdown already happened.
    fn set_state(&self, new: State) {
        self.state.send_if_modified(|state| {
            if *state == State::Stopped || *state == new {
                return false;
            }
            *state = new;
            true
        });
    }

    /// Ends subscription `epoch`: the state first, then the gap (see `watch`).
    fn gap(&self, epoch: u64, next: State) {
        self.set_state(next);
        let _ = self.events.send(Notice::Gap { epoch });
    }
}

/// How one subscription ended.
enum Ended {
    /// The connection failed or was lost.
    Lost(String),
    /// The probe's events did not come back.
    NotConfigured(String),
}

/// Subscribes, and re-subscribes after each loss, until aborted.
async fn run(subs: Arc<Subscriptions>, config: RedisConfig, writer: RedisConn) {
    let mut epoch = 0u64;
    let mut delay = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let ended = subscribe_once(&subs, &config, &writer, &mut epoch).await;
        match ended {
            Ended::Lost(why) => {
                tracing::warn!(error = %why, retry_in = ?delay, "keyspace subscription lost; open watches end with UNAVAILABLE");
                subs.gap(epoch, State::Connecting);
                // A subscription that lasted resets the backoff.
                if started.elapsed() > MAX_BACKOFF {
                    delay = FIRST_BACKOFF;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
            }
            Ended::NotConfigured(missing) => {
                tracing::warn!(missing = %missing, needed = NEEDED_CLASSES, "Redis does not publish the keyspace events WatchUsers needs; watches answer FAILED_PRECONDITION until it does");
                subs.gap(epoch, State::NotConfigured { missing });
                tokio::time::sleep(REPROBE_INTERVAL).await;
            }
        }
    }
}

/// Which probe events came back, as bits.
const SEEN_SET: u8 = 1;
const SEEN_EXPIRE: u8 = 2;
const SEEN_EXPIRED: u8 = 4;
const SEEN_ALL: u8 = SEEN_SET | SEEN_EXPIRE | SEEN_EXPIRED;

/// The classes whose probe events are missing from `seen`, for the error.
fn missing_classes(seen: u8) -> String {
    if seen == 0 {
        // Nothing at all: keyspace events (K) are off, or every class is.
        return NEEDED_CLASSES.to_owned();
    }
    let mut missing = String::new();
    if seen & SEEN_SET == 0 {
        missing.push('$');
    }
    if seen & SEEN_EXPIRE == 0 {
        missing.push('g');
    }
    if seen & SEEN_EXPIRED == 0 {
        missing.push('x');
    }
    missing
}

/// A node to subscribe to: its URL and the key the probe writes there.
struct Target {
    url: String,
    probe_key: String,
}

/// The nodes that hold users: the standalone server, or every primary of
/// the cluster (keyspace events are node-local), with the slot map they
/// were read from.
async fn targets(
    config: &RedisConfig,
    writer: &RedisConn,
) -> Result<(Vec<Target>, Option<SlotMap>), String> {
    let nodes = match &config.topology {
        Topology::Standalone { url } => {
            return Ok((
                vec![Target {
                    url: url.clone(),
                    probe_key: WATCH_PROBE_KEY.to_owned(),
                }],
                None,
            ));
        }
        Topology::Cluster { nodes } => nodes,
    };
    let mut writer = writer.clone();
    let map = match tokio::time::timeout(config.timeout, writer.slot_map()).await {
        Ok(Ok(Some(map))) => map,
        Ok(Ok(None)) => return Err("no cluster slot map".into()),
        Ok(Err(err)) => return Err(format!("CLUSTER SLOTS: {err}")),
        Err(_) => return Err("CLUSTER SLOTS timed out".into()),
    };
    // Same scheme (TLS or not) as the seeds.
    let scheme = if nodes.iter().any(|n| n.starts_with("rediss://")) {
        "rediss"
    } else {
        "redis"
    };
    let mut primaries: Vec<&str> = map.iter().map(|(_, _, addr)| addr.as_str()).collect();
    primaries.sort_unstable();
    primaries.dedup();
    let targets = primaries
        .into_iter()
        .map(|addr| {
            let ranges: Vec<(u16, u16)> = map
                .iter()
                .filter(|(_, _, a)| a == addr)
                .map(|(first, last, _)| (*first, *last))
                .collect();
            Target {
                url: format!("{scheme}://{addr}"),
                probe_key: probe_key_within(&ranges),
            }
        })
        .collect();
    Ok((targets, Some(map)))
}

/// A probe key whose hash tag puts it in one of `ranges`, so that its
/// events come from that primary.
fn probe_key_within(ranges: &[(u16, u16)]) -> String {
    (0u32..)
        .take(1 << 20)
        .map(|n| format!("t{n}"))
        .find(|tag| {
            let slot = key_slot(tag.as_bytes());
            ranges
                .iter()
                .any(|(first, last)| (*first..=*last).contains(&slot))
        })
        .map_or_else(
            || WATCH_PROBE_KEY.to_owned(),
            |tag| format!("{WATCH_PROBE_KEY}{{{tag}}}"),
        )
}

/// The cluster slot of a hash tag's content (CRC-16/XMODEM mod 16384).
fn key_slot(key: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in key {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A node's messages, then one `None` when its connection ends.
type NodeMessages = Pin<Box<dyn Stream<Item = Option<Msg>> + Send>>;

/// One subscription: connect to every node, PSUBSCRIBE, probe, then
/// publish events until it ends. Bumps `epoch` when it becomes active.
async fn subscribe_once(
    subs: &Subscriptions,
    config: &RedisConfig,
    writer: &RedisConn,
    epoch: &mut u64,
) -> Ended {
    let (targets, slot_map) = match targets(config, writer).await {
        Ok(found) => found,
        Err(why) => return Ended::Lost(why),
    };
    let mut sinks = Vec::new();
    let mut messages: StreamMap<usize, NodeMessages> = StreamMap::new();
    for (index, target) in targets.iter().enumerate() {
        let client = match conn::client(&target.url, config) {
            Ok(client) => client,
            Err(err) => return Ended::Lost(err.to_string()),
        };
        let pubsub =
            match tokio::time::timeout(config.connect_timeout, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(err)) => return Ended::Lost(format!("{}: {err}", target.url)),
                Err(_) => return Ended::Lost(format!("{}: connecting timed out", target.url)),
            };
        let (mut sink, stream) = pubsub.split();
        match tokio::time::timeout(config.timeout, sink.psubscribe(KEYSPACE_PATTERN)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Ended::Lost(format!("PSUBSCRIBE {KEYSPACE_PATTERN}: {err}")),
            Err(_) => return Ended::Lost("PSUBSCRIBE timed out".into()),
        }
        sinks.push(sink);
        messages.insert(
            index,
            Box::pin(stream.map(Some).chain(tokio_stream::once(None))),
        );
    }
    let probe_keys: Vec<String> = targets.into_iter().map(|t| t.probe_key).collect();

    let mut active = false;
    let mut probe = Some(Probe::start(writer, &probe_keys));
    let mut reprobe = tokio::time::interval_at(
        tokio::time::Instant::now() + REPROBE_INTERVAL,
        REPROBE_INTERVAL,
    );
    let mut topology = tokio::time::interval(TOPOLOGY_INTERVAL);
    loop {
        tokio::select! {
            next = messages.next() => {
                let Some((_, Some(msg))) = next else {
                    return Ended::Lost("a subscription connection closed".into());
                };
                if let Some(probe) = probe.as_mut() {
                    probe.saw(&msg);
                }
                if active && let Some(change) = change_of(&msg) {
                    // No receivers is fine: nobody watches right now.
                    let _ = subs.events.send(Notice::Change(Arc::new(change)));
                }
                if probe.as_ref().is_some_and(Probe::complete) {
                    probe = None;
                    if !active {
                        active = true;
                        *epoch += 1;
                        subs.set_state(State::Active { epoch: *epoch });
                        tracing::info!(pattern = KEYSPACE_PATTERN, nodes = sinks.len(), "keyspace subscription active: watches may start");
                    }
                }
            }
            () = probe_deadline(probe.as_ref()) => {
                let missing = probe.as_ref().map_or_else(String::new, Probe::missing);
                // Events can only be missing for two reasons: the classes
                // are off, or a connection died. A ping tells them apart.
                for sink in &mut sinks {
                    match tokio::time::timeout(config.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Ended::Lost(format!("PING on the subscription: {err}")),
                        Err(_) => return Ended::Lost("PING on the subscription timed out".into()),
                    }
                }
                return Ended::NotConfigured(missing);
            }
            _ = reprobe.tick() => {
                if probe.is_none() {
                    probe = Some(Probe::start(writer, &probe_keys));
                }
            }
            _ = topology.tick(), if slot_map.is_some() => {
                // Slots that moved, or a new primary, may carry events
                // this subscription never saw: a gap, then subscribe anew.
                let mut reader = writer.clone();
                if let Ok(Ok(Some(now))) = tokio::time::timeout(config.timeout, reader.slot_map()).await
                    && Some(&now) != slot_map.as_ref()
                {
                    return Ended::Lost("the cluster's slot map changed".into());
                }
            }
        }
    }
}

/// Resolves at the probe's deadline; never without a probe running.
async fn probe_deadline(probe: Option<&Probe>) {
    match probe {
        Some(probe) => tokio::time::sleep_until(probe.deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The change a keyspace message announces; `None` for the probe keys
/// (their `#` is in no valid id) and for events that are no user change.
fn change_of(msg: &Msg) -> Option<Change> {
    let id = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX)?;
    if id.starts_with('#') {
        return None;
    }
    let kind = ChangeKind::of_event(msg.get_payload_bytes())?;
    Some(Change {
        kind,
        id: id.to_owned(),
        at: SystemTime::now(),
    })
}

/// A probe in flight: writes to [`WATCH_PROBE_KEY`] (cluster: one key
/// per primary, by hash tag) that must come back as `set`, `expire` and
/// `expired` events from every node.
///
/// It uses only commands the service's ACL user already has (`SET`,
/// `PTTL`) and no `CONFIG GET`, which a least-privilege user lacks; and it
/// proves what matters, that the events arrive, not what a setting says.
struct Probe {
    /// `__keyspace@0__:<key>` of each node's probe key.
    channels: Vec<String>,
    /// The events seen per node, as bits.
    seen: Vec<u8>,
    deadline: Instant,
    _writes: TaskGuard,
}

impl Probe {
    fn start(writer: &RedisConn, keys: &[String]) -> Self {
        let mut writer = writer.clone();
        let owned = keys.to_vec();
        let writes = tokio::spawn(async move {
            // `set` ($) and `expire` (g) at once; `expired` (x) once it has
            // expired and a read finds it gone (Redis expires lazily on access).
            for key in &owned {
                let set: Result<(), _> = redis::cmd("SET")
                    .arg(key)
                    .arg("")
                    .arg("PX")
                    .arg(1)
                    .query_async(&mut writer)
                    .await;
                if set.is_err() {
                    return;
                }
            }
            let deadline = Instant::now() + PROBE_TIMEOUT;
            let mut left = owned;
            while !left.is_empty() && Instant::now() < deadline {
                // Polling Redis, not synchronising on time: a key's 1 ms
                // is up once PTTL says it is gone.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut still = Vec::new();
                for key in left {
                    let pttl: Result<i64, _> =
                        redis::cmd("PTTL").arg(&key).query_async(&mut writer).await;
                    if !matches!(pttl, Ok(-2) | Err(_)) {
                        still.push(key);
                    }
                }
                left = still;
            }
        });
        Self {
            channels: keys
                .iter()
                .map(|key| format!("__keyspace@0__:{key}"))
                .collect(),
            seen: vec![0; keys.len()],
            deadline: Instant::now() + PROBE_TIMEOUT,
            _writes: TaskGuard(writes.abort_handle()),
        }
    }

    fn saw(&mut self, msg: &Msg) {
        let Some(node) = self
            .channels
            .iter()
            .position(|channel| channel == msg.get_channel_name())
        else {
            return;
        };
        self.seen[node] |= match msg.get_payload_bytes() {
            b"set" => SEEN_SET,
            b"expire" => SEEN_EXPIRE,
            b"expired" => SEEN_EXPIRED,
            _ => 0,
        };
    }

    fn complete(&self) -> bool {
        self.seen.iter().all(|seen| *seen == SEEN_ALL)
    }

    /// The classes missing on some node.
    fn missing(&self) -> String {
        let least = self.seen.iter().fold(SEEN_ALL, |all, seen| all & seen);
        missing_classes(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_events_map_to_kinds() {
        assert_eq!(ChangeKind::of_event(b"set"), Some(ChangeKind::Put));
        assert_eq!(ChangeKind::of_event(b"del"), Some(ChangeKind::Deleted));
        assert_eq!(ChangeKind::of_event(b"expired"), Some(ChangeKind::Expired));
        assert_eq!(
            ChangeKind::of_event(b"expire"),
            Some(ChangeKind::ExpiryChanged)
        );
        assert_eq!(
            ChangeKind::of_event(b"persist"),
            Some(ChangeKind::ExpiryChanged)
        );
        assert_eq!(ChangeKind::of_event(b"lpush"), None);
    }

    #[test]
    fn missing_classes_name_what_did_not_arrive() {
        assert_eq!(missing_classes(0), NEEDED_CLASSES);
        assert_eq!(missing_classes(SEEN_SET | SEEN_EXPIRE), "x");
        assert_eq!(missing_classes(SEEN_EXPIRED), "$g");
        assert_eq!(missing_classes(SEEN_ALL), "");
    }

    #[test]
    fn probe_keys_land_in_the_primary_s_slots() {
        // Known slots from the Redis Cluster specification's CRC16.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        let key = probe_key_within(&[(10_000, 10_100)]);
        let tag = key
            .trim_start_matches(WATCH_PROBE_KEY)
            .trim_matches(['{', '}']);
        assert!(
            (10_000..=10_100).contains(&key_slot(tag.as_bytes())),
            "{key}"
        );
        assert!(key.starts_with("user:#"), "no valid id can name it: {key}");
    }

    #[tokio::test]
    async fn a_gap_of_an_older_subscription_does_not_end_a_newer_watch() {
        let (tx, events) = broadcast::channel(8);
        let mut watch = Watch { events, epoch: 2 };
        tx.send(Notice::Gap { epoch: 1 }).unwrap();
        let change = Arc::new(Change {
            kind: ChangeKind::Put,
            id: "a".into(),
            at: SystemTime::UNIX_EPOCH,
        });
        tx.send(Notice::Change(Arc::clone(&change))).unwrap();
        tx.send(Notice::Gap { epoch: 2 }).unwrap();
        assert_eq!(watch.next().await, Ok(change));
        assert_eq!(watch.next().await, Err(WatchEnd::Gap));
    }

    #[tokio::test]
    async fn a_watch_that_falls_behind_ends_lagged() {
        let (tx, events) = broadcast::channel(2);
        let mut watch = Watch { events, epoch: 1 };
        for _ in 0..3 {
            tx.send(Notice::Shutdown).unwrap();
        }
        assert_eq!(watch.next().await, Err(WatchEnd::Lagged));
    }
}
