//! Memory per session held by an instant-copy node (the figure the README reports per session).
//!
//! Loads N sessions of about 200 B of payload (a user, roles, a three-line cart and a CSRF
//! token: four keys) into one node and reports the process's resident set size (VmRSS from
//! `/proc/self/status`) before and after, the RSS per session, the payload per session and
//! their ratio.
//!
//! ```sh
//! cargo run --release -p backend-instantcopy --example memory -- --sessions 1000000
//! ```
//!
//! `--layer` chooses what is measured, so the cost can be split by layer (each run is a fresh
//! process; run them one after the other and subtract):
//!
//! | layer | what is held per session |
//! |---|---|
//! | `node` (default) | a session created through the real path, `InstantCopyNode::create` on a one-node cluster (`replication = "all"`): state, map slot, expiry index |
//! | `store` | `Store::insert(SessionState::create(..))`, with `--backups K` backups in the placement (as with `replication = K`) |
//! | `tombstones` | `Store::destroy(id, ..)`: a destroyed session's tombstone (map entry and expiry index entry), no payload |
//! | `state` | a `SessionState` in a `Vec` (no map, no index) |
//! | `record` | an `Arc<SessionRecord>` in a `Vec` (no stamps, no placement) |
//! | `data` | the `SessionData` alone in a `Vec` |
//!
//! For the `Vec` layers the report subtracts the `Vec` slot itself (its size is printed).
//!
//! With `--layer node` (the default) the example then writes the same sessions to Redis through
//! `backend-redis` (`--redis-url`, default `REDIS_URL` or `redis://127.0.0.1:6379`; `--no-redis`
//! skips it; at most 200,000 unless `--redis-sessions` says otherwise), under a fresh key
//! prefix, once with `hash-max-listpack-value 64` (Redis' default) and once with 128, and
//! prints Redis' `INFO memory` `used_memory` growth per session beside ours, with the ratio.
//! The setting is changed with `CONFIG SET` and restored to the server's previous value
//! afterwards, also on error; every key written is deleted (and would expire within 30 min).
//! `used_memory` is Redis' own count of allocated bytes (less than its RSS), and on a shared
//! server other clients' writes land in the same delta.
//!
//! On the development machine (glibc malloc, 1,000,000 sessions of 197 B payload), `node`
//! measures 393 B per session (2.0 × the payload), against 1,157 B for Redis 7.0 with its
//! default config (the 85 B cart value forces the hash into a hashtable) and 546 B with
//! `hash-max-listpack-value 128` (listpack): 0.34× and 0.72×. What a held session is now: the
//! shared `Arc<SessionRecord>` (96 B: id, four deadlines, version, the data's 16 B handle)
//! and one data buffer (240 B: a 2 B header, a 16 B `u16` offset index, the 197 B payload and
//! 14 B of replication metadata (key stamps, touch, placement; `state/meta.rs`), allocator
//! overhead included), one 8 B pointer in the map (about 19 B with the table's spare
//! capacity) and a 24 B expiry index entry (about 25 B); the rest (about 13 B) is
//! fragmentation.
//!
//! Per layer (each a fresh process, 1,000,000 sessions), in bytes of RSS per session:
//!
//! | layer | boxed keys and values | one buffer + `u32` index | now |
//! |---|---|---|---|
//! | `data` | 545 | 320 | 248 |
//! | `record` | 641 | 392 | 392 |
//! | `state` | | 541 | 457 |
//! | `store` | 872 | 627 | 444 |
//! | `node` | 861 | 640 | 393 |
//! | `tombstones` | | 77 | 78 |
//!
//! The steps from 640 to 393 (`node`): `SessionData` as one allocation (header, `u16` offsets
//! up to 64 KiB of buffer and `u32` beyond, entries) with a 16 B handle instead of a buffer
//! plus a separate `u32` index (32 B handle): `data` 320 → 248; the replication metadata in
//! that buffer's extension bytes instead of a boxed `SessionState` (112 B) and a stamp vector
//! (48 B), the store holding only the record: 640 → 442; the metadata's stamps shared through
//! a table (4-bit references, none when one stamp covers everything: 21 → 14 B, which brings
//! the buffer under the 240 B size class) and a map keyed by the record's own id (8 B slots,
//! 52 → ~19 B per session): 442 → 393 (these two measured together). The `record`, `state`
//! and `store` layers build their sessions in a loop that leaves more allocator holes than the
//! node's path does, so they read higher than their parts.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_instantcopy::internals::{Placement, SessionState};
use backend_instantcopy::store::Store;
use backend_instantcopy::{Config, InstantCopyNode, Member, NodeId, Stamp};
use session_core::{
    ExpiryPolicy, KeyRing, Loaded, RawJson, SessionBackend, SessionData, SessionId, SessionRecord,
    now_millis,
};

