//! Rolling crashes under concurrent writers, in process: 20 users write continuously to a
//! session each, spread over three nodes (`replication = 1`, `ack = one`), while every node in
//! turn is killed and restarted at once — twice — the next one as soon as the restarted node
//! reports ready. No acknowledged write may be missing afterwards, on any node.
//!
//! This test found, one after another, the ways a copy could look current while lacking a
//! write (a delta applied on top of a gap, a placement stamp raising the version, a forwarded
//! write answered with a full state that lacked it, a rebalance copying before switching, a
//! fetched copy not merged into a stale local one), so it runs several rounds; set
//! `ROLLING_ITERATIONS` for more.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backend_instantcopy::testing::{InProcessCluster, eventually, write};
use backend_instantcopy::{Ack, Replication};
use session_core::{Commit, ExpiryPolicy, Session};

async fn login(c: &Arc<InProcessCluster>, n: usize) -> String {
    loop {
        let s = Session::new(c.node(n % 3), None);
        s.insert("user", &1).unwrap();
        s.cycle_id();
        if let Ok(Commit::Issue { token, .. }) = s.commit().await {
            return token;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_crashes_lose_no_acknowledged_write() {
    let iterations: usize = std::env::var("ROLLING_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let mut acked_total = 0;
    for iter in 0..iterations {
        let c = InProcessCluster::start(
            3,
            Replication::Backups(1),
            Ack::One,
            ExpiryPolicy::default(),
        )
        .await
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut users = Vec::new();
        for u in 0..20usize {
            let (c, stop) = (c.clone(), stop.clone());
            users.push(tokio::spawn(async move {
                let mut token = login(&c, u).await;
                let mut acked = BTreeSet::new();
                let mut n = u;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("s{n}");
                    if let Ok(t) = write(&c.node(n % 3), Some(&token), &key, 1).await {
                        token = t;
                        acked.insert(key);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (token, acked)
            }));
        }
        for _round in 0..2 {
            for i in 0..3 {
                c.kill(i);
                if let Some(ms) = std::env::var("ROLLING_DOWNTIME_MS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                c.restart(i).await.unwrap();
                let node = c.instance(i).unwrap();
                assert!(
                    eventually(Duration::from_secs(15), || node.readiness().ready).await,
                    "node {} never ready: {:?}",
                    i + 1,
                    node.readiness()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let started = Instant::now();
        for (u, task) in users.into_iter().enumerate() {
            let (token, acked) = task.await.unwrap();
            acked_total += acked.len();
            for node in 0..3 {
                let s = Session::new(c.node(node), Some(token.clone()));
                let keys: BTreeSet<String> = s.keys().await.unwrap().into_iter().collect();
                let missing: Vec<_> = acked.difference(&keys).collect();
                assert!(
                    missing.is_empty(),
                    "iteration {iter}: user {u} on node {}: acknowledged writes missing {missing:?}",
                    node + 1
                );
            }
        }
        println!("iteration {iter}: checked in {:?}", started.elapsed());
    }
    println!(
        "rolling crashes: {iterations} iterations, {acked_total} acknowledged writes, none lost"
    );
}
