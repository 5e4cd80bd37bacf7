//! The shared conformance suite against a real Redis server and a real local Redis Cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use backend_redis::testing::{RedisFactory, delete_prefix};
use session_core::testing::{Outcome, redis_url, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_passes_the_suite() {
    let factory = Arc::new(RedisFactory::single(redis_url()));
    let report = run(factory.clone()).await;
    println!("{report}");
    report.assert_passed();
    assert!(
        report.results.iter().all(|r| r.outcome == Outcome::Passed),
        "nothing may be skipped for a server-side backend:\n{report}"
    );
    // Teardown deleted every key of the run.
    assert_eq!(delete_prefix(factory.config()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_suite() {
    let factory = tokio::task::spawn_blocking(RedisFactory::cluster_from_env_or_start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("could not get a Redis Cluster: {e}"));
    let factory = Arc::new(factory);
    let report = run(factory.clone()).await;
    println!("{report}");
    report.assert_passed();
    for r in &report.results {
        match r.name {
            "store_outage_is_unavailable" => assert!(
                matches!(r.outcome, Outcome::Skipped(_)),
                "a Redis Cluster client bypasses any proxy, so the outage check is skipped"
            ),
            _ => assert_eq!(r.outcome, Outcome::Passed, "{}", r.name),
        }
    }
}