type Error = Box<dyn std::error::Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Node,
    Store,
    Tombstones,
    State,
    Record,
    Data,
}

struct Args {
    sessions: usize,
    layer: Layer,
    backups: u16,
    /// The Redis to compare with (`None`: `--no-redis`).
    redis_url: Option<String>,
    /// Sessions written to Redis (default: `--sessions`, at most [`REDIS_SESSIONS`]).
    redis_sessions: Option<usize>,
}

/// Sessions written to Redis unless `--redis-sessions` says otherwise: 200,000 take about ten
/// seconds per configuration on a local server, and the figure per session no longer moves.
const REDIS_SESSIONS: usize = 200_000;

/// The Redis setting the comparison varies: the longest value a hash may hold and still be
/// encoded as a compact listpack (Redis 7; 64 by default).
const LISTPACK_VALUE: &str = "hash-max-listpack-value";

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        sessions: 1_000_000,
        layer: Layer::Node,
        backups: 0,
        redis_url: Some(
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string()),
        ),
        redis_sessions: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sessions" => args.sessions = value("--sessions")?.parse()?,
            "--backups" => args.backups = value("--backups")?.parse()?,
            "--redis-url" => args.redis_url = Some(value("--redis-url")?),
            "--no-redis" => args.redis_url = None,
            "--redis-sessions" => args.redis_sessions = Some(value("--redis-sessions")?.parse()?),
            "--layer" => {
                args.layer = match value("--layer")?.as_str() {
                    "node" => Layer::Node,
                    "store" => Layer::Store,
                    "tombstones" => Layer::Tombstones,
                    "state" => Layer::State,
                    "record" => Layer::Record,
                    "data" => Layer::Data,
                    other => return Err(format!("unknown layer {other:?}").into()),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: memory [--sessions N] [--layer node|store|tombstones|state|record|data] \
                     [--backups K] [--redis-url URL | --no-redis] [--redis-sessions N]\n\
                     With --layer node (the default) the same sessions are also written to Redis \
                     (REDIS_URL, else redis://127.0.0.1:6379) through backend-redis, once with \
                     {LISTPACK_VALUE} 64 (Redis' default) and once with 128, and Redis' \
                     used_memory growth per session is printed beside ours."
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.sessions == 0 || args.redis_sessions == Some(0) {
        return Err("--sessions and --redis-sessions must be at least 1".into());
    }
    Ok(args)
}

/// Resident set size of this process in bytes.
fn rss() -> Result<u64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .ok_or("no VmRSS line in /proc/self/status")?
        .trim()
        .parse::<u64>()?;
    Ok(kb * 1024)
}

/// SplitMix64, to vary the content per session without a random-number generator.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// About 200 B of realistic session content: four keys.
fn session_data(i: u64) -> Result<SessionData, Error> {
    let mut d = SessionData::new();
    d.insert(
        "user",
        RawJson::from_json(format!(
            r#"{{"id":{},"name":"alice.example"}}"#,
            100_000 + i
        ))?,
    );
    d.insert("roles", RawJson::from_json(r#"["customer","newsletter"]"#)?);
    let sku = 10_000 + i % 50_000;
    d.insert(
        "cart",
        RawJson::from_json(format!(
            r#"[{{"sku":"SKU-{sku:05}","qty":1}},{{"sku":"SKU-{:05}","qty":2}},{{"sku":"SKU-{:05}","qty":3}}]"#,
            sku + 37,
            sku + 74
        ))?,
    );
    d.insert(
        "csrf",
        RawJson::from_json(format!(r#""{:016x}{:016x}""#, mix(i), mix(!i)))?,
    );
    Ok(d)
}

fn policy() -> ExpiryPolicy {
    ExpiryPolicy::new(Duration::from_secs(30 * 60), Duration::from_secs(8 * 3600))
        .unwrap_or_default()
}

fn placement(backups: u16) -> Placement {
    Placement {
        stamp: Stamp { time: 1, node: 1 },
        owner: NodeId(1),
        backups: (2..2 + backups).map(NodeId).collect(),
    }
}

fn state(data: SessionData, i: u64, backups: u16) -> SessionState {
    let stamp = Stamp {
        time: 1 + i,
        node: 1,
    };
    SessionState::create(
        SessionId::random(),
        data,
        &policy(),
        now_millis(),
        stamp,
        Placement {
            stamp,
            ..placement(backups)
        },
    )
}

/// What is kept alive while RSS is measured.
enum Held {
    Node(InstantCopyNode, Vec<String>),
    Store(Store),
    Tombstones(Store),
    States(Vec<SessionState>),
    Records(Vec<Arc<SessionRecord>>),
    Data(Vec<SessionData>),
}

fn main() -> Result<(), Error> {
    let args = parse_args()?;
    let n = args.sessions;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!(
        "inline sizes: SessionState {} B, SessionRecord {} B, SessionData {} B, Placement {} B, \
         Stamp {} B",
        size_of::<SessionState>(),
        size_of::<SessionRecord>(),
        size_of::<SessionData>(),
        size_of::<Placement>(),
        size_of::<Stamp>()
    );

    // Everything that is not per session exists before the first reading.
    let node = if args.layer == Layer::Node {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let mut config = Config::default();
        config.cluster_addr = addr;
        config.members = vec![Member {
            id: NodeId(1),
            addr,
        }];
        let node = rt.block_on(InstantCopyNode::start_with_listener(
            config,
            policy(),
            &KeyRing::generate(),
            listener,
        ))?;
        Some(node)
    } else {
        None
    };
    let slot = match args.layer {
        Layer::State => size_of::<SessionState>(),
        Layer::Record => size_of::<Arc<SessionRecord>>(),
        Layer::Data => size_of::<SessionData>(),
        Layer::Node | Layer::Store | Layer::Tombstones => 0,
    };
    let before = rss()?;
    let started = Instant::now();
    let mut payload = 0u64;
    let mut tokens = Vec::new();
    let held = match args.layer {
        Layer::Node => {
            let node = node.ok_or("node not started")?;
            for i in 0..n as u64 {
                let d = session_data(i)?;
                payload += d.payload_len() as u64;
                let saved = rt.block_on(node.create(d))?;
                // A few tokens to check afterwards that the sessions really are held.
                if i % (n as u64 / 4).max(1) == 0 {
                    tokens.push(saved.token);
                }
            }
            Held::Node(node, tokens)
        }
        Layer::Store => {
            let store = Store::new();
            for i in 0..n as u64 {
                let d = session_data(i)?;
                payload += d.payload_len() as u64;
                if !store.insert(state(d, i, args.backups)) {
                    return Err("the store refused a live session".into());
                }
            }
            Held::Store(store)
        }
        Layer::Tombstones => {
            // Destroyed ids, as logouts and login id cycles leave them: map entry plus expiry
            // index entry, kept until the session's absolute deadline.
            let store = Store::new();
            let until = now_millis() + 8 * 3600 * 1000;
            for _ in 0..n {
                store.destroy(SessionId::random(), until);
            }
            Held::Tombstones(store)
        }
        Layer::State => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let d = session_data(i)?;
                payload += d.payload_len() as u64;
                v.push(state(d, i, args.backups));
            }
            Held::States(v)
        }
        Layer::Record => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let d = session_data(i)?;
                payload += d.payload_len() as u64;
                let mut r = policy().new_record(SessionId::random(), now_millis());
                r.data = d;
                v.push(Arc::new(r));
            }
            Held::Records(v)
        }
        Layer::Data => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n as u64 {
                let d = session_data(i)?;
                payload += d.payload_len() as u64;
                v.push(d);
            }
            Held::Data(v)
        }
    };
    let elapsed = started.elapsed();
    let after = rss()?;

    // The sessions are really there.
    let held_count = match &held {
        Held::Node(node, tokens) => {
            for t in tokens {
                let loaded: Option<Loaded> = rt.block_on(node.load(t))?;
                if loaded.is_none() {
                    return Err("a created session did not load".into());
                }
            }
            node.sessions_held()
        }
        Held::Store(s) => s.len(),
        Held::Tombstones(s) => s.tombstones(),
        Held::States(v) => v.len(),
        Held::Records(v) => v.len(),
        Held::Data(v) => v.len(),
    };
    if held_count != n {
        return Err(format!("{held_count} sessions held, {n} expected").into());
    }

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    let per_payload = payload as f64 / n as f64;
    let per_heap = per - slot as f64;
    println!(
        "layer: {:?}, sessions: {n}, loaded in {elapsed:.2?}",
        args.layer
    );
    println!(
        "RSS before: {:.1} MiB, after: {:.1} MiB",
        mib(before),
        mib(after)
    );
    if payload == 0 {
        println!("RSS per tombstone: {per:.1} B");
        return Ok(());
    }
    println!("payload per session (keys + JSON values): {per_payload:.1} B");
    println!("RSS per session: {per:.1} B");
    if slot > 0 {
        println!("  of which the Vec slot holding it: {slot} B; the rest: {per_heap:.1} B");
    }
    println!("ratio RSS / payload: {:.2}", per / per_payload);
    println!(
        "overhead beyond 1.5 x payload: {:.1} B per session",
        per - 1.5 * per_payload
    );
    if let Held::Node(node, _) = held {
        rt.block_on(node.shutdown());
        match &args.redis_url {
            None => println!("redis: skipped (--no-redis)"),
            Some(url) => {
                let count = args.redis_sessions.unwrap_or(n.min(REDIS_SESSIONS));
                if count < n {
                    println!(
                        "redis: writing {count} sessions (not {n}: --redis-sessions to change)"
                    );
                }
                match rt.block_on(compare_with_redis(url, count)) {
                    Ok(redis) => redis.print(per),
                    Err(e) => println!(
                        "redis: no comparison: {e}\n  (start Redis, pass --redis-url URL, or \
                         --no-redis to skip it)"
                    ),
                }
            }
        }
    }
    Ok(())
}

/// What Redis needed for the same sessions, per configuration.
struct RedisFigures {
    /// `hash-max-listpack-value` as the server had it (restored afterwards).
    previous: String,
    /// `(hash-max-listpack-value, used_memory growth per session, one session's encoding)`.
    runs: Vec<(&'static str, f64, String)>,
    sessions: usize,
}

impl RedisFigures {
    fn print(&self, ours: f64) {
        println!(
            "redis (INFO memory used_memory growth / sessions, {} sessions written by \
             backend-redis):",
            self.sessions
        );
        for (value, per, encoding) in &self.runs {
            println!(
                "  {LISTPACK_VALUE} {value}: {per:.1} B per session ({encoding}); \
                 instant copy / redis = {:.2}",
                ours / per
            );
        }
        println!(
            "  (CONFIG SET {LISTPACK_VALUE} was changed for this and restored to {}; every \
             key written was deleted)",
            self.previous
        );
    }
}

async fn connect_redis(url: &str) -> Result<redis::aio::MultiplexedConnection, Error> {
    let client = redis::Client::open(url)?;
    let con = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("Redis at {url} did not answer within 3 s"))?
    .map_err(|e| format!("Redis at {url} is unreachable: {e}"))?;
    Ok(con)
}

/// `used_memory` from `INFO memory`.
async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> Result<u64, Error> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(con).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or("no used_memory in INFO memory")?
        .trim()
        .parse()?)
}

