//! The session-core conformance suite against instant-copy clusters, in every configuration
//! the project runs it: one node; three nodes replicating to all, acknowledged asynchronously
//! and by all; three nodes with one backup acknowledged by one; four nodes with two backups.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::sync::Arc;

use backend_instantcopy::testing::InstantCopyFactory;
use backend_instantcopy::{Ack, Replication};
use session_core::testing::run;

async fn suite(nodes: usize, replication: Replication, ack: Ack) {
    let report = run(Arc::new(InstantCopyFactory {
        nodes,
        replication,
        ack,
    }))
    .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node() {
    suite(1, Replication::All, Ack::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_all_ack_async() {
    suite(3, Replication::All, Ack::Async).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_backup_ack_one() {
    suite(3, Replication::Backups(1), Ack::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_all_ack_all() {
    suite(3, Replication::All, Ack::All).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_two_backups_ack_all() {
    suite(4, Replication::Backups(2), Ack::All).await;
}
