//! The session-core conformance suite on real PostgreSQL (a unique schema, dropped afterwards)
//! and on SQLite (files in a temporary directory), each with two pools per build acting as two
//! app nodes on one table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use backend_sql::testing::{PostgresFactory, SqliteFactory};
use session_core::testing::{Outcome, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let factory = Arc::new(PostgresFactory::new());
    let report = run(factory.clone()).await;
    println!("{report}");
    report.assert_passed();
    assert!(
        report.results.iter().all(|r| r.outcome == Outcome::Passed),
        "nothing may be skipped on PostgreSQL (the outage check runs through a proxy)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_conformance_suite() {
    let report = run(Arc::new(SqliteFactory::new().unwrap())).await;
    println!("{report}");
    report.assert_passed();
    for r in &report.results {
        match r.name {
            "store_outage_is_unavailable" => assert!(
                matches!(r.outcome, Outcome::Skipped(_)),
                "SQLite has no server to lose contact with"
            ),
            _ => assert_eq!(r.outcome, Outcome::Passed, "{}", r.name),
        }
    }
}
