//! The rest of a user's life after create and get: update and delete
//! (optionally guarded by an etag), refresh (a new expiry, read in the same
//! step) and batch reads. Each single-key operation is one command or one
//! script on the one key, so it is atomic in Redis and cluster-safe; a
//! batch is one pipelined round trip per node (in parallel across nodes).

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use redis::{Pipeline, RedisError, Value};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::{
    Corruption, MAX_VALUE_BYTES, StoreError, StoredUser,
    conn::SlotMap,
    corrupt_if_wrong_type, is_redirect, key,
    scripts::{self, sha1_hex},
    span, value,
};
use crate::domain::{UserId, UserUpdate};

/// What a change that may be guarded by an etag did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// Done; the result.
    Done(T),
    /// The user is absent or expired; nothing changed.
    NotFound,
    /// The caller's etag is not the stored user's; nothing changed.
    Stale,
}

/// Etag of a stored value: hex SHA-1 of its bytes, as the scripts compute
/// it with `redis.sha1hex`. Opaque to callers.
pub fn etag_of(stored: &[u8]) -> String {
    sha1_hex(stored)
}

/// The user in a stored value read whole (`bytes`) under the key of `id`.
fn user_from(
    id: &UserId,
    bytes: &[u8],
    expires_at: Option<SystemTime>,
) -> Result<StoredUser, StoreError> {
    let user =
        value::decode(id, bytes.len() as u64, bytes).map_err(|problem| StoreError::Corrupt {
            key: key(id),
            problem,
        })?;
    Ok(StoredUser {
        id: user.id,
        name: user.name,
        email: user.email,
        expires_at,
        etag: etag_of(bytes),
    })
}

/// An expiry from a PTTL reply: `None` for a key without one (-1).
fn expiry_in(pttl_ms: i64) -> Option<SystemTime> {
    u64::try_from(pttl_ms)
        .ok()
        .map(|ms| SystemTime::now() + Duration::from_millis(ms))
}

/// A script's reply, split into its first element (what happened) and the rest.
fn tag_of(reply: &[Value]) -> (&[u8], &[Value]) {
    match reply.split_first() {
        Some((Value::BulkString(tag), rest)) => (tag.as_slice(), rest),
        Some((Value::SimpleString(tag), rest)) => (tag.as_bytes(), rest),
        _ => (b"", &[]),
    }
}

