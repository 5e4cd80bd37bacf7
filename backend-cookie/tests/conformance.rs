//! The session-core conformance suite against the cookie backend, with and without compression.
//!
//! The suite runs with `Capabilities::client_side`: the checks that need the server to kill or
//! merge a copy the client holds are skipped, with the reason printed in the report.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use backend_cookie::CookieConfig;
use backend_cookie::testing::CookieFactory;
use session_core::testing::{Outcome, run};

const SKIPPED: [&str; 4] = [
    "concurrent_disjoint_writes_survive",
    "concurrent_same_key_converges",
    "save_after_destroy_is_gone",
    "store_outage_is_unavailable",
];

async fn run_suite(config: CookieConfig) {
    let report = run(Arc::new(CookieFactory::new(config))).await;
    println!("{report}");
    report.assert_passed();
    for r in &report.results {
        match &r.outcome {
            Outcome::Skipped(reason) => {
                assert!(SKIPPED.contains(&r.name), "{} skipped unexpectedly", r.name);
                assert!(
                    reason.contains("client-side") || reason.contains("no separate store"),
                    "{reason}"
                );
            }
            Outcome::Passed => assert!(!SKIPPED.contains(&r.name)),
            Outcome::Failed(m) => panic!("{}: {m}", r.name),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_backend_passes_the_suite() {
    run_suite(CookieConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_cookie_backend_passes_the_suite() {
    run_suite(CookieConfig::default().with_compression(true)).await;
}
