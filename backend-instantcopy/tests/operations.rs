//! Operations on real in-process nodes over loopback: anti-entropy repairing lost pushes (and
//! costing bytes in proportion to the differences), a restart faster than failure detection,
//! readiness through the initial sync, and drains — complete, and past their timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test

use std::time::{Duration, Instant};

use backend_instantcopy::testing::{
    Discovery, InProcessCluster, eventually, holders, read, route_of, write,
};
use backend_instantcopy::{Ack, NodeId, Phase, Replication};
use session_core::ExpiryPolicy;

/// Digest of session `id` on each running node (`None` where it has no copy).
fn digests(c: &InProcessCluster, id: &session_core::SessionId) -> Vec<Option<[u8; 16]>> {
    c.running()
        .iter()
        .map(|n| n.shared().store.read(id, |s| s.digest()))
        .collect()
}

fn converged(c: &InProcessCluster, ids: &[session_core::SessionId]) -> bool {
    ids.iter().all(|id| {
        let d = digests(c, id);
        d.iter().all(|x| x.is_some() && *x == d[0])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repairs_lost_pushes_without_client_traffic() {
    let interval = Duration::from_millis(500);
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| cfg.anti_entropy_interval = interval,
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    // Every push from node 1 to node 3 is lost (queues, batches: as on a bad link).
    let n1 = c.instance(0).unwrap();
    n1.faults().lose_pushes_to(NodeId(3));
    let mut ids = Vec::new();
    for i in 0..100 {
        let t = write(&c.node(0), None, "k", i).await.unwrap();
        let t = write(&c.node(0), Some(&t), "k2", i).await.unwrap();
        ids.push(route_of(&c, &t).unwrap().0);
    }
    c.settle().await;
    let lost = n1
        .shared()
        .members
        .get(NodeId(3))
        .unwrap()
        .push_failures
        .get();
    assert!(lost > 0, "pushes to node 3 were not lost");
    // No client traffic from here on: anti-entropy alone brings node 3 level, within about
    // one period (plus the time of an exchange), although the pushes are still being lost.
    let started = Instant::now();
    assert!(
        eventually(interval * 6, || converged(&c, &ids)).await,
        "replicas did not converge"
    );
    let took = started.elapsed();
    println!(
        "anti-entropy: 100 sessions missed by node 3 repaired in {took:?} (period {interval:?})"
    );
    // A pusher counts a batch once its answer is back, after the receiver merged it: the
    // counters may trail the convergence just seen by one round trip.
    let repairs = || {
        let sum = |f: fn(&backend_instantcopy::SyncCounters) -> u64| -> u64 {
            c.running()
                .iter()
                .map(|n| f(&n.shared().sync_counters))
                .sum()
        };
        (sum(|s| s.pushed.get()), sum(|s| s.pulled.get()))
    };
    let counted = eventually(Duration::from_secs(5), || {
        let (pushed, pulled) = repairs();
        pushed + pulled >= 100
    })
    .await;
    let (pushed, pulled) = repairs();
    assert!(counted, "repairs: {pushed} pushed, {pulled} pulled");
}

/// Digest bytes of one exchange from node 1 to node 2.
async fn one_exchange_bytes(c: &InProcessCluster) -> (usize, usize) {
    let rounds = c.instance(0).unwrap().anti_entropy().await;
    let (_, r) = rounds
        .into_iter()
        .find(|(id, _)| *id == NodeId(2))
        .expect("an exchange with node 2");
    (r.digest_bytes, r.differences)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_bytes_follow_the_differences_not_the_session_count() {
    let c = InProcessCluster::start_custom(
        2,
        2,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        // No background exchange: only the ones this test runs.
        |cfg| cfg.anti_entropy_interval = Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    let total = 5_000;
    let mut tokens = Vec::new();
    for i in 0..total {
        tokens.push(write(&c.node(0), None, "k", i).await.unwrap());
    }
    c.settle().await;
    let (b0, d0) = one_exchange_bytes(&c).await;
    assert_eq!(d0, 0, "in sync after the pushes");
    for n in c.running() {
        n.faults().pause_anti_entropy(true);
    }
    let n1 = c.instance(0).unwrap();
    n1.faults().lose_pushes_to(NodeId(2));
    let mut measured = vec![(0usize, b0)];
    let mut changed = 0;
    for target in [50usize, 500] {
        while changed < target {
            tokens[changed] = write(&c.node(0), Some(&tokens[changed]), "k", -1)
                .await
                .unwrap();
            changed += 1;
        }
        c.settle().await;
        let (bytes, diffs) = one_exchange_bytes(&c).await;
        assert_eq!(
            diffs,
            2 * (target - measured.last().unwrap().0).min(target),
            "{target}"
        );
        measured.push((target, bytes));
        // The exchange repaired them: the next one finds nothing.
        let (after, none) = one_exchange_bytes(&c).await;
        assert_eq!(none, 0);
        assert!(
            after <= b0 * 2,
            "in sync again costs what in sync costs: {after} vs {b0}"
        );
    }
    println!("anti-entropy digest bytes for {total} sessions: {measured:?} (differing, bytes)");
    let full_list = total as usize * 32;
    // In sync: a few fingerprints, whatever the session count.
    assert!(
        b0 < 2_000,
        "in sync, {total} sessions: {b0} B (a full list would be {full_list} B)"
    );
    // Differing: the ranges around each difference are listed (negentropy lists ranges of up
    // to 31 ids, 32 bytes each, in both directions), so at most about 2 KiB per difference.
    let (_, b50) = measured[1];
    let (_, b500) = measured[2];
    assert!(b50 <= 50 * 2_048, "50 differences cost {b50} B");
    assert!(b500 <= 500 * 2_048, "500 differences cost {b500} B");
    assert!(
        b500 > b50 && b50 > b0 * 10,
        "bytes grow with the differences: {measured:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_faster_than_failure_detection_gets_its_sessions_back() {
    for replication in [Replication::Backups(1), Replication::All] {
        let c = InProcessCluster::start(3, replication, Ack::One, ExpiryPolicy::default())
            .await
            .unwrap();
        assert!(c.wait_ready(Duration::from_secs(5)).await);
        let mut tokens = Vec::new();
        for i in 0..60 {
            tokens.push(write(&c.node(i % 3), None, "k", i as i64).await.unwrap());
        }
        c.settle().await;
        let copies = |c: &InProcessCluster| -> Vec<usize> {
            tokens
                .iter()
                .map(|t| holders(c, &route_of(c, t).unwrap().0).len())
                .collect()
        };
        let want = match replication {
            Replication::All => 3,
            Replication::Backups(k) => k as usize + 1,
        };
        assert!(copies(&c).iter().all(|n| *n == want));
        let held_before = c.instance(1).unwrap().sessions_held();
        assert!(held_before > 0);
        let down = Instant::now();
        c.kill(1);
        c.restart(1).await.unwrap();
        let gap = down.elapsed();
        assert!(gap < Duration::from_millis(300), "restart took {gap:?}");
        // The others see a new generation (a restart, not a failure) and hand it back what it
        // held; no session is left short of a copy.
        assert!(
            eventually(Duration::from_secs(10), || copies(&c)
                .iter()
                .all(|n| *n == want))
            .await,
            "{replication}: copies after the restart {:?}",
            copies(&c)
        );
        assert!(c.wait_ready(Duration::from_secs(5)).await);
        println!(
            "{replication}: node 2 restarted in {gap:?}, held {held_before} before, {} after",
            c.instance(1).unwrap().sessions_held()
        );
        for (i, t) in tokens.iter().enumerate() {
            let (v, _) = read(&c.node(1), t, "k").await.unwrap();
            assert_eq!(v, Some(i as i64));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_initial_sync() {
    let c =
        InProcessCluster::start_with(3, 2, Replication::All, Ack::Async, ExpiryPolicy::default())
            .await
            .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    for i in 0..20 {
        write(&c.node(0), None, "k", i).await.unwrap();
    }
    c.settle().await;
    // Both live members refuse to help node 3 sync, so its initial sync cannot finish.
    for i in 0..2 {
        c.instance(i).unwrap().faults().refuse_sync_from(NodeId(3));
    }
    c.restart(2).await.unwrap();
    let n3 = c.instance(2).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || n3.readiness().phase
            == Phase::Syncing)
        .await,
        "{:?}",
        n3.readiness()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = n3.readiness();
    assert!(!r.ready, "{r:?}");
    assert!(!r.cluster_safe);
    assert!(r.reason.contains("syncing"), "{r:?}");
    // It still serves meanwhile (fetching on a miss).
    for i in 0..2 {
        c.instance(i).unwrap().faults().clear();
    }
    assert!(
        eventually(Duration::from_secs(5), || n3.readiness().ready).await,
        "{:?}",
        n3.readiness()
    );
    assert_eq!(n3.sessions_held(), 20);
    assert!(
        eventually(Duration::from_secs(5), || n3.readiness().cluster_safe).await,
        "{:?}",
        n3.readiness()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_off_what_only_the_leaver_holds() {
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.replication = Replication::Backups(1);
            cfg.anti_entropy_interval = Duration::from_secs(3600);
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    // Node 1's pushes are all lost, and no background anti-entropy runs: it alone holds what
    // it writes.
    for n in c.running() {
        n.faults().pause_anti_entropy(true);
    }
    let n1 = c.instance(0).unwrap();
    n1.faults().lose_pushes_to(NodeId(2));
    n1.faults().lose_pushes_to(NodeId(3));
    let mut tokens = Vec::new();
    for i in 0..200 {
        tokens.push(write(&c.node(0), None, "k", i).await.unwrap());
    }
    c.settle().await;
    let report = c.drain(0).await.unwrap();
    println!("drain: {report:?}");
    assert_eq!(report.sessions, 200);
    assert!(report.handed_off >= 200, "{report:?}");
    assert_eq!(report.left_behind, 0, "{report:?}");
    assert!(!report.timed_out);
    // Every session is readable on the others, and the token is re-homed off node 1.
    for (i, t) in tokens.iter().enumerate() {
        let node = c.node(1 + i % 2);
        let (v, t2) = read(&node, t, "k").await.unwrap();
        assert_eq!(v, Some(i as i64), "session {i}");
        let (_, r) = route_of(&c, &t2).unwrap();
        assert_ne!(r.owner, NodeId(1), "re-homed away from the node that left");
    }
    // The others saw it leave at once (no failure detection needed).
    let n2 = c.instance(1).unwrap();
    assert!(n2.shared().members.is_gone(NodeId(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_past_its_timeout_leaves_sessions_that_the_next_sync_recovers() {
    let c = InProcessCluster::start_custom(
        3,
        3,
        Discovery::StaticMembers,
        ExpiryPolicy::default(),
        |cfg| {
            cfg.anti_entropy_interval = Duration::from_secs(3600);
            cfg.drain_timeout = Duration::from_millis(1);
        },
    )
    .await
    .unwrap();
    assert!(c.wait_ready(Duration::from_secs(5)).await);
    // Node 3 misses node 1's pushes; node 2 gets them.
    c.instance(0).unwrap().faults().lose_pushes_to(NodeId(3));
    let mut tokens = Vec::new();
    for i in 0..300 {
        tokens.push(write(&c.node(0), None, "k", i).await.unwrap());
    }
    c.settle().await;
    let report = c.drain(0).await.unwrap();
    println!("drain past its timeout: {report:?}");
    assert!(report.timed_out, "{report:?}");
    assert!(report.left_behind > 0, "{report:?}");
    // Node 1 comes back: its initial sync pulls everything back from node 2 (where a copy
    // survived), and node 3 catches up from its peers too.
    c.restart(0).await.unwrap();
    assert!(c.wait_ready(Duration::from_secs(10)).await);
    assert_eq!(c.instance(0).unwrap().sessions_held(), 300);
    c.instance(2).unwrap().anti_entropy().await;
    assert_eq!(c.instance(2).unwrap().sessions_held(), 300);
    for (i, t) in tokens.iter().enumerate() {
        let (v, _) = read(&c.node(i % 3), t, "k").await.unwrap();
        assert_eq!(v, Some(i as i64));
    }
}

/// A node whose last handle is dropped without `shutdown()` (an app that forgot it, a test that
/// panicked) stops its tasks: its cluster port closes and its gossip goes quiet, instead of a
/// zombie member answering peers from a process that no longer serves its app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_stops_the_node() {
    use backend_instantcopy::InstantCopyNode;
    use backend_instantcopy::testing::test_config;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = InstantCopyNode::start_with_listener(
        test_config(1, Vec::new(), Replication::All, Ack::Async),
        ExpiryPolicy::default(),
        &session_core::KeyRing::generate(),
        listener,
    )
    .await
    .unwrap();
    let addr = node.cluster_addr();
    let gossip = node.shared().gossip_counters.clone();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    let clone = node.clone();
    drop(node);
    // A clone keeps it running.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_ok(),
        "a clone is still alive"
    );
    drop(clone);
    assert!(
        eventually(Duration::from_secs(5), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
        })
        .await,
        "the cluster port still accepts after the last handle was dropped"
    );
    let sent = gossip.sent.get();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gossip.sent.get(), sent, "gossip still running");
}