fn bytes_at(values: &[Value], at: usize) -> Option<&[u8]> {
    match values.get(at) {
        Some(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

fn int_at(values: &[Value], at: usize) -> Option<i64> {
    match values.get(at) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    }
}

/// The corruption a script reported (`wrongtype`, `large`, `corrupt`),
/// or `None` for another tag.
fn script_corruption(id: &UserId, tag: &[u8], rest: &[Value]) -> Option<StoreError> {
    let problem = match tag {
        b"wrongtype" => Corruption::NotAString,
        b"large" => Corruption::TooLarge {
            bytes: int_at(rest, 0)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        },
        b"corrupt" => {
            let old = bytes_at(rest, 0).unwrap_or_default();
            // The script refused what it could not read as a user with this
            // id; decoding says why. Should the two disagree, it is still
            // not a user this service can change.
            value::decode(id, old.len() as u64, old)
                .err()
                .unwrap_or(Corruption::NotAnObject)
        }
        _ => return None,
    };
    Some(StoreError::Corrupt {
        key: key(id),
        problem,
    })
}

/// A reply no script of ours gives: the script on the server is not ours.
fn unexpected(what: &str) -> StoreError {
    StoreError::Redis {
        kind: super::FailureKind::Other,
        source: RedisError::from((
            redis::ErrorKind::Client,
            "unexpected script reply",
            what.to_owned(),
        )),
    }
}

impl super::UserStore {
    /// Changes the fields `update` names in one script run: checks the
    /// etag (if given) against the stored bytes, rewrites the JSON object
    /// with `SET ... KEEPTTL` (the remaining expiry is kept), and answers
    /// the user as now stored. Concurrent updates cannot lose each other's
    /// changes: the read and the write are one step in Redis.
    pub async fn update(&self, update: &UserUpdate) -> Result<Change<StoredUser>, StoreError> {
        let literal = |field: &Option<String>| -> Result<String, StoreError> {
            field.as_ref().map_or(Ok(String::new()), |text| {
                serde_json::to_string(text).map_err(StoreError::Encode)
            })
        };
        let name = literal(&update.name)?;
        let email = literal(&update.email)?;
        let etag = update.etag.as_deref().unwrap_or("");
        let mut writer = self.links()?.writer.clone();
        let key = key(&update.id);
        let reply = scripts::UPDATE
            .run(
                &mut writer,
                &key,
                &[etag, &name, &email, update.id.as_str()],
            )
            .instrument(span::redis("EVAL update"))
            .await
            .map_err(|err| corrupt_if_wrong_type(&key, err))?;
        let (tag, rest) = tag_of(&reply);
        match tag {
            b"missing" => Ok(Change::NotFound),
            b"stale" => Ok(Change::Stale),
            b"ok" => {
                let new = bytes_at(rest, 0).ok_or_else(|| unexpected("update"))?;
                let pttl = int_at(rest, 1).ok_or_else(|| unexpected("update"))?;
                user_from(&update.id, new, expiry_in(pttl)).map(Change::Done)
            }
            _ => {
                Err(script_corruption(&update.id, tag, rest)
                    .unwrap_or_else(|| unexpected("update")))
            }
        }
    }

    /// Deletes a user: `DEL` when no etag is given (whatever the key holds),
    /// else a script that deletes only if the stored bytes have that etag.
    pub async fn delete(&self, id: &UserId, etag: Option<&str>) -> Result<Change<()>, StoreError> {
        let mut writer = self.links()?.writer.clone();
        let key = key(id);
        let Some(etag) = etag else {
            let deleted: u64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut writer)
                .instrument(span::redis("DEL"))
                .await?;
            return Ok(if deleted == 0 {
                Change::NotFound
            } else {
                Change::Done(())
            });
        };
        let reply = scripts::DELETE
            .run(&mut writer, &key, &[etag])
            .instrument(span::redis("EVAL delete"))
            .await?;
        match tag_of(&reply).0 {
            b"ok" => Ok(Change::Done(())),
            b"missing" => Ok(Change::NotFound),
            // A value of another type or too long has no etag we gave out.
            b"stale" | b"wrongtype" | b"large" => Ok(Change::Stale),
            _ => Err(unexpected("delete")),
        }
    }

    /// Reads a user and sets its expiry to `ttl_seconds` from now in one
    /// step (`GETEX ... EX` inside a script that first bounds the value's
    /// length); `None` if absent or expired.
    pub async fn refresh(
        &self,
        id: &UserId,
        ttl_seconds: u32,
    ) -> Result<Option<StoredUser>, StoreError> {
        let mut writer = self.links()?.writer.clone();
        let key = key(id);
        let ttl = ttl_seconds.to_string();
        let reply = scripts::REFRESH
            .run(&mut writer, &key, &[&ttl])
            .instrument(span::redis("EVAL refresh"))
            .await?;
        let (tag, rest) = tag_of(&reply);
        match tag {
            b"missing" => Ok(None),
            b"ok" => {
                let bytes = bytes_at(rest, 0).ok_or_else(|| unexpected("refresh"))?;
                let expires_at = SystemTime::now() + Duration::from_secs(ttl_seconds.into());
                user_from(id, bytes, Some(expires_at)).map(Some)
            }
            _ => Err(script_corruption(id, tag, rest).unwrap_or_else(|| unexpected("refresh"))),
        }
    }

    /// Reads `ids` (distinct) at once; answers one entry per id, in order,
    /// `None` for an absent or expired one.
    ///
    /// Standalone: one pipeline. Cluster: the ids are grouped by the node
    /// that owns their slot (from the slot map the store's monitor keeps),
    /// one pipeline per node, all nodes at once. Each id is read as GetUser
    /// is read bounded, as GetUser reads it (see [`read_user`]). An id whose reply is a
    /// redirect (a slot moved since the map was read), or whose node's
    /// pipeline failed as a whole, is read again on its own, following
    /// MOVED/ASK like any single-key call.
    pub async fn batch_get(&self, ids: &[UserId]) -> Result<Vec<Option<StoredUser>>, StoreError> {
        let reader = self.links()?.reader.clone();
        let slots = self.slot_map();
        let mut groups: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
        for (index, id) in ids.iter().enumerate() {
            let group = if reader.is_cluster() {
                let slot = slot_of(key(id).as_bytes());
                node_of(&slots, slot).map_or(Group::Slot(slot), Group::Node)
            } else {
                Group::Server
            };
            groups.entry(group).or_default().push(index);
        }
        let mut requests = JoinSet::new();
        for (group, members) in groups {
            let node = match group {
                Group::Node(node) => Some(node),
                Group::Slot(_) | Group::Server => None,
            };
            let mut conn = reader.clone();
            let mut pipeline = redis::pipe();
            for &index in &members {
                read_user(&mut pipeline, &key(&ids[index]));
            }
            requests.spawn(async move {
                let replies = conn
                    .pipeline_on(node.as_deref(), &pipeline, members.len() * REPLIES_PER_ID)
                    .instrument(span::redis("GETRANGE STRLEN PTTL (batch)"))
                    .await;
                (members, replies)
            });
        }
        let mut found: Vec<Option<StoredUser>> = vec![None; ids.len()];
        let mut again = Vec::new();
        while let Some(joined) = requests.join_next().await {
            let (members, replies) = joined.map_err(|_| unexpected("batch task"))?;
            let Ok(replies) = replies else {
                again.extend(members);
                continue;
            };
            for (&index, reply) in members.iter().zip(replies.chunks(REPLIES_PER_ID)) {
                match user_in_replies(&ids[index], reply)? {
                    Some(user) => found[index] = user,
                    None => again.push(index),
                }
            }
        }
        for index in again {
            found[index] = self.get(&ids[index]).await?;
        }
        Ok(found)
    }
}

/// Where one pipeline of a batch goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// The standalone server.
    Server,
    /// The cluster primary at this address, from the slot map.
    Node(String),
    /// A slot the slot map does not know yet (before the monitor's first
    /// read): the cluster client routes it.
    Slot(u16),
}

