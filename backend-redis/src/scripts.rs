//! The Lua scripts that read and change sessions atomically on the Redis side.
//!
//! Every script touches exactly one key (except [`CYCLE`], used only on a single server), so it
//! runs on a Redis Cluster as well. Times come from the Redis server's clock (`TIME`), so app
//! nodes with skewed clocks still agree on when a session dies, and Redis' own `PEXPIREAT`
//! fires at exactly the deadline the scripts computed.
//!
//! Replies are arrays whose first element is a status:
//! `1` done (followed by version, last access, idle deadline, absolute deadline),
//! `0` the session no longer exists (missing, expired, or moved by a cycle),
//! `2` the target key already exists with somebody else's write nonce (an id collision).

use std::sync::LazyLock;

/// A script and its SHA1, sent as `EVALSHA` (with an `EVAL` fallback after `NOSCRIPT`).
#[derive(Debug)]
pub(crate) struct Lua {
    /// Short name for errors and logs.
    pub(crate) name: &'static str,
    /// The source.
    pub(crate) code: &'static str,
    /// Hex SHA1 of the source.
    pub(crate) sha: String,
}

impl Lua {
    fn new(name: &'static str, code: &'static str) -> Self {
        Lua {
            name,
            code,
            sha: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// Status: applied.
pub(crate) const DONE: i64 = 1;
/// Status: the session does not exist (anymore).
pub(crate) const GONE: i64 = 0;
/// Status: the new key is taken by another session.
pub(crate) const TAKEN: i64 = 2;

macro_rules! prelude {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(x)
  return string.format('%.0f', x)
end
-- Calls cmd(key, ARGV[from..to]) in chunks, below Lua's unpack limit (pairs stay aligned).
local function chunked(cmd, key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 999, to)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
-- idle deadline, absolute deadline and version of a live session, or nil.
local function live(key, now)
  local m = redis.call('HMGET', key, 'm:v', 'm:i', 'm:x', 'm:moved')
  if not m[1] or m[4] then return nil end
  local idle, abs = tonumber(m[2]), tonumber(m[3])
  if not idle or not abs or now >= math.min(idle, abs) then return nil end
  return idle, abs, tonumber(m[1])
end
-- The reply for a key our own earlier attempt already wrote (same write nonce), or nil.
local function ours(key, nonce)
  local m = redis.call('HMGET', key, 'm:w', 'm:v', 'm:a', 'm:i', 'm:x')
  if m[1] ~= nonce then return nil end
  return {1, tonumber(m[2]), tonumber(m[3]), tonumber(m[4]), tonumber(m[5])}
end
"#
    };
}

/// Save a delta: `KEYS[1]` session; `ARGV` = idle ms, number of set fields, the set
/// field/value pairs, then the removed fields. Refreshes the idle deadline and the TTL; bumps
/// the version only when the delta is not empty (an empty delta is a touch).
pub(crate) static SAVE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "save",
        concat!(
            prelude!(),
            r#"
local now = now_ms()
local idle, abs, version = live(KEYS[1], now)
if not idle then return {0} end
local last_set = 2 + 2 * tonumber(ARGV[2])
if #ARGV > last_set then chunked('HDEL', KEYS[1], last_set + 1, #ARGV) end
if last_set > 2 then chunked('HSET', KEYS[1], 3, last_set) end
if #ARGV > 2 then version = redis.call('HINCRBY', KEYS[1], 'm:v', 1) end
local new_idle = math.min(now + tonumber(ARGV[1]), abs)
redis.call('HSET', KEYS[1], 'm:a', num(now), 'm:i', num(new_idle))
redis.call('PEXPIREAT', KEYS[1], num(new_idle))
return {1, version, now, new_idle, abs}
"#
        ),
    )
});

/// Create (or put a cycled session's copy): `KEYS[1]` new session; `ARGV` = idle ms,
/// absolute ms (relative, used when the next is empty), absolute deadline or `""`, created-at
/// or `""`, version, write nonce, then the field/value pairs. Never overwrites an existing key.
pub(crate) static PUT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "put",
        concat!(
            prelude!(),
            r#"
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then
  return ours(KEYS[1], ARGV[6]) or {2}
end
local abs = now + tonumber(ARGV[2])
if ARGV[3] ~= '' then abs = tonumber(ARGV[3]) end
local created = num(now)
if ARGV[4] ~= '' then created = ARGV[4] end
if now >= abs then return {0} end
local idle = math.min(now + tonumber(ARGV[1]), abs)
redis.call('HSET', KEYS[1], 'm:v', ARGV[5], 'm:c', created, 'm:a', num(now),
  'm:i', num(idle), 'm:x', num(abs), 'm:w', ARGV[6])
if #ARGV >= 7 then chunked('HSET', KEYS[1], 7, #ARGV) end
redis.call('PEXPIREAT', KEYS[1], num(idle))
return {1, tonumber(ARGV[5]), now, idle, abs}
"#
        ),
    )
});

/// Cycle on a single server, atomically: `KEYS[1]` old session, `KEYS[2]` new; `ARGV` = idle
/// ms, write nonce, number of set fields, set pairs, removed fields. Renames the hash, applies
/// the delta, bumps the version, refreshes deadlines and TTL.
pub(crate) static CYCLE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "cycle",
        concat!(
            prelude!(),
            r#"
local now = now_ms()
local idle, abs = live(KEYS[1], now)
if not idle then return ours(KEYS[2], ARGV[2]) or {0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
redis.call('RENAME', KEYS[1], KEYS[2])
local last_set = 3 + 2 * tonumber(ARGV[3])
if #ARGV > last_set then chunked('HDEL', KEYS[2], last_set + 1, #ARGV) end
if last_set > 3 then chunked('HSET', KEYS[2], 4, last_set) end
local version = redis.call('HINCRBY', KEYS[2], 'm:v', 1)
local new_idle = math.min(now + tonumber(ARGV[1]), abs)
redis.call('HSET', KEYS[2], 'm:a', num(now), 'm:i', num(new_idle), 'm:w', ARGV[2])
redis.call('PEXPIREAT', KEYS[2], num(new_idle))
return {1, version, now, new_idle, abs}
"#
        ),
    )
});

/// Cluster cycle, step 1: `KEYS[1]` old session, `ARGV[1]` new id. Marks the session as moving
/// (from now on it loads as missing and saves fail with Gone) and returns `{1, hash}`, or `{0}`.
pub(crate) static FREEZE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "freeze",
        concat!(
            prelude!(),
            r#"
if redis.call('HGET', KEYS[1], 'm:moved') == ARGV[1] then
  return {1, redis.call('HGETALL', KEYS[1])}
end
if not live(KEYS[1], now_ms()) then return {0} end
redis.call('HSET', KEYS[1], 'm:moved', ARGV[1])
return {1, redis.call('HGETALL', KEYS[1])}
"#
        ),
    )
});

/// Cluster cycle rollback: `KEYS[1]` old session, `ARGV[1]` the new id it was being moved to.
/// Clears the mark so the old token works again. Returns 1 when it cleared it.
pub(crate) static UNFREEZE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        "unfreeze",
        r#"
if redis.call('HGET', KEYS[1], 'm:moved') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'm:moved')
  return 1
end
return 0
"#,
    )
});
