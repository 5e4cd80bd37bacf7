//! The conformance suite against every backend, side by side: `cargo test -p tests --test
//! conformance -- --nocapture` prints one report per backend.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use backend_instantcopy::testing::InstantCopyFactory;
use backend_instantcopy::{Ack, Replication};
use session_core::testing::{BackendFactory, MemoryFactory, redis_url, run};

async fn suite(factory: impl BackendFactory) {
    let report = run(Arc::new(factory)).await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_reference() {
    suite(MemoryFactory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantcopy_single_node() {
    suite(InstantCopyFactory {
        nodes: 1,
        replication: Replication::All,
        ack: Ack::Async,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantcopy_three_nodes_all() {
    suite(InstantCopyFactory {
        nodes: 3,
        replication: Replication::All,
        ack: Ack::Async,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantcopy_three_nodes_k1_ack_one() {
    suite(InstantCopyFactory {
        nodes: 3,
        replication: Replication::Backups(1),
        ack: Ack::One,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_sealed() {
    suite(backend_cookie::testing::CookieFactory::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_single_server() {
    suite(backend_redis::testing::RedisFactory::single(redis_url())).await;
}

/// Starts a throwaway 3-master Redis Cluster on loopback ports (or uses `REDIS_CLUSTER_NODES`),
/// runs the suite against it, and stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let factory = tokio::task::spawn_blocking(
        backend_redis::testing::RedisFactory::cluster_from_env_or_start,
    )
    .await
    .unwrap()
    .unwrap();
    suite(factory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_postgres() {
    suite(backend_sql::testing::PostgresFactory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sqlite() {
    suite(backend_sql::testing::SqliteFactory::new().unwrap()).await;
}
