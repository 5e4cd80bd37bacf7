//! Load (hit), save (a delta of one key), touch and create latencies of the SQL backend against
//! local PostgreSQL (`DATABASE_URL`, a throwaway schema dropped afterwards) and SQLite (a file in
//! a temporary directory, WAL). Each operation is one round trip through the pool, measured
//! end to end through the `SessionBackend` trait with a ~300-byte session.
//!
//! ```sh
//! cargo bench -p backend-sql --bench sql -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! `postgres_async_commit` repeats the PostgreSQL runs with `synchronous_commit = false` (no
//! wait for the WAL flush); `postgres_test_before_acquire/load_hit` is the same load with `test_before_acquire = true`
//! (a ping round trip before each use of a pooled connection), the price of that setting. Set
//! `SQL_BENCH_SKIP_PG=1` to run SQLite only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a panic is a failed run
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use backend_sql::testing::PgTestSchema;
use backend_sql::{SqlBackend, SqlConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use session_core::testing::database_url;
use session_core::{Delta, ExpiryPolicy, KeyRing, RawJson, SessionBackend, SessionData};

fn session_data() -> SessionData {
    let mut d = SessionData::new();
    let mut put = |k: &str, v: serde_json::Value| {
        d.insert(k, RawJson::from_value(&v).unwrap());
    };
    put("user_id", json!(184_467));
    put("csrf", json!("3q2-7wIeJ0x5cVv2bQe9Xr1mZkTzHn4A"));
    put("roles", json!(["customer", "newsletter"]));
    put("locale", json!("en-GB"));
    put(
        "cart",
        json!([{"sku": "SKU-10000", "qty": 1, "price_cents": 1999},
               {"sku": "SKU-10037", "qty": 2, "price_cents": 2099}]),
    );
    d
}

fn bench_backend(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    config: SqlConfig,
    load_only: bool,
) {
    let backend: Arc<SqlBackend> = Arc::new(
        rt.block_on(SqlBackend::connect(
            config,
            ExpiryPolicy::default(),
            &KeyRing::generate(),
        ))
        .unwrap(),
    );
    let token = rt.block_on(backend.create(session_data())).unwrap().token;
    let loaded = rt.block_on(backend.load(&token)).unwrap().unwrap();
    let mut group = c.benchmark_group(name);
    group.bench_function("load_hit", |b| {
        b.to_async(rt)
            .iter(|| async { backend.load(&token).await.unwrap().unwrap() })
    });
    if load_only {
        group.finish();
        rt.block_on(backend.shutdown());
        return;
    }
    let n = AtomicU64::new(0);
    group.bench_function("save_delta_one_key", |b| {
        b.to_async(rt).iter(|| async {
            let mut d = Delta::default();
            d.set(
                "last_page",
                RawJson::from_value(&n.fetch_add(1, Ordering::Relaxed)).unwrap(),
            );
            backend.save(&loaded, &d).await.unwrap()
        })
    });
    group.bench_function("touch", |b| {
        b.to_async(rt)
            .iter(|| async { backend.save(&loaded, &Delta::default()).await.unwrap() })
    });
    group.bench_function("create", |b| {
        b.to_async(rt)
            .iter(|| async { backend.create(session_data()).await.unwrap() })
    });
    group.finish();
    rt.block_on(backend.shutdown());
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("SQL_BENCH_SKIP_PG").is_none() {
        let schema = PgTestSchema::new(database_url(), "sqlbench");
        let mut config = SqlConfig::new(database_url())
            .with_schema(schema.name())
            .with_table("bench");
        config.max_connections = 4;
        config.cleanup = false;
        bench_backend(c, &rt, "postgres", config.clone(), false);
        // Writes without waiting for the WAL flush (`synchronous_commit = false`).
        let mut async_commit = config.clone();
        async_commit.synchronous_commit = false;
        bench_backend(c, &rt, "postgres_async_commit", async_commit, false);
        // The cost of checking each pooled connection before use (off by default).
        config.test_before_acquire = true;
        bench_backend(c, &rt, "postgres_test_before_acquire", config, true);
        rt.block_on(schema.drop_now()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqlConfig::new(format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ));
    config.max_connections = 4;
    config.cleanup = false;
    bench_backend(c, &rt, "sqlite", config, false);
}

criterion_group!(sql, benches);
criterion_main!(sql);
