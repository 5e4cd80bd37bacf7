//! # backend-redis
//!
//! The paper's *distributed cache* scheme (N = 1, D = 0): sessions live in Redis, or in a
//! Redis Cluster for deployments that outgrow one server, and every app node reads and writes
//! them there. The client carries only a signed id token.
//!
//! ## Storage format
//!
//! One Redis **hash per session** at `{key_prefix}{<session id>}`. The id inside `{…}` is the
//! key's cluster *hash tag*, so everything belonging to one session maps to one slot.
//!
//! | field | holds |
//! |---|---|
//! | `d:<key>` | a session value, as JSON text (one field per key, so a delta touches only its keys) |
//! | `m:v` | version, bumped by every change |
//! | `m:c`, `m:a` | created at, last access (ms since the epoch, Redis server clock) |
//! | `m:i`, `m:x` | idle deadline, absolute deadline |
//! | `m:w` | write nonce: makes a retried create/cycle idempotent |
//! | `m:moved` | present only while a cluster id cycle moves the session |
//!
//! Data fields and metadata fields live in separate namespaces (`d:` / `m:`), so any session
//! key — empty, unicode, `"m:v"`, with a newline — is safe. The key's TTL is set with
//! `PEXPIREAT` to the earlier of the two deadlines, so Redis evicts dead sessions by itself;
//! no sweeper runs in the app.
//!
//! ## Operations (round trips)
//!
//! | operation | how | N |
//! |---|---|---|
//! | load | `HGETALL` (Redis never returns a key past its TTL, which is the earlier deadline on the server's clock); a hash marked as moving by a cluster cycle counts as missing | 1 |
//! | create | script: refuse an existing key, `HSET` data + metadata, `PEXPIREAT` | 1 |
//! | save | script: refuse a missing/expired/moved session, `HDEL` removed keys, `HSET` set keys, bump version, refresh idle deadline and TTL | 1 |
//! | touch | the save script with an empty delta (only the deadline moves); throttled by the [`ExpiryPolicy`](session_core::ExpiryPolicy) | 1 |
//! | cycle id, single server | script: `RENAME` old → new, apply the delta, bump version, refresh TTL: atomic | 1 |
//! | cycle id, cluster | freeze old (it stops loading) → write new → `UNLINK` old; rolled back if the write fails | 3 |
//! | destroy | `UNLINK` | 1 |
//!
//! Scripts are sent as `EVALSHA`; after a restart or failover the server answers `NOSCRIPT` once
//! and the source is sent (one extra round trip, counted in N and in the `script_loads`
//! metric). Forged, truncated or foreign tokens are rejected by the HMAC check before any I/O.
//!
//! ## What it guarantees that tower-sessions' Redis store does not
//!
//! * **No lost updates.** A save sends the request's delta, not the whole record; two requests
//!   that change different keys of one session both survive.
//! * **No silent drops, no resurrection.** If the session expired or was destroyed between
//!   load and save, the save fails with [`SessionError::Gone`](session_core::SessionError::Gone)
//!   and nothing is recreated.
//! * **Expiry by Redis, from both deadlines.** Idle (sliding) and absolute timeouts: the key's
//!   TTL is the earlier deadline (Redis' clock), so a dead session never loads, and every save
//!   checks both deadlines again.
//! * **Outages are typed.** A down or unreachable Redis gives
//!   [`SessionError::Unavailable`](session_core::SessionError::Unavailable) within the
//!   configured timeouts, never a hang; the axum layer then sets no cookie for an unsaved new
//!   session. The connection is re-opened by itself when Redis returns, and a command that
//!   hit a dropped connection is repeated once (every script is safe to repeat).
//!
//! ## Trade-offs
//!
//! * Every read is a network round trip (N = 1). In exchange app nodes hold no session state.
//! * Redis persistence and replication decide durability: with asynchronous replication a
//!   failover can lose the last writes (as Jepsen showed for Redis); configure AOF/replicas to
//!   taste.
//! * A cluster id cycle is three round trips and not atomic: between the freeze and the write
//!   of the new key neither token loads (a few milliseconds); if the app dies in that window
//!   the session is lost (the user logs in again). A failed write is rolled back.
//! * Deadlines use the Redis server clock, so app nodes' clock skew does not matter; the touch
//!   throttle compares that to the app clock, which only shifts when a touch happens.
//! * TLS (`rediss://`) needs the `redis` crate's TLS feature, which this workspace does not
//!   enable.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use backend_redis::{RedisBackend, RedisConfig};
//! use session_core::{ExpiryPolicy, KeyRing, SessionBackend, SessionLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One server ...
//! let config = RedisConfig::single("redis://127.0.0.1:6379").with_key_prefix("shop:sess:");
//! // ... or a Redis Cluster, by any of its nodes:
//! // let config = RedisConfig::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"]);
//! let keys = KeyRing::generate(); // in production: KeyRing::new(secrets from env/file)
//! let backend: Arc<dyn SessionBackend> =
//!     Arc::new(RedisBackend::connect(config, ExpiryPolicy::default(), &keys).await?);
//! let layer = SessionLayer::new(backend); // router.layer(layer) in your axum app
//! # let _ = layer;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod conn;
mod layout;
mod scripts;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::RedisBackend;
pub use config::{
    ConfigError, DEFAULT_KEY_PREFIX, DEFAULT_URL, MAX_KEY_PREFIX_LEN, RedisConfig, Topology,
    redact_url,
};
