//! Round-trip latency of the Redis backend's hot operations against real Redis: load (hit),
//! save (a one-key delta), touch (empty delta), create, and id cycling; on the single server at
//! `REDIS_URL` and on a 3-master Redis Cluster started on loopback ports for the run.
//!
//! ```sh
//! cargo bench -p backend-redis --bench redis -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failed run

use std::hint::black_box;
use std::time::Duration;

use backend_redis::RedisBackend;
use backend_redis::testing::{RedisCluster, RedisFactory, delete_prefix};
use criterion::{Criterion, criterion_group, criterion_main};
use session_core::{Delta, ExpiryPolicy, RawJson, SessionBackend, SessionData};
use tokio::runtime::Runtime;

fn session_data() -> SessionData {
    [
        ("user".to_owned(), RawJson::from_value("alice").unwrap()),
        (
            "cart".to_owned(),
            RawJson::from_value(
                &serde_json::json!([{"sku": "a-1", "n": 2}, {"sku": "b-7", "n": 1}]),
            )
            .unwrap(),
        ),
        (
            "csrf".to_owned(),
            RawJson::from_value("x".repeat(32).as_str()).unwrap(),
        ),
    ]
    .into_iter()
    .collect()
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, label: &str, factory: &RedisFactory) {
    // Sessions created by the benchmark expire by themselves even if cleanup is skipped.
    let policy = ExpiryPolicy::new(Duration::from_secs(300), Duration::from_secs(600)).unwrap();
    let backend: RedisBackend = rt.block_on(factory.backend(policy)).unwrap();
    let token = rt.block_on(backend.create(session_data())).unwrap().token;
    let loaded = rt.block_on(backend.load(&token)).unwrap().unwrap();

    let mut g = c.benchmark_group(format!("redis/{label}"));
    g.bench_function("load_hit", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(backend.load(&token).await.unwrap().unwrap()) })
    });
    let mut i = 0u64;
    g.bench_function("save_one_key", |b| {
        b.to_async(rt).iter(|| {
            i += 1;
            let mut d = Delta::default();
            d.set("counter", RawJson::from_value(&i).unwrap());
            let (backend, loaded) = (&backend, &loaded);
            async move { black_box(backend.save(loaded, &d).await.unwrap()) }
        })
    });
    g.bench_function("touch", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(backend.save(&loaded, &Delta::default()).await.unwrap()) })
    });
    g.bench_function("create", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(backend.create(session_data()).await.unwrap()) })
    });
    g.bench_function("cycle_id", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let backend = &backend;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = backend.create(session_data()).await.unwrap().token;
                    let l = backend.load(&t).await.unwrap().unwrap();
                    let start = std::time::Instant::now();
                    black_box(backend.cycle_id(&l, &Delta::default()).await.unwrap());
                    total += start.elapsed();
                }
                total
            }
        })
    });
    g.finish();
    let n = backend.counters();
    println!(
        "redis/{label}: {} loads, {} saves, {} creates, {} cycles, {} round trips",
        n.loads, n.saves, n.creates, n.cycles, n.network_calls
    );
    rt.block_on(delete_prefix(factory.config())).unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let single = RedisFactory::single(session_core::testing::redis_url());
    bench_backend(c, &rt, "single", &single);

    let cluster = RedisCluster::start(3).expect("starting a local Redis Cluster");
    let factory = RedisFactory::cluster(cluster.urls());
    bench_backend(c, &rt, "cluster", &factory);
    drop(cluster);
}

criterion_group!(redis_benches, benches);
criterion_main!(redis_benches);