async fn set_listpack_value(
    con: &mut redis::aio::MultiplexedConnection,
    value: &str,
) -> Result<(), Error> {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(LISTPACK_VALUE)
        .arg(value)
        .query_async(con)
        .await?;
    Ok(())
}

/// Writes `count` sessions of the example's shape to Redis with each listpack setting, and
/// measures `used_memory`'s growth; the setting is restored afterwards, also on error.
async fn compare_with_redis(url: &str, count: usize) -> Result<RedisFigures, Error> {
    let mut con = connect_redis(url).await?;
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(LISTPACK_VALUE)
        .query_async(&mut con)
        .await?;
    let previous = got
        .get(1)
        .cloned()
        .ok_or_else(|| format!("this Redis has no {LISTPACK_VALUE} setting (Redis 7 needed)"))?;
    let mut runs = Vec::new();
    let mut outcome = Ok(());
    for value in ["64", "128"] {
        let run = async {
            set_listpack_value(&mut con, value).await?;
            redis_run(url, &mut con, count).await
        };
        match run.await {
            Ok((per, encoding)) => runs.push((value, per, encoding)),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    set_listpack_value(&mut con, &previous)
        .await
        .map_err(|e| format!("restoring {LISTPACK_VALUE} {previous} FAILED: {e}"))?;
    outcome?;
    Ok(RedisFigures {
        previous,
        runs,
        sessions: count,
    })
}

/// One configuration: writes the sessions under a fresh key prefix, measures, deletes them
/// (also on error).
async fn redis_run(
    url: &str,
    con: &mut redis::aio::MultiplexedConnection,
    count: usize,
) -> Result<(f64, String), Error> {
    use futures::StreamExt;
    let prefix = format!("memory-example:{}-{}:", std::process::id(), now_millis());
    let config = backend_redis::RedisConfig::single(url).with_key_prefix(&prefix);
    let backend =
        backend_redis::RedisBackend::connect(config.clone(), policy(), &KeyRing::generate())
            .await?;
    let measured = async {
        let before = used_memory(con).await?;
        let mut writes = futures::stream::iter(0..count as u64)
            .map(|i| {
                let backend = &backend;
                async move { Ok::<_, Error>(backend.create(session_data(i)?).await?) }
            })
            .buffer_unordered(32);
        while let Some(saved) = writes.next().await {
            saved?;
        }
        drop(writes);
        let after = used_memory(con).await?;
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(backend_redis::testing::prefix_pattern(&prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        let encoding: String = match keys.first() {
            Some(k) => {
                redis::cmd("OBJECT")
                    .arg("ENCODING")
                    .arg(k)
                    .query_async(con)
                    .await?
            }
            None => "encoding unknown".into(),
        };
        Ok::<_, Error>((after.saturating_sub(before) as f64 / count as f64, encoding))
    }
    .await;
    let deleted = backend_redis::testing::delete_prefix(&config).await;
    let left = backend_redis::testing::count_keys_under(url, &prefix).await;
    let (per, encoding) = measured?;
    match (deleted, left) {
        (Ok(_), Ok(0)) => Ok((per, encoding)),
        (d, l) => Err(format!(
            "keys under {prefix} not all deleted ({d:?}, {l:?} left); they expire within 30 min"
        )
        .into()),
    }
}
