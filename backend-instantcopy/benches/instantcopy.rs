//! The instant-copy hot paths: local reads and writes, token routing, wire encoding and sealing.
//!
//! - `load_local_hit`: `InstantCopyNode::load` on a one-node cluster for a session this node
//!   holds (token check + map lookup + `Arc` clone), for a 200 B and a 64 KiB session, next to
//!   session-core's reference `MemoryBackend::load`. A local hit must not copy the session, so
//!   the two sizes should cost about the same.
//! - `delta_apply`: `SessionState::apply_local` of a one-key write (what a request's commit
//!   does on the serving node) and `Store::apply` of a peer's one-key update and of a peer's
//!   full state (what a replica does per pushed update).
//! - `wire`: postcard against serde_json, encode and decode, for a `PushBatch` of 1 and 32
//!   full 200 B session states, plus seal/open of the postcard body. A size table (plain and
//!   sealed bytes) is printed first.
//!
//! ```sh
//! cargo bench -p backend-instantcopy --bench instantcopy -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failed run
#![allow(missing_docs)]

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use backend_instantcopy::internals::{Placement, SessionState, WireState};
use backend_instantcopy::store::Store;
use backend_instantcopy::wire::{self, PeerSeal, PushBatch, Update};
use backend_instantcopy::{Config, InstantCopyNode, Member, NodeId, Stamp};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use session_core::{
    Delta, ExpiryPolicy, KeyRing, MemoryBackend, RawJson, Secret, SessionBackend, SessionData,
    SessionId, now_millis,
};

/// Realistic session content: a user, roles and a cart, padded with cart lines to about
/// `target` bytes of keys and JSON values.
fn session_data(target: usize) -> SessionData {
    let mut d = SessionData::new();
    d.insert(
        "user",
        RawJson::from_value(&json!({"id": 184_467, "name": "alice"})).unwrap(),
    );
    d.insert(
        "roles",
        RawJson::from_value(&json!(["customer", "newsletter"])).unwrap(),
    );
    let base = d.payload_len() + "cart".len();
    let mut cart = Vec::new();
    loop {
        let i = cart.len();
        cart.push(json!({"sku": format!("SKU-{:05}", 10_000 + i * 37), "qty": i % 3 + 1}));
        let value = RawJson::from_value(&cart).unwrap();
        if base + value.len() > target && i > 0 {
            break;
        }
        d.insert("cart", value);
    }
    d
}

fn keys() -> KeyRing {
    KeyRing::new([Secret::new(b"benchmark cluster secret, 32+ bytes long".to_vec()).unwrap()])
        .unwrap()
}

fn policy() -> ExpiryPolicy {
    ExpiryPolicy::new(Duration::from_secs(3600), Duration::from_secs(8 * 3600)).unwrap()
}

fn placement(stamp: Stamp) -> Placement {
    Placement {
        stamp,
        owner: NodeId(1),
        backups: vec![NodeId(2)],
    }
}

fn state(data: SessionData, time: u64) -> SessionState {
    let stamp = Stamp { time, node: 1 };
    SessionState::create(
        SessionId::random(),
        data,
        &policy(),
        now_millis(),
        stamp,
        placement(stamp),
    )
}

/// A one-node cluster on a free loopback port.
async fn one_node() -> InstantCopyNode {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::default();
    config.cluster_addr = addr;
    config.members = vec![Member {
        id: NodeId(1),
        addr,
    }];
    InstantCopyNode::start_with_listener(config, policy(), &keys(), listener)
        .await
        .unwrap()
}

fn load_local_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let node = rt.block_on(one_node());
    let memory = MemoryBackend::new(policy(), &keys());
    // Every session exists before anything is timed, so each measurement sees the same maps.
    let sizes = [(64 * 1024, "64KiB"), (200, "200B")];
    let tokens: Vec<(&str, String, String)> = sizes
        .iter()
        .map(|&(size, label)| {
            let data = session_data(size);
            let payload = data.payload_len();
            println!("load_local_hit/{label}: payload {payload} B");
            let ic_token = rt.block_on(node.create(data.clone())).unwrap().token;
            let mem_token = rt.block_on(memory.create(data)).unwrap().token;
            // The hit really is local and really returns the session.
            let loaded = rt.block_on(node.load(&ic_token)).unwrap().unwrap();
            assert_eq!(loaded.record.data.payload_len(), payload);
            (label, ic_token, mem_token)
        })
        .collect();
    assert_eq!(
        node.counters().network_calls,
        0,
        "a local hit makes no network call"
    );
    let mut g = c.benchmark_group("load_local_hit");
    for (label, ic_token, _) in &tokens {
        g.bench_function(BenchmarkId::new("instantcopy", label), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(node.load(black_box(ic_token)).await.unwrap()) })
        });
    }
    for (label, _, mem_token) in &tokens {
        g.bench_function(BenchmarkId::new("memory", label), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(memory.load(black_box(mem_token)).await.unwrap()) })
        });
    }
    g.finish();
    rt.block_on(node.shutdown());
}

/// A one-key write of a short JSON value.
fn one_key_delta(i: u64) -> Delta {
    let mut d = Delta::default();
    d.set(
        "last_page",
        RawJson::from_value(&format!("/shop/item/{i}")).unwrap(),
    );
    d
}

