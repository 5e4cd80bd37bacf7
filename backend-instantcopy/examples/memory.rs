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
//! On the development machine (glibc malloc, 1,000,000 sessions of 197 B payload), `node`
//! measured 636 B per session (3.2 × the payload): 288 B are the `SessionData`'s heap (one
//! buffer holding every key and value, 197 B, plus a 32 B offset index, allocator overhead
//! included), 112 B the shared `Arc<SessionRecord>` (which holds the map's 32 inline bytes),
//! and the instant-copy state around them about 235 B (boxed state 112, packed per-key stamps
//! 48, map slot about 50, expiry index about 25).
//!
//! Per layer, before and after `SessionData` moved from a vector of boxed keys and boxed values
//! (two allocations per key plus the vector) to that one-buffer layout:
//!
//! | layer | before | after |
//! |---|---|---|
//! | `data` | 545 B | 320 B |
//! | `record` | 641 B | 392 B |
//! | `store` | 872 B | 627 B |
//! | `node` | 861 B | 636 B |
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
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        sessions: 1_000_000,
        layer: Layer::Node,
        backups: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sessions" => args.sessions = value("--sessions")?.parse()?,
            "--backups" => args.backups = value("--backups")?.parse()?,
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
                     [--backups K]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.sessions == 0 {
        return Err("--sessions must be at least 1".into());
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
    }
    Ok(())
}
