//! The conformance suite against every backend, side by side.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use session_core::testing::{MemoryFactory, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_reference() {
    let report = run(Arc::new(MemoryFactory)).await;
    println!("{report}");
    report.assert_passed();
}