fn delta_apply(c: &mut Criterion) {
    let p = policy();
    let mut g = c.benchmark_group("delta_apply");
    let clock = Cell::new(10u64);
    let tick = || {
        clock.set(clock.get() + 1);
        Stamp {
            time: clock.get(),
            node: 1,
        }
    };

    let mut local = state(session_data(200), 1);
    g.bench_function("state_apply_local_one_key", |b| {
        b.iter_batched(
            || (one_key_delta(clock.get()), tick()),
            |(d, stamp)| black_box(local.apply_local(&d, stamp, now_millis(), &p)),
            BatchSize::SmallInput,
        )
    });

    // A replica holding the session receives the writer's one-key updates.
    let store = Store::new();
    let mut writer = state(session_data(200), 1);
    assert!(store.insert(writer.clone()));
    g.bench_function("store_apply_peer_one_key", |b| {
        b.iter_batched(
            || writer.apply_local(&one_key_delta(clock.get()), tick(), now_millis(), &p),
            |w| black_box(store.apply(&w)),
            BatchSize::SmallInput,
        )
    });
    // And full states (create, repair): a merge of every key, each newer than the replica's.
    g.bench_function("store_apply_peer_full_200B", |b| {
        b.iter_batched(
            || {
                writer.apply_local(&one_key_delta(clock.get()), tick(), now_millis(), &p);
                let mut full = writer.to_wire_full();
                let t = tick();
                for e in &mut full.entries {
                    e.stamp = t;
                }
                full
            },
            |w| black_box(store.apply(&w)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn batch(n: usize, full: bool) -> PushBatch {
    let updates = (0..n)
        .map(|i| {
            let mut s = state(session_data(200), 1 + i as u64);
            let w: WireState = if full {
                s.to_wire_full()
            } else {
                s.apply_local(
                    &one_key_delta(i as u64),
                    Stamp {
                        time: 1_000 + i as u64,
                        node: 1,
                    },
                    now_millis(),
                    &policy(),
                )
            };
            Update::State(w)
        })
        .collect();
    PushBatch { updates }
}

fn wire_encoding(c: &mut Criterion) {
    let seal = PeerSeal::new(&keys());
    println!("wire sizes (bytes): batch | postcard plain / sealed | json plain / sealed");
    for (label, n, full) in [
        ("1 one-key delta", 1, false),
        ("32 one-key deltas", 32, false),
        ("1 full 200 B state", 1, true),
        ("32 full 200 B states", 32, true),
    ] {
        let b = batch(n, full);
        let pc = wire::encode(&b).unwrap();
        let js = serde_json::to_vec(&b).unwrap();
        let pc_sealed = seal
            .seal_request("POST", wire::PATH_PUSH, NodeId(1), NodeId(2), 1, &pc)
            .body;
        let js_sealed = seal
            .seal_request("POST", wire::PATH_PUSH, NodeId(1), NodeId(2), 1, &js)
            .body;
        println!(
            "  {label:>22} | {:>6} / {:>6} | {:>6} / {:>6}",
            pc.len(),
            pc_sealed.len(),
            js.len(),
            js_sealed.len()
        );
    }

    let mut g = c.benchmark_group("wire");
    for n in [1usize, 32] {
        let b = batch(n, true);
        let pc = wire::encode(&b).unwrap();
        let js = serde_json::to_vec(&b).unwrap();
        // Both encodings carry the same message.
        assert_eq!(wire::decode::<PushBatch>(&pc).unwrap(), b);
        assert_eq!(serde_json::from_slice::<PushBatch>(&js).unwrap(), b);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("postcard_encode", n), |bn| {
            bn.iter(|| black_box(wire::encode(black_box(&b)).unwrap()))
        });
        g.bench_function(BenchmarkId::new("json_encode", n), |bn| {
            bn.iter(|| black_box(serde_json::to_vec(black_box(&b)).unwrap()))
        });
        g.bench_function(BenchmarkId::new("postcard_decode", n), |bn| {
            bn.iter(|| black_box(wire::decode::<PushBatch>(black_box(&pc)).unwrap()))
        });
        g.bench_function(BenchmarkId::new("json_decode", n), |bn| {
            bn.iter(|| black_box(serde_json::from_slice::<PushBatch>(black_box(&js)).unwrap()))
        });
        let sealed = seal.seal_request("POST", wire::PATH_PUSH, NodeId(1), NodeId(2), 1, &pc);
        g.bench_function(BenchmarkId::new("postcard_seal", n), |bn| {
            bn.iter(|| {
                black_box(seal.seal_request(
                    "POST",
                    wire::PATH_PUSH,
                    NodeId(1),
                    NodeId(2),
                    1,
                    black_box(&pc),
                ))
            })
        });
        g.bench_function(BenchmarkId::new("postcard_open", n), |bn| {
            bn.iter(|| {
                black_box(
                    seal.open_request(
                        "POST",
                        wire::PATH_PUSH,
                        wire::RequestHeaders {
                            from: Some("1"),
                            to: Some("2"),
                            time: Some("1"),
                            auth: Some(&sealed.auth),
                        },
                        black_box(&sealed.body),
                        1,
                        1_000,
                        NodeId(2),
                        false,
                    )
                    .unwrap(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, load_local_hit, delta_apply, wire_encoding);
criterion_main!(benches);