/// Appends a bounded read of `key` to `pipeline`: at most
/// [`MAX_VALUE_BYTES`] + 1 bytes of the value and its TTL. Two commands,
/// not GetUser's three: a prefix longer than the bound already says "too
/// large", and only then is the exact length worth a round trip (the id is
/// read again alone, as GetUser reads it).
fn read_user(pipeline: &mut Pipeline, key: &str) {
    let last = isize::try_from(MAX_VALUE_BYTES).unwrap_or(isize::MAX);
    pipeline.getrange(key, 0, last).pttl(key);
}

/// Replies per id in a batch pipeline (see [`read_user`]).
const REPLIES_PER_ID: usize = 2;

/// The user in one id's replies: `Some(None)` when absent, `None` when it
/// must be read again alone (a redirect, or a value longer than the bound).
fn user_in_replies(id: &UserId, reply: &[Value]) -> Result<Option<Option<StoredUser>>, StoreError> {
    for value in reply {
        if let Value::ServerError(err) = value {
            let err = RedisError::from(err.clone());
            if is_redirect(&err) {
                return Ok(None);
            }
            return Err(corrupt_if_wrong_type(&key(id), err));
        }
    }
    let (Some(prefix), Some(pttl)) = (bytes_at(reply, 0), int_at(reply, 1)) else {
        return Err(unexpected("batch read"));
    };
    if pttl == -2 {
        return Ok(Some(None));
    }
    if prefix.len() > MAX_VALUE_BYTES {
        return Ok(None);
    }
    user_from(id, prefix, expiry_in(pttl)).map(|user| Some(Some(user)))
}

/// The primary ("host:port") serving `slot`, if the map knows one.
fn node_of(map: &SlotMap, slot: u16) -> Option<String> {
    map.iter()
        .find(|(first, last, _)| (*first..=*last).contains(&slot))
        .map(|(_, _, node)| node.clone())
}

/// The cluster slot of `key`: CRC16 (XMODEM) mod 16384. Keys of valid ids
/// hold no `{`, so hash tags never apply.
fn slot_of(key: &[u8]) -> u16 {
    let crc = key.iter().fold(0u16, |crc, &byte| {
        (0..8).fold(crc ^ (u16::from(byte) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    });
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        // The CRC16 check value of the XMODEM variant.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"user:ada"), 12861);
    }

    #[test]
    fn node_of_finds_the_range() {
        let map: SlotMap = vec![
            (0, 5460, "a:1".into()),
            (5461, 10922, "b:2".into()),
            (10923, 16383, "c:3".into()),
        ];
        assert_eq!(node_of(&map, 0).as_deref(), Some("a:1"));
        assert_eq!(node_of(&map, 5461).as_deref(), Some("b:2"));
        assert_eq!(node_of(&map, 16383).as_deref(), Some("c:3"));
        assert_eq!(node_of(&Vec::new(), 7), None);
    }

    #[test]
    fn etags_differ_when_the_stored_bytes_do() {
        let a = etag_of(br#"{"id":"a","name":"A","email":"a@b.c"}"#);
        let b = etag_of(br#"{"id":"a","name":"B","email":"a@b.c"}"#);
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
    }
}
