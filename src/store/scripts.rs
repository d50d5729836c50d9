//! The Lua scripts behind the operations that must read and write one key
//! in one step (UpdateUser, DeleteUser with an etag, RefreshUser), and how
//! they are sent. A script touches only `KEYS[1]`, so it is cluster-safe
//! and atomic: Redis runs it whole while no other command sees the key.
//!
//! Every script reads the value's length first (`STRLEN`) and never reads
//! a value longer than a user can be, the bound GetUser keeps too. Each
//! answers an array whose first element says what happened: `missing`,
//! `wrongtype`, `large` (+ the length), `stale`, `corrupt` (+ the value),
//! or `ok` (+ what the operation returns).

use std::sync::OnceLock;

use redis::{RedisError, Value};

use super::conn::RedisConn;

/// Shared prologue: the value's length, or an early answer for a key that
/// holds no string or a value too long to be a user (ARGV[1]: the bound).
const PROLOGUE: &str = r#"
local ok, len = pcall(redis.call, 'STRLEN', KEYS[1])
if not ok then
  if string.find(len.err, 'WRONGTYPE', 1, true) then return {'wrongtype'} end
  return redis.error_reply(len.err)
end
if len > tonumber(ARGV[1]) then return {'large', len} end
"#;

/// UpdateUser. ARGV[2]: the etag the caller holds ('' = any version);
/// ARGV[3], ARGV[4]: the new name and email as JSON string literals ('' =
/// keep); ARGV[5]: the id. Writes the JSON object in the stored field order
/// with `SET ... KEEPTTL`, so the remaining expiry is kept; answers
/// `{'ok', new value, PTTL}`.
const UPDATE_BODY: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return {'missing'} end
if ARGV[2] ~= '' and ARGV[2] ~= redis.sha1hex(old) then return {'stale'} end
local parsed, user = pcall(cjson.decode, old)
if not parsed or type(user) ~= 'table' or user.id ~= ARGV[5]
    or type(user.name) ~= 'string' or type(user.email) ~= 'string' then
  return {'corrupt', old}
end
local name = ARGV[3]
if name == '' then name = cjson.encode(user.name) end
local email = ARGV[4]
if email == '' then email = cjson.encode(user.email) end
local new = '{"id":' .. cjson.encode(user.id) .. ',"name":' .. name .. ',"email":' .. email .. '}'
redis.call('SET', KEYS[1], new, 'KEEPTTL')
return {'ok', new, redis.call('PTTL', KEYS[1])}
"#;

/// DeleteUser with an etag. ARGV[2]: the etag. Answers `{'ok'}` once deleted.
/// A value too long or of another type has no etag this service gave out:
/// the prologue's answers count as stale.
const DELETE_BODY: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return {'missing'} end
if ARGV[2] ~= redis.sha1hex(old) then return {'stale'} end
redis.call('DEL', KEYS[1])
return {'ok'}
"#;

/// RefreshUser. ARGV[2]: the new TTL in seconds. Reads the value and sets
/// its expiry with one `GETEX`; answers `{'ok', value}`.
const REFRESH_BODY: &str = r#"
local value = redis.call('GETEX', KEYS[1], 'EX', ARGV[2])
if not value then return {'missing'} end
return {'ok', value}
"#;

/// A script, sent whole with `EVAL` on every call. Not `EVALSHA`: its
/// first call on each node (and after every restart or failover) answers
/// `NOSCRIPT`, an error reply that shows in the server's error statistics
/// and must be followed by a second round trip; loading scripts ahead
/// (`SCRIPT LOAD`, `FUNCTION LOAD`) would need a fan-out to every node,
/// kept up through topology changes, and more ACL grants. Redis caches the
/// compiled script by its SHA-1, so `EVAL` costs a hash of a few hundred
/// bytes more per call.
pub struct Script {
    body: &'static str,
    /// The full text (prologue + body), built on first use.
    text: OnceLock<String>,
}

/// See [`UPDATE_BODY`].
pub static UPDATE: Script = Script::new(UPDATE_BODY);
/// See [`DELETE_BODY`].
pub static DELETE: Script = Script::new(DELETE_BODY);
/// See [`REFRESH_BODY`].
pub static REFRESH: Script = Script::new(REFRESH_BODY);

impl Script {
    const fn new(body: &'static str) -> Self {
        Self {
            body,
            text: OnceLock::new(),
        }
    }

    fn text(&self) -> &str {
        self.text.get_or_init(|| format!("{PROLOGUE}{}", self.body))
    }

    /// Runs the script on `key` with `args` as ARGV[2...] (ARGV[1], the
    /// size bound, is added first) and answers its reply.
    pub async fn run(
        &self,
        conn: &mut RedisConn,
        key: &str,
        args: &[&str],
    ) -> Result<Vec<Value>, RedisError> {
        redis::cmd("EVAL")
            .arg(self.text())
            .arg(1)
            .arg(key)
            .arg(super::MAX_VALUE_BYTES)
            .arg(args)
            .query_async(conn)
            .await
    }
}

/// Lower-case hex SHA-1 of `bytes`, as Lua's `redis.sha1hex` writes it.
pub fn sha1_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(40), |mut hex, byte| {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_hex_matches_the_known_digest() {
        // RFC 3174 test vector.
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn each_script_starts_with_the_bounded_prologue() {
        for script in [&UPDATE, &DELETE, &REFRESH] {
            assert!(script.text().starts_with(PROLOGUE));
            assert!(script.text().ends_with(script.body));
        }
    }
}
